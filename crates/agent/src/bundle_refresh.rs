//! Early refreshes of federated bundles. A workload may present a JWT-SVID
//! of a federated trust domain whose key ID is missing from the agent's
//! copy of that bundle. The peer may have added the key after the server's
//! last fetch, so the agent requests a fetch of the bundle from the server.
//! The request runs in its own task and never delays the workload's call,
//! and at most one request per trust domain leaves the agent every 30
//! seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tessera_proto::agent::RequestBundleRefreshRequest;
use tessera_spiffe::TrustDomain;
use tokio::time::Instant;
use tonic::Status;

use crate::node::client_tls::ServerChannel;

/// Minimum interval between two requests for the same trust domain. The
/// server applies the same limit to all agents together.
pub const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(30);

/// Deadline of one `RequestBundleRefresh` call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's response to a refresh request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The server started a fetch of the bundle.
    Started,
    /// The server skipped the request because an early refresh of the
    /// trust domain started recently.
    Skipped {
        /// Time until the server accepts the next request.
        retry_after: Duration,
    },
}

/// Sends refresh requests: the server's `RequestBundleRefresh`, or a fake
/// in tests.
pub trait BundleRefreshClient: Send + Sync + 'static {
    /// Requests a fetch of the bundle of `trust_domain` from the server.
    fn request_bundle_refresh<'a>(
        &'a self,
        trust_domain: &'a TrustDomain,
    ) -> BoxFuture<'a, Result<RefreshOutcome, Status>>;
}

impl BundleRefreshClient for ServerChannel {
    fn request_bundle_refresh<'a>(
        &'a self,
        trust_domain: &'a TrustDomain,
    ) -> BoxFuture<'a, Result<RefreshOutcome, Status>> {
        Box::pin(async move {
            let mut request = tonic::Request::new(RequestBundleRefreshRequest {
                trust_domain: trust_domain.to_string(),
            });
            request.set_timeout(REQUEST_TIMEOUT);
            let response = self
                .client()
                .request_bundle_refresh(request)
                .await?
                .into_inner();
            if response.started {
                return Ok(RefreshOutcome::Started);
            }
            Ok(RefreshOutcome::Skipped {
                retry_after: Duration::from_secs(u64::from(response.retry_after_seconds)),
            })
        })
    }
}

/// Sends refresh requests in the background, at most one per trust domain
/// every [`MIN_REQUEST_INTERVAL`].
pub struct BundleRefresher {
    client: Arc<dyn BundleRefreshClient>,
    /// Time of the last request per trust domain, pruned of times older
    /// than the interval on each request.
    last_requests: Mutex<HashMap<TrustDomain, Instant>>,
}

impl BundleRefresher {
    /// Creates a refresher that sends requests through `client`.
    pub fn new(client: Arc<dyn BundleRefreshClient>) -> Self {
        Self {
            client,
            last_requests: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a task that requests a refresh of the bundle of
    /// `trust_domain` from the server, unless a request for it was sent
    /// less than [`MIN_REQUEST_INTERVAL`] before `now`. Returns whether it
    /// started one. Must be called within a Tokio runtime.
    pub fn request(&self, trust_domain: &TrustDomain, now: Instant) -> bool {
        if !self.claim_slot(trust_domain, now) {
            tracing::debug!(%trust_domain, "skipped a refresh request for a federated bundle: one was sent less than 30 s ago");
            return false;
        }

        tracing::info!(%trust_domain, "requesting an early refresh of a federated bundle from the server");
        let client = Arc::clone(&self.client);
        let trust_domain = trust_domain.clone();
        tokio::spawn(async move {
            match client.request_bundle_refresh(&trust_domain).await {
                Ok(RefreshOutcome::Started) => {
                    tracing::debug!(%trust_domain, "the server started a refresh of the federated bundle");
                }
                Ok(RefreshOutcome::Skipped { retry_after }) => {
                    tracing::debug!(%trust_domain, ?retry_after, "the server skipped the refresh: one started recently");
                }
                Err(status) => {
                    tracing::warn!(%trust_domain, code = ?status.code(), message = status.message(), "the refresh request for a federated bundle failed");
                }
            }
        });
        true
    }

    /// Records a request for `trust_domain` at `now` and returns true,
    /// or returns false when the last one was too recent.
    fn claim_slot(&self, trust_domain: &TrustDomain, now: Instant) -> bool {
        // Entries are single timestamps, so a poisoned lock holds no
        // partial state.
        let mut last_requests = self
            .last_requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let recent = |at: &Instant| now.saturating_duration_since(*at) < MIN_REQUEST_INTERVAL;
        if last_requests.get(trust_domain).is_some_and(recent) {
            return false;
        }
        last_requests.retain(|_, at| recent(at));
        last_requests.insert(trust_domain.clone(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    /// Sends each requested trust domain to a channel.
    struct RecordingClient(mpsc::UnboundedSender<TrustDomain>);

    impl BundleRefreshClient for RecordingClient {
        fn request_bundle_refresh<'a>(
            &'a self,
            trust_domain: &'a TrustDomain,
        ) -> BoxFuture<'a, Result<RefreshOutcome, Status>> {
            let _ = self.0.send(trust_domain.clone());
            Box::pin(async { Ok(RefreshOutcome::Started) })
        }
    }

    fn td(name: &str) -> TrustDomain {
        TrustDomain::new(name).expect("trust domain")
    }

    #[tokio::test]
    async fn request_limited_per_trust_domain() {
        let (sender, mut sent) = mpsc::unbounded_channel();
        let refresher = BundleRefresher::new(Arc::new(RecordingClient(sender)));
        let start = Instant::now();

        let first = refresher.request(&td("b.org"), start);
        let again = refresher.request(&td("b.org"), start + Duration::from_secs(29));
        let other = refresher.request(&td("c.org"), start + Duration::from_secs(29));
        let after_limit = refresher.request(&td("b.org"), start + MIN_REQUEST_INTERVAL);

        assert!(first, "first request for b.org");
        assert!(!again, "second request for b.org within the interval");
        assert!(other, "first request for c.org");
        assert!(after_limit, "request for b.org after the interval");
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(sent.recv().await.expect("a request reaches the client"));
        }
        received.sort_by_key(ToString::to_string);
        assert_eq!(received, [td("b.org"), td("b.org"), td("c.org")]);
    }
}
