//! Private keys for CAs and SVIDs, held as PKCS#8 DER that is zeroized on
//! drop and never printed.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

/// Error returned when a key cannot be generated, parsed or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The algorithm name is not one of the supported names.
    #[error("unknown key algorithm {0:?}: expected ec-p256, ec-p384, rsa-2048 or rsa-4096")]
    UnknownAlgorithm(String),
}

/// A supported private key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256, signing with SHA-256.
    #[default]
    EcP256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    EcP384,
    /// RSA with a 2048-bit modulus.
    Rsa2048,
    /// RSA with a 4096-bit modulus.
    Rsa4096,
}

impl KeyAlgorithm {
    /// Returns the configuration name, such as `ec-p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EcP256 => "ec-p256",
            Self::EcP384 => "ec-p384",
            Self::Rsa2048 => "rsa-2048",
            Self::Rsa4096 => "rsa-4096",
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
        match s {
            "ec-p256" => Ok(Self::EcP256),
            "ec-p384" => Ok(Self::EcP384),
            "rsa-2048" => Ok(Self::Rsa2048),
            "rsa-4096" => Ok(Self::Rsa4096),
            other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

/// A private key in PKCS#8 form.
#[derive(Clone)]
pub struct PrivateKey {
    der: Zeroizing<Vec<u8>>,
    algorithm: KeyAlgorithm,
}

impl PrivateKey {
    /// Generates a new key.
    ///
    /// # Errors
    ///
    /// Returns [`KeyError`] when the cryptographic library fails.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, KeyError> {
        todo!("{alg}")
    }

    /// Parses a PKCS#8 DER private key.
    ///
    /// # Errors
    ///
    /// Returns [`KeyError`] when the key is malformed or of an unsupported algorithm.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        todo!("{}", der.len())
    }

    /// Parses a PEM `PRIVATE KEY` block.
    ///
    /// # Errors
    ///
    /// Returns [`KeyError`] when the PEM or the key inside is invalid.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        todo!("{}", pem.len())
    }

    /// Returns the PKCS#8 DER encoding.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.der
    }

    /// Returns the key as a PEM `PRIVATE KEY` block.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        todo!()
    }

    /// Returns the key algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Returns the DER SubjectPublicKeyInfo of the public key.
    pub fn public_key_der(&self) -> Vec<u8> {
        todo!()
    }

    /// Converts the key into an rcgen key pair for certificate signing.
    ///
    /// # Errors
    ///
    /// Returns [`KeyError`] when rcgen rejects the key.
    pub fn to_rcgen(&self) -> Result<rcgen::KeyPair, KeyError> {
        todo!()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}
