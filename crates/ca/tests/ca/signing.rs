//! X.509-SVID signing: key checks, profiles, lifetimes and validation.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, KeyPair};
use tessera_ca::{CaError, CertificateAuthority};
use tessera_spiffe::id::SpiffeId;
use tessera_spiffe::key::KeyAlgorithm;
use tessera_spiffe::x509::validate_x509_svid;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::common::{HOUR, memory_ca, public_key, start, workload_id};

const ALGORITHMS: [KeyAlgorithm; 4] = [
    KeyAlgorithm::EcP256,
    KeyAlgorithm::EcP384,
    KeyAlgorithm::Rsa2048,
    KeyAlgorithm::Rsa4096,
];

fn sign(
    ca: &CertificateAuthority,
    key: &[u8],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, CaError> {
    ca.sign_x509_svid(&workload_id(), key, &[], HOUR, start())
}

#[test]
fn svid_validates_for_every_ca_algorithm() {
    for ca_algorithm in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let ca = memory_ca(ca_algorithm);
        let chain = sign(&ca, &public_key(KeyAlgorithm::EcP256)).expect("SVID is signed");

        let verified = validate_x509_svid(&chain, &ca.bundle(), start())
            .unwrap_or_else(|e| panic!("CA {ca_algorithm}: SVID does not validate: {e}"));
        assert_eq!(verified.spiffe_id(), &workload_id(), "CA {ca_algorithm}");
    }
}

#[test]
fn svid_validates_for_every_leaf_algorithm() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    for leaf_algorithm in ALGORITHMS {
        let chain = sign(&ca, &public_key(leaf_algorithm))
            .unwrap_or_else(|e| panic!("leaf {leaf_algorithm}: not signed: {e}"));

        let verified = validate_x509_svid(&chain, &ca.bundle(), start());
        assert!(verified.is_ok(), "leaf {leaf_algorithm}: {verified:?}");
    }
}

#[test]
fn svid_chain_is_leaf_only() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let chain = sign(&ca, &public_key(KeyAlgorithm::EcP256)).expect("SVID is signed");
    assert_eq!(chain.len(), 1);
}

#[test]
fn svid_embeds_requested_key_and_dns_names() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let key = public_key(KeyAlgorithm::EcP384);
    let dns = vec!["api.example.org".to_string()];
    let chain = ca
        .sign_x509_svid(&workload_id(), &key, &dns, HOUR, start())
        .expect("SVID is signed");

    let (_, cert) = X509Certificate::from_der(&chain[0]).expect("leaf parses");
    assert_eq!(cert.public_key().raw, key.as_slice());
    let san = cert
        .subject_alternative_name()
        .expect("SAN parses")
        .expect("SAN present");
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        names.contains(&"DNSName(api.example.org)".to_string()),
        "{names:?}"
    );
}

#[test]
fn svid_has_authority_key_identifier_of_active_ca() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let chain = sign(&ca, &public_key(KeyAlgorithm::EcP256)).expect("SVID is signed");
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("leaf parses");
    let active = &ca.authorities()[0];
    let (_, root) = X509Certificate::from_der(&active.certificate).expect("CA parses");

    let aki = leaf
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    let ski = root
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ski) => {
                Some(ski.0.to_vec())
            }
            _ => None,
        });
    assert!(aki.is_some(), "leaf has no authority key identifier");
    assert_eq!(aki, ski);
}

#[test]
fn svid_lifetime_is_ttl_backdated() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let now = start() + HOUR;
    let chain = ca
        .sign_x509_svid(
            &workload_id(),
            &public_key(KeyAlgorithm::EcP256),
            &[],
            HOUR,
            now,
        )
        .expect("SVID is signed");

    let (_, cert) = X509Certificate::from_der(&chain[0]).expect("leaf parses");
    let now_secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs() as i64;
    assert_eq!(cert.validity().not_after.timestamp(), now_secs + 3600);
    assert_eq!(cert.validity().not_before.timestamp(), now_secs - 10);
}

#[test]
fn svid_not_after_clamped_to_ca() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let chain = ca
        .sign_x509_svid(
            &workload_id(),
            &public_key(KeyAlgorithm::EcP256),
            &[],
            1000 * HOUR,
            start(),
        )
        .expect("SVID is signed");

    let (_, cert) = X509Certificate::from_der(&chain[0]).expect("leaf parses");
    let ca_not_after = ca.authorities()[0]
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs() as i64;
    assert_eq!(cert.validity().not_after.timestamp(), ca_not_after);
}

#[test]
fn svid_rejects_non_ascii_dns_name() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let dns = vec!["bücher.example.org".to_string()];
    let result = ca.sign_x509_svid(
        &workload_id(),
        &public_key(KeyAlgorithm::EcP256),
        &dns,
        HOUR,
        start(),
    );
    assert!(
        matches!(result, Err(CaError::SvidProfile { .. })),
        "{result:?}"
    );
    assert!(result.is_err_and(|e| e.is_invalid_request()));
}

#[test]
fn svid_huge_ttl_clamped_to_ca() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let chain = ca.sign_x509_svid(
        &workload_id(),
        &public_key(KeyAlgorithm::EcP256),
        &[],
        Duration::MAX,
        start(),
    );
    assert!(chain.is_ok(), "{chain:?}");
}

#[test]
fn svid_rejects_after_active_expiry() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let late = start() + 25 * HOUR;
    let result = ca.sign_x509_svid(
        &workload_id(),
        &public_key(KeyAlgorithm::EcP256),
        &[],
        HOUR,
        late,
    );
    assert!(
        matches!(result, Err(CaError::ActiveExpired { .. })),
        "{result:?}"
    );
    assert!(
        result.is_err_and(|e| !e.is_invalid_request()),
        "the CA is at fault"
    );
}

#[test]
fn svid_rejects_foreign_trust_domain() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let id = SpiffeId::parse("spiffe://other.org/workload").expect("valid SPIFFE ID");
    let result = ca.sign_x509_svid(&id, &public_key(KeyAlgorithm::EcP256), &[], HOUR, start());
    assert!(
        matches!(result, Err(CaError::ForeignTrustDomain { .. })),
        "{result:?}"
    );
    assert!(result.is_err_and(|e| e.is_invalid_request()));
}

#[test]
fn svid_rejects_trust_domain_id() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let id = SpiffeId::parse("spiffe://example.org").expect("valid SPIFFE ID");
    let result = ca.sign_x509_svid(&id, &public_key(KeyAlgorithm::EcP256), &[], HOUR, start());
    assert!(
        matches!(result, Err(CaError::RootSpiffeId { .. })),
        "{result:?}"
    );
}

#[test]
fn svid_rejects_ttl_under_one_second() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let key = public_key(KeyAlgorithm::EcP256);
    for ttl in [Duration::ZERO, Duration::from_millis(999)] {
        let result = ca.sign_x509_svid(&workload_id(), &key, &[], ttl, start());
        assert!(
            matches!(result, Err(CaError::SvidTtlTooShort { .. })),
            "ttl {ttl:?}: {result:?}"
        );
    }
}

#[test]
fn svid_rejects_before_active_not_before() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let early = start() - HOUR;
    let result = ca.sign_x509_svid(
        &workload_id(),
        &public_key(KeyAlgorithm::EcP256),
        &[],
        HOUR,
        early,
    );
    assert!(
        matches!(result, Err(CaError::ActiveNotYetValid { .. })),
        "{result:?}"
    );
}

/// Encodes a DER element with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Builds an RSA SubjectPublicKeyInfo with a modulus of `bits` bits (not a real key).
fn rsa_spki(bits: usize) -> Vec<u8> {
    let mut modulus = vec![0xc5; bits / 8];
    modulus.insert(0, 0);
    let rsa_key = der(0x30, &[der(0x02, &modulus), der(0x02, &[1, 0, 1])].concat());
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            der(0x05, &[]),
        ]
        .concat(),
    );
    let bit_string = der(0x03, &[&[0u8][..], &rsa_key].concat());
    der(0x30, &[algorithm, bit_string].concat())
}

fn ec_spki(alg: &'static signature::EcdsaSigningAlgorithm) -> Vec<u8> {
    let pair = signature::EcdsaKeyPair::generate(alg).expect("EC key generation succeeds");
    pair.public_key()
        .as_der()
        .expect("EC public key encodes")
        .as_ref()
        .to_vec()
}

#[test]
fn svid_public_key_rejections_table() {
    let ed25519 = signature::Ed25519KeyPair::generate().expect("Ed25519 key generation succeeds");
    let ed25519 = ed25519
        .public_key()
        .as_der()
        .expect("Ed25519 public key encodes")
        .as_ref()
        .to_vec();

    let p256 = public_key(KeyAlgorithm::EcP256);
    let mut trailing = p256.clone();
    trailing.push(0);
    let mut off_curve = p256.clone();
    let last = off_curve.len() - 1;
    off_curve[last] ^= 0x01;

    type Expected = fn(&CaError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
        ("empty", Vec::new(), |e| {
            matches!(e, CaError::InvalidPublicKey { .. })
        }),
        ("garbage", b"not a key".to_vec(), |e| {
            matches!(e, CaError::InvalidPublicKey { .. })
        }),
        ("trailing byte", trailing, |e| {
            matches!(e, CaError::InvalidPublicKey { .. })
        }),
        ("off curve", off_curve, |e| {
            matches!(e, CaError::InvalidPublicKey { .. })
        }),
        ("ed25519", ed25519, |e| {
            matches!(e, CaError::UnsupportedPublicKey { .. })
        }),
        (
            "p521",
            ec_spki(&signature::ECDSA_P521_SHA512_ASN1_SIGNING),
            |e| matches!(e, CaError::UnsupportedPublicKey { .. }),
        ),
        ("rsa 1024", rsa_spki(1024), |e| {
            matches!(e, CaError::UnsupportedRsaKeySize { bits: 1024 })
        }),
        ("rsa 2040", rsa_spki(2040), |e| {
            matches!(e, CaError::UnsupportedRsaKeySize { bits: 2040 })
        }),
        ("rsa 16384", rsa_spki(16384), |e| {
            matches!(e, CaError::UnsupportedRsaKeySize { bits: 16384 })
        }),
    ];

    let ca = memory_ca(KeyAlgorithm::EcP256);
    for (case, key, expected) in cases {
        match sign(&ca, &key) {
            Ok(_) => panic!("case {case:?}: key was accepted"),
            Err(e) => {
                assert!(expected(&e), "case {case:?}: unexpected error {e:?}");
                assert!(e.is_invalid_request(), "case {case:?}: {e:?}");
            }
        }
    }
}

#[test]
fn svid_rejection_message_names_the_fix() {
    let ca = memory_ca(KeyAlgorithm::EcP256);
    let err = sign(&ca, &rsa_spki(1024)).expect_err("short RSA key is rejected");
    assert_eq!(
        err.to_string(),
        "unsupported RSA public key of 1024 bits; use 2048 to 8192 bits"
    );
}

#[test]
fn ca_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
}

#[test]
fn signing_from_many_threads() {
    let ca = std::sync::Arc::new(memory_ca(KeyAlgorithm::EcP256));
    let key = public_key(KeyAlgorithm::EcP256);

    // Signers work at hour 23, which every authority created by the rotations
    // below covers, while another thread rotates through hours 0 to 23.
    let now = start() + 23 * HOUR;
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..20 {
                    let chain = ca
                        .sign_x509_svid(&workload_id(), &key, &[], HOUR, now)
                        .expect("SVID is signed");
                    let verified = validate_x509_svid(&chain, &ca.bundle(), now);
                    assert!(verified.is_ok(), "{verified:?}");
                }
            });
        }
        scope.spawn(|| {
            for hour in 0..24 {
                ca.rotate(start() + HOUR * hour).expect("rotation succeeds");
            }
        });
    });
}
