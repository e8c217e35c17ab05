//! Trust bundles: the X.509 and JWT authorities of one trust domain, and
//! their encodings (the SPIFFE bundle JWK Set, PEM and concatenated DER).

mod certs;
mod jwks;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;

use crate::cert::CertInfo;
use crate::id::TrustDomain;
use crate::spki::PublicKeyParams;

/// Maximum size in bytes of an encoded bundle that the parsers accept.
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024;

/// Maximum number of authorities (X.509 and JWT together) in one bundle.
pub const MAX_BUNDLE_AUTHORITIES: usize = 1024;

/// Error returned when a bundle or one of its authorities is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The encoded bundle is larger than [`MAX_BUNDLE_BYTES`].
    #[error("bundle is {len} bytes, over the maximum of {max} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bundle has more than [`MAX_BUNDLE_AUTHORITIES`] keys.
    #[error("bundle has {count} keys, over the maximum of {max}")]
    TooManyKeys {
        /// Number of keys in the input or after the addition.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The JWK Set is not valid JSON of the expected shape.
    #[error("invalid bundle JSON: {0}")]
    Json(String),
    /// An entry of the JWK Set `keys` array is invalid.
    #[error("invalid key at index {index} of the bundle \"keys\" array: {reason}")]
    InvalidKey {
        /// Index in the `keys` array.
        index: usize,
        /// Description of the fault.
        reason: String,
    },
    /// An X.509 authority cannot be parsed or has an unsupported key.
    #[error("invalid X.509 authority: {0}")]
    InvalidX509Authority(String),
    /// An X.509 authority is not a CA certificate.
    #[error(
        "X.509 authority {subject:?} is not a CA certificate: expected basic constraints \
         cA true and, when key usage is present, keyCertSign"
    )]
    NotCa {
        /// Subject DN of the certificate.
        subject: String,
    },
    /// A JWT authority has an empty key ID.
    #[error("JWT authority has an empty key ID: every JWT-SVID key needs a kid")]
    EmptyKeyId,
    /// A JWT authority's public key is invalid or unsupported.
    #[error("invalid JWT authority {key_id:?}: {reason}")]
    InvalidJwtAuthority {
        /// Key ID.
        key_id: String,
        /// Description of the fault.
        reason: String,
    },
    /// Two JWT authorities share a key ID.
    #[error("duplicate JWT authority key ID {0:?}: key IDs must be unique within a bundle")]
    DuplicateKeyId(String),
    /// The PEM text cannot be parsed.
    #[error("invalid PEM bundle: {0}")]
    InvalidPem(String),
    /// A PEM block is not a `CERTIFICATE`.
    #[error("PEM block is labeled {0:?}: a PEM bundle contains only CERTIFICATE blocks")]
    WrongPemLabel(String),
    /// The PEM text contains no certificate.
    #[error("PEM bundle contains no CERTIFICATE block")]
    NoCertificates,
    /// Concatenated DER certificates cannot be split.
    #[error("invalid DER certificate at byte {offset} of the bundle: {reason}")]
    InvalidDer {
        /// Byte offset of the certificate that failed.
        offset: usize,
        /// Description of the fault.
        reason: String,
    },
}

/// A JWT signing key of a trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// Key ID, matched against the `kid` header of JWT-SVIDs.
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    pub public_key: Vec<u8>,
    /// Time after which the key leaves the bundle, when known. The SPIFFE
    /// bundle format has no field for it, so [`TrustBundle::to_jwks`] drops it.
    pub expires_at: Option<SystemTime>,
}

/// The X.509 and JWT authorities of one trust domain.
///
/// Every X.509 authority is a CA certificate with an EC or RSA key, and
/// every JWT authority has a unique non-empty key ID and an EC or RSA key:
/// the `add_*` methods and the parsers check this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<CertificateDer<'static>>,
    /// Public key of each X.509 authority, at the same index.
    x509_keys: Vec<PublicKeyParams>,
    jwt_authorities: Vec<JwtAuthority>,
    /// Public key of each JWT authority, at the same index.
    jwt_keys: Vec<PublicKeyParams>,
    refresh_hint: Option<Duration>,
    sequence_number: Option<u64>,
}

impl TrustBundle {
    /// Creates an empty bundle for `td`.
    pub fn new(td: TrustDomain) -> Self {
        Self {
            trust_domain: td,
            x509_authorities: Vec::new(),
            x509_keys: Vec::new(),
            jwt_authorities: Vec::new(),
            jwt_keys: Vec::new(),
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

    /// Returns the JWT key with ID `key_id` with its parsed parameters.
    pub(crate) fn jwt_key(&self, key_id: &str) -> Option<(&JwtAuthority, &PublicKeyParams)> {
        let index = self
            .jwt_authorities
            .iter()
            .position(|a| a.key_id == key_id)?;
        Some((&self.jwt_authorities[index], &self.jwt_keys[index]))
    }

    /// Returns whether the bundle has no authorities at all.
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }

    /// Adds an X.509 CA certificate. Adding a certificate that is already in
    /// the bundle does nothing.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the certificate cannot be parsed, is not
    /// a CA certificate, has a key that is not EC or RSA, or the bundle is full.
    pub fn add_x509_authority(&mut self, der: CertificateDer<'static>) -> Result<(), BundleError> {
        if self.x509_authorities.contains(&der) {
            return Ok(());
        }
        self.check_capacity()?;

        let info = CertInfo::parse(&der).map_err(BundleError::InvalidX509Authority)?;
        let can_sign = info.key_usage.is_none_or(|usage| usage.key_cert_sign);
        if !info.is_ca || !can_sign {
            return Err(BundleError::NotCa {
                subject: info.subject,
            });
        }
        let key =
            PublicKeyParams::from_spki(&info.spki).map_err(BundleError::InvalidX509Authority)?;

        self.x509_authorities.push(der);
        self.x509_keys.push(key);
        Ok(())
    }

    /// Removes an X.509 authority; returns whether it was present.
    pub fn remove_x509_authority(&mut self, der: &[u8]) -> bool {
        let Some(index) = self.x509_authorities.iter().position(|c| c.as_ref() == der) else {
            return false;
        };
        self.x509_authorities.remove(index);
        self.x509_keys.remove(index);
        true
    }

    /// Adds a JWT signing key.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the key ID is empty or already present,
    /// the public key is not a valid EC or RSA key, or the bundle is full.
    pub fn add_jwt_authority(&mut self, authority: JwtAuthority) -> Result<(), BundleError> {
        if authority.key_id.is_empty() {
            return Err(BundleError::EmptyKeyId);
        }
        if self.jwt_authority(&authority.key_id).is_some() {
            return Err(BundleError::DuplicateKeyId(authority.key_id));
        }
        self.check_capacity()?;

        let key = PublicKeyParams::from_spki(&authority.public_key).map_err(|reason| {
            BundleError::InvalidJwtAuthority {
                key_id: authority.key_id.clone(),
                reason,
            }
        })?;
        self.jwt_authorities.push(authority);
        self.jwt_keys.push(key);
        Ok(())
    }

    /// Removes the JWT authority with ID `key_id`; returns whether it was present.
    pub fn remove_jwt_authority(&mut self, key_id: &str) -> bool {
        let Some(index) = self.jwt_authorities.iter().position(|a| a.key_id == key_id) else {
            return false;
        };
        self.jwt_authorities.remove(index);
        self.jwt_keys.remove(index);
        true
    }

    fn check_capacity(&self) -> Result<(), BundleError> {
        let count = self.x509_authorities.len() + self.jwt_authorities.len();
        if count >= MAX_BUNDLE_AUTHORITIES {
            return Err(BundleError::TooManyKeys {
                count: count + 1,
                max: MAX_BUNDLE_AUTHORITIES,
            });
        }
        Ok(())
    }

    /// Returns the refresh hint: how often consumers should fetch the bundle.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Sets the refresh hint. The SPIFFE bundle format carries whole seconds.
    pub fn set_refresh_hint(&mut self, hint: Option<Duration>) {
        self.refresh_hint = hint;
    }

    /// Returns the sequence number.
    pub fn sequence_number(&self) -> Option<u64> {
        self.sequence_number
    }

    /// Sets the sequence number, which publishers increase on every change.
    pub fn set_sequence_number(&mut self, sequence: Option<u64>) {
        self.sequence_number = sequence;
    }
}

/// Rejects encoded input larger than [`MAX_BUNDLE_BYTES`].
fn check_input_size(len: usize) -> Result<(), BundleError> {
    if len > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge {
            len,
            max: MAX_BUNDLE_BYTES,
        });
    }
    Ok(())
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

impl<T: BundleSource + ?Sized> BundleSource for std::sync::Arc<T> {
    fn bundle_for(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        (**self).bundle_for(td)
    }
}

#[cfg(test)]
mod tests;
