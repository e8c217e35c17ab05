use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PSS_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::*;
use crate::bundle::{JwtAuthority, TrustBundle};
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::test_support::{id, now, td};

const SUBJECT: &str = "spiffe://example.org/web";
const AUDIENCE: &str = "spiffe://example.org/db";
const NOW_SECS: i64 = 1_800_000_000;

fn claims() -> JwtSvidClaims {
    JwtSvidClaims {
        subject: id(SUBJECT),
        audience: vec![AUDIENCE.to_owned()],
        issued_at: now(),
        expires_at: now() + Duration::from_secs(300),
        issuer: None,
    }
}

fn bundle_with(key_id: &str, key: &PrivateKey) -> TrustBundle {
    let mut bundle = TrustBundle::new(td("example.org"));
    bundle
        .add_jwt_authority(JwtAuthority {
            key_id: key_id.to_owned(),
            public_key: key.public_key_der(),
            expires_at: None,
        })
        .expect("valid key");
    bundle
}

/// Builds a signed token from raw JSON with the key's own JWS algorithm.
fn sign_raw(key: &PrivateKey, header: &Value, payload: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let signature = key.sign_jws(signing_input.as_bytes()).expect("sign");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn standard_payload() -> Value {
    json!({ "sub": SUBJECT, "aud": [AUDIENCE], "exp": NOW_SECS + 300, "iat": NOW_SECS })
}

fn header(alg: &str) -> Value {
    json!({ "alg": alg, "kid": "k1", "typ": "JWT" })
}

fn decode_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[test]
fn mint_and_validate_round_trip() {
    let cases = [
        (KeyAlgorithm::EcP256, "ES256"),
        (KeyAlgorithm::EcP384, "ES384"),
        (KeyAlgorithm::Rsa2048, "RS256"),
    ];
    for (alg, jws) in cases {
        let key = PrivateKey::generate(alg).expect("generate");
        let token = mint_jwt_svid(&key, "k1", &claims()).expect("mint");
        let parts: Vec<&str> = token.as_str().split('.').collect();
        assert_eq!(
            decode_json(parts[0]),
            json!({ "alg": jws, "kid": "k1", "typ": "JWT" })
        );
        assert_eq!(decode_json(parts[1]), standard_payload());

        let verified = validate_jwt_svid(token.as_str(), AUDIENCE, &bundle_with("k1", &key), now())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.spiffe_id(), &id(SUBJECT));
        assert_eq!(verified.audience(), &[AUDIENCE.to_owned()]);
        assert_eq!(verified.expires_at(), now() + Duration::from_secs(300));
        assert_eq!(verified.claims()["iat"], json!(NOW_SECS));
    }
}

#[test]
fn mint_includes_issuer_when_set() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let mut with_issuer = claims();
    with_issuer.issuer = Some("https://oidc.example.org".into());
    let token = mint_jwt_svid(&key, "k1", &with_issuer).expect("mint");
    let payload = decode_json(token.as_str().split('.').nth(1).expect("payload"));
    assert_eq!(payload["iss"], "https://oidc.example.org");
}

#[test]
fn mint_rejects_invalid_claims() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    assert!(matches!(
        mint_jwt_svid(&key, "", &claims()),
        Err(JwtSvidError::InvalidClaims(_))
    ));

    let mut no_audience = claims();
    no_audience.audience.clear();
    assert!(matches!(
        mint_jwt_svid(&key, "k1", &no_audience),
        Err(JwtSvidError::InvalidClaims(_))
    ));

    let mut empty_audience = claims();
    empty_audience.audience = vec![String::new()];
    assert!(matches!(
        mint_jwt_svid(&key, "k1", &empty_audience),
        Err(JwtSvidError::InvalidClaims(_))
    ));

    let mut backwards = claims();
    backwards.expires_at = backwards.issued_at;
    assert!(matches!(
        mint_jwt_svid(&key, "k1", &backwards),
        Err(JwtSvidError::InvalidClaims(_))
    ));
}

#[test]
fn validate_rejects_alg_none() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header("none").to_string()),
        URL_SAFE_NO_PAD.encode(standard_payload().to_string())
    );
    let result = validate_jwt_svid(&unsigned, AUDIENCE, &bundle_with("k1", &key), now());
    assert_eq!(
        result.map(|_| ()),
        Err(JwtSvidError::UnsupportedAlgorithm("none".into()))
    );
}

#[test]
fn validate_rejects_hs256() {
    // The classic confusion attack: an HMAC keyed with the public key.
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header("HS256").to_string()),
        URL_SAFE_NO_PAD.encode(standard_payload().to_string())
    );
    let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key.public_key_der());
    let tag = aws_lc_rs::hmac::sign(&hmac_key, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag));

    let result = validate_jwt_svid(&token, AUDIENCE, &bundle_with("k1", &key), now());
    assert_eq!(
        result.map(|_| ()),
        Err(JwtSvidError::UnsupportedAlgorithm("HS256".into()))
    );
}

#[test]
fn validate_rejects_algorithms_outside_the_allowed_list() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    for alg in ["HS384", "HS512", "EdDSA", "es256", "ES256K", "RSA-OAEP", ""] {
        let token = sign_raw(&key, &header(alg), &standard_payload());
        let result = validate_jwt_svid(&token, AUDIENCE, &bundle_with("k1", &key), now());
        assert_eq!(
            result.map(|_| ()),
            Err(JwtSvidError::UnsupportedAlgorithm(alg.into())),
            "{alg}"
        );
    }
}

#[test]
fn validate_checks_typ_and_kid_headers() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let bundle = bundle_with("k1", &key);
    let validate = |header: Value| {
        let token = sign_raw(&key, &header, &standard_payload());
        validate_jwt_svid(&token, AUDIENCE, &bundle, now()).map(|_| ())
    };

    assert_eq!(
        validate(json!({ "alg": "ES256", "kid": "k1", "typ": "JOSE" })),
        Ok(())
    );
    assert_eq!(validate(json!({ "alg": "ES256", "kid": "k1" })), Ok(()));
    assert_eq!(
        validate(json!({ "alg": "ES256", "kid": "k1", "typ": "at+jwt" })),
        Err(JwtSvidError::InvalidType("at+jwt".into()))
    );
    assert_eq!(
        validate(json!({ "alg": "ES256", "typ": "JWT" })),
        Err(JwtSvidError::MissingKeyId)
    );

    let extra = validate(json!({ "alg": "ES256", "kid": "k1", "jku": "https://evil.example" }));
    assert!(
        matches!(&extra, Err(JwtSvidError::Malformed(m)) if m.contains("unknown field `jku`")),
        "{extra:?}"
    );
    let duplicate = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","alg":"none","kid":"k1"}"#);
    let token = format!(
        "{duplicate}.{}.AA",
        URL_SAFE_NO_PAD.encode(standard_payload().to_string())
    );
    let result = validate_jwt_svid(&token, AUDIENCE, &bundle, now());
    assert!(
        matches!(&result, Err(JwtSvidError::Malformed(m)) if m.contains("duplicate field `alg`")),
        "{result:?}"
    );
}

#[test]
fn validate_rejects_wrong_audience() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let token = mint_jwt_svid(&key, "k1", &claims()).expect("mint");
    let result = validate_jwt_svid(
        token.as_str(),
        "spiffe://example.org/other",
        &bundle_with("k1", &key),
        now(),
    );
    assert_eq!(
        result.map(|_| ()),
        Err(JwtSvidError::AudienceMismatch {
            expected: "spiffe://example.org/other".into(),
            actual: vec![AUDIENCE.into()],
        })
    );
}

#[test]
fn validate_accepts_string_audience_and_rejects_missing_one() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let bundle = bundle_with("k1", &key);
    let with_payload = |payload: Value| {
        let token = sign_raw(&key, &header("ES256"), &payload);
        validate_jwt_svid(&token, AUDIENCE, &bundle, now()).map(|v| v.audience().to_vec())
    };

    assert_eq!(
        with_payload(json!({ "sub": SUBJECT, "aud": AUDIENCE, "exp": NOW_SECS + 60 })),
        Ok(vec![AUDIENCE.to_owned()])
    );
    assert_eq!(
        with_payload(json!({ "sub": SUBJECT, "exp": NOW_SECS + 60 })),
        Err(JwtSvidError::MissingAudience)
    );
    assert_eq!(
        with_payload(json!({ "sub": SUBJECT, "aud": [], "exp": NOW_SECS + 60 })),
        Err(JwtSvidError::MissingAudience)
    );
    assert!(matches!(
        with_payload(json!({ "sub": SUBJECT, "aud": [1], "exp": NOW_SECS + 60 })),
        Err(JwtSvidError::InvalidClaim { name: "aud", .. })
    ));
}

#[test]
fn validate_rejects_expired_and_missing_exp() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let bundle = bundle_with("k1", &key);
    let token = mint_jwt_svid(&key, "k1", &claims()).expect("mint");

    let at_expiry = now() + Duration::from_secs(300);
    assert_eq!(
        validate_jwt_svid(token.as_str(), AUDIENCE, &bundle, at_expiry).map(|_| ()),
        Err(JwtSvidError::Expired {
            expires_at: NOW_SECS + 300,
            now: NOW_SECS + 300
        })
    );
    let just_before = now() + Duration::from_secs(299);
    assert!(validate_jwt_svid(token.as_str(), AUDIENCE, &bundle, just_before).is_ok());

    let no_exp = sign_raw(
        &key,
        &header("ES256"),
        &json!({ "sub": SUBJECT, "aud": AUDIENCE }),
    );
    assert_eq!(
        validate_jwt_svid(&no_exp, AUDIENCE, &bundle, now()).map(|_| ()),
        Err(JwtSvidError::MissingExpiration)
    );
    let text_exp = sign_raw(
        &key,
        &header("ES256"),
        &json!({ "sub": SUBJECT, "aud": AUDIENCE, "exp": "soon" }),
    );
    assert!(matches!(
        validate_jwt_svid(&text_exp, AUDIENCE, &bundle, now()),
        Err(JwtSvidError::InvalidClaim { name: "exp", .. })
    ));
}

#[test]
fn validate_checks_not_before() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let payload =
        json!({ "sub": SUBJECT, "aud": AUDIENCE, "exp": NOW_SECS + 600, "nbf": NOW_SECS + 60 });
    let token = sign_raw(&key, &header("ES256"), &payload);
    assert_eq!(
        validate_jwt_svid(&token, AUDIENCE, &bundle_with("k1", &key), now()).map(|_| ()),
        Err(JwtSvidError::NotYetValid {
            not_before: NOW_SECS + 60,
            now: NOW_SECS
        })
    );
}

#[test]
fn validate_rejects_unknown_kid() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let token = mint_jwt_svid(&key, "k2", &claims()).expect("mint");
    assert_eq!(
        validate_jwt_svid(token.as_str(), AUDIENCE, &bundle_with("k1", &key), now()).map(|_| ()),
        Err(JwtSvidError::UnknownKeyId {
            key_id: "k2".into(),
            trust_domain: td("example.org")
        })
    );
}

#[test]
fn validate_rejects_tampered_payload() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let token = mint_jwt_svid(&key, "k1", &claims()).expect("mint");
    let parts: Vec<&str> = token.as_str().split('.').collect();
    let mut payload = decode_json(parts[1]);
    payload["sub"] = json!("spiffe://example.org/admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );

    assert_eq!(
        validate_jwt_svid(&forged, AUDIENCE, &bundle_with("k1", &key), now()).map(|_| ()),
        Err(JwtSvidError::InvalidSignature {
            key_id: "k1".into()
        })
    );
}

#[test]
fn validate_uses_the_subject_trust_domain_bundle() {
    // A key trusted for example.org signs a token whose subject is in other.org.
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let mut foreign = claims();
    foreign.subject = id("spiffe://other.org/web");
    let token = mint_jwt_svid(&key, "k1", &foreign).expect("mint");

    let mut bundles = HashMap::new();
    bundles.insert(td("example.org"), bundle_with("k1", &key));
    assert_eq!(
        validate_jwt_svid(token.as_str(), AUDIENCE, &bundles, now()).map(|_| ()),
        Err(JwtSvidError::NoBundle(td("other.org")))
    );

    let other_key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let mut other_bundle = TrustBundle::new(td("other.org"));
    other_bundle
        .add_jwt_authority(JwtAuthority {
            key_id: "k1".into(),
            public_key: other_key.public_key_der(),
            expires_at: None,
        })
        .expect("valid key");
    bundles.insert(td("other.org"), other_bundle);
    assert_eq!(
        validate_jwt_svid(token.as_str(), AUDIENCE, &bundles, now()).map(|_| ()),
        Err(JwtSvidError::InvalidSignature {
            key_id: "k1".into()
        })
    );
}

#[test]
fn validate_rejects_algorithm_key_mismatch() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let token = sign_raw(&key, &header("ES384"), &standard_payload());
    assert_eq!(
        validate_jwt_svid(&token, AUDIENCE, &bundle_with("k1", &key), now()).map(|_| ()),
        Err(JwtSvidError::AlgorithmKeyMismatch {
            alg: JwsAlgorithm::Es384,
            key_id: "k1".into(),
            key_type: "EC P-256".into(),
        })
    );
    let token = sign_raw(&key, &header("RS256"), &standard_payload());
    assert!(matches!(
        validate_jwt_svid(&token, AUDIENCE, &bundle_with("k1", &key), now()),
        Err(JwtSvidError::AlgorithmKeyMismatch {
            alg: JwsAlgorithm::Rs256,
            ..
        })
    ));
}

#[test]
fn validate_accepts_ps256() {
    let key = PrivateKey::generate(KeyAlgorithm::Rsa2048).expect("generate");
    let pair = RsaKeyPair::from_pkcs8(key.pkcs8_der()).expect("RSA key");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header("PS256").to_string()),
        URL_SAFE_NO_PAD.encode(standard_payload().to_string())
    );
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PSS_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));

    let verified =
        validate_jwt_svid(&token, AUDIENCE, &bundle_with("k1", &key), now()).expect("valid PS256");
    assert_eq!(verified.spiffe_id(), &id(SUBJECT));
}

#[test]
fn validate_rejects_bad_subjects() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let bundle = bundle_with("k1", &key);
    let with_sub = |sub: Value| {
        let token = sign_raw(
            &key,
            &header("ES256"),
            &json!({ "sub": sub, "aud": AUDIENCE, "exp": NOW_SECS + 60 }),
        );
        validate_jwt_svid(&token, AUDIENCE, &bundle, now()).map(|_| ())
    };
    assert_eq!(with_sub(Value::Null), Err(JwtSvidError::MissingSubject));
    assert_eq!(with_sub(json!(5)), Err(JwtSvidError::MissingSubject));
    assert!(matches!(
        with_sub(json!("spiffe://example.org/a/")),
        Err(JwtSvidError::InvalidSubject(_))
    ));

    let duplicate_sub = format!(
        r#"{{"sub":"{SUBJECT}","sub":"spiffe://example.org/admin","aud":"{AUDIENCE}","exp":{}}}"#,
        NOW_SECS + 60
    );
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header("ES256").to_string()),
        URL_SAFE_NO_PAD.encode(duplicate_sub)
    );
    let signature = key.sign_jws(signing_input.as_bytes()).expect("sign");
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    let result = validate_jwt_svid(&token, AUDIENCE, &bundle, now());
    assert!(
        matches!(&result, Err(JwtSvidError::Malformed(m)) if m.contains("duplicate field `sub`")),
        "{result:?}"
    );
}

#[test]
fn validate_rejects_malformed_tokens() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let bundle = bundle_with("k1", &key);
    let token = mint_jwt_svid(&key, "k1", &claims())
        .expect("mint")
        .into_string();
    let parts: Vec<&str> = token.split('.').collect();
    let padded_header = STANDARD.encode(header("ES256").to_string());

    let cases = [
        String::new(),
        "a.b".to_owned(),
        format!("{token}.extra"),
        format!("{padded_header}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.not*base64", parts[0], parts[1]),
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode("[]"), parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode("not json"),
            parts[2]
        ),
    ];
    for case in cases {
        let result = validate_jwt_svid(&case, AUDIENCE, &bundle, now());
        assert!(
            matches!(result, Err(JwtSvidError::Malformed(_))),
            "{case:?}: {result:?}"
        );
    }

    let huge = "a".repeat(MAX_JWT_BYTES + 1);
    assert_eq!(
        validate_jwt_svid(&huge, AUDIENCE, &bundle, now()).map(|_| ()),
        Err(JwtSvidError::TooLarge {
            len: MAX_JWT_BYTES + 1,
            max: MAX_JWT_BYTES
        })
    );
}

#[test]
fn validate_does_not_put_the_token_in_errors() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let token = mint_jwt_svid(&key, "k1", &claims()).expect("mint");
    let err = validate_jwt_svid(token.as_str(), "other", &bundle_with("k1", &key), now())
        .expect_err("audience");
    let signature = token.as_str().rsplit('.').next().expect("signature");
    assert!(!err.to_string().contains(signature));
    assert!(!format!("{err:?}").contains(signature));
}

#[test]
fn token_debug_is_redacted() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let token = mint_jwt_svid(&key, "k1", &claims()).expect("mint");
    assert_eq!(format!("{token:?}"), "JwtToken(<redacted>)");
    assert!(!format!("{token:?}").contains(token.as_str()));
}

#[test]
fn times_before_the_epoch_are_rejected_when_minting() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let mut early = claims();
    early.issued_at = UNIX_EPOCH - Duration::from_secs(10);
    assert!(matches!(
        mint_jwt_svid(&key, "k1", &early),
        Err(JwtSvidError::InvalidClaims(_))
    ));
}

#[test]
fn expiry_message_shows_utc_times() {
    let err = JwtSvidError::Expired {
        expires_at: NOW_SECS,
        now: NOW_SECS + 60,
    };
    assert_eq!(
        err.to_string(),
        "JWT-SVID expired at 2027-01-15T08:00:00Z (validation time 2027-01-15T08:01:00Z)"
    );
}
