//! End-to-end harness: runs a Tessera server and agent as child processes
//! of the `tessera` binary in a temporary directory, runs CLI commands
//! against them and stops every child on drop. When a test panics, the
//! daemons' logs are printed so the failure can be read from the output.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use rustix::process::{Pid, Signal};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::Value;
use tempfile::TempDir;

/// Trust domain of every test cluster.
pub const TRUST_DOMAIN: &str = "e2e.test";

/// Upper bound for a daemon to become ready, sized for a loaded 2-core CI
/// machine running two clusters at once.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for one CLI command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Interval between two readiness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Time a daemon gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Path of the `tessera` binary that Cargo built for these tests.
pub fn tessera_bin() -> PathBuf {
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

/// Polls `ready` every 50 ms until it returns true, panicking with `what`
/// after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Returns whether a Unix socket at `path` accepts connections.
pub fn socket_accepts(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// Sends `signal` to the process `pid`; a process that is already gone is
/// not an error.
pub fn send_signal(pid: u32, signal: Signal) {
    let raw = i32::try_from(pid).expect("child PIDs fit in i32");
    let pid = Pid::from_raw(raw).expect("child PIDs are positive");
    let _ = rustix::process::kill_process(pid, signal);
}

/// Returns whether a process with this PID exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the command name, which is in parentheses
    // and may itself contain spaces or parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// PIDs of the live children of process `parent`, read from `/proc`.
pub fn child_pids(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(parent) && process_alive(pid) {
            children.push(pid);
        }
    }
    children
}

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    /// Human-readable command line, for failure messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Exit code, or -1 when a signal ended the command.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics with the full output unless the command exited with 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "command failed: {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Parses stdout as JSON, panicking with the output when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout of `{}` is not JSON: {e}\nstdout:\n{}\nstderr:\n{}",
                self.command, self.stdout, self.stderr
            )
        })
    }
}

/// Runs `command` to completion, killing it and panicking after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> CmdOutput {
    let description = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {description}: {e}"));

    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let stdout_reader = thread::spawn(move || read_all(stdout));
    let stderr_reader = thread::spawn(move || read_all(stderr));

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll a CLI child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command timed out after {timeout:?}: {description}");
        }
        thread::sleep(Duration::from_millis(10));
    };

    CmdOutput {
        command: description,
        status,
        stdout: stdout_reader.join().expect("stdout reader thread"),
        stderr: stderr_reader.join().expect("stderr reader thread"),
    }
}

fn read_all(mut source: impl Read) -> String {
    let mut bytes = Vec::new();
    let _ = source.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A long-running child process whose stdout and stderr go to a log file.
/// Dropping it sends SIGTERM, then SIGKILL after a grace period.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
    /// Whether the child leads its own process group, whose other members
    /// are signalled with it.
    group_leader: bool,
    /// Whether dropping during a panic prints the log; a `Cluster` prints
    /// the logs of its daemons itself.
    print_log_on_panic: bool,
}

impl Daemon {
    /// Starts `program` with `args`, appending its output to `log`.
    pub fn spawn<I, S>(name: &str, program: &Path, args: I, log: &Path) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command.args(args);
        Daemon::spawn_command(name, command, log)
    }

    /// Starts `command` as the leader of a new process group, appending its
    /// output to `log`. Stopping it signals the whole group, and dropping it
    /// during a panic prints the log.
    pub fn spawn_group(name: &str, mut command: Command, log: &Path) -> Daemon {
        command.process_group(0);
        let mut daemon = Daemon::spawn_command(name, command, log);
        daemon.group_leader = true;
        daemon.print_log_on_panic = true;
        daemon
    }

    /// Starts `command`, appending its output to `log`.
    pub fn spawn_command(name: &str, mut command: Command, log: &Path) -> Daemon {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("failed to open log {}: {e}", log.display()));
        writeln!(file, "==== starting {name} ====").expect("write the log header");
        let stderr = file.try_clone().expect("clone the log file handle");

        command
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr));
        let description = format!("{command:?}");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {description}: {e}"));

        Daemon {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            exit: None,
            group_leader: false,
            print_log_on_panic: false,
        }
    }

    /// Process ID of the child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the exit status if the child has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("poll a daemon child");
        }
        self.exit
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends `signal` to the child unless it has exited.
    pub fn signal(&mut self, signal: Signal) {
        if self.try_exit().is_none() {
            send_signal(self.pid(), signal);
        }
    }

    /// Sends `signal` to the child's process group, which it leads.
    pub fn signal_group(&self, signal: Signal) {
        let raw = i32::try_from(self.pid()).expect("child PIDs fit in i32");
        let group = Pid::from_raw(raw).expect("child PIDs are positive");
        let _ = rustix::process::kill_process_group(group, signal);
    }

    /// Stops the child with SIGTERM, escalating to SIGKILL after 10 s. A
    /// group leader's whole group gets both signals.
    pub fn stop(&mut self) -> ExitStatus {
        if self.group_leader {
            self.signal_group(Signal::TERM);
        } else {
            self.signal(Signal::TERM);
        }
        if let Some(status) = self.wait_exit(STOP_GRACE) {
            if self.group_leader {
                self.signal_group(Signal::KILL);
            }
            return status;
        }
        self.kill()
    }

    /// Kills the child (and its group, if it leads one) with SIGKILL and
    /// reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        if self.group_leader {
            self.signal_group(Signal::KILL);
        }
        if let Some(status) = self.try_exit() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap a killed daemon");
        self.exit = Some(status);
        status
    }

    /// Everything the child wrote so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the child has exited.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!(
                "{} exited early with {status}\n---- {} log ----\n{}",
                self.name,
                self.name,
                self.log_text()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if self.print_log_on_panic && thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

/// Server and CA lifetimes for one cluster, as humantime strings.
#[derive(Clone, Debug)]
pub struct Options {
    pub ca_ttl: String,
    pub x509_ttl: String,
    pub jwt_ttl: String,
    pub join_token_ttl: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ca_ttl: "24h".into(),
            x509_ttl: "1h".into(),
            jwt_ttl: "5m".into(),
            join_token_ttl: "10m".into(),
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
log_level = "debug"

[ca]
key_type = "ec-p256"
ttl = "{ca_ttl}"
key_storage = "disk"

[svid]
x509_ttl = "{x509_ttl}"
jwt_ttl = "{jwt_ttl}"

[join_token]
ttl = "{join_token_ttl}"
"#,
            data_dir = self.server_data_dir().display(),
            address = self.server_address,
            admin = self.admin_socket().display(),
            ca_ttl = o.ca_ttl,
            x509_ttl = o.x509_ttl,
            jwt_ttl = o.jwt_ttl,
            join_token_ttl = o.join_token_ttl,
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

        let admin = self.admin_socket();
        let bundle = self.bundle_path();
        self.wait_daemon("server", "the admin socket and bundle.pem", || {
            socket_accepts(&admin) && bundle.is_file()
        });

        // With port 0 the server picks the port and writes the bound address
        // to agent_api.addr; the config then pins it for restarts.
        if self.server_address.ends_with(":0") {
            let address_file = self.server_data_dir().join("agent_api.addr");
            let address = fs::read_to_string(&address_file)
                .unwrap_or_else(|e| panic!("failed to read {}: {e}", address_file.display()));
            self.server_address = address.trim().to_owned();
            self.write_server_config();
        }
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill_server(&mut self) {
        let mut server = self.server.take().expect("the server is running");
        server.kill();
        // Keep the old log readable: the daemon's Drop has nothing left to stop.
        drop(server);
    }

    /// Stops the server with SIGTERM.
    pub fn stop_server(&mut self) -> ExitStatus {
        let mut server = self.server.take().expect("the server is running");
        server.stop()
    }

    /// The server daemon, for signals and logs.
    pub fn server(&mut self) -> &mut Daemon {
        self.server.as_mut().expect("the server is running")
    }

    /// The agent daemon, for signals and logs.
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
log_level = "debug"
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

    /// A `tessera` command with the cluster's admin and Workload API sockets
    /// in its environment.
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

    /// Every stored entry, from `tessera entry list --output json`.
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
            let output = self.run_program(program, &["svid", "fetch", "--output", "json"]);
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

    /// All daemon logs, for failure messages.
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
            text.push_str(&format!("---- {} ----\n{body}\n", log.display()));
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

/// Reads every certificate in a PEM file.
pub fn read_pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("failed to open {}: {e}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("invalid PEM in {}: {e}", path.display()))
}

/// URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse a certificate");
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                uris.push((*uri).to_owned());
            }
        }
    }
    uris
}

/// The single SPIFFE ID of an X.509-SVID.
#[track_caller]
pub fn svid_spiffe_id(der: &[u8]) -> String {
    let uris = uri_sans(der);
    assert_eq!(
        uris.len(),
        1,
        "an X.509-SVID has exactly one URI SAN: {uris:?}"
    );
    uris[0].clone()
}

/// Serial number of a DER certificate, as lowercase hex.
pub fn serial_hex(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse a certificate");
    cert.raw_serial_as_string()
}

/// `notAfter` of a DER certificate, in Unix seconds.
pub fn not_after(der: &[u8]) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse a certificate");
    cert.validity().not_after.timestamp()
}

/// Validates an X.509-SVID chain (leaf first) against `roots` at `now` with
/// rustls-webpki, for client authentication.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0])?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970");
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    Ok(())
}

/// Workload API access over a Unix socket with the raw generated client,
/// for tests that need gRPC status codes or to omit the security header.
pub mod workload {
    use std::path::{Path, PathBuf};

    use hyper_util::rt::TokioIo;
    use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    use tonic::transport::{Channel, Endpoint, Uri};

    /// A client over the Unix socket at `path`.
    pub async fn client(path: &Path) -> SpiffeWorkloadApiClient<Channel> {
        let path: PathBuf = path.to_owned();
        // The URI is a placeholder: the connector below always dials the socket.
        let channel = Endpoint::from_static("http://[::1]:50051")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .expect("connect to the Workload API socket");
        SpiffeWorkloadApiClient::new(channel)
    }

    /// Wraps `message` in a request that carries `workload.spiffe.io: true`.
    pub fn request<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("workload.spiffe.io", "true".parse().expect("valid ASCII"));
        request
    }
}
