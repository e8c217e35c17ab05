//! Sorted, deduplicated sets of selectors, such as the selectors that
//! attestation found for a workload or node.

use std::collections::BTreeSet;

use crate::Selector;

/// A sorted set of selectors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SelectorSet {
    selectors: BTreeSet<Selector>,
}

impl SelectorSet {
    /// Creates an empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a selector; returns `false` when it was already present.
    pub fn insert(&mut self, selector: Selector) -> bool {
        self.selectors.insert(selector)
    }

    /// Returns whether the set contains `selector`.
    pub fn contains(&self, selector: &Selector) -> bool {
        self.selectors.contains(selector)
    }

    /// Returns whether every selector in `selectors` is in the set. An empty
    /// `selectors` is contained in every set.
    pub fn contains_all<'a>(&self, selectors: impl IntoIterator<Item = &'a Selector>) -> bool {
        selectors.into_iter().all(|s| self.contains(s))
    }

    /// Returns the number of selectors.
    pub fn len(&self) -> usize {
        self.selectors.len()
    }

    /// Returns whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// Iterates over the selectors in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &Selector> {
        self.selectors.iter()
    }
}

impl FromIterator<Selector> for SelectorSet {
    fn from_iter<I: IntoIterator<Item = Selector>>(iter: I) -> Self {
        Self {
            selectors: iter.into_iter().collect(),
        }
    }
}

impl Extend<Selector> for SelectorSet {
    fn extend<I: IntoIterator<Item = Selector>>(&mut self, iter: I) {
        self.selectors.extend(iter);
    }
}

impl IntoIterator for SelectorSet {
    type Item = Selector;
    type IntoIter = std::collections::btree_set::IntoIter<Selector>;

    fn into_iter(self) -> Self::IntoIter {
        self.selectors.into_iter()
    }
}

impl<'a> IntoIterator for &'a SelectorSet {
    type Item = &'a Selector;
    type IntoIter = std::collections::btree_set::Iter<'a, Selector>;

    fn into_iter(self) -> Self::IntoIter {
        self.selectors.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> SelectorSet {
        values
            .iter()
            .map(|s| Selector::parse(s).expect("valid"))
            .collect()
    }

    #[test]
    fn set_sorts_and_deduplicates() {
        let selectors = set(&["unix:uid:1", "k8s:ns:a", "unix:uid:1"]);
        assert_eq!(selectors.len(), 2);
        let order: Vec<String> = selectors.iter().map(ToString::to_string).collect();
        assert_eq!(order, ["k8s:ns:a", "unix:uid:1"]);
    }

    #[test]
    fn set_contains_all() {
        let selectors = set(&["unix:uid:1", "unix:gid:2"]);
        let uid = Selector::parse("unix:uid:1").expect("valid");
        let other = Selector::parse("unix:uid:2").expect("valid");
        assert!(selectors.contains_all([&uid]));
        assert!(!selectors.contains_all([&uid, &other]));
        assert!(selectors.contains_all(std::iter::empty::<&Selector>()));
    }

    #[test]
    fn set_insert_reports_new_values() {
        let mut selectors = SelectorSet::new();
        assert!(selectors.is_empty());
        assert!(selectors.insert(Selector::parse("a:b").expect("valid")));
        assert!(!selectors.insert(Selector::parse("a:b").expect("valid")));
        selectors.extend(set(&["c:d"]));
        assert_eq!(selectors.into_iter().count(), 2);
    }
}
