//! How entries and per-item results print: aligned text blocks, or JSON
//! objects with the field names of the admin API's `Entry` message (the
//! same names `entry create --data` reads).

use serde::Serialize;
use tessera_proto::types::{Entry, Selector, Status};

use crate::output::{Fields, format_expiry, format_ttl, format_unix_time};

/// An entry as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryView {
    pub id: String,
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: Vec<SelectorView>,
    /// Seconds; 0 means the server default.
    pub x509_svid_ttl: i32,
    /// Seconds; 0 means the server default.
    pub jwt_svid_ttl: i32,
    pub federates_with: Vec<String>,
    pub dns_names: Vec<String>,
    pub hint: String,
    pub admin: bool,
    pub downstream: bool,
    /// Unix seconds; 0 means never.
    pub expires_at: i64,
    pub revision: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// A selector as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelectorView {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// The outcome of one item of a batch call as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    /// gRPC status code; 0 means success.
    pub code: i32,
    pub message: String,
}

impl From<&Entry> for EntryView {
    fn from(entry: &Entry) -> Self {
        Self {
            id: entry.id.clone(),
            spiffe_id: entry.spiffe_id.clone(),
            parent_id: entry.parent_id.clone(),
            selectors: entry.selectors.iter().map(SelectorView::from).collect(),
            x509_svid_ttl: entry.x509_svid_ttl,
            jwt_svid_ttl: entry.jwt_svid_ttl,
            federates_with: entry.federates_with.clone(),
            dns_names: entry.dns_names.clone(),
            hint: entry.hint.clone(),
            admin: entry.admin,
            downstream: entry.downstream,
            expires_at: entry.expires_at,
            revision: entry.revision,
            created_at: entry.created_at,
        }
    }
}

impl From<&Selector> for SelectorView {
    fn from(selector: &Selector) -> Self {
        Self {
            kind: selector.r#type.clone(),
            value: selector.value.clone(),
        }
    }
}

impl From<Option<&Status>> for StatusView {
    fn from(status: Option<&Status>) -> Self {
        status.map_or(
            Self {
                code: 0,
                message: String::new(),
            },
            |status| Self {
                code: status.code,
                message: status.message.clone(),
            },
        )
    }
}

/// Writes a selector as `type:value`.
pub fn selector_text(selector: &Selector) -> String {
    format!("{}:{}", selector.r#type, selector.value)
}

/// Renders one entry as aligned text; optional fields appear only when set.
pub fn entry_text(entry: &Entry) -> String {
    let mut fields = Fields::new();
    fields
        .row("Entry ID", &entry.id)
        .row("SPIFFE ID", &entry.spiffe_id)
        .row("Parent ID", &entry.parent_id)
        .row("Revision", entry.revision)
        .rows("Selector", entry.selectors.iter().map(selector_text))
        .row("X509-SVID TTL", format_ttl(entry.x509_svid_ttl))
        .row("JWT-SVID TTL", format_ttl(entry.jwt_svid_ttl))
        .row("Expires at", format_expiry(entry.expires_at))
        .rows("DNS name", &entry.dns_names)
        .rows("Federates with", &entry.federates_with);
    if !entry.hint.is_empty() {
        fields.row("Hint", &entry.hint);
    }
    if entry.admin {
        fields.row("Admin", true);
    }
    if entry.downstream {
        fields.row("Downstream", true);
    }
    if entry.created_at != 0 {
        fields.row("Created at", format_unix_time(entry.created_at));
    }
    fields.render()
}

/// Renders several entries as text blocks separated by blank lines, after a
/// count line.
pub fn entries_text(entries: &[Entry]) -> String {
    let mut text = match entries.len() {
        1 => "Found 1 entry\n".to_owned(),
        count => format!("Found {count} entries\n"),
    };
    for entry in entries {
        text.push('\n');
        text.push_str(&entry_text(entry));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_entry() -> Entry {
        Entry {
            id: "0b6e4c1e-1d4c-4c55-9a38-5b7d0f0e1a2b".to_owned(),
            spiffe_id: "spiffe://example.org/web".to_owned(),
            parent_id: "spiffe://example.org/tessera/agent/join_token/abc".to_owned(),
            selectors: vec![Selector {
                r#type: "unix".to_owned(),
                value: "uid:1000".to_owned(),
            }],
            x509_svid_ttl: 3600,
            revision: 2,
            ..Entry::default()
        }
    }

    #[test]
    fn entry_text_lists_set_fields() {
        let text = entry_text(&sample_entry());
        assert!(text.contains("Selector      : unix:uid:1000\n"), "{text}");
        assert!(text.contains("X509-SVID TTL : 1h\n"), "{text}");
        assert!(text.contains("JWT-SVID TTL  : server default\n"), "{text}");
        assert!(text.contains("Expires at    : never\n"), "{text}");
    }

    #[test]
    fn entry_text_omits_unset_flags() {
        let text = entry_text(&sample_entry());
        assert!(!text.contains("Admin"), "{text}");
        assert!(!text.contains("Hint"), "{text}");
        assert!(!text.contains("Created at"), "{text}");
    }

    #[test]
    fn entry_view_names_selector_type() {
        let view = EntryView::from(&sample_entry());
        let json = serde_json::to_value(&view).expect("entry view serializes");
        assert_eq!(json["selectors"][0]["type"], "unix");
        assert_eq!(json["selectors"][0]["value"], "uid:1000");
        assert_eq!(json["x509_svid_ttl"], 3600);
    }

    #[test]
    fn entries_text_counts_entries() {
        assert!(entries_text(&[]).starts_with("Found 0 entries\n"));
        assert!(entries_text(&[sample_entry()]).starts_with("Found 1 entry\n"));
    }
}
