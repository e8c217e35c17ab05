//! Authorities: a self-signed X.509 CA and a JWT signing key that share one
//! lifetime and rotate together.

use std::fmt;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use tessera_spiffe::bundle::JwtAuthority;
use tessera_spiffe::id::TrustDomain;
use tessera_spiffe::key::{KeyAlgorithm, PrivateKey};

use crate::error::CaError;
use crate::schedule::Lifetime;
use crate::state::AuthorityRecord;
use crate::times::whole_seconds;
use crate::x509::{self, CaIssuer};

/// How far certificates are backdated, so that peers whose clocks run a few
/// seconds behind accept a certificate signed just now.
pub(crate) const BACKDATE: Duration = Duration::from_secs(10);

/// The public part of an authority, which the trust bundle publishes.
#[derive(Clone)]
pub(crate) struct PublishedAuthority {
    /// Identifier, the stem of the authority's file names.
    pub id: String,
    /// The self-signed CA certificate.
    pub certificate: CertificateDer<'static>,
    /// Validity of the CA certificate, also that of the JWT key.
    pub lifetime: Lifetime,
    /// The `kid` of the JWT signing key.
    pub jwt_key_id: String,
    /// DER SubjectPublicKeyInfo of the JWT signing key.
    pub jwt_public_key: Vec<u8>,
}

impl PublishedAuthority {
    /// Rebuilds a stored authority, checking that the certificate is a CA of `trust_domain`.
    pub fn from_parts(
        trust_domain: &TrustDomain,
        record: &AuthorityRecord,
        certificate: CertificateDer<'static>,
        jwt_public_key: Vec<u8>,
    ) -> Result<Self, String> {
        let lifetime = x509::inspect_ca(&certificate, trust_domain)?;
        Ok(Self {
            id: record.id.clone(),
            certificate,
            lifetime,
            jwt_key_id: record.jwt_key_id.clone(),
            jwt_public_key,
        })
    }

    /// Returns the state file entry naming this authority.
    pub fn record(&self) -> AuthorityRecord {
        AuthorityRecord {
            id: self.id.clone(),
            jwt_key_id: self.jwt_key_id.clone(),
        }
    }

    /// Returns the JWT key as a bundle entry that expires with the authority.
    pub fn jwt_authority(&self) -> JwtAuthority {
        JwtAuthority {
            key_id: self.jwt_key_id.clone(),
            public_key: self.jwt_public_key.clone(),
            expires_at: Some(self.lifetime.not_after),
        }
    }
}

impl fmt::Debug for PublishedAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishedAuthority")
            .field("id", &self.id)
            .field("lifetime", &self.lifetime)
            .field("jwt_key_id", &self.jwt_key_id)
            .finish_non_exhaustive()
    }
}

/// An authority with its private keys, able to sign SVIDs.
pub(crate) struct SigningAuthority {
    published: PublishedAuthority,
    ca_key: PrivateKey,
    issuer: CaIssuer,
    jwt_key: PrivateKey,
}

impl SigningAuthority {
    /// Generates the keys and the self-signed CA certificate of a new authority,
    /// valid from `now` (backdated by [`BACKDATE`]) for `ttl`.
    pub fn generate(
        trust_domain: &TrustDomain,
        algorithm: KeyAlgorithm,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let now = whole_seconds(now);
        let not_after = now
            .checked_add(ttl)
            .map(whole_seconds)
            .ok_or(CaError::TimeOutOfRange { time: now, ttl })?;
        let lifetime = Lifetime {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after,
        };

        let id = random_hex::<8>();
        let ca_key = generate_key(algorithm)?;
        let (certificate, issuer) = x509::create_ca(trust_domain, &id, &ca_key, lifetime)?;
        let jwt_key = generate_key(algorithm)?;

        let published = PublishedAuthority {
            id,
            certificate,
            lifetime,
            jwt_key_id: random_hex::<16>(),
            jwt_public_key: jwt_key.public_key_der(),
        };
        Ok(Self {
            published,
            ca_key,
            issuer,
            jwt_key,
        })
    }

    /// Rebuilds a stored authority, checking that both keys match their public halves.
    pub fn from_parts(
        published: PublishedAuthority,
        ca_key: PrivateKey,
        jwt_key: PrivateKey,
    ) -> Result<Self, String> {
        let issuer = x509::load_issuer(&published.certificate, &ca_key)?;
        if jwt_key.public_key_der() != published.jwt_public_key {
            return Err("the JWT private key does not match the JWT public key".to_string());
        }

        Ok(Self {
            published,
            ca_key,
            issuer,
            jwt_key,
        })
    }

    /// Returns the public part of the authority.
    pub fn published(&self) -> &PublishedAuthority {
        &self.published
    }

    /// Returns the CA private key.
    pub fn ca_key(&self) -> &PrivateKey {
        &self.ca_key
    }

    /// Returns the JWT signing key.
    pub fn jwt_key(&self) -> &PrivateKey {
        &self.jwt_key
    }

    /// Returns the signer of X.509-SVIDs.
    pub fn issuer(&self) -> &CaIssuer {
        &self.issuer
    }

    /// Returns the validity of the authority.
    pub fn lifetime(&self) -> Lifetime {
        self.published.lifetime
    }
}

impl fmt::Debug for SigningAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningAuthority")
            .field("published", &self.published)
            .field("algorithm", &self.ca_key.algorithm())
            .finish_non_exhaustive()
    }
}

fn generate_key(algorithm: KeyAlgorithm) -> Result<PrivateKey, CaError> {
    PrivateKey::generate(algorithm).map_err(|source| CaError::KeyGeneration { algorithm, source })
}

/// Returns `N` random bytes as lowercase hex.
fn random_hex<const N: usize>() -> String {
    hex::encode(rand::random::<[u8; N]>())
}
