//! End-to-end harness: runs a Tessera server and agent as child processes
//! of the `tessera` binary in a temporary directory, runs CLI commands
//! against them and stops every child on drop. When a test panics, the
//! daemons' logs are printed so the failure can be read from the output.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod database;
mod pki;
mod postgres;
mod process;
mod proxy;
pub mod servers;
mod tls;
pub mod workload;

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

#[allow(
    unused_imports,
    reason = "not every test binary uses the certificate helpers"
)]
pub use pki::*;
#[allow(
    unused_imports,
    reason = "only the datastore tests use PostgreSQL and the proxy"
)]
pub use postgres::*;
pub use process::*;
#[allow(
    unused_imports,
    reason = "only the datastore tests use PostgreSQL and the proxy"
)]
pub use proxy::*;
#[allow(unused_imports, reason = "not every test binary makes TLS connections")]
pub use tls::*;

/// Trust domain of every test cluster.
pub const TRUST_DOMAIN: &str = "e2e.test";

/// Upper bound for a daemon to become ready, sized for a loaded 2-core CI
/// machine running two clusters at once.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for one CLI command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `tessera` binary under test: `TESSERA_E2E_BIN` when set (to
/// run the suite against another build), else the one Cargo built.
pub fn tessera_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TESSERA_E2E_BIN") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_tessera"))
}

/// Real user ID of the test process, which the agent attests as `unix:uid`.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Selector that matches every process of the test's user.
pub fn uid_selector() -> String {
    format!("unix:uid:{}", current_uid())
}

/// SPIFFE ID in the test trust domain with the given path.
pub fn spiffe_id(path: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}{path}")
}

/// Server and CA lifetimes for one cluster, as humantime strings.
#[derive(Clone, Debug)]
pub struct Options {
    pub ca_ttl: String,
    pub x509_ttl: String,
    pub jwt_ttl: String,
    pub join_token_ttl: String,
    /// TOML appended to the server configuration, such as a `[datastore]`
    /// table.
    pub extra_server_toml: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ca_ttl: "24h".into(),
            x509_ttl: "1h".into(),
            jwt_ttl: "5m".into(),
            join_token_ttl: "10m".into(),
            extra_server_toml: String::new(),
        }
    }
}

/// A join token as printed by `tessera token generate --output json`.
#[derive(Clone, Debug)]
pub struct JoinToken {
    pub token: String,
    pub agent_id: String,
    pub expires_at: i64,
}

/// A server and (usually) one agent, each a child process, sharing one
/// temporary directory.
pub struct Cluster {
    // Field order is drop order: the agent stops before the server, and the
    // directory is removed last.
    agent: Option<Daemon>,
    server: Option<Daemon>,
    /// Agent ID that the running agent received, from its join token.
    pub agent_id: String,
    pub options: Options,
    /// Address of the agent API; port 0 until the server first binds it.
    pub server_address: String,
    dir: TempDir,
}

impl Cluster {
    /// Starts a server and one attested agent with default lifetimes.
    pub fn start() -> Cluster {
        Cluster::start_with(Options::default())
    }

    /// Starts a server and one attested agent.
    pub fn start_with(options: Options) -> Cluster {
        let mut cluster = Cluster::start_server_only(options);
        let token = cluster.generate_token(None);
        cluster.start_agent(&token);
        cluster
    }

    /// Starts only the server; `start_agent` adds the agent.
    pub fn start_server_only(options: Options) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("tessera-e2e-")
            .tempdir()
            .expect("create the cluster directory");
        let mut cluster = Cluster {
            agent: None,
            server: None,
            agent_id: String::new(),
            options,
            server_address: "127.0.0.1:0".to_owned(),
            dir,
        };
        fs::create_dir_all(cluster.server_data_dir()).expect("create the server data dir");
        cluster.write_server_config();
        cluster.start_server();
        cluster
    }

    /// Root of the cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn server_data_dir(&self) -> PathBuf {
        self.dir().join("server")
    }

    pub fn server_config_path(&self) -> PathBuf {
        self.dir().join("server.toml")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.server_data_dir().join("admin.sock")
    }

    /// PEM bundle that the server writes for agents to bootstrap from.
    pub fn bundle_path(&self) -> PathBuf {
        self.server_data_dir().join("bundle.pem")
    }

    /// Data directory of the agent called `name`.
    pub fn agent_data_dir(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Workload API socket of the agent called `name`.
    pub fn agent_socket(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}-api")).join("api.sock")
    }

    /// Workload API socket of the cluster's agent.
    pub fn workload_socket(&self) -> PathBuf {
        self.agent_socket("agent")
    }

    /// `unix://` URI of the cluster's Workload API socket.
    pub fn workload_endpoint(&self) -> String {
        format!("unix://{}", self.workload_socket().display())
    }

    fn write_server_config(&self) {
        let o = &self.options;
        let config = format!(
            r#"trust_domain = "{TRUST_DOMAIN}"
data_dir = "{data_dir}"
bind_address = "{address}"
admin_socket = "{admin}"
log_level = "info"

[ca]
key_type = "ec-p256"
ttl = "{ca_ttl}"
key_storage = "disk"

[svid]
x509_ttl = "{x509_ttl}"
jwt_ttl = "{jwt_ttl}"

[join_token]
ttl = "{join_token_ttl}"

{extra}
"#,
            data_dir = self.server_data_dir().display(),
            address = self.server_address,
            admin = self.admin_socket().display(),
            ca_ttl = o.ca_ttl,
            x509_ttl = o.x509_ttl,
            jwt_ttl = o.jwt_ttl,
            join_token_ttl = o.join_token_ttl,
            extra = o.extra_server_toml,
        );
        fs::write(self.server_config_path(), config).expect("write server.toml");
    }

    /// Starts the server from the cluster's config and waits until its admin
    /// socket accepts connections and its bundle file exists.
    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        let config = self.server_config_path();
        let args = [
            OsStr::new("server"),
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ];
        let log = self.dir().join("server.log");
        self.server = Some(Daemon::spawn("server", &tessera_bin(), args, &log));

        // With port 0 the server picks the port and writes the bound address
        // to agent_api.addr; the config then pins that port for restarts.
        let admin = self.admin_socket();
        let bundle = self.bundle_path();
        let address_file = self.server_data_dir().join("agent_api.addr");
        let mut bound: Option<SocketAddr> = None;
        let pick_port = self.server_address.ends_with(":0");
        self.wait_daemon(
            "server",
            "the admin socket, bundle.pem and agent_api.addr",
            || {
                if pick_port && bound.is_none() {
                    bound = fs::read_to_string(&address_file)
                        .ok()
                        .and_then(|text| text.trim().parse().ok());
                }
                socket_accepts(&admin) && bundle.is_file() && (!pick_port || bound.is_some())
            },
        );
        if let Some(address) = bound {
            self.server_address = address.to_string();
            self.write_server_config();
        }
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill_server(&mut self) {
        let mut server = self.server.take().expect("the server is running");
        server.kill();
    }

    /// Stops the server with SIGTERM.
    pub fn stop_server(&mut self) -> ExitStatus {
        let mut server = self.server.take().expect("the server is running");
        server.stop()
    }

    /// Returns the server daemon, for signals and logs.
    pub fn server(&mut self) -> &mut Daemon {
        self.server.as_mut().expect("the server is running")
    }

    /// Returns the agent daemon, for signals and logs.
    pub fn agent(&mut self) -> &mut Daemon {
        self.agent.as_mut().expect("the agent is running")
    }

    /// Creates a join token, with the server's default TTL unless `ttl`
    /// (such as `1s`) is given.
    pub fn generate_token(&self, ttl: Option<&str>) -> JoinToken {
        let mut args = vec!["token", "generate", "--output", "json"];
        if let Some(ttl) = ttl {
            args.push("--ttl");
            args.push(ttl);
        }
        let output = self.tessera(&args).success();
        parse_join_token(&output)
    }

    /// Writes the config of the agent called `name` and returns its path.
    pub fn write_agent_config(&self, name: &str, join_token: &str) -> PathBuf {
        let data_dir = self.agent_data_dir(name);
        fs::create_dir_all(&data_dir).expect("create the agent data dir");
        let config = format!(
            r#"trust_domain = "{TRUST_DOMAIN}"
server_address = "{address}"
data_dir = "{data_dir}"
socket_path = "{socket}"
join_token = "{join_token}"
trust_bundle_path = "{bundle}"
log_level = "info"
"#,
            address = self.server_address,
            data_dir = data_dir.display(),
            socket = self.agent_socket(name).display(),
            bundle = self.bundle_path().display(),
        );
        let path = self.dir().join(format!("{name}.toml"));
        fs::write(&path, config).expect("write the agent config");
        path
    }

    /// Starts an agent called `name` with `join_token` without waiting for
    /// it; tests of failed attestation use it directly.
    pub fn spawn_agent(&self, name: &str, join_token: &str) -> Daemon {
        let config = self.write_agent_config(name, join_token);
        let args = [
            OsStr::new("agent"),
            OsStr::new("run"),
            OsStr::new("--config"),
            config.as_os_str(),
        ];
        let log = self.dir().join(format!("{name}.log"));
        Daemon::spawn(name, &tessera_bin(), args, &log)
    }

    /// Starts the cluster's agent with `token` and waits until its Workload
    /// API socket accepts connections.
    pub fn start_agent(&mut self, token: &JoinToken) {
        assert!(self.agent.is_none(), "the agent is already running");
        self.agent = Some(self.spawn_agent("agent", &token.token));
        self.agent_id = token.agent_id.clone();
        let socket = self.workload_socket();
        self.wait_daemon("agent", "the Workload API socket", || {
            socket_accepts(&socket)
        });
        // The agent serves its socket before it attests.
        let admin = self.admin_socket();
        let agent_id = token.agent_id.clone();
        self.wait_daemon("agent", "node attestation", || {
            agent_listed(&admin, &agent_id)
        });
    }

    /// Waits for `ready`, failing fast with the logs when a daemon exits.
    fn wait_daemon(&mut self, name: &str, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(server) = self.server.as_mut() {
                server.assert_running();
            }
            if let Some(agent) = self.agent.as_mut() {
                agent.assert_running();
            }
            if ready() {
                return;
            }
            if Instant::now() >= deadline {
                panic!("timed out after {READY_TIMEOUT:?} waiting for {name}: {what}");
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Builds a command for `program` with the cluster's admin and Workload
    /// API sockets in its environment.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("TESSERA_ADMIN_SOCKET", self.admin_socket())
            .env("SPIFFE_ENDPOINT_SOCKET", self.workload_endpoint())
            .env_remove("RUST_LOG");
        command
    }

    /// Runs `tessera ARGS` against this cluster.
    pub fn tessera(&self, args: &[&str]) -> CmdOutput {
        self.run_program(&tessera_bin(), args)
    }

    /// Runs `program ARGS` against this cluster; `program` may be a copy of
    /// the `tessera` binary, so the agent attests a different executable.
    pub fn run_program(&self, program: &Path, args: &[&str]) -> CmdOutput {
        let mut command = self.command(program);
        command.args(args);
        run_with_timeout(command, COMMAND_TIMEOUT)
    }

    /// Creates an entry under the cluster's agent and returns the stored
    /// entry as JSON (`results[0].entry` of `entry create --output json`).
    pub fn create_entry(&self, spiffe_id: &str, selectors: &[&str]) -> Value {
        let mut args = vec![
            "entry",
            "create",
            "--output",
            "json",
            "--spiffe-id",
            spiffe_id,
            "--parent-id",
            &self.agent_id,
        ];
        for selector in selectors {
            args.push("--selector");
            args.push(selector);
        }
        let output = self.tessera(&args).success();
        let entry = output.json()["results"][0]["entry"].clone();
        assert!(entry.is_object(), "no entry in the output: {output:?}");
        entry
    }

    /// Lists every stored entry with `tessera entry list --output json`.
    pub fn list_entries(&self) -> Vec<Value> {
        let json = self
            .tessera(&["entry", "list", "--output", "json"])
            .success()
            .json();
        entries_of(&json)
    }

    /// Polls `tessera svid fetch` as `program` until the agent returns an
    /// X.509-SVID for `expected_id`, and returns the last output.
    pub fn wait_for_svid(&self, program: &Path, expected_id: &str) -> CmdOutput {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // A short --timeout keeps each try brief, so the loop notices a
            // daemon that died instead of waiting in the CLI's retries.
            let args = ["svid", "fetch", "--output", "json", "--timeout", "1s"];
            let output = self.run_program(program, &args);
            for daemon in [&self.server, &self.agent].into_iter().flatten() {
                assert!(
                    daemon.is_alive(),
                    "{} exited; see its log below",
                    daemon.name()
                );
            }
            if output.status.success() && output.stdout.contains(expected_id) {
                return output;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for an SVID for {expected_id}\nlast stdout:\n{}\nlast stderr:\n{}",
                    output.stdout, output.stderr
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Collects all daemon logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return text;
        };
        let mut logs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension() == Some(OsStr::new("log")))
            .collect();
        logs.sort();
        for log in logs {
            let body = fs::read_to_string(&log).unwrap_or_default();
            text.push_str(&format!("---- {} ----\n", log.display()));
            // Every SQL statement is a debug line of sqlx; they drown the rest.
            for line in body.lines().filter(|line| !line.contains("sqlx::query")) {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.stop();
        }
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
        if thread::panicking() {
            eprintln!("==== cluster logs ====\n{}", self.logs());
        }
    }
}

/// Returns whether `tessera agent list` on the server at `admin_socket`
/// shows `agent_id`, which it does once the agent has attested.
pub fn agent_listed(admin_socket: &Path, agent_id: &str) -> bool {
    let mut command = Command::new(tessera_bin());
    command
        .args(["agent", "list", "--output", "json"])
        .env("TESSERA_ADMIN_SOCKET", admin_socket);
    let output = run_with_timeout(command, COMMAND_TIMEOUT).success();
    let json = output.json();
    let agents = json["agents"].as_array().cloned().unwrap_or_default();
    agents.iter().any(|agent| agent["spiffe_id"] == agent_id)
}

/// Parses the output of `tessera token generate --output json`.
pub fn parse_join_token(output: &CmdOutput) -> JoinToken {
    let json = output.json();
    let field = |name: &str| -> String {
        json[name]
            .as_str()
            .unwrap_or_else(|| panic!("`{name}` missing in {}", output.stdout))
            .to_owned()
    };
    JoinToken {
        token: field("token"),
        agent_id: field("agent_id"),
        expires_at: json["expires_at"].as_i64().unwrap_or_default(),
    }
}

/// Entries in the JSON of `entry list`: either an array or an object with an
/// `entries` array.
pub fn entries_of(json: &Value) -> Vec<Value> {
    match json {
        Value::Array(items) => items.clone(),
        Value::Object(map) => map
            .get("entries")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => panic!("unexpected entry list JSON: {json}"),
    }
}

/// Copies the `tessera` binary to `dir/name` so that the agent attests a
/// different executable path for processes started from the copy.
pub fn copy_tessera(dir: &Path, name: &str) -> PathBuf {
    let target = dir.join(name);
    fs::copy(tessera_bin(), &target).expect("copy the tessera binary");
    // The agent reads the path from /proc/<pid>/exe, which resolves symlinks.
    fs::canonicalize(&target).expect("canonicalize the copied binary")
}
