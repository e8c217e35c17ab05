//! Registration entries and selectors for Tessera: validated domain types,
//! the rules for which workloads an entry matches, and conversions to and
//! from the protobuf messages.

mod dns;
mod entry;
mod error;
mod selector;

pub use dns::validate_dns_name;
pub use entry::{EntryId, RegistrationEntry};
pub use error::EntryError;
pub use selector::{Selector, SelectorSet};
