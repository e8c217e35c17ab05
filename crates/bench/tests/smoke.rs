//! Runs each load-generator mode once, with tiny sizes, against the debug
//! `tessera` binary, and checks that the last line of stdout is a JSON
//! object with the mode's figures. It measures nothing.
//!
//! The `tessera` binary must be built first, as the workspace's test
//! command does: `cargo build --workspace && cargo test --workspace`.

#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Path of the debug `tessera` binary in the workspace's target directory.
fn tessera_binary() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let binary = target_dir.join("debug/tessera");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p tessera-cli` (or `cargo build --workspace`) \
         before running these tests",
        binary.display()
    );
    binary
}

/// Runs `tessera-bench MODE ARGS --tessera BIN`, asserts success and
/// returns the JSON object on the last line of stdout.
fn run_mode(mode: &str, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_tessera-bench"))
        .arg(mode)
        .args(args)
        .arg("--tessera")
        .arg(tessera_binary())
        .output()
        .expect("tessera-bench starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tessera-bench {mode} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let figures: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line of {mode} is not JSON ({e}): {last:?}"));
    assert!(
        figures.is_object(),
        "{mode} printed {figures}, not an object"
    );
    assert_eq!(figures["mode"], mode);
    figures
}

fn assert_keys(figures: &Value, keys: &[&str]) {
    for key in keys {
        let value = figures.pointer(key);
        assert!(value.is_some(), "missing {key} in {figures}");
    }
}

#[test]
fn issue_mode_reports_rate_and_ratio() {
    let figures = run_mode(
        "issue",
        &[
            "--agents",
            "2",
            "--batch",
            "2",
            "--batches",
            "3",
            "--baseline-time",
            "100ms",
        ],
    );
    assert_keys(
        &figures,
        &[
            "/svids_per_second",
            "/batch_latency/p50_us",
            "/batch_latency/p99_us",
            "/bare_sign_2_threads_per_second",
            "/ratio_to_bare_sign_2_threads",
        ],
    );
    assert_eq!(figures["svids_signed"], 12);
}

#[test]
fn propagate_mode_reports_delays() {
    let figures = run_mode(
        "propagate",
        &["--iterations", "3", "--simulated-agents", "2"],
    );
    assert_keys(
        &figures,
        &[
            "/create_to_svid_ms/p50",
            "/create_to_svid_ms/p99",
            "/create_to_svid_ms/max",
            "/delete_to_removal_ms/p99",
        ],
    );
    assert_eq!(figures["iterations"], 3);
    assert_eq!(figures["simulated_streams_open_at_end"], 2);
}

#[test]
fn workload_mode_reports_ratios() {
    let figures = run_mode("workload", &["--clients", "1,2", "--calls", "10"]);
    let results = figures["results"].as_array().expect("results array");
    assert_eq!(
        results.len(),
        6,
        "2 client counts x 3 operations: {figures}"
    );
    for result in results {
        assert_keys(
            result,
            &[
                "/op",
                "/calls_per_second",
                "/latency/p99_us",
                "/bare/calls_per_second",
                "/throughput_ratio",
                "/p99_ratio",
            ],
        );
    }
}

#[test]
fn scale_mode_reports_cpu_memory_restart() {
    let figures = run_mode(
        "scale",
        &["--entries", "20", "--agents", "4", "--measure", "1s"],
    );
    assert_keys(
        &figures,
        &[
            "/open/server_cpu_seconds_per_minute",
            "/open/server_rss_mib",
            "/restart/to_healthy_ms",
            "/restart/to_first_sync_ms",
            "/sync/max_entries_one_agent",
        ],
    );
    assert_eq!(figures["sync"]["entries_received"], 20);
    assert_eq!(figures["restart"]["first_sync_entries"], 5);
}

#[test]
fn agent_memory_mode_reports_rss() {
    let figures = run_mode(
        "agent-memory",
        &["--workloads", "5", "--streams", "3", "--settle", "100ms"],
    );
    assert_keys(&figures, &["/agent_rss_mib", "/agent_rss_mib_idle"]);
    assert!(figures["agent_rss_mib"].as_f64().expect("number") > 0.0);
}

#[test]
fn statement_rate_mode_reports_rates() {
    if std::env::var("TESSERA_SKIP_EXTERNAL_DB").as_deref() == Ok("1") {
        eprintln!("note: skipped because TESSERA_SKIP_EXTERNAL_DB=1; the mode needs PostgreSQL");
        return;
    }
    let figures = run_mode(
        "statement-rate",
        &["--agents", "2", "--measure", "2s", "--settle", "1s"],
    );
    assert_keys(
        &figures,
        &[
            "/no_agent/statements_per_minute",
            "/no_agent/transactions_per_minute",
            "/with_agents/statements_per_minute",
            "/per_agent_per_minute/statements",
            "/per_agent_per_minute/transactions",
        ],
    );
    assert_eq!(figures["agents"], 2);
    // The change feed is polled several times a second even with no agent.
    let idle = figures["no_agent"]["statements"].as_u64().expect("number");
    assert!(idle > 0, "no statement logged with no agent: {figures}");
}
