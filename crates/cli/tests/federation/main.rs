//! End-to-end tests of SPIFFE federation. Two trust domains, each a real
//! server and agent process, federate both ways over `https_spiffe`
//! bundle endpoints on loopback ports, and keep mTLS between their
//! workloads working while one of them rotates its CA. The Rust `spiffe`
//! crate checks as an outside client what a federated workload receives,
//! with a third trust domain that the workload does not federate with.
//! The refresh rules (garbage, foreign trust domain, rolled-back sequence,
//! peer down) and the early refresh that a JWT-SVID with an unknown key ID
//! causes run against an `https_web` endpoint whose response the test sets.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

#[path = "../common/mod.rs"]
mod common;
mod domain;
mod fake_endpoint;
mod mtls;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{
    COMMAND_TIMEOUT, CmdOutput, Daemon, READY_TIMEOUT, SpiffeServerVerifier, copy_tessera,
    current_uid, run_with_timeout, socket_accepts, tessera_bin, verify_chain, workload,
};
use rustls::RootCertStore;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tempfile::TempDir;
use tessera_proto::workload::{
    JwtsvidRequest, ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509svidRequest,
    X509svidResponse,
};
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::{
    JwtAuthority, JwtSvidClaims, KeyAlgorithm, PrivateKey, SpiffeId, TrustBundle, TrustDomain,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use domain::*;
use fake_endpoint::*;
use mtls::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_both_ways_over_https_spiffe() {
    let a = Domain::start("a.test", "");
    let b = Domain::start("b.test", "");
    a.federate_with(&b);
    b.federate_with(&a);

    for (local, peer) in [(&a, &b), (&b, &a)] {
        local.refresh_federation(peer);
    }

    let uid = format!("unix:uid:{}", current_uid());
    let test_path = format!("unix:path:{}", test_exe());
    let loner_exe = copy_tessera(b.dir.path(), "loner");
    let loner_path = format!("unix:path:{}", loner_exe.display());
    a.create_entries(&[json!({
        "spiffe_id": "spiffe://a.test/client",
        "selectors": [uid],
        "federates_with": ["b.test"],
    })]);
    b.create_entries(&[
        json!({
            "spiffe_id": "spiffe://b.test/server",
            "selectors": [uid, test_path],
            "federates_with": ["a.test"],
        }),
        json!({
            "spiffe_id": "spiffe://b.test/loner",
            "selectors": [uid, loner_path],
        }),
    ]);

    // A workload in A receives B's bundle, and B's X.509-SVID validates
    // with it.
    let in_a = wait_for_x509(&a.workload_socket(), "B's bundle in A", |r| {
        r.federated_bundles.contains_key("spiffe://b.test")
    })
    .await;
    let b_bundle = TrustBundle::from_x509_der(
        &TrustDomain::new("b.test").unwrap(),
        &in_a.federated_bundles["spiffe://b.test"],
    )
    .unwrap();
    let in_b = wait_for_x509(&b.workload_socket(), "an SVID in B", |r| {
        r.svids
            .iter()
            .any(|s| s.spiffe_id == "spiffe://b.test/server")
    })
    .await;
    let chain = split_der(&in_b.svids[0].x509_svid);
    let verified =
        tessera_spiffe::x509::validate_x509_svid(&chain, &b_bundle, SystemTime::now()).unwrap();
    assert_eq!(verified.spiffe_id().to_string(), "spiffe://b.test/server");
    assert!(in_b.federated_bundles.contains_key("spiffe://a.test"));

    // A JWT-SVID of A validates in B for a caller that federates with A.
    let mut a_client = workload::client(&a.workload_socket()).await;
    let token = a_client
        .fetch_jwtsvid(workload::request(JwtsvidRequest {
            audience: vec![AUDIENCE.into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect("FetchJWTSVID in A")
        .into_inner()
        .svids[0]
        .svid
        .clone();
    let mut b_client = workload::client(&b.workload_socket()).await;
    let validated = b_client
        .validate_jwtsvid(workload::request(ValidateJwtsvidRequest {
            audience: AUDIENCE.into(),
            svid: token.clone(),
        }))
        .await
        .expect("ValidateJWTSVID in B")
        .into_inner();
    assert_eq!(validated.spiffe_id, "spiffe://a.test/client");

    // A workload in B whose entry does not federate with A gets neither
    // A's bundle nor A's tokens validated.
    let loner_svid = wait_for(|| {
        let out = b.run(
            &loner_exe,
            &["svid", "fetch", "--output", "json", "--timeout", "1s"],
        );
        (out.status.success() && out.stdout.contains("spiffe://b.test/loner")).then_some(out)
    });
    assert!(
        !loner_svid.stdout.contains("a.test"),
        "the loner received A's bundle: {}",
        loner_svid.stdout
    );
    let bundles = b
        .run(&loner_exe, &["bundle", "fetch", "--output", "json"])
        .success();
    assert!(!bundles.stdout.contains("a.test"), "{}", bundles.stdout);
    let rejected = b.run(&loner_exe, &["jwt", "validate", "-a", AUDIENCE, &token]);
    assert_eq!(
        rejected.code(),
        1,
        "the loner validated A's token: {rejected:?}"
    );

    // Endpoint SPIFFE ID mismatch: the refresh fails and the bundle stays.
    let before = a
        .tessera(&[
            "federation",
            "show",
            "--trust-domain",
            "b.test",
            "--output",
            "json",
        ])
        .success()
        .json();
    a.tessera(&[
        "federation",
        "update",
        "--trust-domain",
        "b.test",
        "--bundle-endpoint-url",
        &b.endpoint_url(),
        "--endpoint-spiffe-id",
        "spiffe://b.test/not-the-server",
    ])
    .success();
    let failed = a.tessera(&[
        "federation",
        "refresh",
        "--trust-domain",
        "b.test",
        "--output",
        "json",
    ]);
    assert_eq!(failed.code(), 1, "{failed:?}");
    let shown = failed.json();
    let error = shown["last_error"].as_str().unwrap();
    assert!(error.contains("spiffe://b.test/not-the-server"), "{error}");
    assert_eq!(shown["sequence_number"], before["sequence_number"]);
    assert_eq!(shown["x509_authorities"], before["x509_authorities"]);

    // Deleting the relationship removes B's bundle from A's workloads.
    a.tessera(&["federation", "delete", "--trust-domain", "b.test"])
        .success();
    wait_for_x509(&a.workload_socket(), "B's bundle removed from A", |r| {
        !r.svids.is_empty() && !r.federated_bundles.contains_key("spiffe://b.test")
    })
    .await;
}

fn wait_for<T>(mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Connects the `spiffe` crate's Workload API client to `domain`'s agent.
async fn spiffe_client(domain: &Domain) -> spiffe::WorkloadApiClient {
    spiffe::WorkloadApiClient::connect_to(domain.workload_endpoint())
        .await
        .unwrap_or_else(|e| panic!("spiffe crate connects to the agent of {}: {e}", domain.td))
}

/// Polls FetchX509SVID through the `spiffe` crate until `ready` holds for
/// the parsed X.509 context.
async fn wait_for_spiffe_context(
    client: &spiffe::WorkloadApiClient,
    what: &str,
    ready: impl Fn(&spiffe::X509Context) -> bool,
) -> spiffe::X509Context {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let fetched =
            tokio::time::timeout(Duration::from_secs(5), client.fetch_x509_context()).await;
        if let Ok(Ok(context)) = fetched
            && ready(&context)
        {
            return context;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn x509_trust_domains(bundles: &spiffe::X509BundleSet) -> BTreeSet<String> {
    bundles.iter().map(|(td, _)| td.to_string()).collect()
}

fn jwt_trust_domains(bundles: &spiffe::JwtBundleSet) -> BTreeSet<String> {
    bundles.iter().map(|(td, _)| td.to_string()).collect()
}

fn der_certs(certs: &[spiffe::Certificate]) -> Vec<CertificateDer<'static>> {
    certs
        .iter()
        .map(|cert| CertificateDer::from(cert.as_bytes().to_vec()))
        .collect()
}

/// Checks B's and C's X.509-SVIDs against the bundles that the `spiffe`
/// crate parsed from A's agent. The crate has no chain verifier, so
/// webpki verifies the chains.
fn assert_federated_x509_svids(
    in_a: &spiffe::X509Context,
    b_svid: &spiffe::X509Svid,
    c_svid: &spiffe::X509Svid,
) {
    let bundle_of = |td: &str| {
        let td = spiffe::TrustDomain::new(td).unwrap();
        let bundle = in_a.bundle_set().get(&td);
        der_certs(bundle.expect("the trust domain's bundle").authorities())
    };
    let now = SystemTime::now();

    let b_chain = der_certs(b_svid.cert_chain());
    assert_eq!(b_svid.spiffe_id().to_string(), "spiffe://b.test/server");
    verify_chain(&b_chain, &bundle_of("b.test"), now)
        .expect("B's X.509-SVID chains to B's bundle served by A's agent");
    assert!(
        verify_chain(&b_chain, &bundle_of("a.test"), now).is_err(),
        "B's X.509-SVID chains to A's own bundle"
    );

    let every_root: Vec<CertificateDer<'static>> = in_a
        .bundle_set()
        .iter()
        .flat_map(|(_, bundle)| der_certs(bundle.authorities()))
        .collect();
    let c_chain = der_certs(c_svid.cert_chain());
    assert_eq!(c_svid.spiffe_id().to_string(), "spiffe://c.test/outsider");
    assert!(
        verify_chain(&c_chain, &every_root, now).is_err(),
        "C's X.509-SVID chains to a bundle that A's workload holds"
    );
}

/// Validates B's and C's JWT-SVIDs offline with the `spiffe` crate against
/// the JWT bundles it fetched from A's agent.
fn assert_federated_jwt_svids(
    in_a: &spiffe::JwtBundleSet,
    b_token: &spiffe::JwtSvid,
    c_token: &spiffe::JwtSvid,
) {
    // `expect` on these results prints only the error, never the token.
    let validated = spiffe::JwtSvid::parse_and_validate(b_token.token(), in_a, &[AUDIENCE])
        .expect("B's JWT-SVID validates with the JWT bundles of A's agent");
    assert_eq!(validated.spiffe_id().to_string(), "spiffe://b.test/server");

    match spiffe::JwtSvid::parse_and_validate(c_token.token(), in_a, &[AUDIENCE]) {
        Ok(svid) => panic!("C's JWT-SVID validated in A as {}", svid.spiffe_id()),
        Err(error) => assert!(
            matches!(&error, spiffe::JwtSvidError::BundleNotFound(td) if td.as_str() == "c.test"),
            "C's JWT-SVID failed for another reason than the missing bundle: {error}"
        ),
    }
}

/// Checks with the `spiffe` crate, an outside client, what A's agent
/// serves to a workload whose entry federates with B only. A's server
/// federates with C too, so C's bundle is on A's agent but must not
/// reach the workload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_validates_federated_svids() {
    let a = Domain::start("a.test", "");
    let b = Domain::start("b.test", "");
    let c = Domain::start("c.test", "");
    for peer in [&b, &c] {
        a.federate_with(peer);
        a.refresh_federation(peer);
    }

    let uid = format!("unix:uid:{}", current_uid());
    let test_path = format!("unix:path:{}", test_exe());
    let c_peer_exe = copy_tessera(a.dir.path(), "c-peer");
    let c_peer_path = format!("unix:path:{}", c_peer_exe.display());
    a.create_entries(&[
        json!({
            "spiffe_id": "spiffe://a.test/client",
            "selectors": [uid, test_path],
            "federates_with": ["b.test"],
        }),
        json!({
            "spiffe_id": "spiffe://a.test/c-peer",
            "selectors": [uid, c_peer_path],
            "federates_with": ["c.test"],
        }),
    ]);
    b.create_entries(&[json!({ "spiffe_id": "spiffe://b.test/server", "selectors": [uid] })]);
    c.create_entries(&[json!({ "spiffe_id": "spiffe://c.test/outsider", "selectors": [uid] })]);

    // Control: A's agent has C's bundle and serves it to a workload
    // whose entry federates with C.
    wait_for(|| {
        let out = a.run(&c_peer_exe, &["bundle", "fetch", "--output", "json"]);
        let served = out.status.success() && out.json()["bundles"].get("spiffe://c.test").is_some();
        served.then_some(())
    });

    let b_td = spiffe::TrustDomain::new("b.test").unwrap();
    let a_client = spiffe_client(&a).await;
    let in_a = wait_for_spiffe_context(&a_client, "B's bundle in A", |context| {
        context.bundle_set().get(&b_td).is_some()
    })
    .await;
    let expected = BTreeSet::from(["a.test".to_owned(), "b.test".to_owned()]);
    let a_svid = in_a.default_svid().expect("a default SVID in A");
    assert_eq!(a_svid.spiffe_id().to_string(), "spiffe://a.test/client");
    assert_eq!(
        x509_trust_domains(in_a.bundle_set()),
        expected,
        "X.509 context"
    );

    let x509_bundles = a_client
        .fetch_x509_bundles()
        .await
        .expect("FetchX509Bundles in A");
    assert_eq!(
        x509_trust_domains(&x509_bundles),
        expected,
        "FetchX509Bundles"
    );

    let source = spiffe::X509Source::builder()
        .endpoint(a.workload_endpoint())
        .build()
        .await
        .expect("X509Source starts against A's agent");
    let source_bundles = source.bundle_set().expect("X509Source has bundles");
    assert_eq!(x509_trust_domains(&source_bundles), expected, "X509Source");
    source.shutdown().await;

    let b_client = spiffe_client(&b).await;
    let c_client = spiffe_client(&c).await;
    let has_svid = |context: &spiffe::X509Context| context.default_svid().is_some();
    let in_b = wait_for_spiffe_context(&b_client, "an SVID in B", has_svid).await;
    let in_c = wait_for_spiffe_context(&c_client, "an SVID in C", has_svid).await;
    assert_federated_x509_svids(
        &in_a,
        in_b.default_svid().unwrap(),
        in_c.default_svid().unwrap(),
    );

    let jwt_bundles = a_client
        .fetch_jwt_bundles()
        .await
        .expect("FetchJWTBundles in A");
    assert_eq!(jwt_trust_domains(&jwt_bundles), expected, "FetchJWTBundles");
    let b_token = b_client
        .fetch_jwt_svid([AUDIENCE], None)
        .await
        .expect("FetchJWTSVID in B");
    let c_token = c_client
        .fetch_jwt_svid([AUDIENCE], None)
        .await
        .expect("FetchJWTSVID in C");
    assert_federated_jwt_svids(&jwt_bundles, &b_token, &c_token);
}

/// An `https_web` bundle endpoint whose response body the test sets; it
/// returns 200 with the body for every request and counts the responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_refresh_rejects_bad_bundles() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("web-ca.pem");
    let fake = FakeEndpoint::start(&ca_file).await;
    let a = start_with_web_peers(&ca_file);

    fake.serve(bundle_json("c.test", 5));
    let url = fake.url();
    a.tessera(&[
        "federation",
        "create",
        "--trust-domain",
        "c.test",
        "--bundle-endpoint-url",
        &url,
        "--profile",
        "https-web",
    ])
    .success();
    let refresh = |expect_success: bool| -> Value {
        let out = a.tessera(&[
            "federation",
            "refresh",
            "--trust-domain",
            "c.test",
            "--output",
            "json",
        ]);
        assert_eq!(out.status.success(), expect_success, "{out:?}");
        out.json()
    };
    let good = refresh(true);
    assert_eq!(good["sequence_number"], 5);

    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "garbage",
            b"<html>not a bundle</html>".to_vec(),
            "invalid SPIFFE bundle",
        ),
        (
            "wrong trust domain",
            bundle_json("d.test", 6),
            "trust domain d.test",
        ),
        (
            "rolled-back sequence",
            bundle_json("c.test", 4),
            "lower than the stored 5",
        ),
    ];
    for (name, body, expected) in cases {
        fake.serve(body);
        let shown = refresh(false);
        let error = shown["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{name}: {error}");
        assert_eq!(shown["sequence_number"], 5, "{name} replaced the bundle");
        assert_eq!(shown["last_success_at"], good["last_success_at"], "{name}");
    }

    // Peer down: the last good bundle stays and the status shows the error.
    fake.task.abort();
    let _ = fake.task.await;
    let shown = refresh(false);
    let error = shown["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("failed to connect"), "peer down: {error}");
    assert_eq!(shown["sequence_number"], 5);
    assert!(shown["next_refresh_at"].is_string(), "{shown}");
}

/// Upper bound for an early refresh to reach A's workloads: the agent's
/// request, the server's fetch and the push on the sync stream. A's next
/// scheduled fetch is five minutes away.
const EARLY_REFRESH_WAIT: Duration = Duration::from_secs(15);

/// Mints a JWT-SVID of `spiffe://c.test/api` for [`AUDIENCE`] with `key`.
fn mint_peer_jwt_svid(key: &PrivateKey, key_id: &str) -> String {
    let now = SystemTime::now();
    let claims = JwtSvidClaims {
        subject: SpiffeId::parse("spiffe://c.test/api").unwrap(),
        audience: vec![AUDIENCE.to_owned()],
        issued_at: now,
        expires_at: now + Duration::from_secs(300),
        issuer: None,
    };
    tessera_spiffe::jwt::mint_jwt_svid(key, key_id, &claims)
        .unwrap()
        .into_string()
}

async fn validate_jwt_svid(
    socket: &Path,
    token: &str,
) -> Result<ValidateJwtsvidResponse, tonic::Status> {
    let mut client = workload::client(socket).await;
    let response = client
        .validate_jwtsvid(workload::request(ValidateJwtsvidRequest {
            audience: AUDIENCE.into(),
            svid: token.to_owned(),
        }))
        .await?;
    Ok(response.into_inner())
}

/// C adds a JWT key after A fetched its bundle and mints a JWT-SVID with
/// it. The first validation in A fails with the unknown key ID, A's agent
/// requests a refresh of C's bundle from A's server, and a retry succeeds
/// long before A's next scheduled fetch, after exactly one more fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_id_refreshes_peer_bundle() {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("web-ca.pem");
    let fake = FakeEndpoint::start(&ca_file).await;
    let a = start_with_web_peers(&ca_file);
    let c_ca = ca_certificate("c.test");
    let old_key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let new_key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    fake.serve(jwt_bundle_json(&c_ca, &[("c-key-1", &old_key)], 1));

    a.tessera(&[
        "federation",
        "create",
        "--trust-domain",
        "c.test",
        "--bundle-endpoint-url",
        &fake.url(),
        "--profile",
        "https-web",
    ])
    .success();
    let uid = format!("unix:uid:{}", current_uid());
    let test_path = format!("unix:path:{}", test_exe());
    a.create_entries(&[json!({
        "spiffe_id": "spiffe://a.test/validator",
        "selectors": [uid, test_path],
        "federates_with": ["c.test"],
    })]);
    wait_for_x509(&a.workload_socket(), "C's bundle in A", |r| {
        r.federated_bundles.contains_key("spiffe://c.test")
    })
    .await;

    // The bundle has no refresh hint, so A fetches it every five minutes.
    let shown = a
        .tessera(&[
            "federation",
            "show",
            "--trust-domain",
            "c.test",
            "--output",
            "json",
        ])
        .success()
        .json();
    let next_refresh = humantime::parse_rfc3339(shown["next_refresh_at"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("next_refresh_at of {shown}: {e}"));
    assert!(
        next_refresh > SystemTime::now() + Duration::from_secs(60),
        "{shown}"
    );
    let fetches = fake.served();

    fake.serve(jwt_bundle_json(
        &c_ca,
        &[("c-key-1", &old_key), ("c-key-2", &new_key)],
        2,
    ));
    let token = mint_peer_jwt_svid(&new_key, "c-key-2");
    let first = validate_jwt_svid(&a.workload_socket(), &token)
        .await
        .expect_err("the key ID c-key-2 is not in A's copy of C's bundle");
    assert_eq!(first.code(), tonic::Code::InvalidArgument);
    assert!(
        first.message().contains("unknown key ID \"c-key-2\""),
        "{}",
        first.message()
    );
    assert!(
        first.message().contains("requested a refresh"),
        "{}",
        first.message()
    );

    let deadline = Instant::now() + EARLY_REFRESH_WAIT;
    let validated = loop {
        match validate_jwt_svid(&a.workload_socket(), &token).await {
            Ok(validated) => break validated,
            Err(status) => assert!(
                Instant::now() < deadline,
                "no successful validation within {EARLY_REFRESH_WAIT:?}; last error: {}",
                status.message()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(validated.spiffe_id, "spiffe://c.test/api");
    assert!(
        SystemTime::now() < next_refresh,
        "the scheduled fetch was due before the validation succeeded"
    );
    assert_eq!(fake.served(), fetches + 1, "fetches of C's bundle");
}

/// Opens a FetchX509SVID stream and returns a receiver of its latest
/// response, which is what a workload that watches the Workload API uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_ca_rotation_no_handshake_fails() {
    let a = Domain::start("a.test", "");
    // With 20 s SVIDs, B's agent renews the workload SVID about every 5 s,
    // so the workload moves to the new CA soon after activation.
    let b = Domain::start("b.test", "\n[svid]\nx509_ttl = \"20s\"\n");
    a.federate_with(&b);
    b.federate_with(&a);

    let uid = format!("unix:uid:{}", current_uid());
    let test_path = format!("unix:path:{}", test_exe());
    a.create_entries(&[json!({
        "spiffe_id": "spiffe://a.test/client",
        "selectors": [uid],
        "federates_with": ["b.test"],
    })]);
    b.create_entries(&[json!({
        "spiffe_id": "spiffe://b.test/server",
        "selectors": [uid, test_path],
        "federates_with": ["a.test"],
    })]);
    wait_for_x509(
        &a.workload_socket(),
        "A's client SVID with B's bundle",
        |r| r.federated_bundles.contains_key("spiffe://b.test"),
    )
    .await;
    wait_for_x509(
        &b.workload_socket(),
        "B's server SVID with A's bundle",
        |r| {
            r.svids
                .iter()
                .any(|s| s.spiffe_id == "spiffe://b.test/server")
                && r.federated_bundles.contains_key("spiffe://a.test")
        },
    )
    .await;

    // A client workload in A handshakes with a server workload in B in a
    // loop, each side with the SVID and bundle its Workload API sent last.
    let mut a_workload = watch_x509(&a.workload_socket()).await;
    let mut b_workload = watch_x509(&b.workload_socket()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server_failures = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve_mtls(
        listener,
        b_workload.clone(),
        Arc::clone(&server_failures),
    ));
    let log = Arc::new(Mutex::new(HandshakeLog::default()));
    let (stop, stopped) = watch::channel(false);
    let client = tokio::spawn(handshake_loop(
        address,
        a_workload.clone(),
        Arc::clone(&log),
        stopped,
    ));
    let attempts = || {
        let log = log.lock().unwrap();
        log.server_certs.len() + log.failures.len()
    };
    wait_for(|| (attempts() >= 5).then_some(()));

    // B prepares a new CA, its bundle endpoint serves it, and A fetches it
    // and passes it to its workload before B activates it.
    let prepared = b
        .tessera(&["authority", "prepare", "--output", "json"])
        .success()
        .json();
    let new_ca_pem = prepared["prepared"]["x509_certificate"].as_str().unwrap();
    let new_ca = common::pem_certificates(new_ca_pem).remove(0);
    let served = fetch_from_endpoint(&b, &common::read_pem_certs(&b.bundle_pem())).await;
    assert!(
        served.x509_authorities().contains(&new_ca),
        "B's bundle endpoint does not serve the prepared CA"
    );
    let refreshed = a
        .tessera(&[
            "federation",
            "refresh",
            "--trust-domain",
            "b.test",
            "--output",
            "json",
        ])
        .success()
        .json();
    assert_eq!(refreshed["x509_authorities"], 2, "{refreshed}");
    wait_for_watched(&mut a_workload, "B's new CA in A's workload", |r| {
        r.federated_bundles
            .get("spiffe://b.test")
            .is_some_and(|der| split_der(der).contains(&new_ca))
    })
    .await;

    // B activates the new CA, and its workload soon receives an SVID of it.
    b.tessera(&["authority", "activate"]).success();
    let signed_by_new_ca = |der: &[u8]| {
        let chain = split_der(der);
        common::verify_chain(&chain, std::slice::from_ref(&new_ca), SystemTime::now()).is_ok()
    };
    wait_for_watched(&mut b_workload, "an SVID of B's new CA", |r| {
        r.svids
            .iter()
            .any(|s| s.spiffe_id == "spiffe://b.test/server" && signed_by_new_ca(&s.x509_svid))
    })
    .await;
    let rotated_at = attempts();
    let keep_until = Instant::now() + Duration::from_secs(3);
    wait_for(|| (Instant::now() >= keep_until && attempts() > rotated_at + 5).then_some(()));

    stop.send(true).unwrap();
    client.await.unwrap();
    server.abort();
    let log = log.lock().unwrap();
    let failures: Vec<String> = log
        .failures
        .iter()
        .chain(server_failures.lock().unwrap().iter())
        .cloned()
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} handshakes failed: {failures:#?}",
        failures.len(),
        log.server_certs.len() + log.failures.len()
    );
    let with_new_ca = log
        .server_certs
        .iter()
        .filter(|cert| signed_by_new_ca(cert))
        .count();
    assert!(
        with_new_ca >= 1,
        "no handshake used an SVID of B's new CA ({} handshakes)",
        log.server_certs.len()
    );
    assert!(
        with_new_ca < log.server_certs.len(),
        "every handshake used the new CA, so none ran before the rotation"
    );
    println!(
        "{} handshakes, {with_new_ca} of them with an SVID of B's new CA",
        log.server_certs.len()
    );
}
