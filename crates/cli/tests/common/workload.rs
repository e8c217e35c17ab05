//! Workload API access over a Unix socket with the raw generated client,
//! for tests that need gRPC status codes or to omit the security header.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects a client to the Unix socket at `path`.
pub async fn client(path: &Path) -> SpiffeWorkloadApiClient<Channel> {
    try_client(path)
        .await
        .expect("connect to the Workload API socket")
}

/// Connects a client to the Unix socket at `path`, returning the error
/// instead of panicking.
pub async fn try_client(
    path: &Path,
) -> Result<SpiffeWorkloadApiClient<Channel>, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    // The URI is a placeholder: the connector below always dials the socket.
    let channel = Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// Wraps `message` in a request that carries `workload.spiffe.io: true`.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().expect("valid ASCII"));
    request
}
