//! Failover under load on a shared PostgreSQL or MariaDB datastore: two
//! `tessera server` processes, one agent that lists both, workloads that
//! call the agent's Workload API without pause, and writers that create
//! entries through both servers' admin sockets. The server the agent is
//! connected to is killed with SIGKILL in the middle. No Workload API call
//! may fail, the agent must reach the other server within 5 s, and every
//! entry whose creation the CLI reported must still be listed, once, by
//! the surviving server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::database::{Backend, ExternalDb};
use common::servers::{ServerSet, created_entry_id, fetch_svid_ids};
use common::{
    CmdOutput, TRUST_DOMAIN, established_peer_ports, spiffe_id, uid_selector, wait_until, workload,
};
use serde_json::Value;
use tessera_proto::workload::{JwtsvidRequest, X509BundlesRequest, X509svidRequest};

/// Maximum time the agent may take to reach the surviving server after
/// the one it used dies: the stated failover limit.
const FAILOVER_LIMIT: Duration = Duration::from_secs(5);
/// How long workloads and writers keep going after the kill.
const LOAD_AFTER_KILL: Duration = Duration::from_secs(8);
/// How long workloads and writers run before the kill.
const LOAD_BEFORE_KILL: Duration = Duration::from_secs(2);
/// Concurrent workload tasks calling the Workload API.
const WORKLOAD_TASKS: usize = 4;
/// Entries created through each server before the load starts.
const ENTRIES_PER_SERVER: usize = 10;
/// Upper bound for one Workload API call. A slower call counts as a failure.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for a change to reach the surviving server or the agent.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Audience of the JWT-SVIDs that the workloads fetch. After the first
/// fetch the agent serves the token from its cache.
const AUDIENCE: &str = "ha-failover-test";

/// One `entry create` that a writer ran.
struct WriteAttempt {
    /// Entry ID when the CLI reported success.
    entry_id: Option<String>,
    finished_at: Instant,
    output: CmdOutput,
}

/// Results of the workload tasks.
#[derive(Default)]
struct WorkloadResults {
    calls: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

#[test]
fn postgres_agent_fails_over_under_load() {
    failover_under_load(Backend::Postgres);
}

#[test]
fn mariadb_agent_fails_over_under_load() {
    failover_under_load(Backend::MySql);
}

fn failover_under_load(backend: Backend) {
    let Some(db) = ExternalDb::create(backend) else {
        return;
    };
    let servers = ServerSet::start(2, &db.url());
    servers.wait_for_shared_bundle();

    let token = servers.generate_token(0);
    let mut agent = servers.spawn_agent("agent", &token, &[0, 1]);
    servers.wait_attested(&mut agent, &token.agent_id, 0);
    let workload_id = spiffe_id("/ha/workload");
    servers.create_entry(0, &workload_id, &token.agent_id, &[&uid_selector()]);
    wait_for_svid(&servers, &workload_id);

    let mut acknowledged = create_entries_on_both(&servers, &token.agent_id);

    let agent_ports = established_peer_ports(agent.pid());
    let connected: Vec<usize> = (0..2)
        .filter(|&index| agent_ports.contains(&servers.port(index)))
        .collect();
    assert_eq!(
        connected.len(),
        1,
        "the agent should hold a connection to exactly one server; its peer ports are \
         {agent_ports:?}, the servers' are {} and {}",
        servers.port(0),
        servers.port(1)
    );
    let victim = connected[0];
    let survivor = 1 - victim;

    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let workload_results = Arc::new(WorkloadResults::default());
    let workload_tasks: Vec<_> = (0..WORKLOAD_TASKS)
        .map(|_| {
            let task = call_workload_api_until(
                servers.agent_socket("agent"),
                workload_id.clone(),
                Arc::clone(&stop),
                Arc::clone(&workload_results),
            );
            runtime.spawn(task)
        })
        .collect();

    let servers = Arc::new(servers);
    let writers: Vec<_> = [victim, survivor]
        .into_iter()
        .map(|index| {
            let servers = Arc::clone(&servers);
            let agent_id = token.agent_id.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || create_entries_until(&servers, index, &agent_id, &stop))
        })
        .collect();

    thread::sleep(LOAD_BEFORE_KILL);
    let agent_log = servers.agent_log("agent");
    let log_mark = fs::metadata(&agent_log).unwrap().len();
    let killed_at = Instant::now();
    kill_server(&servers, victim);

    let reconnected_after = wait_for_reconnect(&agent_log, log_mark, servers.address(survivor))
        .map(|at| at.duration_since(killed_at));
    let remaining = LOAD_AFTER_KILL.saturating_sub(killed_at.elapsed());
    thread::sleep(remaining);
    stop.store(true, Ordering::Relaxed);
    for task in workload_tasks {
        runtime.block_on(task).unwrap();
    }
    let mut attempts: Vec<Vec<WriteAttempt>> = writers
        .into_iter()
        .map(|writer| writer.join().unwrap())
        .collect();
    let survivor_attempts = attempts.pop().unwrap();
    let victim_attempts = attempts.pop().unwrap();
    let mut servers = Arc::into_inner(servers).expect("every writer has finished");

    assert!(
        agent.is_alive(),
        "the agent exited after server {victim} was killed"
    );
    let calls = workload_results.calls.load(Ordering::Relaxed);
    let failures = workload_results.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {calls} Workload API calls failed: {failures:#?}",
        failures.len()
    );

    let survivor_failures: Vec<&CmdOutput> = survivor_attempts
        .iter()
        .filter(|attempt| attempt.entry_id.is_none())
        .map(|attempt| &attempt.output)
        .collect();
    assert!(
        survivor_failures.is_empty(),
        "entry create through the surviving server failed: {survivor_failures:#?}"
    );
    let early_failures: Vec<&CmdOutput> = victim_attempts
        .iter()
        .filter(|attempt| attempt.entry_id.is_none() && attempt.finished_at < killed_at)
        .map(|attempt| &attempt.output)
        .collect();
    assert!(
        early_failures.is_empty(),
        "entry create through server {victim} failed before it was killed: {early_failures:#?}"
    );

    let reconnected_after = reconnected_after.unwrap_or_else(|| {
        panic!(
            "the agent did not log a connection to server {survivor} ({}) within {PROPAGATION_TIMEOUT:?}",
            servers.address(survivor)
        )
    });
    println!(
        "{backend:?}: agent reached server {survivor} {reconnected_after:?} after server {victim} \
         was killed; {calls} Workload API calls succeeded; {} and {} entries created through \
         the killed and the surviving server during the load",
        acknowledged_count(&victim_attempts),
        acknowledged_count(&survivor_attempts),
    );
    assert!(
        reconnected_after <= FAILOVER_LIMIT,
        "the agent took {reconnected_after:?} to reach the surviving server"
    );

    for attempt in victim_attempts.iter().chain(&survivor_attempts) {
        acknowledged.extend(attempt.entry_id.clone());
    }
    check_entries_listed(&servers, survivor, &acknowledged);
    check_sync_through(&servers, survivor, &token.agent_id);

    drop(agent);
    servers.server(survivor).stop();
}

/// Creates entries through each server before the load starts and returns
/// their IDs.
fn create_entries_on_both(servers: &ServerSet, agent_id: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..2 {
        for n in 0..ENTRIES_PER_SERVER {
            let id = spiffe_id(&format!("/ha/before-load/{index}/{n}"));
            let selector = unmatched_selector(index, n);
            ids.push(servers.create_entry(index, &id, agent_id, &[&selector]));
        }
    }
    ids
}

/// Returns a selector that no process of this test has, so the agent
/// signs no SVID for the entry. It differs per server and number.
fn unmatched_selector(server: usize, n: usize) -> String {
    format!("unix:uid:{}", 3_000_000_000 + server * 1_000_000 + n)
}

/// Polls `tessera svid fetch` on the agent until it returns `expected`.
fn wait_for_svid(servers: &ServerSet, expected: &str) {
    let socket = servers.agent_socket("agent");
    wait_until(
        &format!("an X.509-SVID for {expected}"),
        PROPAGATION_TIMEOUT,
        || fetch_svid_ids(&socket).is_some_and(|ids| ids.iter().any(|id| id == expected)),
    );
}

/// Calls the Workload API in a loop until `stop`, recording every failure.
async fn call_workload_api_until(
    socket: PathBuf,
    workload_id: String,
    stop: Arc<AtomicBool>,
    results: Arc<WorkloadResults>,
) {
    while !stop.load(Ordering::Relaxed) {
        let call = call_workload_api(&socket, &workload_id);
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("timed out after {CALL_TIMEOUT:?}")),
        };
        results.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(failure) = outcome {
            results.failures.lock().unwrap().push(failure);
        }
    }
}

/// Makes one round of calls on a new connection, as a short-lived
/// workload would: FetchX509SVID, FetchJWTSVID and FetchX509Bundles, each
/// served from the agent's cache.
async fn call_workload_api(socket: &Path, workload_id: &str) -> Result<(), String> {
    let mut client = workload::try_client(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;

    let mut svids = client
        .fetch_x509svid(workload::request(X509svidRequest {}))
        .await
        .map_err(|status| format!("FetchX509SVID: {status}"))?
        .into_inner();
    let first = svids
        .message()
        .await
        .map_err(|status| format!("FetchX509SVID stream: {status}"))?
        .ok_or("FetchX509SVID ended without a message")?;
    if !first.svids.iter().any(|svid| svid.spiffe_id == workload_id) {
        return Err(format!("FetchX509SVID returned no SVID for {workload_id}"));
    }

    let jwt = client
        .fetch_jwtsvid(workload::request(JwtsvidRequest {
            audience: vec![AUDIENCE.to_owned()],
            spiffe_id: String::new(),
        }))
        .await
        .map_err(|status| format!("FetchJWTSVID: {status}"))?
        .into_inner();
    if jwt.svids.is_empty() {
        return Err("FetchJWTSVID returned no token".to_owned());
    }

    let mut bundles = client
        .fetch_x509_bundles(workload::request(X509BundlesRequest {}))
        .await
        .map_err(|status| format!("FetchX509Bundles: {status}"))?
        .into_inner();
    let first = bundles
        .message()
        .await
        .map_err(|status| format!("FetchX509Bundles stream: {status}"))?
        .ok_or("FetchX509Bundles ended without a message")?;
    let own = format!("spiffe://{TRUST_DOMAIN}");
    if !first.bundles.contains_key(&own) && !first.bundles.contains_key(TRUST_DOMAIN) {
        return Err("FetchX509Bundles returned no bundle of the own trust domain".to_owned());
    }
    Ok(())
}

/// Creates entries through server `index` one after another until `stop`,
/// or until a call fails after a success, as it does once the server is
/// killed.
fn create_entries_until(
    servers: &ServerSet,
    index: usize,
    agent_id: &str,
    stop: &AtomicBool,
) -> Vec<WriteAttempt> {
    let mut attempts = Vec::new();
    for n in ENTRIES_PER_SERVER.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let id = spiffe_id(&format!("/ha/during-load/{index}/{n}"));
        let selector = unmatched_selector(index, n);
        let output = servers.try_create_entry(index, &id, agent_id, &[&selector]);
        let entry_id = output
            .status
            .success()
            .then(|| created_entry_id(&output))
            .flatten();
        let failed = entry_id.is_none();
        attempts.push(WriteAttempt {
            entry_id,
            finished_at: Instant::now(),
            output,
        });
        if failed && !servers_admin_alive(servers, index) {
            break;
        }
    }
    attempts
}

/// Returns whether server `index`'s admin socket still accepts connections.
fn servers_admin_alive(servers: &ServerSet, index: usize) -> bool {
    common::socket_accepts(&servers.admin_socket(index))
}

/// Kills server `index` through a shared handle. The set is only shared
/// with writer threads, which do not touch the daemons, so the kill uses
/// the PID directly.
fn kill_server(servers: &ServerSet, index: usize) {
    let pid = servers.server_pid(index);
    common::send_signal(pid, rustix::process::Signal::KILL);
    wait_until(
        &format!("server {index} to exit after SIGKILL"),
        PROPAGATION_TIMEOUT,
        || !common::process_alive(pid),
    );
}

/// Waits for the agent's log to show, after byte `mark`, a connection to
/// `address`, and returns when the line was seen.
fn wait_for_reconnect(log: &Path, mark: u64, address: &str) -> Option<Instant> {
    let deadline = Instant::now() + PROPAGATION_TIMEOUT;
    while Instant::now() < deadline {
        let text = fs::read(log).unwrap_or_default();
        let start = usize::try_from(mark).unwrap().min(text.len());
        let appended = String::from_utf8_lossy(&text[start..]);
        let reached = appended
            .lines()
            .any(|line| line.contains("connected to the server") && line.contains(address));
        if reached {
            return Some(Instant::now());
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

fn acknowledged_count(attempts: &[WriteAttempt]) -> usize {
    attempts.iter().filter(|a| a.entry_id.is_some()).count()
}

/// Checks that server `index` lists every acknowledged entry exactly once
/// and lists no two entries with the same SPIFFE ID.
fn check_entries_listed(servers: &ServerSet, index: usize, acknowledged: &[String]) {
    let mut listed = Vec::new();
    wait_until(
        "the surviving server to list every acknowledged entry",
        PROPAGATION_TIMEOUT,
        || {
            listed = servers.list_entries(index);
            let ids: HashSet<&str> = listed.iter().filter_map(|e| e["id"].as_str()).collect();
            acknowledged.iter().all(|id| ids.contains(id.as_str()))
        },
    );

    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut by_spiffe_id: HashMap<&str, usize> = HashMap::new();
    for entry in &listed {
        *by_id.entry(field(entry, "id")).or_default() += 1;
        *by_spiffe_id.entry(field(entry, "spiffe_id")).or_default() += 1;
    }
    let repeated_ids: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated_ids.is_empty(),
        "entry IDs listed twice: {repeated_ids:?}"
    );
    let repeated_spiffe_ids: Vec<_> = by_spiffe_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated_spiffe_ids.is_empty(),
        "SPIFFE IDs with several entries: {repeated_spiffe_ids:?}"
    );
    for id in acknowledged {
        assert_eq!(by_id.get(id.as_str()), Some(&1), "acknowledged entry {id}");
    }
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a str {
    entry[name]
        .as_str()
        .unwrap_or_else(|| panic!("entry without {name}: {entry}"))
}

/// Creates an entry for the workload through server `index` and waits for
/// the agent to serve its SVID, which it can only learn from that server.
fn check_sync_through(servers: &ServerSet, index: usize, agent_id: &str) {
    let id = spiffe_id("/ha/after-failover");
    servers.create_entry(index, &id, agent_id, &[&uid_selector()]);
    wait_for_svid(servers, &id);
}
