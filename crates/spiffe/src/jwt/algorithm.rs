//! The JWS algorithms that the JWT-SVID specification allows, and the
//! aws-lc-rs verification algorithm and key type each one needs.

use std::fmt;

use aws_lc_rs::signature::{self, VerificationAlgorithm};

use crate::spki::{Curve, PublicKeyParams};

/// A JWS `alg` value allowed in JWT-SVIDs (RFC 7518 sections 3.3 to 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA with P-256 and SHA-256.
    Es256,
    /// ECDSA with P-384 and SHA-384.
    Es384,
    /// ECDSA with P-521 and SHA-512.
    Es512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
}

impl JwsAlgorithm {
    const ALL: [JwsAlgorithm; 9] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Es256,
        Self::Es384,
        Self::Es512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
    ];

    /// Returns the `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
        }
    }

    /// Returns the algorithm for an `alg` header value, matched exactly.
    pub fn from_header(alg: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == alg)
    }

    /// Returns the verification algorithm when `key` has the type this
    /// algorithm needs: the matching curve for ES*, RSA for RS* and PS*.
    pub(crate) fn verification_for(
        self,
        key: &PublicKeyParams,
    ) -> Option<&'static dyn VerificationAlgorithm> {
        let curve = match key {
            PublicKeyParams::Ec { curve, .. } => Some(*curve),
            PublicKeyParams::Rsa { .. } => None,
        };
        let verification: &'static dyn VerificationAlgorithm = match (self, curve) {
            (Self::Es256, Some(Curve::P256)) => &signature::ECDSA_P256_SHA256_FIXED,
            (Self::Es384, Some(Curve::P384)) => &signature::ECDSA_P384_SHA384_FIXED,
            (Self::Es512, Some(Curve::P521)) => &signature::ECDSA_P521_SHA512_FIXED,
            (Self::Rs256, None) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Self::Rs384, None) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Self::Rs512, None) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (Self::Ps256, None) => &signature::RSA_PSS_2048_8192_SHA256,
            (Self::Ps384, None) => &signature::RSA_PSS_2048_8192_SHA384,
            (Self::Ps512, None) => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        };
        Some(verification)
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Describes a key type for messages, such as `EC P-256` or `RSA`.
pub(crate) fn key_type_name(key: &PublicKeyParams) -> String {
    match key {
        PublicKeyParams::Ec { curve, .. } => format!("EC {}", curve.jwk_name()),
        PublicKeyParams::Rsa { .. } => "RSA".to_owned(),
    }
}
