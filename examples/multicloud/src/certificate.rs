//! Facts about a certificate that the example prints: which CA issued it.

use x509_parser::prelude::{FromDer, X509Certificate};

/// Returns the issuer name of a DER certificate as text, such as
/// `CN=gcp.example, serialNumber=3f2a...`. Tessera puts the authority ID
/// in its CA subjects, so the name distinguishes the old CA from its successor.
pub fn issuer_name(der: &[u8]) -> String {
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => cert.issuer().to_string(),
        Err(e) => format!("<unparsable certificate: {e}>"),
    }
}
