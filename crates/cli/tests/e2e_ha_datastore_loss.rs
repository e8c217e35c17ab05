//! A server that loses its datastore while others keep theirs: it stops
//! learning of other servers' writes, so it closes its agents' sync streams
//! and the agents move to a server that still follows the change feed.
//! Server 1 reaches PostgreSQL through a loopback proxy that the test stops.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::database::{Backend, ExternalDb};
use common::servers::{ServerSet, fetch_svid_ids};
use common::{TcpProxy, spiffe_id, uid_selector, wait_until};

/// Upper bound for the agent to move and the new entry to arrive: the
/// server waits 3 s of failed polls before closing streams.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn agent_leaves_server_without_datastore() {
    let Some(db) = ExternalDb::create(Backend::Postgres) else {
        return;
    };
    let direct = db.url();
    let mut proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap());
    let proxied = direct.replace("127.0.0.1:5432", &proxy.address().to_string());
    let servers = ServerSet::start_each(&[direct, proxied]);
    servers.wait_for_shared_bundle();

    let token = servers.generate_token(1);
    let mut agent = servers.spawn_agent("agent", &token, &[1, 0]);
    servers.wait_attested(&mut agent, &token.agent_id, 1);
    let socket = servers.agent_socket("agent");
    let first_id = spiffe_id("/loss/before");
    servers.create_entry(0, &first_id, &token.agent_id, &[&uid_selector()]);
    wait_until("the first SVID", MOVE_TIMEOUT, || {
        fetch_svid_ids(&socket).is_some_and(|ids| ids.contains(&first_id))
    });

    proxy.stop();
    let stopped_at = Instant::now();
    let second_id = spiffe_id("/loss/after");
    servers.create_entry(0, &second_id, &token.agent_id, &[&uid_selector()]);
    wait_until("the entry created during the outage", MOVE_TIMEOUT, || {
        fetch_svid_ids(&socket).is_some_and(|ids| ids.contains(&second_id))
    });
    println!(
        "the entry reached the agent {:?} after server 1 lost its datastore",
        stopped_at.elapsed()
    );

    let log = fs::read_to_string(servers.agent_log("agent")).unwrap();
    let moved = log
        .lines()
        .any(|line| line.contains("connected to the server") && line.contains(servers.address(0)));
    assert!(moved, "the agent never connected to server 0:\n{log}");
    assert!(
        fetch_svid_ids(&socket).is_some_and(|ids| ids.contains(&first_id)),
        "the agent stopped serving the SVID from before the outage"
    );
}
