//! End-to-end tests of the Workload API as workloads see it: the CLI, the
//! Rust `spiffe` crate as an outside client, `openssl verify`, and an mTLS
//! handshake between two workloads holding different SVIDs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use common::{Cluster, SpiffeServerVerifier, TRUST_DOMAIN, spiffe_id, uid_selector, workload};
use rustls::RootCertStore;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use tessera_proto::workload::{
    JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest, X509BundlesRequest, X509svidRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[test]
fn svid_fetch_writes_verifiable_files() {
    let cluster = Cluster::start();
    let id = spiffe_id("/workload/fetch");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    let out = cluster.dir().join("out");
    let out_arg = out.to_str().unwrap();
    cluster
        .tessera(&["svid", "fetch", "--write", out_arg])
        .success();

    let svid = out.join("svid.pem");
    let key = out.join("svid.key");
    let bundle = out.join("bundle.pem");
    assert!(svid.is_file(), "svid.pem missing in {}", out.display());
    assert!(key.is_file(), "svid.key missing in {}", out.display());
    assert!(bundle.is_file(), "bundle.pem missing in {}", out.display());

    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "svid.key mode is {mode:o}");

    let chain = common::read_pem_certs(&svid);
    assert_eq!(common::svid_spiffe_id(&chain[0]), id);

    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&bundle)
        .arg(&svid)
        .output()
        .expect("run openssl");
    assert!(
        verify.status.success(),
        "openssl verify failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_validates_x509_context() {
    let cluster = Cluster::start();
    let id = spiffe_id("/workload/rust-spiffe");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    let client = spiffe::WorkloadApiClient::connect_to(cluster.workload_endpoint())
        .await
        .expect("spiffe crate connects to the agent");
    let context = client
        .fetch_x509_context()
        .await
        .expect("spiffe crate parses the X.509 context");

    let svid = context.default_svid().expect("a default SVID");
    assert_eq!(svid.spiffe_id().to_string(), id);

    let trust_domain = spiffe::TrustDomain::new(TRUST_DOMAIN).unwrap();
    let bundle = context
        .bundle_set()
        .get(&trust_domain)
        .expect("the context carries the trust domain's bundle");
    assert!(
        !bundle.authorities().is_empty(),
        "the bundle has no X.509 authority"
    );

    let chain: Vec<CertificateDer<'_>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes()))
        .collect();
    let roots: Vec<CertificateDer<'_>> = bundle
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes()))
        .collect();
    common::verify_chain(&chain, &roots, SystemTime::now())
        .expect("the SVID chains to the bundle the agent served");

    let bundles = client
        .fetch_x509_bundles()
        .await
        .expect("spiffe crate parses the X.509 bundles");
    assert!(
        bundles.get(&trust_domain).is_some(),
        "FetchX509Bundles lacks {TRUST_DOMAIN}"
    );

    let source = spiffe::X509Source::builder()
        .endpoint(cluster.workload_endpoint())
        .build()
        .await
        .expect("X509Source starts against the agent");
    let source_svid = source.svid().expect("X509Source holds an SVID");
    assert_eq!(source_svid.spiffe_id().to_string(), id);
    source.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_crate_validates_jwt_svid() {
    let cluster = Cluster::start();
    let id = spiffe_id("/workload/rust-spiffe-jwt");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    let client = spiffe::WorkloadApiClient::connect_to(cluster.workload_endpoint())
        .await
        .expect("spiffe crate connects to the agent");
    let svid = client
        .fetch_jwt_svid(["e2e-audience"], None)
        .await
        .expect("spiffe crate parses the JWT-SVID");
    assert_eq!(svid.spiffe_id().to_string(), id);
    assert_eq!(svid.audience(), ["e2e-audience".to_owned()]);

    let bundles = client
        .fetch_jwt_bundles()
        .await
        .expect("spiffe crate parses the JWT bundles");
    let validated = spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["e2e-audience"])
        .expect("the JWT-SVID validates against the served JWT bundle");
    assert_eq!(validated.spiffe_id().to_string(), id);

    let wrong = spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["other-audience"]);
    assert!(wrong.is_err(), "a wrong audience was accepted");

    let by_agent = client
        .validate_jwt_token("e2e-audience", svid.token())
        .await
        .expect("the agent validates its own JWT-SVID");
    assert_eq!(by_agent.spiffe_id().to_string(), id);
}

/// Certificates, key and trust bundle that `svid fetch --write` stored.
struct WrittenSvid {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

fn load_written_svid(dir: &std::path::Path) -> WrittenSvid {
    let chain = common::read_pem_certs(&dir.join("svid.pem"));
    let key = PrivateKeyDer::from_pem_file(dir.join("svid.key")).expect("svid.key is PEM");
    let mut roots = RootCertStore::empty();
    for root in common::read_pem_certs(&dir.join("bundle.pem")) {
        roots
            .add(root)
            .expect("a bundle authority is a valid trust anchor");
    }
    WrittenSvid {
        chain,
        key,
        roots: Arc::new(roots),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_between_two_workloads() {
    let cluster = Cluster::start();
    let bin_dir = cluster.dir().join("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    let server_bin = common::copy_tessera(&bin_dir, "workload-server");
    let client_bin = common::copy_tessera(&bin_dir, "workload-client");
    let server_id = spiffe_id("/workload/server");
    let client_id = spiffe_id("/workload/client");
    let server_selector = format!("unix:path:{}", server_bin.display());
    let client_selector = format!("unix:path:{}", client_bin.display());
    cluster.create_entry(&server_id, &[&server_selector]);
    cluster.create_entry(&client_id, &[&client_selector]);

    // Each copy fetches its own SVID, so the agent attests two executables.
    cluster.wait_for_svid(&server_bin, &server_id);
    cluster.wait_for_svid(&client_bin, &client_id);
    let server_dir = cluster.dir().join("server-svid");
    let client_dir = cluster.dir().join("client-svid");
    cluster
        .run_program(
            &server_bin,
            &["svid", "fetch", "--write", server_dir.to_str().unwrap()],
        )
        .success();
    cluster
        .run_program(
            &client_bin,
            &["svid", "fetch", "--write", client_dir.to_str().unwrap()],
        )
        .success();
    let server_svid = load_written_svid(&server_dir);
    let client_svid = load_written_svid(&client_dir);
    assert_eq!(common::svid_spiffe_id(&server_svid.chain[0]), server_id);
    assert_eq!(common::svid_spiffe_id(&client_svid.chain[0]), client_id);

    let provider = Arc::new(aws_lc_rs::default_provider());
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(server_svid.roots.clone(), provider.clone())
            .build()
            .expect("build the client certificate verifier");
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(server_svid.chain.clone(), server_svid.key.clone_key())
        .expect("the server SVID and key form a valid TLS identity");
    let client_config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots: client_svid.roots.clone(),
            provider: provider.clone(),
        }))
        .with_client_auth_cert(client_svid.chain.clone(), client_svid.key.clone_key())
        .expect("the client SVID and key form a valid TLS identity");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor
            .accept(tcp)
            .await
            .expect("server side of the handshake");
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .expect("client sent a certificate")[0]
            .clone();
        let mut request = [0u8; 4];
        tls.read_exact(&mut request).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.unwrap();
        (common::svid_spiffe_id(&peer), request)
    });

    let connector = TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("workload-server").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("client side of the handshake");
    let server_peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    tls.write_all(b"ping").await.unwrap();
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();

    let (client_peer_id, request) = server_task.await.unwrap();
    assert_eq!(common::svid_spiffe_id(&server_peer), server_id);
    assert_eq!(client_peer_id, client_id);
    assert_eq!(&request, b"ping");
    assert_eq!(reply, b"pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_rejects_missing_header() {
    let cluster = Cluster::start();
    cluster.create_entry(&spiffe_id("/workload/header"), &[&uid_selector()]);
    let mut client = workload::client(&cluster.workload_socket()).await;

    let x509 = client.fetch_x509svid(X509svidRequest {}).await.err();
    let bundles = client.fetch_x509_bundles(X509BundlesRequest {}).await.err();
    let jwt = client
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["e2e".into()],
            spiffe_id: String::new(),
        })
        .await
        .err();
    let jwt_bundles = client.fetch_jwt_bundles(JwtBundlesRequest {}).await.err();
    let validate = client
        .validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "e2e".into(),
            svid: "a.b.c".into(),
        })
        .await
        .err();

    let cases = [
        ("FetchX509SVID", x509),
        ("FetchX509Bundles", bundles),
        ("FetchJWTSVID", jwt),
        ("FetchJWTBundles", jwt_bundles),
        ("ValidateJWTSVID", validate),
    ];
    for (rpc, status) in cases {
        let status = status.unwrap_or_else(|| panic!("{rpc} succeeded without the header"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{rpc} without the header: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_denies_unknown_caller() {
    let cluster = Cluster::start();
    // An entry for another user: the test process matches no entry.
    let other_uid = common::current_uid() + 1;
    cluster.create_entry(
        &spiffe_id("/workload/someone-else"),
        &[&format!("unix:uid:{other_uid}")],
    );
    let mut client = workload::client(&cluster.workload_socket()).await;

    let x509 = match client
        .fetch_x509svid(workload::request(X509svidRequest {}))
        .await
    {
        Ok(response) => response.into_inner().message().await.err(),
        Err(status) => Some(status),
    };
    let status = x509.expect("FetchX509SVID served an unknown caller");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    let jwt = client
        .fetch_jwtsvid(workload::request(JwtsvidRequest {
            audience: vec!["e2e".into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect_err("FetchJWTSVID served an unknown caller");
    assert_eq!(jwt.code(), tonic::Code::PermissionDenied, "{jwt:?}");

    let output = cluster.tessera(&["svid", "fetch", "--timeout", "1s"]);
    assert_eq!(
        output.code(),
        1,
        "svid fetch for an unknown caller: {output:?}"
    );
}
