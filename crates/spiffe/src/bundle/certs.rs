//! X.509 authorities as PEM `CERTIFICATE` blocks and as concatenated DER
//! (the form of the Workload API's X.509 bundle fields).

use rustls_pki_types::CertificateDer;

use crate::id::TrustDomain;
use crate::pem_encode::{pem_len, write_pem};

use super::{BundleError, TrustBundle, check_input_size};

const CERTIFICATE_PEM_LABEL: &str = "CERTIFICATE";

impl TrustBundle {
    /// Returns the X.509 authorities as concatenated DER certificates.
    pub fn x509_authorities_der(&self) -> Vec<u8> {
        self.x509_authorities
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect()
    }

    /// Parses concatenated DER CA certificates into a bundle for `td`. Empty
    /// input yields a bundle without X.509 authorities.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the input is too large, a certificate is
    /// malformed or is not a CA certificate.
    pub fn from_x509_der(td: &TrustDomain, der: &[u8]) -> Result<Self, BundleError> {
        check_input_size(der.len())?;
        let mut bundle = Self::new(td.clone());
        let mut offset = 0;
        while offset < der.len() {
            let len = der_element_len(&der[offset..])
                .map_err(|reason| BundleError::InvalidDer { offset, reason })?;
            let cert = CertificateDer::from(der[offset..offset + len].to_vec());
            bundle
                .add_x509_authority(cert)
                .map_err(|e| BundleError::InvalidDer {
                    offset,
                    reason: e.to_string(),
                })?;
            offset += len;
        }
        Ok(bundle)
    }

    /// Returns the X.509 authorities as PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        let capacity = self
            .x509_authorities
            .iter()
            .map(|c| pem_len(CERTIFICATE_PEM_LABEL, c.len()))
            .sum();
        let mut out = String::with_capacity(capacity);
        for cert in &self.x509_authorities {
            write_pem(&mut out, CERTIFICATE_PEM_LABEL, cert);
        }
        out
    }

    /// Parses PEM `CERTIFICATE` blocks into a bundle for `td`.
    ///
    /// # Errors
    ///
    /// Returns [`BundleError`] when the input is too large, the PEM is
    /// malformed, contains a block of another kind or no certificate at all, or
    /// a certificate is not a CA certificate.
    pub fn from_pem(td: &TrustDomain, pem: &str) -> Result<Self, BundleError> {
        check_input_size(pem.len())?;
        let blocks = ::pem::parse_many(pem).map_err(|e| BundleError::InvalidPem(e.to_string()))?;
        if blocks.is_empty() {
            return Err(BundleError::NoCertificates);
        }
        let mut bundle = Self::new(td.clone());
        for block in blocks {
            if block.tag() != CERTIFICATE_PEM_LABEL {
                return Err(BundleError::WrongPemLabel(block.tag().to_owned()));
            }
            bundle.add_x509_authority(CertificateDer::from(block.into_contents()))?;
        }
        Ok(bundle)
    }
}

/// Returns the total length (header and content) of the DER SEQUENCE at the
/// start of `der`.
fn der_element_len(der: &[u8]) -> Result<usize, String> {
    let [tag, first_len, rest @ ..] = der else {
        return Err("truncated DER header".to_owned());
    };
    if *tag != 0x30 {
        return Err(format!(
            "expected a SEQUENCE (tag 0x30), found tag {tag:#04x}"
        ));
    }
    let (header_len, content_len) = if *first_len < 0x80 {
        (2, usize::from(*first_len))
    } else {
        let count = usize::from(first_len & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err("invalid DER length".to_owned());
        }
        let content_len = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + count, content_len)
    };
    let total = header_len + content_len;
    if total > der.len() {
        return Err(format!(
            "certificate claims {total} bytes but only {} remain",
            der.len()
        ));
    }
    Ok(total)
}
