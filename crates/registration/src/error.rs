//! The error type for selectors, entry IDs, DNS names and registration
//! entries. Every message names the field or value at fault and describes
//! a valid one.

use tessera_spiffe::IdError;

/// Error returned when a selector, entry ID, DNS name or entry is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A selector string has no `:` separating type and value.
    #[error("invalid selector {0:?}: expected TYPE:VALUE such as unix:uid:1000")]
    SelectorFormat(String),
    /// A selector type is empty, too long or has a character outside `[a-z0-9_]`.
    #[error(
        "invalid selector type {kind:?}: expected 1 to {max} characters of a-z, 0-9 and _, \
         such as unix",
        max = crate::selector::MAX_SELECTOR_TYPE_BYTES
    )]
    SelectorType {
        /// The type.
        kind: String,
    },
    /// A selector value is empty.
    #[error(
        "invalid selector \"{kind}:\": the value is empty, expected TYPE:VALUE such as unix:uid:1000"
    )]
    EmptySelectorValue {
        /// The selector type.
        kind: String,
    },
    /// A selector value is longer than the limit.
    #[error(
        "invalid selector of type {kind:?}: the value is {len} bytes, over the maximum of {max} bytes"
    )]
    SelectorValueTooLong {
        /// The selector type.
        kind: String,
        /// Length of the value in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A selector value contains a control character.
    #[error(
        "invalid selector {selector:?}: control character at byte {position} of the value; remove it"
    )]
    SelectorControlCharacter {
        /// The selector as `type:value`.
        selector: String,
        /// Byte offset of the character in the value.
        position: usize,
    },
    /// An entry ID is not a canonical UUID version 4.
    #[error(
        "invalid entry ID {0:?}: expected a lowercase hyphenated UUID version 4 such as \
         0b6e4c1e-1d4c-4c55-9a38-5b7d0f0e1a2b"
    )]
    InvalidEntryId(String),
    /// A required field is empty.
    #[error("{field} is empty: {hint}")]
    MissingField {
        /// Field name, as in the protobuf message.
        field: &'static str,
        /// Advice on the value to set.
        hint: &'static str,
    },
    /// A SPIFFE ID field is invalid.
    #[error("invalid {field}: {error}")]
    InvalidSpiffeId {
        /// Field name.
        field: &'static str,
        /// The parse error, whose message includes the value.
        error: IdError,
    },
    /// The entry's SPIFFE ID has no path, so no leaf SVID can carry it.
    #[error("invalid spiffe_id {0:?}: workload IDs need a path, such as {0}/web")]
    SpiffeIdWithoutPath(String),
    /// A `federates_with` value is not a trust domain name.
    #[error("invalid federates_with value: {0}")]
    InvalidTrustDomain(IdError),
    /// A TTL is negative.
    #[error(
        "invalid {field} {value}: expected a number of seconds above 0, or 0 for the server default"
    )]
    InvalidTtl {
        /// Field name.
        field: &'static str,
        /// The value in seconds.
        value: i64,
    },
    /// A time or counter field is negative.
    #[error("invalid {field} {value}: expected 0 or more")]
    Negative {
        /// Field name.
        field: &'static str,
        /// The value.
        value: i64,
    },
    /// A list field has more elements than the limit.
    #[error("{field} has {count} values, over the maximum of {max}")]
    TooMany {
        /// Field name.
        field: &'static str,
        /// Number of values.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The hint is longer than the limit.
    #[error("hint is {len} bytes, over the maximum of {max} bytes")]
    HintTooLong {
        /// Length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A DNS name is invalid.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidDnsName {
        /// The name.
        name: String,
        /// Description of the fault.
        reason: String,
    },
}
