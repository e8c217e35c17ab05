//! Conversions between [`RegistrationEntry`] and the protobuf `Entry`,
//! validating every field on the way in.

use std::time::Duration;

use tessera_proto::types;
use tessera_spiffe::{SpiffeId, TrustDomain};

use super::{
    EntryId, MAX_ENTRY_DNS_NAMES, MAX_ENTRY_FEDERATES_WITH, MAX_ENTRY_HINT_BYTES,
    MAX_ENTRY_SELECTORS, RegistrationEntry,
};
use crate::{EntryError, Selector, validate_dns_name};

impl TryFrom<types::Entry> for RegistrationEntry {
    type Error = EntryError;

    /// Validates a protobuf entry. The `id` must already be set: the server
    /// assigns it before converting a create request.
    fn try_from(proto: types::Entry) -> Result<Self, Self::Error> {
        if proto.id.is_empty() {
            return Err(EntryError::MissingField {
                field: "id",
                hint: "set it to the entry's UUID (the server assigns one when it creates an entry)",
            });
        }
        let id = EntryId::parse(&proto.id)?;
        let spiffe_id = parse_spiffe_id(
            "spiffe_id",
            &proto.spiffe_id,
            "set it to the SPIFFE ID to issue, such as spiffe://example.org/web",
        )?;
        if spiffe_id.path().is_empty() {
            return Err(EntryError::SpiffeIdWithoutPath(proto.spiffe_id));
        }
        let parent_id = parse_spiffe_id(
            "parent_id",
            &proto.parent_id,
            "set it to the agent ID or node alias whose workloads may receive the SVID",
        )?;

        Ok(Self {
            id,
            spiffe_id,
            parent_id,
            selectors: convert_selectors(proto.selectors)?,
            x509_svid_ttl: convert_ttl("x509_svid_ttl", proto.x509_svid_ttl)?,
            jwt_svid_ttl: convert_ttl("jwt_svid_ttl", proto.jwt_svid_ttl)?,
            federates_with: convert_federates_with(&proto.federates_with)?,
            dns_names: convert_dns_names(proto.dns_names)?,
            hint: convert_hint(proto.hint)?,
            admin: proto.admin,
            downstream: proto.downstream,
            expires_at: match non_negative("expires_at", proto.expires_at)? {
                0 => None,
                seconds => Some(seconds),
            },
            revision: non_negative("revision", proto.revision)?,
            created_at: non_negative("created_at", proto.created_at)?,
        })
    }
}

impl From<&RegistrationEntry> for types::Entry {
    fn from(entry: &RegistrationEntry) -> Self {
        Self {
            id: entry.id.to_string(),
            spiffe_id: entry.spiffe_id.to_string(),
            parent_id: entry.parent_id.to_string(),
            selectors: entry.selectors.iter().map(types::Selector::from).collect(),
            x509_svid_ttl: ttl_seconds(entry.x509_svid_ttl),
            jwt_svid_ttl: ttl_seconds(entry.jwt_svid_ttl),
            federates_with: entry
                .federates_with
                .iter()
                .map(|td| td.name().to_owned())
                .collect(),
            dns_names: entry.dns_names.clone(),
            hint: entry.hint.clone(),
            admin: entry.admin,
            downstream: entry.downstream,
            expires_at: entry.expires_at.unwrap_or(0),
            revision: entry.revision,
            created_at: entry.created_at,
        }
    }
}

impl From<RegistrationEntry> for types::Entry {
    fn from(entry: RegistrationEntry) -> Self {
        Self::from(&entry)
    }
}

fn parse_spiffe_id(
    field: &'static str,
    value: &str,
    hint: &'static str,
) -> Result<SpiffeId, EntryError> {
    if value.is_empty() {
        return Err(EntryError::MissingField { field, hint });
    }
    SpiffeId::parse(value).map_err(|error| EntryError::InvalidSpiffeId { field, error })
}

fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), EntryError> {
    if count > max {
        return Err(EntryError::TooMany { field, count, max });
    }
    Ok(())
}

fn convert_selectors(proto: Vec<types::Selector>) -> Result<Vec<Selector>, EntryError> {
    if proto.is_empty() {
        return Err(EntryError::MissingField {
            field: "selectors",
            hint: "add at least one selector such as unix:uid:1000",
        });
    }
    check_count("selectors", proto.len(), MAX_ENTRY_SELECTORS)?;
    let mut selectors = proto
        .into_iter()
        .map(Selector::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    selectors.sort();
    selectors.dedup();
    Ok(selectors)
}

fn convert_ttl(field: &'static str, seconds: i32) -> Result<Option<Duration>, EntryError> {
    match seconds {
        0 => Ok(None),
        s if s < 0 => Err(EntryError::InvalidTtl {
            field,
            value: i64::from(s),
        }),
        s => Ok(Some(Duration::from_secs(s.unsigned_abs().into()))),
    }
}

fn ttl_seconds(ttl: Option<Duration>) -> i32 {
    ttl.map_or(0, |ttl| i32::try_from(ttl.as_secs()).unwrap_or(i32::MAX))
}

fn convert_federates_with(names: &[String]) -> Result<Vec<TrustDomain>, EntryError> {
    check_count("federates_with", names.len(), MAX_ENTRY_FEDERATES_WITH)?;
    let mut domains = names
        .iter()
        .map(|name| TrustDomain::new(name).map_err(EntryError::InvalidTrustDomain))
        .collect::<Result<Vec<_>, _>>()?;
    domains.sort();
    domains.dedup();
    Ok(domains)
}

fn convert_dns_names(names: Vec<String>) -> Result<Vec<String>, EntryError> {
    check_count("dns_names", names.len(), MAX_ENTRY_DNS_NAMES)?;
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        validate_dns_name(&name)?;
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    Ok(unique)
}

fn convert_hint(hint: String) -> Result<String, EntryError> {
    if hint.len() > MAX_ENTRY_HINT_BYTES {
        return Err(EntryError::HintTooLong {
            len: hint.len(),
            max: MAX_ENTRY_HINT_BYTES,
        });
    }
    Ok(hint)
}

fn non_negative(field: &'static str, value: i64) -> Result<i64, EntryError> {
    if value < 0 {
        return Err(EntryError::Negative { field, value });
    }
    Ok(value)
}
