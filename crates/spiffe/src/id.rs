//! SPIFFE IDs and trust domain names, parsed exactly as the SPIFFE ID
//! specification describes them. Parsing never normalizes: an input that is
//! not already in canonical form is rejected with the position of the fault.

use std::fmt;
use std::str::FromStr;

/// Error returned when a SPIFFE ID or trust domain name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The input is empty.
    #[error("SPIFFE ID is empty")]
    Empty,
}

/// A trust domain name such as `example.org`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain {
    name: String,
}

impl TrustDomain {
    /// Parses a trust domain from a bare name (`example.org`) or from the
    /// trust domain's SPIFFE ID (`spiffe://example.org`).
    ///
    /// # Errors
    ///
    /// Returns [`IdError`] when the name is not a valid trust domain name.
    pub fn new(name_or_uri: &str) -> Result<Self, IdError> {
        todo!("{name_or_uri}")
    }

    /// Returns the trust domain name, such as `example.org`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the SPIFFE ID of the trust domain, such as `spiffe://example.org`.
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.name)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({:?})", self.name)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A SPIFFE ID such as `spiffe://example.org/service/web`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    trust_domain: TrustDomain,
}

impl SpiffeId {
    /// Parses a SPIFFE ID URI.
    ///
    /// # Errors
    ///
    /// Returns [`IdError`] naming the first fault in `s`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        todo!("{s}")
    }

    /// Builds a SPIFFE ID from a trust domain and a path (`""` or `/a/b`).
    ///
    /// # Errors
    ///
    /// Returns [`IdError`] when `path` is not a valid SPIFFE ID path.
    pub fn from_path(td: &TrustDomain, path: &str) -> Result<Self, IdError> {
        todo!("{td}{path}")
    }

    /// Returns the trust domain of the ID.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Returns the path, `""` for a trust domain's own ID or `/a/b` otherwise.
    pub fn path(&self) -> &str {
        &self.uri["spiffe://".len() + self.trust_domain.name.len()..]
    }

    /// Returns the full URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({:?})", self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.uri)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}
