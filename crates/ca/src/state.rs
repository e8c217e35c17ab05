//! The persisted rotation state: which authority fills each slot.
//!
//! The state file is the single record of which authority is active,
//! which is prepared and which are retired but still published. Key and
//! certificate files are named after the authority identifiers it lists.

use serde::{Deserialize, Serialize};

/// Version of the state file layout written by this crate.
pub(crate) const STATE_VERSION: u32 = 1;

/// Contents of the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateFile {
    /// Layout version, [`STATE_VERSION`].
    pub version: u32,
    /// Name of the trust domain the authorities belong to.
    pub trust_domain: String,
    /// Sequence number of the last published bundle.
    pub bundle_sequence: u64,
    /// The authority that signs SVIDs.
    pub active: AuthorityRecord,
    /// The authority published in the bundle that signs next.
    pub prepared: Option<AuthorityRecord>,
    /// Former authorities still published until they expire; their private keys are gone.
    pub retired: Vec<AuthorityRecord>,
}

/// Names of one authority: an X.509 CA and a JWT signing key that share a lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthorityRecord {
    /// Identifier of the authority, the stem of its file names.
    pub id: String,
    /// The `kid` of its JWT signing key.
    pub jwt_key_id: String,
}

impl StateFile {
    /// Iterates over the authorities that still hold private keys.
    pub fn signing(&self) -> impl Iterator<Item = &AuthorityRecord> {
        std::iter::once(&self.active).chain(self.prepared.as_ref())
    }

    /// Iterates over every authority the state names.
    pub fn all(&self) -> impl Iterator<Item = &AuthorityRecord> {
        self.signing().chain(&self.retired)
    }

    /// Checks identifiers and their uniqueness, returning what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.version != STATE_VERSION {
            return Err(format!(
                "unsupported version {}, expected {STATE_VERSION}",
                self.version
            ));
        }

        let mut seen = std::collections::BTreeSet::new();
        for record in self.all() {
            if !is_authority_id(&record.id) {
                return Err(format!("invalid authority id {:?}", record.id));
            }
            if !is_jwt_key_id(&record.jwt_key_id) {
                return Err(format!("invalid JWT key id {:?}", record.jwt_key_id));
            }
            if !seen.insert(&record.id) {
                return Err(format!("authority id {:?} is listed twice", record.id));
            }
        }

        Ok(())
    }
}

/// Reports whether `id` is an authority identifier: 16 lowercase hex digits.
/// File names are built from it, so nothing else may pass.
pub(crate) fn is_authority_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reports whether `kid` is a JWT key identifier this crate could have made.
pub(crate) fn is_jwt_key_id(kid: &str) -> bool {
    (1..=64).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AuthorityRecord {
        AuthorityRecord {
            id: id.to_string(),
            jwt_key_id: "0123456789abcdef0123456789abcdef".to_string(),
        }
    }

    fn state() -> StateFile {
        StateFile {
            version: STATE_VERSION,
            trust_domain: "example.org".to_string(),
            bundle_sequence: 3,
            active: record("00000000000000a1"),
            prepared: Some(record("00000000000000a2")),
            retired: vec![record("00000000000000a0")],
        }
    }

    #[test]
    fn state_round_trips_json() {
        let json = serde_json::to_vec(&state()).expect("state serializes");
        let back: StateFile = serde_json::from_slice(&json).expect("state parses");
        assert_eq!(back, state());
    }

    #[test]
    fn state_rejects_unknown_fields() {
        let json = r#"{"version":1,"trust_domain":"a","bundle_sequence":0,
            "active":{"id":"00000000000000a1","jwt_key_id":"k"},
            "prepared":null,"retired":[],"extra":1}"#;
        assert!(serde_json::from_str::<StateFile>(json).is_err());
    }

    #[test]
    fn check_accepts_valid_state() {
        assert_eq!(state().check(), Ok(()));
    }

    #[test]
    fn check_table() {
        type Corruption = fn(&mut StateFile);
        let cases: [(&str, Corruption); 5] = [
            ("version", |s| s.version = 2),
            ("path in id", |s| {
                s.active.id = "../../etc/passwd".to_string()
            }),
            ("uppercase id", |s| {
                s.active.id = "00000000000000A1".to_string()
            }),
            ("empty kid", |s| s.active.jwt_key_id = String::new()),
            ("duplicate", |s| s.retired.push(record("00000000000000a1"))),
        ];

        for (case, corrupt) in cases {
            let mut s = state();
            corrupt(&mut s);
            assert!(s.check().is_err(), "case {case:?}");
        }
    }

    #[test]
    fn signing_lists_active_and_prepared() {
        let s = state();
        let ids: Vec<&str> = s.signing().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["00000000000000a1", "00000000000000a2"]);
    }
}
