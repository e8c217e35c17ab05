//! SPIFFE IDs and trust domain names, parsed exactly as the SPIFFE ID
//! specification describes them. Parsing never normalizes: an input that is
//! not already in canonical form (uppercase, percent-encoding, `.` segments,
//! a trailing slash) is rejected with the byte position of the fault.

use std::fmt;
use std::str::FromStr;

/// The URI scheme and separator that start every SPIFFE ID.
const SCHEME_PREFIX: &str = "spiffe://";

/// Maximum length of a whole SPIFFE ID in bytes. The specification requires
/// support up to this length and advises against generating longer IDs.
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;

/// Maximum length of a trust domain name in bytes (the RFC 3986 host limit).
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// Error returned when a SPIFFE ID or trust domain name is invalid.
///
/// Positions are byte offsets into the input that was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The input is empty.
    #[error("SPIFFE ID is empty: expected spiffe://<trust domain>/<path>")]
    Empty,
    /// The whole ID is longer than [`MAX_SPIFFE_ID_BYTES`].
    #[error("SPIFFE ID is {len} bytes long, over the maximum of {max} bytes")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The ID does not start with `spiffe://` in lowercase.
    #[error("invalid SPIFFE ID {id:?}: expected it to start with \"spiffe://\" in lowercase")]
    WrongScheme {
        /// The input.
        id: String,
    },
    /// The trust domain name is empty.
    #[error("invalid SPIFFE ID {id:?}: the trust domain name is empty")]
    EmptyTrustDomain {
        /// The input.
        id: String,
    },
    /// The trust domain name is longer than [`MAX_TRUST_DOMAIN_BYTES`].
    #[error("trust domain name is {len} bytes long, over the maximum of {max} bytes")]
    TrustDomainTooLong {
        /// Length of the trust domain name in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The trust domain name contains a character outside `[a-z0-9.-_]`.
    #[error(
        "invalid character {ch:?} at byte {position} of {input:?}: trust domain names may \
         contain only a-z, 0-9, '.', '-' and '_'{}",
        trust_domain_hint(*ch)
    )]
    TrustDomainCharacter {
        /// The input.
        input: String,
        /// The offending character.
        ch: char,
        /// Byte offset of the character in `input`.
        position: usize,
    },
    /// A path segment contains a character outside `[A-Za-z0-9.-_]`.
    #[error(
        "invalid character {ch:?} at byte {position} of {id:?}: path segments may contain \
         only A-Z, a-z, 0-9, '.', '-' and '_'{}",
        path_hint(*ch)
    )]
    PathCharacter {
        /// The SPIFFE ID.
        id: String,
        /// The offending character.
        ch: char,
        /// Byte offset of the character in `id`.
        position: usize,
    },
    /// The path contains an empty segment (`//`).
    #[error(
        "invalid SPIFFE ID {id:?}: empty path segment at byte {position}, remove the extra '/'"
    )]
    EmptySegment {
        /// The SPIFFE ID.
        id: String,
        /// Byte offset of the empty segment in `id`.
        position: usize,
    },
    /// The path contains a `.` or `..` segment.
    #[error(
        "invalid SPIFFE ID {id:?}: path segment {segment:?} at byte {position} is a relative \
         path modifier, which SPIFFE IDs do not allow"
    )]
    DotSegment {
        /// The SPIFFE ID.
        id: String,
        /// `.` or `..`.
        segment: String,
        /// Byte offset of the segment in `id`.
        position: usize,
    },
    /// The path ends with `/`.
    #[error("invalid SPIFFE ID {id:?}: the path ends with '/', remove the trailing slash")]
    TrailingSlash {
        /// The SPIFFE ID.
        id: String,
    },
    /// A path given on its own does not start with `/`.
    #[error("invalid SPIFFE ID path {path:?}: expected an empty path or one starting with '/'")]
    PathNotAbsolute {
        /// The path.
        path: String,
    },
    /// A trust domain was given as a SPIFFE ID that has a path.
    #[error(
        "invalid trust domain {id:?}: a trust domain ID has no path, expected spiffe://{trust_domain}"
    )]
    TrustDomainWithPath {
        /// The input.
        id: String,
        /// The trust domain name in the input.
        trust_domain: String,
    },
}

fn trust_domain_hint(ch: char) -> &'static str {
    match ch {
        'A'..='Z' => " (trust domain names must be lowercase)",
        ':' => " (a port is not allowed)",
        '@' => " (userinfo is not allowed)",
        '%' => " (percent-encoding is not allowed)",
        '?' => " (a query is not allowed)",
        '#' => " (a fragment is not allowed)",
        '[' | ']' => " (IPv6 addresses are not allowed)",
        _ => "",
    }
}

fn path_hint(ch: char) -> &'static str {
    match ch {
        '%' => " (percent-encoding is not allowed)",
        '?' => " (a query is not allowed)",
        '#' => " (a fragment is not allowed)",
        _ => "",
    }
}

/// A trust domain name such as `example.org`.
///
/// A value of this type always contains a valid name: non-empty, at most
/// [`MAX_TRUST_DOMAIN_BYTES`] bytes, and only the characters `[a-z0-9.-_]`.
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
    /// Returns [`IdError`] when the name is not a valid trust domain name,
    /// or when a SPIFFE ID is given that has a path.
    pub fn new(name_or_uri: &str) -> Result<Self, IdError> {
        if name_or_uri.contains("://") {
            let id = SpiffeId::parse(name_or_uri)?;
            if !id.path().is_empty() {
                return Err(IdError::TrustDomainWithPath {
                    id: name_or_uri.to_owned(),
                    trust_domain: id.trust_domain.name,
                });
            }
            return Ok(id.trust_domain);
        }
        if name_or_uri.is_empty() {
            return Err(IdError::EmptyTrustDomain {
                id: name_or_uri.to_owned(),
            });
        }
        check_trust_domain_name(name_or_uri, name_or_uri, 0)?;
        Ok(Self {
            name: name_or_uri.to_owned(),
        })
    }

    /// Returns the trust domain name, such as `example.org`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the SPIFFE ID of the trust domain, such as `spiffe://example.org`.
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.name)
    }

    /// Returns the trust domain's own SPIFFE ID, the one without a path.
    pub fn spiffe_id(&self) -> SpiffeId {
        SpiffeId {
            uri: self.id_string(),
            trust_domain: self.clone(),
        }
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
///
/// A value of this type always contains a valid, canonical ID: the lowercase
/// `spiffe` scheme, a valid trust domain name, and a path that is empty or
/// made of non-empty segments of `[A-Za-z0-9.-_]` other than `.` and `..`,
/// with no trailing slash, all within [`MAX_SPIFFE_ID_BYTES`].
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
    /// Returns [`IdError`] naming the first fault in `s` and its position.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_BYTES {
            return Err(IdError::TooLong {
                len: s.len(),
                max: MAX_SPIFFE_ID_BYTES,
            });
        }
        let Some(rest) = s.strip_prefix(SCHEME_PREFIX) else {
            return Err(IdError::WrongScheme { id: s.to_owned() });
        };

        let (name, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if name.is_empty() {
            return Err(IdError::EmptyTrustDomain { id: s.to_owned() });
        }
        check_trust_domain_name(name, s, SCHEME_PREFIX.len())?;
        check_path(path, s, SCHEME_PREFIX.len() + name.len())?;

        Ok(Self {
            uri: s.to_owned(),
            trust_domain: TrustDomain {
                name: name.to_owned(),
            },
        })
    }

    /// Builds a SPIFFE ID from a trust domain and a path (`""` or `/a/b`).
    ///
    /// # Errors
    ///
    /// Returns [`IdError`] when `path` is not a valid SPIFFE ID path or the
    /// resulting ID is too long.
    pub fn from_path(td: &TrustDomain, path: &str) -> Result<Self, IdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(IdError::PathNotAbsolute {
                path: path.to_owned(),
            });
        }
        let uri = format!("{}{path}", td.id_string());
        if uri.len() > MAX_SPIFFE_ID_BYTES {
            return Err(IdError::TooLong {
                len: uri.len(),
                max: MAX_SPIFFE_ID_BYTES,
            });
        }
        check_path(path, &uri, uri.len() - path.len())?;
        Ok(Self {
            uri,
            trust_domain: td.clone(),
        })
    }

    /// Returns the trust domain of the ID.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Returns the path: `""` for a trust domain's own ID, `/a/b` otherwise.
    pub fn path(&self) -> &str {
        &self.uri[SCHEME_PREFIX.len() + self.trust_domain.name.len()..]
    }

    /// Returns the full URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// Returns whether the ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain == *td
    }
}

/// Checks the characters and length of a trust domain name that starts at
/// byte `offset` of `input`.
fn check_trust_domain_name(name: &str, input: &str, offset: usize) -> Result<(), IdError> {
    if let Some((position, ch)) = name.char_indices().find(|(_, c)| !is_trust_domain_char(*c)) {
        return Err(IdError::TrustDomainCharacter {
            input: input.to_owned(),
            ch,
            position: offset + position,
        });
    }
    if name.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(IdError::TrustDomainTooLong {
            len: name.len(),
            max: MAX_TRUST_DOMAIN_BYTES,
        });
    }
    Ok(())
}

/// Checks a path (empty or starting with `/`) that starts at byte `offset`
/// of the SPIFFE ID `id`.
fn check_path(path: &str, id: &str, offset: usize) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    // Each segment starts one byte after its '/'.
    let mut start = offset + 1;
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;

    for (index, segment) in segments.into_iter().enumerate() {
        check_segment(segment, index == last, id, start)?;
        start += segment.len() + 1;
    }
    Ok(())
}

fn check_segment(segment: &str, is_last: bool, id: &str, start: usize) -> Result<(), IdError> {
    if segment.is_empty() && is_last {
        return Err(IdError::TrailingSlash { id: id.to_owned() });
    }
    if segment.is_empty() {
        return Err(IdError::EmptySegment {
            id: id.to_owned(),
            position: start,
        });
    }
    if segment == "." || segment == ".." {
        return Err(IdError::DotSegment {
            id: id.to_owned(),
            segment: segment.to_owned(),
            position: start,
        });
    }
    if let Some((position, ch)) = segment.char_indices().find(|(_, c)| !is_path_char(*c)) {
        return Err(IdError::PathCharacter {
            id: id.to_owned(),
            ch,
            position: start + position,
        });
    }
    Ok(())
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
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

#[cfg(test)]
mod tests;
