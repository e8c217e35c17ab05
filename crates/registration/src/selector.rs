//! Selectors (`type:value` properties of a node or workload) and sorted
//! selector sets.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::EntryError;

/// A selector such as `unix:uid:1000`: a type (`unix`) and a value
/// (`uid:1000`) that may itself contain colons.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    kind: String,
    value: String,
}

impl Selector {
    /// Parses `type:value`, splitting at the first colon.
    ///
    /// # Errors
    ///
    /// Returns [`EntryError`] when the type or value is invalid.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        todo!("{s}")
    }

    /// Builds a selector from its type and value.
    ///
    /// # Errors
    ///
    /// Returns [`EntryError`] when the type or value is invalid.
    pub fn new(kind: &str, value: &str) -> Result<Self, EntryError> {
        todo!("{kind}{value}")
    }

    /// Returns the selector type, such as `unix`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Returns the selector value, such as `uid:1000`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

impl FromStr for Selector {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<tessera_proto::types::Selector> for Selector {
    type Error = EntryError;

    fn try_from(proto: tessera_proto::types::Selector) -> Result<Self, Self::Error> {
        Self::new(&proto.r#type, &proto.value)
    }
}

impl From<&Selector> for tessera_proto::types::Selector {
    fn from(selector: &Selector) -> Self {
        Self {
            r#type: selector.kind.clone(),
            value: selector.value.clone(),
        }
    }
}

/// A sorted set of selectors, such as the selectors of an attested workload.
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

    /// Returns whether every selector in `selectors` is in the set.
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
