//! The Tessera server and agent under test: started as child processes of
//! the `tessera` binary in a temporary directory (loopback TCP and Unix
//! sockets only), or attached to when they already run.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tessera_proto::workload::X509BundlesRequest;
use tessera_spiffe::{SpiffeId, TrustDomain};
use tokio::process::{Child, Command};

use super::admin::Admin;
use super::workload_api;

/// Trust domain of a cluster that the load generator starts.
const TRUST_DOMAIN: &str = "bench.tessera.test";

/// Tracing target under which sqlx logs each SQL statement it runs.
pub const STATEMENT_LOG_TARGET: &str = "sqlx::query";

/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Location of the server and agent under test: a binary to start, or
/// running processes to attach to.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The `tessera` binary that the run starts as server and agent.
    #[arg(long, value_name = "BIN", default_value = "target/release/tessera")]
    pub tessera: PathBuf,

    /// Admin socket of a running server to attach to, instead of starting
    /// one. Needs --server-address and --bundle.
    #[arg(long, value_name = "PATH", requires_all = ["server_address", "bundle"])]
    pub admin_socket: Option<PathBuf>,

    /// Agent API address of the running server.
    #[arg(long, value_name = "HOST:PORT")]
    pub server_address: Option<SocketAddr>,

    /// Trust bundle (PEM) of the running server.
    #[arg(long, value_name = "PATH")]
    pub bundle: Option<PathBuf>,

    /// PID of the running server, for its CPU time and memory.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Workload API socket of a running agent to attach to. Needs
    /// --admin-socket and --agent-id.
    #[arg(long, value_name = "PATH", requires_all = ["admin_socket", "agent_id"])]
    pub workload_socket: Option<PathBuf>,

    /// SPIFFE ID of the running agent, the parent of the entries the run
    /// creates.
    #[arg(long, value_name = "SPIFFE_ID")]
    pub agent_id: Option<String>,

    /// PID of the running agent, for its memory.
    #[arg(long, value_name = "PID")]
    pub agent_pid: Option<u32>,

    /// Log filter (RUST_LOG syntax) of the started server and agent.
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log_level: String,

    /// Parent of the run's temporary directory (default: the system's,
    /// usually /tmp). On a tmpfs such as /dev/shm an fsync costs nothing, so
    /// large entry sets are created fast, but the datastore is not durable.
    #[arg(long, value_name = "DIR")]
    pub temp_root: Option<PathBuf>,

    /// Keep the temporary directory (configs, data, logs) after the run.
    #[arg(long)]
    pub keep_dir: bool,

    /// Datastore URL of the started server, such as
    /// `postgres://user@host/database` (default: a SQLite file in its data
    /// directory).
    #[arg(long, value_name = "URL")]
    pub datastore_url: Option<String>,

    /// X.509-SVID lifetime of the started server, for agent and workload
    /// SVIDs alike, such as `2m` (default: the server's, 1 h). Agents renew
    /// at half of it.
    #[arg(long, value_name = "DURATION")]
    pub x509_svid_ttl: Option<String>,

    /// Maximum wait for a started server or agent to become ready.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
}

/// The agent of a cluster.
pub struct Agent {
    /// The agent's SPIFFE ID.
    pub id: String,
    /// Its Workload API socket.
    pub workload_socket: PathBuf,
    process: Option<Child>,
    pid: Option<u32>,
}

impl Agent {
    /// PID of the agent, when known.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// A server, and an agent once started, ready to take load.
pub struct Cluster {
    /// Trust domain of the server.
    pub trust_domain: TrustDomain,
    /// The server's admin socket.
    pub admin_socket: PathBuf,
    /// The server's agent API address.
    pub server_address: SocketAddr,
    /// The server's trust bundle (PEM).
    pub bundle_path: PathBuf,
    args: TargetArgs,
    work_dir: Option<tempfile::TempDir>,
    server: Option<Child>,
    server_pid: Option<u32>,
    agent: Option<Agent>,
    /// Further agents started by [`Cluster::start_agents`].
    fleet: Vec<Agent>,
    log_statements: bool,
}

impl Cluster {
    /// Starts a server, or attaches to the one that `args` names.
    pub async fn start(args: &TargetArgs) -> Result<Self> {
        if let Some(admin_socket) = &args.admin_socket {
            return Self::attach(args, admin_socket).await;
        }
        if !args.tessera.is_file() {
            bail!(
                "the tessera binary {} does not exist; build it with \
                 `cargo build --release -p tessera-cli` or pass --tessera BIN",
                args.tessera.display()
            );
        }
        let mut builder = tempfile::Builder::new();
        builder.prefix("tessera-bench-");
        let work_dir = match &args.temp_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .context("creating the temporary directory")?;
        let root = work_dir.path().to_owned();
        let server_dir = root.join("server");
        std::fs::create_dir_all(&server_dir)?;

        let server_address = free_loopback_port()?;
        let mut cluster = Self {
            trust_domain: TrustDomain::new(TRUST_DOMAIN)?,
            admin_socket: server_dir.join("admin.sock"),
            server_address,
            bundle_path: server_dir.join("bundle.pem"),
            args: args.clone(),
            work_dir: Some(work_dir),
            server: None,
            server_pid: None,
            agent: None,
            fleet: Vec::new(),
            log_statements: false,
        };
        let config = cluster.server_config(&server_dir);
        std::fs::write(root.join("server.toml"), config)?;
        let took = cluster.spawn_server().await?;
        eprintln!(
            "server ready in {} ms (pid {}, {})",
            took.as_millis(),
            cluster.server_pid.unwrap_or(0),
            root.display()
        );
        Ok(cluster)
    }

    async fn attach(args: &TargetArgs, admin_socket: &Path) -> Result<Self> {
        let mut admin = Admin::connect(admin_socket).await?;
        let health = admin.health().await?;
        let trust_domain = TrustDomain::new(&health.trust_domain)
            .with_context(|| format!("server reports trust domain {:?}", health.trust_domain))?;
        let (Some(server_address), Some(bundle_path)) = (args.server_address, &args.bundle) else {
            bail!("--admin-socket needs --server-address and --bundle");
        };
        let agent = match (&args.workload_socket, &args.agent_id) {
            (Some(socket), Some(id)) => Some(Agent {
                id: SpiffeId::parse(id)?.to_string(),
                workload_socket: socket.clone(),
                process: None,
                pid: args.agent_pid,
            }),
            _ => None,
        };
        Ok(Self {
            trust_domain,
            admin_socket: admin_socket.to_owned(),
            server_address,
            bundle_path: bundle_path.clone(),
            args: args.clone(),
            work_dir: None,
            server: None,
            server_pid: args.server_pid,
            agent,
            fleet: Vec::new(),
            log_statements: false,
        })
    }

    /// Whether the load generator started the server, so it may restart it.
    pub fn owns_server(&self) -> bool {
        self.work_dir.is_some()
    }

    /// PID of the server, when known.
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pid
    }

    /// Opens an admin API client.
    pub async fn admin(&self) -> Result<Admin> {
        Admin::connect(&self.admin_socket).await
    }

    /// Starts an agent that attests with a new join token, unless one is
    /// already running, and waits until its Workload API serves bundles.
    pub async fn start_agent(&mut self) -> Result<&Agent> {
        if self.agent.is_none() {
            let agent = self.spawn_agent().await?;
            self.agent = Some(agent);
        }
        self.agent
            .as_ref()
            .context("the agent was started just before")
    }

    async fn spawn_agent(&mut self) -> Result<Agent> {
        let started = Instant::now();
        let mut agent = self.spawn_named_agent("agent").await?;
        self.wait_for_agent(&mut agent, "agent.log").await?;
        eprintln!(
            "agent ready in {} ms (pid {}, {})",
            started.elapsed().as_millis(),
            agent.pid.unwrap_or(0),
            agent.id
        );
        Ok(agent)
    }

    /// Starts `count` more agents at once, each with its own join token,
    /// data directory and Workload API socket, waits until every one serves
    /// bundles, and returns them. They stop with the cluster.
    pub async fn start_agents(&mut self, count: usize) -> Result<&[Agent]> {
        let started = Instant::now();
        let first = self.fleet.len();
        for index in first..first + count {
            let agent = self.spawn_named_agent(&fleet_agent_name(index)).await?;
            self.fleet.push(agent);
        }

        let mut fleet = std::mem::take(&mut self.fleet);
        let mut waited = Ok(());
        for (index, agent) in fleet.iter_mut().enumerate().skip(first) {
            let log = format!("{}.log", fleet_agent_name(index));
            waited = self.wait_for_agent(agent, &log).await;
            if waited.is_err() {
                break;
            }
        }
        self.fleet = fleet;
        waited?;
        eprintln!(
            "{count} agents ready in {} ms",
            started.elapsed().as_millis()
        );
        Ok(&self.fleet[first..])
    }

    /// Writes the config of an agent called `name` with a new join token
    /// and starts it without waiting.
    async fn spawn_named_agent(&mut self, name: &str) -> Result<Agent> {
        let Some(root) = self.work_dir.as_ref().map(|dir| dir.path().to_owned()) else {
            bail!("attached to a server without an agent: pass --workload-socket and --agent-id");
        };
        let token = self.admin().await?.join_token().await?;
        let agent_dir = root.join(name);
        std::fs::create_dir_all(&agent_dir)?;
        let workload_socket = agent_dir.join("workload.sock");
        let config = self.agent_config(&agent_dir, &workload_socket, &token.token);
        let config_path = root.join(format!("{name}.toml"));
        std::fs::write(&config_path, config)?;

        let filter = self.args.log_level.clone();
        let child = self.spawn_tessera(
            &["agent", "run", "--config"],
            &config_path,
            &format!("{name}.log"),
            &filter,
        )?;
        let pid = child.id();
        Ok(Agent {
            id: token.agent_id,
            workload_socket,
            process: Some(child),
            pid,
        })
    }

    async fn wait_for_agent(&self, agent: &mut Agent, log_name: &str) -> Result<()> {
        let deadline = Instant::now() + self.args.start_timeout;
        loop {
            if let Some(child) = agent.process.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the agent exited with {status} before it was ready; {}",
                    self.log_hint(log_name)
                );
            }
            if agent_serves_bundles(&agent.workload_socket).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent was not ready within {:?}; {}",
                    self.args.start_timeout,
                    self.log_hint(log_name)
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Stops the started server and starts it again on the same data, and
    /// returns the time from the new process's start to its first healthy
    /// Health response. With `log_statements`, the new server logs every
    /// SQL statement (sqlx's `sqlx::query` target at debug level) so that
    /// [`Cluster::statements_logged_since`] can count them.
    pub async fn restart_server(&mut self, log_statements: bool) -> Result<Duration> {
        if !self.owns_server() {
            bail!("cannot restart a server that this run did not start");
        }
        if let Some(child) = self.server.take() {
            stop_child(child, "server").await?;
        }
        self.log_statements = log_statements;
        self.spawn_server().await
    }

    /// Current length of the started server's log, a mark for
    /// [`Cluster::statements_logged_since`].
    pub fn server_log_len(&self) -> Result<u64> {
        Ok(std::fs::metadata(self.server_log_path()?)?.len())
    }

    /// Counts the SQL statements the server logged after the log had
    /// `mark` bytes. Only a server restarted with `log_statements` logs
    /// them.
    pub fn statements_logged_since(&self, mark: u64) -> Result<usize> {
        let text = self.server_log_since(mark)?;
        let count = text
            .lines()
            .filter(|line| line.contains(STATEMENT_LOG_TARGET))
            .count();
        Ok(count)
    }

    /// Returns the text of each SQL statement that the server logged after
    /// the log had `mark` bytes, with runs of whitespace made one space.
    pub fn statement_texts_since(&self, mark: u64) -> Result<Vec<String>> {
        let text = self.server_log_since(mark)?;
        let statements = text
            .lines()
            .filter(|line| line.contains(STATEMENT_LOG_TARGET))
            .map(statement_text)
            .collect();
        Ok(statements)
    }

    fn server_log_since(&self, mark: u64) -> Result<String> {
        use std::io::{Read, Seek, SeekFrom};
        let mut log = std::fs::File::open(self.server_log_path()?)?;
        log.seek(SeekFrom::Start(mark))?;
        let mut text = String::new();
        log.read_to_string(&mut text)?;
        Ok(text)
    }

    fn server_log_path(&self) -> Result<PathBuf> {
        let dir = self
            .work_dir
            .as_ref()
            .context("the server was not started by this run")?;
        Ok(dir.path().join("server.log"))
    }

    async fn spawn_server(&mut self) -> Result<Duration> {
        let Some(root) = self.work_dir.as_ref().map(|dir| dir.path().to_owned()) else {
            bail!("no working directory for a server");
        };
        let filter = if self.log_statements {
            format!("{},{STATEMENT_LOG_TARGET}=debug", self.args.log_level)
        } else {
            self.args.log_level.clone()
        };
        let started = Instant::now();
        let child = self.spawn_tessera(
            &["server", "run", "--config"],
            &root.join("server.toml"),
            "server.log",
            &filter,
        )?;
        self.server_pid = child.id();
        self.server = Some(child);
        self.wait_for_server().await?;
        let took = started.elapsed();
        if !self.bundle_path.is_file() {
            bail!(
                "the server is healthy but wrote no bundle at {}",
                self.bundle_path.display()
            );
        }
        Ok(took)
    }

    async fn wait_for_server(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.args.start_timeout;
        loop {
            if let Some(child) = self.server.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the server exited with {status} before it was ready; {}",
                    self.log_hint("server.log")
                );
            }
            if let Ok(mut admin) = Admin::connect(&self.admin_socket).await
                && let Ok(health) = admin.health().await
                && health.status == "serving"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the server was not ready within {:?}; {}",
                    self.args.start_timeout,
                    self.log_hint("server.log")
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Starts `tessera ARGS CONFIG` with its output appended to `log_name`
    /// and `RUST_LOG` set to `filter`, which overrides the config's level.
    fn spawn_tessera(
        &self,
        args: &[&str],
        config: &Path,
        log_name: &str,
        filter: &str,
    ) -> Result<Child> {
        let root = self
            .work_dir
            .as_ref()
            .map(|dir| dir.path())
            .context("no working directory")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join(log_name))?;
        Command::new(&self.args.tessera)
            .args(args)
            .arg(config)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.args.tessera.display()))
    }

    fn log_hint(&self, log_name: &str) -> String {
        match &self.work_dir {
            Some(dir) => format!("see {} (kept)", dir.path().join(log_name).display()),
            None => "see its log".to_owned(),
        }
    }

    fn server_config(&self, server_dir: &Path) -> String {
        let mut config = format!(
            "trust_domain = {td:?}\n\
             data_dir = {dir:?}\n\
             bind_address = \"{addr}\"\n\
             admin_socket = {admin:?}\n\
             log_level = \"warn\"\n",
            td = self.trust_domain.name(),
            dir = server_dir.display().to_string(),
            addr = self.server_address,
            admin = self.admin_socket.display().to_string(),
        );
        if let Some(ttl) = &self.args.x509_svid_ttl {
            config.push_str(&format!("\n[svid]\nx509_ttl = {ttl:?}\n"));
        }
        if let Some(url) = &self.args.datastore_url {
            config.push_str(&format!("\n[datastore]\nurl = {url:?}\n"));
        }
        config
    }

    fn agent_config(&self, agent_dir: &Path, socket: &Path, token: &str) -> String {
        format!(
            "trust_domain = {td:?}\n\
             server_address = \"{addr}\"\n\
             data_dir = {dir:?}\n\
             socket_path = {socket:?}\n\
             join_token = {token:?}\n\
             trust_bundle_path = {bundle:?}\n\
             log_level = \"warn\"\n",
            td = self.trust_domain.name(),
            addr = self.server_address,
            dir = agent_dir.display().to_string(),
            socket = socket.display().to_string(),
            bundle = self.bundle_path.display().to_string(),
        )
    }

    /// Stops the started agent and server; keeps the working directory
    /// when asked to, or when `failed`.
    pub async fn stop(mut self, failed: bool) -> Result<()> {
        for agent in std::mem::take(&mut self.fleet) {
            if let Some(child) = agent.process {
                stop_child(child, "agent").await?;
            }
        }
        if let Some(agent) = self.agent.take()
            && let Some(child) = agent.process
        {
            stop_child(child, "agent").await?;
        }
        if let Some(child) = self.server.take() {
            stop_child(child, "server").await?;
        }
        if let Some(dir) = self.work_dir.take()
            && (self.args.keep_dir || failed)
        {
            let kept = dir.keep();
            eprintln!("kept {}", kept.display());
        }
        Ok(())
    }
}

/// Extracts the statement from a line that sqlx logged: the quoted
/// `db.statement` field, which sqlx leaves empty for statements of four
/// words or fewer, or else the `summary` field.
fn statement_text(line: &str) -> String {
    let statement = quoted_field(line, "db.statement").filter(|text| !text.trim().is_empty());
    let text = statement
        .or_else(|| quoted_field(line, "summary"))
        .unwrap_or_default();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Returns the value of `name="..."` in a tracing line, with the escapes
/// `\n`, `\t`, `\"` and `\\` undone.
fn quoted_field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' | 't' => value.push(' '),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}

/// Name of the fleet agent with this index: its directory, config and log.
fn fleet_agent_name(index: usize) -> String {
    format!("agent-{index:04}")
}

/// Asks a child to stop with SIGTERM, and kills it after 10 s.
async fn stop_child(mut child: Child, name: &str) -> Result<()> {
    if let Some(pid) = child
        .id()
        .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if let Ok(status) = tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            let status = status?;
            if !status.success() {
                eprintln!("the {name} exited with {status} after SIGTERM");
            }
            return Ok(());
        }
        eprintln!("the {name} did not stop within 10 s of SIGTERM; killing it");
    }
    child.kill().await?;
    Ok(())
}

/// Whether the Workload API at `socket` returns a first X.509 bundles
/// message.
async fn agent_serves_bundles(socket: &Path) -> bool {
    if !socket.exists() {
        return false;
    }
    let Ok(mut client) = workload_api::connect(socket).await else {
        return false;
    };
    let request = workload_api::request(X509BundlesRequest {});
    let Ok(response) = client.fetch_x509_bundles(request).await else {
        return false;
    };
    matches!(response.into_inner().message().await, Ok(Some(_)))
}

/// Picks a free TCP port on 127.0.0.1. Another process may take it before
/// the server binds it, which makes the server fail to start.
fn free_loopback_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_text_cases() {
        let cases = [
            (
                r#"2026-12-04T19:00:00Z DEBUG sqlx::query: summary="SELECT revision, kind, object_id," db.statement="\n\nSELECT revision, kind, object_id, created_at\n  FROM changes WHERE revision > $1\n" rows_affected=0"#,
                "SELECT revision, kind, object_id, created_at FROM changes WHERE revision > $1",
            ),
            (
                r#"2026-12-04T19:00:00Z DEBUG sqlx::query: summary="BEGIN" db.statement="" rows_affected=0"#,
                "BEGIN",
            ),
            (
                r#"DEBUG sqlx::query: summary="SELECT \"quoted\"" db.statement="" rows_affected=0"#,
                "SELECT \"quoted\"",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(statement_text(line), expected, "{line}");
        }
    }
}
