//! The SPIFFE bundle format: a JWK Set whose keys have `use` `x509-svid`
//! (a CA certificate in `x5c`) or `jwt-svid` (a JWT signing key with a
//! `kid`), plus `spiffe_sequence` and `spiffe_refresh_hint`. Keys with a
//! missing or unknown `use` or `kty` are ignored, as the specification
//! requires.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use crate::id::TrustDomain;
use crate::spki::{Curve, PublicKeyParams, strip_leading_zeros};

use super::{BundleError, JwtAuthority, MAX_BUNDLE_AUTHORITIES, TrustBundle, check_input_size};

const USE_X509_SVID: &str = "x509-svid";
const USE_JWT_SVID: &str = "jwt-svid";

/// The JWK Set members that Tessera reads. Other members are ignored, and
/// serde rejects a member that appears twice.
#[derive(Deserialize)]
struct RawJwkSet {
    keys: BoundedKeys,
    spiffe_sequence: Option<u64>,
    spiffe_refresh_hint: Option<u64>,
}

/// One JWK. Members are untyped, so a member of an unexpected JSON type in
/// an entry that is ignored for its `use` or `kty` does not fail the bundle.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<Value>,
    #[serde(rename = "use")]
    key_use: Option<Value>,
    kid: Option<Value>,
    crv: Option<Value>,
    x: Option<Value>,
    y: Option<Value>,
    n: Option<Value>,
    e: Option<Value>,
    x5c: Option<Value>,
}

/// The `keys` array, keeping at most [`MAX_BUNDLE_AUTHORITIES`] entries in
/// memory while counting all of them.
struct BoundedKeys {
    keys: Vec<RawJwk>,
    total: usize,
}

impl<'de> Deserialize<'de> for BoundedKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BoundedKeysVisitor)
    }
}

struct BoundedKeysVisitor;

impl<'de> Visitor<'de> for BoundedKeysVisitor {
    type Value = BoundedKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of JWKs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedKeys, A::Error> {
        let mut keys = Vec::new();
        while keys.len() < MAX_BUNDLE_AUTHORITIES {
            match seq.next_element::<RawJwk>()? {
                Some(key) => keys.push(key),
                None => {
                    let total = keys.len();
                    return Ok(BoundedKeys { keys, total });
                }
            }
        }
        let mut total = keys.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok(BoundedKeys { keys, total })
    }
}

impl TrustBundle {
    /// Parses a SPIFFE bundle (JWK Set) for `td`.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the document is larger than
    /// [`super::MAX_BUNDLE_BYTES`], has more than [`MAX_BUNDLE_AUTHORITIES`]
    /// keys, is not a JWK Set, or contains an `x509-svid` or `jwt-svid` key that
    /// is invalid.
    pub fn from_jwks(td: &TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        check_input_size(json.len())?;
        let raw: RawJwkSet =
            serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        if raw.keys.total > MAX_BUNDLE_AUTHORITIES {
            return Err(BundleError::TooManyKeys {
                count: raw.keys.total,
                max: MAX_BUNDLE_AUTHORITIES,
            });
        }

        let mut bundle = Self::new(td.clone());
        bundle.sequence_number = raw.spiffe_sequence;
        bundle.refresh_hint = raw.spiffe_refresh_hint.map(Duration::from_secs);
        for (index, key) in raw.keys.keys.into_iter().enumerate() {
            bundle
                .add_raw_key(key)
                .map_err(|reason| BundleError::InvalidKey { index, reason })?;
        }
        Ok(bundle)
    }

    /// Adds one JWK. An error becomes the reason of [`BundleError::InvalidKey`].
    fn add_raw_key(&mut self, key: RawJwk) -> Result<(), String> {
        let key_use = match &key.key_use {
            Some(Value::String(u)) if u == USE_X509_SVID || u == USE_JWT_SVID => u.as_str(),
            _ => return Ok(()),
        };
        let kty = match &key.kty {
            Some(Value::String(kty)) => kty.as_str(),
            Some(_) => return Err("\"kty\" is not a string".to_owned()),
            None => return Err("\"kty\" is missing".to_owned()),
        };
        if kty != "EC" && kty != "RSA" {
            return Ok(());
        }
        if key_use == USE_X509_SVID {
            self.add_raw_x509_key(&key)
        } else {
            self.add_raw_jwt_key(&key, kty)
        }
    }

    fn add_raw_x509_key(&mut self, key: &RawJwk) -> Result<(), String> {
        let first = match &key.x5c {
            None => return Ok(()),
            Some(Value::Array(chain)) => match chain.first() {
                None => return Ok(()),
                Some(Value::String(first)) => first,
                Some(_) => return Err("\"x5c\" contains a value that is not a string".to_owned()),
            },
            Some(_) => return Err("\"x5c\" is not an array".to_owned()),
        };
        // x5c values are standard base64 with padding, unlike other JWK members.
        let der = STANDARD
            .decode(first)
            .map_err(|e| format!("\"x5c\" is not valid base64: {e}"))?;
        self.add_x509_authority(CertificateDer::from(der))
            .map_err(|e| e.to_string())
    }

    fn add_raw_jwt_key(&mut self, key: &RawJwk, kty: &str) -> Result<(), String> {
        let key_id = match &key.kid {
            Some(Value::String(kid)) if !kid.is_empty() => kid.clone(),
            _ => {
                return Err("jwt-svid key has no \"kid\": a JWT-SVID key needs a key ID".to_owned());
            }
        };
        let params = if kty == "EC" {
            let crv = string_member(&key.crv, "crv")?;
            let Some(curve) = Curve::from_jwk_name(crv) else {
                // A curve Tessera cannot use is an unknown key type.
                return Ok(());
            };
            let x = coordinate(&key.x, "x", curve)?;
            let y = coordinate(&key.y, "y", curve)?;
            PublicKeyParams::Ec { curve, x, y }
        } else {
            let n = base64url_member(&key.n, "n")?;
            let e = base64url_member(&key.e, "e")?;
            PublicKeyParams::Rsa {
                n: strip_leading_zeros(&n).to_vec(),
                e: strip_leading_zeros(&e).to_vec(),
            }
        };
        self.add_jwt_authority(JwtAuthority {
            key_id,
            public_key: params.to_spki(),
            expires_at: None,
        })
        .map_err(|e| e.to_string())
    }

    /// Serializes the bundle as a SPIFFE bundle (JWK Set): one `x509-svid`
    /// entry per X.509 authority, one `jwt-svid` entry per JWT authority, and
    /// `spiffe_sequence` and `spiffe_refresh_hint` when set.
    pub fn to_jwks(&self) -> Vec<u8> {
        let x509 = self
            .x509_authorities
            .iter()
            .zip(&self.x509_keys)
            .map(|(cert, params)| {
                let mut jwk = key_members(USE_X509_SVID, params);
                jwk.insert("x5c".into(), json!([STANDARD.encode(cert)]));
                Value::Object(jwk)
            });
        let keys: Vec<Value> = x509.chain(self.jwt_entries()).collect();

        let mut set = Map::new();
        set.insert("keys".into(), Value::Array(keys));
        if let Some(sequence) = self.sequence_number {
            set.insert("spiffe_sequence".into(), json!(sequence));
        }
        if let Some(hint) = self.refresh_hint {
            set.insert("spiffe_refresh_hint".into(), json!(hint.as_secs()));
        }
        Value::Object(set).to_string().into_bytes()
    }

    /// Serializes only the JWT authorities as a JWK Set, the form of the
    /// Workload API's JWT bundles.
    pub fn jwt_jwks(&self) -> Vec<u8> {
        let keys: Vec<Value> = self.jwt_entries().collect();
        json!({ "keys": keys }).to_string().into_bytes()
    }

    fn jwt_entries(&self) -> impl Iterator<Item = Value> + '_ {
        self.jwt_authorities
            .iter()
            .zip(&self.jwt_keys)
            .map(|(authority, params)| {
                let mut jwk = key_members(USE_JWT_SVID, params);
                jwk.insert("kid".into(), json!(authority.key_id));
                Value::Object(jwk)
            })
    }
}

/// Returns `kty`, `use` and the key parameters of one JWK.
fn key_members(key_use: &str, params: &PublicKeyParams) -> Map<String, Value> {
    let mut jwk = Map::new();
    jwk.insert("kty".into(), json!(params.kty()));
    jwk.insert("use".into(), json!(key_use));
    match params {
        PublicKeyParams::Ec { curve, x, y } => {
            jwk.insert("crv".into(), json!(curve.jwk_name()));
            jwk.insert("x".into(), json!(URL_SAFE_NO_PAD.encode(x)));
            jwk.insert("y".into(), json!(URL_SAFE_NO_PAD.encode(y)));
        }
        PublicKeyParams::Rsa { n, e } => {
            jwk.insert("n".into(), json!(URL_SAFE_NO_PAD.encode(n)));
            jwk.insert("e".into(), json!(URL_SAFE_NO_PAD.encode(e)));
        }
    }
    jwk
}

fn string_member<'a>(value: &'a Option<Value>, name: &str) -> Result<&'a str, String> {
    match value {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("\"{name}\" is not a string")),
        None => Err(format!("\"{name}\" is missing")),
    }
}

fn base64url_member(value: &Option<Value>, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(string_member(value, name)?)
        .map_err(|e| format!("\"{name}\" is not unpadded base64url: {e}"))
}

fn coordinate(value: &Option<Value>, name: &str, curve: Curve) -> Result<Vec<u8>, String> {
    let bytes = base64url_member(value, name)?;
    if bytes.len() != curve.coordinate_len() {
        return Err(format!(
            "\"{name}\" is {} bytes: a {} coordinate is {} bytes",
            bytes.len(),
            curve.jwk_name(),
            curve.coordinate_len()
        ));
    }
    Ok(bytes)
}
