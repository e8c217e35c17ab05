//! X.509 work of the CA: the self-signed CA certificate, checks of the
//! public keys that agents send, and signing of X.509-SVID leaves.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self as lc, ParsedPublicKey};
use rcgen::{CertificateParams, DnType, Issuer, PublicKeyData, SignatureAlgorithm, SigningKey};
use rustls_pki_types::CertificateDer;
use tessera_spiffe::id::{SpiffeId, TrustDomain};
use tessera_spiffe::key::PrivateKey;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::CaError;
use crate::schedule::Lifetime;

/// Shortest RSA modulus accepted in an SVID request.
const MIN_RSA_BITS: usize = 2048;

/// Longest RSA modulus accepted, the largest that common verifiers
/// (aws-lc-rs, rustls-webpki) check signatures with.
const MAX_RSA_BITS: usize = 8192;

/// OID of the X.520 serialNumber attribute.
const DN_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];

/// The CA's rcgen key pair, zeroized on drop.
pub(crate) struct CaSigningKey(rcgen::KeyPair);

impl Drop for CaSigningKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl PublicKeyData for CaSigningKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        PublicKeyData::algorithm(&self.0)
    }
}

impl SigningKey for CaSigningKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

/// An issuer that signs with a CA key, parsed once and reused for every leaf.
pub(crate) type CaIssuer = Issuer<'static, CaSigningKey>;

/// Converts a CA private key into the rcgen signer.
pub(crate) fn signing_key(key: &PrivateKey) -> Result<CaSigningKey, CaError> {
    let pair = key.to_rcgen().map_err(|source| CaError::SigningKey {
        algorithm: key.algorithm(),
        source,
    })?;
    Ok(CaSigningKey(pair))
}

/// Creates the self-signed CA certificate of an authority and its issuer.
///
/// The subject carries the authority id as serialNumber, so successive CAs of
/// a trust domain have distinct names that chain builders can tell apart.
pub(crate) fn create_ca(
    trust_domain: &TrustDomain,
    authority_id: &str,
    key: &PrivateKey,
    lifetime: Lifetime,
) -> Result<(CertificateDer<'static>, CaIssuer), CaError> {
    let certificate_error = |source| CaError::Certificate {
        subject: trust_domain.id_string(),
        source,
    };

    let mut params =
        tessera_spiffe::x509::ca_params(trust_domain, lifetime.not_before, lifetime.not_after);
    params.distinguished_name.push(
        DnType::CustomDnType(DN_SERIAL_NUMBER.to_vec()),
        rcgen::DnValue::PrintableString(authority_id.try_into().map_err(certificate_error)?),
    );

    let signer = signing_key(key)?;
    let certificate = params.self_signed(&signer).map_err(certificate_error)?;
    let der = certificate.der().clone();
    let issuer = Issuer::from_ca_cert_der(&der, signer).map_err(certificate_error)?;
    Ok((der, issuer))
}

/// Rebuilds the issuer of a stored CA certificate, checking that `key` is its key.
pub(crate) fn load_issuer(der: &CertificateDer<'_>, key: &PrivateKey) -> Result<CaIssuer, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("invalid CA certificate: {e}"))?;
    let signer = signing_key(key).map_err(|e| e.to_string())?;
    if cert.public_key().raw != signer.subject_public_key_info() {
        return Err("the CA key does not match the CA certificate".to_string());
    }

    Issuer::from_ca_cert_der(der, signer).map_err(|e| format!("invalid CA certificate: {e}"))
}

/// Reads the lifetime of a stored CA certificate, checking that it is a CA of `trust_domain`.
pub(crate) fn inspect_ca(der: &[u8], trust_domain: &TrustDomain) -> Result<Lifetime, String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("invalid CA certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the CA certificate".to_string());
    }
    if !cert.is_ca() {
        return Err("the certificate is not a CA".to_string());
    }

    let id = tessera_spiffe::x509::spiffe_id_from_certificate(der)
        .map_err(|e| format!("invalid CA certificate: {e}"))?;
    if id.trust_domain() != trust_domain || !id.path().is_empty() {
        return Err(format!(
            "the CA certificate names {id}, not {}",
            trust_domain.id_string()
        ));
    }

    let validity = cert.validity();
    Ok(Lifetime {
        not_before: unix_time(validity.not_before.timestamp()),
        not_after: unix_time(validity.not_after.timestamp()),
    })
}

fn unix_time(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A public key from an SVID request, checked and ready to embed in a leaf.
#[derive(Debug)]
pub(crate) struct LeafPublicKey {
    algorithm: &'static SignatureAlgorithm,
    key: Vec<u8>,
}

impl PublicKeyData for LeafPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl LeafPublicKey {
    /// Parses a DER SubjectPublicKeyInfo and checks that it is an EC P-256 or
    /// P-384 point on its curve or an RSA key of 2048 to 8192 bits.
    pub(crate) fn parse(spki_der: &[u8]) -> Result<Self, CaError> {
        let invalid = |reason: String| CaError::InvalidPublicKey { reason };

        let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| invalid(format!("not a SubjectPublicKeyInfo ({e})")))?;
        if !rest.is_empty() {
            return Err(invalid(format!("{} trailing bytes", rest.len())));
        }

        let (algorithm, verifier): (_, &'static lc::EcdsaVerificationAlgorithm) =
            match leaf_algorithm(&spki)? {
                LeafAlgorithm::EcP256 => {
                    (&rcgen::PKCS_ECDSA_P256_SHA256, &lc::ECDSA_P256_SHA256_ASN1)
                }
                LeafAlgorithm::EcP384 => {
                    (&rcgen::PKCS_ECDSA_P384_SHA384, &lc::ECDSA_P384_SHA384_ASN1)
                }
                LeafAlgorithm::Rsa => {
                    check_rsa(&spki, spki_der)?;
                    return Ok(Self {
                        algorithm: &rcgen::PKCS_RSA_SHA256,
                        key: spki.subject_public_key.data.to_vec(),
                    });
                }
            };

        ParsedPublicKey::new(verifier, spki_der)
            .map_err(|e| invalid(format!("invalid EC point ({e})")))?;
        Ok(Self {
            algorithm,
            key: spki.subject_public_key.data.to_vec(),
        })
    }
}

enum LeafAlgorithm {
    EcP256,
    EcP384,
    Rsa,
}

fn leaf_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> Result<LeafAlgorithm, CaError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        return Ok(LeafAlgorithm::Rsa);
    }
    if *oid != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(CaError::UnsupportedPublicKey {
            algorithm: format!("with algorithm OID {oid}"),
        });
    }

    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(c) if c == OID_EC_P256 => Ok(LeafAlgorithm::EcP256),
        Some(c) if c == OID_NIST_EC_P384 => Ok(LeafAlgorithm::EcP384),
        Some(c) => Err(CaError::UnsupportedPublicKey {
            algorithm: format!("on EC curve {c}"),
        }),
        None => Err(CaError::InvalidPublicKey {
            reason: "the EC key names no curve".to_string(),
        }),
    }
}

/// Checks the modulus length of an RSA SubjectPublicKeyInfo and that aws-lc-rs accepts it.
fn check_rsa(spki: &SubjectPublicKeyInfo<'_>, spki_der: &[u8]) -> Result<(), CaError> {
    let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
        return Err(CaError::InvalidPublicKey {
            reason: "malformed RSA public key".to_string(),
        });
    };

    let bits = modulus_bits(rsa.modulus);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(CaError::UnsupportedRsaKeySize { bits });
    }

    ParsedPublicKey::new(&lc::RSA_PKCS1_2048_8192_SHA256, spki_der).map_err(|e| {
        CaError::InvalidPublicKey {
            reason: format!("malformed RSA public key ({e})"),
        }
    })?;
    Ok(())
}

/// Returns the bit length of a big-endian unsigned integer.
fn modulus_bits(modulus: &[u8]) -> usize {
    let digits: &[u8] = match modulus.iter().position(|&b| b != 0) {
        Some(first) => &modulus[first..],
        None => &[],
    };
    match digits.first() {
        Some(&top) => digits.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Signs an X.509-SVID leaf for `id` and `public_key`, valid from `not_before` to `not_after`.
pub(crate) fn sign_leaf(
    issuer: &CaIssuer,
    id: &SpiffeId,
    public_key: &LeafPublicKey,
    dns_names: &[String],
    lifetime: Lifetime,
) -> Result<CertificateDer<'static>, CaError> {
    let mut params: CertificateParams =
        tessera_spiffe::x509::svid_params(id, dns_names, lifetime.not_before, lifetime.not_after)
            .map_err(|source| CaError::SvidProfile {
            spiffe_id: id.clone(),
            source,
        })?;
    // The bundle contains several CAs during rotation, and the authority key
    // identifier lets chain builders pick the one that signed.
    params.use_authority_key_identifier_extension = true;

    let certificate =
        params
            .signed_by(public_key, issuer)
            .map_err(|source| CaError::Certificate {
                subject: id.to_string(),
                source,
            })?;
    Ok(certificate.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_table() {
        let cases: &[(&[u8], usize)] = &[
            (&[], 0),
            (&[0, 0], 0),
            (&[1], 1),
            (&[0x80], 8),
            (&[0x00, 0x80, 0x00], 16),
            (&[0x00, 0x7f, 0xff], 15),
        ];

        for (modulus, bits) in cases {
            assert_eq!(modulus_bits(modulus), *bits, "modulus {modulus:02x?}");
        }
    }
}
