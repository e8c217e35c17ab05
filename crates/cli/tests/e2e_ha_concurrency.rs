//! Concurrent writes on a shared PostgreSQL or MariaDB datastore. Two
//! `tessera server` processes run, 50 `tessera agent run` processes
//! attest with join tokens at once (half through each server), and
//! entries are created, updated and deleted through both servers' admin
//! sockets at the same time. Every CLI call and every attestation must
//! succeed the first time, and each agent must be listed once. The stored
//! entries must be exactly those the calls produced, and each agent must
//! end up serving exactly the SVIDs of its entries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::database::{Backend, ExternalDb};
use common::servers::{ServerSet, created_entry_id, fetch_svid_ids};
use common::{CmdOutput, Daemon, JoinToken, spiffe_id, uid_selector};

/// Agent processes started at once.
const AGENTS: usize = 50;
/// Threads that create, update and delete entries.
const WRITERS: usize = 4;
/// Upper bound for every agent to attest, and for every change to reach
/// both servers and every agent, on a loaded 2-core machine.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Keeps the PostgreSQL and MariaDB cases from running at the same time:
/// together they would start 100 agents on two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One agent of the test and the server it attests through.
struct AgentPlan {
    index: usize,
    name: String,
    token: JoinToken,
    /// The server the agent attests through and lists first.
    home: usize,
}

impl AgentPlan {
    fn entry_id(&self, leaf: &str) -> String {
        spiffe_id(&format!("/agents/{}/{leaf}", self.index))
    }
}

/// An entry that the test expects in the final state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ExpectedEntry {
    id: String,
    spiffe_id: String,
    parent_id: String,
}

/// What one writer thread did.
#[derive(Default)]
struct WriterResult {
    expected: Vec<ExpectedEntry>,
    failures: Vec<CmdOutput>,
    calls: usize,
}

#[test]
fn postgres_agents_and_writes_concurrently() {
    agents_and_writes_concurrently(Backend::Postgres);
}

#[test]
fn mariadb_agents_and_writes_concurrently() {
    agents_and_writes_concurrently(Backend::MySql);
}

fn agents_and_writes_concurrently(backend: Backend) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(db) = ExternalDb::create(backend) else {
        return;
    };
    let servers = ServerSet::start(2, &db.url());
    servers.wait_for_shared_bundle();
    let plans: Vec<AgentPlan> = (0..AGENTS)
        .map(|index| AgentPlan {
            index,
            name: format!("agent-{index:02}"),
            token: servers.generate_token(index % 2),
            home: index % 2,
        })
        .collect();

    let started = Instant::now();
    let mut agents: Vec<Daemon> = plans
        .iter()
        .map(|plan| servers.spawn_agent(&plan.name, &plan.token, &[plan.home, 1 - plan.home]))
        .collect();
    let servers = Arc::new(servers);
    let plans = Arc::new(plans);
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let servers = Arc::clone(&servers);
            let plans = Arc::clone(&plans);
            thread::spawn(move || write_entries(&servers, &plans, writer))
        })
        .collect();

    let expected_agents = sorted(plans.iter().map(|plan| plan.token.agent_id.clone()));
    wait_for_agents(&servers, &mut agents, &expected_agents);
    let attested_after = started.elapsed();
    let results: Vec<WriterResult> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    let writes_done_after = started.elapsed();

    let calls: usize = results.iter().map(|r| r.calls).sum();
    let failures: Vec<&CmdOutput> = results.iter().flat_map(|r| &r.failures).collect();
    assert!(
        failures.is_empty(),
        "{} of {calls} entry commands failed: {failures:#?}",
        failures.len()
    );
    for index in 0..2 {
        let listed = sorted(servers.list_agent_ids(index));
        assert_eq!(listed, expected_agents, "agents listed by server {index}");
    }
    let stored_agents = db.query_i64("SELECT COUNT(*) FROM attested_agents");
    assert_eq!(stored_agents, AGENTS as i64, "rows in attested_agents");

    let expected_entries = sorted(results.into_iter().flat_map(|r| r.expected));
    for index in 0..2 {
        check_entries(&servers, index, &expected_entries);
    }
    let stored_entries = db.query_i64("SELECT COUNT(*) FROM entries");
    assert_eq!(
        stored_entries,
        expected_entries.len() as i64,
        "rows in entries"
    );
    for plan in plans.iter() {
        check_agent_svids(&servers, plan);
    }
    let all_served_after = started.elapsed();
    check_logs(&servers, &plans);

    let usage = agent_usage(&agents);
    println!(
        "{backend:?}: {AGENTS} agents attested after {attested_after:?}; {calls} entry commands \
         done after {writes_done_after:?}; every agent served its SVIDs after \
         {all_served_after:?}; the agents use {:.0} MiB resident in total and used {:.1} CPU-s",
        usage.rss_mib, usage.cpu_seconds
    );
    drop(agents);
}

fn sorted<T: Ord>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    items.sort();
    items
}

/// Runs every entry command of the agents assigned to `writer`. For each
/// agent it creates one entry that stays, creates one that another server
/// renames, and creates one that another server deletes, so that most
/// commands run on a server other than the one that wrote the entry.
fn write_entries(servers: &ServerSet, plans: &[AgentPlan], writer: usize) -> WriterResult {
    let mut result = WriterResult::default();
    for plan in plans.iter().skip(writer).step_by(WRITERS) {
        let home = plan.home;
        let other = 1 - home;
        if let Some(entry) = create(servers, home, plan, "keep", &mut result) {
            result.expected.push(entry);
        }
        if let Some(mut entry) = create(servers, other, plan, "before", &mut result) {
            let renamed = plan.entry_id("after");
            let args = ["entry", "update", &entry.id, "--spiffe-id", &renamed];
            if run(servers, home, &args, &mut result) {
                entry.spiffe_id = renamed;
                result.expected.push(entry);
            }
        }
        if let Some(entry) = create(servers, other, plan, "deleted", &mut result) {
            run(servers, home, &["entry", "delete", &entry.id], &mut result);
        }
    }
    result
}

/// Creates the entry `/agents/<agent index>/<leaf>` for the test's uid
/// under the plan's agent through server `index`.
fn create(
    servers: &ServerSet,
    index: usize,
    plan: &AgentPlan,
    leaf: &str,
    result: &mut WriterResult,
) -> Option<ExpectedEntry> {
    let spiffe_id = plan.entry_id(leaf);
    let parent_id = plan.token.agent_id.clone();
    let output = servers.try_create_entry(index, &spiffe_id, &parent_id, &[&uid_selector()]);
    result.calls += 1;
    let id = output
        .status
        .success()
        .then(|| created_entry_id(&output))
        .flatten();
    if id.is_none() {
        result.failures.push(output);
    }
    Some(ExpectedEntry {
        id: id?,
        spiffe_id,
        parent_id,
    })
}

/// Runs `tessera ARGS` through server `index` and returns whether it
/// succeeded, recording a failure.
fn run(servers: &ServerSet, index: usize, args: &[&str], result: &mut WriterResult) -> bool {
    let output = servers.tessera(index, args);
    result.calls += 1;
    let succeeded = output.status.success();
    if !succeeded {
        result.failures.push(output);
    }
    succeeded
}

/// Waits until server 0 lists every agent, failing fast when an agent
/// exits.
fn wait_for_agents(servers: &ServerSet, agents: &mut [Daemon], expected: &[String]) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        for agent in agents.iter_mut() {
            agent.assert_running();
        }
        let listed = servers.list_agent_ids(0);
        if expected.iter().all(|id| listed.contains(id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {AGENTS} agents attested within {SETTLE_TIMEOUT:?}",
            listed.len()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until server `index` lists exactly the expected entries, then
/// compares them.
fn check_entries(servers: &ServerSet, index: usize, expected: &[ExpectedEntry]) {
    let mut listed = Vec::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        listed = listed_entries(servers, index);
        if listed == expected {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(listed, expected, "entries listed by server {index}");
}

fn listed_entries(servers: &ServerSet, index: usize) -> Vec<ExpectedEntry> {
    let text = |entry: &serde_json::Value, name: &str| -> String {
        entry[name]
            .as_str()
            .unwrap_or_else(|| panic!("entry without {name}: {entry}"))
            .to_owned()
    };
    sorted(
        servers
            .list_entries(index)
            .iter()
            .map(|entry| ExpectedEntry {
                id: text(entry, "id"),
                spiffe_id: text(entry, "spiffe_id"),
                parent_id: text(entry, "parent_id"),
            }),
    )
}

/// Waits until the plan's agent serves exactly the SVIDs of its remaining
/// entries: the kept one and the renamed one.
fn check_agent_svids(servers: &ServerSet, plan: &AgentPlan) {
    let socket = servers.agent_socket(&plan.name);
    let expected = sorted([plan.entry_id("after"), plan.entry_id("keep")]);
    let mut served = None;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        served = fetch_svid_ids(&socket);
        if served.as_ref() == Some(&expected) {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(served, Some(expected), "SVIDs served by {}", plan.name);
}

/// Warning of an agent whose entry was renamed or deleted while it
/// requested the entry's SVID. The server signs the entry as it is now or
/// not at all, and the agent rejects that one SVID and requests it again
/// after its next sync. The server checks entries against its cache, not
/// the datastore, so a datastore error fails the whole batch with another
/// warning.
const ENTRY_CHANGED_WHILE_SIGNING: &str = "signing a workload SVID failed";

/// Checks that no server logged an error and that no agent logged a
/// warning or an error, other than for an entry that changed while it was
/// signed. A retried attestation or sync would hide a failure behind a
/// success, and each retry logs a warning.
fn check_logs(servers: &ServerSet, plans: &[AgentPlan]) {
    for index in 0..2 {
        let log = std::fs::read_to_string(servers.dir().join(format!("server-{index}.log")))
            .unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|line| line.contains("ERROR")).collect();
        assert!(
            errors.is_empty(),
            "server {index} logged errors: {errors:#?}"
        );
    }
    for plan in plans {
        let log = std::fs::read_to_string(servers.agent_log(&plan.name)).unwrap_or_default();
        let retries: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .filter(|line| !line.contains(ENTRY_CHANGED_WHILE_SIGNING))
            .collect();
        assert!(
            retries.is_empty(),
            "{} logged warnings or errors: {retries:#?}",
            plan.name
        );
    }
}

/// Memory and CPU time of the agent processes, read from `/proc`. Resident
/// memory counts the shared pages of the binary once per process, so the
/// sum overstates what the agents need together.
struct Usage {
    rss_mib: f64,
    cpu_seconds: f64,
}

fn agent_usage(agents: &[Daemon]) -> Usage {
    let ticks_per_second = rustix::param::clock_ticks_per_second() as f64;
    let mut usage = Usage {
        rss_mib: 0.0,
        cpu_seconds: 0.0,
    };
    for agent in agents {
        let pid = agent.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0);
        usage.rss_mib += rss_kib / 1024.0;

        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command name in parentheses, utime and stime are the
        // 12th and 13th fields.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        usage.cpu_seconds += ticks / ticks_per_second;
    }
    usage
}
