use tessera_proto::types;

use super::*;

const ENTRY_ID: &str = "0b6e4c1e-1d4c-4c55-9a38-5b7d0f0e1a2b";

fn selector(s: &str) -> types::Selector {
    let (kind, value) = s.split_once(':').expect("test selector has a colon");
    types::Selector {
        r#type: kind.to_owned(),
        value: value.to_owned(),
    }
}

fn proto_entry() -> types::Entry {
    types::Entry {
        id: ENTRY_ID.to_owned(),
        spiffe_id: "spiffe://example.org/web".to_owned(),
        parent_id: "spiffe://example.org/tessera/agent/join_token/abc".to_owned(),
        selectors: vec![selector("unix:uid:1000"), selector("unix:gid:1000")],
        x509_svid_ttl: 3600,
        jwt_svid_ttl: 0,
        federates_with: vec!["partner.org".to_owned()],
        dns_names: vec!["web.example.org".to_owned()],
        hint: "web".to_owned(),
        admin: false,
        downstream: true,
        expires_at: 0,
        revision: 3,
        created_at: 1_700_000_000,
    }
}

fn convert(edit: impl FnOnce(&mut types::Entry)) -> Result<RegistrationEntry, EntryError> {
    let mut proto = proto_entry();
    edit(&mut proto);
    RegistrationEntry::try_from(proto)
}

fn set(values: &[&str]) -> SelectorSet {
    values
        .iter()
        .map(|s| Selector::parse(s).expect("valid"))
        .collect()
}

#[test]
fn entry_id_generate_and_parse() {
    let id = EntryId::generate();
    assert_eq!(EntryId::parse(id.as_str()), Ok(id.clone()));
    assert_eq!(id.to_string().len(), 36);
    assert_ne!(EntryId::generate(), id);
    assert_eq!(
        ENTRY_ID.parse::<EntryId>().map(|id| id.to_string()),
        Ok(ENTRY_ID.to_owned())
    );
}

#[test]
fn entry_id_rejects_non_canonical_forms() {
    let cases = [
        "",
        "not-a-uuid",
        "0B6E4C1E-1D4C-4C55-9A38-5B7D0F0E1A2B",
        "0b6e4c1e1d4c4c559a385b7d0f0e1a2b",
        "{0b6e4c1e-1d4c-4c55-9a38-5b7d0f0e1a2b}",
        "urn:uuid:0b6e4c1e-1d4c-4c55-9a38-5b7d0f0e1a2b",
        "0b6e4c1e-1d4c-1c55-9a38-5b7d0f0e1a2b",
        " 0b6e4c1e-1d4c-4c55-9a38-5b7d0f0e1a2b",
    ];
    for input in cases {
        assert_eq!(
            EntryId::parse(input),
            Err(EntryError::InvalidEntryId(input.into())),
            "{input:?}"
        );
    }
}

#[test]
fn entry_id_serde_as_string() {
    let id = EntryId::parse(ENTRY_ID).expect("valid");
    let json = serde_json::to_string(&id).expect("serialize");
    assert_eq!(json, format!("\"{ENTRY_ID}\""));
    assert_eq!(
        serde_json::from_str::<EntryId>(&json).expect("deserialize"),
        id
    );
}

#[test]
fn try_from_converts_every_field() {
    let entry = RegistrationEntry::try_from(proto_entry()).expect("valid entry");
    assert_eq!(entry.id.as_str(), ENTRY_ID);
    assert_eq!(entry.spiffe_id.as_str(), "spiffe://example.org/web");
    assert_eq!(
        entry.parent_id.as_str(),
        "spiffe://example.org/tessera/agent/join_token/abc"
    );
    let selectors: Vec<String> = entry.selectors.iter().map(ToString::to_string).collect();
    assert_eq!(selectors, ["unix:gid:1000", "unix:uid:1000"]);
    assert_eq!(entry.x509_svid_ttl, Some(Duration::from_secs(3600)));
    assert_eq!(entry.jwt_svid_ttl, None);
    assert_eq!(
        entry.federates_with,
        vec![TrustDomain::new("partner.org").expect("valid")]
    );
    assert_eq!(entry.dns_names, ["web.example.org"]);
    assert_eq!(entry.hint, "web");
    assert!(!entry.admin);
    assert!(entry.downstream);
    assert_eq!(entry.expires_at, None);
    assert_eq!(entry.revision, 3);
    assert_eq!(entry.created_at, 1_700_000_000);
}

#[test]
fn proto_round_trip() {
    let mut proto = proto_entry();
    proto
        .selectors
        .sort_by(|a, b| (&a.r#type, &a.value).cmp(&(&b.r#type, &b.value)));
    proto.expires_at = 1_900_000_000;
    proto.jwt_svid_ttl = 300;
    let entry = RegistrationEntry::try_from(proto.clone()).expect("valid entry");
    assert_eq!(types::Entry::from(&entry), proto);
    assert_eq!(
        RegistrationEntry::try_from(types::Entry::from(entry.clone())),
        Ok(entry)
    );
}

#[test]
fn try_from_normalizes_lists() {
    let entry = convert(|e| {
        e.selectors.push(selector("unix:uid:1000"));
        e.federates_with = vec!["b.org".into(), "a.org".into(), "b.org".into()];
        e.dns_names = vec![
            "b.example.org".into(),
            "a.example.org".into(),
            "b.example.org".into(),
        ];
    })
    .expect("valid entry");
    assert_eq!(entry.selectors.len(), 2);
    let domains: Vec<&str> = entry.federates_with.iter().map(TrustDomain::name).collect();
    assert_eq!(domains, ["a.org", "b.org"]);
    assert_eq!(entry.dns_names, ["b.example.org", "a.example.org"]);
}

#[test]
fn try_from_rejects_invalid_fields() {
    type Edit = Box<dyn FnOnce(&mut types::Entry)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("empty id", Box::new(|e| e.id.clear()), "id is empty"),
        (
            "bad id",
            Box::new(|e| e.id = "42".into()),
            "invalid entry ID \"42\"",
        ),
        (
            "empty spiffe_id",
            Box::new(|e| e.spiffe_id.clear()),
            "spiffe_id is empty: set it to the SPIFFE ID",
        ),
        (
            "bad spiffe_id",
            Box::new(|e| e.spiffe_id = "spiffe://example.org/web/".into()),
            "invalid spiffe_id: invalid SPIFFE ID \"spiffe://example.org/web/\": the path ends with '/'",
        ),
        (
            "spiffe_id without path",
            Box::new(|e| e.spiffe_id = "spiffe://example.org".into()),
            "invalid spiffe_id \"spiffe://example.org\": workload IDs need a path",
        ),
        (
            "empty parent_id",
            Box::new(|e| e.parent_id.clear()),
            "parent_id is empty",
        ),
        (
            "bad parent_id",
            Box::new(|e| e.parent_id = "example.org/agent".into()),
            "invalid parent_id",
        ),
        (
            "no selectors",
            Box::new(|e| e.selectors.clear()),
            "selectors is empty: add at least one selector such as unix:uid:1000",
        ),
        (
            "selector without type",
            Box::new(|e| {
                e.selectors = vec![types::Selector {
                    r#type: String::new(),
                    value: "uid:1".into(),
                }]
            }),
            "invalid selector type \"\"",
        ),
        (
            "negative x509 ttl",
            Box::new(|e| e.x509_svid_ttl = -1),
            "invalid x509_svid_ttl -1",
        ),
        (
            "negative jwt ttl",
            Box::new(|e| e.jwt_svid_ttl = -5),
            "invalid jwt_svid_ttl -5",
        ),
        (
            "bad federates_with",
            Box::new(|e| e.federates_with = vec!["Partner.org".into()]),
            "invalid federates_with value",
        ),
        (
            "bad dns name",
            Box::new(|e| e.dns_names = vec!["web_1.example.org".into()]),
            "invalid DNS name \"web_1.example.org\"",
        ),
        (
            "long hint",
            Box::new(|e| e.hint = "h".repeat(MAX_ENTRY_HINT_BYTES + 1)),
            "hint is 1025 bytes",
        ),
        (
            "negative expires_at",
            Box::new(|e| e.expires_at = -1),
            "invalid expires_at -1",
        ),
        (
            "negative revision",
            Box::new(|e| e.revision = -1),
            "invalid revision -1",
        ),
        (
            "negative created_at",
            Box::new(|e| e.created_at = -1),
            "invalid created_at -1",
        ),
        (
            "too many selectors",
            Box::new(|e| {
                e.selectors = (0..=MAX_ENTRY_SELECTORS)
                    .map(|i| selector(&format!("unix:uid:{i}")))
                    .collect()
            }),
            "selectors has 129 values, over the maximum of 128",
        ),
        (
            "too many dns names",
            Box::new(|e| {
                e.dns_names = (0..=MAX_ENTRY_DNS_NAMES)
                    .map(|i| format!("n{i}.example.org"))
                    .collect()
            }),
            "dns_names has 65 values",
        ),
    ];
    for (name, edit, expected) in cases {
        let err = convert(edit).expect_err(name);
        assert!(err.to_string().contains(expected), "{name}: {err}");
    }
}

#[test]
fn invalid_selector_message_names_value_and_fix() {
    let err = convert(|e| {
        e.selectors = vec![types::Selector {
            r#type: "unixuid".into(),
            value: String::new(),
        }]
    })
    .expect_err("empty value");
    assert_eq!(
        err.to_string(),
        "invalid selector \"unixuid:\": the value is empty, expected TYPE:VALUE such as unix:uid:1000"
    );
}

#[test]
fn matches_requires_a_subset() {
    let entry = RegistrationEntry::try_from(proto_entry()).expect("valid entry");
    assert!(entry.matches(&set(&["unix:uid:1000", "unix:gid:1000"])));
    assert!(entry.matches(&set(&[
        "unix:uid:1000",
        "unix:gid:1000",
        "unix:path:/bin/app"
    ])));
    assert!(!entry.matches(&set(&["unix:uid:1000"])));
    assert!(!entry.matches(&set(&["unix:uid:1001", "unix:gid:1000"])));
    assert!(!entry.matches(&SelectorSet::new()));
}

#[test]
fn matches_nothing_without_selectors() {
    let mut entry = RegistrationEntry::try_from(proto_entry()).expect("valid entry");
    entry.selectors.clear();
    assert!(!entry.matches(&set(&["unix:uid:1000"])));
    assert!(!entry.matches(&SelectorSet::new()));
}

#[test]
fn is_expired_compares_unix_seconds() {
    let mut entry = RegistrationEntry::try_from(proto_entry()).expect("valid entry");
    assert!(!entry.is_expired(i64::MAX));
    entry.expires_at = Some(100);
    assert!(!entry.is_expired(99));
    assert!(entry.is_expired(100));
}
