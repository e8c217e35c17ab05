//! JWT-SVIDs: minting signed tokens and validating them against the JWT
//! authorities of the subject's trust domain.

mod mint;
mod validate;

pub use mint::mint_jwt_svid;
pub use validate::{VerifiedJwtSvid, validate_jwt_svid};

use std::fmt;
use std::time::SystemTime;

use crate::id::SpiffeId;
use crate::key::KeyError;

/// Error returned when a JWT-SVID cannot be minted or fails validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSvidError {
    /// A key error.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The claims of a JWT-SVID to mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidClaims {
    /// The `sub` claim.
    pub subject: SpiffeId,
    /// The `aud` claim; at least one audience.
    pub audience: Vec<String>,
    /// The `iat` claim.
    pub issued_at: SystemTime,
    /// The `exp` claim.
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
