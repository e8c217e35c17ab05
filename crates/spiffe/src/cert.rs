//! Reads the X.509 certificate fields that the SPIFFE rules depend on:
//! basic constraints, key usage, extended key usage, URI SANs, validity
//! and the public key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The key usage bits that SPIFFE checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyUsageBits {
    pub(crate) digital_signature: bool,
    pub(crate) key_cert_sign: bool,
    pub(crate) crl_sign: bool,
}

/// The extended key usage purposes that SPIFFE checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtendedKeyUsageBits {
    pub(crate) server_auth: bool,
    pub(crate) client_auth: bool,
}

/// The fields of one certificate that SPIFFE validation reads.
#[derive(Debug, Clone)]
pub(crate) struct CertInfo {
    /// Subject DN in RFC 4514 form, for messages.
    pub(crate) subject: String,
    /// Basic constraints cA flag; `false` when the extension is absent.
    pub(crate) is_ca: bool,
    /// Key usage; `None` when the extension is absent.
    pub(crate) key_usage: Option<KeyUsageBits>,
    /// Extended key usage; `None` when the extension is absent.
    pub(crate) extended_key_usage: Option<ExtendedKeyUsageBits>,
    /// Every URI SAN, in certificate order.
    pub(crate) uri_sans: Vec<String>,
    pub(crate) not_after: SystemTime,
    /// DER SubjectPublicKeyInfo.
    pub(crate) spki: Vec<u8>,
}

impl CertInfo {
    /// Parses a DER certificate. The error is a reason for a message.
    pub(crate) fn parse(der: &[u8]) -> Result<Self, String> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("invalid DER certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            ));
        }

        let basic_constraints = cert
            .basic_constraints()
            .map_err(|e| format!("invalid basic constraints: {e}"))?;
        let key_usage = cert
            .key_usage()
            .map_err(|e| format!("invalid key usage: {e}"))?
            .map(|ext| KeyUsageBits {
                digital_signature: ext.value.digital_signature(),
                key_cert_sign: ext.value.key_cert_sign(),
                crl_sign: ext.value.crl_sign(),
            });
        let extended_key_usage = cert
            .extended_key_usage()
            .map_err(|e| format!("invalid extended key usage: {e}"))?
            .map(|ext| ExtendedKeyUsageBits {
                server_auth: ext.value.server_auth,
                client_auth: ext.value.client_auth,
            });

        Ok(Self {
            subject: cert.subject().to_string(),
            is_ca: basic_constraints.is_some_and(|ext| ext.value.ca),
            key_usage,
            extended_key_usage,
            uri_sans: uri_sans(&cert)?,
            not_after: unix_to_system_time(cert.validity().not_after.timestamp()),
            spki: cert.public_key().raw.to_vec(),
        })
    }
}

fn uri_sans(cert: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| format!("invalid subject alternative name: {e}"))?
    else {
        return Ok(Vec::new());
    };
    let uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect();
    Ok(uris)
}

/// Converts Unix seconds to a `SystemTime`, clamping times before 1970 to
/// the epoch (no SPIFFE certificate is valid then).
pub(crate) fn unix_to_system_time(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Formats Unix seconds as an RFC 3339 UTC time for messages, falling back
/// to the number when it is outside the range the `time` crate supports.
pub(crate) fn format_unix_time(seconds: impl Into<i128> + Copy) -> String {
    let value: i128 = seconds.into();
    i64::try_from(value)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{value} (Unix seconds)"))
}
