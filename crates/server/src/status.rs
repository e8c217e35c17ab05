//! gRPC status helpers shared by the admin and agent APIs: internal errors
//! are logged in full and returned without detail, and per-item results
//! carry a status as the `tessera.types.v1.Status` message.

use std::fmt::Display;

use tessera_proto::types;
use tonic::{Code, Status};

/// Logs `error` and returns an Internal status that names only `action`,
/// so that no datastore or key detail leaks to the caller.
pub(crate) fn internal(action: &str, error: impl Display) -> Status {
    tracing::error!(error = %error, "failed to {action}");
    Status::internal(format!("failed to {action}; see the server log"))
}

/// Logs a rejected request at warn level and returns the status.
pub(crate) fn rejected(code: Code, message: impl Into<String>) -> Status {
    let message = message.into();
    tracing::warn!(code = ?code, "rejected request: {message}");
    Status::new(code, message)
}

/// Returns the protobuf status for a successful item.
pub(crate) fn ok_item() -> types::Status {
    types::Status {
        code: Code::Ok as i32,
        message: String::new(),
    }
}

/// Returns the protobuf status for a failed item.
pub(crate) fn item_status(status: &Status) -> types::Status {
    types::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

/// Returns an error when `len` items exceed the per-request `max`.
pub(crate) fn check_batch_size(items: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(rejected(
            Code::InvalidArgument,
            format!("too many {items} in one request: {len}, the maximum is {max}"),
        ));
    }
    Ok(())
}

/// Maps a store error to a status: conditions the caller can act on keep
/// the store's message, the rest become Internal.
pub(crate) fn store_status(action: &str, error: tessera_store::StoreError) -> Status {
    use tessera_store::StoreError as E;
    match &error {
        E::AlreadyExists { .. } | E::EntryIdInUse { .. } | E::TokenAlreadyExists => {
            rejected(Code::AlreadyExists, error.to_string())
        }
        E::Conflict { .. } => rejected(Code::Aborted, error.to_string()),
        E::NotFound { .. } => rejected(Code::NotFound, error.to_string()),
        E::InvalidEntry { .. } => rejected(Code::InvalidArgument, error.to_string()),
        _ => internal(action, crate::error_chain(&error)),
    }
}

/// Maps a CA error to a status: an error in the request (such as a public
/// key the CA cannot use) is InvalidArgument, the rest become Internal.
pub(crate) fn ca_status(action: &str, error: tessera_ca::CaError) -> Status {
    if error.is_invalid_request() {
        return rejected(Code::InvalidArgument, error.to_string());
    }
    internal(action, crate::error_chain(&error))
}

/// Runs `work` in its own task and waits for it. A client that disconnects
/// drops the handler's future, so a write run this way is never abandoned
/// between the store, the cache and the streams.
pub(crate) async fn run_to_completion<T, F>(work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Status>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| internal("complete the request", e))?
}
