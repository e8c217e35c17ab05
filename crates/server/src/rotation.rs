//! The CA rotation task: sleeps until the CA's next rotation step, applies
//! it, and when the bundle changed publishes the new bundle (datastore,
//! `bundle.pem`, sync streams). After an activation it re-signs the server
//! SVID with the new authority.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::Instrument;

use crate::ServerError;
use crate::agent_api::identity::ServerIdentity;
use crate::state::ServerState;

/// Wait before retrying a failed rotation or bundle publication.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Work a rotation left to do. It stays set until done, so a failed
/// publication is retried even though the CA reports no further change.
#[derive(Default)]
struct Pending {
    /// The bundle changed and is not yet published.
    bundle: bool,
    /// An authority was activated and the server SVID is not yet renewed.
    server_svid: bool,
}

/// Runs rotation steps until shutdown.
pub(crate) async fn run(
    state: Arc<ServerState>,
    identity: Arc<ServerIdentity>,
) -> Result<(), ServerError> {
    let span = tracing::info_span!("ca_rotation", trust_domain = %state.trust_domain());
    async move {
        let stopped = state.stopped();
        tokio::pin!(stopped);
        let mut pending = Pending::default();
        let mut retry_at: Option<SystemTime> = None;
        loop {
            let at = retry_at.unwrap_or_else(|| state.ca.next_rotation_at());
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                () = &mut stopped => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }

            retry_at = match step(&state, &identity, &mut pending).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?RETRY_AFTER, "CA rotation failed");
                    Some(SystemTime::now() + RETRY_AFTER)
                }
            };
        }
    }
    .instrument(span)
    .await
}

/// Applies the rotation steps due now, then publishes what changed.
async fn step(
    state: &Arc<ServerState>,
    identity: &ServerIdentity,
    pending: &mut Pending,
) -> Result<(), ServerError> {
    let now = SystemTime::now();
    // Preparing a new authority generates keys and writes files, so it runs
    // off the async workers.
    let rotating = Arc::clone(state);
    let event = tokio::task::spawn_blocking(move || rotating.ca.rotate(now))
        .await
        .map_err(|e| ServerError::Task(e.to_string()))?
        .map_err(ServerError::Ca)?;
    if event.bundle_changed() {
        tracing::info!(created = ?event.created, pruned = ?event.pruned, "trust bundle changed");
        pending.bundle = true;
    }
    if let Some(activated) = &event.activated {
        tracing::info!(authority = %activated, "CA authority activated");
        pending.server_svid = true;
    }

    if pending.bundle {
        state.publish_bundle(state.ca.bundle()).await?;
        pending.bundle = false;
    }
    if pending.server_svid {
        identity.renew(state, SystemTime::now())?;
        pending.server_svid = false;
    }
    Ok(())
}
