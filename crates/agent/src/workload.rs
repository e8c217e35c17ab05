//! The SPIFFE Workload API on a Unix socket: binding the socket, capturing
//! each connection's peer credentials, and serving the gRPC service.

pub mod attestor;
pub mod authority;
pub mod peer;
pub mod response;
pub mod service;
mod struct_value;

use std::fs::{self, DirBuilder};
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use futures::Stream;
use tessera_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio::net::UnixListener;

use crate::error::AgentError;
use crate::workload::peer::PeerStream;
use crate::workload::service::WorkloadApi;

/// Mode of the socket file. Any local process may connect, because a
/// workload has no credentials before it gets its first SVID: workload
/// attestation, not file permissions, decides what each caller receives.
const SOCKET_MODE: u32 = 0o666;

/// Mode of a socket directory the agent creates, so every local user can
/// reach the socket.
const SOCKET_DIR_MODE: u32 = 0o755;

/// Pause after a failed `accept` (such as running out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Binds the Workload API socket at `path`, mode 0666. Creates the parent
/// directory (mode 0755) when it is missing, and replaces a socket file
/// that no process listens on any more.
///
/// # Errors
///
/// Returns [`AgentError::Io`] when the directory cannot be created, when
/// `path` exists and is not a socket, when another process already serves
/// on it, or when binding fails.
pub fn bind_socket(path: &Path) -> Result<UnixListener, AgentError> {
    let io_error = |action: &'static str, source: io::Error| AgentError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(SOCKET_DIR_MODE)
            .create(dir)
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(SOCKET_DIR_MODE)))
            .map_err(|source| AgentError::Io {
                action: "create socket directory",
                path: dir.to_path_buf(),
                source,
            })?;
    }

    remove_stale_socket(path).map_err(|source| io_error("replace socket", source))?;
    let listener = UnixListener::bind(path).map_err(|source| io_error("bind socket", source))?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|source| io_error("set permissions of socket", source))?;
    warn_if_unreachable(path);
    Ok(listener)
}

/// Removes `path` if it is a socket with no listener.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; remove it or choose another socket_path",
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is serving on this socket; stop it or choose another socket_path",
        ));
    }
    fs::remove_file(path)
}

/// Logs a warning when a directory above the socket does not let other
/// users through, so workloads of other users could not connect.
fn warn_if_unreachable(path: &Path) {
    for dir in path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        if let Ok(metadata) = fs::metadata(dir)
            && metadata.permissions().mode() & 0o001 == 0
        {
            tracing::warn!(
                socket = %path.display(),
                directory = %dir.display(),
                "the directory does not let other users reach the Workload API socket"
            );
            return;
        }
    }
}

/// Accepts connections on `listener`, capturing each peer's credentials.
fn accept_connections(listener: UnixListener) -> impl Stream<Item = io::Result<PeerStream>> {
    async_stream::stream! {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => yield Ok(PeerStream::new(stream)),
                Err(error) => {
                    tracing::warn!(%error, "accepting a Workload API connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    }
}

/// Serves the Workload API on `listener` until `shutdown` completes.
///
/// # Errors
///
/// Returns [`AgentError::WorkloadServer`] when the gRPC server fails.
pub async fn serve(
    listener: UnixListener,
    api: WorkloadApi,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    tonic::transport::Server::builder()
        .add_service(SpiffeWorkloadApiServer::new(api))
        .serve_with_incoming_shutdown(accept_connections(listener), shutdown)
        .await
        .map_err(AgentError::WorkloadServer)
}

#[cfg(test)]
mod tests;
