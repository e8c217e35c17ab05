//! Two `tessera server` processes on one SQLite file and an agent that
//! lists both: after server A is killed with SIGKILL, the agent moves to
//! server B and a workload's `svid fetch` keeps succeeding.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, Daemon, Options, spiffe_id, tessera_bin, uid_selector, wait_until};

/// Maximum time the agent may take to reach server B after A dies.
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);
/// How long workload calls are checked after A dies.
const CHECK_FOR: Duration = Duration::from_secs(8);

fn certificate_count(path: &Path) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .matches("BEGIN CERTIFICATE")
        .count()
}

/// Starts server B on server A's datastore and returns it with its agent
/// API address.
fn start_second_server(a: &Cluster) -> (Daemon, String) {
    let b_dir = a.dir().join("server-b");
    fs::create_dir_all(&b_dir).unwrap();
    let a_config = fs::read_to_string(a.server_config_path()).unwrap();
    let datastore = a.server_data_dir().join("datastore.sqlite3");
    let mut b_config = String::new();
    for line in a_config.lines() {
        let line = if line.starts_with("data_dir") {
            format!("data_dir = \"{}\"", b_dir.display())
        } else if line.starts_with("bind_address") {
            "bind_address = \"127.0.0.1:0\"".to_owned()
        } else if line.starts_with("admin_socket") {
            format!("admin_socket = \"{}\"", b_dir.join("admin.sock").display())
        } else {
            line.to_owned()
        };
        b_config.push_str(&line);
        b_config.push('\n');
    }
    b_config.push_str(&format!(
        "\n[datastore]\nurl = \"sqlite://{}\"\n",
        datastore.display()
    ));
    let config_path = a.dir().join("server-b.toml");
    fs::write(&config_path, b_config).unwrap();

    let args = [
        OsStr::new("server"),
        OsStr::new("run"),
        OsStr::new("--config"),
        config_path.as_os_str(),
    ];
    let b = Daemon::spawn(
        "server-b",
        &tessera_bin(),
        args,
        &a.dir().join("server-b.log"),
    );
    let addr_file = b_dir.join("agent_api.addr");
    wait_until(
        "server B's agent API address",
        Duration::from_secs(30),
        || addr_file.exists(),
    );
    let address = fs::read_to_string(&addr_file).unwrap().trim().to_owned();
    (b, address)
}

#[test]
fn agent_fails_over_to_second_server() {
    let mut a = Cluster::start_server_only(Options::default());
    let (mut b, b_address) = start_second_server(&a);
    // A's bundle file gains B's authority through the change feed; the agent
    // bootstraps from it and must trust B's server certificate.
    wait_until(
        "A's bundle with B's authority",
        Duration::from_secs(10),
        || certificate_count(&a.bundle_path()) >= 2,
    );

    let token = a.generate_token(None);
    let config_path = a.write_agent_config("agent", &token.token);
    let config = fs::read_to_string(&config_path).unwrap().replace(
        &format!("server_address = \"{}\"", a.server_address),
        &format!(
            "server_addresses = [\"{}\", \"{b_address}\"]",
            a.server_address
        ),
    );
    assert!(config.contains("server_addresses"), "{config}");
    fs::write(&config_path, config).unwrap();
    let args = [
        OsStr::new("agent"),
        OsStr::new("run"),
        OsStr::new("--config"),
        config_path.as_os_str(),
    ];
    let agent_log = a.dir().join("agent.log");
    let mut agent = Daemon::spawn("agent", &tessera_bin(), args, &agent_log);
    a.agent_id = token.agent_id.clone();

    let workload_id = spiffe_id("/failover");
    a.create_entry(&workload_id, &[&uid_selector()]);
    a.wait_for_svid(&tessera_bin(), &workload_id);

    a.kill_server();
    let killed_at = Instant::now();
    let mut reconnected_after = None;
    let mut calls = 0;
    let mut failures = Vec::new();
    while killed_at.elapsed() < CHECK_FOR {
        let args = ["svid", "fetch", "--output", "json", "--timeout", "1s"];
        let output = a.tessera(&args);
        calls += 1;
        if !(output.status.success() && output.stdout.contains(&workload_id)) {
            failures.push(format!("{:?}: {}", killed_at.elapsed(), output.stderr));
        }
        let log = fs::read_to_string(&agent_log).unwrap_or_default();
        let reached_b = log
            .lines()
            .any(|line| line.contains("connected to the server") && line.contains(&b_address));
        if reconnected_after.is_none() && reached_b {
            reconnected_after = Some(killed_at.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }

    assert!(agent.is_alive(), "the agent exited:\n{}", a.logs());
    assert!(
        failures.is_empty(),
        "{} of {calls} Workload API calls failed after server A died: {failures:?}",
        failures.len()
    );
    let reconnected_after = reconnected_after
        .unwrap_or_else(|| panic!("the agent never connected to server B:\n{}", a.logs()));
    println!(
        "agent reached server B {reconnected_after:?} after server A was killed; {calls} Workload API calls succeeded"
    );
    assert!(
        reconnected_after <= FAILOVER_LIMIT,
        "the agent took {reconnected_after:?} to reach server B"
    );
    agent.stop();
    b.stop();
}
