//! Certificate parameters for the X.509-SVID leaf and CA profiles.

use std::time::SystemTime;

use crate::id::{SpiffeId, TrustDomain};

use super::X509SvidError;

/// Returns parameters for an X.509-SVID leaf certificate: one URI SAN with
/// `id` plus DNS SANs, CA false, key usage digitalSignature, extended key
/// usage serverAuth and clientAuth, and a random serial number.
///
/// # Errors
///
/// Returns [`X509SvidError`] when a DNS name cannot be encoded.
pub fn svid_params(
    id: &SpiffeId,
    dns_names: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<rcgen::CertificateParams, X509SvidError> {
    todo!("{id}{dns_names:?}{not_before:?}{not_after:?}")
}

/// Returns parameters for a trust domain CA certificate: URI SAN
/// `spiffe://<td>`, CA true, key usage keyCertSign and cRLSign, and a random
/// serial number.
pub fn ca_params(
    td: &TrustDomain,
    not_before: SystemTime,
    not_after: SystemTime,
) -> rcgen::CertificateParams {
    todo!("{td}{not_before:?}{not_after:?}")
}
