//! JWT-SVIDs: minting signed tokens (JWS compact serialization) and
//! validating them against the JWT authorities of the subject's trust
//! domain. Signing and verification use aws-lc-rs directly, and the JOSE
//! header is parsed strictly here rather than by a general JWT library.

mod algorithm;
mod mint;
mod validate;

pub use algorithm::JwsAlgorithm;
pub use mint::mint_jwt_svid;
pub use validate::{MAX_JWT_BYTES, VerifiedJwtSvid, validate_jwt_svid};

use std::fmt;
use std::time::SystemTime;

use crate::cert::format_unix_time;
use crate::id::{IdError, SpiffeId, TrustDomain};
use crate::key::KeyError;

/// Error returned when a JWT-SVID cannot be minted or fails validation.
///
/// No variant contains the token, which is a bearer credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSvidError {
    /// The token is longer than [`MAX_JWT_BYTES`].
    #[error("JWT-SVID is {len} bytes, over the maximum of {max} bytes")]
    TooLarge {
        /// Length of the token.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not a well-formed JWS compact serialization.
    #[error("malformed JWT-SVID: {0}")]
    Malformed(String),
    /// The `alg` header is not one the JWT-SVID specification allows.
    #[error(
        "JWT-SVID alg {0:?} is not allowed: expected one of RS256, RS384, RS512, ES256, \
         ES384, ES512, PS256, PS384, PS512"
    )]
    UnsupportedAlgorithm(String),
    /// The `typ` header is neither `JWT` nor `JOSE`.
    #[error("JWT-SVID typ {0:?} is not allowed: expected \"JWT\" or \"JOSE\"")]
    InvalidType(String),
    /// The header has no `kid`, so no bundle key can be chosen.
    #[error("JWT-SVID has no kid header: Tessera needs it to find the signing key in the bundle")]
    MissingKeyId,
    /// The `sub` claim is missing or not a string.
    #[error("JWT-SVID has no sub claim: expected the SPIFFE ID of the workload")]
    MissingSubject,
    /// The `sub` claim is not a valid SPIFFE ID.
    #[error("JWT-SVID sub claim is not a valid SPIFFE ID: {0}")]
    InvalidSubject(IdError),
    /// No bundle is known for the subject's trust domain.
    #[error("no trust bundle for trust domain {0}, the trust domain of the JWT-SVID subject")]
    NoBundle(TrustDomain),
    /// The subject's bundle has no key with the token's `kid`.
    #[error("no JWT authority with key ID {key_id:?} in the bundle of {trust_domain}")]
    UnknownKeyId {
        /// The `kid` header.
        key_id: String,
        /// Trust domain of the bundle searched.
        trust_domain: TrustDomain,
    },
    /// The `alg` header does not fit the type of the bundle key.
    #[error("JWT-SVID alg {alg} cannot be used with the {key_type} key {key_id:?}")]
    AlgorithmKeyMismatch {
        /// The `alg` header.
        alg: JwsAlgorithm,
        /// The `kid` header.
        key_id: String,
        /// Key type, such as `EC P-256` or `RSA`.
        key_type: String,
    },
    /// The signature does not verify with the bundle key.
    #[error("JWT-SVID signature does not verify with key {key_id:?}")]
    InvalidSignature {
        /// The `kid` header.
        key_id: String,
    },
    /// A registered claim has the wrong JSON type.
    #[error("JWT-SVID claim {name:?} is invalid: {reason}")]
    InvalidClaim {
        /// Claim name.
        name: &'static str,
        /// Description of the fault.
        reason: String,
    },
    /// The `exp` claim is missing.
    #[error("JWT-SVID has no exp claim: JWT-SVIDs must expire")]
    MissingExpiration,
    /// The token has expired.
    #[error(
        "JWT-SVID expired at {} (validation time {})",
        format_unix_time(*expires_at),
        format_unix_time(*now)
    )]
    Expired {
        /// The `exp` claim, Unix seconds.
        expires_at: i64,
        /// Validation time, Unix seconds.
        now: i64,
    },
    /// The `nbf` claim is in the future.
    #[error(
        "JWT-SVID is not valid before {} (validation time {})",
        format_unix_time(*not_before),
        format_unix_time(*now)
    )]
    NotYetValid {
        /// The `nbf` claim, Unix seconds.
        not_before: i64,
        /// Validation time, Unix seconds.
        now: i64,
    },
    /// The `aud` claim is missing or empty.
    #[error("JWT-SVID has no aud claim: JWT-SVIDs need at least one audience")]
    MissingAudience,
    /// The `aud` claim does not contain the expected audience.
    #[error("JWT-SVID audience {actual:?} does not contain {expected:?}")]
    AudienceMismatch {
        /// The audience the validator accepts.
        expected: String,
        /// The token's audiences.
        actual: Vec<String>,
    },
    /// Claims to mint are invalid.
    #[error("cannot mint JWT-SVID: {0}")]
    InvalidClaims(&'static str),
    /// A key error.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The claims of a JWT-SVID to mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidClaims {
    /// The `sub` claim.
    pub subject: SpiffeId,
    /// The `aud` claim; at least one non-empty audience.
    pub audience: Vec<String>,
    /// The `iat` claim.
    pub issued_at: SystemTime,
    /// The `exp` claim; later than `issued_at`.
    pub expires_at: SystemTime,
    /// The optional `iss` claim.
    pub issuer: Option<String>,
}

/// A signed JWT in compact serialization. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtToken(String);

impl JwtToken {
    /// Returns the compact serialization.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the compact serialization as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for JwtToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests;
