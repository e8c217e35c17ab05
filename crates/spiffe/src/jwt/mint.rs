//! Minting JWT-SVIDs as JWS compact serialization.

use crate::key::PrivateKey;

use super::{JwtSvidClaims, JwtSvidError, JwtToken};

/// Signs a JWT-SVID with `key`, putting `key_id` in the `kid` header.
///
/// # Errors
///
/// Returns [`JwtSvidError`] when the claims are invalid or signing fails.
pub fn mint_jwt_svid(
    key: &PrivateKey,
    key_id: &str,
    claims: &JwtSvidClaims,
) -> Result<JwtToken, JwtSvidError> {
    todo!("{key:?}{key_id}{claims:?}")
}
