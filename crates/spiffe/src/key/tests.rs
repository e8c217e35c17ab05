use super::*;
use rcgen::PublicKeyData;

#[test]
fn algorithm_names_round_trip() {
    for alg in KeyAlgorithm::ALL {
        assert_eq!(alg.as_str().parse::<KeyAlgorithm>(), Ok(alg));
        assert_eq!(alg.to_string(), alg.as_str());
    }
    assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::EcP256);
    assert_eq!(
        "ed25519".parse::<KeyAlgorithm>(),
        Err(KeyError::UnknownAlgorithm("ed25519".into()))
    );
    assert!("EC-P256".parse::<KeyAlgorithm>().is_err());
}

#[test]
fn generate_and_parse_every_algorithm() {
    for alg in KeyAlgorithm::ALL {
        let key = PrivateKey::generate(alg).expect("generate");
        assert_eq!(key.algorithm(), alg);

        let from_der = PrivateKey::from_pkcs8_der(key.pkcs8_der()).expect("parse DER");
        assert_eq!(from_der.algorithm(), alg);
        assert_eq!(from_der.public_key_der(), key.public_key_der());

        let pem = key.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg}");
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"), "{alg}");
        assert!(pem.lines().all(|l| l.len() <= 64), "{alg}");
        let from_pem = PrivateKey::from_pkcs8_pem(&pem).expect("parse PEM");
        assert_eq!(from_pem.pkcs8_der(), key.pkcs8_der());

        let pem_crate = pem::parse(pem.as_str()).expect("pem crate parses our PEM");
        assert_eq!(pem_crate.contents(), key.pkcs8_der());
    }
}

#[test]
fn public_key_is_spki_der() {
    for alg in KeyAlgorithm::ALL {
        let key = PrivateKey::generate(alg).expect("generate");
        let spki = key.public_key_der();
        let rcgen_spki = key.to_rcgen().expect("rcgen").subject_public_key_info();
        assert_eq!(spki, rcgen_spki, "{alg}");
    }
}

#[test]
fn debug_does_not_print_key_bytes() {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let debug = format!("{key:?}");
    assert_eq!(debug, "PrivateKey { algorithm: EcP256, .. }");

    let der_hex: String = key.pkcs8_der().iter().map(|b| format!("{b:02x}")).collect();
    let pem = key.to_pkcs8_pem();
    let body = pem.lines().nth(1).expect("PEM has a body line");
    assert!(!debug.contains(&der_hex));
    assert!(!debug.contains(body));
    assert!(!format!("{key:#?}").contains(body));
}

#[test]
fn parse_rejects_garbage_and_wrong_label() {
    assert_eq!(
        PrivateKey::from_pkcs8_der(b"not a key").map(|k| k.algorithm()),
        Err(KeyError::InvalidPkcs8 { len: 9 })
    );
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let wrong = key.to_pkcs8_pem().replace("PRIVATE KEY", "EC PRIVATE KEY");
    assert_eq!(
        PrivateKey::from_pkcs8_pem(&wrong).map(|k| k.algorithm()),
        Err(KeyError::WrongPemLabel("EC PRIVATE KEY".into()))
    );
    assert!(matches!(
        PrivateKey::from_pkcs8_pem("garbage"),
        Err(KeyError::InvalidPem(_))
    ));
}

#[test]
fn parse_rejects_rsa_3072() {
    let pair = RsaKeyPair::generate(KeySize::Rsa3072).expect("generate");
    let der = pair.as_der().expect("encode");
    assert_eq!(
        PrivateKey::from_pkcs8_der(der.as_ref()).map(|k| k.algorithm()),
        Err(KeyError::UnsupportedRsaSize { bits: 3072 })
    );
}

#[test]
fn sign_jws_verifies_with_public_key() {
    let cases = [
        (
            KeyAlgorithm::EcP256,
            &signature::ECDSA_P256_SHA256_FIXED as &dyn signature::VerificationAlgorithm,
        ),
        (KeyAlgorithm::EcP384, &signature::ECDSA_P384_SHA384_FIXED),
        (
            KeyAlgorithm::Rsa2048,
            &signature::RSA_PKCS1_2048_8192_SHA256,
        ),
    ];
    for (alg, verification) in cases {
        let key = PrivateKey::generate(alg).expect("generate");
        let sig = key.sign_jws(b"message").expect("sign");
        let public = signature::UnparsedPublicKey::new(verification, key.public_key_der());
        assert!(public.verify(b"message", &sig).is_ok(), "{alg}");
        assert!(public.verify(b"other", &sig).is_err(), "{alg}");
    }
}

#[test]
fn rcgen_key_pair_can_be_zeroized() {
    use zeroize::Zeroize;
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let mut pair = key.to_rcgen().expect("rcgen key");
    assert_eq!(pair.serialized_der(), key.pkcs8_der());
    pair.zeroize();
    assert!(pair.serialized_der().iter().all(|b| *b == 0));
}
