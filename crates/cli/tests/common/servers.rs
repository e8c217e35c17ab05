//! Several `tessera server` processes of one trust domain on one shared
//! datastore, each with its own data directory, CA key, admin socket and
//! agent API port, and agents whose config lists the servers in a chosen
//! order. Every server and agent is a child process; they stop on drop,
//! and the logs are printed when the test panics.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::{
    CmdOutput, Daemon, JoinToken, TRUST_DOMAIN, agent_listed, entries_of, parse_join_token,
    run_with_timeout, socket_accepts, tessera_bin, wait_until,
};

/// Upper bound for a server to start and for one CLI command, sized for a
/// loaded 2-core CI machine.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Servers that share one datastore.
pub struct ServerSet {
    // Field order is drop order: the servers stop before the directory
    // with their logs is removed.
    servers: Vec<Option<Daemon>>,
    addresses: Vec<String>,
    dir: TempDir,
}

impl ServerSet {
    /// Starts `count` servers on `datastore_url` one after another, each
    /// after the previous one serves, so that the first one migrates the
    /// schema.
    pub fn start(count: usize, datastore_url: &str) -> ServerSet {
        let urls = vec![datastore_url.to_owned(); count];
        Self::start_each(&urls)
    }

    /// Starts one server per URL in `datastore_urls`, such as one URL
    /// through a proxy for a server that is to lose its datastore.
    pub fn start_each(datastore_urls: &[String]) -> ServerSet {
        let dir = tempfile::Builder::new()
            .prefix("tessera-ha-")
            .tempdir()
            .expect("create the test directory");
        let mut set = ServerSet {
            servers: Vec::new(),
            addresses: Vec::new(),
            dir,
        };
        for (index, url) in datastore_urls.iter().enumerate() {
            set.start_server(index, url);
        }
        set
    }

    /// Root of the temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn server_dir(&self, index: usize) -> PathBuf {
        self.dir().join(format!("server-{index}"))
    }

    /// Admin socket of server `index`.
    pub fn admin_socket(&self, index: usize) -> PathBuf {
        self.server_dir(index).join("admin.sock")
    }

    /// Path of the trust bundle file that server `index` publishes.
    pub fn bundle_path(&self, index: usize) -> PathBuf {
        self.server_dir(index).join("bundle.pem")
    }

    /// Agent API address (`127.0.0.1:PORT`) of server `index`.
    pub fn address(&self, index: usize) -> &str {
        &self.addresses[index]
    }

    /// Agent API port of server `index`.
    pub fn port(&self, index: usize) -> u16 {
        let (_, port) = self.addresses[index]
            .rsplit_once(':')
            .expect("addresses are HOST:PORT");
        port.parse().expect("the port is a number")
    }

    fn start_server(&mut self, index: usize, datastore_url: &str) {
        let server_dir = self.server_dir(index);
        fs::create_dir_all(&server_dir).expect("create the server data dir");
        let config = format!(
            r#"trust_domain = "{TRUST_DOMAIN}"
data_dir = "{data_dir}"
bind_address = "127.0.0.1:0"
admin_socket = "{admin}"
log_level = "info"

[ca]
key_type = "ec-p256"
ttl = "24h"
key_storage = "disk"

[datastore]
url = "{datastore_url}"
"#,
            data_dir = server_dir.display(),
            admin = self.admin_socket(index).display(),
        );
        let config_path = self.dir().join(format!("server-{index}.toml"));
        fs::write(&config_path, config).expect("write the server config");

        let args = [
            OsStr::new("server"),
            OsStr::new("run"),
            OsStr::new("--config"),
            config_path.as_os_str(),
        ];
        let name = format!("server-{index}");
        let log = self.dir().join(format!("{name}.log"));
        let mut server = Daemon::spawn(&name, &tessera_bin(), args, &log);

        let admin = self.admin_socket(index);
        let bundle = self.bundle_path(index);
        let address_file = server_dir.join("agent_api.addr");
        let deadline = Instant::now() + TIMEOUT;
        while !(socket_accepts(&admin) && bundle.is_file() && address_file.is_file()) {
            server.assert_running();
            assert!(
                Instant::now() < deadline,
                "server {index} was not ready within {TIMEOUT:?}"
            );
            std::thread::sleep(super::POLL_INTERVAL);
        }
        let address = fs::read_to_string(&address_file).expect("read agent_api.addr");
        self.addresses.push(address.trim().to_owned());
        self.servers.push(Some(server));
    }

    /// Waits until every server's bundle file contains the CA certificate of
    /// every server, which each learns from the others through the shared
    /// datastore. Agents need it to trust every server they may fail over
    /// to.
    pub fn wait_for_shared_bundle(&self) {
        let count = self.servers.len();
        wait_until("every server's bundle with every CA", TIMEOUT, || {
            (0..count).all(|index| certificate_count(&self.bundle_path(index)) >= count)
        });
    }

    /// Returns the daemon of server `index`, for signals and liveness.
    pub fn server(&mut self, index: usize) -> &mut Daemon {
        self.servers[index]
            .as_mut()
            .unwrap_or_else(|| panic!("server {index} is not running"))
    }

    /// PID of server `index`.
    pub fn server_pid(&self, index: usize) -> u32 {
        self.servers[index]
            .as_ref()
            .unwrap_or_else(|| panic!("server {index} is not running"))
            .pid()
    }

    /// Kills server `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        let mut server = self.servers[index]
            .take()
            .unwrap_or_else(|| panic!("server {index} is not running"));
        server.kill();
    }

    /// Runs `tessera ARGS` against server `index`'s admin socket.
    pub fn tessera(&self, index: usize, args: &[&str]) -> CmdOutput {
        let mut command = Command::new(tessera_bin());
        command
            .args(args)
            .env("TESSERA_ADMIN_SOCKET", self.admin_socket(index))
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env_remove("RUST_LOG");
        run_with_timeout(command, TIMEOUT)
    }

    /// Creates a join token through server `index`.
    pub fn generate_token(&self, index: usize) -> JoinToken {
        let output = self
            .tessera(index, &["token", "generate", "--output", "json"])
            .success();
        parse_join_token(&output)
    }

    /// Runs `entry create` through server `index` and returns the output,
    /// successful or not.
    pub fn try_create_entry(
        &self,
        index: usize,
        spiffe_id: &str,
        parent_id: &str,
        selectors: &[&str],
    ) -> CmdOutput {
        let mut args = vec![
            "entry",
            "create",
            "--output",
            "json",
            "--spiffe-id",
            spiffe_id,
            "--parent-id",
            parent_id,
        ];
        for selector in selectors {
            args.push("--selector");
            args.push(selector);
        }
        self.tessera(index, &args)
    }

    /// Creates an entry through server `index` and returns its entry ID.
    pub fn create_entry(
        &self,
        index: usize,
        spiffe_id: &str,
        parent_id: &str,
        selectors: &[&str],
    ) -> String {
        let output = self
            .try_create_entry(index, spiffe_id, parent_id, selectors)
            .success();
        created_entry_id(&output)
            .unwrap_or_else(|| panic!("no entry ID in the output of {}", output.command))
    }

    /// Lists every entry through server `index`.
    pub fn list_entries(&self, index: usize) -> Vec<Value> {
        let output = self
            .tessera(index, &["entry", "list", "--output", "json"])
            .success();
        entries_of(&output.json())
    }

    /// Lists the SPIFFE IDs of every attested agent through server `index`.
    pub fn list_agent_ids(&self, index: usize) -> Vec<String> {
        let output = self
            .tessera(index, &["agent", "list", "--output", "json"])
            .success();
        let json = output.json();
        let agents = json["agents"].as_array().cloned().unwrap_or_default();
        agents
            .iter()
            .map(|agent| agent["spiffe_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Data directory of the agent called `name`.
    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Workload API socket of the agent called `name`.
    pub fn agent_socket(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}-api")).join("api.sock")
    }

    /// Log file of the agent called `name`.
    pub fn agent_log(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.log"))
    }

    /// Starts an agent called `name` that attests with `token` and lists
    /// the servers in `order`: it connects to the first that accepts. It
    /// bootstraps from the bundle of the first server in `order`.
    pub fn spawn_agent(&self, name: &str, token: &JoinToken, order: &[usize]) -> Daemon {
        let data_dir = self.agent_dir(name);
        fs::create_dir_all(&data_dir).expect("create the agent data dir");
        let addresses: Vec<String> = order
            .iter()
            .map(|&index| format!("\"{}\"", self.address(index)))
            .collect();
        let config = format!(
            r#"trust_domain = "{TRUST_DOMAIN}"
server_addresses = [{addresses}]
data_dir = "{data_dir}"
socket_path = "{socket}"
join_token = "{join_token}"
trust_bundle_path = "{bundle}"
log_level = "info"
"#,
            addresses = addresses.join(", "),
            data_dir = data_dir.display(),
            socket = self.agent_socket(name).display(),
            join_token = token.token,
            bundle = self.bundle_path(order[0]).display(),
        );
        let config_path = self.dir().join(format!("{name}.toml"));
        fs::write(&config_path, config).expect("write the agent config");

        let args = [
            OsStr::new("agent"),
            OsStr::new("run"),
            OsStr::new("--config"),
            config_path.as_os_str(),
        ];
        Daemon::spawn(name, &tessera_bin(), args, &self.agent_log(name))
    }

    /// Waits until `agent` has attested as `agent_id`, as server `index`
    /// lists it, and serves its Workload API socket.
    pub fn wait_attested(&self, agent: &mut Daemon, agent_id: &str, index: usize) {
        let socket = self.agent_socket(agent.name());
        let admin = self.admin_socket(index);
        let deadline = Instant::now() + TIMEOUT;
        while !(socket_accepts(&socket) && agent_listed(&admin, agent_id)) {
            agent.assert_running();
            assert!(
                Instant::now() < deadline,
                "agent {} did not attest within {TIMEOUT:?}",
                agent.name()
            );
            std::thread::sleep(super::POLL_INTERVAL);
        }
    }

    /// Collects the logs, each cut to its last lines, for failure messages.
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
            // Every SQL statement is a debug line of sqlx; they drown the rest.
            let lines: Vec<&str> = body
                .lines()
                .filter(|line| !line.contains("sqlx::query"))
                .collect();
            let skipped = lines.len().saturating_sub(LOG_TAIL_LINES);
            text.push_str(&format!(
                "---- {} (last {} of {} lines) ----\n",
                log.display(),
                lines.len() - skipped,
                lines.len()
            ));
            for line in &lines[skipped..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for ServerSet {
    fn drop(&mut self) {
        for server in self.servers.iter_mut().flatten() {
            server.stop();
        }
        if std::thread::panicking() {
            eprintln!("==== server and agent logs ====\n{}", self.logs());
        }
    }
}

/// Number of PEM certificates in the file at `path`; 0 when it is missing.
pub fn certificate_count(path: &Path) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .matches("BEGIN CERTIFICATE")
        .count()
}

/// Returns the entry ID in the output of a successful
/// `entry create --output json`.
pub fn created_entry_id(output: &CmdOutput) -> Option<String> {
    let json: Value = serde_json::from_str(output.stdout.trim()).ok()?;
    json["results"][0]["entry"]["id"]
        .as_str()
        .map(str::to_owned)
}

/// Runs `tessera svid fetch` against the Workload API at `socket` and
/// returns the SPIFFE IDs of the SVIDs it received, or `None` when the
/// command failed.
pub fn fetch_svid_ids(socket: &Path) -> Option<Vec<String>> {
    let mut command = Command::new(tessera_bin());
    command
        .args(["svid", "fetch", "--output", "json", "--timeout", "1s"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", socket.display()),
        )
        .env_remove("RUST_LOG");
    let output = run_with_timeout(command, TIMEOUT);
    if !output.status.success() {
        return None;
    }
    let json = output.json();
    let svids = json["svids"].as_array()?;
    let mut ids: Vec<String> = svids
        .iter()
        .filter_map(|svid| svid["spiffe_id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Some(ids)
}
