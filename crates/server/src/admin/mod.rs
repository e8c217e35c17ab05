//! The admin API, which the CLI calls to manage entries, join tokens,
//! agents, federation and CA authorities. It is served with tonic on a Unix socket that only the server's
//! user (and root) may use.

mod agents;
mod authorities;
mod entries;
pub(crate) mod socket;
mod status;
mod unix_selectors;

use std::sync::Arc;

use tessera_proto::admin::admin_api_server::{AdminApi, AdminApiServer};
use tessera_proto::admin::{
    ActivateAuthorityRequest, ActivateAuthorityResponse, ListAuthoritiesRequest,
    ListAuthoritiesResponse, PrepareAuthorityRequest, PrepareAuthorityResponse,
};
use tessera_proto::admin::{
    BanAgentRequest, BanAgentResponse, CreateEntriesRequest, CreateEntriesResponse,
    CreateJoinTokenRequest, DeleteEntriesRequest, DeleteEntriesResponse, EvictAgentRequest,
    EvictAgentResponse, GetAgentRequest, GetBundleRequest, GetEntryRequest, HealthRequest,
    HealthResponse, JoinToken, ListAgentsRequest, ListAgentsResponse, ListEntriesRequest,
    ListEntriesResponse, UpdateEntryRequest,
};
use tessera_proto::admin::{
    CreateFederationRequest, DeleteFederationRequest, DeleteFederationResponse,
    FederationRelationship, GetFederationRequest, ListFederationsRequest, ListFederationsResponse,
    RefreshFederationRequest, SetFederatedBundleRequest, UpdateFederationRequest,
};
use tessera_proto::types;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::rotation::RotationHandle;
use crate::state::ServerState;
use crate::status::run_to_completion;
use crate::{ServerError, federation};
use socket::{AdminSocket, is_allowed_peer};

/// The AdminApi service.
struct AdminService {
    state: Arc<ServerState>,
    rotation: RotationHandle,
}

/// Serves the admin API on `socket` until the server shuts down.
pub(crate) async fn serve(
    state: Arc<ServerState>,
    socket: AdminSocket,
    rotation: RotationHandle,
) -> Result<(), ServerError> {
    let owner_uid = socket.owner_uid;
    let incoming = UnixListenerStream::new(socket.listener).filter(move |conn| match conn {
        Ok(stream) => is_allowed_peer(stream, owner_uid),
        Err(_) => true,
    });
    let stopped = state.stopped();
    let service = AdminApiServer::new(AdminService {
        state: Arc::clone(&state),
        rotation,
    });

    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stopped)
        .await
        .map_err(ServerError::AdminServe)
}

#[tonic::async_trait]
impl AdminApi for AdminService {
    async fn create_entries(
        &self,
        request: Request<CreateEntriesRequest>,
    ) -> Result<Response<CreateEntriesResponse>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { entries::create_entries(&state, request.into_inner()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn get_entry(
        &self,
        request: Request<GetEntryRequest>,
    ) -> Result<Response<types::Entry>, Status> {
        // Reads run to completion too: they apply other servers' changes
        // first, which must not stop halfway.
        let state = Arc::clone(&self.state);
        let work = async move { entries::get_entry(&state, &request.get_ref().id).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { entries::list_entries(&state, request.get_ref()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn update_entry(
        &self,
        request: Request<UpdateEntryRequest>,
    ) -> Result<Response<types::Entry>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { entries::update_entry(&state, request.into_inner().entry).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn delete_entries(
        &self,
        request: Request<DeleteEntriesRequest>,
    ) -> Result<Response<DeleteEntriesResponse>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { entries::delete_entries(&state, request.into_inner()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn create_join_token(
        &self,
        request: Request<CreateJoinTokenRequest>,
    ) -> Result<Response<JoinToken>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { agents::create_join_token(&state, request.get_ref()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn list_agents(
        &self,
        _request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let agents = agents::list_agents(&self.state).await?;
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<types::Agent>, Status> {
        agents::get_agent(&self.state, &request.get_ref().spiffe_id)
            .await
            .map(Response::new)
    }

    async fn evict_agent(
        &self,
        request: Request<EvictAgentRequest>,
    ) -> Result<Response<EvictAgentResponse>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { agents::evict_agent(&state, &request.get_ref().spiffe_id).await };
        run_to_completion(work).await?;
        Ok(Response::new(EvictAgentResponse {}))
    }

    async fn ban_agent(
        &self,
        request: Request<BanAgentRequest>,
    ) -> Result<Response<BanAgentResponse>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { agents::ban_agent(&state, &request.get_ref().spiffe_id).await };
        run_to_completion(work).await?;
        Ok(Response::new(BanAgentResponse {}))
    }

    async fn get_bundle(
        &self,
        _request: Request<GetBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        Ok(Response::new(status::get_bundle(&self.state)))
    }

    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(status::health(&self.state).await))
    }

    async fn create_federation(
        &self,
        request: Request<CreateFederationRequest>,
    ) -> Result<Response<FederationRelationship>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { federation::admin::create(&state, request.into_inner()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn update_federation(
        &self,
        request: Request<UpdateFederationRequest>,
    ) -> Result<Response<FederationRelationship>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { federation::admin::update(&state, request.into_inner()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn delete_federation(
        &self,
        request: Request<DeleteFederationRequest>,
    ) -> Result<Response<DeleteFederationResponse>, Status> {
        let state = Arc::clone(&self.state);
        let work =
            async move { federation::admin::delete(&state, &request.get_ref().trust_domain).await };
        run_to_completion(work).await?;
        Ok(Response::new(DeleteFederationResponse {}))
    }

    async fn list_federations(
        &self,
        _request: Request<ListFederationsRequest>,
    ) -> Result<Response<ListFederationsResponse>, Status> {
        let relationships = federation::admin::list(&self.state);
        Ok(Response::new(ListFederationsResponse { relationships }))
    }

    async fn get_federation(
        &self,
        request: Request<GetFederationRequest>,
    ) -> Result<Response<FederationRelationship>, Status> {
        federation::admin::get(&self.state, &request.get_ref().trust_domain).map(Response::new)
    }

    async fn refresh_federation(
        &self,
        request: Request<RefreshFederationRequest>,
    ) -> Result<Response<FederationRelationship>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move {
            federation::admin::refresh(&state, &request.get_ref().trust_domain).await
        };
        run_to_completion(work).await.map(Response::new)
    }

    async fn set_federated_bundle(
        &self,
        request: Request<SetFederatedBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let state = Arc::clone(&self.state);
        let work = async move { federation::admin::set_bundle(&state, request.into_inner()).await };
        run_to_completion(work).await.map(Response::new)
    }

    async fn list_authorities(
        &self,
        _request: Request<ListAuthoritiesRequest>,
    ) -> Result<Response<ListAuthoritiesResponse>, Status> {
        Ok(Response::new(authorities::list(&self.state)))
    }

    // The rotation task applies and publishes manual steps, so a client
    // that disconnects cannot leave one half done.
    async fn prepare_authority(
        &self,
        _request: Request<PrepareAuthorityRequest>,
    ) -> Result<Response<PrepareAuthorityResponse>, Status> {
        authorities::prepare(&self.state, &self.rotation)
            .await
            .map(Response::new)
    }

    async fn activate_authority(
        &self,
        _request: Request<ActivateAuthorityRequest>,
    ) -> Result<Response<ActivateAuthorityResponse>, Status> {
        authorities::activate(&self.state, &self.rotation)
            .await
            .map(Response::new)
    }
}
