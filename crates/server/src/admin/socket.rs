//! The admin API's Unix socket: bound with mode 0600, a stale socket file
//! from a stopped server replaced, a live one left alone, and connections
//! from other users dropped.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use crate::ServerError;

/// The bound admin socket.
#[derive(Debug)]
pub(crate) struct AdminSocket {
    /// The listener.
    pub listener: UnixListener,
    /// The socket file, removed at shutdown.
    pub path: PathBuf,
    /// User ID that owns the socket file: the server's effective user.
    pub owner_uid: u32,
}

/// Binds the admin socket at `path`.
///
/// # Errors
///
/// [`ServerError::AdminSocketInUse`] when a server already listens there,
/// [`ServerError::AdminSocketNotSocket`] when `path` is some other file, and
/// [`ServerError::AdminSocket`] for I/O errors.
pub(crate) async fn bind(path: &Path) -> Result<AdminSocket, ServerError> {
    let io_error = |source| ServerError::AdminSocket {
        path: path.to_path_buf(),
        source,
    };
    remove_stale_socket(path).await?;

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_error)?;
    }
    let listener = UnixListener::bind(path).map_err(io_error)?;
    // Restrict the socket before the first accept. A client that connected
    // in between is still dropped by the peer user check in `is_allowed_peer`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_error)?;
    let owner_uid = std::fs::metadata(path).map_err(io_error)?.uid();

    Ok(AdminSocket {
        listener,
        path: path.to_path_buf(),
        owner_uid,
    })
}

/// Removes a socket file that nothing listens on.
async fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    let io_error = |source| ServerError::AdminSocket {
        path: path.to_path_buf(),
        source,
    };
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(e)),
    };
    if !metadata.file_type().is_socket() {
        return Err(ServerError::AdminSocketNotSocket {
            path: path.to_path_buf(),
        });
    }

    match UnixStream::connect(path).await {
        Ok(_) => Err(ServerError::AdminSocketInUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale admin socket");
            std::fs::remove_file(path).map_err(io_error)
        }
        Err(e) => Err(io_error(e)),
    }
}

/// Returns whether a connection's peer may use the admin API: the socket
/// owner or root.
pub(crate) fn is_allowed_peer(stream: &UnixStream, owner_uid: u32) -> bool {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == owner_uid || cred.uid() == 0 => true,
        Ok(cred) => {
            tracing::warn!(
                peer_uid = cred.uid(),
                "rejected admin connection from another user"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "rejected admin connection: failed to read peer credentials");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_sets_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let _socket = bind(&path).await.unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn bind_replaces_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let socket = bind(&path).await.unwrap();
        assert!(UnixStream::connect(&path).await.is_ok());
        drop(socket);
    }

    #[tokio::test]
    async fn bind_live_socket_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let _live = bind(&path).await.unwrap();

        let err = bind(&path).await.unwrap_err();
        assert!(matches!(err, ServerError::AdminSocketInUse { .. }), "{err}");
        assert!(path.exists());
    }

    #[tokio::test]
    async fn bind_regular_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, b"not a socket").unwrap();

        let err = bind(&path).await.unwrap_err();
        assert!(
            matches!(err, ServerError::AdminSocketNotSocket { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    #[tokio::test]
    async fn is_allowed_peer_accepts_own_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let socket = bind(&path).await.unwrap();
        let _client = UnixStream::connect(&path).await.unwrap();
        let (server_side, _) = socket.listener.accept().await.unwrap();

        assert!(is_allowed_peer(&server_side, socket.owner_uid));
        // Root may always connect, so a peer running as root passes either way.
        let peer_is_root = socket.owner_uid == 0;
        assert_eq!(
            is_allowed_peer(&server_side, socket.owner_uid + 1),
            peer_is_root
        );
    }
}
