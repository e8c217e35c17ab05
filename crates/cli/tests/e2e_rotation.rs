//! End-to-end tests of change over time on open Workload API streams:
//! X.509-SVID renewal, CA rotation and entry propagation. After a CA
//! rotation, a bundle fetched before the new CA signed anything must still
//! validate what it signs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Cluster, Options, spiffe_id, uid_selector, workload};
use rustls_pki_types::CertificateDer;
use tessera_proto::workload::{X509BundlesRequest, X509svidRequest, X509svidResponse};
use tokio::sync::mpsc;
use tonic::Streaming;

/// Splits a Workload API bundle field (concatenated DER certificates).
fn split_der_certificates(mut der: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).expect("bundle holds DER certs");
        let length = der.len() - rest.len();
        certs.push(CertificateDer::from(der[..length].to_vec()));
        der = rest;
    }
    certs
}

/// Reads the next message of `stream`, failing after `timeout`.
async fn next_message<T>(stream: &mut Streaming<T>, timeout: Duration, what: &str) -> T {
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(message))) => message,
        Ok(Ok(None)) => panic!("the stream ended while waiting for {what}"),
        Ok(Err(status)) => panic!("the stream failed while waiting for {what}: {status:?}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

async fn open_x509_stream(cluster: &Cluster) -> Streaming<X509svidResponse> {
    let mut client = workload::client(&cluster.workload_socket()).await;
    client
        .fetch_x509svid(workload::request(X509svidRequest {}))
        .await
        .expect("FetchX509SVID")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_svid_renews_on_open_stream() {
    // The CA backdates notBefore by 10 s, so a 20 s SVID spans 30 s and is
    // renewed about 5 s after it was issued.
    let options = Options {
        x509_ttl: "20s".into(),
        ..Options::default()
    };
    let cluster = Cluster::start_with(options);
    let id = spiffe_id("/workload/renewed");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    let mut stream = open_x509_stream(&cluster).await;
    let first = next_message(&mut stream, Duration::from_secs(10), "the first SVID").await;
    let first_leaf = first.svids[0].x509_svid.clone();
    let first_serial = common::serial_hex(&first_leaf);
    let lifetime = common::not_after(&first_leaf) - now_unix();
    assert!(
        lifetime <= 20,
        "x509_ttl = 20s was not applied: {lifetime} s left"
    );

    let deadline = Instant::now() + Duration::from_secs(25);
    let renewed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = next_message(&mut stream, left, "a renewed SVID").await;
        let leaf = message.svids[0].x509_svid.clone();
        if common::serial_hex(&leaf) != first_serial {
            break leaf;
        }
    };
    assert_eq!(common::svid_spiffe_id(&renewed), id);
    assert!(
        common::not_after(&renewed) > common::not_after(&first_leaf),
        "the renewed SVID does not outlive the first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_svids_renew_before_expiry() {
    // A 4 s lifetime is shorter than the CA's 10 s backdating of notBefore.
    // The server accepts it, so a watching workload must still never hold
    // an expired SVID.
    let options = Options {
        x509_ttl: "4s".into(),
        ..Options::default()
    };
    let cluster = Cluster::start_with(options);
    let id = spiffe_id("/workload/short-lived");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    let mut stream = open_x509_stream(&cluster).await;
    let first = next_message(&mut stream, Duration::from_secs(10), "the first SVID").await;
    let mut held_until = common::not_after(&first.svids[0].x509_svid);
    let mut renewals = 0;

    let window_end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < window_end {
        // The next SVID must arrive before the one held expires.
        let left = u64::try_from(held_until - now_unix()).unwrap_or(0);
        let message = next_message(
            &mut stream,
            Duration::from_secs(left + 1),
            "an SVID renewed before the held one expired",
        )
        .await;
        let arrived = now_unix();
        assert!(
            arrived <= held_until,
            "the workload held an SVID that expired at {held_until} until {arrived}"
        );
        let leaf = &message.svids[0].x509_svid;
        held_until = common::not_after(leaf);
        renewals += 1;
    }
    assert!(renewals >= 2, "{renewals} renewals in 10 s of 4 s SVIDs");
    assert!(
        renewals <= 10,
        "{renewals} renewals in 10 s: renewal runs in a loop"
    );
}

#[test]
fn agent_outlives_its_first_svid() {
    let options = Options {
        x509_ttl: "15s".into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(options);
    let id = spiffe_id("/workload/long-running");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    // The agent's first SVID expires 15 s after attestation; wait past it.
    std::thread::sleep(Duration::from_secs(18));
    cluster.agent().assert_running();

    let id_2 = spiffe_id("/workload/added-after-renewal");
    cluster.create_entry(&id_2, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_old_bundle_validates_new_svid() {
    // The successor CA is prepared at half the CA lifetime and activated at
    // five sixths: 30 s and 50 s after the server starts. One minute is the
    // shortest CA lifetime the server accepts.
    let options = Options {
        ca_ttl: "1m".into(),
        x509_ttl: "20s".into(),
        jwt_ttl: "30s".into(),
        ..Options::default()
    };
    let cluster = Cluster::start_with(options);
    let id = spiffe_id("/workload/ca-rotation");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    let mut client = workload::client(&cluster.workload_socket()).await;
    let mut bundles = client
        .fetch_x509_bundles(workload::request(X509BundlesRequest {}))
        .await
        .expect("FetchX509Bundles")
        .into_inner();
    let first = next_message(&mut bundles, Duration::from_secs(10), "the first bundle").await;
    let trust_domain_id = format!("spiffe://{}", common::TRUST_DOMAIN);
    let original = split_der_certificates(&first.bundles[&trust_domain_id]);
    assert_eq!(
        original.len(),
        1,
        "a fresh trust domain has one X.509 authority"
    );

    // Keep the first bundle that publishes the successor.
    let deadline = Instant::now() + Duration::from_secs(40);
    let old_bundle = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = next_message(&mut bundles, left, "the successor CA in the bundle").await;
        let certs = split_der_certificates(&message.bundles[&trust_domain_id]);
        if certs.len() >= 2 {
            break certs;
        }
    };

    // Wait for an SVID that the original CA did not sign.
    let mut svids = open_x509_stream(&cluster).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let rotated = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = next_message(&mut svids, left, "an SVID signed by the new CA").await;
        let leaf = CertificateDer::from(message.svids[0].x509_svid.clone());
        if common::verify_chain(std::slice::from_ref(&leaf), &original, SystemTime::now()).is_err()
        {
            break leaf;
        }
    };

    common::verify_chain(
        std::slice::from_ref(&rotated),
        &old_bundle,
        SystemTime::now(),
    )
    .expect("the bundle fetched before activation validates the new CA's SVID");
    assert_eq!(common::svid_spiffe_id(&rotated), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_entry_reaches_open_stream() {
    let cluster = Cluster::start();
    let first_id = spiffe_id("/workload/watching");
    let second_id = spiffe_id("/workload/added-later");
    cluster.create_entry(&first_id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &first_id);

    let mut stream = open_x509_stream(&cluster).await;
    let first = next_message(&mut stream, Duration::from_secs(10), "the first SVID").await;
    assert_eq!(first.svids.len(), 1, "one entry grants one SVID");

    // A reader task stamps each message on arrival, while the blocking CLI
    // call runs on another thread.
    let (sender, mut arrivals) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            let ids: Vec<String> = message.svids.iter().map(|s| s.spiffe_id.clone()).collect();
            if sender.send((Instant::now(), ids)).is_err() {
                break;
            }
        }
    });

    let cluster = std::sync::Arc::new(cluster);
    let creator = cluster.clone();
    let id = second_id.clone();
    tokio::task::spawn_blocking(move || creator.create_entry(&id, &[&uid_selector()]))
        .await
        .unwrap();
    let created_at = Instant::now();

    let arrived_at = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some((at, ids)) = arrivals.recv().await {
            if ids.contains(&second_id) {
                assert!(
                    ids.contains(&first_id),
                    "the first SVID was dropped: {ids:?}"
                );
                return at;
            }
        }
        panic!("the stream ended before the new entry arrived");
    })
    .await
    .expect("the new entry reached the open stream within 10 s");
    reader.abort();

    let delay = arrived_at.saturating_duration_since(created_at);
    println!("entry propagation: {delay:?} from `entry create` returning to the stream message");
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
