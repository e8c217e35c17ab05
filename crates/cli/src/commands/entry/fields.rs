//! Checking entry fields given as text (flags or a batch file) and turning
//! them into the admin API's `Entry` message. Errors use the names the user
//! typed: flag names for flags, JSON field names for a batch file.

use anyhow::{Context, Result, bail};
use tessera_proto::types::{Entry, Selector};

use crate::parse;

/// An entry's fields as text, before checking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntrySpec {
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: Vec<String>,
    pub x509_svid_ttl: Option<String>,
    pub jwt_svid_ttl: Option<String>,
    pub federates_with: Vec<String>,
    pub dns_names: Vec<String>,
    pub hint: String,
    pub admin: bool,
    pub downstream: bool,
    pub expires_at: Option<String>,
}

/// The names of the fields as the user wrote them.
#[derive(Debug, Clone, Copy)]
pub struct FieldNames {
    pub spiffe_id: &'static str,
    pub parent_id: &'static str,
    pub selector: &'static str,
    pub x509_svid_ttl: &'static str,
    pub jwt_svid_ttl: &'static str,
    pub federates_with: &'static str,
    pub dns_name: &'static str,
}

/// Field names for errors about command-line flags.
pub const FLAG_NAMES: FieldNames = FieldNames {
    spiffe_id: "--spiffe-id",
    parent_id: "--parent-id",
    selector: "--selector",
    x509_svid_ttl: "--x509-svid-ttl",
    jwt_svid_ttl: "--jwt-svid-ttl",
    federates_with: "--federates-with",
    dns_name: "--dns-name",
};

/// Checks every field of `spec` and builds the entry to create.
pub fn entry_from_spec(spec: &EntrySpec, names: FieldNames) -> Result<Entry> {
    let spiffe_id = parse::spiffe_id(names.spiffe_id, &spec.spiffe_id)?;
    let parent_id = parse::spiffe_id(names.parent_id, &spec.parent_id)?;
    if spec.selectors.is_empty() {
        bail!("an entry needs at least one selector, such as unix:uid:1000");
    }

    Ok(Entry {
        spiffe_id: spiffe_id.to_string(),
        parent_id: parent_id.to_string(),
        selectors: selectors(names.selector, &spec.selectors)?,
        x509_svid_ttl: optional_ttl(names.x509_svid_ttl, spec.x509_svid_ttl.as_deref())?,
        jwt_svid_ttl: optional_ttl(names.jwt_svid_ttl, spec.jwt_svid_ttl.as_deref())?,
        federates_with: trust_domains(names.federates_with, &spec.federates_with)?,
        dns_names: dns_names(names.dns_name, &spec.dns_names)?,
        hint: spec.hint.clone(),
        admin: spec.admin,
        downstream: spec.downstream,
        expires_at: spec
            .expires_at
            .as_deref()
            .map(parse::expiry)
            .transpose()?
            .unwrap_or(0),
        ..Entry::default()
    })
}

/// Checks selectors written as `type:value` and converts them.
pub fn selectors(field: &str, values: &[String]) -> Result<Vec<Selector>> {
    values
        .iter()
        .map(|value| {
            let selector = parse::selector(field, value)?;
            Ok(Selector {
                r#type: selector.kind().to_owned(),
                value: selector.value().to_owned(),
            })
        })
        .collect()
}

/// Checks trust domain names and returns them in canonical form.
pub fn trust_domains(field: &str, values: &[String]) -> Result<Vec<String>> {
    values
        .iter()
        .map(|value| Ok(parse::trust_domain(field, value)?.name().to_owned()))
        .collect()
}

/// Checks DNS names for an X.509-SVID.
pub fn dns_names(field: &str, values: &[String]) -> Result<Vec<String>> {
    values
        .iter()
        .map(|value| {
            tessera_registration::validate_dns_name(value)
                .with_context(|| format!("invalid {field} {value:?}"))?;
            Ok(value.clone())
        })
        .collect()
}

/// Parses an optional lifetime into seconds, 0 when absent.
pub fn optional_ttl(field: &str, value: Option<&str>) -> Result<i32> {
    value.map_or(Ok(0), |value| parse::ttl_seconds(field, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_spec() -> EntrySpec {
        EntrySpec {
            spiffe_id: "spiffe://example.org/web".to_owned(),
            parent_id: "spiffe://example.org/tessera/agent/join_token/0123456789abcdef".to_owned(),
            selectors: vec!["unix:uid:1000".to_owned()],
            ..EntrySpec::default()
        }
    }

    #[test]
    fn entry_from_valid_spec() {
        let entry = entry_from_spec(&valid_spec(), FLAG_NAMES).expect("valid spec");
        assert_eq!(entry.spiffe_id, "spiffe://example.org/web");
        assert_eq!(entry.selectors.len(), 1);
        assert_eq!(entry.x509_svid_ttl, 0);
        assert_eq!(entry.expires_at, 0);
    }

    #[test]
    fn entry_spec_rejections_name_the_flag() {
        type Change = fn(&mut EntrySpec);
        // Each case: the change, then the field and the value the error names.
        let cases: [(Change, &str, &str); 7] = [
            (|s| s.spiffe_id = "web".to_owned(), "--spiffe-id", "\"web\""),
            (
                |s| s.parent_id = "spiffe://".to_owned(),
                "--parent-id",
                "\"spiffe://\"",
            ),
            (
                |s| s.selectors.clear(),
                "at least one selector",
                "unix:uid:1000",
            ),
            (
                |s| s.selectors = vec!["unix".to_owned()],
                "selector",
                "\"unix\"",
            ),
            (
                |s| s.x509_svid_ttl = Some("1x".to_owned()),
                "--x509-svid-ttl",
                "\"1x\"",
            ),
            (
                |s| s.federates_with = vec!["a b".to_owned()],
                "--federates-with",
                "\"a b\"",
            ),
            (
                |s| s.dns_names = vec!["bad name!".to_owned()],
                "--dns-name",
                "\"bad name!\"",
            ),
        ];
        for (change, field, value) in cases {
            let mut spec = valid_spec();
            change(&mut spec);
            let err = entry_from_spec(&spec, FLAG_NAMES).expect_err(field);
            let message = format!("{err:#}");
            assert!(message.contains(field), "expected {field:?} in {message}");
            assert!(message.contains(value), "expected {value:?} in {message}");
        }
    }
}
