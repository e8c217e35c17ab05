//! `SpiffePeerVerifier` against certificates made with rcgen: the expected
//! peer passes, and a wrong ID, an unknown CA, a CA of another trust
//! domain, a missing bundle and a certificate without a SPIFFE ID fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, Error};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spiffe::{SpiffeId, TrustDomain, X509Bundle, X509BundleSet};
use tessera_example_multicloud::verify::SpiffePeerVerifier;

const SERVER_ID: &str = "spiffe://gcp.example/payments";

/// A self-signed CA of one trust domain.
struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(trust_domain: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, trust_domain);
        params.subject_alt_names = vec![uri(&format!("spiffe://{trust_domain}"))];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        TestCa { params, key, der }
    }

    /// Signs an X.509-SVID leaf with the given URI SANs.
    fn leaf(&self, uris: &[&str]) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris.iter().map(|u| uri(u)).collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        params.signed_by(&key, &issuer).unwrap().der().clone()
    }
}

fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().unwrap())
}

fn bundle_set(bundles: &[(&str, &TestCa)]) -> Arc<X509BundleSet> {
    let mut set = X509BundleSet::default();
    for (trust_domain, ca) in bundles {
        let trust_domain = TrustDomain::new(trust_domain).unwrap();
        let bundle = X509Bundle::from_x509_authorities(trust_domain, &[ca.der.as_ref()]).unwrap();
        set.add_bundle(bundle);
    }
    Arc::new(set)
}

fn verifier(expected: &str, bundles: Arc<X509BundleSet>) -> SpiffePeerVerifier {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    SpiffePeerVerifier::new(SpiffeId::new(expected).unwrap(), bundles, provider)
}

/// Verifies `leaf` as a server certificate and as a client certificate,
/// checking that both give the same outcome.
fn verify(verifier: &SpiffePeerVerifier, leaf: &CertificateDer<'_>) -> Result<(), Error> {
    let name = ServerName::try_from("gcp.example").unwrap();
    let now = UnixTime::now();
    let as_server = verifier
        .verify_server_cert(leaf, &[], &name, &[], now)
        .map(drop);
    let as_client = verifier.verify_client_cert(leaf, &[], now).map(drop);
    assert_eq!(
        as_server.is_ok(),
        as_client.is_ok(),
        "server and client verification disagree: {as_server:?} / {as_client:?}"
    );
    as_server
}

#[test]
fn expected_federated_peer_passes() {
    let aws = TestCa::new("aws.example");
    let gcp = TestCa::new("gcp.example");
    let bundles = bundle_set(&[("aws.example", &aws), ("gcp.example", &gcp)]);

    let result = verify(&verifier(SERVER_ID, bundles), &gcp.leaf(&[SERVER_ID]));

    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn other_spiffe_id_fails() {
    let gcp = TestCa::new("gcp.example");
    let bundles = bundle_set(&[("gcp.example", &gcp)]);
    let leaf = gcp.leaf(&["spiffe://gcp.example/ledger"]);

    let error = verify(&verifier(SERVER_ID, bundles), &leaf).unwrap_err();

    let message = error.to_string();
    assert!(message.contains("spiffe://gcp.example/ledger"), "{message}");
    assert!(message.contains("is not the expected"), "{message}");
}

#[test]
fn unknown_ca_fails() {
    let gcp = TestCa::new("gcp.example");
    let impostor = TestCa::new("gcp.example");
    let bundles = bundle_set(&[("gcp.example", &gcp)]);

    let error = verify(&verifier(SERVER_ID, bundles), &impostor.leaf(&[SERVER_ID])).unwrap_err();

    // Both CAs have the subject CN=gcp.example, so path building tries the
    // trusted one as the issuer and its key does not match the signature.
    assert_eq!(
        error,
        Error::InvalidCertificate(CertificateError::BadSignature)
    );
}

#[test]
fn ca_of_another_domain_fails() {
    // The aws.example CA is trusted, but only for aws.example IDs.
    let aws = TestCa::new("aws.example");
    let gcp = TestCa::new("gcp.example");
    let bundles = bundle_set(&[("aws.example", &aws), ("gcp.example", &gcp)]);

    let error = verify(&verifier(SERVER_ID, bundles), &aws.leaf(&[SERVER_ID])).unwrap_err();

    assert_eq!(
        error,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn peer_without_bundle_fails() {
    let aws = TestCa::new("aws.example");
    let gcp = TestCa::new("gcp.example");
    let bundles = bundle_set(&[("aws.example", &aws)]);

    let error = verify(&verifier(SERVER_ID, bundles), &gcp.leaf(&[SERVER_ID])).unwrap_err();

    let message = error.to_string();
    assert!(
        message.contains("no bundle for the peer's trust domain gcp.example"),
        "{message}"
    );
}

#[test]
fn certificate_without_spiffe_id_fails() {
    let gcp = TestCa::new("gcp.example");
    let bundles = bundle_set(&[("gcp.example", &gcp)]);

    let error = verify(&verifier(SERVER_ID, bundles), &gcp.leaf(&[])).unwrap_err();

    let message = error.to_string();
    assert!(message.contains("not an X.509-SVID"), "{message}");
}
