//! Registration entries: which selectors, under which parent, earn which
//! SPIFFE ID, and the entry IDs that name them.

mod convert;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tessera_spiffe::{SpiffeId, TrustDomain};

use crate::{EntryError, Selector, SelectorSet};

/// Maximum number of selectors in one entry.
pub const MAX_ENTRY_SELECTORS: usize = 128;

/// Maximum number of DNS names in one entry.
pub const MAX_ENTRY_DNS_NAMES: usize = 64;

/// Maximum number of `federates_with` trust domains in one entry.
pub const MAX_ENTRY_FEDERATES_WITH: usize = 64;

/// Maximum length of an entry hint in bytes.
pub const MAX_ENTRY_HINT_BYTES: usize = 1024;

/// A registration entry ID: a lowercase hyphenated UUID version 4.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(String);

impl EntryId {
    /// Generates a random entry ID.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Parses an entry ID. Only the canonical form is accepted: lowercase,
    /// hyphenated, version 4, as [`EntryId::generate`] makes.
    ///
    /// # Errors
    ///
    /// Returns [`EntryError::InvalidEntryId`] when `s` is not in that form.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        let canonical = uuid::Uuid::try_parse(s)
            .ok()
            .filter(|uuid| uuid.get_version_num() == 4)
            .map(|uuid| uuid.hyphenated().to_string())
            .filter(|canonical| canonical == s);
        match canonical {
            Some(canonical) => Ok(Self(canonical)),
            None => Err(EntryError::InvalidEntryId(s.to_owned())),
        }
    }

    /// Returns the ID string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EntryId {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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

/// A registration entry.
///
/// Entries converted from protobuf with `TryFrom` are validated: the SPIFFE
/// ID has a path, selectors are non-empty, sorted and deduplicated, DNS
/// names are valid, and every list and the hint are within the limits of
/// this module. Code that builds an entry directly must keep those rules.
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
    /// Trust domains whose bundles matching workloads receive, sorted and
    /// deduplicated.
    pub federates_with: Vec<TrustDomain>,
    /// DNS SANs for X.509-SVIDs, in order, without duplicates.
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
    /// Returns whether every selector of the entry is in
    /// `workload_selectors`. An entry without selectors matches nothing.
    pub fn matches(&self, workload_selectors: &SelectorSet) -> bool {
        !self.selectors.is_empty() && workload_selectors.contains_all(&self.selectors)
    }

    /// Returns whether the entry has expired at `now` (Unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }
}

#[cfg(test)]
mod tests;
