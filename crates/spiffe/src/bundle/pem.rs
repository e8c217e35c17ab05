//! X.509 authorities as PEM and as concatenated DER.

use crate::id::TrustDomain;

use super::{BundleError, TrustBundle};

impl TrustBundle {
    /// Returns the X.509 authorities as concatenated DER certificates.
    pub fn x509_authorities_der(&self) -> Vec<u8> {
        todo!()
    }

    /// Parses concatenated DER CA certificates into a bundle for `td`.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when a certificate is malformed or not a CA.
    pub fn from_x509_der(td: &TrustDomain, der: &[u8]) -> Result<Self, BundleError> {
        todo!("{td}{}", der.len())
    }

    /// Returns the X.509 authorities as PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        todo!()
    }

    /// Parses PEM `CERTIFICATE` blocks into a bundle for `td`.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the PEM or a certificate is invalid.
    pub fn from_pem(td: &TrustDomain, pem: &str) -> Result<Self, BundleError> {
        todo!("{td}{}", pem.len())
    }
}
