//! End-to-end tests of the operator side: bad input to `entry create` is
//! rejected and stores nothing, join tokens are single use and expire, and
//! an acknowledged entry survives the server being killed with SIGKILL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::thread;
use std::time::Duration;

use common::{Cluster, Options, spiffe_id, uid_selector};

/// Time a failing agent gets to give up and exit.
const ATTEST_FAILURE_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn entry_create_rejects_malformed_spiffe_id() {
    let cluster = Cluster::start();
    let selector = uid_selector();
    let cases = [
        "spiffe://E2E.test/upper-case-domain",
        "http://e2e.test/wrong-scheme",
        "spiffe://e2e.test/double//slash",
        "spiffe://e2e.test/trailing/",
        "spiffe://e2e.test/dot/./segment",
        "e2e.test/no-scheme",
        "spiffe://e2e.test/percent%20encoded",
    ];
    for bad in cases {
        let output = cluster.tessera(&[
            "entry",
            "create",
            "--spiffe-id",
            bad,
            "--parent-id",
            &cluster.agent_id,
            "--selector",
            &selector,
        ]);
        assert_eq!(output.code(), 1, "{bad}: {output:?}");
        assert!(
            output.stderr.contains(bad),
            "{bad}: message does not name it: {output:?}"
        );
    }
    let entries = cluster.list_entries();
    assert!(
        entries.is_empty(),
        "rejected entries were stored: {entries:?}"
    );
}

#[test]
fn entry_create_rejects_malformed_selector() {
    let cluster = Cluster::start();
    let id = spiffe_id("/workload/selector");
    let cases = ["unix", "unix:", ":uid:1000", ""];
    for bad in cases {
        let output = cluster.tessera(&[
            "entry",
            "create",
            "--spiffe-id",
            &id,
            "--parent-id",
            &cluster.agent_id,
            "--selector",
            bad,
        ]);
        assert_eq!(output.code(), 1, "selector {bad:?}: {output:?}");
        assert!(
            output.stderr.contains(&format!("{bad:?}"))
                || output.stderr.contains(&format!("'{bad}'"))
                || output.stderr.contains(&format!("`{bad}`"))
                || (!bad.is_empty() && output.stderr.contains(bad)),
            "selector {bad:?}: message does not name it: {output:?}"
        );
    }
    let entries = cluster.list_entries();
    assert!(
        entries.is_empty(),
        "rejected entries were stored: {entries:?}"
    );
}

#[test]
fn entry_create_then_list_and_show() {
    let cluster = Cluster::start();
    let id = spiffe_id("/workload/listed");
    let created = cluster.create_entry(&id, &[&uid_selector()]);
    let entry_id = created["id"]
        .as_str()
        .expect("created entry has an id")
        .to_owned();

    let entries = cluster.list_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["id"], created["id"]);
    assert_eq!(entries[0]["spiffe_id"], id.as_str());

    let entry = cluster
        .tessera(&["entry", "show", "--output", "json", &entry_id])
        .success()
        .json();
    assert_eq!(entry["spiffe_id"], id.as_str());
}

#[test]
fn entry_batch_reports_failures_on_stderr() {
    let cluster = Cluster::start();
    let existing_id = spiffe_id("/workload/taken");
    let new_id = spiffe_id("/workload/fresh");
    let selector = uid_selector();
    let created = cluster.create_entry(&existing_id, &[&selector]);
    let parent = created["parent_id"].as_str().unwrap();

    let batch = serde_json::json!({
        "entries": [
            {"spiffe_id": existing_id, "parent_id": parent, "selectors": [selector]},
            {"spiffe_id": new_id, "parent_id": parent, "selectors": [selector]},
        ]
    });
    let path = cluster.dir().join("batch.json");
    std::fs::write(&path, batch.to_string()).unwrap();
    let output = cluster.tessera(&["entry", "create", "--data", path.to_str().unwrap()]);

    assert_eq!(output.code(), 1, "{output:?}");
    assert!(output.stdout.contains(&new_id), "{output:?}");
    assert!(!output.stdout.contains("failed"), "{output:?}");
    assert!(
        output.stderr.contains(&format!(
            "entries[0]: failed to create the entry for {existing_id}"
        )),
        "{output:?}"
    );
    assert_eq!(cluster.list_entries().len(), 2);
}

#[test]
fn join_token_reuse_fails_attestation() {
    let cluster = Cluster::start_server_only(Options::default());
    let token = cluster.generate_token(None);
    let mut first = cluster.spawn_agent("first", &token.token);
    let admin = cluster.admin_socket();
    common::wait_until(
        "the first agent's attestation",
        common::READY_TIMEOUT,
        || {
            first.assert_running();
            common::agent_listed(&admin, &token.agent_id)
        },
    );

    let mut second = cluster.spawn_agent("second", &token.token);
    let status = second.wait_exit(ATTEST_FAILURE_TIMEOUT);
    let log = second.log_text();
    let status =
        status.unwrap_or_else(|| panic!("an agent with a used join token kept running\n{log}"));
    assert!(
        !status.success(),
        "an agent with a used join token exited 0\n{log}"
    );
    assert!(
        log.to_lowercase().contains("token"),
        "the failure does not mention the join token:\n{log}"
    );
    assert!(
        !log.contains(&token.token),
        "the agent log contains the join token:\n{log}"
    );
    first.assert_running();
}

#[test]
fn join_token_expiry_fails_attestation() {
    let cluster = Cluster::start_server_only(Options::default());
    let token = cluster.generate_token(Some("1s"));
    thread::sleep(Duration::from_secs(2));

    let mut agent = cluster.spawn_agent("late", &token.token);
    let status = agent.wait_exit(ATTEST_FAILURE_TIMEOUT);
    let log = agent.log_text();
    let status =
        status.unwrap_or_else(|| panic!("an agent with an expired join token kept running\n{log}"));
    assert!(
        !status.success(),
        "an agent with an expired join token exited 0\n{log}"
    );
    assert!(
        log.to_lowercase().contains("expired"),
        "the failure does not say the token expired:\n{log}"
    );
}

#[test]
fn entry_survives_server_sigkill() {
    let mut cluster = Cluster::start_server_only(Options::default());
    cluster.agent_id = cluster.generate_token(None).agent_id;
    let id = spiffe_id("/workload/durable");
    let created = cluster.create_entry(&id, &[&uid_selector()]);
    let entry_id = created["id"]
        .as_str()
        .expect("created entry has an id")
        .to_owned();

    cluster.kill_server();
    cluster.start_server();

    let entries = cluster.list_entries();
    let found = entries.iter().any(|e| e["id"] == entry_id.as_str());
    assert!(found, "entry {entry_id} lost after SIGKILL: {entries:?}");
}

#[test]
fn healthcheck_reports_serving() {
    let cluster = Cluster::start_server_only(Options::default());
    cluster.tessera(&["healthcheck"]).success();
}
