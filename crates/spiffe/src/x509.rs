//! X.509-SVIDs: certificate profiles for CAs and leaves, SPIFFE ID
//! extraction, and chain validation against trust bundles.

mod build;
mod validate;

pub use build::{ca_params, svid_params};
pub use validate::{VerifiedX509Svid, spiffe_id_from_certificate, validate_x509_svid};

use rustls_pki_types::CertificateDer;

use crate::id::{IdError, SpiffeId};
use crate::key::{KeyError, PrivateKey};

/// Error returned when an X.509-SVID cannot be built or fails validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509SvidError {
    /// The certificate chain is empty.
    #[error("certificate chain is empty: expected the leaf certificate first")]
    EmptyChain,
    /// The SPIFFE ID in a certificate is invalid.
    #[error("invalid SPIFFE ID in certificate: {0}")]
    InvalidId(#[from] IdError),
    /// A key error.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// An X.509-SVID with its private key.
#[derive(Clone)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    cert_chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKey,
}

impl X509Svid {
    /// Builds an SVID from a chain (leaf first) and the leaf's private key.
    ///
    /// # Errors
    ///
    /// Returns [`X509SvidError`] when the leaf does not follow the X.509-SVID
    /// leaf profile or its public key does not match `key`.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        private_key: PrivateKey,
    ) -> Result<Self, X509SvidError> {
        todo!("{}{:?}", cert_chain.len(), private_key)
    }

    /// Returns the SPIFFE ID of the leaf certificate.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Returns the certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// Returns the leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.cert_chain[0]
    }

    /// Returns the private key of the leaf.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private_key
    }
}

impl std::fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.cert_chain.len())
            .field("private_key", &self.private_key)
            .finish()
    }
}
