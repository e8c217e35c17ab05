//! Public keys in DER SubjectPublicKeyInfo form: reading their type and
//! components (for JWKs and algorithm checks) and encoding them from JWK
//! components. Supported types are EC P-256, P-384, P-521 and RSA.

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// DER content of the id-ecPublicKey OID, 1.2.840.10045.2.1.
const OID_EC_PUBLIC_KEY_DER: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER content of the rsaEncryption OID, 1.2.840.113549.1.1.1.
const OID_RSA_ENCRYPTION_DER: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Smallest RSA modulus accepted, in bits, as for JWS RS256 and X.509 use.
const MIN_RSA_BITS: usize = 2048;

/// An elliptic curve usable for JWT-SVIDs and CA keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// Every supported curve.
    const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

    /// Returns the JWK `crv` value.
    pub(crate) fn jwk_name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// Returns the curve for a JWK `crv` value.
    pub(crate) fn from_jwk_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.jwk_name() == name)
    }

    /// Returns the length of one coordinate in bytes.
    pub(crate) fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    /// Returns the DER content of the curve's OID.
    fn oid_der(self) -> &'static [u8] {
        match self {
            Self::P256 => &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Self::P384 => &[0x2b, 0x81, 0x04, 0x00, 0x22],
            Self::P521 => &[0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }

    /// Returns the ECDSA verification algorithm with this curve's usual hash.
    pub(crate) fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Self::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Self::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        }
    }
}

/// The type and components of a public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKeyParams {
    /// An EC key: the affine coordinates, each `curve.coordinate_len()` bytes.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// An RSA key: modulus and exponent as unsigned big-endian integers
    /// without leading zero bytes.
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKeyParams {
    /// Reads a DER SubjectPublicKeyInfo and checks that aws-lc-rs accepts
    /// the key. The error is a reason for a message.
    pub(crate) fn from_spki(der: &[u8]) -> Result<Self, String> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| format!("invalid SubjectPublicKeyInfo: {e}"))?;
        if !rest.is_empty() {
            return Err(format!(
                "{} trailing bytes after SubjectPublicKeyInfo",
                rest.len()
            ));
        }
        let params = Self::from_parsed(&spki)?;
        ParsedPublicKey::new(params.verification(), der)
            .map_err(|e| format!("public key rejected by aws-lc-rs: {e}"))?;
        Ok(params)
    }

    fn from_parsed(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, String> {
        let algorithm = &spki.algorithm.algorithm;
        let key = spki
            .parsed()
            .map_err(|e| format!("invalid public key: {e}"))?;
        match key {
            PublicKey::RSA(rsa) if *algorithm == OID_PKCS1_RSAENCRYPTION => {
                let n = strip_leading_zeros(rsa.modulus).to_vec();
                let bits = bit_len(&n);
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "RSA key has a {bits}-bit modulus: expected at least {MIN_RSA_BITS} bits"
                    ));
                }
                let e = strip_leading_zeros(rsa.exponent).to_vec();
                Ok(Self::Rsa { n, e })
            }
            PublicKey::EC(point) if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY => {
                let curve = curve_of(spki)?;
                split_point(curve, point.data())
            }
            _ => Err(format!(
                "unsupported public key algorithm {algorithm}: expected EC (P-256, P-384, P-521) or RSA"
            )),
        }
    }

    /// Returns the JWK `kty` value.
    pub(crate) fn kty(&self) -> &'static str {
        match self {
            Self::Ec { .. } => "EC",
            Self::Rsa { .. } => "RSA",
        }
    }

    /// Returns an aws-lc-rs algorithm that accepts keys of this type.
    fn verification(&self) -> &'static dyn VerificationAlgorithm {
        match self {
            Self::Ec { curve, .. } => curve.verification(),
            Self::Rsa { .. } => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    /// Encodes the key as a DER SubjectPublicKeyInfo.
    pub(crate) fn to_spki(&self) -> Vec<u8> {
        let (algorithm, key) = match self {
            Self::Ec { curve, x, y } => {
                let algorithm = [
                    der_tlv(TAG_OID, OID_EC_PUBLIC_KEY_DER),
                    der_tlv(TAG_OID, curve.oid_der()),
                ]
                .concat();
                (algorithm, [&[0x04], x.as_slice(), y.as_slice()].concat())
            }
            Self::Rsa { n, e } => {
                let algorithm = [
                    der_tlv(TAG_OID, OID_RSA_ENCRYPTION_DER),
                    der_tlv(TAG_NULL, &[]),
                ]
                .concat();
                let key = der_tlv(TAG_SEQUENCE, &[der_uint(n), der_uint(e)].concat());
                (algorithm, key)
            }
        };
        let bit_string = [&[0x00], key.as_slice()].concat();
        der_tlv(
            TAG_SEQUENCE,
            &[
                der_tlv(TAG_SEQUENCE, &algorithm),
                der_tlv(TAG_BIT_STRING, &bit_string),
            ]
            .concat(),
        )
    }
}

fn curve_of(spki: &SubjectPublicKeyInfo<'_>) -> Result<Curve, String> {
    let oid = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .ok_or("EC public key has no named curve")?;
    if oid == OID_EC_P256 {
        Ok(Curve::P256)
    } else if oid == OID_NIST_EC_P384 {
        Ok(Curve::P384)
    } else if oid == OID_NIST_EC_P521 {
        Ok(Curve::P521)
    } else {
        Err(format!(
            "unsupported EC curve {oid}: expected P-256, P-384 or P-521"
        ))
    }
}

/// Splits an uncompressed SEC1 point `04 || x || y`.
fn split_point(curve: Curve, point: &[u8]) -> Result<PublicKeyParams, String> {
    let len = curve.coordinate_len();
    match point.split_first() {
        Some((0x04, coordinates)) if coordinates.len() == 2 * len => {
            let (x, y) = coordinates.split_at(len);
            Ok(PublicKeyParams::Ec {
                curve,
                x: x.to_vec(),
                y: y.to_vec(),
            })
        }
        _ => Err(format!(
            "EC point is not an uncompressed {} point of {} bytes",
            curve.jwk_name(),
            1 + 2 * len
        )),
    }
}

pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn bit_len(unsigned: &[u8]) -> usize {
    match unsigned.first() {
        Some(first) => unsigned.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;

/// Encodes one DER tag-length-value.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes = len.to_be_bytes();
        let significant = strip_leading_zeros(&len_bytes);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// Encodes an unsigned big-endian integer as a DER INTEGER.
fn der_uint(unsigned: &[u8]) -> Vec<u8> {
    let digits = strip_leading_zeros(unsigned);
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    der_tlv(TAG_INTEGER, &content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{KeyAlgorithm, PrivateKey};

    #[test]
    fn spki_round_trip_for_every_key_algorithm() {
        for alg in KeyAlgorithm::ALL {
            let spki = PrivateKey::generate(alg)
                .expect("generate")
                .public_key_der();
            let params = PublicKeyParams::from_spki(&spki).expect("parse");
            assert_eq!(params.to_spki(), spki, "{alg}");
        }
    }

    #[test]
    fn spki_round_trip_for_p521() {
        let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        )
        .expect("generate");
        let spki =
            aws_lc_rs::encoding::AsDer::as_der(aws_lc_rs::signature::KeyPair::public_key(&pair))
                .expect("encode");
        let params = PublicKeyParams::from_spki(spki.as_ref()).expect("parse");
        assert!(matches!(
            params,
            PublicKeyParams::Ec {
                curve: Curve::P521,
                ..
            }
        ));
        assert_eq!(params.to_spki(), spki.as_ref());
    }

    #[test]
    fn from_spki_rejects_bad_input() {
        assert!(PublicKeyParams::from_spki(b"").is_err());
        let spki = PrivateKey::generate(KeyAlgorithm::EcP256)
            .expect("generate")
            .public_key_der();
        let mut trailing = spki.clone();
        trailing.push(0);
        assert!(
            PublicKeyParams::from_spki(&trailing)
                .expect_err("trailing")
                .contains("trailing")
        );

        let PublicKeyParams::Ec { curve, x, mut y } =
            PublicKeyParams::from_spki(&spki).expect("parse")
        else {
            panic!("expected an EC key");
        };
        y[31] ^= 1;
        let off_curve = PublicKeyParams::Ec { curve, x, y }.to_spki();
        assert!(PublicKeyParams::from_spki(&off_curve).is_err());
    }

    #[test]
    fn der_uint_adds_sign_byte() {
        assert_eq!(der_uint(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_uint(&[0x00, 0x01]), vec![0x02, 0x01, 0x01]);
        assert_eq!(der_uint(&[]), vec![0x02, 0x01, 0x00]);
        assert_eq!(der_tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
    }
}
