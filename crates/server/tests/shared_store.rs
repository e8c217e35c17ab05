//! Two servers of one trust domain on one database: an entry created
//! through server A's admin API reaches server B's entry cache and an
//! agent's sync stream on B through the change feed. Runs on a shared
//! SQLite file, and on PostgreSQL at 127.0.0.1:5432 (user postgres, trust
//! authentication) when `psql` can reach it; the PostgreSQL case is skipped
//! with a message otherwise. Federation relationships and foreign bundles
//! written through A reach B the same way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::{TestServer, spiffe_id};
use tessera_proto::admin::{
    CreateFederationRequest, DeleteEntriesRequest, DeleteFederationRequest, FederationRelationship,
    GetEntryRequest, ListEntriesRequest, ListFederationsRequest, SetFederatedBundleRequest,
    UpdateEntryRequest, UpdateFederationRequest,
};
use tessera_proto::agent::{SyncEntriesRequest, SyncEntriesResponse};
use tessera_spiffe::{KeyAlgorithm, PrivateKey, TrustDomain};
use tonic::Streaming;

/// Entries created on A and timed until they reach B's sync stream.
const ENTRIES: usize = 50;
/// Upper bound for one change to cross servers on a loaded 2-core machine.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

async fn start_pair(datastore_url: &str) -> (TestServer, TestServer) {
    let url = datastore_url.to_owned();
    let a = TestServer::start_with(|raw| raw.datastore.url = Some(url)).await;
    let url = datastore_url.to_owned();
    let b = TestServer::start_with(|raw| raw.datastore.url = Some(url)).await;
    (a, b)
}

async fn next_message(stream: &mut Streaming<SyncEntriesResponse>) -> SyncEntriesResponse {
    tokio::time::timeout(PROPAGATION_TIMEOUT, stream.message())
        .await
        .expect("a sync message arrives within the timeout")
        .unwrap()
        .expect("the sync stream stays open")
}

async fn listed_ids(server: &TestServer) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .admin()
            .await
            .list_entries(ListEntriesRequest {
                page_token: page_token.clone(),
                ..ListEntriesRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.entries.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Creates entries on A for an agent attested on B and checks that each one
/// reaches B's sync stream and B's ListEntries, then that a delete on A
/// reaches B too. Prints the propagation delay.
async fn entries_propagate(backend: &str, datastore_url: &str) {
    let (mut a, mut b) = start_pair(datastore_url).await;
    let agent = b.attest().await;
    let mut stream = b
        .agent(Some(&agent))
        .await
        .sync_entries(SyncEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_message(&mut stream).await;
    assert!(snapshot.snapshot);

    let mut delays = Vec::with_capacity(ENTRIES);
    let mut created = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        let started = Instant::now();
        let entry = a
            .create_entry(&spiffe_id(&format!("/ha/{i}")), &agent.spiffe_id)
            .await;
        loop {
            let message = next_message(&mut stream).await;
            if message.upserted.iter().any(|e| e.id == entry.id) {
                break;
            }
        }
        delays.push(started.elapsed());
        created.push(entry.id);
    }

    let on_b = listed_ids(&b).await;
    for id in &created {
        assert!(on_b.contains(id), "entry {id} missing from B's ListEntries");
    }

    a.admin()
        .await
        .delete_entries(DeleteEntriesRequest {
            ids: vec![created[0].clone()],
        })
        .await
        .unwrap();
    loop {
        let message = next_message(&mut stream).await;
        if message.removed_entry_ids.contains(&created[0]) {
            break;
        }
    }
    assert!(!listed_ids(&b).await.contains(&created[0]));

    delays.sort();
    println!(
        "{backend}: create on A to sync stream on B over {ENTRIES} entries: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_entries_reach_other_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.sqlite3").display());
    entries_propagate("sqlite", &url).await;
}

/// Creates entries on A and reads, updates and lists each one on B right
/// after A acknowledged it, without waiting for B's next change-feed poll.
/// An admin read on one server returns every write that another server
/// acknowledged before the read.
async fn admin_reads_see_other_server(datastore_url: &str) {
    let (mut a, mut b) = start_pair(datastore_url).await;
    let parent = spiffe_id("/tessera/agent/join_token/reader");
    let mut b_admin = b.admin().await;

    for i in 0..10 {
        let created = a
            .create_entry(&spiffe_id(&format!("/read-your-writes/{i}")), &parent)
            .await;
        assert!(
            listed_ids(&b).await.contains(&created.id),
            "entry {i} missing from B's ListEntries"
        );
        let read = b_admin
            .get_entry(GetEntryRequest {
                id: created.id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("B's GetEntry of entry {i}: {status}"))
            .into_inner();
        assert_eq!(read.revision, created.revision, "entry {i}");

        let mut renamed = read.clone();
        renamed.spiffe_id = spiffe_id(&format!("/read-your-writes/{i}/renamed"));
        let updated = b_admin
            .update_entry(UpdateEntryRequest {
                entry: Some(renamed.clone()),
            })
            .await
            .unwrap_or_else(|status| panic!("B's UpdateEntry of entry {i}: {status}"))
            .into_inner();
        assert_eq!(updated.revision, read.revision + 1, "entry {i}");

        let on_a = a
            .admin()
            .await
            .get_entry(GetEntryRequest {
                id: created.id.clone(),
            })
            .await
            .unwrap_or_else(|status| panic!("A's GetEntry of entry {i}: {status}"))
            .into_inner();
        assert_eq!(on_a.spiffe_id, renamed.spiffe_id, "entry {i} on A");
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_admin_reads_see_other_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.sqlite3").display());
    admin_reads_see_other_server(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_admin_reads_see_other_server() {
    let Some(db) = PostgresDb::create() else {
        eprintln!("skipped: psql cannot create a database on PostgreSQL at 127.0.0.1:5432");
        return;
    };
    admin_reads_see_other_server(&db.url()).await;
}

/// A PostgreSQL database with a random name, dropped with the value.
struct PostgresDb {
    name: String,
}

impl PostgresDb {
    fn create() -> Option<Self> {
        let name = format!("tessera_ha_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {name}")).then_some(Self { name })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn psql(statement: &str) -> bool {
    Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", statement])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_entries_reach_other_server() {
    let Some(db) = PostgresDb::create() else {
        eprintln!("skipped: psql cannot create a database on PostgreSQL at 127.0.0.1:5432");
        return;
    };
    entries_propagate("postgres", &db.url()).await;
}

/// Waits until `server`'s published bundle contains every X.509 authority
/// of `other`'s.
async fn wait_for_authorities(server: &TestServer, other: &TestServer) {
    let deadline = Instant::now() + PROPAGATION_TIMEOUT;
    loop {
        let bundle = server.bundle();
        let missing = other
            .bundle()
            .x509_authorities()
            .iter()
            .any(|der| !bundle.x509_authorities().contains(der));
        if !missing {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the other server's authorities never reached the published bundle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_of_one_server_accepted_by_other() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.sqlite3").display());
    let (mut a, mut b) = start_pair(&url).await;
    wait_for_authorities(&a, &b).await;
    wait_for_authorities(&b, &a).await;

    for (attested_on, connected_to) in [(&a, &b), (&b, &a)] {
        let agent = attested_on.attest().await;
        let mut stream = connected_to
            .agent(Some(&agent))
            .await
            .sync_entries(SyncEntriesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let snapshot = next_message(&mut stream).await;
        assert!(snapshot.snapshot);
        let bundle = snapshot.bundle.unwrap();
        for der in attested_on.bundle().x509_authorities() {
            assert!(bundle.x509_authorities.contains(&der.to_vec()));
        }
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Returns a PEM bundle of a new self-signed CA of `trust_domain`.
fn foreign_bundle_pem(trust_domain: &str) -> Vec<u8> {
    let td = TrustDomain::new(trust_domain).unwrap();
    let now = SystemTime::now();
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let params = tessera_spiffe::x509::ca_params(&td, now, now + Duration::from_secs(3600));
    let cert = params.self_signed(&key.to_rcgen().unwrap()).unwrap();
    cert.pem().into_bytes()
}

fn relationship(trust_domain: &str, url: &str) -> FederationRelationship {
    FederationRelationship {
        trust_domain: trust_domain.to_owned(),
        bundle_endpoint_url: url.to_owned(),
        profile: "https_spiffe".to_owned(),
        ..FederationRelationship::default()
    }
}

/// Waits until `server` reports the relationship with `trust_domain` in
/// the state `check` accepts (`None` when it has none).
async fn wait_for_relationship(
    server: &TestServer,
    trust_domain: &str,
    check: impl Fn(Option<&FederationRelationship>) -> bool,
) {
    let deadline = Instant::now() + PROPAGATION_TIMEOUT;
    loop {
        let listed = server
            .admin()
            .await
            .list_federations(ListFederationsRequest {})
            .await
            .unwrap()
            .into_inner()
            .relationships;
        let found = listed.iter().find(|r| r.trust_domain == trust_domain);
        if check(found) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "server B never reached the expected relationship with {trust_domain}; it lists {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads sync messages until one carries a change to the federated bundle
/// of `trust_domain`, and returns that message.
async fn next_federated_change(
    stream: &mut Streaming<SyncEntriesResponse>,
    trust_domain: &str,
) -> SyncEntriesResponse {
    loop {
        let message = next_message(stream).await;
        let changed = message
            .federated_bundles
            .iter()
            .any(|b| b.trust_domain == trust_domain);
        let removed = message
            .removed_federated_bundles
            .iter()
            .any(|td| td == trust_domain);
        if changed || removed {
            return message;
        }
    }
}

/// A federation relationship and bundle created, replaced and deleted
/// through server A reach server B's relationships and an agent's sync
/// stream on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_changes_reach_other_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.sqlite3").display());
    let (mut a, mut b) = start_pair(&url).await;
    let agent = b.attest().await;
    let mut stream = b
        .agent(Some(&agent))
        .await
        .sync_entries(SyncEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let snapshot = next_message(&mut stream).await;
    assert!(snapshot.federated_bundles.is_empty());

    // Nothing listens on port 9 of loopback, so neither server's refresh
    // replaces the bootstrap bundle.
    let first_url = "https://127.0.0.1:9/first";
    let bootstrap = foreign_bundle_pem("peer.test");
    a.admin()
        .await
        .create_federation(CreateFederationRequest {
            relationship: Some(relationship("peer.test", first_url)),
            trust_bundle: bootstrap,
        })
        .await
        .unwrap();
    wait_for_relationship(&b, "peer.test", |r| {
        r.is_some_and(|r| r.bundle_endpoint_url == first_url)
    })
    .await;
    let created = next_federated_change(&mut stream, "peer.test").await;
    let sent = &created.federated_bundles[0];
    assert_eq!(sent.x509_authorities.len(), 1);

    let second_url = "https://127.0.0.1:9/second";
    a.admin()
        .await
        .update_federation(UpdateFederationRequest {
            relationship: Some(relationship("peer.test", second_url)),
            trust_bundle: Vec::new(),
        })
        .await
        .unwrap();
    wait_for_relationship(&b, "peer.test", |r| {
        r.is_some_and(|r| r.bundle_endpoint_url == second_url)
    })
    .await;

    let replacement = foreign_bundle_pem("peer.test");
    a.admin()
        .await
        .set_federated_bundle(SetFederatedBundleRequest {
            trust_domain: "peer.test".to_owned(),
            bundle: replacement,
        })
        .await
        .unwrap();
    let replaced = next_federated_change(&mut stream, "peer.test").await;
    let resent = &replaced.federated_bundles[0];
    assert_ne!(resent.x509_authorities, sent.x509_authorities);

    a.admin()
        .await
        .delete_federation(DeleteFederationRequest {
            trust_domain: "peer.test".to_owned(),
        })
        .await
        .unwrap();
    wait_for_relationship(&b, "peer.test", |r| r.is_none()).await;
    let deleted = next_federated_change(&mut stream, "peer.test").await;
    assert_eq!(deleted.removed_federated_bundles, ["peer.test"]);

    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A server configured with another trust domain refuses a datastore that
/// already serves one, and names both trust domains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_trust_domain_rejects_datastore() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.sqlite3").display());
    let (mut a, mut b) = start_pair(&url).await;
    a.stop().await.unwrap();
    b.stop().await.unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let mut raw = tessera_server::RawConfig {
        trust_domain: Some("other.test".into()),
        data_dir: Some(other_dir.path().to_path_buf()),
        bind_address: Some("127.0.0.1:0".into()),
        ..tessera_server::RawConfig::default()
    };
    raw.datastore.url = Some(url);
    let config = tessera_server::ServerConfig::resolve(raw).unwrap();
    let result = tokio::time::timeout(
        PROPAGATION_TIMEOUT,
        tessera_server::run(config, std::future::pending()),
    )
    .await
    .expect("the server fails at startup");

    let message = result.unwrap_err().to_string();
    assert!(message.contains("other.test"), "{message}");
    assert!(message.contains("example.org"), "{message}");
}
