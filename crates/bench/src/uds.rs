//! A tonic channel over a Unix socket. The endpoint URI is a placeholder
//! that is never dialled; every connection opens the socket instead.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Connects a gRPC channel to the server listening on the Unix socket at
/// `path`. The channel uses one HTTP/2 connection.
///
/// # Errors
///
/// Fails when the socket cannot be opened or the HTTP/2 handshake fails.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    Endpoint::from_static("http://unix.socket")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}
