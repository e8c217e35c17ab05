//! `tessera dev`: a complete local trust domain for development. It writes
//! a server and an agent configuration into a data directory once, and runs
//! `tessera server run` and `tessera agent run` as child processes. The agent
//! gets a join token only when it has no usable SVID, and the current
//! user's Unix UID is registered. SIGINT or SIGTERM stops both children.

mod layout;
mod process;

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tessera_proto::types::{Entry, Selector};
use tessera_spiffe::{SpiffeId, TrustDomain};
use tonic::Code;
use zeroize::Zeroizing;

use crate::cli::DevArgs;
use crate::client::admin::AdminClient;
use crate::commands::daemon::ShutdownSignals;
use crate::output::{self, OutputFormat};

use layout::{DevLayout, ResolvedConfigs};
use process::{Child, JOIN_TOKEN_ENV, Wait};

/// Trust domain of a new development deployment.
pub const DEFAULT_TRUST_DOMAIN: &str = "tessera.local";

/// Time allowed for the server's admin API and the agent's Workload API to
/// come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A stored agent SVID that expires sooner than this is treated as missing,
/// because the agent could not renew it in time and a join token is needed.
const SVID_EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// Runs `tessera dev` until SIGINT or SIGTERM.
pub async fn run(args: DevArgs, format: OutputFormat) -> Result<()> {
    // Handle the signals before starting children, so that a Ctrl-C during
    // startup still stops them in order.
    let mut signals = ShutdownSignals::install()?;

    let layout = DevLayout::new(args.data_dir)?;
    layout.write_configs_if_absent(args.trust_domain.as_deref())?;
    let configs = layout.resolve_configs()?;

    let executable = std::env::current_exe().context("failed to find the tessera executable")?;
    eprintln!("Starting the server (log: {})", layout.server_log.display());
    let mut server = Child::spawn(
        "server",
        &executable,
        &layout.server_config,
        &layout.server_log,
        None,
    )?;

    let result = run_with_server(
        &layout,
        &configs,
        &executable,
        &mut server,
        &mut signals,
        format,
    )
    .await;
    server.stop().await;
    result
}

async fn run_with_server(
    layout: &DevLayout,
    configs: &ResolvedConfigs,
    executable: &std::path::Path,
    server: &mut Child,
    signals: &mut ShutdownSignals,
    format: OutputFormat,
) -> Result<()> {
    let mut client = match server
        .wait_for_admin_api(&configs.admin_socket, STARTUP_TIMEOUT, signals)
        .await?
    {
        Wait::Ready(client) => client,
        Wait::Interrupted => return Ok(()),
    };

    let (agent_id, join_token) = agent_identity(&mut client, configs).await?;
    let (user_name, uid) = current_user()?;
    let spiffe_id = user_spiffe_id(&configs.trust_domain, &user_name)?;
    ensure_user_entry(&mut client, &spiffe_id, &agent_id, uid).await?;

    let ready = ReadyView {
        trust_domain: configs.trust_domain.name().to_owned(),
        data_dir: layout.data_dir.display().to_string(),
        endpoint_socket: format!("unix://{}", configs.workload_socket.display()),
        admin_socket: configs.admin_socket.display().to_string(),
        spiffe_id: spiffe_id.to_string(),
        selector: format!("unix:uid:{uid}"),
        agent_id,
        server_log: layout.server_log.display().to_string(),
        agent_log: layout.agent_log.display().to_string(),
    };

    eprintln!("Starting the agent (log: {})", layout.agent_log.display());
    let token_env = join_token
        .as_ref()
        .map(|token| (JOIN_TOKEN_ENV, token.as_str()));
    let mut agent = Child::spawn(
        "agent",
        executable,
        &layout.agent_config,
        &layout.agent_log,
        token_env,
    )?;
    drop(join_token);

    let result = run_with_agent(server, &mut agent, configs, signals, &ready, format).await;
    agent.stop().await;
    result
}

async fn run_with_agent(
    server: &mut Child,
    agent: &mut Child,
    configs: &ResolvedConfigs,
    signals: &mut ShutdownSignals,
    ready: &ReadyView,
    format: OutputFormat,
) -> Result<()> {
    let waited = agent
        .wait_for_socket(&configs.workload_socket, STARTUP_TIMEOUT, signals, server)
        .await?;
    if let Wait::Interrupted = waited {
        return Ok(());
    }
    match format {
        OutputFormat::Json => output::print_json(ready)?,
        OutputFormat::Text => output::print_text(&ready_text(ready))?,
    }

    tokio::select! {
        name = signals.recv() => {
            eprintln!("Received {name}; stopping the agent and the server");
            Ok(())
        }
        error = server.exited() => Err(error),
        error = agent.exited() => Err(error),
    }
}

/// Returns the agent's ID and, when the agent has no usable stored SVID, a
/// new join token for it.
async fn agent_identity(
    client: &mut AdminClient,
    configs: &ResolvedConfigs,
) -> Result<(String, Option<Zeroizing<String>>)> {
    if let Some(agent_id) = stored_agent_id(&configs.agent_data_dir, SystemTime::now())? {
        eprintln!("The agent has a stored SVID for {agent_id}; no join token needed");
        return Ok((agent_id, None));
    }
    let token = client.create_join_token(0).await?;
    eprintln!("Generated a join token for {}", token.agent_id);
    Ok((token.agent_id, Some(Zeroizing::new(token.token))))
}

/// Reads the agent ID from the SVID the agent stored in its data directory,
/// or `None` when there is none or it expires within [`SVID_EXPIRY_MARGIN`].
fn stored_agent_id(agent_data_dir: &std::path::Path, now: SystemTime) -> Result<Option<String>> {
    if !agent_data_dir.exists() {
        return Ok(None);
    }
    let storage = tessera_agent::storage::Storage::open(agent_data_dir)?;
    let svid = storage.load_agent_svid().with_context(|| {
        format!(
            "failed to read the agent's stored SVID; delete {} to attest the agent again",
            agent_data_dir.display()
        )
    })?;
    let Some(svid) = svid else {
        return Ok(None);
    };

    let (_, leaf) = x509_parser::parse_x509_certificate(svid.leaf())
        .context("the agent's stored SVID has an invalid certificate")?;
    let not_after = leaf.validity().not_after.timestamp();
    let deadline = now + SVID_EXPIRY_MARGIN;
    let deadline_secs = deadline
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        });
    if not_after <= deadline_secs {
        eprintln!("The agent's stored SVID has expired; generating a new join token");
        return Ok(None);
    }
    Ok(Some(svid.spiffe_id().to_string()))
}

/// Returns the name and UID of the user running this process.
fn current_user() -> Result<(String, u32)> {
    let uid = rustix::process::getuid().as_raw();
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| user_name_from_passwd(uid))
        .unwrap_or_default();
    Ok((path_segment_for_user(&name, uid), uid))
}

/// Looks up the name of `uid` in `/etc/passwd`, for shells and containers
/// that do not set `USER`.
fn user_name_from_passwd(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let line_uid: u32 = fields.nth(1)?.parse().ok()?;
        (line_uid == uid).then(|| name.to_owned())
    })
}

/// Turns a user name into a SPIFFE ID path segment: characters outside
/// `[A-Za-z0-9._-]` become `_`, and a name that is empty, `.` or `..`
/// becomes `uid-<uid>`.
fn path_segment_for_user(name: &str, uid: u32) -> String {
    let segment: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if segment.is_empty() || segment == "." || segment == ".." {
        format!("uid-{uid}")
    } else {
        segment
    }
}

fn user_spiffe_id(trust_domain: &TrustDomain, user: &str) -> Result<SpiffeId> {
    let path = format!("/user/{user}");
    SpiffeId::from_path(trust_domain, &path)
        .with_context(|| format!("failed to build a SPIFFE ID from the path {path:?}"))
}

/// Registers `spiffe_id` for processes of `uid` under the agent; an entry
/// that already exists is kept.
async fn ensure_user_entry(
    client: &mut AdminClient,
    spiffe_id: &SpiffeId,
    agent_id: &str,
    uid: u32,
) -> Result<()> {
    let entry = Entry {
        spiffe_id: spiffe_id.to_string(),
        parent_id: agent_id.to_owned(),
        selectors: vec![Selector {
            r#type: "unix".to_owned(),
            value: format!("uid:{uid}"),
        }],
        ..Entry::default()
    };
    let response = client.create_entries(vec![entry]).await?;
    let status = response
        .results
        .first()
        .and_then(|result| result.status.as_ref());
    match status.map(|status| Code::from_i32(status.code)) {
        None | Some(Code::Ok) => eprintln!("Registered {spiffe_id} for unix:uid:{uid}"),
        Some(Code::AlreadyExists) => {
            eprintln!("{spiffe_id} is already registered for unix:uid:{uid}")
        }
        Some(code) => bail!(
            "failed to register {spiffe_id}: {} ({code:?})",
            status.map(|s| s.message.as_str()).unwrap_or_default()
        ),
    }
    Ok(())
}

/// The summary `tessera dev` prints once both children are ready.
#[derive(Serialize)]
struct ReadyView {
    trust_domain: String,
    data_dir: String,
    /// The value for SPIFFE_ENDPOINT_SOCKET.
    endpoint_socket: String,
    admin_socket: String,
    /// The SPIFFE ID the current user's processes receive.
    spiffe_id: String,
    selector: String,
    agent_id: String,
    server_log: String,
    agent_log: String,
}

fn ready_text(view: &ReadyView) -> String {
    format!(
        "Trust domain {td} is running; data in {data}\n\
         Processes of this user ({selector}) receive {id}\n\
         \n\
         export SPIFFE_ENDPOINT_SOCKET={endpoint}\n\
         \n\
         Then try:\n\
         \x20 tessera svid fetch\n\
         \x20 tessera jwt fetch --audience example\n\
         \x20 tessera entry list --admin-socket {admin}\n\
         \n\
         Logs: {server_log} and {agent_log}\n\
         Press Ctrl-C to stop.\n",
        td = view.trust_domain,
        data = view.data_dir,
        selector = view.selector,
        id = view.spiffe_id,
        endpoint = view.endpoint_socket,
        admin = view.admin_socket,
        server_log = view.server_log,
        agent_log = view.agent_log,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_name_from_passwd_finds_root() {
        assert_eq!(super::user_name_from_passwd(0).as_deref(), Some("root"));
    }

    use super::*;

    #[test]
    fn user_path_segment_cases() {
        let cases = [
            ("alice", "alice"),
            ("first.last-2_x", "first.last-2_x"),
            ("DOMAIN\\bob", "DOMAIN_bob"),
            ("josé", "jos_"),
            ("", "uid-1000"),
            (".", "uid-1000"),
            ("..", "uid-1000"),
        ];
        for (name, expected) in cases {
            assert_eq!(path_segment_for_user(name, 1000), expected, "name {name:?}");
        }
    }

    #[test]
    fn ready_text_has_export_line() {
        let view = ReadyView {
            trust_domain: "tessera.local".to_owned(),
            data_dir: "/d".to_owned(),
            endpoint_socket: "unix:///d/agent/public/api.sock".to_owned(),
            admin_socket: "/d/server/admin.sock".to_owned(),
            spiffe_id: "spiffe://tessera.local/user/alice".to_owned(),
            selector: "unix:uid:1000".to_owned(),
            agent_id: "spiffe://tessera.local/tessera/agent/join_token/0123456789abcdef".to_owned(),
            server_log: "/d/server.log".to_owned(),
            agent_log: "/d/agent.log".to_owned(),
        };
        let text = ready_text(&view);
        assert!(text.lines().any(|line| line == "export SPIFFE_ENDPOINT_SOCKET=unix:///d/agent/public/api.sock"), "{text}");
        assert!(
            text.contains("  tessera entry list --admin-socket /d/server/admin.sock\n"),
            "{text}"
        );
    }

    #[test]
    fn stored_agent_id_of_empty_dir_is_none() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let id = stored_agent_id(&dir.path().join("agent"), SystemTime::now()).expect("readable");
        assert_eq!(id, None);
    }
}
