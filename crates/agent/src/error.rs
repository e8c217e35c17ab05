//! The agent's error type.

use std::path::PathBuf;

use tessera_spiffe::{BundleError, KeyError, SpiffeId, X509SvidError};

use crate::config::ConfigError;

/// Error returned by the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A file or directory operation failed.
    #[error("failed to {action} {path}")]
    Io {
        /// The operation that failed, such as `write`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A stored file contains data the agent cannot use.
    #[error("invalid stored file {path}: {reason}; delete it to attest the node again")]
    InvalidStoredFile {
        /// The file.
        path: PathBuf,
        /// The problem found in the file.
        reason: String,
    },

    /// No usable agent SVID is stored and no join token is configured.
    #[error(
        "no valid agent SVID in {data_dir} and no join_token configured; \
         generate one with `tessera token generate` and set join_token"
    )]
    MissingJoinToken {
        /// The data directory that was searched.
        data_dir: PathBuf,
    },

    /// The first attestation has no way to authenticate the server.
    #[error(
        "no trust_bundle_path configured for the first attestation; set it to the \
         server's bundle.pem, or set insecure_bootstrap = true for tests"
    )]
    MissingBootstrapBundle,

    /// The bootstrap trust bundle cannot be used.
    #[error("invalid trust bundle {path}")]
    InvalidBootstrapBundle {
        /// The PEM file.
        path: PathBuf,
        /// Why it was rejected.
        #[source]
        source: BundleError,
    },

    /// A private key could not be generated or parsed.
    #[error("agent key operation failed")]
    Key(#[from] KeyError),

    /// The TLS client could not be configured.
    #[error("invalid TLS client configuration")]
    Tls(#[from] rustls::Error),

    /// A call to the server failed with a final status.
    #[error("{operation} failed: {code:?}: {message}")]
    Server {
        /// The RPC, such as `AttestAgent`.
        operation: &'static str,
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },

    /// The server's response is malformed or violates the agent API.
    #[error("invalid {operation} response from the server: {reason}")]
    InvalidResponse {
        /// The RPC, such as `AttestAgent`.
        operation: &'static str,
        /// The problem found in the response.
        reason: String,
    },

    /// An X.509-SVID from the server or the store is invalid.
    #[error("invalid X.509-SVID for {spiffe_id}")]
    InvalidSvid {
        /// The SPIFFE ID, or the agent's expected one when unknown.
        spiffe_id: String,
        /// Why it was rejected.
        #[source]
        source: X509SvidError,
    },

    /// The agent SVID belongs to another trust domain than configured.
    #[error("agent SVID {spiffe_id} is not in the configured trust domain {trust_domain}")]
    ForeignAgentId {
        /// The agent SVID's SPIFFE ID.
        spiffe_id: SpiffeId,
        /// The configured trust domain name.
        trust_domain: String,
    },

    /// Renewal failed until the agent SVID expired.
    #[error(
        "agent SVID {spiffe_id} expired before it could be renewed; set a new join_token \
         to attest the node again"
    )]
    AgentSvidExpired {
        /// The agent's SPIFFE ID.
        spiffe_id: SpiffeId,
    },

    /// A long-running task of the agent stopped.
    #[error("agent task {task} stopped unexpectedly")]
    TaskStopped {
        /// The task, such as `entry sync`.
        task: &'static str,
    },

    /// The Workload API server failed.
    #[error("Workload API server failed")]
    WorkloadServer(#[source] tonic::transport::Error),

    /// The process that connected to the Workload API has exited, so its
    /// PID may now name another process.
    #[error("workload process {pid} has exited")]
    WorkloadExited {
        /// The PID the process had.
        pid: i32,
    },

    /// A property of a workload process could not be read from `/proc`.
    #[error("failed to read {path}")]
    ProcRead {
        /// The file under `/proc`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// Builds [`AgentError::Server`] from a gRPC status.
    pub(crate) fn server(operation: &'static str, status: &tonic::Status) -> Self {
        Self::Server {
            operation,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// Builds [`AgentError::InvalidResponse`].
    pub(crate) fn invalid_response(operation: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidResponse {
            operation,
            reason: reason.into(),
        }
    }
}
