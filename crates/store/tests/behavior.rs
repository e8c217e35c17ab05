//! The store's behavior, run against every backend: each `async fn` in
//! `cases` takes a fresh [`TestDb`], and `backend_tests!` turns it into one
//! `#[tokio::test]` per backend.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use common::{Backend, TestDb};

/// Declares a module per backend with one test per case.
macro_rules! backend_tests {
    ($($case:ident),* $(,)?) => {
        backend_tests!(@backend sqlite, Backend::Sqlite, $($case),*);
        backend_tests!(@backend postgres, Backend::Postgres, $($case),*);
        backend_tests!(@backend mysql, Backend::MySql, $($case),*);
    };
    (@backend $module:ident, $backend:expr, $($case:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = TestDb::create($backend).await else {
                        return;
                    };
                    cases::$case(&db).await;
                }
            )*
        }
    };
}

backend_tests!(
    entry_round_trip,
    entry_list_filters,
    entry_duplicate_rejected,
    entry_duplicate_ignores_selector_order,
    entry_id_in_use_rejected,
    entry_invalid_rejected,
    entry_update_stale_revision_conflicts,
    entry_update_missing_not_found,
    entry_update_into_duplicate_rejected,
    entry_delete_missing_not_found,
    failed_write_leaves_nothing,
    corrupt_row_reported,
    token_single_use,
    token_expired,
    token_unknown,
    token_duplicate_rejected,
    token_stored_as_hash,
    token_concurrent_consume_once,
    token_prune_expired,
    agent_round_trip,
    agent_upsert_keeps_ban,
    agent_missing_not_found,
    bundle_round_trip,
    federation_round_trip,
    changes_in_write_order,
    changes_limit_and_resume,
    changes_prune_keeps_newest,
    changes_follow_concurrent_writers,
    reopen_keeps_data,
    newer_schema_rejected,
    concurrent_open_migrates_once,
);

mod cases {
    use std::collections::HashSet;
    use std::sync::Arc;

    use tessera_registration::{EntryId, Selector};
    use tessera_spiffe::SpiffeId;
    use tessera_store::{ChangeKind, FederationRecord, ObjectKind, Store, StoreError};

    use crate::common::{TEST_TIMEOUT, TestDb, agent, entry, trust_domain};

    const WEB: &str = "spiffe://example.org/web";
    const NODE: &str = "spiffe://example.org/tessera/agent/join_token/0123456789abcdef";

    pub async fn entry_round_trip(db: &TestDb) {
        let store = db.open().await;
        let input = entry(WEB, NODE, &["unix:uid:1000", "unix:gid:1000"]);

        let (created, created_revision) = store.create_entry(&input).await.unwrap();
        assert_eq!(created.id, input.id);
        assert_eq!(created.revision, 0);
        assert!(created.created_at > 0, "created_at is set");
        assert!(created_revision > 0);

        let mut sorted = input.clone();
        sorted.selectors.sort();
        sorted.created_at = created.created_at;
        assert_eq!(
            created, sorted,
            "the store returns the entry as given, selectors sorted"
        );

        let read = store.get_entry(&input.id).await.unwrap();
        assert_eq!(read.as_ref(), Some(&created), "every column round-trips");

        let mut changed = created.clone();
        changed.hint = "renamed".to_owned();
        changed.selectors = vec![Selector::parse("unix:uid:2000").unwrap()];
        changed.x509_svid_ttl = None;
        changed.expires_at = None;
        changed.admin = false;
        changed.downstream = true;
        changed.federates_with.clear();
        changed.dns_names.push("api.example.org".to_owned());
        let (updated, updated_revision) = store.update_entry(&changed).await.unwrap();
        assert_eq!(updated.revision, 1);
        assert_eq!(
            updated.created_at, created.created_at,
            "update keeps created_at"
        );
        assert!(updated_revision > created_revision);

        let read = store.get_entry(&input.id).await.unwrap();
        assert_eq!(read.as_ref(), Some(&updated));

        let (deleted, deleted_revision) = store.delete_entry(&input.id).await.unwrap();
        assert_eq!(deleted, updated);
        assert!(deleted_revision > updated_revision);
        assert_eq!(store.get_entry(&input.id).await.unwrap(), None);
        assert!(store.list_entries().await.unwrap().is_empty());
    }

    pub async fn entry_list_filters(db: &TestDb) {
        let store = db.open().await;
        let other_node = "spiffe://example.org/tessera/agent/join_token/fedcba9876543210";
        let a = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;
        let b = store
            .create_entry(&entry(WEB, other_node, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;
        let c = store
            .create_entry(&entry("spiffe://example.org/db", NODE, &["unix:uid:2"]))
            .await
            .unwrap()
            .0;

        let mut all_ids: Vec<EntryId> = vec![a.id.clone(), b.id.clone(), c.id.clone()];
        all_ids.sort();
        let listed: Vec<EntryId> = store
            .list_entries()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(
            listed, all_ids,
            "list_entries returns every entry ordered by ID"
        );

        let node = SpiffeId::parse(NODE).unwrap();
        let mut expected = vec![a.id.clone(), c.id.clone()];
        expected.sort();
        let by_parent: Vec<EntryId> = store
            .list_entries_by_parent(&node)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(by_parent, expected);

        let web = SpiffeId::parse(WEB).unwrap();
        let mut expected = vec![a.id.clone(), b.id.clone()];
        expected.sort();
        let by_spiffe_id: Vec<EntryId> = store
            .list_entries_by_spiffe_id(&web)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(by_spiffe_id, expected);
    }

    pub async fn entry_duplicate_rejected(db: &TestDb) {
        let store = db.open().await;
        let first = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1000"]))
            .await
            .unwrap()
            .0;
        let changes_before = store.latest_revision().await.unwrap();

        let err = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1000"]))
            .await
            .expect_err("a second entry with the same identity is rejected");
        assert!(
            matches!(&err, StoreError::AlreadyExists { existing } if *existing == first.id),
            "{err:?}"
        );
        assert!(err.to_string().contains(first.id.as_str()), "{err}");
        assert_eq!(store.list_entries().await.unwrap().len(), 1);
        assert_eq!(store.latest_revision().await.unwrap(), changes_before);

        // Any difference in SPIFFE ID, parent ID or selectors is a new entry.
        let other_parent = "spiffe://example.org/tessera/agent/join_token/fedcba9876543210";
        store
            .create_entry(&entry(WEB, other_parent, &["unix:uid:1000"]))
            .await
            .unwrap();
        store
            .create_entry(&entry("spiffe://example.org/Web", NODE, &["unix:uid:1000"]))
            .await
            .unwrap();
        store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1000", "unix:gid:1"]))
            .await
            .unwrap();
        assert_eq!(store.list_entries().await.unwrap().len(), 4);
    }

    pub async fn entry_duplicate_ignores_selector_order(db: &TestDb) {
        let store = db.open().await;
        let first = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1", "unix:gid:2"]))
            .await
            .unwrap()
            .0;

        let err = store
            .create_entry(&entry(
                WEB,
                NODE,
                &["unix:gid:2", "unix:uid:1", "unix:uid:1"],
            ))
            .await
            .expect_err("the same selector set in another order is a duplicate");
        assert!(
            matches!(&err, StoreError::AlreadyExists { existing } if *existing == first.id),
            "{err:?}"
        );
    }

    pub async fn entry_id_in_use_rejected(db: &TestDb) {
        let store = db.open().await;
        let first = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;

        let mut second = entry("spiffe://example.org/db", NODE, &["unix:uid:2"]);
        second.id = first.id.clone();
        let err = store
            .create_entry(&second)
            .await
            .expect_err("the ID is taken");
        assert!(
            matches!(&err, StoreError::EntryIdInUse { id } if *id == first.id),
            "{err:?}"
        );
        assert_eq!(store.get_entry(&first.id).await.unwrap(), Some(first));
    }

    pub async fn entry_invalid_rejected(db: &TestDb) {
        let store = db.open().await;

        let mut fractional_ttl = entry(WEB, NODE, &["unix:uid:1"]);
        fractional_ttl.x509_svid_ttl = Some(std::time::Duration::from_millis(1500));
        let err = store
            .create_entry(&fractional_ttl)
            .await
            .expect_err("TTL of 1.5 s");
        assert!(matches!(err, StoreError::InvalidEntry { .. }), "{err:?}");
        assert!(err.to_string().contains("x509_svid_ttl"), "{err}");

        let mut no_selectors = entry(WEB, NODE, &["unix:uid:1"]);
        no_selectors.selectors.clear();
        let err = store
            .create_entry(&no_selectors)
            .await
            .expect_err("no selectors");
        assert!(matches!(err, StoreError::InvalidEntry { .. }), "{err:?}");

        assert!(store.list_entries().await.unwrap().is_empty());
        assert_eq!(store.latest_revision().await.unwrap(), 0);
    }

    pub async fn entry_update_stale_revision_conflicts(db: &TestDb) {
        let store = db.open().await;
        let created = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;

        let mut first_writer = created.clone();
        first_writer.hint = "first".to_owned();
        store.update_entry(&first_writer).await.unwrap();

        let mut second_writer = created.clone();
        second_writer.hint = "second".to_owned();
        let err = store
            .update_entry(&second_writer)
            .await
            .expect_err("an update based on revision 0 after revision 1 is stale");
        assert!(
            matches!(&err, StoreError::Conflict { id, expected: 0, stored: 1 } if *id == created.id),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("expected revision 0"), "{message}");
        assert!(message.contains("revision is 1"), "{message}");

        let stored = store.get_entry(&created.id).await.unwrap().unwrap();
        assert_eq!(stored.hint, "first", "the stale update changed nothing");
    }

    pub async fn entry_update_missing_not_found(db: &TestDb) {
        let store = db.open().await;
        let missing = entry(WEB, NODE, &["unix:uid:1"]);

        let err = store
            .update_entry(&missing)
            .await
            .expect_err("no such entry");
        assert!(
            matches!(&err, StoreError::NotFound { kind: ObjectKind::Entry, id } if id == missing.id.as_str()),
            "{err:?}"
        );
        assert!(err.to_string().contains(missing.id.as_str()), "{err}");
    }

    pub async fn entry_update_into_duplicate_rejected(db: &TestDb) {
        let store = db.open().await;
        let a = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;
        let b = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:2"]))
            .await
            .unwrap()
            .0;

        let mut changed = b.clone();
        changed.selectors = a.selectors.clone();
        let err = store
            .update_entry(&changed)
            .await
            .expect_err("b would duplicate a");
        assert!(
            matches!(&err, StoreError::AlreadyExists { existing } if *existing == a.id),
            "{err:?}"
        );
        assert_eq!(store.get_entry(&b.id).await.unwrap(), Some(b.clone()));

        // An update that keeps the entry's own identity is no duplicate.
        let mut renamed = b.clone();
        renamed.hint = "kept identity".to_owned();
        store.update_entry(&renamed).await.unwrap();
    }

    pub async fn entry_delete_missing_not_found(db: &TestDb) {
        let store = db.open().await;
        let id = EntryId::generate();

        let err = store.delete_entry(&id).await.expect_err("no such entry");
        assert!(
            matches!(&err, StoreError::NotFound { kind: ObjectKind::Entry, id: named } if named == id.as_str()),
            "{err:?}"
        );
    }

    /// Checks that a write that fails after changing its table leaves no
    /// trace. The change-feed insert is made to fail, after the entry row
    /// was written in the same transaction.
    pub async fn failed_write_leaves_nothing(db: &TestDb) {
        let store = db.open().await;
        let existing_entry = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;
        let bundle_td = trust_domain("example.org");
        store
            .set_bundle(&bundle_td, b"{\"keys\":[]}")
            .await
            .unwrap();
        store.upsert_agent(&agent(NODE)).await.unwrap();
        let revision_before = store.latest_revision().await.unwrap();

        db.break_change_feed().await;

        let new_entry = entry("spiffe://example.org/db", NODE, &["unix:uid:2"]);
        let err = store
            .create_entry(&new_entry)
            .await
            .expect_err("the feed insert fails");
        assert!(matches!(err, StoreError::Query { .. }), "{err:?}");

        let mut changed = existing_entry.clone();
        changed.hint = "never stored".to_owned();
        store
            .update_entry(&changed)
            .await
            .expect_err("the feed insert fails");
        store
            .delete_entry(&existing_entry.id)
            .await
            .expect_err("the feed insert fails");
        store
            .set_bundle(&bundle_td, b"replaced")
            .await
            .expect_err("the feed insert fails");
        store
            .set_agent_banned(&agent(NODE).spiffe_id, true)
            .await
            .expect_err("the feed insert fails");
        store
            .delete_agent(&agent(NODE).spiffe_id)
            .await
            .expect_err("the feed insert fails");

        db.repair_change_feed().await;

        assert_eq!(
            store.get_entry(&new_entry.id).await.unwrap(),
            None,
            "create rolled back"
        );
        assert_eq!(
            store.get_entry(&existing_entry.id).await.unwrap(),
            Some(existing_entry),
            "update and delete rolled back"
        );
        assert_eq!(db.count_rows("entries").await, 1);
        assert_eq!(
            store.get_bundle(&bundle_td).await.unwrap().as_deref(),
            Some(&b"{\"keys\":[]}"[..]),
            "set_bundle rolled back"
        );
        let stored_agent = store.get_agent(&agent(NODE).spiffe_id).await.unwrap();
        assert_eq!(
            stored_agent.map(|a| a.banned),
            Some(false),
            "ban and delete rolled back"
        );
        assert_eq!(store.latest_revision().await.unwrap(), revision_before);
    }

    pub async fn corrupt_row_reported(db: &TestDb) {
        let store = db.open().await;
        let created = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;
        db.execute("UPDATE entries SET selectors = 'not a JSON array'")
            .await;

        let err = store
            .get_entry(&created.id)
            .await
            .expect_err("the row is corrupt");
        assert!(
            matches!(&err, StoreError::Corrupt { table: "entries", key, .. } if key == created.id.as_str()),
            "{err:?}"
        );
        assert!(err.to_string().contains("selectors"), "{err}");
    }

    pub async fn token_single_use(db: &TestDb) {
        let store = db.open().await;
        store
            .create_join_token("token-single-use", 2_000)
            .await
            .unwrap();

        store
            .consume_join_token("token-single-use", 1_000)
            .await
            .unwrap();
        let err = store
            .consume_join_token("token-single-use", 1_000)
            .await
            .expect_err("a token works once");
        assert!(matches!(err, StoreError::TokenNotFound), "{err:?}");
    }

    pub async fn token_expired(db: &TestDb) {
        let store = db.open().await;
        store
            .create_join_token("token-expired", 1_000)
            .await
            .unwrap();

        let err = store
            .consume_join_token("token-expired", 1_000)
            .await
            .expect_err("expired");
        assert!(
            matches!(err, StoreError::TokenExpired { expired_at: 1_000 }),
            "{err:?}"
        );

        let err = store
            .consume_join_token("token-expired", 500)
            .await
            .expect_err("an expired token is deleted when it is presented");
        assert!(matches!(err, StoreError::TokenNotFound), "{err:?}");
    }

    pub async fn token_unknown(db: &TestDb) {
        let store = db.open().await;
        store.create_join_token("token-known", 2_000).await.unwrap();

        let err = store
            .consume_join_token("token-unknown", 1_000)
            .await
            .expect_err("unknown");
        assert!(matches!(err, StoreError::TokenNotFound), "{err:?}");
        store
            .consume_join_token("token-known", 1_000)
            .await
            .unwrap();
    }

    pub async fn token_duplicate_rejected(db: &TestDb) {
        let store = db.open().await;
        store.create_join_token("token-twice", 2_000).await.unwrap();

        let err = store
            .create_join_token("token-twice", 3_000)
            .await
            .expect_err("duplicate");
        assert!(matches!(err, StoreError::TokenAlreadyExists), "{err:?}");
        assert!(
            !err.to_string().contains("token-twice"),
            "the message hides the token"
        );
    }

    pub async fn token_stored_as_hash(db: &TestDb) {
        let store = db.open().await;
        let token = "c0ffee-secret-token";
        store.create_join_token(token, 2_000).await.unwrap();

        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url())
            .await
            .unwrap();
        let hash: String = sqlx::query_scalar("SELECT token_hash FROM join_tokens")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let expected = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
        assert_eq!(
            hash, expected,
            "the column holds the SHA-256 hex of the token"
        );
        assert!(!hash.contains(token));
    }

    pub async fn token_concurrent_consume_once(db: &TestDb) {
        const CONSUMERS: usize = 16;
        let store = db.open().await;
        store.create_join_token("token-raced", 2_000).await.unwrap();

        let barrier = Arc::new(tokio::sync::Barrier::new(CONSUMERS));
        let tasks: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let store = store.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.consume_join_token("token-raced", 1_000).await
                })
            })
            .collect();

        let mut succeeded = 0;
        for task in tasks {
            let result = tokio::time::timeout(TEST_TIMEOUT, task)
                .await
                .expect("consumer finished in time")
                .expect("consumer task did not panic");
            match result {
                Ok(()) => succeeded += 1,
                Err(StoreError::TokenNotFound) => {}
                Err(other) => panic!("unexpected error from a concurrent consumer: {other:?}"),
            }
        }
        assert_eq!(
            succeeded, 1,
            "exactly one of {CONSUMERS} concurrent consumers succeeds"
        );
    }

    pub async fn token_prune_expired(db: &TestDb) {
        let store = db.open().await;
        store.create_join_token("token-old", 1_000).await.unwrap();
        store.create_join_token("token-new", 3_000).await.unwrap();

        assert_eq!(store.prune_join_tokens(2_000).await.unwrap(), 1);
        store.consume_join_token("token-new", 2_000).await.unwrap();
        let err = store
            .consume_join_token("token-old", 500)
            .await
            .expect_err("pruned");
        assert!(matches!(err, StoreError::TokenNotFound), "{err:?}");
    }

    pub async fn agent_round_trip(db: &TestDb) {
        let store = db.open().await;
        let first = agent(NODE);
        let second = agent("spiffe://example.org/tessera/agent/join_token/00000000000000aa");

        store.upsert_agent(&first).await.unwrap();
        store.upsert_agent(&second).await.unwrap();
        assert_eq!(
            store.get_agent(&first.spiffe_id).await.unwrap(),
            Some(first.clone())
        );

        let listed = store.list_agents().await.unwrap();
        assert_eq!(
            listed,
            vec![second.clone(), first.clone()],
            "ordered by SPIFFE ID"
        );

        let mut renewed = first.clone();
        renewed.x509_svid_serial = "ff".to_owned();
        renewed.x509_svid_expires_at += 3600;
        renewed.last_seen_at += 60;
        renewed.created_at = 0;
        store.upsert_agent(&renewed).await.unwrap();
        let stored = store.get_agent(&first.spiffe_id).await.unwrap().unwrap();
        assert_eq!(stored.x509_svid_serial, "ff");
        assert_eq!(stored.x509_svid_expires_at, renewed.x509_svid_expires_at);
        assert_eq!(stored.last_seen_at, renewed.last_seen_at);
        assert_eq!(
            stored.created_at, first.created_at,
            "upsert keeps the first created_at"
        );

        store
            .set_agent_banned(&first.spiffe_id, true)
            .await
            .unwrap();
        assert!(
            store
                .get_agent(&first.spiffe_id)
                .await
                .unwrap()
                .unwrap()
                .banned
        );
        store
            .set_agent_banned(&first.spiffe_id, false)
            .await
            .unwrap();
        assert!(
            !store
                .get_agent(&first.spiffe_id)
                .await
                .unwrap()
                .unwrap()
                .banned
        );

        store.delete_agent(&first.spiffe_id).await.unwrap();
        assert_eq!(store.get_agent(&first.spiffe_id).await.unwrap(), None);
        assert_eq!(store.list_agents().await.unwrap(), vec![second]);
    }

    pub async fn agent_upsert_keeps_ban(db: &TestDb) {
        let store = db.open().await;
        let node = agent(NODE);
        store.upsert_agent(&node).await.unwrap();
        store.set_agent_banned(&node.spiffe_id, true).await.unwrap();

        store.upsert_agent(&node).await.unwrap();
        let stored = store.get_agent(&node.spiffe_id).await.unwrap().unwrap();
        assert!(stored.banned, "an upsert never lifts a ban");
    }

    pub async fn agent_missing_not_found(db: &TestDb) {
        let store = db.open().await;
        let id = SpiffeId::parse(NODE).unwrap();

        let err = store.delete_agent(&id).await.expect_err("no such agent");
        assert!(
            matches!(&err, StoreError::NotFound { kind: ObjectKind::Agent, id } if id == NODE),
            "{err:?}"
        );
        let err = store
            .set_agent_banned(&id, true)
            .await
            .expect_err("no such agent");
        assert!(
            matches!(
                &err,
                StoreError::NotFound {
                    kind: ObjectKind::Agent,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(NODE), "{err}");
    }

    pub async fn bundle_round_trip(db: &TestDb) {
        let store = db.open().await;
        let local = trust_domain("example.org");
        let partner = trust_domain("partner.example");
        let binary: Vec<u8> = (0..=255).collect();

        assert_eq!(store.get_bundle(&local).await.unwrap(), None);
        let first = store.set_bundle(&local, b"{\"keys\":[]}").await.unwrap();
        let second = store.set_bundle(&partner, &binary).await.unwrap();
        assert!(second > first);
        assert_eq!(
            store.get_bundle(&partner).await.unwrap(),
            Some(binary.clone()),
            "bytes round-trip"
        );

        let replaced = store.set_bundle(&local, b"{\"keys\":[1]}").await.unwrap();
        assert!(replaced > second);
        assert_eq!(
            store.get_bundle(&local).await.unwrap().as_deref(),
            Some(&b"{\"keys\":[1]}"[..])
        );

        let listed = store.list_bundles().await.unwrap();
        assert_eq!(
            listed,
            vec![
                (local.clone(), b"{\"keys\":[1]}".to_vec()),
                (partner.clone(), binary)
            ],
            "ordered by trust domain"
        );

        store.delete_bundle(&partner).await.unwrap();
        assert_eq!(store.get_bundle(&partner).await.unwrap(), None);
        let err = store
            .delete_bundle(&partner)
            .await
            .expect_err("already deleted");
        assert!(
            matches!(&err, StoreError::NotFound { kind: ObjectKind::Bundle, id } if id == "partner.example"),
            "{err:?}"
        );
    }

    pub async fn federation_round_trip(db: &TestDb) {
        let store = db.open().await;
        let partner = trust_domain("partner.example");
        let record = FederationRecord {
            trust_domain: partner.clone(),
            bundle_endpoint_url: "https://127.0.0.1:8443/bundle".to_owned(),
            profile: "https_spiffe".to_owned(),
            endpoint_spiffe_id: "spiffe://partner.example/tessera/server".to_owned(),
            created_at: 0,
            updated_at: 0,
        };

        assert_eq!(store.get_federation(&partner).await.unwrap(), None);
        store.put_federation(&record).await.unwrap();
        let stored = store.get_federation(&partner).await.unwrap().unwrap();
        assert_eq!(stored.bundle_endpoint_url, record.bundle_endpoint_url);
        assert_eq!(stored.profile, record.profile);
        assert_eq!(stored.endpoint_spiffe_id, record.endpoint_spiffe_id);
        assert!(stored.created_at > 0, "created_at is set");

        let mut web = record.clone();
        web.profile = "https_web".to_owned();
        web.endpoint_spiffe_id.clear();
        store.put_federation(&web).await.unwrap();
        let listed = store.list_federations().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].profile, "https_web");
        assert_eq!(
            listed[0].created_at, stored.created_at,
            "replacing keeps created_at"
        );

        assert!(store.delete_federation(&partner).await.unwrap());
        assert!(!store.delete_federation(&partner).await.unwrap());

        let kinds: Vec<(ChangeKind, String)> = store
            .changes_since(0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.kind, c.object_id))
            .collect();
        let name = "partner.example".to_owned();
        assert_eq!(
            kinds,
            vec![
                (ChangeKind::FederationUpdated, name.clone()),
                (ChangeKind::FederationUpdated, name.clone()),
                (ChangeKind::FederationDeleted, name),
            ],
            "federation writes reach the change feed; a delete of nothing does not"
        );
    }

    pub async fn changes_in_write_order(db: &TestDb) {
        let store = db.open().await;
        assert_eq!(store.latest_revision().await.unwrap(), 0);
        assert!(store.changes_since(0, 100).await.unwrap().is_empty());

        let (created, r1) = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap();
        let td = trust_domain("example.org");
        let r2 = store.set_bundle(&td, b"{}").await.unwrap();
        store.upsert_agent(&agent(NODE)).await.unwrap();
        let (_, r4) = store.update_entry(&created).await.unwrap();
        let (_, r5) = store.delete_entry(&created.id).await.unwrap();
        store.delete_agent(&agent(NODE).spiffe_id).await.unwrap();
        let r7 = store.delete_bundle(&td).await.unwrap();

        let changes = store.changes_since(0, 100).await.unwrap();
        let summary: Vec<(ChangeKind, &str)> = changes
            .iter()
            .map(|c| (c.kind, c.object_id.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (ChangeKind::EntryUpserted, created.id.as_str()),
                (ChangeKind::BundleUpdated, "example.org"),
                (ChangeKind::AgentUpdated, NODE),
                (ChangeKind::EntryUpserted, created.id.as_str()),
                (ChangeKind::EntryDeleted, created.id.as_str()),
                (ChangeKind::AgentDeleted, NODE),
                (ChangeKind::BundleDeleted, "example.org"),
            ]
        );

        let revisions: Vec<u64> = changes.iter().map(|c| c.revision).collect();
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "revisions increase: {revisions:?}"
        );
        assert_eq!(revisions[0], r1);
        assert_eq!(revisions[1], r2);
        assert_eq!(revisions[3], r4);
        assert_eq!(revisions[4], r5);
        assert_eq!(revisions[6], r7);
        assert_eq!(store.latest_revision().await.unwrap(), r7);
        assert!(
            changes.iter().all(|c| c.created_at > 0),
            "changes carry their time"
        );
    }

    pub async fn changes_limit_and_resume(db: &TestDb) {
        let store = db.open().await;
        let mut written = Vec::new();
        for uid in 0..5 {
            let selector = format!("unix:uid:{uid}");
            let (_, revision) = store
                .create_entry(&entry(WEB, NODE, &[&selector]))
                .await
                .unwrap();
            written.push(revision);
        }

        let first_page = store.changes_since(0, 2).await.unwrap();
        assert_eq!(
            first_page.iter().map(|c| c.revision).collect::<Vec<_>>(),
            written[..2]
        );

        let rest = store
            .changes_since(first_page[1].revision, 100)
            .await
            .unwrap();
        assert_eq!(
            rest.iter().map(|c| c.revision).collect::<Vec<_>>(),
            written[2..]
        );

        let none = store.changes_since(written[4], 100).await.unwrap();
        assert!(none.is_empty());
    }

    pub async fn changes_prune_keeps_newest(db: &TestDb) {
        let store = db.open().await;
        let mut written = Vec::new();
        for uid in 0..4 {
            let selector = format!("unix:uid:{uid}");
            let (_, revision) = store
                .create_entry(&entry(WEB, NODE, &[&selector]))
                .await
                .unwrap();
            written.push(revision);
        }

        assert_eq!(store.prune_changes(written[2]).await.unwrap(), 2);
        let err = store
            .changes_since(0, 100)
            .await
            .expect_err("a reader at 0 missed changes");
        assert!(
            matches!(err, StoreError::ChangesPruned { after: 0, pruned_through } if pruned_through == written[1]),
            "{err:?}"
        );
        let tail = store.changes_since(written[1], 100).await.unwrap();
        assert_eq!(
            tail.iter().map(|c| c.revision).collect::<Vec<_>>(),
            written[2..]
        );

        // Pruning past the end keeps the newest change.
        assert_eq!(store.prune_changes(u64::MAX).await.unwrap(), 1);
        assert_eq!(store.latest_revision().await.unwrap(), written[3]);
        let newest = store.changes_since(written[2], 100).await.unwrap();
        assert_eq!(newest.len(), 1);

        let (_, next) = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:99"]))
            .await
            .unwrap();
        assert!(next > written[3], "revisions are not reused after pruning");
    }

    /// Several servers write at once while another follows the feed. The
    /// follower requests only revisions above the last one it saw, so a
    /// revision that became visible after a higher one would be skipped.
    pub async fn changes_follow_concurrent_writers(db: &TestDb) {
        const WRITERS: usize = 4;
        const WRITES_EACH: usize = 10;
        let follower = db.open().await;

        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let store = db.open().await;
            writers.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                for write in 0..WRITES_EACH {
                    let selector = format!("unix:uid:{}", writer * 1000 + write);
                    let (_, revision) = store
                        .create_entry(&entry(WEB, NODE, &[&selector]))
                        .await
                        .unwrap();
                    revisions.push(revision);
                }
                revisions
            }));
        }

        let writers_done = std::sync::atomic::AtomicBool::new(false);
        let wait_for_writers = async {
            let mut written = Vec::new();
            for task in writers {
                written.extend(task.await.expect("writer task did not panic"));
            }
            writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
            written
        };
        let follow = async {
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                // Read the flag first: once it is set, an empty page means
                // the follower has read every committed change.
                let done = writers_done.load(std::sync::atomic::Ordering::SeqCst);
                let page = follower.changes_since(after, 7).await.unwrap();
                if done && page.is_empty() {
                    return seen;
                }
                for change in page {
                    assert!(change.revision > after, "{} after {after}", change.revision);
                    after = change.revision;
                    seen.push(change.revision);
                }
                tokio::task::yield_now().await;
            }
        };
        let (mut written, seen) = tokio::time::timeout(TEST_TIMEOUT, async {
            tokio::join!(wait_for_writers, follow)
        })
        .await
        .expect("the writers and the follower finished in time");

        written.sort_unstable();
        assert_eq!(
            seen, written,
            "the follower saw exactly the acknowledged revisions"
        );
    }

    pub async fn reopen_keeps_data(db: &TestDb) {
        let store = db.open().await;
        let created = store
            .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
            .await
            .unwrap()
            .0;
        store.upsert_agent(&agent(NODE)).await.unwrap();
        store
            .create_join_token("token-reopen", 2_000)
            .await
            .unwrap();
        let revision = store.latest_revision().await.unwrap();
        store.close().await;
        drop(store);

        let reopened = db.open().await;
        assert_eq!(
            reopened.get_entry(&created.id).await.unwrap(),
            Some(created)
        );
        assert_eq!(
            reopened.get_agent(&agent(NODE).spiffe_id).await.unwrap(),
            Some(agent(NODE))
        );
        assert_eq!(reopened.latest_revision().await.unwrap(), revision);
        reopened
            .consume_join_token("token-reopen", 1_000)
            .await
            .unwrap();
    }

    pub async fn newer_schema_rejected(db: &TestDb) {
        let store = db.open().await;
        store.close().await;
        drop(store);
        let supported = *db
            .migration_versions()
            .last()
            .expect("the build has migrations");
        let newer = supported + 1;
        db.record_migration(newer).await;

        let err = Store::open(db.url())
            .await
            .expect_err("the newer version is unknown");
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew { database_version, supported_version }
                    if database_version == newer && supported_version == supported
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&format!("version {newer}")), "{message}");
        assert!(
            message.contains(&format!("up to version {supported}")),
            "{message}"
        );
        assert!(message.contains("upgrade the tessera binary"), "{message}");
    }

    /// Several servers that start at once on a new database all open it,
    /// and each migration is recorded once.
    pub async fn concurrent_open_migrates_once(db: &TestDb) {
        const SERVERS: usize = 4;
        let url = db.url().to_owned();
        let tasks: Vec<_> = (0..SERVERS)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::open(&url).await })
            })
            .collect();

        let mut stores: Vec<Store> = Vec::new();
        for task in tasks {
            let opened = tokio::time::timeout(TEST_TIMEOUT, task)
                .await
                .expect("open finished in time")
                .expect("open task did not panic");
            stores.push(opened.unwrap_or_else(|e| panic!("concurrent open failed: {e:?}")));
        }
        let migrations = db.migration_versions().len();
        assert_eq!(
            db.count_rows("_sqlx_migrations").await,
            i64::try_from(migrations).unwrap(),
            "each migration is recorded once"
        );

        let ids: HashSet<_> = write_one_entry_each(&stores).await;
        assert_eq!(ids.len(), SERVERS, "every server can write");
    }

    async fn write_one_entry_each(stores: &[Store]) -> HashSet<EntryId> {
        let mut ids = HashSet::new();
        for (uid, store) in stores.iter().enumerate() {
            let selector = format!("unix:uid:{uid}");
            let created = store
                .create_entry(&entry(WEB, NODE, &[&selector]))
                .await
                .unwrap()
                .0;
            ids.insert(created.id);
        }
        ids
    }
}
