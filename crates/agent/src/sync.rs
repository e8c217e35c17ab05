//! Entry sync: the `SyncEntries` stream from the server. A snapshot may
//! span several messages, and changes follow as they happen. The agent
//! stages messages and applies them to the cache when one arrives with
//! `complete` set. A broken stream is reopened with backoff, sending the
//! last applied revision so the server can send only what changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_proto::agent::{SyncEntriesRequest, SyncEntriesResponse};
use tessera_registration::{EntryId, RegistrationEntry};
use tessera_spiffe::{TrustBundle, TrustDomain};
use tonic::Status;

use crate::cache::{Cache, EntryUpdate};
use crate::convert::bundle_from_proto;
use crate::error::AgentError;
use crate::node::client_tls::{ServerChannel, TlsIdentity};
use crate::retry::{Backoff, RetryPolicy, is_final};
use crate::storage::Storage;

/// Messages received since the last consistent state.
#[derive(Debug)]
pub struct SyncStaging {
    trust_domain: TrustDomain,
    pending: Option<Pending>,
}

/// The staged change: a later message overrides an earlier one for the
/// same entry or trust domain (`None` is a removal).
#[derive(Debug, Default)]
struct Pending {
    snapshot: bool,
    revision: u64,
    entries: BTreeMap<EntryId, Option<RegistrationEntry>>,
    bundle: Option<TrustBundle>,
    federated: BTreeMap<TrustDomain, Option<TrustBundle>>,
}

impl SyncStaging {
    /// Starts with nothing staged.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            pending: None,
        }
    }

    /// Stages one message. Returns the update to apply when the message
    /// completes a consistent state.
    ///
    /// Invalid items are logged and left out. An invalid entry in a delta
    /// removes the agent's copy, so the agent never serves a version that
    /// the server has replaced.
    pub fn push(&mut self, message: SyncEntriesResponse) -> Option<EntryUpdate> {
        if message.snapshot || self.pending.is_none() {
            self.pending = Some(Pending {
                snapshot: message.snapshot,
                ..Pending::default()
            });
        }
        let pending = self.pending.get_or_insert_with(Pending::default);
        pending.revision = message.revision;

        for proto in message.upserted {
            let raw_id = proto.id.clone();
            match RegistrationEntry::try_from(proto) {
                Ok(entry) => {
                    pending.entries.insert(entry.id.clone(), Some(entry));
                }
                Err(error) => {
                    tracing::warn!(entry_id = %raw_id, %error, "ignoring an invalid entry from the server");
                    if let Ok(id) = EntryId::parse(&raw_id) {
                        pending.entries.insert(id, None);
                    }
                }
            }
        }
        for raw_id in message.removed_entry_ids {
            match EntryId::parse(&raw_id) {
                Ok(id) => {
                    pending.entries.insert(id, None);
                }
                Err(error) => {
                    tracing::warn!(entry_id = %raw_id, %error, "ignoring an invalid removed entry ID");
                }
            }
        }

        if let Some(proto) = message.bundle {
            match bundle_from_proto(&proto) {
                Ok(bundle) if bundle.trust_domain() == &self.trust_domain => {
                    pending.bundle = Some(bundle);
                }
                Ok(bundle) => tracing::warn!(
                    trust_domain = %bundle.trust_domain(),
                    expected = %self.trust_domain,
                    "ignoring a bundle for another trust domain"
                ),
                Err(reason) => {
                    tracing::warn!(%reason, "ignoring an invalid bundle from the server")
                }
            }
        }
        for proto in message.federated_bundles {
            match bundle_from_proto(&proto) {
                Ok(bundle) => {
                    pending
                        .federated
                        .insert(bundle.trust_domain().clone(), Some(bundle));
                }
                Err(reason) => tracing::warn!(
                    trust_domain = %proto.trust_domain,
                    %reason,
                    "ignoring an invalid federated bundle from the server"
                ),
            }
        }
        for name in message.removed_federated_bundles {
            match TrustDomain::new(&name) {
                Ok(td) => {
                    pending.federated.insert(td, None);
                }
                Err(error) => {
                    tracing::warn!(trust_domain = %name, %error, "ignoring an invalid removed trust domain")
                }
            }
        }

        if !message.complete {
            return None;
        }
        self.pending.take().map(Pending::into_update)
    }
}

impl Pending {
    fn into_update(self) -> EntryUpdate {
        let mut update = EntryUpdate {
            snapshot: self.snapshot,
            revision: self.revision,
            bundle: self.bundle,
            ..EntryUpdate::default()
        };
        for (id, entry) in self.entries {
            match entry {
                Some(entry) => update.upserted.push(entry),
                None => update.removed.push(id),
            }
        }
        for (td, bundle) in self.federated {
            match bundle {
                Some(bundle) => update.federated_upserted.push(bundle),
                None => update.federated_removed.push(td),
            }
        }
        update
    }
}

/// The task that keeps the cache in step with the server.
pub struct EntrySync {
    cache: Arc<Cache>,
    server: Arc<ServerChannel>,
    identity: Arc<TlsIdentity>,
    storage: Storage,
    retry: RetryPolicy,
}

impl EntrySync {
    /// Creates the task; it starts when [`run`](Self::run) is awaited.
    pub fn new(
        cache: Arc<Cache>,
        server: Arc<ServerChannel>,
        identity: Arc<TlsIdentity>,
        storage: Storage,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            cache,
            server,
            identity,
            storage,
            retry,
        }
    }

    /// Streams entries until the server rejects the agent.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Server`] for a final gRPC code (the agent was
    /// evicted or banned); every other failure is retried with backoff.
    pub async fn run(self) -> Result<(), AgentError> {
        let mut backoff = self.retry.backoff();
        loop {
            let status = match self.stream_once(&mut backoff).await {
                Ok(()) => Status::unavailable("the server closed the entry stream"),
                Err(status) => status,
            };
            if is_final(status.code()) {
                tracing::error!(code = ?status.code(), message = status.message(), "the server rejected entry sync; the agent cannot receive entries");
                return Err(AgentError::server("SyncEntries", &status));
            }

            self.server.fail_over(&status);
            let delay = backoff.next_delay();
            if backoff.failures() == 1 {
                tracing::warn!(code = ?status.code(), message = status.message(), retry_in = ?delay, "entry stream ended; reconnecting");
            } else {
                tracing::debug!(code = ?status.code(), failures = backoff.failures(), retry_in = ?delay, "entry stream failed again; reconnecting");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Opens one stream and applies what it brings until it ends.
    async fn stream_once(&self, backoff: &mut Backoff) -> Result<(), Status> {
        let known_revision = self.cache.read(|state| state.revision());
        let mut stream = self
            .server
            .client()
            .sync_entries(SyncEntriesRequest { known_revision })
            .await?
            .into_inner();
        tracing::info!(known_revision, "entry stream opened");

        let mut staging = SyncStaging::new(self.cache.trust_domain().clone());
        while let Some(message) = stream.message().await? {
            if let Some(update) = staging.push(message) {
                if backoff.failures() > 0 {
                    tracing::info!(failures = backoff.failures(), "entry stream recovered");
                    backoff.reset();
                }
                self.apply(update);
            }
        }
        Ok(())
    }

    fn apply(&self, update: EntryUpdate) {
        if let Some(bundle) = &update.bundle {
            self.identity.set_bundle(bundle.clone());
            if let Err(error) = self.storage.save_bundle(bundle) {
                tracing::warn!(error = %error_chain(&error), "failed to store the trust bundle; a restart uses the previous one");
            }
            tracing::info!(trust_domain = %bundle.trust_domain(), authorities = bundle.x509_authorities().len(), "trust bundle updated");
        }
        tracing::info!(
            revision = update.revision,
            snapshot = update.snapshot,
            upserted = update.upserted.len(),
            removed = update.removed.len(),
            "entries updated"
        );
        self.cache.apply(update);
    }
}

/// Formats an error with its sources, for a log line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tessera_proto::types;

    use super::*;
    use crate::testing;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").expect("td")
    }

    fn proto(entry: &RegistrationEntry) -> types::Entry {
        types::Entry::from(entry)
    }

    fn bundle_message(trust_domain: &str) -> types::Bundle {
        types::Bundle {
            trust_domain: trust_domain.into(),
            ..types::Bundle::default()
        }
    }

    #[test]
    fn snapshot_applies_only_when_complete() {
        let mut staging = SyncStaging::new(td());
        let a = testing::entry("/a", &["unix:uid:1"]);
        let b = testing::entry("/b", &["unix:uid:2"]);

        let first = staging.push(SyncEntriesResponse {
            revision: 10,
            snapshot: true,
            upserted: vec![proto(&a)],
            bundle: Some(bundle_message("example.org")),
            ..SyncEntriesResponse::default()
        });
        assert!(first.is_none());

        let update = staging
            .push(SyncEntriesResponse {
                revision: 10,
                upserted: vec![proto(&b)],
                complete: true,
                ..SyncEntriesResponse::default()
            })
            .expect("complete snapshot");
        assert!(update.snapshot);
        assert_eq!(update.revision, 10);
        assert_eq!(update.upserted.len(), 2);
        assert!(update.bundle.is_some());
    }

    #[test]
    fn new_snapshot_discards_staged_messages() {
        let mut staging = SyncStaging::new(td());
        let a = testing::entry("/a", &["unix:uid:1"]);
        let b = testing::entry("/b", &["unix:uid:2"]);
        staging.push(SyncEntriesResponse {
            revision: 3,
            snapshot: true,
            upserted: vec![proto(&a)],
            ..SyncEntriesResponse::default()
        });

        let update = staging
            .push(SyncEntriesResponse {
                revision: 4,
                snapshot: true,
                upserted: vec![proto(&b)],
                complete: true,
                ..SyncEntriesResponse::default()
            })
            .expect("complete snapshot");
        let ids: Vec<_> = update.upserted.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, vec![b.id]);
        assert_eq!(update.revision, 4);
    }

    #[test]
    fn delta_later_message_wins() {
        let mut staging = SyncStaging::new(td());
        let a = testing::entry("/a", &["unix:uid:1"]);
        let b = testing::entry("/b", &["unix:uid:2"]);
        staging.push(SyncEntriesResponse {
            revision: 7,
            upserted: vec![proto(&a)],
            removed_entry_ids: vec![b.id.to_string()],
            ..SyncEntriesResponse::default()
        });
        let update = staging
            .push(SyncEntriesResponse {
                revision: 8,
                upserted: vec![proto(&b)],
                removed_entry_ids: vec![a.id.to_string()],
                complete: true,
                ..SyncEntriesResponse::default()
            })
            .expect("complete delta");

        assert!(!update.snapshot);
        assert_eq!(update.revision, 8);
        assert_eq!(
            update.upserted.iter().map(|e| &e.id).collect::<Vec<_>>(),
            vec![&b.id]
        );
        assert_eq!(update.removed, vec![a.id]);
    }

    #[test]
    fn invalid_entry_in_delta_removes_it() {
        let mut staging = SyncStaging::new(td());
        let a = testing::entry("/a", &["unix:uid:1"]);
        let mut broken = proto(&a);
        broken.spiffe_id = "not a SPIFFE ID".into();

        let update = staging
            .push(SyncEntriesResponse {
                revision: 2,
                upserted: vec![broken],
                complete: true,
                ..SyncEntriesResponse::default()
            })
            .expect("complete delta");
        assert!(update.upserted.is_empty());
        assert_eq!(update.removed, vec![a.id]);
    }

    #[test]
    fn bundles_of_other_domains_are_ignored_as_own() {
        let mut staging = SyncStaging::new(td());
        let update = staging
            .push(SyncEntriesResponse {
                revision: 1,
                bundle: Some(bundle_message("other.org")),
                federated_bundles: vec![bundle_message("partner.org")],
                removed_federated_bundles: vec!["old.org".into()],
                complete: true,
                ..SyncEntriesResponse::default()
            })
            .expect("complete delta");

        assert!(update.bundle.is_none());
        let federated: Vec<String> = update
            .federated_upserted
            .iter()
            .map(|b| b.trust_domain().to_string())
            .collect();
        assert_eq!(federated, vec!["partner.org"]);
        let removed: Vec<String> = update
            .federated_removed
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(removed, vec!["old.org"]);
    }
}
