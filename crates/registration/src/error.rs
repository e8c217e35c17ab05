//! The error type for selectors and registration entries.

/// Error returned when a selector, entry ID, DNS name or entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A selector string has no `:` separating type and value.
    #[error("invalid selector {0:?}: expected TYPE:VALUE such as unix:uid:1000")]
    SelectorFormat(String),
}
