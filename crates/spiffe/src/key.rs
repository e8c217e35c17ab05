//! Private keys for CAs and SVIDs. A key is held as PKCS#8 DER that is
//! zeroized on drop and never printed, next to the parsed aws-lc-rs key pair
//! so that signing does not parse the key again.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use crate::pem_encode::{pem_len, write_pem};

/// PEM label of an unencrypted PKCS#8 private key.
const PKCS8_PEM_LABEL: &str = "PRIVATE KEY";

/// Error returned when a key cannot be generated, parsed, converted or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The algorithm name is not one of the supported names.
    #[error("unknown key algorithm {0:?}: expected ec-p256, ec-p384, rsa-2048 or rsa-4096")]
    UnknownAlgorithm(String),
    /// The cryptographic library failed to generate a key.
    #[error("failed to generate a {0} key")]
    Generate(KeyAlgorithm),
    /// The DER input is not a PKCS#8 key of a supported algorithm.
    #[error(
        "private key is not an unencrypted PKCS#8 EC P-256, EC P-384 or RSA key \
         ({len} bytes of DER)"
    )]
    InvalidPkcs8 {
        /// Length of the rejected input.
        len: usize,
    },
    /// An RSA key has a modulus size other than 2048 or 4096 bits.
    #[error("RSA private key has a {bits}-bit modulus: expected 2048 or 4096 bits")]
    UnsupportedRsaSize {
        /// Modulus size in bits.
        bits: usize,
    },
    /// The PEM text could not be parsed.
    #[error("invalid PEM private key: {0}")]
    InvalidPem(String),
    /// The PEM block is not a PKCS#8 `PRIVATE KEY`.
    #[error(
        "PEM block is labeled {0:?}: expected \"PRIVATE KEY\" (unencrypted PKCS#8); \
         convert it with `openssl pkcs8 -topk8 -nocrypt`"
    )]
    WrongPemLabel(String),
    /// rcgen rejected the key.
    #[error("failed to load the {algorithm} key into rcgen: {reason}")]
    Rcgen {
        /// Key algorithm.
        algorithm: KeyAlgorithm,
        /// rcgen's message.
        reason: String,
    },
    /// Signing failed.
    #[error("failed to sign with the {0} key")]
    Sign(KeyAlgorithm),
}

/// A supported private key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256, signing with SHA-256.
    #[default]
    EcP256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    EcP384,
    /// RSA with a 2048-bit modulus, signing with PKCS#1 v1.5 and SHA-256.
    Rsa2048,
    /// RSA with a 4096-bit modulus, signing with PKCS#1 v1.5 and SHA-256.
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [KeyAlgorithm; 4] = [Self::EcP256, Self::EcP384, Self::Rsa2048, Self::Rsa4096];

    /// Returns the configuration name, such as `ec-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa4096 => "rsa-4096",
        }
    }

    /// Returns the JWS `alg` value used when signing JWTs with this key.
    pub fn jws_algorithm(self) -> &'static str {
        match self {
            Self::EcP256 => "ES256",
            Self::EcP384 => "ES384",
            Self::Rsa2048 | Self::Rsa4096 => "RS256",
        }
    }

    fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Rsa2048 | Self::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| KeyError::UnknownAlgorithm(s.to_owned()))
    }
}

/// The parsed key pair used for signing. aws-lc-rs frees and clears the key
/// memory when it is dropped.
enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key in PKCS#8 form.
///
/// `Debug` prints only the algorithm, and the DER bytes are zeroized when
/// the last clone is dropped.
#[derive(Clone)]
pub struct PrivateKey {
    der: Arc<Zeroizing<Vec<u8>>>,
    algorithm: KeyAlgorithm,
    public_key: Vec<u8>,
    signer: Arc<Signer>,
}

impl PrivateKey {
    /// Generates a new key.
    ///
    /// # Errors
    ///
    /// Returns [`KeyError::Generate`] when the cryptographic library fails.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, KeyError> {
        let der = match alg {
            KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
                let pair = EcdsaKeyPair::generate(ecdsa_signing(alg))
                    .map_err(|_| KeyError::Generate(alg))?;
                let document = pair.to_pkcs8v1().map_err(|_| KeyError::Generate(alg))?;
                Zeroizing::new(document.as_ref().to_vec())
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa4096 => {
                let size = if alg == KeyAlgorithm::Rsa2048 {
                    KeySize::Rsa2048
                } else {
                    KeySize::Rsa4096
                };
                let pair = RsaKeyPair::generate(size).map_err(|_| KeyError::Generate(alg))?;
                let document = pair.as_der().map_err(|_| KeyError::Generate(alg))?;
                Zeroizing::new(document.as_ref().to_vec())
            }
        };
        Self::from_der_vec(der)
    }

    /// Parses an unencrypted PKCS#8 DER private key (EC P-256, EC P-384, or
    /// RSA with a 2048 or 4096-bit modulus).
    ///
    /// # Errors
    ///
    /// Returns [`KeyError`] when the key is malformed or of an unsupported
    /// algorithm or size.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        Self::from_der_vec(Zeroizing::new(der.to_vec()))
    }

    /// Parses a PEM `PRIVATE KEY` block holding an unencrypted PKCS#8 key.
    ///
    /// # Errors
    ///
    /// Returns [`KeyError`] when the PEM is malformed, has another label, or
    /// the key inside is invalid.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let block = pem::parse(pem).map_err(|e| KeyError::InvalidPem(e.to_string()))?;
        if block.tag() != PKCS8_PEM_LABEL {
            return Err(KeyError::WrongPemLabel(block.tag().to_owned()));
        }
        Self::from_der_vec(Zeroizing::new(block.into_contents()))
    }

    fn from_der_vec(der: Zeroizing<Vec<u8>>) -> Result<Self, KeyError> {
        let (algorithm, signer) = parse_signer(&der)?;
        let public_key = match &signer {
            Signer::Ec(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Signer::Rsa(pair) => pair.public_key().as_der().map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::InvalidPkcs8 { len: der.len() })?;

        Ok(Self {
            der: Arc::new(der),
            algorithm,
            public_key,
            signer: Arc::new(signer),
        })
    }

    /// Returns the PKCS#8 DER encoding.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.der
    }

    /// Returns the key as a PEM `PRIVATE KEY` block, in a buffer that is
    /// zeroized on drop.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(pem_len(
            PKCS8_PEM_LABEL,
            self.der.len(),
        )));
        write_pem(&mut out, PKCS8_PEM_LABEL, &self.der);
        out
    }

    /// Returns the key algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Returns the DER SubjectPublicKeyInfo of the public key.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.public_key.clone()
    }

    /// Converts the key into an rcgen key pair for certificate signing.
    ///
    /// NOTE: the rcgen key pair keeps its own copy of the PKCS#8 DER, which
    /// rcgen does not clear on drop. It implements `Zeroize`, so a caller
    /// that keeps it should wrap it in `zeroize::Zeroizing`.
    ///
    /// # Errors
    ///
    /// Returns [`KeyError::Rcgen`] when rcgen rejects the key.
    pub fn to_rcgen(&self) -> Result<rcgen::KeyPair, KeyError> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.der.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, self.algorithm.rcgen_algorithm())
            .map_err(|e| KeyError::Rcgen {
                algorithm: self.algorithm,
                reason: e.to_string(),
            })
    }

    /// Signs `message` as JWS [`KeyAlgorithm::jws_algorithm`] requires:
    /// fixed-width `r || s` for ECDSA, PKCS#1 v1.5 with SHA-256 for RSA.
    pub(crate) fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match self.signer.as_ref() {
            Signer::Ec(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign(self.algorithm)),
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(|_| KeyError::Sign(self.algorithm))?;
                Ok(signature)
            }
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn ecdsa_signing(alg: KeyAlgorithm) -> &'static signature::EcdsaSigningAlgorithm {
    if alg == KeyAlgorithm::EcP384 {
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

/// Detects the algorithm of a PKCS#8 key by trying each supported kind.
fn parse_signer(der: &[u8]) -> Result<(KeyAlgorithm, Signer), KeyError> {
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::EcP384] {
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(ecdsa_signing(alg), der) {
            return Ok((alg, Signer::Ec(pair)));
        }
    }
    let pair =
        RsaKeyPair::from_pkcs8(der).map_err(|_| KeyError::InvalidPkcs8 { len: der.len() })?;
    let algorithm = match pair.public_modulus_len() * 8 {
        2048 => KeyAlgorithm::Rsa2048,
        4096 => KeyAlgorithm::Rsa4096,
        bits => return Err(KeyError::UnsupportedRsaSize { bits }),
    };
    Ok((algorithm, Signer::Rsa(pair)))
}

#[cfg(test)]
mod tests;
