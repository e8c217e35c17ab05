//! The set of registration entries an agent may receive and get SVIDs for:
//! its direct children, the children of node aliases it matches, and,
//! through nesting, the children of every entry already authorized.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use tessera_registration::{EntryId, RegistrationEntry, SelectorSet};
use tessera_spiffe::SpiffeId;

use crate::cache::EntryCache;

/// The agent whose authorized entries are computed.
pub(crate) struct AgentView<'a> {
    /// The agent ID.
    pub agent_id: &'a SpiffeId,
    /// The node selectors its attestation produced.
    pub node_selectors: &'a SelectorSet,
}

/// Returns the entries authorized for `agent`, by ID.
///
/// An entry is authorized when its parent is one of these:
/// - the agent;
/// - a node alias, which is an entry under `server_id` whose selectors are a
///   subset of the agent's node selectors (the alias itself is not returned);
/// - the SPIFFE ID of an entry already authorized.
///
/// Entries whose `expires_at` is before `now_unix` are skipped and authorize
/// nothing below them. Each SPIFFE ID is expanded once, so cycles end.
pub(crate) fn authorized_entries(
    cache: &EntryCache,
    agent: &AgentView<'_>,
    server_id: &SpiffeId,
    now_unix: i64,
) -> BTreeMap<EntryId, Arc<RegistrationEntry>> {
    let mut authorized = BTreeMap::new();
    let mut expanded: HashSet<&SpiffeId> = HashSet::from([server_id, agent.agent_id]);
    let mut parents: VecDeque<&SpiffeId> = VecDeque::from([agent.agent_id]);

    for alias in cache.children(server_id) {
        let is_live = !is_expired(alias, now_unix);
        if is_live && alias.matches(agent.node_selectors) && expanded.insert(&alias.spiffe_id) {
            parents.push_back(&alias.spiffe_id);
        }
    }

    while let Some(parent) = parents.pop_front() {
        for entry in cache.children(parent) {
            if is_expired(entry, now_unix) {
                continue;
            }
            authorized.insert(entry.id.clone(), Arc::clone(entry));
            if expanded.insert(&entry.spiffe_id) {
                parents.push_back(&entry.spiffe_id);
            }
        }
    }
    authorized
}

/// Returns whether the entry stopped granting SVIDs before `now_unix`.
pub(crate) fn is_expired(entry: &RegistrationEntry, now_unix: i64) -> bool {
    entry.expires_at.is_some_and(|at| at < now_unix)
}

/// Returns the earliest `expires_at` still in the future among `entries`,
/// the next time the authorized set can shrink without a write.
pub(crate) fn next_expiry<'a>(
    entries: impl IntoIterator<Item = &'a Arc<RegistrationEntry>>,
    now_unix: i64,
) -> Option<i64> {
    entries
        .into_iter()
        .filter_map(|entry| entry.expires_at)
        .filter(|&at| at >= now_unix)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::entry;
    use tessera_registration::Selector;

    const SERVER: &str = "spiffe://example.org/tessera/server";
    const AGENT: &str = "spiffe://example.org/tessera/agent/join_token/a1";
    const NOW: i64 = 1_000_000;

    fn authorized_ids(entries: Vec<RegistrationEntry>, node_selectors: &[&str]) -> Vec<String> {
        let cache = EntryCache::new(entries, 1);
        let agent_id = SpiffeId::parse(AGENT).unwrap();
        let node_selectors: SelectorSet = node_selectors
            .iter()
            .map(|s| Selector::parse(s).unwrap())
            .collect();
        let agent = AgentView {
            agent_id: &agent_id,
            node_selectors: &node_selectors,
        };
        let server_id = SpiffeId::parse(SERVER).unwrap();
        let mut ids: Vec<String> = authorized_entries(&cache, &agent, &server_id, NOW)
            .values()
            .map(|e| e.spiffe_id.path().to_owned())
            .collect();
        ids.sort();
        ids
    }

    fn with_selectors(mut e: RegistrationEntry, selectors: &[&str]) -> RegistrationEntry {
        e.selectors = selectors
            .iter()
            .map(|s| Selector::parse(s).unwrap())
            .collect();
        e
    }

    #[test]
    fn authorized_direct_children() {
        let entries = vec![
            entry("spiffe://example.org/web", AGENT),
            entry("spiffe://example.org/db", AGENT),
            entry(
                "spiffe://example.org/other",
                "spiffe://example.org/tessera/agent/x/b2",
            ),
        ];

        assert_eq!(authorized_ids(entries, &[]), ["/db", "/web"]);
    }

    #[test]
    fn authorized_through_matching_alias() {
        let alias = with_selectors(
            entry("spiffe://example.org/cluster", SERVER),
            &["k8s:cluster:prod"],
        );
        let entries = vec![
            alias,
            entry("spiffe://example.org/api", "spiffe://example.org/cluster"),
        ];

        assert_eq!(
            authorized_ids(entries.clone(), &["k8s:cluster:prod", "k8s:ns:a"]),
            ["/api"]
        );
        assert!(authorized_ids(entries, &["k8s:cluster:dev"]).is_empty());
    }

    #[test]
    fn authorized_alias_needs_every_selector() {
        let alias = with_selectors(
            entry("spiffe://example.org/cluster", SERVER),
            &["k8s:cluster:prod", "k8s:zone:b"],
        );
        let entries = vec![
            alias,
            entry("spiffe://example.org/api", "spiffe://example.org/cluster"),
        ];

        assert!(authorized_ids(entries, &["k8s:cluster:prod"]).is_empty());
    }

    #[test]
    fn authorized_nested_entries() {
        let entries = vec![
            entry("spiffe://example.org/ca", AGENT),
            entry("spiffe://example.org/leaf", "spiffe://example.org/ca"),
            entry("spiffe://example.org/deeper", "spiffe://example.org/leaf"),
            entry(
                "spiffe://example.org/unrelated",
                "spiffe://example.org/elsewhere",
            ),
        ];

        assert_eq!(authorized_ids(entries, &[]), ["/ca", "/deeper", "/leaf"]);
    }

    #[test]
    fn authorized_cycle_ends() {
        let entries = vec![
            entry("spiffe://example.org/a", AGENT),
            entry("spiffe://example.org/b", "spiffe://example.org/a"),
            entry("spiffe://example.org/a", "spiffe://example.org/b"),
            entry("spiffe://example.org/self", "spiffe://example.org/self"),
        ];

        assert_eq!(authorized_ids(entries, &[]), ["/a", "/a", "/b"]);
    }

    #[test]
    fn authorized_cycle_through_agent_id() {
        let entries = vec![
            entry("spiffe://example.org/a", AGENT),
            entry(AGENT, "spiffe://example.org/a"),
        ];

        assert_eq!(
            authorized_ids(entries, &[]),
            ["/a", "/tessera/agent/join_token/a1"]
        );
    }

    #[test]
    fn authorized_skips_expired() {
        let mut expired = entry("spiffe://example.org/old", AGENT);
        expired.expires_at = Some(NOW - 1);
        let mut live = entry("spiffe://example.org/new", AGENT);
        live.expires_at = Some(NOW + 60);
        let mut at_limit = entry("spiffe://example.org/now", AGENT);
        at_limit.expires_at = Some(NOW);
        let below_expired = entry("spiffe://example.org/child", "spiffe://example.org/old");

        assert_eq!(
            authorized_ids(vec![expired, live, at_limit, below_expired], &[]),
            ["/new", "/now"]
        );
    }

    #[test]
    fn authorized_skips_expired_alias() {
        let mut alias = with_selectors(
            entry("spiffe://example.org/cluster", SERVER),
            &["k8s:cluster:prod"],
        );
        alias.expires_at = Some(NOW - 1);
        let entries = vec![
            alias,
            entry("spiffe://example.org/api", "spiffe://example.org/cluster"),
        ];

        assert!(authorized_ids(entries, &["k8s:cluster:prod"]).is_empty());
    }

    #[test]
    fn authorized_server_children_not_direct() {
        let entries = vec![with_selectors(
            entry("spiffe://example.org/cluster", SERVER),
            &["k8s:cluster:prod"],
        )];

        assert!(authorized_ids(entries, &["k8s:cluster:prod"]).is_empty());
    }

    #[test]
    fn next_expiry_picks_earliest_future() {
        let mut a = entry("spiffe://example.org/a", AGENT);
        a.expires_at = Some(NOW + 50);
        let mut b = entry("spiffe://example.org/b", AGENT);
        b.expires_at = Some(NOW + 10);
        let mut past = entry("spiffe://example.org/c", AGENT);
        past.expires_at = Some(NOW - 10);
        let never = entry("spiffe://example.org/d", AGENT);
        let entries: Vec<_> = [a, b, past, never].into_iter().map(Arc::new).collect();

        assert_eq!(next_expiry(&entries, NOW), Some(NOW + 10));
        assert_eq!(next_expiry(&entries[3..], NOW), None);
    }
}
