//! The agent's cache: the registration entries and trust bundles that the
//! server streams to the agent, and the workload X.509-SVIDs signed for
//! those entries. Every change bumps a generation counter on a
//! `tokio::sync::watch` channel, which wakes Workload API streams and the
//! SVID manager.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use tessera_registration::{EntryId, RegistrationEntry, SelectorSet};
use tessera_spiffe::{BundleSource, TrustBundle, TrustDomain};
use tokio::sync::watch;

use crate::svid::system_time_to_unix;
use crate::svid::x509::WorkloadSvid;

/// A consistent change to the cache: a full snapshot or a delta, built
/// from one or more `SyncEntries` messages.
#[derive(Debug, Clone, Default)]
pub struct EntryUpdate {
    /// Whether the update replaces every entry and federated bundle
    /// instead of changing some.
    pub snapshot: bool,
    /// The change-feed revision the update brings the cache to.
    pub revision: u64,
    /// Entries added or changed (for a snapshot: every entry).
    pub upserted: Vec<RegistrationEntry>,
    /// Entries removed; ignored for a snapshot.
    pub removed: Vec<EntryId>,
    /// The new bundle of the agent's own trust domain, when it changed.
    pub bundle: Option<TrustBundle>,
    /// Foreign bundles added or changed (for a snapshot: every one).
    pub federated_upserted: Vec<TrustBundle>,
    /// Foreign bundles removed; ignored for a snapshot.
    pub federated_removed: Vec<TrustDomain>,
}

/// The contents of the cache at one moment, read through [`Cache::read`].
#[derive(Debug, Default)]
pub struct CacheState {
    revision: u64,
    synced: bool,
    entries: BTreeMap<EntryId, RegistrationEntry>,
    bundle: Option<Arc<TrustBundle>>,
    federated_bundles: BTreeMap<TrustDomain, Arc<TrustBundle>>,
    svids: HashMap<EntryId, Arc<WorkloadSvid>>,
    signing_failed: HashSet<EntryId>,
}

impl CacheState {
    /// Returns the last change-feed revision applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Returns whether a first snapshot from the server has been applied.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Returns every cached entry, by entry ID.
    pub fn entries(&self) -> &BTreeMap<EntryId, RegistrationEntry> {
        &self.entries
    }

    /// Returns the bundle of the agent's own trust domain.
    pub fn bundle(&self) -> Option<&Arc<TrustBundle>> {
        self.bundle.as_ref()
    }

    /// Returns the foreign bundles the agent received from the server.
    pub fn federated_bundles(&self) -> &BTreeMap<TrustDomain, Arc<TrustBundle>> {
        &self.federated_bundles
    }

    /// Returns the X.509-SVID signed for an entry, if any.
    pub fn svid(&self, entry_id: &EntryId) -> Option<&Arc<WorkloadSvid>> {
        self.svids.get(entry_id)
    }

    /// Returns whether the last attempt to sign an SVID for the entry failed,
    /// so callers need not wait for it.
    pub fn signing_failed(&self, entry_id: &EntryId) -> bool {
        self.signing_failed.contains(entry_id)
    }

    /// Returns the entries that grant identities to a workload with
    /// `selectors` at `now`: every entry selector is among the workload's,
    /// and the entry has not expired. The oldest entry comes first, so the
    /// default identity (the first one) stays the same as entries are added.
    pub fn matching_entries(
        &self,
        selectors: &SelectorSet,
        now: SystemTime,
    ) -> Vec<&RegistrationEntry> {
        let now = system_time_to_unix(now);
        let mut matching: Vec<&RegistrationEntry> = self
            .entries
            .values()
            .filter(|entry| !is_expired(entry, now) && entry.matches(selectors))
            .collect();
        matching.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        matching
    }
}

/// Returns whether an entry's expiry (Unix seconds) has passed at `now`.
pub fn is_expired(entry: &RegistrationEntry, now_unix: i64) -> bool {
    entry
        .expires_at
        .is_some_and(|expires_at| expires_at <= now_unix)
}

impl BundleSource for CacheState {
    fn bundle_for(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        match &self.bundle {
            Some(bundle) if bundle.trust_domain() == td => Some(bundle),
            _ => self.federated_bundles.get(td).map(Arc::as_ref),
        }
    }
}

/// The cache shared by sync, the SVID manager and the Workload API.
#[derive(Debug)]
pub struct Cache {
    trust_domain: TrustDomain,
    state: RwLock<CacheState>,
    generation: watch::Sender<u64>,
}

impl Cache {
    /// Creates an empty cache for `trust_domain`, with the bundle the agent
    /// already has (from attestation or its data directory).
    pub fn new(trust_domain: TrustDomain, bundle: Option<TrustBundle>) -> Self {
        let state = CacheState {
            bundle: bundle.map(Arc::new),
            ..CacheState::default()
        };
        Self {
            trust_domain,
            state: RwLock::new(state),
            generation: watch::Sender::new(0),
        }
    }

    /// Returns the agent's trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Runs `read` on the current state. Keep it short: writers wait.
    pub fn read<R>(&self, read: impl FnOnce(&CacheState) -> R) -> R {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        read(&state)
    }

    /// Returns a receiver of the generation counter, which changes after
    /// every change to the cache.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Applies a snapshot or delta from the server, then wakes subscribers.
    ///
    /// SVIDs of removed entries are dropped, and so are SVIDs of entries
    /// whose SPIFFE ID changed, so no workload receives an identity its
    /// entry no longer grants. A bundle of another trust domain than the
    /// agent's is ignored.
    pub fn apply(&self, update: EntryUpdate) {
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            self.apply_locked(&mut state, update);
        }
        self.bump();
    }

    fn apply_locked(&self, state: &mut CacheState, update: EntryUpdate) {
        if update.snapshot {
            state.entries.clear();
            state.federated_bundles.clear();
        } else {
            for id in &update.removed {
                state.entries.remove(id);
            }
            for td in &update.federated_removed {
                state.federated_bundles.remove(td);
            }
        }
        for entry in update.upserted {
            // The new version of the entry has not been tried yet.
            state.signing_failed.remove(&entry.id);
            state.entries.insert(entry.id.clone(), entry);
        }
        for bundle in update.federated_upserted {
            if bundle.trust_domain() == &self.trust_domain {
                tracing::warn!(trust_domain = %self.trust_domain, "ignoring a federated bundle for the agent's own trust domain");
                continue;
            }
            state
                .federated_bundles
                .insert(bundle.trust_domain().clone(), Arc::new(bundle));
        }
        if let Some(bundle) = update.bundle {
            if bundle.trust_domain() == &self.trust_domain {
                state.bundle = Some(Arc::new(bundle));
            } else {
                tracing::warn!(
                    trust_domain = %bundle.trust_domain(),
                    expected = %self.trust_domain,
                    "ignoring a bundle for another trust domain"
                );
            }
        }

        let entries = &state.entries;
        state.svids.retain(|id, svid| {
            entries
                .get(id)
                .is_some_and(|entry| entry.spiffe_id == svid.params.spiffe_id)
        });
        state.signing_failed.retain(|id| entries.contains_key(id));
        state.revision = update.revision;
        state.synced = true;
    }

    /// Stores newly signed SVIDs, then wakes subscribers. An SVID whose
    /// entry was removed, or changed its SPIFFE ID while the SVID was being
    /// signed, is discarded. Returns how many SVIDs were stored.
    pub fn store_svids(&self, svids: Vec<(EntryId, WorkloadSvid)>) -> usize {
        let mut stored = 0;
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for (id, svid) in svids {
                let current = state
                    .entries
                    .get(&id)
                    .is_some_and(|entry| entry.spiffe_id == svid.params.spiffe_id);
                if current {
                    state.signing_failed.remove(&id);
                    state.svids.insert(id, Arc::new(svid));
                    stored += 1;
                }
            }
        }
        if stored > 0 {
            self.bump();
        }
        stored
    }

    /// Records that signing failed for these entries, then wakes
    /// subscribers, so Workload API calls stop waiting for their SVIDs.
    pub fn mark_signing_failed(&self, entry_ids: impl IntoIterator<Item = EntryId>) {
        let mut changed = false;
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for id in entry_ids {
                if state.entries.contains_key(&id) {
                    changed |= state.signing_failed.insert(id);
                }
            }
        }
        if changed {
            self.bump();
        }
    }

    fn bump(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }
}

#[cfg(test)]
mod tests {
    use tessera_registration::Selector;

    use super::*;
    use crate::testing;

    fn td() -> TrustDomain {
        TrustDomain::new("example.org").expect("trust domain")
    }

    fn ids(state: &CacheState) -> Vec<String> {
        state.entries().keys().map(ToString::to_string).collect()
    }

    #[test]
    fn snapshot_replaces_entries() {
        let cache = Cache::new(td(), None);
        let a = testing::entry("/a", &["unix:uid:1"]);
        let b = testing::entry("/b", &["unix:uid:2"]);
        let c = testing::entry("/c", &["unix:uid:3"]);

        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 5,
            upserted: vec![a.clone(), b.clone()],
            ..EntryUpdate::default()
        });
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 9,
            upserted: vec![c.clone()],
            ..EntryUpdate::default()
        });

        cache.read(|state| {
            assert_eq!(ids(state), vec![c.id.to_string()]);
            assert_eq!(state.revision(), 9);
            assert!(state.is_synced());
        });
    }

    #[test]
    fn delta_upserts_and_removes() {
        let cache = Cache::new(td(), None);
        let a = testing::entry("/a", &["unix:uid:1"]);
        let b = testing::entry("/b", &["unix:uid:2"]);
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: vec![a.clone(), b.clone()],
            ..EntryUpdate::default()
        });

        let mut changed = a.clone();
        changed.hint = "changed".into();
        let c = testing::entry("/c", &["unix:uid:3"]);
        cache.apply(EntryUpdate {
            revision: 2,
            upserted: vec![changed, c.clone()],
            removed: vec![b.id.clone()],
            ..EntryUpdate::default()
        });

        cache.read(|state| {
            assert_eq!(state.entries().len(), 2);
            assert_eq!(
                state.entries().get(&a.id).map(|e| e.hint.as_str()),
                Some("changed")
            );
            assert!(state.entries().contains_key(&c.id));
            assert!(!state.entries().contains_key(&b.id));
            assert_eq!(state.revision(), 2);
        });
    }

    #[test]
    fn apply_replaces_bundle_of_own_domain_only() {
        let cache = Cache::new(td(), Some(TrustBundle::new(td())));
        let mut own = TrustBundle::new(td());
        own.set_sequence_number(Some(7));
        let foreign = TrustBundle::new(TrustDomain::new("other.org").expect("td"));

        cache.apply(EntryUpdate {
            revision: 1,
            bundle: Some(own),
            ..EntryUpdate::default()
        });
        cache.apply(EntryUpdate {
            revision: 2,
            bundle: Some(foreign),
            ..EntryUpdate::default()
        });

        let sequence = cache.read(|s| s.bundle().and_then(|b| b.sequence_number()));
        assert_eq!(sequence, Some(7));
    }

    #[test]
    fn federated_bundles_follow_updates() {
        let cache = Cache::new(td(), None);
        let other = TrustDomain::new("other.org").expect("td");
        let third = TrustDomain::new("third.org").expect("td");
        cache.apply(EntryUpdate {
            revision: 1,
            federated_upserted: vec![
                TrustBundle::new(other.clone()),
                TrustBundle::new(third.clone()),
            ],
            ..EntryUpdate::default()
        });
        cache.apply(EntryUpdate {
            revision: 2,
            federated_removed: vec![other.clone()],
            ..EntryUpdate::default()
        });

        cache.read(|state| {
            assert!(state.federated_bundles().contains_key(&third));
            assert!(!state.federated_bundles().contains_key(&other));
            assert!(state.bundle_for(&third).is_some());
        });
    }

    #[test]
    fn apply_drops_svids_of_removed_or_renamed_entries() {
        let cache = Cache::new(td(), None);
        let ca = testing::TestCa::new(&td());
        let kept = testing::entry("/kept", &["unix:uid:1"]);
        let removed = testing::entry("/removed", &["unix:uid:2"]);
        let renamed = testing::entry("/renamed", &["unix:uid:3"]);
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: vec![kept.clone(), removed.clone(), renamed.clone()],
            ..EntryUpdate::default()
        });
        let stored = cache.store_svids(vec![
            (kept.id.clone(), ca.workload_svid(&kept)),
            (removed.id.clone(), ca.workload_svid(&removed)),
            (renamed.id.clone(), ca.workload_svid(&renamed)),
        ]);
        assert_eq!(stored, 3);

        let mut new_id = renamed.clone();
        new_id.spiffe_id = testing::spiffe_id("/new-name");
        cache.apply(EntryUpdate {
            revision: 2,
            upserted: vec![new_id],
            removed: vec![removed.id.clone()],
            ..EntryUpdate::default()
        });

        cache.read(|state| {
            assert!(state.svid(&kept.id).is_some());
            assert!(state.svid(&removed.id).is_none());
            assert!(state.svid(&renamed.id).is_none());
        });
    }

    #[test]
    fn store_svids_discards_unknown_entries() {
        let cache = Cache::new(td(), None);
        let ca = testing::TestCa::new(&td());
        let entry = testing::entry("/a", &["unix:uid:1"]);
        assert_eq!(
            cache.store_svids(vec![(entry.id.clone(), ca.workload_svid(&entry))]),
            0
        );
    }

    #[test]
    fn signing_failures_clear_on_success_or_change() {
        let cache = Cache::new(td(), None);
        let ca = testing::TestCa::new(&td());
        let a = testing::entry("/a", &["unix:uid:1"]);
        let b = testing::entry("/b", &["unix:uid:2"]);
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: vec![a.clone(), b.clone()],
            ..EntryUpdate::default()
        });

        cache.mark_signing_failed([a.id.clone(), b.id.clone()]);
        cache.read(|state| {
            assert!(state.signing_failed(&a.id));
            assert!(state.signing_failed(&b.id));
        });

        cache.store_svids(vec![(a.id.clone(), ca.workload_svid(&a))]);
        cache.apply(EntryUpdate {
            revision: 2,
            upserted: vec![b.clone()],
            ..EntryUpdate::default()
        });
        cache.read(|state| {
            assert!(!state.signing_failed(&a.id));
            assert!(!state.signing_failed(&b.id));
        });
    }

    #[test]
    fn changes_bump_generation() {
        let cache = Cache::new(td(), None);
        let receiver = cache.subscribe();
        let before = *receiver.borrow();
        cache.apply(EntryUpdate::default());
        assert!(receiver.has_changed().expect("sender alive"));
        assert_eq!(*receiver.borrow(), before + 1);
    }

    #[test]
    fn matching_entries_filters_and_orders() {
        let cache = Cache::new(td(), None);
        let mut newer = testing::entry("/newer", &["unix:uid:1"]);
        newer.created_at = 200;
        let mut older = testing::entry("/older", &["unix:uid:1", "unix:gid:1"]);
        older.created_at = 100;
        let mut expired = testing::entry("/expired", &["unix:uid:1"]);
        expired.expires_at = Some(50);
        let other = testing::entry("/other", &["unix:uid:2"]);
        cache.apply(EntryUpdate {
            snapshot: true,
            revision: 1,
            upserted: vec![newer, older, expired, other],
            ..EntryUpdate::default()
        });

        let selectors: SelectorSet = ["unix:uid:1", "unix:gid:1", "unix:path:/bin/sh"]
            .into_iter()
            .map(|s| Selector::parse(s).expect("selector"))
            .collect();
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let matched: Vec<String> = cache.read(|state| {
            state
                .matching_entries(&selectors, now)
                .iter()
                .map(|e| e.spiffe_id.path().to_owned())
                .collect()
        });
        assert_eq!(matched, vec!["/older", "/newer"]);
    }
}
