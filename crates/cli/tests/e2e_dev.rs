//! End-to-end test of `tessera dev`: a local trust domain that serves
//! SVIDs to the current user, stops with Ctrl-C without leaving processes
//! behind, and keeps its CA across runs with the same data directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{CmdOutput, Daemon, READY_TIMEOUT};
use rustix::process::Signal;

/// How `dev` is asked to stop.
enum Stop {
    /// SIGINT to the whole process group, as a terminal sends on Ctrl-C.
    CtrlC,
    /// SIGINT to the `dev` process alone, as `kill -INT` sends.
    SigintToDev,
}

fn start_dev(data_dir: &Path, log: &Path) -> Daemon {
    let mut command = Command::new(common::tessera_bin());
    command
        .arg("dev")
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("TESSERA_ADMIN_SOCKET");
    Daemon::spawn_group("dev", command, log)
}

/// Waits for the `export SPIFFE_ENDPOINT_SOCKET=...` line and returns its
/// value.
fn wait_for_export_line(dev: &mut Daemon) -> String {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        dev.assert_running();
        let log = dev.log_text();
        let line = log
            .lines()
            .find(|line| line.contains("export SPIFFE_ENDPOINT_SOCKET="));
        if let Some(line) = line {
            let value = line
                .split_once("SPIFFE_ENDPOINT_SOCKET=")
                .map(|(_, value)| value)
                .unwrap_or_default();
            return value.trim().trim_matches(['"', '\'']).to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "dev printed no export line within {READY_TIMEOUT:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tessera_with_socket(endpoint: &str, args: &[&str]) -> CmdOutput {
    let mut command = Command::new(common::tessera_bin());
    command
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", endpoint)
        .env_remove("TESSERA_ADMIN_SOCKET");
    common::run_with_timeout(command, common::COMMAND_TIMEOUT)
}

/// Runs `dev` once: waits for an SVID through the printed socket, stops it
/// the given way, checks that no child is left, and returns the bundle the
/// agent served.
fn run_dev_once(data_dir: &Path, log: &Path, stop: Stop) -> String {
    let mut dev = start_dev(data_dir, log);
    let endpoint = wait_for_export_line(&mut dev);

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        dev.assert_running();
        let output = tessera_with_socket(&endpoint, &["svid", "fetch"]);
        if output.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "svid fetch through {endpoint} kept failing: {output:?}\n{}",
            dev.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let bundle = tessera_with_socket(&endpoint, &["bundle", "fetch"])
        .success()
        .stdout;

    let children = common::child_pids(dev.pid());
    assert_eq!(
        children.len(),
        2,
        "dev runs the server and the agent as child processes: {children:?}"
    );
    match stop {
        Stop::CtrlC => dev.signal_group(Signal::INT),
        Stop::SigintToDev => dev.signal(Signal::INT),
    }
    let status = dev.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "dev still runs 20 s after SIGINT:\n{}",
        dev.log_text()
    );

    common::wait_until("dev's children to exit", Duration::from_secs(10), || {
        children.iter().all(|pid| !common::process_alive(*pid))
    });
    let socket = endpoint
        .trim_start_matches("unix://")
        .trim_start_matches("unix:");
    assert!(
        !common::socket_accepts(Path::new(socket)),
        "the Workload API socket still accepts connections after dev stopped"
    );
    bundle
}

#[test]
fn dev_serves_stops_and_keeps_ca() {
    let dir = tempfile::Builder::new()
        .prefix("tessera-dev-")
        .tempdir()
        .unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("dev.log");

    let first_bundle = run_dev_once(&data_dir, &log, Stop::CtrlC);
    let second_bundle = run_dev_once(&data_dir, &log, Stop::SigintToDev);

    assert!(
        !first_bundle.trim().is_empty(),
        "bundle fetch printed nothing"
    );
    assert_eq!(first_bundle, second_bundle, "the second run made a new CA");
}
