//! A client of the server's admin API: join tokens and entries.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tessera_bench::uds;
use tessera_proto::admin::admin_api_client::AdminApiClient;
use tessera_proto::admin::{
    CreateEntriesRequest, CreateJoinTokenRequest, DeleteEntriesRequest, HealthRequest,
    HealthResponse, JoinToken,
};
use tessera_proto::types::{Entry, Selector};
use tonic::transport::Channel;

/// Entries sent in one CreateEntries request.
pub const ENTRIES_PER_REQUEST: usize = 500;

/// An admin API client on one connection.
#[derive(Clone)]
pub struct Admin {
    client: AdminApiClient<Channel>,
}

impl Admin {
    /// Connects to the admin socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self> {
        let channel = uds::connect(path)
            .await
            .with_context(|| format!("connecting to the admin socket {}", path.display()))?;
        // A page of entries may exceed tonic's 4 MiB default.
        let client = AdminApiClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(Self { client })
    }

    /// Calls Health.
    pub async fn health(&mut self) -> Result<HealthResponse> {
        Ok(self.client.health(HealthRequest {}).await?.into_inner())
    }

    /// Creates a join token with the server's default lifetime.
    pub async fn join_token(&mut self) -> Result<JoinToken> {
        let request = CreateJoinTokenRequest {
            ttl: 0,
            agent_alias: String::new(),
        };
        let token = self
            .client
            .create_join_token(request)
            .await
            .context("CreateJoinToken failed")?
            .into_inner();
        if token.agent_id.is_empty() {
            bail!("CreateJoinToken returned no agent ID");
        }
        Ok(token)
    }

    /// Creates `entries` in requests of at most [`ENTRIES_PER_REQUEST`],
    /// and returns the stored entries in the same order.
    pub async fn create_entries(&mut self, entries: Vec<Entry>) -> Result<Vec<Entry>> {
        let mut created = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(ENTRIES_PER_REQUEST) {
            let request = CreateEntriesRequest {
                entries: chunk.to_vec(),
            };
            let response = self
                .client
                .create_entries(request)
                .await
                .context("CreateEntries failed")?
                .into_inner();
            if response.results.len() != chunk.len() {
                bail!(
                    "CreateEntries returned {} results for {} entries",
                    response.results.len(),
                    chunk.len()
                );
            }
            for (result, requested) in response.results.into_iter().zip(chunk) {
                let code = result.status.as_ref().map_or(0, |status| status.code);
                if code != 0 {
                    let message = result.status.map(|status| status.message);
                    bail!(
                        "creating entry {} failed with code {code}: {}",
                        requested.spiffe_id,
                        message.unwrap_or_default()
                    );
                }
                let entry = result
                    .entry
                    .with_context(|| format!("no stored entry for {}", requested.spiffe_id))?;
                created.push(entry);
            }
        }
        Ok(created)
    }

    /// Deletes the entries with these IDs.
    pub async fn delete_entries(&mut self, ids: Vec<String>) -> Result<()> {
        let response = self
            .client
            .delete_entries(DeleteEntriesRequest { ids })
            .await
            .context("DeleteEntries failed")?
            .into_inner();
        for result in response.results {
            let code = result.status.as_ref().map_or(0, |status| status.code);
            if code != 0 {
                bail!("deleting entry {} failed with code {code}", result.id);
            }
        }
        Ok(())
    }
}

/// Builds an entry to create: `spiffe_id` under `parent_id`, granted to workloads
/// with all of `selectors` (each `type:value`).
pub fn entry(spiffe_id: &str, parent_id: &str, selectors: &[String]) -> Entry {
    Entry {
        spiffe_id: spiffe_id.to_owned(),
        parent_id: parent_id.to_owned(),
        selectors: selectors
            .iter()
            .map(|selector| {
                let (kind, value) = selector.split_once(':').unwrap_or((selector, ""));
                Selector {
                    r#type: kind.to_owned(),
                    value: value.to_owned(),
                }
            })
            .collect(),
        ..Entry::default()
    }
}

/// Returns the selector that the agent's Unix attestor gives this process.
pub fn own_uid_selector() -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .context("reading /proc/self to find this process's user ID")?
        .uid();
    Ok(format!("unix:uid:{uid}"))
}

/// A selector no process on this machine has, for entries that the agent
/// stores but that match none of the bench's workloads.
pub fn unmatched_selector(index: usize) -> String {
    format!("unix:uid:{}", 3_000_000_000u64 + index as u64)
}
