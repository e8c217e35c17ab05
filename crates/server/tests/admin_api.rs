//! The admin API of a server running in this process: entry validation and
//! storage, join tokens, agents, bundle, health, federation input checks
//! and the socket itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TestServer, entry, spiffe_id};
use tessera_proto::admin::{
    CreateEntriesRequest, CreateFederationRequest, CreateJoinTokenRequest, DeleteEntriesRequest,
    FederationRelationship, GetAgentRequest, GetBundleRequest, GetEntryRequest, HealthRequest,
    ListEntriesRequest, ListFederationsRequest, SetFederatedBundleRequest, UpdateEntryRequest,
};
use tessera_proto::types;
use tonic::Code;

const AGENT: &str = "spiffe://example.org/tessera/agent/join_token/0011223344556677";

async fn list_spiffe_ids(server: &TestServer) -> Vec<String> {
    let response = server
        .admin()
        .await
        .list_entries(ListEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    response.entries.into_iter().map(|e| e.spiffe_id).collect()
}

#[tokio::test]
async fn admin_socket_mode_0600() {
    let server = TestServer::start().await;

    let mode = std::fs::metadata(&server.admin_socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn shutdown_removes_socket_and_address() {
    let mut server = TestServer::start().await;
    let socket = server.admin_socket.clone();
    let address_file = server.dir.path().join(tessera_server::AGENT_API_ADDR_FILE);
    assert!(socket.exists());
    assert!(address_file.exists());

    server.stop().await.unwrap();
    assert!(server.dir.path().exists());
    assert!(!socket.exists());
    assert!(!address_file.exists());
    assert!(server.dir.path().join("bundle.pem").exists());
}

#[tokio::test]
async fn create_entry_stored_and_listed() {
    let server = TestServer::start().await;
    let created = server.create_entry(&spiffe_id("/web"), AGENT).await;

    assert_eq!(created.id.len(), 36);
    assert!(created.created_at > 0);
    let fetched = server
        .admin()
        .await
        .get_entry(GetEntryRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);
    assert_eq!(list_spiffe_ids(&server).await, [spiffe_id("/web")]);
}

#[tokio::test]
async fn create_malformed_spiffe_id_rejected() {
    let server = TestServer::start().await;
    let bad = entry("spiffe://example.org/bad path", AGENT);
    let response = server
        .admin()
        .await
        .create_entries(CreateEntriesRequest { entries: vec![bad] })
        .await
        .unwrap()
        .into_inner();

    let status = response.results[0].status.clone().unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("bad path"), "{}", status.message);
    assert!(response.results[0].entry.is_none());
    assert!(list_spiffe_ids(&server).await.is_empty());
}

#[tokio::test]
async fn create_malformed_selector_rejected() {
    let server = TestServer::start().await;
    let mut bad = entry(&spiffe_id("/web"), AGENT);
    bad.selectors = vec![types::Selector {
        r#type: "Unix!".into(),
        value: "uid:1000".into(),
    }];
    let response = server
        .admin()
        .await
        .create_entries(CreateEntriesRequest { entries: vec![bad] })
        .await
        .unwrap()
        .into_inner();

    let status = response.results[0].status.clone().unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("Unix!"), "{}", status.message);
    assert!(list_spiffe_ids(&server).await.is_empty());
}

#[tokio::test]
async fn create_foreign_trust_domain_rejected() {
    let server = TestServer::start().await;
    let cases = [
        entry("spiffe://other.org/web", AGENT),
        entry(&spiffe_id("/web"), "spiffe://other.org/agent"),
    ];
    for bad in cases {
        let response = server
            .admin()
            .await
            .create_entries(CreateEntriesRequest {
                entries: vec![bad.clone()],
            })
            .await
            .unwrap()
            .into_inner();
        let status = response.results[0].status.clone().unwrap();
        assert_eq!(status.code, Code::InvalidArgument as i32, "{bad:?}");
        assert!(status.message.contains("other.org"), "{}", status.message);
        assert!(
            status.message.contains("trust domain example.org"),
            "{}",
            status.message
        );
    }
    assert!(list_spiffe_ids(&server).await.is_empty());
}

#[tokio::test]
async fn create_unmatchable_entry_rejected() {
    let server = TestServer::start().await;
    let mut own_federation = entry(&spiffe_id("/web"), AGENT);
    own_federation.federates_with = vec!["example.org".into()];
    let mut named_uid = entry(&spiffe_id("/web"), AGENT);
    named_uid.selectors = vec![types::Selector {
        r#type: "unix".into(),
        value: "uid:alice".into(),
    }];
    let cases = [
        (own_federation, "own trust domain example.org"),
        (named_uid, "unix:uid:alice"),
    ];
    for (bad, expected) in cases {
        let response = server
            .admin()
            .await
            .create_entries(CreateEntriesRequest { entries: vec![bad] })
            .await
            .unwrap()
            .into_inner();
        let status = response.results[0].status.clone().unwrap();
        assert_eq!(status.code, Code::InvalidArgument as i32, "{expected}");
        assert!(status.message.contains(expected), "{}", status.message);
    }
    assert!(list_spiffe_ids(&server).await.is_empty());
}

#[tokio::test]
async fn create_reserved_spiffe_id_rejected() {
    let server = TestServer::start().await;
    let response = server
        .admin()
        .await
        .create_entries(CreateEntriesRequest {
            entries: vec![entry(&spiffe_id("/tessera/server"), AGENT)],
        })
        .await
        .unwrap()
        .into_inner();

    let status = response.results[0].status.clone().unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("reserved"), "{}", status.message);
    assert!(list_spiffe_ids(&server).await.is_empty());
}

#[tokio::test]
async fn create_batch_stores_only_valid_entries() {
    let server = TestServer::start().await;
    let entries = vec![
        entry(&spiffe_id("/good-1"), AGENT),
        entry("not a spiffe id", AGENT),
        entry(&spiffe_id("/good-2"), AGENT),
    ];
    let response = server
        .admin()
        .await
        .create_entries(CreateEntriesRequest { entries })
        .await
        .unwrap()
        .into_inner();

    let codes: Vec<i32> = response
        .results
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(codes, [0, Code::InvalidArgument as i32, 0]);
    let mut stored = list_spiffe_ids(&server).await;
    stored.sort();
    assert_eq!(stored, [spiffe_id("/good-1"), spiffe_id("/good-2")]);
}

#[tokio::test]
async fn create_duplicate_entry_already_exists() {
    let server = TestServer::start().await;
    server.create_entry(&spiffe_id("/web"), AGENT).await;
    let response = server
        .admin()
        .await
        .create_entries(CreateEntriesRequest {
            entries: vec![entry(&spiffe_id("/web"), AGENT)],
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        response.results[0].status.as_ref().unwrap().code,
        Code::AlreadyExists as i32
    );
    assert_eq!(list_spiffe_ids(&server).await.len(), 1);
}

#[tokio::test]
async fn create_over_batch_limit_rejected() {
    let server = TestServer::start().await;
    let entries = (0..1001)
        .map(|i| entry(&spiffe_id(&format!("/w{i}")), AGENT))
        .collect();
    let status = server
        .admin()
        .await
        .create_entries(CreateEntriesRequest { entries })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("1001"), "{}", status.message());
    assert!(status.message().contains("1000"), "{}", status.message());
    assert!(list_spiffe_ids(&server).await.is_empty());
}

#[tokio::test]
async fn update_entry_checks_revision() {
    let server = TestServer::start().await;
    let created = server.create_entry(&spiffe_id("/web"), AGENT).await;
    let mut admin = server.admin().await;

    let mut change = created.clone();
    change.hint = "first".into();
    let updated = admin
        .update_entry(UpdateEntryRequest {
            entry: Some(change),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.hint, "first");
    assert_eq!(updated.revision, created.revision + 1);
    assert_eq!(updated.created_at, created.created_at);

    let mut stale = created.clone();
    stale.hint = "stale".into();
    let status = admin
        .update_entry(UpdateEntryRequest { entry: Some(stale) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    let stored = admin
        .get_entry(GetEntryRequest { id: created.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.hint, "first");
}

#[tokio::test]
async fn update_invalid_entry_changes_nothing() {
    let server = TestServer::start().await;
    let created = server.create_entry(&spiffe_id("/web"), AGENT).await;
    let mut admin = server.admin().await;

    let mut bad = created.clone();
    bad.dns_names = vec!["not a dns name!".into()];
    let status = admin
        .update_entry(UpdateEntryRequest { entry: Some(bad) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("not a dns name!"),
        "{}",
        status.message()
    );
    let stored = admin
        .get_entry(GetEntryRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, created);
}

#[tokio::test]
async fn delete_entries_reports_each_id() {
    let server = TestServer::start().await;
    let created = server.create_entry(&spiffe_id("/web"), AGENT).await;
    let missing = "00000000-0000-4000-8000-000000000000".to_owned();
    let response = server
        .admin()
        .await
        .delete_entries(DeleteEntriesRequest {
            ids: vec![created.id.clone(), missing.clone(), "bad id".into()],
        })
        .await
        .unwrap()
        .into_inner();

    let codes: Vec<(String, i32)> = response
        .results
        .into_iter()
        .map(|r| (r.id, r.status.unwrap().code))
        .collect();
    assert_eq!(
        codes,
        [
            (created.id, 0),
            (missing, Code::NotFound as i32),
            ("bad id".to_owned(), Code::InvalidArgument as i32),
        ]
    );
    assert!(list_spiffe_ids(&server).await.is_empty());
}

#[tokio::test]
async fn list_entries_filters_and_pages() {
    let server = TestServer::start().await;
    for i in 0..5 {
        server
            .create_entry(&spiffe_id(&format!("/w{i}")), AGENT)
            .await;
    }
    server
        .create_entry(&spiffe_id("/other"), &spiffe_id("/elsewhere"))
        .await;
    let mut admin = server.admin().await;

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_entries(ListEntriesRequest {
                by_parent_id: AGENT.into(),
                page_size: 2,
                page_token,
                ..ListEntriesRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 2);
        seen.extend(page.entries.into_iter().map(|e| e.spiffe_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    seen.sort();
    let expected: Vec<String> = (0..5).map(|i| spiffe_id(&format!("/w{i}"))).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn join_token_returns_hashed_agent_id() {
    let server = TestServer::start().await;
    let token = server
        .admin()
        .await
        .create_join_token(CreateJoinTokenRequest::default())
        .await
        .unwrap()
        .into_inner();

    assert_eq!(token.token.len(), 64);
    assert!(token.token.chars().all(|c| c.is_ascii_hexdigit()));
    let prefix = spiffe_id("/tessera/agent/join_token/");
    let suffix = token.agent_id.strip_prefix(&prefix).unwrap();
    assert_eq!(suffix.len(), 16);
    assert!(!token.agent_id.contains(&token.token));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (token.expires_at - now - 600).abs() <= 5,
        "expires_at {}",
        token.expires_at
    );
}

#[tokio::test]
async fn join_token_negative_ttl_rejected() {
    let server = TestServer::start().await;
    let status = server
        .admin()
        .await
        .create_join_token(CreateJoinTokenRequest {
            ttl: -5,
            ..CreateJoinTokenRequest::default()
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("-5"), "{}", status.message());
}

#[tokio::test]
async fn get_agent_unknown_not_found() {
    let server = TestServer::start().await;
    let status = server
        .admin()
        .await
        .get_agent(GetAgentRequest {
            spiffe_id: AGENT.into(),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn get_bundle_matches_bundle_file() {
    let server = TestServer::start().await;
    let bundle = server
        .admin()
        .await
        .get_bundle(GetBundleRequest {})
        .await
        .unwrap()
        .into_inner();

    let file = server.bundle();
    assert_eq!(bundle.trust_domain, "example.org");
    let from_file: Vec<Vec<u8>> = file.x509_authorities().iter().map(|c| c.to_vec()).collect();
    assert_eq!(bundle.x509_authorities, from_file);
    assert!(!bundle.jwt_authorities.is_empty());
}

#[tokio::test]
async fn health_reports_checks() {
    let server = TestServer::start().await;
    let health = server
        .admin()
        .await
        .health(HealthRequest {})
        .await
        .unwrap()
        .into_inner();

    assert_eq!(health.status, "serving");
    assert_eq!(health.trust_domain, "example.org");
    assert!(
        health.checks.iter().any(|c| c == "datastore: ok"),
        "{:?}",
        health.checks
    );
    assert!(
        health.checks.iter().any(|c| c.starts_with("ca: ok")),
        "{:?}",
        health.checks
    );
}

#[tokio::test]
async fn second_server_same_socket_fails() {
    let server = TestServer::start().await;
    let admin_socket = server.admin_socket.clone();
    let other_dir = tempfile::Builder::new().prefix("tsrv").tempdir().unwrap();
    let raw = tessera_server::RawConfig {
        trust_domain: Some("example.org".into()),
        data_dir: Some(other_dir.path().to_path_buf()),
        bind_address: Some("127.0.0.1:0".into()),
        admin_socket: Some(admin_socket.clone()),
        ..tessera_server::RawConfig::default()
    };
    let config = tessera_server::ServerConfig::resolve(raw).unwrap();

    let err = tessera_server::run(config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, tessera_server::ServerError::AdminSocketInUse { .. }),
        "{err}"
    );
    assert!(admin_socket.exists());
    server.admin().await.health(HealthRequest {}).await.unwrap();
}

#[tokio::test]
async fn restart_keeps_entries_and_ca() {
    let mut server = TestServer::start().await;
    let created = server.create_entry(&spiffe_id("/web"), AGENT).await;
    let bundle_before = server.bundle();
    server.stop().await.unwrap();

    server.restart().await;
    let fetched = server
        .admin()
        .await
        .get_entry(GetEntryRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);
    assert_eq!(
        server.bundle().x509_authorities(),
        bundle_before.x509_authorities()
    );
}

fn peer_relationship(url: &str) -> FederationRelationship {
    FederationRelationship {
        trust_domain: "peer.test".into(),
        bundle_endpoint_url: url.into(),
        profile: "https_spiffe".into(),
        ..FederationRelationship::default()
    }
}

#[tokio::test]
async fn federated_bundle_needs_relationship() {
    let server = TestServer::start().await;
    let peer = TestServer::start_with(|raw| raw.trust_domain = Some("peer.test".into())).await;
    let bundle = peer.bundle_pem();

    let status = server
        .admin()
        .await
        .set_federated_bundle(SetFederatedBundleRequest {
            trust_domain: "peer.test".into(),
            bundle: bundle.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("tessera federation create"),
        "{}",
        status.message()
    );

    // Nothing listens on port 9 of loopback, so the refresh task keeps
    // the bootstrap bundle.
    server
        .admin()
        .await
        .create_federation(CreateFederationRequest {
            relationship: Some(peer_relationship("https://127.0.0.1:9/")),
            trust_bundle: bundle.clone(),
        })
        .await
        .unwrap();
    let stored = server
        .admin()
        .await
        .set_federated_bundle(SetFederatedBundleRequest {
            trust_domain: "peer.test".into(),
            bundle,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.x509_authorities.len(), 1);
}

#[tokio::test]
async fn federation_rejects_bad_url_and_empty_bundle() {
    let server = TestServer::start().await;
    let cases = [
        (
            "https://127.0.0.1:99999/",
            b"".to_vec(),
            "between 1 and 65535",
        ),
        (
            "https://user:secret@127.0.0.1:8443/",
            Vec::new(),
            "user information",
        ),
        (
            "https://127.0.0.1:8443/",
            br#"{"keys": []}"#.to_vec(),
            "no authorities",
        ),
    ];
    for (url, bundle, expected) in cases {
        let status = server
            .admin()
            .await
            .create_federation(CreateFederationRequest {
                relationship: Some(peer_relationship(url)),
                trust_bundle: bundle,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{url}");
        assert!(status.message().contains(expected), "{}", status.message());
    }
    let listed = server
        .admin()
        .await
        .list_federations(ListFederationsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.relationships.is_empty());
}
