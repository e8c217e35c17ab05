//! Command-line syntax of the `tessera` binary: every subcommand, flag and
//! environment variable, as clap derive types. Values that need checking
//! beyond their shape (SPIFFE IDs, selectors, durations) stay strings here
//! and are checked by the command, so a bad value exits with status 1.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;

/// Default path of the server's admin socket, used by every admin command.
pub const DEFAULT_ADMIN_SOCKET: &str = "/tmp/tessera/server/admin.sock";

/// Tessera: SPIFFE workload identity. Runs the server and the agent,
/// manages registration entries, and fetches SVIDs from the Workload API.
///
/// Exit status: 0 on success, 1 on an error, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, propagate_version = true)]
pub struct Cli {
    /// Output format: `text` for people, `json` for one machine-readable object.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Tessera server.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Run the Tessera agent, or manage attested agents through the server.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage registration entries through the server's admin API.
    #[command(subcommand)]
    Entry(EntryCommand),
    /// Manage join tokens through the server's admin API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the server's trust bundle or fetch bundles from the Workload API.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Manage federation relationships with foreign trust domains.
    #[command(subcommand)]
    Federation(crate::commands::federation::FederationCommand),
    /// List the server's CA authorities, or prepare and activate the next
    /// one ahead of the rotation schedule.
    #[command(subcommand)]
    Authority(crate::commands::authority::AuthorityCommand),
    /// Check that the server is serving; exit status 0 when it is, 1 when not.
    Healthcheck(AdminArgs),
    /// Fetch X.509-SVIDs from the Workload API.
    #[command(subcommand)]
    Svid(SvidCommand),
    /// Fetch or validate JWT-SVIDs through the Workload API.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Start a complete local trust domain (server and agent) for development.
    ///
    /// Writes server.toml and agent.toml into the data directory when they
    /// are missing, runs `tessera server run` and `tessera agent run` as
    /// child processes (logs in server.log and agent.log), registers
    /// spiffe://<trust domain>/user/<user name> for this user's Unix UID,
    /// and prints the SPIFFE_ENDPOINT_SOCKET line to export. A second run
    /// with the same data directory keeps the CA, the agent and the entries.
    /// Ctrl-C or SIGTERM stops both children.
    Dev(DevArgs),
}

/// Location of the server's admin API.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Path of the server's admin Unix socket: the server's `admin_socket`
    /// key, which defaults to `<data_dir>/admin.sock`.
    #[arg(long, env = "TESSERA_ADMIN_SOCKET", default_value = DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
}

/// Location of the SPIFFE Workload API.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Workload API socket: `unix:///abs/path`, `unix:/abs/path` or a plain
    /// path. TCP endpoints are not supported.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    pub socket: Option<String>,

    /// How long to keep retrying while the agent has no identity for this
    /// workload yet or is unavailable, such as `10s` or `1m`.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
}

/// `tessera server ...`
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the server until SIGINT or SIGTERM.
    Run(ServerRunArgs),
}

/// Flags of `tessera server run`; each one overrides the key of the same
/// name in the configuration file.
#[derive(Debug, Args)]
pub struct ServerRunArgs {
    /// Server configuration file (TOML). Optional when the flags give every
    /// required key.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Trust domain name, such as `example.org`.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Directory for the server's keys, datastore and bundle.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address of the agent API, such as `127.0.0.1:8081`.
    #[arg(long)]
    pub bind_address: Option<String>,
    /// Path of the admin Unix socket.
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Log level: trace, debug, info, warn or error. Overrides RUST_LOG
    /// and the configuration file's log_level.
    #[arg(long)]
    pub log_level: Option<String>,
}

/// `tessera agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the agent until SIGINT or SIGTERM.
    Run(AgentRunArgs),
    /// List attested agents.
    List(AdminArgs),
    /// Show one attested agent.
    Show(AgentIdArgs),
    /// Delete an agent's record; the agent must attest again.
    Evict(AgentIdArgs),
    /// Ban an agent: it can neither renew its SVID nor attest again.
    Ban(AgentIdArgs),
}

/// Flags of `tessera agent run`; each one overrides the key of the same
/// name in the configuration file.
#[derive(Debug, Args)]
pub struct AgentRunArgs {
    /// Agent configuration file (TOML). Optional when the flags give every
    /// required key.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Join token for the first attestation. Prefer the environment
    /// variable: command lines are visible to other local users.
    #[arg(long, env = "TESSERA_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Trust domain name, such as `example.org`.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Address of a server's agent API, such as `127.0.0.1:8081`. Repeat
    /// the flag to list several servers of the trust domain, in the order
    /// the agent tries them. Given at least once, it replaces both
    /// server_address and server_addresses of the configuration file.
    #[arg(
        long = "server-address",
        value_name = "HOST:PORT",
        value_parser = parse_server_address
    )]
    pub server_addresses: Vec<String>,
    /// Directory for the agent's key and SVID.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Path of the Workload API Unix socket to serve.
    #[arg(long)]
    pub socket_path: Option<PathBuf>,
    /// PEM file of the server's trust bundle, used to authenticate the
    /// server on first contact.
    #[arg(long)]
    pub trust_bundle: Option<PathBuf>,
    /// Log level: trace, debug, info, warn or error. Overrides RUST_LOG
    /// and the configuration file's log_level.
    #[arg(long)]
    pub log_level: Option<String>,
}

/// Checks one `--server-address` value, so a malformed address is a usage
/// error that names the flag.
fn parse_server_address(value: &str) -> Result<String, String> {
    tessera_agent::config::ServerAddress::parse(value)?;
    Ok(value.to_owned())
}

/// An agent named by its SPIFFE ID.
#[derive(Debug, Args)]
pub struct AgentIdArgs {
    /// SPIFFE ID of the agent.
    pub spiffe_id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `tessera entry ...`
#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Create one entry from flags, or several from a JSON file.
    Create(EntryCreateArgs),
    /// Show one entry.
    Show(EntryIdArgs),
    /// List entries, optionally filtered.
    List(EntryListArgs),
    /// Change an entry's fields; flags left out keep their current value.
    Update(EntryUpdateArgs),
    /// Delete entries.
    Delete(EntryDeleteArgs),
}

/// Fields of an entry that `create` and `update` share.
#[derive(Debug, Default, Args)]
pub struct EntryFieldArgs {
    /// SPIFFE ID that the entry grants.
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// SPIFFE ID of the agent (or node alias) that may serve the entry.
    #[arg(long)]
    pub parent_id: Option<String>,
    /// Selector a workload must have, as TYPE:VALUE such as `unix:uid:1000`;
    /// repeat for several. On update, the given set replaces the old one.
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    /// X.509-SVID lifetime, such as `1h`; `0s` means the server default.
    #[arg(long)]
    pub x509_svid_ttl: Option<String>,
    /// JWT-SVID lifetime, such as `5m`; `0s` means the server default.
    #[arg(long)]
    pub jwt_svid_ttl: Option<String>,
    /// DNS name to put in the X.509-SVID; repeat for several. On update, the
    /// given set replaces the old one.
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// Label that lets a workload with several SVIDs pick the right one.
    #[arg(long)]
    pub hint: Option<String>,
    /// Time after which the entry grants no SVID: RFC 3339 (such as
    /// `2027-01-31T12:00:00Z`), Unix seconds, or `never`.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Trust domain whose bundle the workload also receives; repeat for
    /// several. On update, the given set replaces the old one.
    #[arg(long = "federates-with")]
    pub federates_with: Vec<String>,
}

/// Flags of `tessera entry create`.
#[derive(Debug, Args)]
pub struct EntryCreateArgs {
    #[command(flatten)]
    pub fields: EntryFieldArgs,
    /// Give the SVID admin rights on the server's admin API.
    #[arg(long)]
    pub admin: bool,
    /// Let the workload act as a downstream server.
    #[arg(long)]
    pub downstream: bool,
    /// JSON file of entries to create, `{"entries": [{...}]}`, with the
    /// field names of `entry show --output json`, so the output of
    /// `entry list --output json` is a valid file. `-` reads standard input.
    /// Selectors are objects `{"type": .., "value": ..}` or `TYPE:VALUE`
    /// strings; TTLs are seconds or durations such as `"1h"`; `expires_at`
    /// is Unix seconds or RFC 3339. `id`, `revision` and `created_at` are
    /// ignored. The whole file is checked locally first, and any malformed
    /// entry stops it before anything is sent. The server then creates each
    /// entry on its own: an entry it rejects (a duplicate, a parent in
    /// another trust domain) is reported, exit code 1, while the others
    /// are still created.
    #[arg(long, conflicts_with_all = [
        "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl",
        "dns_names", "hint", "expires_at", "federates_with", "admin", "downstream",
    ])]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub admin_api: AdminArgs,
}

/// An entry named by its ID.
#[derive(Debug, Args)]
pub struct EntryIdArgs {
    /// Entry ID.
    pub id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `tessera entry list`.
#[derive(Debug, Args)]
pub struct EntryListArgs {
    /// Only entries with this SPIFFE ID.
    #[arg(long)]
    pub spiffe_id: Option<String>,
    /// Only entries with this parent ID.
    #[arg(long)]
    pub parent_id: Option<String>,
    /// Only entries whose selectors include this one; repeat to require several.
    #[arg(long = "selector")]
    pub selectors: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Flags of `tessera entry update`.
#[derive(Debug, Args)]
pub struct EntryUpdateArgs {
    /// Entry ID.
    pub id: String,
    #[command(flatten)]
    pub fields: EntryFieldArgs,
    /// Give the SVID admin rights.
    #[arg(long, conflicts_with = "no_admin")]
    pub admin: bool,
    /// Remove the SVID's admin rights.
    #[arg(long)]
    pub no_admin: bool,
    /// Let the workload act as a downstream server.
    #[arg(long, conflicts_with = "no_downstream")]
    pub downstream: bool,
    /// Stop the workload acting as a downstream server.
    #[arg(long)]
    pub no_downstream: bool,
    /// Remove every DNS name.
    #[arg(long, conflicts_with = "dns_names")]
    pub clear_dns_names: bool,
    /// Remove every federated trust domain.
    #[arg(long, conflicts_with = "federates_with")]
    pub clear_federates_with: bool,
    #[command(flatten)]
    pub admin_api: AdminArgs,
}

/// Flags of `tessera entry delete`.
#[derive(Debug, Args)]
pub struct EntryDeleteArgs {
    /// IDs of the entries to delete.
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `tessera token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a single-use join token for a new agent.
    Generate(TokenGenerateArgs),
}

/// Flags of `tessera token generate`.
#[derive(Debug, Args)]
pub struct TokenGenerateArgs {
    /// How long the token stays valid, such as `10m`; the server's default
    /// when left out.
    #[arg(long)]
    pub ttl: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `tessera bundle ...`
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Show the server's own trust bundle (admin API).
    Show(BundleShowArgs),
    /// Fetch the trust bundles this workload receives (Workload API).
    Fetch(BundleFetchArgs),
    /// Store the bundle of a foreign trust domain (admin API).
    Set(crate::commands::federation::BundleSetArgs),
}

/// Encodings of the server's bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerBundleFormat {
    /// X.509 authorities as PEM certificates.
    Pem,
    /// The SPIFFE bundle format (a JWK Set with X.509 and JWT authorities).
    Spiffe,
}

/// Flags of `tessera bundle show`.
#[derive(Debug, Args)]
pub struct BundleShowArgs {
    /// Encoding of the bundle.
    #[arg(long, value_enum, default_value_t = ServerBundleFormat::Pem)]
    pub format: ServerBundleFormat,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Encodings of Workload API bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadBundleFormat {
    /// X.509 authorities as PEM certificates.
    Pem,
    /// The SPIFFE bundle format (a JWK Set with X.509 and JWT authorities).
    Jwks,
}

/// Flags of `tessera bundle fetch`.
#[derive(Debug, Args)]
pub struct BundleFetchArgs {
    /// Encoding of the bundles.
    #[arg(long, value_enum, default_value_t = WorkloadBundleFormat::Pem)]
    pub format: WorkloadBundleFormat,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// `tessera svid ...`
#[derive(Debug, Subcommand)]
pub enum SvidCommand {
    /// Fetch this workload's X.509-SVIDs and print their SPIFFE IDs and expiry.
    Fetch(SvidFetchArgs),
}

/// Flags of `tessera svid fetch`.
#[derive(Debug, Args)]
pub struct SvidFetchArgs {
    /// Directory to write the SVIDs into, created if missing. One SVID is
    /// written as `svid.pem` (certificate chain), `svid.key` (PKCS#8 private
    /// key, mode 0600) and `bundle.pem`. Several are written as `svid.N.pem`,
    /// `svid.N.key` and `bundle.N.pem`, where N counts from 0 in the order
    /// the agent sent them and 0 is the default SVID. Federated bundles are
    /// written as `federated_bundle.<trust domain>.pem`.
    #[arg(long)]
    pub write: Option<PathBuf>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// `tessera jwt ...`
#[derive(Debug, Subcommand)]
pub enum JwtCommand {
    /// Fetch JWT-SVIDs and print the tokens, one per line.
    Fetch(JwtFetchArgs),
    /// Validate a JWT-SVID and print its SPIFFE ID and claims.
    Validate(JwtValidateArgs),
}

/// Flags of `tessera jwt fetch`.
#[derive(Debug, Args)]
pub struct JwtFetchArgs {
    /// Audience of the token; repeat for several.
    #[arg(long = "audience", short = 'a', required = true)]
    pub audiences: Vec<String>,
    /// Fetch only the SVID with this SPIFFE ID, when the workload has several.
    #[arg(long)]
    pub spiffe_id: Option<String>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// Flags of `tessera jwt validate`.
#[derive(Debug, Args)]
pub struct JwtValidateArgs {
    /// Audience the token must carry.
    #[arg(long, short = 'a')]
    pub audience: String,
    /// The JWT-SVID; `-` reads it from standard input, which keeps it out of
    /// the process list.
    pub token: String,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// Flags of `tessera dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory for the configuration, keys, datastore, sockets and logs.
    /// Defaults to `$XDG_DATA_HOME/tessera/dev`, or
    /// `~/.local/share/tessera/dev` when XDG_DATA_HOME is not set.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Trust domain of a new deployment [default: tessera.local]. A data
    /// directory that already has a configuration keeps its trust domain.
    #[arg(long)]
    pub trust_domain: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tessera").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn federation_profile_spellings() {
        use crate::commands::federation::{FederationCommand, ProfileArg};

        let cases = [
            ("https-spiffe", ProfileArg::HttpsSpiffe),
            ("https_spiffe", ProfileArg::HttpsSpiffe),
            ("https-web", ProfileArg::HttpsWeb),
            ("https_web", ProfileArg::HttpsWeb),
        ];
        for (spelling, expected) in cases {
            let args = [
                "federation",
                "update",
                "--trust-domain",
                "b.test",
                "--bundle-endpoint-url",
                "https://127.0.0.1:8443/",
                "--profile",
                spelling,
            ];
            match parse(&args).expect("valid flags").command {
                Command::Federation(FederationCommand::Update(update)) => {
                    assert_eq!(update.profile, Some(expected), "{spelling}");
                }
                other => panic!("parsed as {other:?}"),
            }
        }
    }

    fn server_addresses(args: &[&str]) -> Vec<String> {
        let mut full = vec!["agent", "run"];
        full.extend_from_slice(args);
        match parse(&full).expect("valid flags").command {
            Command::Agent(AgentCommand::Run(run)) => run.server_addresses,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn agent_run_server_address_repeats() {
        let flags = [
            "--server-address",
            "10.0.0.1:8081",
            "--server-address",
            "[::1]:8082",
            "--server-address=server-c.example.org:8081",
        ];
        assert_eq!(
            server_addresses(&flags),
            ["10.0.0.1:8081", "[::1]:8082", "server-c.example.org:8081"]
        );
        assert!(server_addresses(&[]).is_empty());
    }

    #[test]
    fn agent_run_malformed_server_address_rejected() {
        for address in ["127.0.0.1", "::1:8081", "host:0", ":8081", "host:port"] {
            let err = parse(&["agent", "run", "--server-address", address]).expect_err(address);
            assert_eq!(err.exit_code(), 2, "{address}");
            let message = err.to_string();
            assert!(message.contains("--server-address"), "{address}: {message}");
            assert!(
                message.contains("expected host:port"),
                "{address}: {message}"
            );
        }
    }

    #[test]
    fn entry_create_rejects_data_with_flags() {
        let result = parse(&[
            "entry",
            "create",
            "--data",
            "x.json",
            "--spiffe-id",
            "spiffe://a/b",
        ]);
        let err = result.expect_err("--data conflicts with --spiffe-id");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn entry_update_rejects_admin_and_no_admin() {
        let result = parse(&["entry", "update", "id", "--admin", "--no-admin"]);
        assert!(result.is_err());
    }

    #[test]
    fn output_flag_is_global() {
        let cli = parse(&["entry", "list", "--output", "json"]).expect("valid command line");
        assert_eq!(cli.output, OutputFormat::Json);
    }

    #[test]
    fn jwt_fetch_requires_audience() {
        assert!(parse(&["jwt", "fetch"]).is_err());
    }

    #[test]
    fn repeated_selectors_are_collected() {
        let cli = parse(&[
            "entry",
            "list",
            "--selector",
            "unix:uid:1",
            "--selector",
            "unix:gid:2",
        ])
        .expect("valid command line");
        let Command::Entry(EntryCommand::List(args)) = cli.command else {
            panic!("parsed into the wrong subcommand");
        };
        assert_eq!(args.selectors, ["unix:uid:1", "unix:gid:2"]);
    }
}
