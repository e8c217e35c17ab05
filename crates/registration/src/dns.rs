//! DNS name checks for the DNS SANs of X.509-SVIDs.

use crate::EntryError;

/// Checks that `name` is a valid DNS name for an X.509-SVID DNS SAN.
///
/// # Errors
///
/// Returns [`EntryError`] naming the invalid label.
pub fn validate_dns_name(name: &str) -> Result<(), EntryError> {
    todo!("{name}")
}
