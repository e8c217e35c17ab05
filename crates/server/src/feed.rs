//! Change-feed tailing for several servers on one database: a task polls
//! `Store::changes_since` and applies the writes of other servers (entries,
//! agents, the trust bundle, federation relationships and federated
//! bundles) to this server's memory and sync streams, as the admin write
//! path does for local writes. It also prunes changes older than an hour.
//! Admin reads call [`catch_up`] first, so they see every write that any
//! server acknowledged before the read, without waiting for the next poll.
//!
//! Polling, not PostgreSQL LISTEN/NOTIFY: the store runs on sqlx's `Any`
//! pool, which has no listener, and one indexed `revision > ?` query every
//! [`POLL_INTERVAL`] serves all three backends the same way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tessera_registration::EntryId;
use tessera_spiffe::{SpiffeId, TrustDomain};
use tessera_store::{Change, ChangeKind, Revision, StoreError};
use tracing::Instrument;

use crate::ServerError;
use crate::cache::EntryCache;
use crate::federation::follow;
use crate::shared_bundle;
use crate::state::{ServerState, SyncEvent};

/// Time between two polls of the change feed. A write on another server
/// reaches this server's sync streams after about this long.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(150);
/// Maximum changes read per poll.
const BATCH: u32 = 500;
/// Age after which a change may be pruned. A server that stops polling
/// for longer reloads its whole cache when it resumes.
const RETENTION: Duration = Duration::from_secs(3600);
/// Time between two prunes.
const PRUNE_INTERVAL: Duration = Duration::from_secs(300);
/// Wait after a failed poll before the next one.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Time the feed may fail before this server closes its sync streams, so
/// that agents move to a server that still follows other servers' writes.
/// Shorter outages only delay propagation.
const CLOSE_STREAMS_AFTER: Duration = Duration::from_secs(3);

/// Tails the change feed until shutdown.
pub(crate) async fn run(state: Arc<ServerState>) -> Result<(), ServerError> {
    let span = tracing::info_span!("change_feed", trust_domain = %state.trust_domain());
    async move {
        let stopped = state.stopped();
        tokio::pin!(stopped);
        let mut outage: Option<Outage> = None;
        loop {
            // A poll can wait the pool's whole acquire timeout before it
            // fails, so an outage is measured from the start of the poll.
            let started = Instant::now();
            let polled = {
                let mut tail = state.feed.lock().await;
                tail.poll(&state).await.map(|()| tail.applied)
            };
            let wait = match polled {
                Ok(applied) => {
                    if outage.take().is_some() {
                        tracing::info!(revision = applied, "change feed reachable again");
                    }
                    POLL_INTERVAL
                }
                Err(e) => {
                    let current = outage.get_or_insert_with(|| {
                        tracing::warn!(error = %crate::error_chain(&e), "failed to read the change feed; retrying");
                        Outage::new(started)
                    });
                    current.close_streams_when_due(&state);
                    RETRY_AFTER
                }
            };
            tokio::select! {
                () = &mut stopped => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Applies every change in the feed that this server has not applied yet.
/// A cache read after it returns every write that any server sharing the
/// database acknowledged before this call, because writers commit their
/// changes in revision order.
///
/// Callers run it in a task of their own: dropped halfway, it would leave
/// cache changes that no sync stream was notified of.
///
/// # Errors
///
/// Returns the store's error when the feed cannot be read. Changes applied
/// before the error stay applied.
pub(crate) async fn catch_up(state: &Arc<ServerState>) -> Result<(), StoreError> {
    state.feed.lock().await.read_changes(state).await
}

/// A run of failed polls.
struct Outage {
    since: Instant,
    streams_closed: bool,
}

impl Outage {
    fn new(since: Instant) -> Self {
        Self {
            since,
            streams_closed: false,
        }
    }

    /// Closes every sync stream once the outage has lasted
    /// [`CLOSE_STREAMS_AFTER`]. New streams fail while the datastore is
    /// unreachable, because opening one reads the agent's record.
    fn close_streams_when_due(&mut self, state: &ServerState) {
        if self.streams_closed || self.since.elapsed() < CLOSE_STREAMS_AFTER {
            return;
        }
        tracing::warn!(
            outage = ?self.since.elapsed(),
            "closing every sync stream so that agents move to another server"
        );
        state.notify(SyncEvent::DatastoreUnreachable);
        self.streams_closed = true;
    }
}

/// The reader's position in the feed and its pruning schedule. The server
/// state keeps it behind a mutex that the polling task and [`catch_up`]
/// share, so a change is never applied by both at once.
pub(crate) struct Tail {
    /// Highest revision applied. Changes up to it are never read again.
    applied: Revision,
    /// `(when, applied)` samples taken every [`PRUNE_INTERVAL`]: a revision
    /// sampled more than [`RETENTION`] ago is old enough to prune below.
    samples: VecDeque<(Instant, Revision)>,
    last_sample: Option<Instant>,
}

impl Tail {
    /// Starts reading after revision `applied`.
    pub(crate) fn new(applied: Revision) -> Self {
        Self {
            applied,
            samples: VecDeque::new(),
            last_sample: None,
        }
    }

    /// Reads and applies every change after `applied`, then prunes when due.
    async fn poll(&mut self, state: &Arc<ServerState>) -> Result<(), StoreError> {
        self.read_changes(state).await?;
        self.prune_if_due(state).await
    }

    /// Reads and applies every change after `applied`.
    async fn read_changes(&mut self, state: &Arc<ServerState>) -> Result<(), StoreError> {
        loop {
            let changes = match state.store.changes_since(self.applied, BATCH).await {
                Ok(changes) => changes,
                Err(StoreError::ChangesPruned { pruned_through, .. }) => {
                    tracing::warn!(
                        applied = self.applied,
                        pruned_through,
                        "the change feed was pruned past this server's position; reloading every entry"
                    );
                    self.applied = reload(state).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let full = changes.len() == BATCH as usize;
            let Some(last) = changes.last().map(|change| change.revision) else {
                return Ok(());
            };
            apply(state, &changes).await?;
            self.applied = last;
            state.advance_revision(last);
            if !full {
                return Ok(());
            }
        }
    }

    async fn prune_if_due(&mut self, state: &ServerState) -> Result<(), StoreError> {
        let now = Instant::now();
        if self
            .last_sample
            .is_some_and(|at| now.duration_since(at) < PRUNE_INTERVAL)
        {
            return Ok(());
        }
        self.last_sample = Some(now);
        self.samples.push_back((now, self.applied));

        let mut horizon = None;
        while let Some(&(at, revision)) = self.samples.front() {
            if now.duration_since(at) < RETENTION {
                break;
            }
            horizon = Some(revision);
            self.samples.pop_front();
        }
        if let Some(before) = horizon {
            let deleted = state.store.prune_changes(before).await?;
            tracing::debug!(before, deleted, "pruned old changes");
        }
        Ok(())
    }
}

/// Applies a batch of changes in revision order and notifies the sync
/// streams once per kind of event. When reading an entry fails halfway,
/// the streams still hear of the entries applied before, because applying
/// them again later finds the cache unchanged and notifies no one.
async fn apply(state: &Arc<ServerState>, changes: &[Change]) -> Result<(), StoreError> {
    let mut entries_changed = false;
    let mut bundle_changed = false;
    for change in changes {
        match change.kind {
            ChangeKind::EntryUpserted | ChangeKind::EntryDeleted => {
                match apply_entry(state, change).await {
                    Ok(changed) => entries_changed |= changed,
                    Err(e) => {
                        if entries_changed {
                            state.notify(SyncEvent::EntriesChanged);
                        }
                        return Err(e);
                    }
                }
            }
            ChangeKind::AgentUpdated | ChangeKind::AgentDeleted => {
                // The stream of that agent, if open here, re-reads the
                // record: it ends when the agent was banned or deleted.
                match change.object_id.parse::<SpiffeId>() {
                    Ok(agent_id) => state.notify(SyncEvent::AgentUpdated(agent_id)),
                    Err(e) => skip_invalid(change, &e),
                }
            }
            ChangeKind::BundleUpdated | ChangeKind::BundleDeleted
                if change.object_id == state.trust_domain().name() =>
            {
                bundle_changed = true;
            }
            ChangeKind::BundleUpdated | ChangeKind::BundleDeleted => {
                match TrustDomain::new(&change.object_id) {
                    Ok(td) => follow::apply_bundle(state, &td).await?,
                    Err(e) => skip_invalid(change, &e),
                }
            }
            ChangeKind::FederationUpdated | ChangeKind::FederationDeleted => {
                match TrustDomain::new(&change.object_id) {
                    Ok(td) => follow::apply_relationship(state, &td).await?,
                    Err(e) => skip_invalid(change, &e),
                }
            }
        }
    }
    if entries_changed {
        state.notify(SyncEvent::EntriesChanged);
    }
    if bundle_changed {
        refresh_bundle(state).await?;
    }
    Ok(())
}

/// Merges this server's authorities into the stored trust bundle, which
/// another server changed, and publishes the union when it differs from
/// the published bundle.
async fn refresh_bundle(state: &ServerState) -> Result<(), StoreError> {
    let (union, revision) =
        shared_bundle::merge_into_store(&state.store, &state.ca.bundle(), SystemTime::now())
            .await?;
    if let Some(revision) = revision {
        state.advance_revision(revision);
    }
    if shared_bundle::same_authorities(&state.bundle.load().bundle, &union) {
        return Ok(());
    }
    tracing::info!(
        x509_authorities = union.x509_authorities().len(),
        jwt_authorities = union.jwt_authorities().len(),
        "trust bundle changed by another server"
    );
    if let Err(e) = state.install_bundle(union).await {
        tracing::error!(error = %crate::error_chain(&e), "failed to publish the trust bundle");
    }
    Ok(())
}

/// Re-reads the entry a change names and brings the cache in line with the
/// store. Returns whether the cache changed: it does not for this
/// server's own writes, which the admin path applied already.
async fn apply_entry(state: &ServerState, change: &Change) -> Result<bool, StoreError> {
    let id = match EntryId::parse(&change.object_id) {
        Ok(id) => id,
        Err(e) => {
            skip_invalid(change, &e);
            return Ok(false);
        }
    };

    // The admin write lock keeps a local write from landing between the
    // read below and the cache update, which would bring back stale data.
    let _write = state.write_lock.lock().await;
    let stored = state.store.get_entry(&id).await?;
    let mut cache = state.cache_mut();
    let changed = match stored {
        Some(entry) => {
            let same = cache
                .get(&id)
                .is_some_and(|cached| cached.revision == entry.revision);
            if !same {
                cache.upsert(entry, change.revision);
            }
            !same
        }
        None => cache.remove(&id, change.revision).is_some(),
    };
    if changed {
        tracing::debug!(entry_id = %id, revision = change.revision, kind = %change.kind, "applied a change from another server");
    }
    Ok(changed)
}

/// Replaces the entry cache with the store's entries, applies the stored
/// federation state, and returns the revision the entries were read at.
async fn reload(state: &Arc<ServerState>) -> Result<Revision, StoreError> {
    let write = state.write_lock.lock().await;
    // The revision is read first: changes after it are read again later,
    // and applying them twice is harmless.
    let revision = state.store.latest_revision().await?;
    let entries = state.store.list_entries().await?;
    let count = entries.len();
    *state.cache_mut() = EntryCache::new(entries, revision);
    state.advance_revision(revision);
    tracing::info!(entries = count, revision, "reloaded the entry cache");

    state.notify(SyncEvent::EntriesChanged);
    for agent in state.store.list_agents().await? {
        state.notify(SyncEvent::AgentUpdated(agent.spiffe_id));
    }
    drop(write);

    follow::apply_all(state).await?;
    Ok(revision)
}

fn skip_invalid(change: &Change, error: &dyn std::fmt::Display) {
    tracing::warn!(
        revision = change.revision,
        kind = %change.kind,
        object_id = %change.object_id,
        error = %error,
        "skipped a change with an invalid object ID"
    );
}
