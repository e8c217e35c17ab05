//! End-to-end tests of CA rotation on demand: `tessera authority list`,
//! `prepare` and `activate` against a server and agent running as
//! processes. A prepared authority reaches bundle.pem, the admin API and
//! the agent. After activation, new SVIDs and the server's own certificate
//! chain to it, and SVIDs signed before still validate.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use common::{
    Cluster, Options, READY_TIMEOUT, SpiffeServerVerifier, read_pem_certs, spiffe_id, uid_selector,
    verify_chain, wait_until,
};
use rustls::RootCertStore;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Runs `tessera authority ARGS --output json` and returns the JSON.
fn authority_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["authority"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    cluster.tessera(&all).success().json()
}

/// Returns the authorities of `tessera authority list` as (id, state) pairs.
fn authority_states(cluster: &Cluster) -> Vec<(String, String)> {
    let json = authority_json(cluster, &["list"]);
    json["authorities"]
        .as_array()
        .expect("an `authorities` array")
        .iter()
        .map(|a| {
            let field = |name: &str| a[name].as_str().unwrap().to_owned();
            (field("id"), field("state"))
        })
        .collect()
}

/// Parses the PEM `x509_certificate` field of an authority in JSON output.
fn authority_certificate(authority: &Value) -> CertificateDer<'static> {
    let pem = authority["x509_certificate"].as_str().unwrap();
    let mut certs = rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes());
    certs.next().unwrap().unwrap()
}

fn count_pem_certificates(text: &str) -> usize {
    text.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Runs `svid fetch --write DIR` and returns the written chain.
fn fetch_svid(cluster: &Cluster, dir: &Path) -> Vec<CertificateDer<'static>> {
    let dir_arg = dir.to_str().unwrap();
    cluster
        .tessera(&["svid", "fetch", "--write", dir_arg])
        .success();
    read_pem_certs(&dir.join("svid.pem"))
}

/// Completes a TLS handshake with the agent API and returns the server's
/// certificate, which must validate against `roots`.
async fn agent_api_certificate(
    address: &str,
    roots: &[CertificateDer<'static>],
) -> std::io::Result<CertificateDer<'static>> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots: Arc::new(store),
            provider,
        }))
        .with_no_client_auth();

    let address: SocketAddr = address.parse().unwrap();
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("tessera-server").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

#[test]
fn activate_without_prepare_changes_nothing() {
    let cluster = Cluster::start();
    let authorities = authority_states(&cluster);
    let bundle = std::fs::read(cluster.bundle_path()).unwrap();
    assert_eq!(authorities.len(), 1, "{authorities:?}");
    assert_eq!(authorities[0].1, "active");

    let failed = cluster.tessera(&["authority", "activate"]);

    assert_eq!(failed.code(), 1, "{failed:?}");
    assert!(
        failed.stderr.contains("no authority is prepared"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("tessera authority prepare"),
        "{}",
        failed.stderr
    );
    assert!(failed.stdout.is_empty(), "{}", failed.stdout);
    assert_eq!(authority_states(&cluster), authorities);
    assert_eq!(std::fs::read(cluster.bundle_path()).unwrap(), bundle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_then_activate_rotates_cluster() {
    // With 20 s SVIDs the agent renews its own SVID and the workload's
    // about every 5 s, so both pick up the new CA soon after activation.
    let options = Options {
        x509_ttl: "20s".into(),
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(options);
    let id = spiffe_id("/workload/rotated");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);
    let old_id = authority_states(&cluster).remove(0).0;
    let before = fetch_svid(&cluster, &cluster.dir().join("svid-before"));

    // Prepare: the new authority is published but does not sign yet.
    let prepared = authority_json(&cluster, &["prepare"])["prepared"].clone();
    let new_id = prepared["id"].as_str().unwrap().to_owned();
    let new_ca = authority_certificate(&prepared);
    assert_eq!(prepared["state"], "prepared");
    assert_eq!(
        authority_states(&cluster),
        [
            (old_id.clone(), "active".into()),
            (new_id.clone(), "prepared".into())
        ]
    );
    let file = read_pem_certs(&cluster.bundle_path());
    assert_eq!(file.len(), 2);
    assert!(file.contains(&new_ca));
    let bundle_show = cluster.tessera(&["bundle", "show"]).success();
    let shown_certificates = count_pem_certificates(&bundle_show.stdout);
    assert_eq!(shown_certificates, 2, "{}", bundle_show.stdout);
    wait_until("the agent's bundle with 2 CAs", READY_TIMEOUT, || {
        let fetched = cluster.tessera(&["bundle", "fetch"]).success();
        count_pem_certificates(&fetched.stdout) == 2
    });

    let activated = authority_json(&cluster, &["activate"]);
    assert_eq!(activated["activated"]["id"], new_id.as_str());
    assert_eq!(activated["activated"]["state"], "active");
    assert_eq!(activated["retired"]["id"], old_id.as_str());
    assert_eq!(activated["retired"]["state"], "retired");
    assert_eq!(
        authority_states(&cluster),
        [
            (old_id.clone(), "retired".into()),
            (new_id.clone(), "active".into())
        ]
    );

    // The agent API now presents a server SVID of the new CA.
    let server_cert = agent_api_certificate(&cluster.server_address, std::slice::from_ref(&new_ca))
        .await
        .expect("the agent API certificate validates against the new CA alone");
    assert_eq!(
        common::svid_spiffe_id(&server_cert),
        spiffe_id("/tessera/server")
    );

    // The workload's SVID moves to the new CA, and the one fetched before
    // still validates against the bundle.
    let after_dir = cluster.dir().join("svid-after");
    let mut after = Vec::new();
    wait_until("an SVID of the new CA", READY_TIMEOUT, || {
        after = fetch_svid(&cluster, &after_dir);
        verify_chain(&after, std::slice::from_ref(&new_ca), SystemTime::now()).is_ok()
    });
    assert_eq!(common::svid_spiffe_id(&after[0]), id);
    let now = SystemTime::now();
    verify_chain(&before, &read_pem_certs(&cluster.bundle_path()), now)
        .expect("the SVID signed before activation validates against bundle.pem");
    verify_chain(&before, &read_pem_certs(&after_dir.join("bundle.pem")), now)
        .expect("the SVID signed before activation validates against the agent's bundle");

    // The agent renews its own SVID through the new server certificate.
    let agent_svid = cluster.agent_data_dir("agent").join("agent_svid.pem");
    wait_until("an agent SVID of the new CA", READY_TIMEOUT, || {
        let chain = read_pem_certs(&agent_svid);
        verify_chain(&chain, std::slice::from_ref(&new_ca), SystemTime::now()).is_ok()
    });
    cluster.agent().assert_running();
    let added = spiffe_id("/workload/added-after-activation");
    cluster.create_entry(&added, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &added);

    // With nothing prepared any more, a second activation fails.
    let again = cluster.tessera(&["authority", "activate"]);
    assert_eq!(again.code(), 1, "{again:?}");
    assert!(
        again.stderr.contains("FailedPrecondition"),
        "{}",
        again.stderr
    );
}
