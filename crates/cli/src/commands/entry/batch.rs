//! The JSON batch file of `entry create --data`: `{"entries": [{...}]}` with
//! the field names of the admin API's `Entry` message. Each entry is checked
//! as strictly as the flags are, and an error names the entry by position.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tessera_proto::types::Entry;

use super::fields::{EntrySpec, entry_from_spec};

/// Largest batch file read, so a wrong path (a disk image, a log) fails
/// fast instead of filling memory.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFile {
    entries: Vec<EntryInput>,
}

/// One entry of the file. `id`, `revision` and `created_at` are accepted so
/// that the output of `entry show --output json` can be read back, but the
/// server assigns them, so they are ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryInput {
    spiffe_id: String,
    parent_id: String,
    selectors: Vec<SelectorInput>,
    #[serde(default)]
    x509_svid_ttl: Option<DurationInput>,
    #[serde(default)]
    jwt_svid_ttl: Option<DurationInput>,
    #[serde(default)]
    federates_with: Vec<String>,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    hint: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    downstream: bool,
    #[serde(default)]
    expires_at: Option<TimeInput>,
    #[serde(default, rename = "id")]
    _id: Option<IgnoredAny>,
    #[serde(default, rename = "revision")]
    _revision: Option<IgnoredAny>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<IgnoredAny>,
}

/// A selector as an object of the admin API or as `type:value` text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SelectorInput {
    Text(String),
    Object {
        #[serde(rename = "type")]
        kind: String,
        value: String,
    },
}

/// A lifetime as whole seconds or as a duration such as `"1h"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationInput {
    Seconds(i64),
    Text(String),
}

/// A time as Unix seconds or as RFC 3339 text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeInput {
    Seconds(i64),
    Text(String),
}

/// Reads and checks the batch file at `path`; `-` reads standard input.
pub fn read_batch_file(path: &Path) -> Result<Vec<Entry>> {
    let text = if path == Path::new("-") {
        read_limited(std::io::stdin().lock())
            .context("failed to read entries from standard input")?
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("failed to open entry file {}", path.display()))?;
        read_limited(file)
            .with_context(|| format!("failed to read entry file {}", path.display()))?
    };
    parse_batch(&text).with_context(|| format!("invalid entry file {}", path.display()))
}

fn read_limited(reader: impl std::io::Read) -> Result<String> {
    use std::io::Read as _;

    let mut text = String::new();
    let read = reader.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if read as u64 > MAX_FILE_BYTES {
        bail!("the file is larger than the maximum of {MAX_FILE_BYTES} bytes");
    }
    Ok(text)
}

/// Parses and checks the text of a batch file.
pub fn parse_batch(text: &str) -> Result<Vec<Entry>> {
    let file: BatchFile = serde_json::from_str(text).context(
        "expected a JSON object {\"entries\": [...]} whose entries have the fields of \
         `tessera entry show --output json`",
    )?;
    if file.entries.is_empty() {
        bail!("the file contains no entries: \"entries\" is an empty list");
    }
    file.entries
        .into_iter()
        .enumerate()
        .map(|(index, input)| {
            let spiffe_id = input.spiffe_id.clone();
            entry_from_input(input)
                .with_context(|| format!("entries[{index}] (spiffe_id {spiffe_id:?})"))
        })
        .collect()
}

fn entry_from_input(input: EntryInput) -> Result<Entry> {
    let selectors = input
        .selectors
        .into_iter()
        .map(|selector| match selector {
            SelectorInput::Text(text) => text,
            SelectorInput::Object { kind, value } => format!("{kind}:{value}"),
        })
        .collect();
    let spec = EntrySpec {
        spiffe_id: input.spiffe_id,
        parent_id: input.parent_id,
        selectors,
        x509_svid_ttl: input.x509_svid_ttl.map(DurationInput::into_text),
        jwt_svid_ttl: input.jwt_svid_ttl.map(DurationInput::into_text),
        federates_with: input.federates_with,
        dns_names: input.dns_names,
        hint: input.hint,
        admin: input.admin,
        downstream: input.downstream,
        expires_at: input.expires_at.map(TimeInput::into_text),
    };
    entry_from_spec(&spec, FIELD_NAMES)
}

/// Field names used in errors about a batch file.
const FIELD_NAMES: super::fields::FieldNames = super::fields::FieldNames {
    spiffe_id: "spiffe_id",
    parent_id: "parent_id",
    selector: "selector in selectors",
    x509_svid_ttl: "x509_svid_ttl",
    jwt_svid_ttl: "jwt_svid_ttl",
    federates_with: "federates_with",
    dns_name: "dns_names",
};

impl DurationInput {
    /// Returns the value as the text the duration parser reads; a negative
    /// number of seconds stays negative so the parser rejects it.
    fn into_text(self) -> String {
        match self {
            Self::Seconds(secs) => format!("{secs}s"),
            Self::Text(text) => text,
        }
    }
}

impl TimeInput {
    fn into_text(self) -> String {
        match self {
            Self::Seconds(secs) => secs.to_string(),
            Self::Text(text) => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = "spiffe://example.org/tessera/agent/join_token/0123456789abcdef";

    fn batch(entry_fields: &str) -> String {
        format!(
            r#"{{"entries": [{{"spiffe_id": "spiffe://example.org/web", "parent_id": "{AGENT}", {entry_fields}}}]}}"#
        )
    }

    #[test]
    fn batch_accepts_both_selector_forms() {
        let text = batch(r#""selectors": ["unix:uid:1000", {"type": "unix", "value": "gid:50"}]"#);
        let entries = parse_batch(&text).expect("valid batch");
        let selectors: Vec<(&str, &str)> = entries[0]
            .selectors
            .iter()
            .map(|s| (s.r#type.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(selectors, [("unix", "uid:1000"), ("unix", "gid:50")]);
    }

    #[test]
    fn batch_reads_every_field() {
        let text = batch(
            r#""selectors": ["unix:uid:1000"], "x509_svid_ttl": "1h", "jwt_svid_ttl": 300,
               "federates_with": ["other.org"], "dns_names": ["web.example.org"],
               "hint": "web", "admin": true, "downstream": true,
               "expires_at": "2027-01-15T08:00:00Z""#,
        );
        let entries = parse_batch(&text).expect("valid batch");
        let entry = &entries[0];
        assert_eq!(entry.x509_svid_ttl, 3600);
        assert_eq!(entry.jwt_svid_ttl, 300);
        assert_eq!(entry.federates_with, ["other.org"]);
        assert_eq!(entry.dns_names, ["web.example.org"]);
        assert_eq!(entry.hint, "web");
        assert!(entry.admin);
        assert!(entry.downstream);
        assert_eq!(entry.expires_at, 1_800_000_000);
    }

    #[test]
    fn batch_ignores_server_assigned_fields() {
        let text =
            batch(r#""selectors": ["unix:uid:1"], "id": "x", "revision": 4, "created_at": 9"#);
        let entries = parse_batch(&text).expect("valid batch");
        assert_eq!(entries[0].id, "");
        assert_eq!(entries[0].revision, 0);
        assert_eq!(entries[0].created_at, 0);
    }

    #[test]
    fn batch_rejections() {
        let cases = [
            (r#"{"entries": []}"#.to_owned(), "no entries"),
            (r#"{"entrys": []}"#.to_owned(), "expected a JSON object"),
            ("not json".to_owned(), "expected a JSON object"),
            (
                batch(r#""selectors": ["unix:uid:1"], "colour": "red""#),
                "expected a JSON object",
            ),
            (batch(r#""selectors": []"#), "selector"),
            (
                batch(r#""selectors": ["uid1000"]"#),
                "invalid selector in selectors \"uid1000\"",
            ),
            (
                batch(r#""selectors": ["unix:uid:1"], "x509_svid_ttl": -5"#),
                "x509_svid_ttl",
            ),
            (
                batch(r#""selectors": ["unix:uid:1"], "expires_at": "tomorrow""#),
                "tomorrow",
            ),
            (
                batch(r#""selectors": ["unix:uid:1"], "federates_with": ["Bad!"]"#),
                "federates_with",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_batch(&text).expect_err(&text);
            let message = format!("{err:#}");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn batch_error_names_entry_position() {
        let text = format!(
            r#"{{"entries": [
                {{"spiffe_id": "spiffe://example.org/a", "parent_id": "{AGENT}", "selectors": ["unix:uid:1"]}},
                {{"spiffe_id": "not-an-id", "parent_id": "{AGENT}", "selectors": ["unix:uid:1"]}}
            ]}}"#
        );
        let err = parse_batch(&text).expect_err("second entry is invalid");
        let message = format!("{err:#}");
        assert!(
            message.starts_with("entries[1] (spiffe_id \"not-an-id\")"),
            "{message}"
        );
    }

    #[test]
    fn batch_file_over_limit_is_rejected() {
        let big = vec![b' '; usize::try_from(MAX_FILE_BYTES).expect("fits") + 1];
        let err = read_limited(big.as_slice()).expect_err("too large");
        assert!(err.to_string().contains("maximum"), "{err}");
    }
}
