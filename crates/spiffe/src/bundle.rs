//! Trust bundles: the X.509 and JWT authorities of one trust domain, in the
//! SPIFFE bundle format (a JWK Set), PEM and concatenated DER.

mod jwks;
mod pem;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;

use crate::id::TrustDomain;

/// Error returned when a bundle or one of its authorities is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The JWK Set is not valid JSON of the expected shape.
    #[error("invalid bundle JSON: {0}")]
    Json(String),
}

/// A JWT signing key of a trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// Key ID, matched against the `kid` header of JWT-SVIDs.
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// Time after which the key leaves the bundle, when known.
    pub expires_at: Option<SystemTime>,
}

/// The X.509 and JWT authorities of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<CertificateDer<'static>>,
    jwt_authorities: Vec<JwtAuthority>,
    refresh_hint: Option<Duration>,
    sequence_number: Option<u64>,
}

impl TrustBundle {
    /// Creates an empty bundle for `td`.
    pub fn new(td: TrustDomain) -> Self {
        Self {
            trust_domain: td,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            refresh_hint: None,
            sequence_number: None,
        }
    }

    /// Returns the trust domain of the bundle.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Returns the X.509 CA certificates.
    pub fn x509_authorities(&self) -> &[CertificateDer<'static>] {
        &self.x509_authorities
    }

    /// Returns the JWT signing keys.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// Returns the JWT signing key with ID `key_id`.
    pub fn jwt_authority(&self, key_id: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.key_id == key_id)
    }

    /// Adds an X.509 CA certificate.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the certificate is not a CA certificate.
    pub fn add_x509_authority(&mut self, der: CertificateDer<'static>) -> Result<(), BundleError> {
        todo!("{}", der.len())
    }

    /// Adds a JWT signing key.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the key is invalid or its ID is taken.
    pub fn add_jwt_authority(&mut self, authority: JwtAuthority) -> Result<(), BundleError> {
        todo!("{}", authority.key_id)
    }

    /// Returns the refresh hint.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Sets the refresh hint.
    pub fn set_refresh_hint(&mut self, hint: Option<Duration>) {
        self.refresh_hint = hint;
    }

    /// Returns the sequence number.
    pub fn sequence_number(&self) -> Option<u64> {
        self.sequence_number
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, sequence: Option<u64>) {
        self.sequence_number = sequence;
    }
}

/// A source of trust bundles keyed by trust domain.
pub trait BundleSource {
    /// Returns the bundle of `td`, if the source has one.
    fn bundle_for(&self, td: &TrustDomain) -> Option<&TrustBundle>;
}

impl BundleSource for TrustBundle {
    fn bundle_for(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        (self.trust_domain == *td).then_some(self)
    }
}

impl<S: std::hash::BuildHasher> BundleSource for HashMap<TrustDomain, TrustBundle, S> {
    fn bundle_for(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        self.get(td)
    }
}

impl BundleSource for BTreeMap<TrustDomain, TrustBundle> {
    fn bundle_for(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        self.get(td)
    }
}

impl<T: BundleSource + ?Sized> BundleSource for &T {
    fn bundle_for(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        (**self).bundle_for(td)
    }
}
