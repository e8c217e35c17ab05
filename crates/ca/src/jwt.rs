//! Minting of JWT-SVIDs with the active authority's JWT signing key.

use std::time::{Duration, SystemTime};

use tessera_spiffe::id::SpiffeId;
use tessera_spiffe::jwt::{JwtSvidClaims, JwtToken, mint_jwt_svid};

use crate::authority::SigningAuthority;
use crate::error::CaError;
use crate::times::whole_seconds;

/// A minted JWT-SVID and the times its claims carry.
#[derive(Clone, Debug)]
pub struct MintedJwt {
    /// The signed token; its `Debug` output is redacted.
    pub token: JwtToken,
    /// The `iat` claim.
    pub issued_at: SystemTime,
    /// The `exp` claim, at most the signing key's expiry.
    pub expires_at: SystemTime,
}

/// Mints a JWT-SVID for `id` that expires after `ttl` or with the authority,
/// whichever comes first.
pub(crate) fn mint(
    authority: &SigningAuthority,
    id: &SpiffeId,
    audience: &[String],
    issuer: Option<&str>,
    ttl: Duration,
    now: SystemTime,
) -> Result<MintedJwt, CaError> {
    let lifetime = authority.lifetime();
    let issued_at = whole_seconds(now);
    let expires_at = issued_at.checked_add(ttl).map_or(lifetime.not_after, |t| {
        whole_seconds(t).min(lifetime.not_after)
    });
    if expires_at <= issued_at {
        return Err(CaError::ActiveExpired {
            not_after: lifetime.not_after,
        });
    }

    let claims = JwtSvidClaims {
        subject: id.clone(),
        audience: audience.to_vec(),
        issued_at,
        expires_at,
        issuer: issuer.map(str::to_string),
    };
    let key_id = &authority.published().jwt_key_id;
    let token =
        mint_jwt_svid(authority.jwt_key(), key_id, &claims).map_err(|source| CaError::Jwt {
            spiffe_id: id.clone(),
            source,
        })?;

    Ok(MintedJwt {
        token,
        issued_at,
        expires_at,
    })
}
