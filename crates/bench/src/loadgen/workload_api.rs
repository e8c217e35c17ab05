//! A Workload API client: every request carries the
//! `workload.spiffe.io: true` header that the specification requires.

use std::path::Path;

use anyhow::{Context, Result};
use tessera_bench::uds;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::Request;
use tonic::transport::Channel;

/// A Workload API client on its own connection.
pub type WorkloadClient = SpiffeWorkloadApiClient<Channel>;

/// Connects a Workload API client to the agent socket at `path`.
pub async fn connect(path: &Path) -> Result<WorkloadClient> {
    let channel = uds::connect(path)
        .await
        .with_context(|| format!("connecting to the Workload API at {}", path.display()))?;
    Ok(SpiffeWorkloadApiClient::new(channel).max_decoding_message_size(64 << 20))
}

/// Wraps `message` in a request with the Workload API header.
pub fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}
