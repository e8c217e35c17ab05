//! The error type of the server daemon.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tessera_ca::CaError;
use tessera_store::StoreError;

/// Error returned when the server cannot start or stops on a failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be created or used.
    #[error("failed to prepare the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The datastore could not be opened at startup.
    #[error("failed to open the datastore")]
    OpenStore(#[source] StoreError),
    /// The datastore belongs to another trust domain.
    #[error(
        "the datastore holds the trust bundle of {stored} but no federation relationship \
         with it, so it belongs to trust domain {stored}, not the configured {configured}; \
         check trust_domain and [datastore] url, because servers of different trust \
         domains cannot share a database"
    )]
    ForeignDatastore {
        /// The server's configured trust domain.
        configured: tessera_spiffe::TrustDomain,
        /// The trust domain whose bundle the datastore holds.
        stored: tessera_spiffe::TrustDomain,
    },
    /// The datastore failed.
    #[error("datastore error")]
    Store(#[source] StoreError),
    /// The CA failed to load, rotate or sign.
    #[error("certificate authority error")]
    Ca(#[source] CaError),
    /// Another server already listens on the admin socket.
    #[error(
        "another server is listening on the admin socket {path}; stop it or set a different admin_socket"
    )]
    AdminSocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The admin socket path exists and is not a socket.
    #[error("{path} exists and is not a socket; remove it or set a different admin_socket")]
    AdminSocketNotSocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding or preparing the admin socket failed.
    #[error("failed to bind the admin socket {path}")]
    AdminSocket {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Binding the agent API address failed.
    #[error("failed to bind the agent API address {address}; is another process using it?")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing `bundle.pem` failed.
    #[error("failed to write the trust bundle to {path}")]
    WriteBundle {
        /// The bundle file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the agent API address file failed.
    #[error("failed to write the agent API address to {path}")]
    WriteAddress {
        /// The address file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Signing the server's own SVID failed.
    #[error("failed to sign the server SVID: {0}")]
    ServerSvid(String),
    /// The TLS configuration was rejected.
    #[error("invalid TLS configuration")]
    Tls(#[source] rustls::Error),
    /// The admin API server failed.
    #[error("the admin API server failed")]
    AdminServe(#[source] tonic::transport::Error),
    /// The agent API server failed.
    #[error("the agent API server failed")]
    AgentServe(#[source] tonic::transport::Error),
    /// The bundle endpoint or OIDC discovery endpoint failed to start.
    #[error("federation endpoint error")]
    Federation(#[source] crate::federation::FederationError),
    /// A background task panicked or was cancelled.
    #[error("a server task failed: {0}")]
    Task(String),
}

/// Formats an error with its chain of sources, `outer: inner: root`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
