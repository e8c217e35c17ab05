//! Client of the SPIFFE Workload API. Every request carries the
//! `workload.spiffe.io: true` metadata that the Workload Endpoint
//! specification requires. Calls that fail with `Unavailable` or
//! `PermissionDenied` are retried with backoff until a
//! deadline, as the specification allows.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tessera_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::RpcError;
use super::unix;

/// Metadata key that every Workload API request must carry.
const SECURITY_HEADER_KEY: &str = "workload.spiffe.io";

/// First wait between retries; it doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

type Interceptor = fn(Request<()>) -> Result<Request<()>, Status>;
type Api = SpiffeWorkloadApiClient<InterceptedService<Channel, Interceptor>>;

/// A connection to the agent's Workload API.
#[derive(Debug, Clone)]
pub struct WorkloadClient {
    api: Api,
    socket: PathBuf,
    retry_timeout: Duration,
}

impl WorkloadClient {
    /// Connects to the Workload API socket at `socket`; calls are retried
    /// for at most `retry_timeout`.
    pub async fn connect(socket: &Path, retry_timeout: Duration) -> Result<Self> {
        let channel = connect_with_retry(socket, retry_timeout)
            .await
            .with_context(|| {
                format!(
                    "failed to connect to the Workload API socket {}; check that the agent is \
                     running and that --socket (or SPIFFE_ENDPOINT_SOCKET) names its socket_path",
                    socket.display()
                )
            })?;
        let interceptor: Interceptor = add_security_header;
        Ok(Self {
            api: SpiffeWorkloadApiClient::with_interceptor(channel, interceptor),
            socket: socket.to_owned(),
            retry_timeout,
        })
    }

    /// Fetches the first X.509-SVID response of the stream.
    pub async fn fetch_x509_svids(&self) -> Result<X509svidResponse> {
        self.call_with_retry("fetch X.509-SVIDs", |mut api| async move {
            let mut stream = api.fetch_x509svid(X509svidRequest {}).await?.into_inner();
            first_message(stream.message().await?)
        })
        .await
    }

    /// Fetches the first X.509 bundles response of the stream.
    pub async fn fetch_x509_bundles(&self) -> Result<X509BundlesResponse> {
        self.call_with_retry("fetch X.509 bundles", |mut api| async move {
            let mut stream = api
                .fetch_x509_bundles(X509BundlesRequest {})
                .await?
                .into_inner();
            first_message(stream.message().await?)
        })
        .await
    }

    /// Fetches the first JWT bundles response of the stream.
    pub async fn fetch_jwt_bundles(&self) -> Result<JwtBundlesResponse> {
        self.call_with_retry("fetch JWT bundles", |mut api| async move {
            let mut stream = api
                .fetch_jwt_bundles(JwtBundlesRequest {})
                .await?
                .into_inner();
            first_message(stream.message().await?)
        })
        .await
    }

    /// Fetches JWT-SVIDs for `audience`, all of the workload's or only the
    /// one with `spiffe_id` when it is not empty.
    pub async fn fetch_jwt_svids(
        &self,
        audience: &[String],
        spiffe_id: &str,
    ) -> Result<JwtsvidResponse> {
        let request = JwtsvidRequest {
            audience: audience.to_vec(),
            spiffe_id: spiffe_id.to_owned(),
        };
        self.call_with_retry("fetch JWT-SVIDs", |mut api| {
            let request = request.clone();
            async move { Ok(api.fetch_jwtsvid(request).await?.into_inner()) }
        })
        .await
    }

    /// Asks the agent to validate a JWT-SVID for `audience`.
    pub async fn validate_jwt_svid(
        &self,
        audience: &str,
        token: &str,
    ) -> Result<ValidateJwtsvidResponse> {
        let request = ValidateJwtsvidRequest {
            audience: audience.to_owned(),
            svid: token.to_owned(),
        };
        self.call_with_retry("validate the JWT-SVID", |mut api| {
            let request = request.clone();
            async move { Ok(api.validate_jwtsvid(request).await?.into_inner()) }
        })
        .await
    }

    /// Runs `call` until it succeeds, fails with a final status, or the
    /// retry deadline passes.
    async fn call_with_retry<T, F, Fut>(&self, action: &str, mut call: F) -> Result<T>
    where
        F: FnMut(Api) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.retry_timeout;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let attempt = tokio::time::timeout_at(deadline, call(self.api.clone())).await;
            let status = match attempt {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(status)) => status,
                Err(_) => bail!(
                    "failed to {action}: no response from the Workload API at {} within {}",
                    self.socket.display(),
                    humantime::format_duration(self.retry_timeout)
                ),
            };

            let retryable = matches!(status.code(), Code::Unavailable | Code::PermissionDenied);
            if !retryable || Instant::now() + backoff >= deadline {
                return Err(rpc_error(action, &status).into());
            }
            tracing::debug!(code = ?status.code(), message = status.message(), "retrying {action}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Opens the socket, retrying for at most `retry_timeout` while it is
/// missing or refuses connections, as it does while the agent starts.
async fn connect_with_retry(socket: &Path, retry_timeout: Duration) -> Result<Channel> {
    let deadline = Instant::now() + retry_timeout;
    let mut backoff = INITIAL_BACKOFF;
    loop {
        match unix::connect(socket).await {
            Ok(channel) => return Ok(channel),
            Err(error) if Instant::now() + backoff < deadline => {
                tracing::debug!(error = %error, "retrying the Workload API connection");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Adds the Workload API security header to a request.
fn add_security_header(mut request: Request<()>) -> Result<Request<()>, Status> {
    request
        .metadata_mut()
        .insert(SECURITY_HEADER_KEY, MetadataValue::from_static("true"));
    Ok(request)
}

/// Turns the end of a stream before its first message into an error.
fn first_message<T>(message: Option<T>) -> Result<T, Status> {
    message.ok_or_else(|| Status::unavailable("the agent closed the stream without a response"))
}

/// Builds the error for a final status, with advice for the codes a user
/// can act on.
fn rpc_error(action: &str, status: &Status) -> RpcError {
    let error = RpcError::new(action, status);
    match status.code() {
        Code::PermissionDenied => error.with_hint(
            "the agent has no identity for this process; check that a registration entry \
             matches it (tessera entry list) and that the entry's parent is this agent",
        ),
        Code::Unavailable => error.with_hint(
            "check that the agent is running and has reached its server at least once; \
             the agent's log shows attestation and sync errors",
        ),
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_header_is_added() {
        let request = add_security_header(Request::new(())).expect("interceptor never fails");
        let value = request.metadata().get(SECURITY_HEADER_KEY);
        assert_eq!(value.and_then(|v| v.to_str().ok()), Some("true"));
    }

    #[test]
    fn permission_denied_error_has_hint() {
        let error = rpc_error(
            "fetch X.509-SVIDs",
            &Status::permission_denied("no identity"),
        );
        let message = error.to_string();
        assert!(
            message.starts_with("failed to fetch X.509-SVIDs: no identity"),
            "{message}"
        );
        assert!(message.contains("registration entry"), "{message}");
    }

    #[test]
    fn invalid_argument_error_has_no_hint() {
        let error = rpc_error(
            "validate the JWT-SVID",
            &Status::invalid_argument("bad token"),
        );
        assert_eq!(error.hint, None);
    }
}
