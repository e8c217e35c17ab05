//! The in-memory copy of every registration entry, indexed by entry ID and
//! by parent ID. It is loaded from the store at start and updated by the
//! admin write path after the store acknowledges each write, so agent API
//! calls never read entries from the datastore.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use tessera_registration::{EntryId, RegistrationEntry};
use tessera_spiffe::SpiffeId;
use tessera_store::Revision;

/// Every registration entry, indexed by ID (sorted, for paging) and by
/// parent ID (for the authorization walk).
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    by_id: BTreeMap<EntryId, Arc<RegistrationEntry>>,
    by_parent: HashMap<SpiffeId, Vec<EntryId>>,
    revision: Revision,
}

impl EntryCache {
    /// Builds the cache from the store's entries at change-feed `revision`.
    pub fn new(entries: Vec<RegistrationEntry>, revision: Revision) -> Self {
        let mut cache = Self::default();
        for entry in entries {
            cache.insert(entry);
        }
        cache.revision = revision;
        cache
    }

    /// Returns the change-feed revision of the last write applied.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Returns the number of entries.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Returns the entry with ID `id`.
    pub fn get(&self, id: &EntryId) -> Option<&Arc<RegistrationEntry>> {
        self.by_id.get(id)
    }

    /// Returns the entries whose parent ID is `parent`.
    pub fn children<'a>(
        &'a self,
        parent: &SpiffeId,
    ) -> impl Iterator<Item = &'a Arc<RegistrationEntry>> + 'a {
        self.by_parent
            .get(parent)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// Returns the entries with an ID greater than `after` (all when `None`),
    /// in ID order.
    pub fn iter_after<'a>(
        &'a self,
        after: Option<&EntryId>,
    ) -> impl Iterator<Item = &'a Arc<RegistrationEntry>> + 'a {
        let start = match after {
            Some(id) => Bound::Excluded(id.clone()),
            None => Bound::Unbounded,
        };
        self.by_id
            .range((start, Bound::Unbounded))
            .map(|(_, entry)| entry)
    }

    /// Inserts or replaces an entry written to the store at `revision`.
    pub fn upsert(&mut self, entry: RegistrationEntry, revision: Revision) {
        self.remove_from_index(&entry.id);
        self.insert(entry);
        self.revision = self.revision.max(revision);
    }

    /// Removes an entry deleted from the store at `revision`.
    pub fn remove(&mut self, id: &EntryId, revision: Revision) -> Option<Arc<RegistrationEntry>> {
        let removed = self.remove_from_index(id);
        self.revision = self.revision.max(revision);
        removed
    }

    fn insert(&mut self, entry: RegistrationEntry) {
        self.by_parent
            .entry(entry.parent_id.clone())
            .or_default()
            .push(entry.id.clone());
        self.by_id.insert(entry.id.clone(), Arc::new(entry));
    }

    fn remove_from_index(&mut self, id: &EntryId) -> Option<Arc<RegistrationEntry>> {
        let old = self.by_id.remove(id)?;
        if let Some(siblings) = self.by_parent.get_mut(&old.parent_id) {
            siblings.retain(|sibling| sibling != id);
            if siblings.is_empty() {
                self.by_parent.remove(&old.parent_id);
            }
        }
        Some(old)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tessera_registration::Selector;

    /// Builds an entry for tests: `spiffe_id` under `parent_id` with one
    /// `unix:uid:1000` selector.
    pub(crate) fn entry(spiffe_id: &str, parent_id: &str) -> RegistrationEntry {
        RegistrationEntry {
            id: EntryId::generate(),
            spiffe_id: SpiffeId::parse(spiffe_id).unwrap(),
            parent_id: SpiffeId::parse(parent_id).unwrap(),
            selectors: vec![Selector::parse("unix:uid:1000").unwrap()],
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: Vec::new(),
            dns_names: Vec::new(),
            hint: String::new(),
            admin: false,
            downstream: false,
            expires_at: None,
            revision: 0,
            created_at: 0,
        }
    }

    fn child_ids(cache: &EntryCache, parent: &str) -> Vec<EntryId> {
        let parent = SpiffeId::parse(parent).unwrap();
        let mut ids: Vec<EntryId> = cache.children(&parent).map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn new_indexes_by_parent() {
        let a = entry("spiffe://example.org/a", "spiffe://example.org/agent/1");
        let b = entry("spiffe://example.org/b", "spiffe://example.org/agent/1");
        let c = entry("spiffe://example.org/c", "spiffe://example.org/agent/2");
        let mut expected = vec![a.id.clone(), b.id.clone()];
        expected.sort();
        let cache = EntryCache::new(vec![a, b, c], 7);

        assert_eq!(cache.len(), 3);
        assert_eq!(cache.revision(), 7);
        assert_eq!(child_ids(&cache, "spiffe://example.org/agent/1"), expected);
        assert_eq!(child_ids(&cache, "spiffe://example.org/agent/2").len(), 1);
        assert!(child_ids(&cache, "spiffe://example.org/agent/3").is_empty());
    }

    #[test]
    fn upsert_moves_entry_to_new_parent() {
        let mut a = entry("spiffe://example.org/a", "spiffe://example.org/agent/1");
        let mut cache = EntryCache::new(vec![a.clone()], 1);
        a.parent_id = SpiffeId::parse("spiffe://example.org/agent/2").unwrap();
        cache.upsert(a.clone(), 2);

        assert!(child_ids(&cache, "spiffe://example.org/agent/1").is_empty());
        assert_eq!(
            child_ids(&cache, "spiffe://example.org/agent/2"),
            [a.id.clone()]
        );
        assert_eq!(cache.get(&a.id).unwrap().parent_id, a.parent_id);
        assert_eq!(cache.revision(), 2);
    }

    #[test]
    fn remove_drops_both_indexes() {
        let a = entry("spiffe://example.org/a", "spiffe://example.org/agent/1");
        let mut cache = EntryCache::new(vec![a.clone()], 1);

        assert!(cache.remove(&a.id, 3).is_some());
        assert!(cache.get(&a.id).is_none());
        assert!(child_ids(&cache, "spiffe://example.org/agent/1").is_empty());
        assert!(cache.remove(&a.id, 4).is_none());
        assert_eq!(cache.revision(), 4);
    }

    #[test]
    fn revision_never_goes_back() {
        let a = entry("spiffe://example.org/a", "spiffe://example.org/agent/1");
        let mut cache = EntryCache::new(Vec::new(), 5);
        cache.upsert(a, 3);

        assert_eq!(cache.revision(), 5);
    }

    #[test]
    fn iter_after_pages_in_id_order() {
        let entries: Vec<_> = (0..5)
            .map(|i| {
                entry(
                    &format!("spiffe://example.org/{i}"),
                    "spiffe://example.org/agent/1",
                )
            })
            .collect();
        let mut ids: Vec<_> = entries.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        let cache = EntryCache::new(entries, 1);

        let all: Vec<_> = cache.iter_after(None).map(|e| e.id.clone()).collect();
        let rest: Vec<_> = cache
            .iter_after(Some(&ids[1]))
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(all, ids);
        assert_eq!(rest, ids[2..]);
    }
}
