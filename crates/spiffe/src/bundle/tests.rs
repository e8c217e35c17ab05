use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::*;
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::test_support::{TestCa, td};

fn jwt_authority(key_id: &str, alg: KeyAlgorithm) -> JwtAuthority {
    JwtAuthority {
        key_id: key_id.to_owned(),
        public_key: PrivateKey::generate(alg)
            .expect("generate")
            .public_key_der(),
        expires_at: None,
    }
}

/// Builds a bundle with an EC and an RSA X.509 authority and two JWT keys.
fn full_bundle() -> TrustBundle {
    let mut bundle = TrustBundle::new(td("example.org"));
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::Rsa2048] {
        let ca = TestCa::root("example.org", alg);
        bundle
            .add_x509_authority(ca.cert.clone())
            .expect("CA certificate");
    }
    bundle
        .add_jwt_authority(jwt_authority("ec-key", KeyAlgorithm::EcP384))
        .expect("EC key");
    bundle
        .add_jwt_authority(jwt_authority("rsa-key", KeyAlgorithm::Rsa2048))
        .expect("RSA key");
    bundle.set_sequence_number(Some(42));
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));
    bundle
}

fn parse(json: &Value) -> Result<TrustBundle, BundleError> {
    TrustBundle::from_jwks(&td("example.org"), json.to_string().as_bytes())
}

#[test]
fn jwks_round_trip() {
    let bundle = full_bundle();
    let json = bundle.to_jwks();
    let parsed = TrustBundle::from_jwks(&td("example.org"), &json).expect("parse own output");
    assert_eq!(parsed, bundle);
    assert_eq!(parsed.to_jwks(), json);
}

#[test]
fn jwks_output_follows_the_bundle_format() {
    let bundle = full_bundle();
    let value: Value = serde_json::from_slice(&bundle.to_jwks()).expect("JSON");
    assert_eq!(value["spiffe_sequence"], json!(42));
    assert_eq!(value["spiffe_refresh_hint"], json!(300));

    let keys = value["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 4);
    let x509: Vec<&Value> = keys.iter().filter(|k| k["use"] == "x509-svid").collect();
    assert_eq!(x509.len(), 2);
    for key in &x509 {
        assert!(key.get("kid").is_none(), "x509-svid keys must not set kid");
        let x5c = key["x5c"].as_array().expect("x5c array");
        assert_eq!(x5c.len(), 1);
        let der = STANDARD
            .decode(x5c[0].as_str().expect("string"))
            .expect("base64");
        assert!(
            bundle
                .x509_authorities()
                .iter()
                .any(|c| c.as_ref() == der.as_slice())
        );
    }
    assert_eq!(x509[0]["kty"], "EC");
    assert_eq!(x509[0]["crv"], "P-256");
    assert_eq!(x509[1]["kty"], "RSA");
    assert_eq!(x509[1]["e"], "AQAB");

    let jwt: Vec<&Value> = keys.iter().filter(|k| k["use"] == "jwt-svid").collect();
    assert_eq!(jwt[0]["kid"], "ec-key");
    assert_eq!(jwt[0]["crv"], "P-384");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwt[0]["x"].as_str().expect("x"))
            .expect("base64url")
            .len(),
        48
    );
    assert_eq!(jwt[1]["kid"], "rsa-key");
    assert_eq!(jwt[1]["kty"], "RSA");
}

#[test]
fn jwt_jwks_has_only_jwt_keys() {
    let value: Value = serde_json::from_slice(&full_bundle().jwt_jwks()).expect("JSON");
    let keys = value["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .all(|k| k["use"] == "jwt-svid" && k["kid"].is_string())
    );
    assert!(value.get("spiffe_sequence").is_none());
}

#[test]
fn jwks_ignores_unknown_use_and_kty() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let x5c = STANDARD.encode(&ca.cert);
    let json = json!({
        "keys": [
            { "kty": "EC", "use": "x509-svid", "x5c": [x5c] },
            { "kty": "EC", "use": "wit-svid", "x5c": "not even an array" },
            { "kty": "EC", "x5c": [x5c] },
            { "kty": "EC", "use": 7 },
            { "kty": "OKP", "use": "jwt-svid", "kid": "ed", "crv": "Ed25519", "x": "AA" },
            { "kty": "EC", "use": "jwt-svid", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA" },
            { "kty": "EC", "use": "x509-svid" },
            { "kty": "EC", "use": "x509-svid", "x5c": [] },
        ],
        "extra_member": true,
    });
    let bundle = parse(&json).expect("unknown entries are ignored");
    assert_eq!(bundle.x509_authorities(), std::slice::from_ref(&ca.cert));
    assert!(bundle.jwt_authorities().is_empty());
    assert_eq!(bundle.sequence_number(), None);
    assert_eq!(bundle.refresh_hint(), None);
}

#[test]
fn jwks_uses_first_x5c_certificate_only() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, _) = ca.leaf("spiffe://example.org/web");
    let json = json!({ "keys": [
        { "kty": "EC", "use": "x509-svid", "x5c": [STANDARD.encode(&ca.cert), STANDARD.encode(&leaf)] },
    ]});
    let bundle = parse(&json).expect("extra x5c values are ignored");
    assert_eq!(bundle.x509_authorities(), std::slice::from_ref(&ca.cert));
}

#[test]
fn jwks_accepts_empty_keys() {
    let bundle = parse(&json!({ "keys": [], "spiffe_sequence": 3 })).expect("empty keys");
    assert!(bundle.is_empty());
    assert_eq!(bundle.sequence_number(), Some(3));
}

#[test]
fn jwks_rejects_invalid_documents() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, _) = ca.leaf("spiffe://example.org/web");
    let ec = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let crate::spki::PublicKeyParams::Ec { x, y, .. } =
        crate::spki::PublicKeyParams::from_spki(&ec.public_key_der()).expect("parse")
    else {
        panic!("expected an EC key");
    };
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));

    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "missing field `keys`"),
        (json!({ "keys": {} }), "expected an array of JWKs"),
        (
            json!({ "keys": [], "spiffe_sequence": -1 }),
            "invalid value",
        ),
        (
            json!({ "keys": [], "spiffe_refresh_hint": "5m" }),
            "invalid type",
        ),
        (
            json!({ "keys": [{ "use": "x509-svid", "x5c": [] }] }),
            "\"kty\" is missing",
        ),
        (
            json!({ "keys": [{ "kty": "EC", "use": "x509-svid", "x5c": "abc" }] }),
            "\"x5c\" is not an array",
        ),
        (
            json!({ "keys": [{ "kty": "EC", "use": "x509-svid", "x5c": ["%%%"] }] }),
            "not valid base64",
        ),
        (
            json!({ "keys": [{ "kty": "EC", "use": "x509-svid", "x5c": [STANDARD.encode(&leaf)] }] }),
            "is not a CA certificate",
        ),
        (
            json!({ "keys": [{ "kty": "EC", "use": "jwt-svid", "crv": "P-256", "x": x, "y": y }] }),
            "has no \"kid\"",
        ),
        (
            json!({ "keys": [{ "kty": "EC", "use": "jwt-svid", "kid": "a", "crv": "P-256", "x": x }] }),
            "\"y\" is missing",
        ),
        (
            json!({ "keys": [{ "kty": "EC", "use": "jwt-svid", "kid": "a", "crv": "P-384", "x": x, "y": y }] }),
            "a P-384 coordinate is 48 bytes",
        ),
        (
            json!({ "keys": [{ "kty": "EC", "use": "jwt-svid", "kid": "a", "crv": "P-256", "x": y, "y": x }] }),
            "rejected by aws-lc-rs",
        ),
        (
            json!({ "keys": [
                { "kty": "EC", "use": "jwt-svid", "kid": "a", "crv": "P-256", "x": x, "y": y },
                { "kty": "EC", "use": "jwt-svid", "kid": "a", "crv": "P-256", "x": x, "y": y },
            ]}),
            "invalid key at index 1 of the bundle \"keys\" array: duplicate JWT authority key ID \"a\"",
        ),
        (
            json!({ "keys": [{ "kty": "RSA", "use": "jwt-svid", "kid": "r", "n": "AQAB", "e": "AQAB" }] }),
            "expected at least 2048 bits",
        ),
    ];
    for (json, expected) in cases {
        let err = parse(&json).expect_err(&json.to_string());
        assert!(err.to_string().contains(expected), "{json}: {err}");
    }
}

#[test]
fn jwks_rejects_duplicate_members() {
    let duplicate_keys = br#"{"keys": [], "keys": []}"#;
    let err = TrustBundle::from_jwks(&td("example.org"), duplicate_keys).expect_err("duplicate");
    assert!(err.to_string().contains("duplicate field `keys`"), "{err}");

    let duplicate_use = br#"{"keys": [{"kty": "EC", "use": "wit-svid", "use": "x509-svid"}]}"#;
    let err = TrustBundle::from_jwks(&td("example.org"), duplicate_use).expect_err("duplicate");
    assert!(err.to_string().contains("duplicate field `use`"), "{err}");
}

#[test]
fn jwks_caps_size_and_key_count() {
    let big = vec![b' '; MAX_BUNDLE_BYTES + 1];
    assert_eq!(
        TrustBundle::from_jwks(&td("example.org"), &big),
        Err(BundleError::TooLarge {
            len: MAX_BUNDLE_BYTES + 1,
            max: MAX_BUNDLE_BYTES
        })
    );

    let count = MAX_BUNDLE_AUTHORITIES + 5;
    let keys: Vec<Value> = (0..count).map(|_| json!({})).collect();
    assert_eq!(
        parse(&json!({ "keys": keys })),
        Err(BundleError::TooManyKeys {
            count,
            max: MAX_BUNDLE_AUTHORITIES
        })
    );
    let message = BundleError::TooManyKeys {
        count,
        max: MAX_BUNDLE_AUTHORITIES,
    }
    .to_string();
    assert_eq!(message, "bundle has 1029 keys, over the maximum of 1024");
}

#[test]
fn add_authorities_checks_input() {
    let mut bundle = TrustBundle::new(td("example.org"));
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    bundle.add_x509_authority(ca.cert.clone()).expect("CA");
    bundle
        .add_x509_authority(ca.cert.clone())
        .expect("adding twice does nothing");
    assert_eq!(bundle.x509_authorities().len(), 1);

    let (leaf, _) = ca.leaf("spiffe://example.org/web");
    assert!(matches!(
        bundle.add_x509_authority(leaf),
        Err(BundleError::NotCa { .. })
    ));
    assert!(matches!(
        bundle.add_x509_authority(CertificateDer::from(vec![1, 2, 3])),
        Err(BundleError::InvalidX509Authority(_))
    ));

    bundle
        .add_jwt_authority(jwt_authority("k", KeyAlgorithm::EcP256))
        .expect("key");
    assert_eq!(
        bundle.add_jwt_authority(jwt_authority("k", KeyAlgorithm::EcP256)),
        Err(BundleError::DuplicateKeyId("k".into()))
    );
    assert_eq!(
        bundle.add_jwt_authority(jwt_authority("", KeyAlgorithm::EcP256)),
        Err(BundleError::EmptyKeyId)
    );
    let bad = JwtAuthority {
        key_id: "bad".into(),
        public_key: vec![0x30, 0x00],
        expires_at: None,
    };
    assert!(matches!(
        bundle.add_jwt_authority(bad),
        Err(BundleError::InvalidJwtAuthority { .. })
    ));

    assert!(bundle.jwt_authority("k").is_some());
    assert!(bundle.remove_jwt_authority("k"));
    assert!(!bundle.remove_jwt_authority("k"));
    assert!(bundle.jwt_authority("k").is_none());
    assert!(bundle.remove_x509_authority(&ca.cert));
    assert!(bundle.is_empty());
}

#[test]
fn pem_round_trip() {
    let bundle = full_bundle();
    let pem = bundle.to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----\n").count(), 2);
    let parsed = TrustBundle::from_pem(&td("example.org"), &pem).expect("parse own PEM");
    assert_eq!(parsed.x509_authorities(), bundle.x509_authorities());
    assert!(parsed.jwt_authorities().is_empty());
}

#[test]
fn pem_rejects_other_blocks_and_empty_input() {
    let key_pem = PrivateKey::generate(KeyAlgorithm::EcP256)
        .expect("generate")
        .to_pkcs8_pem();
    assert_eq!(
        TrustBundle::from_pem(&td("example.org"), &key_pem),
        Err(BundleError::WrongPemLabel("PRIVATE KEY".into()))
    );
    assert_eq!(
        TrustBundle::from_pem(&td("example.org"), ""),
        Err(BundleError::NoCertificates)
    );
}

#[test]
fn der_round_trip() {
    let bundle = full_bundle();
    let der = bundle.x509_authorities_der();
    let parsed = TrustBundle::from_x509_der(&td("example.org"), &der).expect("parse own DER");
    assert_eq!(parsed.x509_authorities(), bundle.x509_authorities());
    assert!(
        TrustBundle::from_x509_der(&td("example.org"), &[])
            .expect("empty")
            .is_empty()
    );
}

#[test]
fn der_rejects_truncated_input() {
    let bundle = full_bundle();
    let der = bundle.x509_authorities_der();
    let first_len = bundle.x509_authorities()[0].len();
    let err = TrustBundle::from_x509_der(&td("example.org"), &der[..der.len() - 1])
        .expect_err("truncated");
    assert!(
        matches!(&err, BundleError::InvalidDer { offset, .. } if *offset == first_len),
        "{err}"
    );
    let err =
        TrustBundle::from_x509_der(&td("example.org"), &[0x04, 0x00]).expect_err("not a SEQUENCE");
    assert!(err.to_string().contains("expected a SEQUENCE"), "{err}");
}

#[test]
fn bundle_sources_select_by_trust_domain() {
    let bundle = TrustBundle::new(td("example.org"));
    assert!(bundle.bundle_for(&td("example.org")).is_some());
    assert!(bundle.bundle_for(&td("other.org")).is_none());

    let mut map = BTreeMap::new();
    map.insert(td("other.org"), TrustBundle::new(td("other.org")));
    assert!(map.bundle_for(&td("other.org")).is_some());
    assert!(map.bundle_for(&td("example.org")).is_none());
}
