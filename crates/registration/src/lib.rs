//! Registration entries and selectors for Tessera: validated domain types,
//! the rules for which workloads an entry matches, and conversions to and
//! from the protobuf messages.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod dns;
mod entry;
mod error;
mod selector;
mod selector_set;

pub use dns::{MAX_DNS_NAME_BYTES, validate_dns_name};
pub use entry::{
    EntryId, MAX_ENTRY_DNS_NAMES, MAX_ENTRY_FEDERATES_WITH, MAX_ENTRY_HINT_BYTES,
    MAX_ENTRY_SELECTORS, RegistrationEntry,
};
pub use error::EntryError;
pub use selector::{MAX_SELECTOR_TYPE_BYTES, MAX_SELECTOR_VALUE_BYTES, Selector};
pub use selector_set::SelectorSet;
