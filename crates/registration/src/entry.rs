//! Registration entries: which selectors, under which parent, earn which
//! SPIFFE ID.

use std::fmt;
use std::time::Duration;

use tessera_spiffe::{SpiffeId, TrustDomain};

use crate::{EntryError, Selector, SelectorSet};

/// A registration entry ID: a lowercase hyphenated UUID version 4.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(String);

impl EntryId {
    /// Generates a random entry ID.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Parses an entry ID.
    ///
    /// # Errors
    ///
    /// Returns [`EntryError`] when `s` is not a hyphenated UUID.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        todo!("{s}")
    }

    /// Returns the ID string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for EntryId {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for EntryId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated registration entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationEntry {
    /// Entry ID.
    pub id: EntryId,
    /// SPIFFE ID issued to matching workloads.
    pub spiffe_id: SpiffeId,
    /// Agent ID or node alias under which the entry applies.
    pub parent_id: SpiffeId,
    /// Selectors, sorted, deduplicated and non-empty.
    pub selectors: Vec<Selector>,
    /// X.509-SVID lifetime; `None` means the server default.
    pub x509_svid_ttl: Option<Duration>,
    /// JWT-SVID lifetime; `None` means the server default.
    pub jwt_svid_ttl: Option<Duration>,
    /// Trust domains whose bundles matching workloads receive.
    pub federates_with: Vec<TrustDomain>,
    /// DNS SANs for X.509-SVIDs.
    pub dns_names: Vec<String>,
    /// Hint returned to workloads to tell SVIDs apart.
    pub hint: String,
    /// Whether the workload may use the admin API.
    pub admin: bool,
    /// Whether the workload may act as a downstream CA.
    pub downstream: bool,
    /// Unix seconds after which the entry stops granting SVIDs.
    pub expires_at: Option<i64>,
    /// Revision, incremented by the store on each update.
    pub revision: i64,
    /// Unix seconds of creation.
    pub created_at: i64,
}

impl RegistrationEntry {
    /// Returns whether every selector of the entry is in `workload_selectors`.
    pub fn matches(&self, workload_selectors: &SelectorSet) -> bool {
        !self.selectors.is_empty() && workload_selectors.contains_all(&self.selectors)
    }
}

impl TryFrom<tessera_proto::types::Entry> for RegistrationEntry {
    type Error = EntryError;

    fn try_from(proto: tessera_proto::types::Entry) -> Result<Self, Self::Error> {
        todo!("{proto:?}")
    }
}

impl From<&RegistrationEntry> for tessera_proto::types::Entry {
    fn from(entry: &RegistrationEntry) -> Self {
        todo!("{entry:?}")
    }
}
