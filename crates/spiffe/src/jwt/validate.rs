//! JWT-SVID validation: strict JOSE header parsing, the signature check
//! with the subject trust domain's bundle key, then the `exp`, `nbf` and
//! `aud` claims.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::UnparsedPublicKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::bundle::BundleSource;
use crate::id::SpiffeId;

use super::algorithm::key_type_name;
use super::{JwsAlgorithm, JwtSvidError};

/// Maximum length of a JWT-SVID in bytes that validation accepts.
pub const MAX_JWT_BYTES: usize = 64 * 1024;

/// The JOSE header. The JWT-SVID specification forbids every parameter
/// other than these three, so any other one is rejected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
}

/// The registered claims that validation reads; serde rejects a token that
/// repeats one of them.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
}

/// A JWT-SVID whose signature and claims were validated. Only
/// [`validate_jwt_svid`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedJwtSvid {
    spiffe_id: SpiffeId,
    audience: Vec<String>,
    expires_at: SystemTime,
    claims: Map<String, Value>,
}

impl VerifiedJwtSvid {
    /// Returns the `sub` claim.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Returns the `aud` claim as a list, whether the token held a string or an array.
    pub fn audience(&self) -> &[String] {
        &self.audience
    }

    /// Returns the `exp` claim.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// Returns every claim of the payload.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }
}

/// Validates a JWT-SVID at `now` for `audience`.
///
/// The header must hold an allowed `alg`, a `kid`, optionally `typ` `JWT`
/// or `JOSE`, and nothing else. The signature must verify with the key
/// `kid` of the bundle of the `sub` trust domain, `exp` must be later than
/// `now`, `nbf` (if present) not later than `now`, and `aud` must contain
/// `audience`.
///
/// # Errors
///
/// Returns [`JwtSvidError`] naming the first failed check.
pub fn validate_jwt_svid(
    token: &str,
    audience: &str,
    bundles: &impl BundleSource,
    now: SystemTime,
) -> Result<VerifiedJwtSvid, JwtSvidError> {
    if token.len() > MAX_JWT_BYTES {
        return Err(JwtSvidError::TooLarge {
            len: token.len(),
            max: MAX_JWT_BYTES,
        });
    }
    let [header_b64, payload_b64, signature_b64] = split_compact(token)?;
    let (alg, key_id) = parse_header(header_b64)?;

    let payload = decode_part(payload_b64, "payload")?;
    let raw: RawClaims = parse_json(&payload, "payload")?;
    let claims: Map<String, Value> = parse_json(&payload, "payload")?;
    let spiffe_id = parse_subject(raw.sub.as_ref())?;

    let signed_len = header_b64.len() + 1 + payload_b64.len();
    let signature = decode_part(signature_b64, "signature")?;
    verify_signature(
        &token.as_bytes()[..signed_len],
        &signature,
        alg,
        &key_id,
        &spiffe_id,
        bundles,
    )?;

    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let expires_at = check_times(&raw, now_secs)?;
    let audiences = check_audience(raw.aud.as_ref(), audience)?;

    Ok(VerifiedJwtSvid {
        spiffe_id,
        audience: audiences,
        expires_at: UNIX_EPOCH + Duration::from_secs(expires_at.unsigned_abs()),
        claims,
    })
}

fn split_compact(token: &str) -> Result<[&str; 3], JwtSvidError> {
    let parts: Vec<&str> = token.split('.').collect();
    <[&str; 3]>::try_from(parts).map_err(|parts| {
        JwtSvidError::Malformed(format!(
            "expected 3 dot-separated parts (JWS compact serialization), found {}",
            parts.len()
        ))
    })
}

fn decode_part(part: &str, name: &str) -> Result<Vec<u8>, JwtSvidError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| JwtSvidError::Malformed(format!("the {name} is not unpadded base64url: {e}")))
}

fn parse_json<T: DeserializeOwned>(json: &[u8], name: &str) -> Result<T, JwtSvidError> {
    serde_json::from_slice(json)
        .map_err(|e| JwtSvidError::Malformed(format!("the {name} is not a valid JSON object: {e}")))
}

/// Parses the header and returns the algorithm and key ID.
fn parse_header(header_b64: &str) -> Result<(JwsAlgorithm, String), JwtSvidError> {
    let header: RawHeader = parse_json(&decode_part(header_b64, "header")?, "header")?;
    let alg = JwsAlgorithm::from_header(&header.alg)
        .ok_or(JwtSvidError::UnsupportedAlgorithm(header.alg))?;
    if let Some(typ) = header.typ
        && typ != "JWT"
        && typ != "JOSE"
    {
        return Err(JwtSvidError::InvalidType(typ));
    }
    let key_id = header.kid.ok_or(JwtSvidError::MissingKeyId)?;
    Ok((alg, key_id))
}

fn parse_subject(sub: Option<&Value>) -> Result<SpiffeId, JwtSvidError> {
    match sub {
        Some(Value::String(sub)) => SpiffeId::parse(sub).map_err(JwtSvidError::InvalidSubject),
        _ => Err(JwtSvidError::MissingSubject),
    }
}

fn verify_signature(
    signed: &[u8],
    signature: &[u8],
    alg: JwsAlgorithm,
    key_id: &str,
    subject: &SpiffeId,
    bundles: &impl BundleSource,
) -> Result<(), JwtSvidError> {
    let td = subject.trust_domain();
    let bundle = bundles
        .bundle_for(td)
        .ok_or_else(|| JwtSvidError::NoBundle(td.clone()))?;
    let (authority, params) = bundle
        .jwt_key(key_id)
        .ok_or_else(|| JwtSvidError::UnknownKeyId {
            key_id: key_id.to_owned(),
            trust_domain: td.clone(),
        })?;
    let verification =
        alg.verification_for(params)
            .ok_or_else(|| JwtSvidError::AlgorithmKeyMismatch {
                alg,
                key_id: key_id.to_owned(),
                key_type: key_type_name(params),
            })?;

    UnparsedPublicKey::new(verification, &authority.public_key)
        .verify(signed, signature)
        .map_err(|_| JwtSvidError::InvalidSignature {
            key_id: key_id.to_owned(),
        })
}

/// Checks `exp` and `nbf` and returns `exp` in Unix seconds.
fn check_times(claims: &RawClaims, now: i64) -> Result<i64, JwtSvidError> {
    let expires_at = claims
        .exp
        .as_ref()
        .ok_or(JwtSvidError::MissingExpiration)
        .and_then(|v| numeric_date(v, "exp"))?;
    if now >= expires_at {
        return Err(JwtSvidError::Expired { expires_at, now });
    }
    if let Some(nbf) = &claims.nbf {
        let not_before = numeric_date(nbf, "nbf")?;
        if now < not_before {
            return Err(JwtSvidError::NotYetValid { not_before, now });
        }
    }
    Ok(expires_at)
}

/// Reads a NumericDate (RFC 7519), rounding fractional seconds down.
fn numeric_date(value: &Value, name: &'static str) -> Result<i64, JwtSvidError> {
    let invalid = || JwtSvidError::InvalidClaim {
        name,
        reason: format!("expected a NumericDate (seconds since 1970), found {value}"),
    };
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

/// Checks that `aud` (a string or an array of strings) contains `expected`
/// and returns its values.
fn check_audience(aud: Option<&Value>, expected: &str) -> Result<Vec<String>, JwtSvidError> {
    let audiences = match aud {
        None => return Err(JwtSvidError::MissingAudience),
        Some(Value::String(single)) => vec![single.clone()],
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| JwtSvidError::InvalidClaim {
                name: "aud",
                reason: "expected a string or an array of strings".to_owned(),
            })?,
        Some(_) => {
            return Err(JwtSvidError::InvalidClaim {
                name: "aud",
                reason: "expected a string or an array of strings".to_owned(),
            });
        }
    };
    if audiences.is_empty() {
        return Err(JwtSvidError::MissingAudience);
    }
    if !audiences.iter().any(|a| a == expected) {
        return Err(JwtSvidError::AudienceMismatch {
            expected: expected.to_owned(),
            actual: audiences,
        });
    }
    Ok(audiences)
}
