//! X.509-SVID validation: the leaf profile checks from the X.509-SVID
//! specification, then path validation to the bundle of the leaf's trust
//! domain.

use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

use crate::bundle::BundleSource;
use crate::id::SpiffeId;

use super::X509SvidError;

/// An X.509-SVID whose chain was validated. Only [`validate_x509_svid`]
/// makes one.
#[derive(Debug, Clone)]
pub struct VerifiedX509Svid {
    spiffe_id: SpiffeId,
    not_after: SystemTime,
    chain: Vec<CertificateDer<'static>>,
}

impl VerifiedX509Svid {
    /// Returns the SPIFFE ID of the leaf.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Returns the leaf's notAfter time.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Returns the presented chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

/// Returns the SPIFFE ID in the single URI SAN of a DER certificate.
///
/// # Errors
///
/// Returns [`X509SvidError`] when the certificate cannot be parsed or does
/// not have exactly one URI SAN holding a valid SPIFFE ID.
pub fn spiffe_id_from_certificate(der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    todo!("{}", der.len())
}

/// Validates an X.509-SVID chain (leaf first) at `now` against the bundle of
/// the leaf's trust domain.
///
/// # Errors
///
/// Returns [`X509SvidError`] naming the failed check.
pub fn validate_x509_svid(
    chain: &[CertificateDer<'_>],
    bundles: &impl BundleSource,
    now: SystemTime,
) -> Result<VerifiedX509Svid, X509SvidError> {
    todo!("{}{:?}", chain.len(), now)
}
