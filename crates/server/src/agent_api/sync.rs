//! SyncEntries: a stream per agent that sends a snapshot of its authorized
//! entries, then pushes each change as it happens. Every change recomputes
//! the authorized set from the cache and sends the difference to what the
//! agent already has, so entries that stop being authorized arrive as
//! removed. A stream that falls behind the change broadcast starts over
//! with a fresh snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tessera_proto::agent::SyncEntriesResponse;
use tessera_proto::types;
use tessera_registration::{EntryId, RegistrationEntry, SelectorSet};
use tessera_spiffe::SpiffeId;
use tessera_store::AttestedAgent;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use crate::authorized::{AgentView, authorized_entries, next_expiry};
use crate::federation::SentBundles;
use crate::state::{ServerState, SyncEvent, now_unix};

/// Maximum entries per snapshot message. A change larger than this is sent
/// as a new snapshot.
pub(crate) const MAX_ENTRIES_PER_MESSAGE: usize = 1000;
/// Messages buffered per stream before the stream waits for the agent.
const STREAM_BUFFER: usize = 8;

type Sender = mpsc::Sender<Result<SyncEntriesResponse, Status>>;

/// Marker error: the agent disconnected, so the stream's receiver is closed.
struct Disconnected;

/// Reason a stream ended.
enum Ended {
    Disconnected,
    Closed(Status),
}

impl From<Disconnected> for Ended {
    fn from(_: Disconnected) -> Self {
        Self::Disconnected
    }
}

/// Starts the sync stream of `agent`, whose SVID expires at `svid_not_after`.
pub(super) fn start(
    state: Arc<ServerState>,
    agent: AttestedAgent,
    svid_not_after: SystemTime,
) -> ReceiverStream<Result<SyncEntriesResponse, Status>> {
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    // Subscribing before the snapshot is read means no change is missed;
    // one already in the snapshot produces an empty difference.
    let events = state.subscribe();
    let span = tracing::info_span!("sync", agent_id = %agent.spiffe_id);
    let stream = SyncStream {
        node_selectors: agent.selectors.iter().cloned().collect(),
        agent_id: agent.spiffe_id,
        svid_not_after,
        sent: HashMap::new(),
        sent_federated: SentBundles::default(),
        next_expiry: None,
        state,
    };
    tokio::spawn(stream.run(sender, events).instrument(span));
    ReceiverStream::new(receiver)
}

struct SyncStream {
    state: Arc<ServerState>,
    agent_id: SpiffeId,
    node_selectors: SelectorSet,
    svid_not_after: SystemTime,
    /// Entry ID to revision of every entry the agent holds.
    sent: HashMap<EntryId, i64>,
    /// Earliest future `expires_at` among the entries the agent holds.
    next_expiry: Option<i64>,
    /// The federated bundles the agent holds.
    sent_federated: SentBundles,
}

impl SyncStream {
    async fn run(mut self, sender: Sender, mut events: broadcast::Receiver<SyncEvent>) {
        tracing::info!("agent opened the sync stream");
        let ended = match self.send_snapshot(&sender).await {
            Ok(()) => self.follow(&sender, &mut events).await,
            Err(Disconnected) => Ended::Disconnected,
        };
        match ended {
            Ended::Disconnected => tracing::info!("agent closed the sync stream"),
            Ended::Closed(status) => {
                tracing::info!(reason = status.message(), "server closed the sync stream");
                // The agent may be gone already, which needs no handling.
                let _ = sender.send(Err(status)).await;
            }
        }
    }

    async fn follow(
        &mut self,
        sender: &Sender,
        events: &mut broadcast::Receiver<SyncEvent>,
    ) -> Ended {
        let stopped = self.state.stopped();
        tokio::pin!(stopped);
        loop {
            let expiry = sleep_until_unix(self.next_expiry.map(|at| at + 1));
            let svid_expiry = tokio::time::sleep(
                self.svid_not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default(),
            );
            let step = tokio::select! {
                () = &mut stopped => {
                    return Ended::Closed(Status::unavailable("the server is shutting down"));
                }
                () = sender.closed() => return Ended::Disconnected,
                () = svid_expiry => {
                    // Unavailable, not Unauthenticated: the agent is still
                    // trusted and only has to reconnect with its renewed SVID.
                    return Ended::Closed(Status::unavailable(
                        "the agent SVID of this stream expired; reconnect with the renewed SVID",
                    ));
                }
                () = expiry => self.send_changes(sender, None).await.map_err(Ended::from),
                event = events.recv() => self.handle(sender, event).await,
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    async fn handle(
        &mut self,
        sender: &Sender,
        event: Result<SyncEvent, RecvError>,
    ) -> Result<(), Ended> {
        match event {
            Ok(SyncEvent::EntriesChanged) => self.send_changes(sender, None).await?,
            Ok(SyncEvent::BundleChanged) => {
                let bundle = self.state.bundle.load().proto.clone();
                self.send_changes(sender, Some(bundle)).await?;
            }
            Ok(SyncEvent::FederatedBundlesChanged) => self.send_federated(sender).await?,
            Ok(SyncEvent::AgentUpdated(id)) if id == self.agent_id => {
                self.reload_agent().await?;
                self.send_changes(sender, None).await?;
            }
            Ok(SyncEvent::AgentRevoked { agent_id, reason }) if agent_id == self.agent_id => {
                return Err(Ended::Closed(Status::permission_denied(format!(
                    "agent {agent_id} was {reason}"
                ))));
            }
            Ok(SyncEvent::DatastoreUnreachable) => {
                return Err(Ended::Closed(Status::unavailable(
                    "this server cannot read the datastore; connect to another server",
                )));
            }
            Ok(SyncEvent::AgentUpdated(_) | SyncEvent::AgentRevoked { .. }) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "sync stream fell behind; sending a fresh snapshot");
                self.reload_agent().await?;
                self.send_snapshot(sender).await?;
            }
            Err(RecvError::Closed) => {
                return Err(Ended::Closed(Status::unavailable(
                    "the server is shutting down",
                )));
            }
        }
        Ok(())
    }

    /// Reads the agent's record again: its node selectors may have changed,
    /// and an evicted or banned agent loses its stream.
    async fn reload_agent(&mut self) -> Result<(), Ended> {
        match self.state.store.get_agent(&self.agent_id).await {
            Ok(Some(agent)) if agent.banned => Err(Ended::Closed(Status::permission_denied(
                format!("agent {} is banned", self.agent_id),
            ))),
            Ok(Some(agent)) => {
                self.node_selectors = agent.selectors.iter().cloned().collect();
                Ok(())
            }
            Ok(None) => Err(Ended::Closed(Status::permission_denied(format!(
                "agent {} is not attested; attest again",
                self.agent_id
            )))),
            Err(e) => Err(Ended::Closed(crate::status::store_status(
                "read the agent record",
                e,
            ))),
        }
    }

    /// Returns the authorized entries in ID order with the revision they
    /// were computed at.
    fn authorized(&self) -> (Vec<Arc<RegistrationEntry>>, u64) {
        let view = AgentView {
            agent_id: &self.agent_id,
            node_selectors: &self.node_selectors,
        };
        let cache = self.state.cache();
        let revision = self.state.revision();
        let entries = authorized_entries(&cache, &view, &self.state.server_id, now_unix());
        (entries.into_values().collect(), revision)
    }

    async fn send_snapshot(&mut self, sender: &Sender) -> Result<(), Disconnected> {
        let (entries, revision) = self.authorized();
        let bundle = self.state.bundle.load().proto.clone();
        let mut messages = snapshot_messages(&entries, revision, bundle);
        if let Some(first) = messages.first_mut() {
            first.federated_bundles = self.sent_federated.snapshot(&self.state.federation);
        }
        let count = entries.len();
        self.remember(&entries);

        for message in messages {
            send(sender, message).await?;
        }
        tracing::debug!(entries = count, revision, "sent sync snapshot");
        Ok(())
    }

    /// Sends the difference between the authorized set and what the agent
    /// holds, with `bundle` when it changed. Nothing is sent when both are
    /// empty.
    async fn send_changes(
        &mut self,
        sender: &Sender,
        bundle: Option<types::Bundle>,
    ) -> Result<(), Disconnected> {
        let (entries, revision) = self.authorized();
        let (upserted, removed) = difference(&self.sent, &entries);
        if upserted.len() + removed.len() > MAX_ENTRIES_PER_MESSAGE {
            return self.send_snapshot(sender).await;
        }
        if upserted.is_empty() && removed.is_empty() && bundle.is_none() {
            self.next_expiry = next_expiry(&entries, now_unix());
            return Ok(());
        }

        let message = SyncEntriesResponse {
            revision,
            snapshot: false,
            upserted: upserted
                .iter()
                .map(|e| types::Entry::from(e.as_ref()))
                .collect(),
            removed_entry_ids: removed.iter().map(ToString::to_string).collect(),
            bundle,
            federated_bundles: Vec::new(),
            removed_federated_bundles: Vec::new(),
            complete: true,
        };
        self.remember(&entries);
        tracing::debug!(
            upserted = message.upserted.len(),
            removed = message.removed_entry_ids.len(),
            bundle = message.bundle.is_some(),
            revision,
            "sent sync change"
        );
        send(sender, message).await
    }

    /// Sends the federated bundles that changed since the last message.
    async fn send_federated(&mut self, sender: &Sender) -> Result<(), Disconnected> {
        let (changed, removed) = self.sent_federated.changes(&self.state.federation);
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            changed = changed.len(),
            removed = removed.len(),
            "sent federated bundles"
        );
        let message = SyncEntriesResponse {
            revision: self.state.revision(),
            federated_bundles: changed,
            removed_federated_bundles: removed,
            complete: true,
            ..SyncEntriesResponse::default()
        };
        send(sender, message).await
    }

    fn remember(&mut self, entries: &[Arc<RegistrationEntry>]) {
        self.sent = entries.iter().map(|e| (e.id.clone(), e.revision)).collect();
        self.next_expiry = next_expiry(entries, now_unix());
    }
}

async fn send(sender: &Sender, message: SyncEntriesResponse) -> Result<(), Disconnected> {
    sender.send(Ok(message)).await.map_err(|_| Disconnected)
}

/// Splits a snapshot into messages of at most [`MAX_ENTRIES_PER_MESSAGE`]
/// entries: the first carries `snapshot` and the bundle, the last
/// `complete`. An empty snapshot is one message with both.
pub(crate) fn snapshot_messages(
    entries: &[Arc<RegistrationEntry>],
    revision: u64,
    bundle: types::Bundle,
) -> Vec<SyncEntriesResponse> {
    let mut messages: Vec<SyncEntriesResponse> = entries
        .chunks(MAX_ENTRIES_PER_MESSAGE)
        .map(|chunk| SyncEntriesResponse {
            revision,
            upserted: chunk
                .iter()
                .map(|e| types::Entry::from(e.as_ref()))
                .collect(),
            ..SyncEntriesResponse::default()
        })
        .collect();
    if messages.is_empty() {
        messages.push(SyncEntriesResponse {
            revision,
            ..SyncEntriesResponse::default()
        });
    }
    if let Some(first) = messages.first_mut() {
        first.snapshot = true;
        first.bundle = Some(bundle);
    }
    if let Some(last) = messages.last_mut() {
        last.complete = true;
    }
    messages
}

/// Returns the entries that are new or changed relative to `sent`, and the
/// IDs in `sent` that are no longer authorized.
pub(crate) fn difference(
    sent: &HashMap<EntryId, i64>,
    authorized: &[Arc<RegistrationEntry>],
) -> (Vec<Arc<RegistrationEntry>>, Vec<EntryId>) {
    let upserted: Vec<_> = authorized
        .iter()
        .filter(|e| sent.get(&e.id) != Some(&e.revision))
        .cloned()
        .collect();
    let current: std::collections::HashSet<&EntryId> = authorized.iter().map(|e| &e.id).collect();
    let mut removed: Vec<EntryId> = sent
        .keys()
        .filter(|id| !current.contains(id))
        .cloned()
        .collect();
    removed.sort();
    (upserted, removed)
}

/// Sleeps until Unix second `at`, or forever when `None`.
async fn sleep_until_unix(at: Option<i64>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    let target = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0));
    let wait = target.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::entry;

    const AGENT: &str = "spiffe://example.org/tessera/agent/join_token/a1";

    fn entries(n: usize) -> Vec<Arc<RegistrationEntry>> {
        let mut entries: Vec<_> = (0..n)
            .map(|i| Arc::new(entry(&format!("spiffe://example.org/w{i}"), AGENT)))
            .collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries
    }

    fn bundle() -> types::Bundle {
        types::Bundle {
            trust_domain: "example.org".into(),
            ..types::Bundle::default()
        }
    }

    #[test]
    fn snapshot_empty_is_one_complete_message() {
        let messages = snapshot_messages(&[], 4, bundle());

        assert_eq!(messages.len(), 1);
        assert!(messages[0].snapshot);
        assert!(messages[0].complete);
        assert!(messages[0].bundle.is_some());
        assert_eq!(messages[0].revision, 4);
    }

    #[test]
    fn snapshot_chunks_at_limit() {
        let all = entries(MAX_ENTRIES_PER_MESSAGE * 2 + 1);
        let messages = snapshot_messages(&all, 9, bundle());

        let sizes: Vec<_> = messages.iter().map(|m| m.upserted.len()).collect();
        assert_eq!(sizes, [MAX_ENTRIES_PER_MESSAGE, MAX_ENTRIES_PER_MESSAGE, 1]);
        let flags: Vec<_> = messages
            .iter()
            .map(|m| (m.snapshot, m.complete, m.bundle.is_some()))
            .collect();
        assert_eq!(
            flags,
            [
                (true, false, true),
                (false, false, false),
                (false, true, false)
            ]
        );
    }

    #[test]
    fn snapshot_exact_limit_is_one_message() {
        let messages = snapshot_messages(&entries(MAX_ENTRIES_PER_MESSAGE), 1, bundle());

        assert_eq!(messages.len(), 1);
        assert!(messages[0].snapshot);
        assert!(messages[0].complete);
    }

    #[test]
    fn difference_finds_new_changed_and_removed() {
        let all = entries(3);
        let gone = EntryId::generate();
        let mut sent: HashMap<EntryId, i64> = HashMap::new();
        sent.insert(all[0].id.clone(), all[0].revision);
        sent.insert(all[1].id.clone(), all[1].revision - 1);
        sent.insert(gone.clone(), 0);

        let (upserted, removed) = difference(&sent, &all);
        let upserted: Vec<_> = upserted.iter().map(|e| e.id.clone()).collect();
        assert_eq!(upserted, [all[1].id.clone(), all[2].id.clone()]);
        assert_eq!(removed, [gone]);
    }

    #[test]
    fn difference_unchanged_is_empty() {
        let all = entries(2);
        let sent = all.iter().map(|e| (e.id.clone(), e.revision)).collect();

        let (upserted, removed) = difference(&sent, &all);
        assert!(upserted.is_empty());
        assert!(removed.is_empty());
    }
}
