//! X.509-SVIDs: certificate profiles for CAs and leaves, SPIFFE ID
//! extraction, and chain validation against trust bundles.

mod build;
mod validate;

pub use build::{ca_params, svid_params};
pub use validate::{VerifiedX509Svid, spiffe_id_from_certificate, validate_x509_svid};

use rustls_pki_types::CertificateDer;

use crate::cert::{CertInfo, format_unix_time};
use crate::id::{IdError, SpiffeId, TrustDomain};
use crate::key::{KeyError, PrivateKey};
use crate::spki::PublicKeyParams;

/// Error returned when an X.509-SVID cannot be built or fails validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509SvidError {
    /// The certificate chain is empty.
    #[error("certificate chain is empty: expected the leaf certificate first")]
    EmptyChain,
    /// A certificate of the chain cannot be parsed.
    #[error("certificate {index} of the chain cannot be parsed: {reason}")]
    Certificate {
        /// Position in the chain, 0 for the leaf.
        index: usize,
        /// Description of the fault.
        reason: String,
    },
    /// The certificate has no URI SAN.
    #[error(
        "certificate has no URI SAN: an X.509-SVID carries its SPIFFE ID in exactly one URI SAN"
    )]
    NoUriSan,
    /// The certificate has more than one URI SAN.
    #[error("certificate has {count} URI SANs: an X.509-SVID must have exactly one")]
    MultipleUriSans {
        /// Number of URI SANs.
        count: usize,
    },
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid SPIFFE ID: {0}")]
    InvalidId(#[from] IdError),
    /// A leaf SVID has a SPIFFE ID without a path.
    #[error(
        "leaf SPIFFE ID {0} has no path: leaf X.509-SVIDs need an ID such as spiffe://<trust domain>/<workload>"
    )]
    LeafIdWithoutPath(SpiffeId),
    /// The leaf certificate is a CA.
    #[error(
        "leaf certificate {0} is a CA certificate: a leaf X.509-SVID must have basic constraints cA false"
    )]
    LeafIsCa(SpiffeId),
    /// The leaf certificate has no key usage extension.
    #[error("leaf certificate {0} has no key usage extension: expected digitalSignature")]
    MissingKeyUsage(SpiffeId),
    /// The leaf certificate's key usage lacks digitalSignature.
    #[error("leaf certificate {0} does not set the digitalSignature key usage")]
    MissingDigitalSignature(SpiffeId),
    /// The leaf certificate's key usage allows signing certificates or CRLs.
    #[error("leaf certificate {id} sets the {usage} key usage, which only CA certificates may set")]
    LeafCanSign {
        /// SPIFFE ID of the leaf.
        id: SpiffeId,
        /// `keyCertSign` or `cRLSign`.
        usage: &'static str,
    },
    /// The leaf's extended key usage lacks serverAuth or clientAuth.
    #[error(
        "leaf certificate {0} has an extended key usage without both serverAuth and clientAuth"
    )]
    ExtendedKeyUsage(SpiffeId),
    /// A certificate after the leaf is not a CA certificate.
    #[error(
        "certificate {index} of the chain ({subject:?}) is not a CA certificate: \
         intermediates need basic constraints cA true and keyCertSign"
    )]
    IntermediateNotCa {
        /// Position in the chain.
        index: usize,
        /// Subject DN.
        subject: String,
    },
    /// No bundle is known for the leaf's trust domain.
    #[error("no trust bundle for trust domain {0}")]
    NoBundle(TrustDomain),
    /// The bundle of the leaf's trust domain has no X.509 authorities.
    #[error("the trust bundle of {0} has no X.509 authorities")]
    NoX509Authorities(TrustDomain),
    /// A certificate of the chain has expired.
    #[error("a certificate of the chain expired at {} (validation time {})", format_unix_time(*not_after), format_unix_time(*now))]
    Expired {
        /// notAfter, Unix seconds.
        not_after: u64,
        /// Validation time, Unix seconds.
        now: u64,
    },
    /// A certificate of the chain is not valid yet.
    #[error("a certificate of the chain is not valid until {} (validation time {})", format_unix_time(*not_before), format_unix_time(*now))]
    NotYetValid {
        /// notBefore, Unix seconds.
        not_before: u64,
        /// Validation time, Unix seconds.
        now: u64,
    },
    /// Path validation to the bundle failed.
    #[error("certificate chain does not verify against the bundle of {trust_domain}: {reason}")]
    Untrusted {
        /// Trust domain of the bundle used.
        trust_domain: TrustDomain,
        /// The path validation error.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the public key of leaf certificate {0}")]
    KeyMismatch(SpiffeId),
    /// A DNS name cannot go into a certificate.
    #[error("invalid DNS name {0:?} for an X.509-SVID: expected ASCII such as web.example.org")]
    InvalidDnsName(String),
    /// The validity period is empty.
    #[error("invalid validity period: notAfter must be later than notBefore")]
    InvalidValidity,
    /// A key error.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// An X.509-SVID with its private key.
///
/// The leaf follows the X.509-SVID leaf profile and matches the key; `Debug`
/// does not print the key.
#[derive(Clone)]
pub struct X509Svid {
    spiffe_id: SpiffeId,
    cert_chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKey,
}

impl X509Svid {
    /// Builds an SVID from a chain (leaf first) and the leaf's private key.
    /// This checks the leaf profile and the key, not the chain's signatures.
    ///
    /// # Errors
    ///
    /// Returns [`X509SvidError`] when the chain is empty, the leaf does not
    /// follow the X.509-SVID leaf profile, or its public key does not match
    /// `private_key`.
    pub fn new(
        cert_chain: Vec<CertificateDer<'static>>,
        private_key: PrivateKey,
    ) -> Result<Self, X509SvidError> {
        let leaf_der = cert_chain.first().ok_or(X509SvidError::EmptyChain)?;
        let leaf = CertInfo::parse(leaf_der)
            .map_err(|reason| X509SvidError::Certificate { index: 0, reason })?;
        let spiffe_id = validate::check_leaf(&leaf)?;

        let leaf_key = PublicKeyParams::from_spki(&leaf.spki);
        let own_key = PublicKeyParams::from_spki(&private_key.public_key_der());
        if leaf_key.is_err() || leaf_key != own_key {
            return Err(X509SvidError::KeyMismatch(spiffe_id));
        }
        Ok(Self {
            spiffe_id,
            cert_chain,
            private_key,
        })
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
        // `new` rejects an empty chain.
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

#[cfg(test)]
mod tests;
