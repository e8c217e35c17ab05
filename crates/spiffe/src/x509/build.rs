//! Certificate parameters for the X.509-SVID leaf and CA profiles. The
//! caller signs them with rcgen, so the issuer sets the authority key
//! identifier.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::id::{SpiffeId, TrustDomain};

use super::X509SvidError;

/// Organization name in the subject of every certificate Tessera issues.
const SUBJECT_ORGANIZATION: &str = "Tessera";

/// Returns parameters for an X.509-SVID leaf certificate: one URI SAN with
/// `id` plus one DNS SAN per `dns_names` entry, basic constraints cA false,
/// key usage digitalSignature, extended key usage serverAuth and clientAuth,
/// and a random serial number.
///
/// Key usage has only digitalSignature, for every key type: rustls and
/// modern TLS use ephemeral key exchange and never need keyEncipherment.
///
/// # Errors
///
/// Returns [`X509SvidError`] when `id` has no path, a DNS name is not
/// ASCII, or `not_after` is not later than `not_before`.
pub fn svid_params(
    id: &SpiffeId,
    dns_names: &[String],
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, X509SvidError> {
    if id.path().is_empty() {
        return Err(X509SvidError::LeafIdWithoutPath(id.clone()));
    }
    if not_after <= not_before {
        return Err(X509SvidError::InvalidValidity);
    }

    let mut params = base_params(not_before, not_after);
    params.subject_alt_names.push(uri_san(id));
    for name in dns_names {
        let dns = name
            .clone()
            .try_into()
            .map_err(|_| X509SvidError::InvalidDnsName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// Returns parameters for a trust domain CA certificate: URI SAN
/// `spiffe://<td>`, basic constraints cA true, key usage keyCertSign and
/// cRLSign, and a random serial number. The subject is `O=Tessera, CN=<td>`.
pub fn ca_params(
    td: &TrustDomain,
    not_before: SystemTime,
    not_after: SystemTime,
) -> CertificateParams {
    let mut params = base_params(not_before, not_after);
    params
        .distinguished_name
        .push(DnType::CommonName, td.name());
    params.subject_alt_names.push(uri_san(&td.spiffe_id()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn base_params(not_before: SystemTime, not_after: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.not_before = to_offset_date_time(not_before);
    params.not_after = to_offset_date_time(not_after);
    params.serial_number = Some(random_serial());
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, SUBJECT_ORGANIZATION);
    params.use_authority_key_identifier_extension = true;
    params
}

#[expect(
    clippy::expect_used,
    reason = "SpiffeId guarantees ASCII, which IA5String accepts"
)]
fn uri_san(id: &SpiffeId) -> SanType {
    SanType::URI(
        id.as_str()
            .try_into()
            .expect("a SPIFFE ID is ASCII and fits an IA5String"),
    )
}

/// Returns a positive 128-bit random serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Clear the sign bit and set the next one so the DER INTEGER is positive
    // and keeps all 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

/// Converts to whole seconds, the precision of X.509 validity times.
fn to_offset_date_time(t: SystemTime) -> OffsetDateTime {
    let t = OffsetDateTime::from(t);
    t.replace_nanosecond(0).unwrap_or(t)
}
