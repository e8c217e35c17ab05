//! The CA rotation task: sleeps until the CA's next rotation step, applies
//! it, and when the bundle changed publishes the new bundle (datastore,
//! `bundle.pem`, sync streams). After an activation it re-signs the server
//! SVID with the new authority.
//!
//! Operators request a prepare or an activation ahead of the schedule
//! through a [`RotationHandle`]. The task applies those steps too, so that
//! every CA change goes through one publication path and the schedule is
//! recomputed from the CA's new state after each of them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tessera_ca::RotationEvent;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::ServerError;
use crate::agent_api::identity::ServerIdentity;
use crate::state::ServerState;

/// Wait before retrying a failed rotation or bundle publication.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Manual steps that may wait for the task at once. Each is a short CA
/// change, and the admin API caller waits for its own.
const REQUEST_BACKLOG: usize = 8;

/// A rotation step that an operator requests ahead of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ManualStep {
    /// Create a new authority in the prepared slot and publish it.
    Prepare,
    /// Make the prepared authority active.
    Activate,
}

/// A failed rotation step.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// The CA rejected or failed the step and kept its previous state.
    #[error("the CA step failed")]
    Ca(#[source] ServerError),
    /// The CA changed, but publishing the change failed. The task retries
    /// the publication after [`RETRY_AFTER`].
    #[error("the CA changed, but publishing the change failed")]
    Publish {
        /// The changes the CA made.
        event: RotationEvent,
        /// The publication error.
        #[source]
        source: ServerError,
    },
    /// The rotation task has stopped, because the server is shutting down.
    #[error("the CA rotation task has stopped")]
    Stopped,
}

/// Sends manual steps to the rotation task.
#[derive(Clone, Debug)]
pub(crate) struct RotationHandle {
    requests: mpsc::Sender<ManualRequest>,
}

impl RotationHandle {
    /// Has the rotation task apply `step` and publish the result, and
    /// returns what the CA changed.
    pub async fn request(&self, step: ManualStep) -> Result<RotationEvent, StepError> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(ManualRequest { step, reply })
            .await
            .map_err(|_| StepError::Stopped)?;
        // A dropped reply means the task stopped before it got to the step.
        outcome.await.map_err(|_| StepError::Stopped)?
    }
}

/// The receiving end of a [`RotationHandle`], consumed by [`run`].
#[derive(Debug)]
pub(crate) struct ManualRequests(mpsc::Receiver<ManualRequest>);

/// Creates the channel through which the admin API requests manual steps.
pub(crate) fn channel() -> (RotationHandle, ManualRequests) {
    let (requests, receiver) = mpsc::channel(REQUEST_BACKLOG);
    (RotationHandle { requests }, ManualRequests(receiver))
}

#[derive(Debug)]
struct ManualRequest {
    step: ManualStep,
    reply: oneshot::Sender<Result<RotationEvent, StepError>>,
}

/// The CA call a step makes.
#[derive(Clone, Copy, Debug)]
enum CaStep {
    /// Whatever the schedule calls for now.
    Scheduled,
    /// A step an operator requested.
    Manual(ManualStep),
}

/// Work a rotation left to do. It stays set until done, so a failed
/// publication is retried even though the CA reports no further change.
#[derive(Default)]
struct Pending {
    /// The bundle changed and is not yet published.
    bundle: bool,
    /// An authority was activated and the server SVID is not yet renewed.
    server_svid: bool,
}

/// Runs scheduled and requested rotation steps until shutdown.
pub(crate) async fn run(
    state: Arc<ServerState>,
    identity: Arc<ServerIdentity>,
    requests: ManualRequests,
) -> Result<(), ServerError> {
    let span = tracing::info_span!("ca_rotation", trust_domain = %state.trust_domain());
    let stopped = state.stopped();
    let mut task = RotationTask {
        state,
        identity,
        pending: Pending::default(),
        retry_at: None,
    };
    let mut requests = requests.0;
    async move {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return Ok(()),
                () = tokio::time::sleep(task.wait()) => task.run_scheduled().await,
                Some(request) = requests.recv() => task.run_manual(request).await,
            }
        }
    }
    .instrument(span)
    .await
}

struct RotationTask {
    state: Arc<ServerState>,
    identity: Arc<ServerIdentity>,
    pending: Pending,
    /// Time of the next try after a failure; `None` follows the CA's schedule.
    retry_at: Option<SystemTime>,
}

impl RotationTask {
    /// Returns how long to sleep before the next scheduled step or retry.
    fn wait(&self) -> Duration {
        let at = self
            .retry_at
            .unwrap_or_else(|| self.state.ca.next_rotation_at());
        at.duration_since(SystemTime::now()).unwrap_or_default()
    }

    async fn run_scheduled(&mut self) {
        self.retry_at = match self.step(CaStep::Scheduled).await {
            Ok(_) => None,
            Err(e) => {
                let error = crate::error_chain(&e);
                tracing::error!(%error, retry_in = ?RETRY_AFTER, "CA rotation failed");
                Some(SystemTime::now() + RETRY_AFTER)
            }
        };
    }

    async fn run_manual(&mut self, request: ManualRequest) {
        tracing::info!(step = ?request.step, "manual CA rotation step requested");
        let outcome = self.step(CaStep::Manual(request.step)).await;
        match &outcome {
            // The CA's next rotation time moved, so the schedule restarts
            // from it.
            Ok(_) => self.retry_at = None,
            // The CA is unchanged, and so is the schedule.
            Err(e @ StepError::Ca(_)) => {
                let error = crate::error_chain(e);
                tracing::warn!(step = ?request.step, %error, "manual CA rotation step failed");
            }
            Err(e) => {
                let error = crate::error_chain(e);
                tracing::error!(step = ?request.step, %error, retry_in = ?RETRY_AFTER, "publishing a manual CA rotation step failed");
                self.retry_at = Some(SystemTime::now() + RETRY_AFTER);
            }
        }

        // An error only means the admin API caller has gone; the step is
        // done either way.
        let _ = request.reply.send(outcome);
    }

    /// Applies `step` to the CA, then publishes what changed.
    async fn step(&mut self, step: CaStep) -> Result<RotationEvent, StepError> {
        let now = SystemTime::now();
        // Preparing a new authority generates keys and writes files, so it
        // runs off the async workers.
        let ca = Arc::clone(&self.state.ca);
        let event = tokio::task::spawn_blocking(move || match step {
            CaStep::Scheduled => ca.rotate(now),
            CaStep::Manual(ManualStep::Prepare) => ca.prepare(now),
            CaStep::Manual(ManualStep::Activate) => ca.activate(now),
        })
        .await
        .map_err(|e| StepError::Ca(ServerError::Task(e.to_string())))?
        .map_err(|e| StepError::Ca(ServerError::Ca(e)))?;

        self.record(&event);
        match self.publish().await {
            Ok(()) => Ok(event),
            Err(source) => Err(StepError::Publish { event, source }),
        }
    }

    fn record(&mut self, event: &RotationEvent) {
        if event.bundle_changed() {
            tracing::info!(created = ?event.created, pruned = ?event.pruned, "trust bundle changed");
            self.pending.bundle = true;
        }
        if let Some(activated) = &event.activated {
            tracing::info!(authority = %activated, "CA authority activated");
            self.pending.server_svid = true;
        }
    }

    async fn publish(&mut self) -> Result<(), ServerError> {
        if self.pending.bundle {
            let bundle = self.state.ca.bundle();
            self.state.publish_bundle(bundle).await?;
            self.pending.bundle = false;
        }
        if self.pending.server_svid {
            self.identity.renew(&self.state, SystemTime::now())?;
            self.pending.server_svid = false;
        }
        Ok(())
    }
}
