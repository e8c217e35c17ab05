//! The SPIFFE bundle format: a JWK Set with `x509-svid` and `jwt-svid` keys.

use crate::id::TrustDomain;

use super::{BundleError, TrustBundle};

impl TrustBundle {
    /// Parses a SPIFFE bundle (JWK Set) for `td`.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the document is too large, malformed, or
    /// holds an invalid key.
    pub fn from_jwks(td: &TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        todo!("{td}{}", json.len())
    }

    /// Serializes the bundle as a SPIFFE bundle (JWK Set).
    pub fn to_jwks(&self) -> Vec<u8> {
        todo!()
    }

    /// Serializes only the JWT authorities as a JWK Set.
    pub fn jwt_jwks(&self) -> Vec<u8> {
        todo!()
    }
}
