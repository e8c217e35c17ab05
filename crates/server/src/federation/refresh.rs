//! The refresh task of one federation relationship: it fetches the peer's
//! bundle at the peer's `spiffe_refresh_hint` (clamped), backs off
//! exponentially after failures, and stores and publishes each accepted
//! bundle. A rejected fetch keeps the last good bundle. A [`FetchRequest`]
//! makes the task fetch before its schedule. Every fetch of a peer runs in
//! its task, so a requested fetch replaces the scheduled one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tessera_spiffe::{TrustBundle, TrustDomain};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::check::{Verdict, check_fetched_bundle};
use super::client::{EndpointAuth, fetch, read_web_roots};
use super::{PeerProfile, Relationship};
use crate::state::ServerState;

/// Shortest interval between scheduled fetches, whatever the peer's hint.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(30);
/// Maximum interval between scheduled fetches.
pub(crate) const MAX_REFRESH: Duration = Duration::from_secs(60 * 60);
/// Interval when the peer's bundle has no refresh hint.
pub(crate) const DEFAULT_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Wait after the first failure; it doubles with each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Capacity of the request queue of a refresh task. A request that finds
/// the queue full is dropped: the queued requests already make the task
/// fetch once more.
pub(crate) const REQUEST_QUEUE: usize = 8;

/// A request to the refresh task of a peer to fetch the bundle now.
#[derive(Debug, Default)]
pub(crate) struct FetchRequest {
    /// Receives `()` when the fetch has finished and the peer's status
    /// contains its outcome.
    pub done: Option<oneshot::Sender<()>>,
}

/// Returns the wait before the next scheduled fetch after a success.
pub(crate) fn refresh_interval(hint: Option<Duration>) -> Duration {
    hint.unwrap_or(DEFAULT_REFRESH)
        .clamp(MIN_REFRESH, MAX_REFRESH)
}

/// Returns the wait after `failures` failures in a row (at least 1): it
/// doubles from [`FIRST_BACKOFF`] up to `ceiling`.
pub(crate) fn backoff(failures: u32, ceiling: Duration) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << exponent).min(ceiling)
}

/// Runs the refresh loop of `td` until the task is aborted or every sender
/// of `requests` is dropped. The first fetch starts at once.
pub(crate) async fn run(
    state: Arc<ServerState>,
    td: TrustDomain,
    mut requests: mpsc::Receiver<FetchRequest>,
) {
    let span = tracing::info_span!("federation_refresh", trust_domain = %td);
    async move {
        let mut failures: u32 = 0;
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let wait = fetch_and_schedule(&state, &td, &mut failures).await;
            for done in waiting.drain(..) {
                let _ = done.send(());
            }

            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                request = requests.recv() => {
                    let Some(request) = request else {
                        return;
                    };
                    waiting.extend(request.done);
                    // Requests queued during the last fetch share one fetch.
                    while let Ok(request) = requests.try_recv() {
                        waiting.extend(request.done);
                    }
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// Fetches the bundle of `td` once, logs a failure, records the time of
/// the next scheduled fetch and returns the wait until then.
async fn fetch_and_schedule(state: &ServerState, td: &TrustDomain, failures: &mut u32) -> Duration {
    let wait = match refresh_once(state, td).await {
        Ok(interval) => {
            *failures = 0;
            interval
        }
        Err(e) => {
            *failures = failures.saturating_add(1);
            let ceiling = refresh_interval(current_hint(state, td));
            let wait = backoff(*failures, ceiling);
            if *failures == 1 {
                tracing::warn!(error = %e, retry_in = ?wait, "failed to refresh the federated bundle");
            } else {
                tracing::debug!(error = %e, failures = *failures, retry_in = ?wait, "failed to refresh the federated bundle again");
            }
            wait
        }
    };
    let next = SystemTime::now() + wait;
    state
        .federation
        .update_status(td, |status| status.next_refresh_at = Some(next));
    wait
}

fn current_hint(state: &ServerState, td: &TrustDomain) -> Option<Duration> {
    state.federation.bundle(td).and_then(|b| b.refresh_hint())
}

/// Fetches the bundle of `td` once, records the outcome in the peer's
/// status and returns the wait until the next scheduled fetch.
async fn refresh_once(state: &ServerState, td: &TrustDomain) -> Result<Duration, String> {
    let _serialized = state.federation.lock_fetches(td).await;
    let Some((relationship, _)) = state.federation.peer(td) else {
        return Err(format!("no federation relationship with {td}"));
    };
    let result = fetch_and_apply(state, &relationship).await;
    let now = SystemTime::now();
    state.federation.update_status(td, |status| match &result {
        Ok(_) => {
            status.last_success_at = Some(now);
            status.last_error = None;
        }
        Err(e) => {
            status.last_error = Some(e.clone());
            status.last_error_at = Some(now);
        }
    });
    result
}

async fn fetch_and_apply(
    state: &ServerState,
    relationship: &Relationship,
) -> Result<Duration, String> {
    let td = &relationship.trust_domain;
    let stored = state.federation.bundle(td);
    let auth = match &relationship.profile {
        PeerProfile::HttpsSpiffe { endpoint_id } => {
            let Some(bundle) = stored.as_deref() else {
                return Err(format!(
                    "no bundle of {td} is stored to authenticate its https_spiffe endpoint; \
                     set one with `tessera bundle set --trust-domain {td} FILE` or \
                     `tessera federation update --trust-bundle FILE`"
                ));
            };
            EndpointAuth::Spiffe {
                bundle: bundle.clone(),
                endpoint_id: endpoint_id.clone(),
            }
        }
        PeerProfile::HttpsWeb => {
            let Some(path) = state.config.federation.https_web_ca_file.clone() else {
                return Err(
                    "https_web peers need federation.https_web_ca_file in the server \
                     configuration"
                        .to_owned(),
                );
            };
            let roots = tokio::task::spawn_blocking(move || read_web_roots(&path))
                .await
                .map_err(|e| e.to_string())??;
            EndpointAuth::Web { roots }
        }
    };

    let body = fetch(&relationship.url, auth).await?;
    let bundle = match check_fetched_bundle(td, &body, stored.as_deref())? {
        Verdict::Unchanged(bundle) => return Ok(refresh_interval(bundle.refresh_hint())),
        Verdict::Accept(bundle) => bundle,
    };
    let interval = refresh_interval(bundle.refresh_hint());
    store_bundle(state, bundle).await?;
    Ok(interval)
}

/// Stores a federated bundle and publishes it to the sync streams.
pub(crate) async fn store_bundle(state: &ServerState, bundle: TrustBundle) -> Result<(), String> {
    let td = bundle.trust_domain().clone();
    let revision = state
        .store
        .set_bundle(&td, &bundle.to_jwks())
        .await
        .map_err(|e| {
            format!(
                "failed to store the bundle of {td}: {}",
                crate::error_chain(&e)
            )
        })?;
    state.advance_revision(revision);
    tracing::info!(
        trust_domain = %td,
        sequence = ?bundle.sequence_number(),
        x509_authorities = bundle.x509_authorities().len(),
        jwt_authorities = bundle.jwt_authorities().len(),
        "stored a new federated bundle"
    );
    state.federation.set_bundle(state, &td, Some(bundle));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_interval_clamps_hint() {
        let cases = [
            (None, DEFAULT_REFRESH),
            (Some(Duration::from_secs(1)), MIN_REFRESH),
            (Some(Duration::from_secs(600)), Duration::from_secs(600)),
            (Some(Duration::from_secs(86_400)), MAX_REFRESH),
        ];
        for (hint, expected) in cases {
            assert_eq!(refresh_interval(hint), expected, "hint {hint:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_ceiling() {
        let ceiling = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n, ceiling).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX, ceiling), ceiling);
    }
}
