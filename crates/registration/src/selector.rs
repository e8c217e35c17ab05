//! Selectors: `type:value` properties of a node or workload, such as
//! `unix:uid:1000`, that registration entries match against.

use std::fmt;
use std::str::FromStr;

use crate::EntryError;

/// Maximum length of a selector type in bytes.
pub const MAX_SELECTOR_TYPE_BYTES: usize = 64;

/// Maximum length of a selector value in bytes.
pub const MAX_SELECTOR_VALUE_BYTES: usize = 1024;

/// A selector such as `unix:uid:1000`: a type (`unix`) and a value
/// (`uid:1000`) that may itself contain colons.
///
/// The type is 1 to [`MAX_SELECTOR_TYPE_BYTES`] characters of `[a-z0-9_]`,
/// and the value is 1 to [`MAX_SELECTOR_VALUE_BYTES`] bytes without control
/// characters. Selectors order by type, then value.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    kind: String,
    value: String,
}

impl Selector {
    /// Parses `type:value`, splitting at the first colon.
    ///
    /// # Errors
    ///
    /// Returns [`EntryError`] when there is no colon or the type or value is
    /// invalid.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| EntryError::SelectorFormat(s.to_owned()))?;
        Self::new(kind, value)
    }

    /// Builds a selector from its type and value.
    ///
    /// # Errors
    ///
    /// Returns [`EntryError`] when the type or value is invalid.
    pub fn new(kind: &str, value: &str) -> Result<Self, EntryError> {
        check_kind(kind)?;
        check_value(kind, value)?;
        Ok(Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Returns the selector type, such as `unix`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Returns the selector value, such as `uid:1000`.
    pub fn value(&self) -> &str {
        &self.value
    }
}

fn check_kind(kind: &str) -> Result<(), EntryError> {
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if kind.is_empty() || kind.len() > MAX_SELECTOR_TYPE_BYTES || !kind.chars().all(valid_char) {
        return Err(EntryError::SelectorType {
            kind: kind.to_owned(),
        });
    }
    Ok(())
}

fn check_value(kind: &str, value: &str) -> Result<(), EntryError> {
    if value.is_empty() {
        return Err(EntryError::EmptySelectorValue {
            kind: kind.to_owned(),
        });
    }
    if value.len() > MAX_SELECTOR_VALUE_BYTES {
        return Err(EntryError::SelectorValueTooLong {
            kind: kind.to_owned(),
            len: value.len(),
            max: MAX_SELECTOR_VALUE_BYTES,
        });
    }
    if let Some((position, _)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(EntryError::SelectorControlCharacter {
            selector: format!("{kind}:{value}"),
            position,
        });
    }
    Ok(())
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({self})")
    }
}

impl FromStr for Selector {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<tessera_proto::types::Selector> for Selector {
    type Error = EntryError;

    fn try_from(proto: tessera_proto::types::Selector) -> Result<Self, Self::Error> {
        Self::new(&proto.r#type, &proto.value)
    }
}

impl From<&Selector> for tessera_proto::types::Selector {
    fn from(selector: &Selector) -> Self {
        Self {
            r#type: selector.kind.clone(),
            value: selector.value.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_valid_selectors() {
        let cases = [
            ("unix:uid:1000", "unix", "uid:1000"),
            ("unix:path:/usr/bin/app", "unix", "path:/usr/bin/app"),
            ("k8s:ns:default", "k8s", "ns:default"),
            ("join_token:abc", "join_token", "abc"),
            ("a:b", "a", "b"),
            ("x:::", "x", "::"),
            ("docker:label:app=web shop", "docker", "label:app=web shop"),
            ("unix:user:jürgen", "unix", "user:jürgen"),
        ];
        for (input, kind, value) in cases {
            let selector = Selector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(selector.kind(), kind, "{input}");
            assert_eq!(selector.value(), value, "{input}");
            assert_eq!(selector.to_string(), input);
            assert_eq!(input.parse::<Selector>().as_ref(), Ok(&selector));
        }
    }

    #[test]
    fn parse_invalid_selectors() {
        let long_value = format!("x:{}", "v".repeat(MAX_SELECTOR_VALUE_BYTES + 1));
        let long_type = format!("{}:v", "t".repeat(MAX_SELECTOR_TYPE_BYTES + 1));
        let cases: Vec<(&str, EntryError)> = vec![
            ("unixuid", EntryError::SelectorFormat("unixuid".into())),
            ("", EntryError::SelectorFormat(String::new())),
            (
                ":uid:1",
                EntryError::SelectorType {
                    kind: String::new(),
                },
            ),
            (
                "Unix:uid:1",
                EntryError::SelectorType {
                    kind: "Unix".into(),
                },
            ),
            (
                "un-ix:uid:1",
                EntryError::SelectorType {
                    kind: "un-ix".into(),
                },
            ),
            (
                "un ix:uid:1",
                EntryError::SelectorType {
                    kind: "un ix".into(),
                },
            ),
            (
                &long_type,
                EntryError::SelectorType {
                    kind: "t".repeat(MAX_SELECTOR_TYPE_BYTES + 1),
                },
            ),
            (
                "unix:",
                EntryError::EmptySelectorValue {
                    kind: "unix".into(),
                },
            ),
            (
                &long_value,
                EntryError::SelectorValueTooLong {
                    kind: "x".into(),
                    len: MAX_SELECTOR_VALUE_BYTES + 1,
                    max: MAX_SELECTOR_VALUE_BYTES,
                },
            ),
            (
                "unix:uid:1\n",
                EntryError::SelectorControlCharacter {
                    selector: "unix:uid:1\n".into(),
                    position: 5,
                },
            ),
            (
                "unix:a\u{0}b",
                EntryError::SelectorControlCharacter {
                    selector: "unix:a\u{0}b".into(),
                    position: 1,
                },
            ),
            (
                "unix:a\u{7f}",
                EntryError::SelectorControlCharacter {
                    selector: "unix:a\u{7f}".into(),
                    position: 1,
                },
            ),
            (
                "unix:a\u{85}",
                EntryError::SelectorControlCharacter {
                    selector: "unix:a\u{85}".into(),
                    position: 1,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(Selector::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let at_limit = format!(
            "{}:{}",
            "t".repeat(MAX_SELECTOR_TYPE_BYTES),
            "v".repeat(MAX_SELECTOR_VALUE_BYTES)
        );
        assert!(Selector::parse(&at_limit).is_ok());
    }

    #[test]
    fn error_message_shows_the_fix() {
        let err = Selector::parse("unixuid").expect_err("no colon");
        assert_eq!(
            err.to_string(),
            "invalid selector \"unixuid\": expected TYPE:VALUE such as unix:uid:1000"
        );
    }

    #[test]
    fn ordering_is_by_type_then_value() {
        let mut selectors: Vec<Selector> = ["unix:uid:2", "k8s:ns:a", "unix:gid:9", "unix:uid:10"]
            .into_iter()
            .map(|s| Selector::parse(s).expect("valid"))
            .collect();
        selectors.sort();
        let sorted: Vec<String> = selectors.iter().map(ToString::to_string).collect();
        assert_eq!(
            sorted,
            ["k8s:ns:a", "unix:gid:9", "unix:uid:10", "unix:uid:2"]
        );
    }

    #[test]
    fn proto_and_serde_round_trip() {
        let selector = Selector::parse("unix:uid:1000").expect("valid");
        let proto = tessera_proto::types::Selector::from(&selector);
        assert_eq!(proto.r#type, "unix");
        assert_eq!(proto.value, "uid:1000");
        assert_eq!(Selector::try_from(proto), Ok(selector.clone()));

        let json = serde_json::to_string(&selector).expect("serialize");
        assert_eq!(json, "\"unix:uid:1000\"");
        assert_eq!(
            serde_json::from_str::<Selector>(&json).expect("deserialize"),
            selector
        );
        assert!(serde_json::from_str::<Selector>("\"bad\"").is_err());

        let bad = tessera_proto::types::Selector {
            r#type: "unix".into(),
            value: String::new(),
        };
        assert_eq!(
            Selector::try_from(bad),
            Err(EntryError::EmptySelectorValue {
                kind: "unix".into()
            })
        );
    }
}
