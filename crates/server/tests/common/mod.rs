//! In-process harness: runs `tessera_server::run` on a temporary data
//! directory with the agent API on 127.0.0.1 port 0, and builds an admin
//! client on the Unix socket and agent clients over mTLS.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tempfile::TempDir;
use tessera_proto::admin::admin_api_client::AdminApiClient;
use tessera_proto::admin::{CreateEntriesRequest, CreateJoinTokenRequest, GetBundleRequest};
use tessera_proto::agent::agent_api_client::AgentApiClient;
use tessera_proto::agent::{AttestAgentRequest, AttestationData};
use tessera_proto::types;
use tessera_server::{AGENT_API_ADDR_FILE, RawConfig, ServerConfig};
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{JwtAuthority, KeyAlgorithm, PrivateKey, SpiffeId, TrustBundle, TrustDomain};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// Trust domain of the test server.
pub const TRUST_DOMAIN: &str = "example.org";
/// Upper bound for the server to become ready on a loaded 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns `spiffe://example.org<path>`.
pub fn spiffe_id(path: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}{path}")
}

/// A server running in this process on a temporary data directory.
pub struct TestServer {
    pub dir: TempDir,
    pub agent_addr: std::net::SocketAddr,
    pub admin_socket: PathBuf,
    config: ServerConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tessera_server::ServerError>>>,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` edits the raw configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut RawConfig)) -> Self {
        let dir = tempfile::Builder::new().prefix("tsrv").tempdir().unwrap();
        let mut raw = RawConfig {
            trust_domain: Some(TRUST_DOMAIN.into()),
            data_dir: Some(dir.path().to_path_buf()),
            bind_address: Some("127.0.0.1:0".into()),
            ..RawConfig::default()
        };
        adjust(&mut raw);
        let config = ServerConfig::resolve(raw).unwrap();
        let mut server = TestServer {
            dir,
            agent_addr: "127.0.0.1:0".parse().unwrap(),
            admin_socket: config.admin_socket.clone(),
            config,
            stop: None,
            task: None,
        };
        server.launch().await;
        server
    }

    /// Starts the server again on the same data directory after `stop`.
    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "stop the server before restarting it");
        self.launch().await;
    }

    async fn launch(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tessera_server::run(self.config.clone(), async move {
            let _ = stopped.await;
        }));
        self.agent_addr = wait_for_address(self.dir.path(), &task).await;
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// Stops the server and returns what `run` returned. The data
    /// directory stays until `self` is dropped.
    pub async fn stop(&mut self) -> Result<(), tessera_server::ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the server stops within 30 seconds")
            .unwrap()
    }

    /// Reads `<data_dir>/bundle.pem`.
    pub fn bundle(&self) -> TrustBundle {
        let pem = std::fs::read_to_string(self.dir.path().join("bundle.pem")).unwrap();
        TrustBundle::from_pem(&trust_domain(), &pem).unwrap()
    }

    /// Reads `<data_dir>/bundle.pem` as bytes.
    pub fn bundle_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("bundle.pem")).unwrap()
    }

    /// Fetches the bundle with its JWT keys through the admin API.
    pub async fn jwt_bundle(&self) -> TrustBundle {
        let proto = self
            .admin()
            .await
            .get_bundle(GetBundleRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut bundle = TrustBundle::new(trust_domain());
        for key in proto.jwt_authorities {
            bundle
                .add_jwt_authority(JwtAuthority {
                    key_id: key.key_id,
                    public_key: key.public_key,
                    expires_at: None,
                })
                .unwrap();
        }
        bundle
    }

    /// Connects an admin client to the Unix socket.
    pub async fn admin(&self) -> AdminApiClient<Channel> {
        let path = self.admin_socket.clone();
        let channel = Endpoint::try_from("http://admin.invalid")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
            }))
            .await
            .unwrap();
        AdminApiClient::new(channel)
    }

    /// Connects an agent API client, presenting `svid` when given.
    pub async fn agent(&self, svid: Option<&AgentSvid>) -> AgentApiClient<Channel> {
        self.agent_with_versions(svid, rustls::DEFAULT_VERSIONS)
            .await
    }

    /// Connects an agent API client that offers only the TLS `versions`.
    pub async fn agent_with_versions(
        &self,
        svid: Option<&AgentSvid>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> AgentApiClient<Channel> {
        let config = client_tls_config(self.bundle(), svid, versions);
        self.agent_with_config(config).await
    }

    /// Connects an agent API client that accepts the server's certificate
    /// only when it validates against `bundle`.
    pub async fn agent_trusting(
        &self,
        svid: Option<&AgentSvid>,
        bundle: TrustBundle,
    ) -> AgentApiClient<Channel> {
        let config = client_tls_config(bundle, svid, rustls::DEFAULT_VERSIONS);
        self.agent_with_config(config).await
    }

    async fn agent_with_config(&self, config: rustls::ClientConfig) -> AgentApiClient<Channel> {
        let connector = TlsConnector::from(Arc::new(config));
        let addr = self.agent_addr;
        let channel = Endpoint::try_from(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let name = ServerName::try_from("tessera-server").unwrap();
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .expect("connect to the agent API; the server certificate must validate");
        AgentApiClient::new(channel)
    }

    /// Creates one entry and returns it as stored.
    pub async fn create_entry(&self, spiffe_id: &str, parent_id: &str) -> types::Entry {
        let mut results = self
            .admin()
            .await
            .create_entries(CreateEntriesRequest {
                entries: vec![entry(spiffe_id, parent_id)],
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        let result = results.remove(0);
        assert_eq!(
            result.status.as_ref().unwrap().code,
            0,
            "{:?}",
            result.status
        );
        result.entry.unwrap()
    }

    /// Creates a join token and attests an agent with it.
    pub async fn attest(&self) -> AgentSvid {
        let token = self
            .admin()
            .await
            .create_join_token(CreateJoinTokenRequest::default())
            .await
            .unwrap()
            .into_inner();
        let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
        let response = self
            .agent(None)
            .await
            .attest_agent(attest_request(&token.token, &key))
            .await
            .unwrap()
            .into_inner();
        let svid = response.svid.unwrap();
        assert_eq!(svid.spiffe_id, token.agent_id);
        AgentSvid {
            spiffe_id: svid.spiffe_id,
            chain: svid
                .cert_chain
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            key,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An agent SVID and its key.
pub struct AgentSvid {
    pub spiffe_id: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKey,
}

/// Makes an SVID for `spiffe_id` signed by a new CA that the server does
/// not trust.
pub fn foreign_svid(spiffe_id: &str) -> AgentSvid {
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(3600);
    let ca_key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let ca_params = tessera_spiffe::x509::ca_params(&trust_domain(), now, not_after);
    let issuer = rcgen::Issuer::new(ca_params, ca_key.to_rcgen().unwrap());

    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let id = SpiffeId::parse(spiffe_id).unwrap();
    let leaf = tessera_spiffe::x509::svid_params(&id, &[], now, not_after)
        .unwrap()
        .signed_by(&key.to_rcgen().unwrap(), &issuer)
        .unwrap();
    AgentSvid {
        spiffe_id: spiffe_id.to_owned(),
        chain: vec![leaf.der().clone()],
        key,
    }
}

/// Returns the test trust domain.
pub fn trust_domain() -> TrustDomain {
    TrustDomain::new(TRUST_DOMAIN).unwrap()
}

/// Returns an entry request with one `unix:uid:1000` selector.
pub fn entry(spiffe_id: &str, parent_id: &str) -> types::Entry {
    types::Entry {
        spiffe_id: spiffe_id.into(),
        parent_id: parent_id.into(),
        selectors: vec![types::Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
        ..types::Entry::default()
    }
}

/// Returns an AttestAgent request for a join token and the public key of `key`.
pub fn attest_request(token: &str, key: &PrivateKey) -> AttestAgentRequest {
    AttestAgentRequest {
        data: Some(AttestationData {
            r#type: "join_token".into(),
            payload: token.as_bytes().to_vec(),
        }),
        public_key: key.public_key_der(),
    }
}

/// Validates an X.509-SVID chain from the server against `bundle`.
pub fn validate_chain(chain: &[Vec<u8>], bundle: &TrustBundle) -> SpiffeId {
    let chain: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    validate_x509_svid(&chain, bundle, SystemTime::now())
        .unwrap()
        .spiffe_id()
        .clone()
}

async fn wait_for_address(
    data_dir: &Path,
    task: &JoinHandle<Result<(), tessera_server::ServerError>>,
) -> std::net::SocketAddr {
    let path = data_dir.join(AGENT_API_ADDR_FILE);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path) {
            return text.trim().parse().unwrap();
        }
        assert!(
            !task.is_finished(),
            "the server stopped before it was ready"
        );
        assert!(
            Instant::now() < deadline,
            "the server was not ready within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client_tls_config(
    bundle: TrustBundle,
    svid: Option<&AgentSvid>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(ServerSvidVerifier {
        bundle,
        provider: Arc::clone(&provider),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match svid {
        Some(svid) => {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key.pkcs8_der().to_vec()));
            builder
                .with_client_auth_cert(svid.chain.clone(), key)
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Accepts the server's certificate when it is an X.509-SVID of the server
/// ID, valid against the bundle the server wrote.
#[derive(Debug)]
struct ServerSvidVerifier {
    bundle: TrustBundle,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerSvidVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone()];
        chain.extend(intermediates.iter().cloned());
        let verified = validate_x509_svid(&chain, &self.bundle, SystemTime::now())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if verified.spiffe_id().as_str() != spiffe_id("/tessera/server") {
            return Err(rustls::Error::General(format!(
                "unexpected server ID {}",
                verified.spiffe_id()
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
