//! The agent API: what agents ask of the server, gRPC over mTLS on TCP.
//! AttestAgent needs no client certificate; every other call is made by an
//! attested, non-banned agent identified by its SVID.

mod attest;
mod bundle_refresh;
pub(crate) mod identity;
mod svid;
mod sync;
mod tls;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_proto::agent::agent_api_server::{AgentApi, AgentApiServer};
use tessera_proto::agent::{
    AttestAgentRequest, AttestAgentResponse, BatchNewX509SvidRequest, BatchNewX509SvidResponse,
    NewJwtSvidRequest, NewJwtSvidResponse, RenewAgentRequest, RenewAgentResponse,
    RequestBundleRefreshRequest, RequestBundleRefreshResponse, SyncEntriesRequest,
    SyncEntriesResponse,
};
use tessera_store::AttestedAgent;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::ServerError;
use crate::ids;
use crate::state::ServerState;
use crate::status::{rejected, run_to_completion, store_status};
use identity::ServerIdentity;
use tls::{PeerInfo, PeerSvid};

/// Interval of HTTP/2 pings on idle connections, so that streams of agents
/// that vanished without closing the connection end.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Time to wait for a ping reply before closing the connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the agent API on `listener` until the server shuts down.
pub(crate) async fn serve(
    state: Arc<ServerState>,
    identity: Arc<ServerIdentity>,
    listener: TcpListener,
) -> Result<(), ServerError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = tls::server_config(provider, identity, Arc::clone(&state.bundle))?;
    let incoming = tls::accept(
        listener,
        TlsAcceptor::from(tls),
        Arc::clone(&state.bundle),
        state.stopped(),
    );
    let stopped = state.stopped();
    let service = AgentApiServer::new(AgentService { state });

    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stopped)
        .await
        .map_err(ServerError::AgentServe)
}

/// The AgentApi service.
struct AgentService {
    state: Arc<ServerState>,
}

#[tonic::async_trait]
impl AgentApi for AgentService {
    async fn attest_agent(
        &self,
        request: Request<AttestAgentRequest>,
    ) -> Result<Response<AttestAgentResponse>, Status> {
        let remote_addr = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|info| info.remote_addr);
        let state = Arc::clone(&self.state);
        let work =
            async move { attest::attest_agent(&state, remote_addr, request.into_inner()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn renew_agent(
        &self,
        request: Request<RenewAgentRequest>,
    ) -> Result<Response<RenewAgentResponse>, Status> {
        let peer = peer_svid(&request)?;
        let state = Arc::clone(&self.state);
        let work = async move { attest::renew_agent(&state, &peer, request.into_inner()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn batch_new_x509_svid(
        &self,
        request: Request<BatchNewX509SvidRequest>,
    ) -> Result<Response<BatchNewX509SvidResponse>, Status> {
        let peer = peer_svid(&request)?;
        let agent = authorize_agent(&self.state, &peer).await?;
        svid::batch_new_x509_svid(&self.state, &agent, request.into_inner()).map(Response::new)
    }

    async fn new_jwt_svid(
        &self,
        request: Request<NewJwtSvidRequest>,
    ) -> Result<Response<NewJwtSvidResponse>, Status> {
        let peer = peer_svid(&request)?;
        let agent = authorize_agent(&self.state, &peer).await?;
        svid::new_jwt_svid(&self.state, &agent, request.into_inner()).map(Response::new)
    }

    type SyncEntriesStream = ReceiverStream<Result<SyncEntriesResponse, Status>>;

    async fn sync_entries(
        &self,
        request: Request<SyncEntriesRequest>,
    ) -> Result<Response<Self::SyncEntriesStream>, Status> {
        let peer = peer_svid(&request)?;
        let agent = authorize_agent(&self.state, &peer).await?;
        Ok(Response::new(sync::start(
            Arc::clone(&self.state),
            agent,
            peer.not_after,
        )))
    }

    async fn request_bundle_refresh(
        &self,
        request: Request<RequestBundleRefreshRequest>,
    ) -> Result<Response<RequestBundleRefreshResponse>, Status> {
        let peer = peer_svid(&request)?;
        let agent = authorize_agent(&self.state, &peer).await?;
        bundle_refresh::request_bundle_refresh(&self.state, &agent, request.into_inner())
            .map(Response::new)
    }
}

/// Returns the caller's SVID, checked at the handshake and still unexpired.
fn peer_svid<T>(request: &Request<T>) -> Result<PeerSvid, Status> {
    let svid = request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|info| info.svid.clone())
        .ok_or_else(|| {
            rejected(
                Code::Unauthenticated,
                "this call needs the agent SVID as TLS client certificate",
            )
        })?;
    if svid.not_after <= SystemTime::now() {
        return Err(rejected(
            Code::Unauthenticated,
            format!(
                "the SVID of {} expired at {}; reconnect with a renewed SVID",
                svid.spiffe_id,
                humantime::format_rfc3339_seconds(svid.not_after)
            ),
        ));
    }
    Ok(svid)
}

/// Returns the caller's agent record, which must exist and not be banned.
async fn authorize_agent(state: &ServerState, peer: &PeerSvid) -> Result<AttestedAgent, Status> {
    let id = &peer.spiffe_id;
    if !ids::is_agent_id(state.trust_domain(), id) {
        return Err(rejected(
            Code::PermissionDenied,
            format!("{id} is not an agent ID"),
        ));
    }
    match state.store.get_agent(id).await {
        Ok(Some(agent)) if agent.banned => Err(rejected(
            Code::PermissionDenied,
            format!("agent {id} is banned"),
        )),
        Ok(Some(agent)) => Ok(agent),
        Ok(None) => Err(rejected(
            Code::PermissionDenied,
            format!("agent {id} is not attested: it was evicted or never attested; attest again"),
        )),
        Err(e) => Err(store_status("read the agent record", e)),
    }
}

/// Facts read from a leaf certificate that the server records.
pub(crate) struct LeafFacts {
    /// Lowercase hex serial number.
    pub serial: String,
    /// The notAfter time.
    pub not_after: SystemTime,
}

impl LeafFacts {
    /// Parses the serial number and notAfter time of a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("failed to parse the certificate: {e}"))?;
        let not_after = u64::try_from(cert.validity().not_after.timestamp())
            .map_err(|_| "the certificate expires before 1970".to_owned())?;
        Ok(Self {
            serial: hex::encode(cert.raw_serial()),
            not_after: UNIX_EPOCH + Duration::from_secs(not_after),
        })
    }

    /// Returns the notAfter time as Unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        crate::bundle::unix_seconds(self.not_after)
    }
}
