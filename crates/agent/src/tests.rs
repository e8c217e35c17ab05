//! Tests of the whole agent (`run`) against a fake agent API server on
//! 127.0.0.1 that speaks mTLS with a test CA, and a Workload API client on
//! the agent's temporary socket.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tessera_proto::agent::agent_api_server::{AgentApi, AgentApiServer};
use tessera_proto::agent::{
    AttestAgentRequest, AttestAgentResponse, BatchNewX509SvidRequest, BatchNewX509SvidResponse,
    NewJwtSvidRequest, NewJwtSvidResponse, NewX509SvidResult, RenewAgentRequest,
    RenewAgentResponse, RequestBundleRefreshRequest, RequestBundleRefreshResponse,
    SyncEntriesRequest, SyncEntriesResponse,
};
use tessera_proto::types;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tessera_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest};
use tessera_registration::RegistrationEntry;
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::{SpiffeId, TrustBundle, TrustDomain};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Response, Status};

use crate::config::{AgentConfig, RawConfig};
use crate::error::AgentError;
use crate::testing::{self, TestCa};
use crate::workload::service::SECURITY_HEADER;

const JOIN_TOKEN: &str = "test-join-token";
const AGENT_PATH: &str = "/tessera/agent/join_token/0123456789abcdef";

/// What the fake server's handlers share with the test.
struct FakeServer {
    ca: TestCa,
    bundle: TrustBundle,
    agent_svid_ttl: Duration,
    entries: Mutex<Vec<RegistrationEntry>>,
    attestations: AtomicU32,
    renewals: AtomicU32,
    reject_renewal: AtomicBool,
    /// Trust domains of the RequestBundleRefresh calls received.
    refresh_requests: Mutex<Vec<String>>,
    updates: broadcast::Sender<SyncEntriesResponse>,
}

impl FakeServer {
    fn agent_id() -> SpiffeId {
        testing::spiffe_id(AGENT_PATH)
    }

    fn sign_agent(&self, public_key: &[u8]) -> types::X509Svid {
        let now = SystemTime::now();
        let chain = self.ca.sign_public_key(
            &Self::agent_id(),
            public_key,
            now - Duration::from_secs(1),
            now + self.agent_svid_ttl,
        );
        types::X509Svid {
            spiffe_id: Self::agent_id().to_string(),
            cert_chain: chain.iter().map(|c| c.to_vec()).collect(),
            expires_at: 0,
        }
    }

    fn bundle_message(&self) -> types::Bundle {
        bundle_message(&self.bundle)
    }

    fn entry(&self, id: &str) -> Option<RegistrationEntry> {
        let entries = self.entries.lock().expect("entries lock");
        entries.iter().find(|e| e.id.as_str() == id).cloned()
    }
}

/// Returns the sync stream form of `bundle`.
fn bundle_message(bundle: &TrustBundle) -> types::Bundle {
    types::Bundle {
        trust_domain: bundle.trust_domain().to_string(),
        x509_authorities: bundle
            .x509_authorities()
            .iter()
            .map(|c| c.to_vec())
            .collect(),
        jwt_authorities: bundle
            .jwt_authorities()
            .iter()
            .map(|a| types::JwtKey {
                key_id: a.key_id.clone(),
                public_key: a.public_key.clone(),
                expires_at: 0,
            })
            .collect(),
        refresh_hint: 0,
        sequence_number: 1,
    }
}

/// The client certificates of one TLS connection, as a request extension.
#[derive(Clone)]
struct PeerCertificates(Option<Vec<CertificateDer<'static>>>);

/// A server TLS connection that passes its client certificates to tonic.
struct TlsConnection(TlsStream<TcpStream>);

impl Connected for TlsConnection {
    type ConnectInfo = PeerCertificates;

    fn connect_info(&self) -> PeerCertificates {
        PeerCertificates(self.0.get_ref().1.peer_certificates().map(<[_]>::to_vec))
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Rejects calls without an agent SVID as client certificate.
fn require_agent<T>(request: &Request<T>) -> Result<(), Status> {
    let presented = request
        .extensions()
        .get::<PeerCertificates>()
        .and_then(|p| p.0.as_ref())
        .and_then(|chain| chain.first())
        .and_then(|leaf| tessera_spiffe::x509::spiffe_id_from_certificate(leaf).ok());
    match presented {
        Some(id) if id == FakeServer::agent_id() => Ok(()),
        _ => Err(Status::unauthenticated("no agent SVID presented")),
    }
}

type SyncStream = Pin<Box<dyn Stream<Item = Result<SyncEntriesResponse, Status>> + Send>>;

#[derive(Clone)]
struct FakeAgentApi(Arc<FakeServer>);

#[tonic::async_trait]
impl AgentApi for FakeAgentApi {
    type SyncEntriesStream = SyncStream;

    async fn attest_agent(
        &self,
        request: Request<AttestAgentRequest>,
    ) -> Result<Response<AttestAgentResponse>, Status> {
        let request = request.into_inner();
        let data = request.data.unwrap_or_default();
        if data.r#type != "join_token" || data.payload != JOIN_TOKEN.as_bytes() {
            return Err(Status::permission_denied("invalid join token"));
        }
        self.0.attestations.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(AttestAgentResponse {
            svid: Some(self.0.sign_agent(&request.public_key)),
            bundle: Some(self.0.bundle_message()),
        }))
    }

    async fn renew_agent(
        &self,
        request: Request<RenewAgentRequest>,
    ) -> Result<Response<RenewAgentResponse>, Status> {
        require_agent(&request)?;
        if self.0.reject_renewal.load(Ordering::SeqCst) {
            return Err(Status::permission_denied("agent is banned"));
        }
        self.0.renewals.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(RenewAgentResponse {
            svid: Some(self.0.sign_agent(&request.get_ref().public_key)),
        }))
    }

    async fn batch_new_x509_svid(
        &self,
        request: Request<BatchNewX509SvidRequest>,
    ) -> Result<Response<BatchNewX509SvidResponse>, Status> {
        require_agent(&request)?;
        let now = SystemTime::now();
        let results = request
            .into_inner()
            .params
            .into_iter()
            .map(|params| match self.0.entry(&params.entry_id) {
                Some(entry) => {
                    let chain = self.0.ca.sign_public_key(
                        &entry.spiffe_id,
                        &params.public_key,
                        now - Duration::from_secs(1),
                        now + Duration::from_secs(3600),
                    );
                    NewX509SvidResult {
                        status: Some(types::Status::default()),
                        svid: Some(types::X509Svid {
                            spiffe_id: entry.spiffe_id.to_string(),
                            cert_chain: chain.iter().map(|c| c.to_vec()).collect(),
                            expires_at: 0,
                        }),
                    }
                }
                None => NewX509SvidResult {
                    status: Some(types::Status {
                        code: Code::NotFound as i32,
                        message: "no such entry".into(),
                    }),
                    svid: None,
                },
            })
            .collect();
        Ok(Response::new(BatchNewX509SvidResponse { results }))
    }

    async fn new_jwt_svid(
        &self,
        request: Request<NewJwtSvidRequest>,
    ) -> Result<Response<NewJwtSvidResponse>, Status> {
        require_agent(&request)?;
        let request = request.into_inner();
        let entry = self
            .0
            .entry(&request.entry_id)
            .ok_or_else(|| Status::not_found("no such entry"))?;
        let token = self.0.ca.jwt_svid(&entry.spiffe_id, &request.audience);
        let now = crate::svid::system_time_to_unix(SystemTime::now());
        Ok(Response::new(NewJwtSvidResponse {
            token,
            issued_at: now,
            expires_at: now + 300,
        }))
    }

    async fn sync_entries(
        &self,
        request: Request<SyncEntriesRequest>,
    ) -> Result<Response<SyncStream>, Status> {
        require_agent(&request)?;
        let snapshot = SyncEntriesResponse {
            revision: 1,
            snapshot: true,
            upserted: self
                .0
                .entries
                .lock()
                .expect("entries lock")
                .iter()
                .map(types::Entry::from)
                .collect(),
            bundle: Some(self.0.bundle_message()),
            complete: true,
            ..SyncEntriesResponse::default()
        };
        let mut updates = self.0.updates.subscribe();
        let stream = async_stream::stream! {
            yield Ok(snapshot);
            while let Ok(update) = updates.recv().await {
                yield Ok(update);
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn request_bundle_refresh(
        &self,
        request: Request<RequestBundleRefreshRequest>,
    ) -> Result<Response<RequestBundleRefreshResponse>, Status> {
        require_agent(&request)?;
        let trust_domain = request.into_inner().trust_domain;
        self.0
            .refresh_requests
            .lock()
            .expect("refresh requests lock")
            .push(trust_domain);
        Ok(Response::new(RequestBundleRefreshResponse {
            started: true,
            retry_after_seconds: 0,
        }))
    }
}

/// A running fake server.
struct ServerHandle {
    state: Arc<FakeServer>,
    address: String,
    task: JoinHandle<()>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a fake server whose certificate names `server_path`.
async fn start_server(
    server_path: &str,
    entries: Vec<RegistrationEntry>,
    agent_svid_ttl: Duration,
) -> ServerHandle {
    let td = TrustDomain::new("example.org").expect("td");
    let ca = TestCa::new(&td);
    let bundle = ca.bundle();
    let server_svid = ca.x509_svid(&testing::spiffe_id(server_path));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.certificate().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .expect("client verifier");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        server_svid.private_key().pkcs8_der().to_vec(),
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(server_svid.cert_chain().to_vec(), key)
        .expect("server certificate");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let (updates, _) = broadcast::channel(16);
    let state = Arc::new(FakeServer {
        ca,
        bundle,
        agent_svid_ttl,
        entries: Mutex::new(entries),
        attestations: AtomicU32::new(0),
        renewals: AtomicU32::new(0),
        reject_renewal: AtomicBool::new(false),
        refresh_requests: Mutex::new(Vec::new()),
        updates,
    });

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address").to_string();
    let incoming = async_stream::stream! {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            match acceptor.accept(tcp).await {
                Ok(tls) => yield Ok::<_, std::io::Error>(TlsConnection(tls)),
                Err(_) => continue,
            }
        }
    };
    let service = AgentApiServer::new(FakeAgentApi(state.clone()));
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    ServerHandle {
        state,
        address,
        task,
    }
}

/// A running agent.
struct AgentHandle {
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl AgentHandle {
    async fn stop(mut self) -> Result<(), AgentError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("agent stops")
            .expect("agent task")
    }
}

fn config(dir: &Path, server: &ServerHandle, join_token: Option<&str>) -> AgentConfig {
    let bundle_path = dir.join("bootstrap.pem");
    std::fs::write(&bundle_path, server.state.bundle.to_pem()).expect("write bundle");
    let raw = RawConfig {
        trust_domain: Some("example.org".into()),
        server_address: Some(server.address.clone()),
        data_dir: Some(dir.join("data")),
        socket_path: Some(dir.join("public").join("api.sock")),
        join_token: join_token.map(str::to_owned),
        trust_bundle_path: Some(bundle_path),
        ..RawConfig::default()
    };
    let mut config = AgentConfig::resolve(raw).expect("config");
    config.retry.initial_delay = Duration::from_millis(50);
    config.retry.max_delay = Duration::from_millis(200);
    config.svid_wait_timeout = Duration::from_secs(5);
    config
}

fn start_agent(config: AgentConfig) -> AgentHandle {
    let socket = config.socket_path.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::run(config, async {
        let _ = stopped.await;
    }));
    AgentHandle {
        socket,
        stop: Some(stop),
        task,
    }
}

async fn workload_client(socket: &Path) -> SpiffeWorkloadApiClient<Channel> {
    let socket = socket.to_path_buf();
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = Endpoint::from_static("http://workload-api")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect to the Workload API");
    SpiffeWorkloadApiClient::new(channel)
}

fn with_header<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(SECURITY_HEADER, "true".parse().expect("ASCII metadata"));
    request
}

/// Builds an entry that matches this test process by its effective UID.
fn entry_for_this_process(path: &str) -> RegistrationEntry {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("effective UID")
        .to_owned();
    testing::entry(path, &[&format!("unix:uid:{uid}")])
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn agent_attests_syncs_and_serves_svids() {
    let workload = entry_for_this_process("/workload");
    let server = start_server(
        "/tessera/server",
        vec![workload.clone()],
        Duration::from_secs(3600),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(config(dir.path(), &server, Some(JOIN_TOKEN)));
    let mut client = workload_client(&agent.socket).await;

    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("FetchX509SVID")
        .into_inner();
    let first = stream.message().await.expect("message").expect("first");
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, "spiffe://example.org/workload");
    assert_eq!(server.state.attestations.load(Ordering::SeqCst), 1);

    // The agent stored its SVID (key mode 0600) and the bundle.
    use std::os::unix::fs::PermissionsExt;
    let svid_file = dir.path().join("data").join("agent_svid.pem");
    let mode = std::fs::metadata(&svid_file)
        .expect("agent SVID file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.path().join("data").join("bundle.json").exists());

    // A new entry streamed by the server reaches the open stream.
    let mut second = entry_for_this_process("/second");
    second.created_at = workload.created_at + 1;
    server
        .state
        .entries
        .lock()
        .expect("entries lock")
        .push(second.clone());
    let _ = server.state.updates.send(SyncEntriesResponse {
        revision: 2,
        upserted: vec![types::Entry::from(&second)],
        complete: true,
        ..SyncEntriesResponse::default()
    });
    let update = stream.message().await.expect("message").expect("update");
    let ids: Vec<&str> = update.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "spiffe://example.org/workload",
            "spiffe://example.org/second"
        ]
    );

    // JWT-SVIDs come from the server and validate against the synced bundle.
    let jwt = client
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: "spiffe://example.org/workload".into(),
        }))
        .await
        .expect("FetchJWTSVID")
        .into_inner();
    let validated = client
        .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
            audience: "db".into(),
            svid: jwt.svids[0].svid.clone(),
        }))
        .await
        .expect("ValidateJWTSVID")
        .into_inner();
    assert_eq!(validated.spiffe_id, "spiffe://example.org/workload");

    drop(stream);
    drop(client);
    agent.stop().await.expect("clean stop");
    assert!(!dir.path().join("public").join("api.sock").exists());
}

#[tokio::test]
async fn unknown_federated_key_id_reaches_server() {
    let peer = TrustDomain::new("peer.org").expect("td");
    let mut workload = entry_for_this_process("/workload");
    workload.federates_with = vec![peer.clone()];
    let server = start_server("/tessera/server", vec![workload], Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(config(dir.path(), &server, Some(JOIN_TOKEN)));
    let mut client = workload_client(&agent.socket).await;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("FetchX509SVID")
        .into_inner();
    stream.message().await.expect("message").expect("first");

    // The peer's bundle reaches the agent. The token's signing key is one
    // that the peer added later, so its key ID is not in that bundle.
    let peer_ca = TestCa::new(&peer);
    let _ = server.state.updates.send(SyncEntriesResponse {
        revision: 2,
        federated_bundles: vec![bundle_message(&peer_ca.bundle())],
        complete: true,
        ..SyncEntriesResponse::default()
    });
    let rotated = TestCa::new(&peer);
    let token = rotated.jwt_svid_with_key_id(
        &SpiffeId::parse("spiffe://peer.org/api").expect("SPIFFE ID"),
        &["db".to_owned()],
        "rotated-key",
    );
    let mut message = String::new();
    for _ in 0..100 {
        let status = client
            .validate_jwtsvid(with_header(ValidateJwtsvidRequest {
                audience: "db".into(),
                svid: token.clone(),
            }))
            .await
            .expect_err("the key ID is unknown");
        message = status.message().to_owned();
        if message.contains("rotated-key") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(message.contains("requested a refresh"), "{message}");

    let state = server.state.clone();
    wait_for("a RequestBundleRefresh call", || {
        !state
            .refresh_requests
            .lock()
            .expect("refresh requests lock")
            .is_empty()
    })
    .await;
    let requests = state
        .refresh_requests
        .lock()
        .expect("refresh requests lock")
        .clone();
    assert_eq!(requests, ["peer.org"]);
    drop(stream);
    drop(client);
    agent.stop().await.expect("clean stop");
}

#[tokio::test]
async fn restarted_agent_resumes_without_join_token() {
    let workload = entry_for_this_process("/workload");
    let server = start_server("/tessera/server", vec![workload], Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let agent = start_agent(config(dir.path(), &server, Some(JOIN_TOKEN)));
    let mut client = workload_client(&agent.socket).await;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("FetchX509SVID")
        .into_inner();
    stream.message().await.expect("message").expect("first");
    drop(stream);
    drop(client);
    agent.stop().await.expect("clean stop");

    let agent = start_agent(config(dir.path(), &server, None));
    let mut client = workload_client(&agent.socket).await;
    let mut stream = client
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .expect("FetchX509SVID after restart")
        .into_inner();
    stream.message().await.expect("message").expect("first");
    assert_eq!(server.state.attestations.load(Ordering::SeqCst), 1);
    drop(stream);
    drop(client);
    agent.stop().await.expect("clean stop");
}

#[tokio::test]
async fn missing_join_token_fails_first_start() {
    let server = start_server("/tessera/server", Vec::new(), Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(config(dir.path(), &server, None));
    let result = tokio::time::timeout(Duration::from_secs(10), agent.task)
        .await
        .expect("agent stops")
        .expect("agent task");
    assert!(
        matches!(result, Err(AgentError::MissingJoinToken { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn server_with_wrong_id_is_rejected() {
    let server = start_server("/not-the-server", Vec::new(), Duration::from_secs(3600)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(config(dir.path(), &server, Some(JOIN_TOKEN)));

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.state.attestations.load(Ordering::SeqCst), 0);
    assert!(!dir.path().join("data").join("agent_svid.pem").exists());
    assert!(!agent.task.is_finished(), "the agent keeps retrying");
    agent.stop().await.expect("clean stop while attesting");
}

#[tokio::test]
async fn agent_svid_renews_at_half_life() {
    let server = start_server("/tessera/server", Vec::new(), Duration::from_secs(4)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(config(dir.path(), &server, Some(JOIN_TOKEN)));

    let svid_file = dir.path().join("data").join("agent_svid.pem");
    wait_for("attestation", || svid_file.exists()).await;
    let first = std::fs::read(&svid_file).expect("agent SVID");
    let state = server.state.clone();
    wait_for("a renewal", || state.renewals.load(Ordering::SeqCst) >= 1).await;
    wait_for("the renewed SVID on disk", || {
        std::fs::read(&svid_file).is_ok_and(|now| now != first)
    })
    .await;
    agent.stop().await.expect("clean stop");
}

#[tokio::test]
async fn banned_agent_stops_with_error() {
    let server = start_server("/tessera/server", Vec::new(), Duration::from_secs(2)).await;
    server.state.reject_renewal.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(config(dir.path(), &server, Some(JOIN_TOKEN)));

    let result = tokio::time::timeout(Duration::from_secs(10), agent.task)
        .await
        .expect("agent stops")
        .expect("agent task");
    assert!(
        matches!(
            result,
            Err(AgentError::Server {
                operation: "RenewAgent",
                code: Code::PermissionDenied,
                ..
            })
        ),
        "{result:?}"
    );
}
