//! Minting JWT-SVIDs as JWS compact serialization.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::key::PrivateKey;

use super::{JwtSvidClaims, JwtSvidError, JwtToken};

/// The JOSE header of a minted JWT-SVID: only the parameters the JWT-SVID
/// specification permits.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    aud: &'a [String],
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// Signs a JWT-SVID with `key`. The header has `alg` (ES256, ES384 or RS256,
/// by key algorithm), `kid` and `typ: "JWT"`. The claims are `sub`, `aud`
/// (always an array), `exp`, `iat` and, when set, `iss`.
///
/// # Errors
///
/// Returns [`JwtSvidError`] when `key_id` or the audience is empty, the
/// expiry is not later than the issue time, or signing fails.
pub fn mint_jwt_svid(
    key: &PrivateKey,
    key_id: &str,
    claims: &JwtSvidClaims,
) -> Result<JwtToken, JwtSvidError> {
    if key_id.is_empty() {
        return Err(JwtSvidError::InvalidClaims("the key ID is empty"));
    }
    if claims.audience.is_empty() || claims.audience.iter().any(String::is_empty) {
        return Err(JwtSvidError::InvalidClaims(
            "the audience needs at least one non-empty value",
        ));
    }
    if claims.expires_at <= claims.issued_at {
        return Err(JwtSvidError::InvalidClaims(
            "expires_at must be later than issued_at",
        ));
    }

    let header = Header {
        alg: key.algorithm().jws_algorithm(),
        kid: key_id,
        typ: "JWT",
    };
    let body = Claims {
        sub: claims.subject.as_str(),
        aud: &claims.audience,
        exp: unix_seconds(claims.expires_at)?,
        iat: unix_seconds(claims.issued_at)?,
        iss: claims.issuer.as_deref(),
    };
    let mut token = encode_json(&header)?;
    token.push('.');
    token.push_str(&encode_json(&body)?);

    let signature = key.sign_jws(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(JwtToken(token))
}

fn encode_json(value: &impl Serialize) -> Result<String, JwtSvidError> {
    let json = serde_json::to_vec(value)
        .map_err(|_| JwtSvidError::InvalidClaims("the claims cannot be serialized as JSON"))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

fn unix_seconds(t: SystemTime) -> Result<u64, JwtSvidError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| JwtSvidError::InvalidClaims("a time is before 1970"))
}
