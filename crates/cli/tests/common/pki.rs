//! Certificate helpers: PEM reading, SAN and validity fields, and chain
//! validation with rustls-webpki, independent of Tessera's own code.

use std::path::Path;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};

/// Reads every certificate in a PEM file.
pub fn read_pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("failed to open {}: {e}", path.display()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("invalid PEM in {}: {e}", path.display()))
}

/// Parses every certificate in PEM text.
pub fn pem_certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("invalid PEM certificates: {e}\n{pem}"))
}

/// URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse a certificate");
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                uris.push((*uri).to_owned());
            }
        }
    }
    uris
}

/// Returns the single SPIFFE ID of an X.509-SVID.
#[track_caller]
pub fn svid_spiffe_id(der: &[u8]) -> String {
    let uris = uri_sans(der);
    assert_eq!(
        uris.len(),
        1,
        "an X.509-SVID has exactly one URI SAN: {uris:?}"
    );
    uris[0].clone()
}

/// Serial number of a DER certificate, as lowercase hex.
pub fn serial_hex(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse a certificate");
    cert.raw_serial_as_string()
}

/// `notAfter` of a DER certificate, in Unix seconds.
pub fn not_after(der: &[u8]) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parse a certificate");
    cert.validity().not_after.timestamp()
}

/// Validates an X.509-SVID chain (leaf first) against `roots` at `now` with
/// rustls-webpki, for client authentication.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0])?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970");
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    Ok(())
}
