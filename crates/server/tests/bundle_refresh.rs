//! RequestBundleRefresh of the agent API against a server in this process
//! that federates with `c.test` over an `https_web` bundle endpoint. The
//! endpoint runs in the test and counts the fetches it serves.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{AgentSvid, TestServer};
use tessera_proto::admin::{
    CreateFederationRequest, EvictAgentRequest, FederationRelationship, GetFederationRequest,
    RefreshFederationRequest,
};
use tessera_proto::agent::{RequestBundleRefreshRequest, RequestBundleRefreshResponse};
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::{KeyAlgorithm, PrivateKey, TrustBundle, TrustDomain};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

const PEER: &str = "c.test";
/// Upper bound for a requested fetch to reach the endpoint.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// An `https_web` bundle endpoint that serves one bundle of `c.test` and
/// counts its responses.
struct BundleEndpoint {
    url: String,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BundleEndpoint {
    /// Starts the endpoint and writes its self-signed certificate to
    /// `ca_file`.
    async fn start(ca_file: &Path) -> BundleEndpoint {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(ca_file, cert.pem()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", listener.local_addr().unwrap());
        let body = peer_bundle();
        let fetches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&fetches);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        BundleEndpoint { url, fetches, task }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Waits until the endpoint has sent at least `count` responses.
    async fn wait_for_fetches(&self, count: usize) {
        let deadline = Instant::now() + FETCH_TIMEOUT;
        while self.fetches() < count {
            assert!(
                Instant::now() < deadline,
                "the endpoint sent {} responses within {FETCH_TIMEOUT:?}, expected {count}",
                self.fetches()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BundleEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Returns a SPIFFE bundle of `c.test` with one X.509 authority.
fn peer_bundle() -> Vec<u8> {
    let td = TrustDomain::new(PEER).unwrap();
    let now = SystemTime::now();
    let params = tessera_spiffe::x509::ca_params(&td, now, now + Duration::from_secs(3600));
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let cert = params.self_signed(&key.to_rcgen().unwrap()).unwrap();
    let mut bundle = TrustBundle::new(td);
    bundle
        .add_x509_authority(CertificateDer::from(cert.der().to_vec()))
        .unwrap();
    bundle.to_jwks()
}

/// A server that federates with `c.test` and has fetched its bundle once,
/// with the endpoint and a temporary directory for the endpoint's CA file.
struct Federated {
    server: TestServer,
    endpoint: BundleEndpoint,
    _ca_dir: tempfile::TempDir,
}

impl Federated {
    async fn start() -> Federated {
        let ca_dir = tempfile::tempdir().unwrap();
        let ca_file = ca_dir.path().join("web-ca.pem");
        let endpoint = BundleEndpoint::start(&ca_file).await;
        let server = TestServer::start_with(|raw| {
            raw.federation.https_web_ca_file = Some(ca_file.clone());
        })
        .await;
        server
            .admin()
            .await
            .create_federation(CreateFederationRequest {
                relationship: Some(FederationRelationship {
                    trust_domain: PEER.into(),
                    bundle_endpoint_url: endpoint.url.clone(),
                    profile: "https_web".into(),
                    ..FederationRelationship::default()
                }),
                trust_bundle: Vec::new(),
            })
            .await
            .unwrap();
        let federated = Federated {
            server,
            endpoint,
            _ca_dir: ca_dir,
        };

        // The refresh task of a new relationship fetches at once, then
        // schedules the next fetch.
        let deadline = Instant::now() + FETCH_TIMEOUT;
        while federated.next_refresh_at().await == 0 {
            assert!(
                Instant::now() < deadline,
                "no first fetch within {FETCH_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(federated.endpoint.fetches(), 1);
        federated
    }

    async fn request_refresh(
        &self,
        agent: Option<&AgentSvid>,
        trust_domain: &str,
    ) -> Result<RequestBundleRefreshResponse, Status> {
        self.server
            .agent(agent)
            .await
            .request_bundle_refresh(RequestBundleRefreshRequest {
                trust_domain: trust_domain.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn admin_refresh(&self) {
        self.server
            .admin()
            .await
            .refresh_federation(RefreshFederationRequest {
                trust_domain: PEER.into(),
            })
            .await
            .unwrap();
    }

    async fn next_refresh_at(&self) -> i64 {
        let relationship = self
            .server
            .admin()
            .await
            .get_federation(GetFederationRequest {
                trust_domain: PEER.into(),
            })
            .await
            .unwrap()
            .into_inner();
        relationship.status.unwrap().next_refresh_at
    }
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_secs()).unwrap()
}

#[tokio::test]
async fn refresh_request_fetches_once() {
    let federated = Federated::start().await;
    let agent = federated.server.attest().await;
    // The bundle has no refresh hint, so the next scheduled fetch is five
    // minutes away and only the request can cause the next one.
    let scheduled = federated.next_refresh_at().await;
    assert!(scheduled > unix_now() + 60, "next_refresh_at {scheduled}");

    let first = federated.request_refresh(Some(&agent), PEER).await.unwrap();
    assert!(first.started);
    assert_eq!(first.retry_after_seconds, 0);
    federated.endpoint.wait_for_fetches(2).await;

    let second = federated.request_refresh(Some(&agent), PEER).await.unwrap();
    assert!(
        !second.started,
        "a second early refresh within 30 s started"
    );
    assert!(
        (1..=30).contains(&second.retry_after_seconds),
        "retry_after_seconds {}",
        second.retry_after_seconds
    );

    // Fetch requests are handled in order by the refresh task, so once an
    // admin refresh returns, every earlier fetch has been served: a
    // duplicate fetch for the early refresh would show in the count.
    federated.admin_refresh().await;
    assert_eq!(federated.endpoint.fetches(), 3);
    federated.admin_refresh().await;
    assert_eq!(federated.endpoint.fetches(), 4);
}

#[tokio::test]
async fn refresh_request_invalid_trust_domains() {
    let federated = Federated::start().await;
    let agent = federated.server.attest().await;
    let cases = [
        (
            "unknown.test",
            Code::NotFound,
            "no federation relationship with unknown.test",
        ),
        (
            common::TRUST_DOMAIN,
            Code::InvalidArgument,
            "own trust domain",
        ),
        ("", Code::InvalidArgument, "trust_domain is required"),
        (
            "Not A Domain",
            Code::InvalidArgument,
            "invalid trust domain",
        ),
    ];

    for (trust_domain, code, message) in cases {
        let status = federated
            .request_refresh(Some(&agent), trust_domain)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            code,
            "{trust_domain:?}: {}",
            status.message()
        );
        assert!(
            status.message().contains(message),
            "{trust_domain:?}: {}",
            status.message()
        );
    }
    assert_eq!(federated.endpoint.fetches(), 1);
}

#[tokio::test]
async fn refresh_request_needs_attested_agent() {
    let federated = Federated::start().await;
    let agent = federated.server.attest().await;

    let anonymous = federated.request_refresh(None, PEER).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    federated
        .server
        .admin()
        .await
        .evict_agent(EvictAgentRequest {
            spiffe_id: agent.spiffe_id.clone(),
        })
        .await
        .unwrap();
    let evicted = federated
        .request_refresh(Some(&agent), PEER)
        .await
        .unwrap_err();
    assert_eq!(evicted.code(), Code::PermissionDenied);
    assert!(
        evicted.message().contains("not attested"),
        "{}",
        evicted.message()
    );
    assert_eq!(federated.endpoint.fetches(), 1);
}
