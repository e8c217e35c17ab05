use std::collections::HashMap;
use std::time::SystemTime;

use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};

use super::*;
use crate::bundle::TrustBundle;
use crate::key::KeyAlgorithm;
use crate::test_support::{HOUR, TestCa, id, now, td};

const LEAF_ID: &str = "spiffe://example.org/web";

fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().expect("ASCII URI"))
}

fn validate_leaf(
    ca: &TestCa,
    edit: impl FnOnce(&mut rcgen::CertificateParams),
) -> Result<VerifiedX509Svid, X509SvidError> {
    let (leaf, _) = ca.leaf_with(LEAF_ID, edit);
    validate_x509_svid(&[leaf], &ca.bundle("example.org"), now())
}

#[test]
fn validate_root_to_leaf() {
    for alg in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let ca = TestCa::root("example.org", alg);
        let (leaf, _) = ca.leaf(LEAF_ID);
        let verified = validate_x509_svid(
            std::slice::from_ref(&leaf),
            &ca.bundle("example.org"),
            now(),
        )
        .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.spiffe_id(), &id(LEAF_ID));
        assert_eq!(verified.chain(), &[leaf]);
        assert_eq!(verified.not_after(), now() + HOUR);
    }
}

#[test]
fn validate_root_to_intermediate_to_leaf() {
    let root = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let intermediate = root.intermediate("example.org");
    let (leaf, _) = intermediate.leaf(LEAF_ID);
    let chain = [leaf, intermediate.cert.clone()];

    let verified =
        validate_x509_svid(&chain, &root.bundle("example.org"), now()).expect("valid chain");
    assert_eq!(verified.spiffe_id(), &id(LEAF_ID));
    assert_eq!(verified.chain().len(), 2);

    let without_intermediate = validate_x509_svid(&chain[..1], &root.bundle("example.org"), now());
    assert!(matches!(
        without_intermediate,
        Err(X509SvidError::Untrusted { .. })
    ));
}

#[test]
fn validate_picks_bundle_by_trust_domain() {
    let ours = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let theirs = TestCa::root("other.org", KeyAlgorithm::EcP256);
    let (leaf, _) = theirs.leaf("spiffe://other.org/api");

    let mut bundles = HashMap::new();
    bundles.insert(td("example.org"), ours.bundle("example.org"));
    assert_eq!(
        validate_x509_svid(std::slice::from_ref(&leaf), &bundles, now())
            .map(|v| v.spiffe_id().clone()),
        Err(X509SvidError::NoBundle(td("other.org")))
    );

    bundles.insert(td("other.org"), theirs.bundle("other.org"));
    let verified = validate_x509_svid(&[leaf], &bundles, now()).expect("valid with both bundles");
    assert_eq!(verified.spiffe_id(), &id("spiffe://other.org/api"));
}

#[test]
fn validate_rejects_wrong_trust_domain_bundle() {
    // The leaf claims example.org, but was issued by the other.org CA.
    let ours = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let theirs = TestCa::root("other.org", KeyAlgorithm::EcP256);
    let (leaf, _) = theirs.leaf(LEAF_ID);

    let mut bundles = HashMap::new();
    bundles.insert(td("example.org"), ours.bundle("example.org"));
    bundles.insert(td("other.org"), theirs.bundle("other.org"));
    let result = validate_x509_svid(&[leaf], &bundles, now());
    assert!(
        matches!(&result, Err(X509SvidError::Untrusted { trust_domain, .. }) if *trust_domain == td("example.org")),
        "{result:?}"
    );
}

#[test]
fn validate_rejects_empty_bundle() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, _) = ca.leaf(LEAF_ID);
    let result = validate_x509_svid(&[leaf], &TrustBundle::new(td("example.org")), now());
    assert_eq!(
        result.map(|_| ()),
        Err(X509SvidError::NoX509Authorities(td("example.org")))
    );
}

#[test]
fn validate_rejects_two_uri_sans() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let result = validate_leaf(&ca, |p| {
        p.subject_alt_names.push(uri("spiffe://example.org/db"))
    });
    assert_eq!(
        result.map(|_| ()),
        Err(X509SvidError::MultipleUriSans { count: 2 })
    );
}

#[test]
fn validate_rejects_missing_uri_san() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let result = validate_leaf(&ca, |p| {
        p.subject_alt_names = vec![SanType::DnsName(
            "web.example.org".try_into().expect("ASCII"),
        )];
    });
    assert_eq!(result.map(|_| ()), Err(X509SvidError::NoUriSan));
}

#[test]
fn validate_rejects_invalid_spiffe_id() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let result = validate_leaf(&ca, |p| {
        p.subject_alt_names = vec![uri("spiffe://Example.org/web")]
    });
    assert!(matches!(
        result,
        Err(X509SvidError::InvalidId(
            IdError::TrustDomainCharacter { .. }
        ))
    ));

    let result = validate_leaf(&ca, |p| {
        p.subject_alt_names = vec![uri("https://example.org/web")]
    });
    assert!(matches!(
        result,
        Err(X509SvidError::InvalidId(IdError::WrongScheme { .. }))
    ));
}

#[test]
fn validate_rejects_leaf_without_path() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let result = validate_leaf(&ca, |p| {
        p.subject_alt_names = vec![uri("spiffe://example.org")]
    });
    assert_eq!(
        result.map(|_| ()),
        Err(X509SvidError::LeafIdWithoutPath(id("spiffe://example.org")))
    );
}

#[test]
fn validate_rejects_leaf_ca() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let result = validate_leaf(&ca, |p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    assert_eq!(
        result.map(|_| ()),
        Err(X509SvidError::LeafIsCa(id(LEAF_ID)))
    );
}

#[test]
fn validate_rejects_leaf_key_usages() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let cases = [
        (
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            X509SvidError::LeafCanSign {
                id: id(LEAF_ID),
                usage: "keyCertSign",
            },
        ),
        (
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
            X509SvidError::LeafCanSign {
                id: id(LEAF_ID),
                usage: "cRLSign",
            },
        ),
        (
            vec![KeyUsagePurpose::KeyEncipherment],
            X509SvidError::MissingDigitalSignature(id(LEAF_ID)),
        ),
        (vec![], X509SvidError::MissingKeyUsage(id(LEAF_ID))),
    ];
    for (usages, expected) in cases {
        let result = validate_leaf(&ca, |p| p.key_usages = usages.clone());
        assert_eq!(result.map(|_| ()), Err(expected), "{usages:?}");
    }
}

#[test]
fn validate_rejects_extended_key_usage_without_client_auth() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let result = validate_leaf(&ca, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    assert_eq!(
        result.map(|_| ()),
        Err(X509SvidError::ExtendedKeyUsage(id(LEAF_ID)))
    );

    let without_extension = validate_leaf(&ca, |p| p.extended_key_usages.clear());
    assert!(without_extension.is_ok(), "{without_extension:?}");
}

#[test]
fn validate_rejects_expired_and_not_yet_valid() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, _) = ca.leaf(LEAF_ID);
    let bundle = ca.bundle("example.org");
    let secs = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };

    let late = now() + 2 * HOUR;
    assert_eq!(
        validate_x509_svid(std::slice::from_ref(&leaf), &bundle, late).map(|_| ()),
        Err(X509SvidError::Expired {
            not_after: secs(now() + HOUR),
            now: secs(late)
        })
    );
    let early = now() - 2 * HOUR;
    assert_eq!(
        validate_x509_svid(&[leaf], &bundle, early).map(|_| ()),
        Err(X509SvidError::NotYetValid {
            not_before: secs(now() - HOUR),
            now: secs(early)
        })
    );
}

#[test]
fn validate_rejects_bad_signature() {
    // An impostor CA with the same name and URI SAN but another key.
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let impostor = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, _) = impostor.leaf(LEAF_ID);
    let result = validate_x509_svid(
        std::slice::from_ref(&leaf),
        &ca.bundle("example.org"),
        now(),
    );
    assert!(
        matches!(result, Err(X509SvidError::Untrusted { .. })),
        "{result:?}"
    );

    // The genuine leaf with one signature bit flipped.
    let (genuine, _) = ca.leaf(LEAF_ID);
    let mut tampered = genuine.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let result = validate_x509_svid(
        &[CertificateDer::from(tampered)],
        &ca.bundle("example.org"),
        now(),
    );
    assert!(
        matches!(result, Err(X509SvidError::Untrusted { .. })),
        "{result:?}"
    );
}

#[test]
fn validate_rejects_non_ca_intermediate() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, _) = ca.leaf(LEAF_ID);
    let (other_leaf, _) = ca.leaf("spiffe://example.org/other");
    let result = validate_x509_svid(&[leaf, other_leaf], &ca.bundle("example.org"), now());
    assert!(
        matches!(
            result,
            Err(X509SvidError::IntermediateNotCa { index: 1, .. })
        ),
        "{result:?}"
    );
}

#[test]
fn validate_rejects_empty_and_garbage_chains() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let bundle = ca.bundle("example.org");
    assert_eq!(
        validate_x509_svid(&[], &bundle, now()).map(|_| ()),
        Err(X509SvidError::EmptyChain)
    );
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(
        validate_x509_svid(&[garbage], &bundle, now()),
        Err(X509SvidError::Certificate { index: 0, .. })
    ));
}

#[test]
fn svid_params_follow_the_leaf_profile() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let dns = vec!["web.example.org".to_owned()];
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    let params = svid_params(&id(LEAF_ID), &dns, now() - HOUR, now() + HOUR).expect("params");
    let leaf = ca.sign(&params, &key.to_rcgen().expect("rcgen key"));

    let info = CertInfo::parse(&leaf).expect("parse");
    assert_eq!(info.uri_sans, vec![LEAF_ID.to_owned()]);
    assert!(!info.is_ca);
    let usage = info.key_usage.expect("key usage present");
    assert!(usage.digital_signature);
    assert!(!usage.key_cert_sign);
    assert!(!usage.crl_sign);
    let extended = info.extended_key_usage.expect("extended key usage present");
    assert!(extended.server_auth);
    assert!(extended.client_auth);

    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).expect("parse");
    let san = parsed
        .subject_alternative_name()
        .expect("valid")
        .expect("present");
    assert!(san.value.general_names.iter().any(|n| matches!(
        n,
        x509_parser::extensions::GeneralName::DNSName("web.example.org")
    )));
    assert_ne!(
        params.serial_number,
        svid_params(&id(LEAF_ID), &[], now(), now() + HOUR)
            .expect("params")
            .serial_number
    );
}

#[test]
fn svid_params_reject_bad_input() {
    let no_path = svid_params(&id("spiffe://example.org"), &[], now(), now() + HOUR);
    assert_eq!(
        no_path.map(|_| ()),
        Err(X509SvidError::LeafIdWithoutPath(id("spiffe://example.org")))
    );

    let dns = vec!["wéb.example.org".to_owned()];
    let bad_dns = svid_params(&id(LEAF_ID), &dns, now(), now() + HOUR);
    assert_eq!(
        bad_dns.map(|_| ()),
        Err(X509SvidError::InvalidDnsName("wéb.example.org".into()))
    );

    let empty = svid_params(&id(LEAF_ID), &[], now(), now());
    assert_eq!(empty.map(|_| ()), Err(X509SvidError::InvalidValidity));
}

#[test]
fn ca_params_follow_the_ca_profile() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let info = CertInfo::parse(&ca.cert).expect("parse");
    assert!(info.is_ca);
    assert_eq!(info.uri_sans, vec!["spiffe://example.org".to_owned()]);
    let usage = info.key_usage.expect("key usage present");
    assert!(usage.key_cert_sign);
    assert!(usage.crl_sign);
    assert!(!usage.digital_signature);
    assert_eq!(
        spiffe_id_from_certificate(&ca.cert),
        Ok(id("spiffe://example.org"))
    );
}

#[test]
fn spiffe_id_from_certificate_reads_the_uri_san() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, _) = ca.leaf(LEAF_ID);
    assert_eq!(spiffe_id_from_certificate(&leaf), Ok(id(LEAF_ID)));
    let (two, _) = ca.leaf_with(LEAF_ID, |p| {
        p.subject_alt_names.push(uri("spiffe://example.org/b"))
    });
    assert_eq!(
        spiffe_id_from_certificate(&two),
        Err(X509SvidError::MultipleUriSans { count: 2 })
    );
    assert!(spiffe_id_from_certificate(b"junk").is_err());
}

#[test]
fn x509_svid_new_checks_key_and_profile() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, key) = ca.leaf(LEAF_ID);
    let svid = X509Svid::new(vec![leaf.clone()], key).expect("matching key");
    assert_eq!(svid.spiffe_id(), &id(LEAF_ID));
    assert_eq!(svid.leaf(), &leaf);
    assert_eq!(svid.cert_chain().len(), 1);

    let other = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    assert_eq!(
        X509Svid::new(vec![leaf], other).map(|_| ()),
        Err(X509SvidError::KeyMismatch(id(LEAF_ID)))
    );
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).expect("generate");
    assert_eq!(
        X509Svid::new(vec![], key.clone()).map(|_| ()),
        Err(X509SvidError::EmptyChain)
    );
    assert!(matches!(
        X509Svid::new(vec![ca.cert.clone()], key),
        Err(X509SvidError::LeafIdWithoutPath(_))
    ));
}

#[test]
fn x509_svid_debug_hides_key() {
    let ca = TestCa::root("example.org", KeyAlgorithm::EcP256);
    let (leaf, key) = ca.leaf(LEAF_ID);
    let pem = key.to_pkcs8_pem();
    let body = pem.lines().nth(1).expect("PEM body").to_owned();
    let svid = X509Svid::new(vec![leaf], key).expect("matching key");
    let debug = format!("{svid:?}");
    assert!(debug.contains("spiffe://example.org/web"), "{debug}");
    assert!(!debug.contains(&body), "{debug}");
}

#[test]
fn error_messages_are_readable() {
    let err = X509SvidError::Expired {
        not_after: 1_800_003_600,
        now: 1_800_007_200,
    };
    assert_eq!(
        err.to_string(),
        "a certificate of the chain expired at 2027-01-15T09:00:00Z (validation time 2027-01-15T10:00:00Z)"
    );
}
