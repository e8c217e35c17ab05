//! Client of the server's admin API on its Unix socket. Each call returns
//! an [`RpcError`] naming the action when the server rejects it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tessera_proto::admin::admin_api_client::AdminApiClient;
use tessera_proto::admin::{
    ActivateAuthorityRequest, ActivateAuthorityResponse, Authority, ListAuthoritiesRequest,
    PrepareAuthorityRequest,
};
use tessera_proto::admin::{
    BanAgentRequest, CreateEntriesRequest, CreateEntriesResponse, CreateJoinTokenRequest,
    DeleteEntriesRequest, DeleteEntriesResponse, EvictAgentRequest, GetAgentRequest,
    GetBundleRequest, GetEntryRequest, HealthRequest, HealthResponse, JoinToken, ListAgentsRequest,
    ListEntriesRequest, ListEntriesResponse, UpdateEntryRequest,
};
use tessera_proto::types::{Agent, Bundle, Entry};
use tonic::transport::Channel;

use super::RpcError;
use super::unix;

/// Time allowed for one admin call, after the connection is open.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound on pages fetched by [`AdminClient::list_all_entries`], so a
/// server that keeps returning a page token cannot loop the CLI forever.
const MAX_PAGES: usize = 100_000;

/// A connection to the server's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    api: AdminApiClient<Channel>,
}

impl AdminClient {
    /// Connects to the admin socket at `socket`.
    pub async fn connect(socket: &Path) -> Result<Self> {
        let channel = unix::connect(socket).await.with_context(|| {
            format!(
                "failed to connect to the admin socket {}; check that the server is running \
                 and that --admin-socket (or TESSERA_ADMIN_SOCKET) names its admin_socket",
                socket.display()
            )
        })?;
        Ok(Self {
            api: AdminApiClient::new(channel),
        })
    }

    /// Creates entries. The response contains one result per entry, in request order.
    pub async fn create_entries(&mut self, entries: Vec<Entry>) -> Result<CreateEntriesResponse> {
        let count = entries.len();
        let request = timed(CreateEntriesRequest { entries });
        let response = self.api.create_entries(request).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new(format!("create {count} entries"), &status).into())
    }

    /// Fetches one entry.
    pub async fn get_entry(&mut self, id: &str) -> Result<Entry> {
        let request = timed(GetEntryRequest { id: id.to_owned() });
        let response = self.api.get_entry(request).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new(format!("get entry {id}"), &status).into())
    }

    /// Fetches one page of entries.
    pub async fn list_entries(
        &mut self,
        request: ListEntriesRequest,
    ) -> Result<ListEntriesResponse> {
        let response = self.api.list_entries(timed(request)).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new("list entries", &status).into())
    }

    /// Fetches every page of entries that match `filter`.
    pub async fn list_all_entries(&mut self, filter: ListEntriesRequest) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let request = ListEntriesRequest {
                page_token: page_token.clone(),
                ..filter.clone()
            };
            let page = self.list_entries(request).await?;
            entries.extend(page.entries);
            if page.next_page_token.is_empty() {
                return Ok(entries);
            }
            if page.next_page_token == page_token {
                anyhow::bail!(
                    "failed to list entries: the server returned the same page token twice"
                );
            }
            page_token = page.next_page_token;
        }
        anyhow::bail!("failed to list entries: the server returned more than {MAX_PAGES} pages")
    }

    /// Replaces an entry's fields; fails with `Aborted` when the entry's
    /// revision is no longer the stored one.
    pub async fn update_entry(&mut self, entry: Entry) -> Result<Entry> {
        let id = entry.id.clone();
        let request = timed(UpdateEntryRequest { entry: Some(entry) });
        let response = self.api.update_entry(request).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new(format!("update entry {id}"), &status).into())
    }

    /// Deletes entries. The response contains one result per ID.
    pub async fn delete_entries(&mut self, ids: Vec<String>) -> Result<DeleteEntriesResponse> {
        let count = ids.len();
        let request = timed(DeleteEntriesRequest { ids });
        let response = self.api.delete_entries(request).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new(format!("delete {count} entries"), &status).into())
    }

    /// Creates a join token valid for `ttl_seconds` (0: the server default).
    pub async fn create_join_token(&mut self, ttl_seconds: i32) -> Result<JoinToken> {
        let request = timed(CreateJoinTokenRequest {
            ttl: ttl_seconds,
            agent_alias: String::new(),
        });
        let response = self.api.create_join_token(request).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new("create a join token", &status).into())
    }

    /// Lists attested agents.
    pub async fn list_agents(&mut self) -> Result<Vec<Agent>> {
        let response = self.api.list_agents(timed(ListAgentsRequest {})).await;
        response
            .map(|response| response.into_inner().agents)
            .map_err(|status| RpcError::new("list agents", &status).into())
    }

    /// Fetches one agent.
    pub async fn get_agent(&mut self, spiffe_id: &str) -> Result<Agent> {
        let request = timed(GetAgentRequest {
            spiffe_id: spiffe_id.to_owned(),
        });
        let response = self.api.get_agent(request).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new(format!("get agent {spiffe_id}"), &status).into())
    }

    /// Deletes an agent's record.
    pub async fn evict_agent(&mut self, spiffe_id: &str) -> Result<()> {
        let request = timed(EvictAgentRequest {
            spiffe_id: spiffe_id.to_owned(),
        });
        let response = self.api.evict_agent(request).await;
        response
            .map(|_| ())
            .map_err(|status| RpcError::new(format!("evict agent {spiffe_id}"), &status).into())
    }

    /// Bans an agent.
    pub async fn ban_agent(&mut self, spiffe_id: &str) -> Result<()> {
        let request = timed(BanAgentRequest {
            spiffe_id: spiffe_id.to_owned(),
        });
        let response = self.api.ban_agent(request).await;
        response
            .map(|_| ())
            .map_err(|status| RpcError::new(format!("ban agent {spiffe_id}"), &status).into())
    }

    /// Fetches the server's own trust bundle.
    pub async fn get_bundle(&mut self) -> Result<Bundle> {
        let response = self.api.get_bundle(timed(GetBundleRequest {})).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new("get the bundle", &status).into())
    }

    /// Lists the server's CA authorities, oldest first.
    pub async fn list_authorities(&mut self) -> Result<Vec<Authority>> {
        let request = timed(ListAuthoritiesRequest {});
        let response = self.api.list_authorities(request).await;
        response
            .map(|response| response.into_inner().authorities)
            .map_err(|status| RpcError::new("list CA authorities", &status).into())
    }

    /// Prepares the next CA authority and returns it.
    pub async fn prepare_authority(&mut self) -> Result<Authority> {
        let request = timed(PrepareAuthorityRequest {});
        let response = self.api.prepare_authority(request).await;
        let prepared = response
            .map_err(|status| RpcError::new("prepare a CA authority", &status))?
            .into_inner()
            .prepared;
        prepared.context("the server did not return the prepared authority")
    }

    /// Activates the prepared CA authority.
    pub async fn activate_authority(&mut self) -> Result<ActivateAuthorityResponse> {
        let request = timed(ActivateAuthorityRequest {});
        let response = self.api.activate_authority(request).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new("activate the prepared CA authority", &status).into())
    }

    /// Asks the server for its health.
    pub async fn health(&mut self) -> Result<HealthResponse> {
        let response = self.api.health(timed(HealthRequest {})).await;
        response
            .map(tonic::Response::into_inner)
            .map_err(|status| RpcError::new("check the server's health", &status).into())
    }
}

/// Wraps a message in a request that times out after [`CALL_TIMEOUT`].
fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}
