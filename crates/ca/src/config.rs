//! Settings of a certificate authority and where it keeps its keys.

use std::path::PathBuf;
use std::time::Duration;

use tessera_spiffe::id::TrustDomain;
use tessera_spiffe::key::KeyAlgorithm;

use crate::error::CaError;

/// Shortest accepted CA lifetime. Rotation steps come at 1/2 and 5/6 of it,
/// and a shorter lifetime would leave peers seconds to fetch a new bundle.
pub const MIN_CA_TTL: Duration = Duration::from_secs(60);

/// Longest accepted CA lifetime (100 years), which keeps every certificate
/// date well inside the range X.509 can encode.
pub const MAX_CA_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Settings of the trust domain's certificate authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaConfig {
    /// Trust domain whose SVIDs the CA signs.
    pub trust_domain: TrustDomain,
    /// Algorithm of the CA key and of the JWT signing key.
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of each X.509 CA certificate and JWT signing key.
    pub ca_ttl: Duration,
    /// Value of the `iss` claim in minted JWT-SVIDs; no claim when `None`.
    pub jwt_issuer: Option<String>,
}

impl CaConfig {
    /// Creates settings with the default key algorithm, a 24 hour CA lifetime and no issuer.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            key_algorithm: KeyAlgorithm::default(),
            ca_ttl: Duration::from_secs(24 * 3600),
            jwt_issuer: None,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`CaError::InvalidCaTtl`] when `ca_ttl` is outside
    /// [`MIN_CA_TTL`]..=[`MAX_CA_TTL`], and [`CaError::InvalidJwtIssuer`] when
    /// `jwt_issuer` is empty or contains whitespace.
    pub fn validate(&self) -> Result<(), CaError> {
        if !(MIN_CA_TTL..=MAX_CA_TTL).contains(&self.ca_ttl) {
            return Err(CaError::InvalidCaTtl { ttl: self.ca_ttl });
        }

        if let Some(issuer) = &self.jwt_issuer
            && (issuer.is_empty() || issuer.chars().any(char::is_whitespace))
        {
            return Err(CaError::InvalidJwtIssuer {
                issuer: issuer.clone(),
            });
        }

        Ok(())
    }
}

/// Location of the CA's private keys, certificates and rotation state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyStorage {
    /// Keys live only in the process: every start creates a new CA.
    Memory,
    /// Keys, certificates and the rotation state live in this directory, so a
    /// restarted server keeps its CA.
    Disk(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CaConfig {
        CaConfig::new(TrustDomain::new("example.org").expect("valid trust domain"))
    }

    #[test]
    fn validate_accepts_defaults() {
        assert!(config().validate().is_ok());
    }

    #[test]
    fn validate_ca_ttl_table() {
        let cases = [
            (Duration::from_secs(59), false),
            (Duration::from_secs(60), true),
            (Duration::from_secs(3600), true),
            (MAX_CA_TTL, true),
            (MAX_CA_TTL + Duration::from_secs(1), false),
        ];

        for (ttl, ok) in cases {
            let mut c = config();
            c.ca_ttl = ttl;
            assert_eq!(c.validate().is_ok(), ok, "ttl {ttl:?}");
        }
    }

    #[test]
    fn validate_jwt_issuer_table() {
        let cases = [
            ("https://oidc.example.org", true),
            ("", false),
            ("https://a b", false),
        ];

        for (issuer, ok) in cases {
            let mut c = config();
            c.jwt_issuer = Some(issuer.to_string());
            assert_eq!(c.validate().is_ok(), ok, "issuer {issuer:?}");
        }
    }

    #[test]
    fn validate_accepts_every_key_algorithm() {
        for alg in [
            KeyAlgorithm::EcP256,
            KeyAlgorithm::EcP384,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa4096,
        ] {
            let mut c = config();
            c.key_algorithm = alg;
            assert!(c.validate().is_ok(), "algorithm {alg}");
        }
    }
}
