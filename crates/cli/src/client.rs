//! Clients of the two gRPC APIs the CLI calls: the server's admin API and
//! the agent's SPIFFE Workload API, both over Unix sockets.

pub mod admin;
pub mod unix;
pub mod workload;

use std::fmt;

use tonic::{Code, Status};

/// A gRPC call that the peer rejected with an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The action that failed, such as `get entry 1234`.
    pub action: String,
    /// The gRPC status code.
    pub code: Code,
    /// The peer's message.
    pub message: String,
    /// Advice for the user, when the status code suggests one.
    pub hint: Option<&'static str>,
}

impl RpcError {
    /// Wraps `status` with the action that failed.
    pub fn new(action: impl Into<String>, status: &Status) -> Self {
        // Unimplemented means the socket serves another API, such as an
        // admin command pointed at the agent's Workload API socket.
        let hint = (status.code() == Code::Unimplemented).then_some(
            "the socket does not serve this API; check that --admin-socket names the \
             server's admin socket and SPIFFE_ENDPOINT_SOCKET the agent's Workload API socket",
        );
        Self {
            action: action.into(),
            code: status.code(),
            message: status.message().to_owned(),
            hint,
        }
    }

    /// Adds advice for the user to the message.
    pub fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = if self.message.is_empty() {
            self.code.description()
        } else {
            &self.message
        };
        write!(
            f,
            "failed to {}: {} ({:?})",
            self.action, message, self.code
        )?;
        if let Some(hint) = self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcError {}

/// Tells whether `err` is an [`RpcError`] with the gRPC code `code`.
pub fn is_rpc_code(err: &anyhow::Error, code: Code) -> bool {
    err.downcast_ref::<RpcError>()
        .is_some_and(|rpc| rpc.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_display_cases() {
        let not_found = RpcError::new("get entry x", &Status::not_found("entry x not found"));
        assert_eq!(
            not_found.to_string(),
            "failed to get entry x: entry x not found (NotFound)"
        );

        let empty = RpcError::new("list agents", &Status::unavailable(""));
        assert_eq!(
            empty.to_string(),
            format!(
                "failed to list agents: {} (Unavailable)",
                Code::Unavailable.description()
            )
        );

        let hinted = not_found.with_hint("run tessera entry list");
        assert!(
            hinted
                .to_string()
                .ends_with("(NotFound); run tessera entry list")
        );
    }

    #[test]
    fn unimplemented_error_names_socket() {
        let error = RpcError::new("list entries", &Status::unimplemented(""));
        let message = error.to_string();
        assert!(message.contains("--admin-socket"), "{message}");
    }

    #[test]
    fn is_rpc_code_matches_only_rpc_errors() {
        let aborted: anyhow::Error = RpcError::new("update entry x", &Status::aborted("")).into();
        assert!(is_rpc_code(&aborted, Code::Aborted));
        assert!(!is_rpc_code(&aborted, Code::NotFound));
        assert!(!is_rpc_code(&anyhow::anyhow!("plain"), Code::Aborted));
    }
}
