//! The agent API of a server running in this process, driven over mTLS:
//! attestation, renewal, SVID signing and the entry sync stream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::time::Duration;

use common::{
    AgentSvid, TestServer, attest_request, entry, foreign_svid, spiffe_id, validate_chain,
};
use tessera_proto::admin::{
    BanAgentRequest, CreateEntriesRequest, CreateJoinTokenRequest, DeleteEntriesRequest,
    EvictAgentRequest, GetAgentRequest,
};
use tessera_proto::agent::{
    BatchNewX509SvidRequest, NewJwtSvidRequest, NewX509SvidParams, RenewAgentRequest,
    SyncEntriesRequest, SyncEntriesResponse,
};
use tessera_spiffe::{KeyAlgorithm, PrivateKey};
use tonic::{Code, Streaming};

/// Upper bound for a pushed change to reach a sync stream.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

async fn next_message(stream: &mut Streaming<SyncEntriesResponse>) -> SyncEntriesResponse {
    tokio::time::timeout(PUSH_TIMEOUT, stream.message())
        .await
        .expect("a sync message arrives in time")
        .unwrap()
        .expect("the stream is open")
}

async fn open_sync(server: &TestServer, agent: &AgentSvid) -> Streaming<SyncEntriesResponse> {
    server
        .agent(Some(agent))
        .await
        .sync_entries(SyncEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
}

fn svid_params(entry_id: &str) -> NewX509SvidParams {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    NewX509SvidParams {
        entry_id: entry_id.into(),
        public_key: key.public_key_der(),
    }
}

#[tokio::test]
async fn attest_returns_valid_agent_svid() {
    let server = TestServer::start().await;
    let agent = server.attest().await;

    let chain: Vec<Vec<u8>> = agent.chain.iter().map(|c| c.to_vec()).collect();
    let id = validate_chain(&chain, &server.bundle());
    assert_eq!(id.as_str(), agent.spiffe_id);
    let record = server
        .admin()
        .await
        .get_agent(GetAgentRequest {
            spiffe_id: agent.spiffe_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.attestation_type, "join_token");
    assert!(!record.banned);
    assert!(record.selectors.is_empty());
    assert!(!record.x509_svid_serial.is_empty());
}

#[tokio::test]
async fn attest_reused_token_rejected() {
    let server = TestServer::start().await;
    let token = server
        .admin()
        .await
        .create_join_token(CreateJoinTokenRequest::default())
        .await
        .unwrap()
        .into_inner();
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let mut client = server.agent(None).await;
    client
        .attest_agent(attest_request(&token.token, &key))
        .await
        .unwrap();

    let status = client
        .attest_agent(attest_request(&token.token, &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "join token not found or already used");
}

#[tokio::test]
async fn attest_unknown_token_rejected() {
    let server = TestServer::start().await;
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let status = server
        .agent(None)
        .await
        .attest_agent(attest_request("0badc0de", &key))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(!status.message().contains("0badc0de"));
}

#[tokio::test]
async fn attest_expired_token_rejected() {
    let server = TestServer::start().await;
    let token = server
        .admin()
        .await
        .create_join_token(CreateJoinTokenRequest {
            ttl: 1,
            ..CreateJoinTokenRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();

    let status = server
        .agent(None)
        .await
        .attest_agent(attest_request(&token.token, &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "join token expired");
}

#[tokio::test]
async fn attest_unknown_type_rejected() {
    let server = TestServer::start().await;
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let mut request = attest_request("token", &key);
    request.data.as_mut().unwrap().r#type = "aws_iid".into();

    let status = server
        .agent(None)
        .await
        .attest_agent(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("aws_iid"), "{}", status.message());
    assert!(
        status.message().contains("join_token"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn attest_bad_public_key_keeps_token() {
    let server = TestServer::start().await;
    let token = server
        .admin()
        .await
        .create_join_token(CreateJoinTokenRequest::default())
        .await
        .unwrap()
        .into_inner();
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let mut bad = attest_request(&token.token, &key);
    bad.public_key = b"not a key".to_vec();
    let mut client = server.agent(None).await;

    let status = client.attest_agent(bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    client
        .attest_agent(attest_request(&token.token, &key))
        .await
        .unwrap();
}

#[tokio::test]
async fn calls_without_client_cert_unauthenticated() {
    let server = TestServer::start().await;
    let mut client = server.agent(None).await;

    let status = client
        .batch_new_x509_svid(BatchNewX509SvidRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = client
        .sync_entries(SyncEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn batch_svid_signs_authorized_entry() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let entry = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;

    let response = server
        .agent(Some(&agent))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest {
            params: vec![svid_params(&entry.id)],
        })
        .await
        .unwrap()
        .into_inner();
    let result = &response.results[0];
    assert_eq!(result.status.as_ref().unwrap().code, 0);
    let svid = result.svid.as_ref().unwrap();
    assert_eq!(svid.spiffe_id, spiffe_id("/web"));
    assert_eq!(
        validate_chain(&svid.cert_chain, &server.bundle()).as_str(),
        spiffe_id("/web")
    );
}

#[tokio::test]
async fn batch_svid_unauthorized_entry_rejected() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let other = server
        .create_entry(
            &spiffe_id("/db"),
            &spiffe_id("/tessera/agent/join_token/ffffffffffffffff"),
        )
        .await;
    let mine = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;

    let response = server
        .agent(Some(&agent))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest {
            params: vec![svid_params(&other.id), svid_params(&mine.id)],
        })
        .await
        .unwrap()
        .into_inner();
    let denied = &response.results[0];
    let status = denied.status.as_ref().unwrap();
    assert_eq!(status.code, Code::PermissionDenied as i32);
    assert_eq!(
        status.message,
        format!(
            "entry {} is not authorized for agent {}",
            other.id, agent.spiffe_id
        )
    );
    assert!(denied.svid.is_none());
    assert_eq!(response.results[1].status.as_ref().unwrap().code, 0);
}

#[tokio::test]
async fn batch_svid_over_limit_rejected() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let params = (0..501)
        .map(|_| NewX509SvidParams {
            entry_id: "x".into(),
            public_key: vec![1],
        })
        .collect();

    let status = server
        .agent(Some(&agent))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest { params })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("501"), "{}", status.message());
    assert!(status.message().contains("500"), "{}", status.message());
}

#[tokio::test]
async fn nested_entry_authorized() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    server
        .create_entry(&spiffe_id("/ca"), &agent.spiffe_id)
        .await;
    let nested = server
        .create_entry(&spiffe_id("/leaf"), &spiffe_id("/ca"))
        .await;

    let response = server
        .agent(Some(&agent))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest {
            params: vec![svid_params(&nested.id)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results[0].status.as_ref().unwrap().code, 0);
}

#[tokio::test]
async fn jwt_svid_minted_for_authorized_entry() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let entry = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;
    let mut client = server.agent(Some(&agent)).await;

    let response = client
        .new_jwt_svid(NewJwtSvidRequest {
            entry_id: entry.id.clone(),
            audience: vec!["db".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let bundle = server.jwt_bundle().await;
    let now = std::time::SystemTime::now();
    let verified =
        tessera_spiffe::jwt::validate_jwt_svid(&response.token, "db", &bundle, now).unwrap();
    assert_eq!(verified.spiffe_id().as_str(), spiffe_id("/web"));
    assert_eq!(response.expires_at - response.issued_at, 300);

    let status = client
        .new_jwt_svid(NewJwtSvidRequest {
            entry_id: entry.id,
            audience: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn renew_agent_records_new_serial() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let mut client = server.agent(Some(&agent)).await;

    let renewed = client
        .renew_agent(RenewAgentRequest {
            public_key: key.public_key_der(),
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(renewed.spiffe_id, agent.spiffe_id);

    let status = client
        .renew_agent(RenewAgentRequest {
            public_key: key.public_key_der(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("not its current SVID"),
        "{}",
        status.message()
    );

    let renewed_agent = AgentSvid {
        spiffe_id: renewed.spiffe_id,
        chain: renewed.cert_chain.into_iter().map(Into::into).collect(),
        key,
    };
    let next_key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    server
        .agent(Some(&renewed_agent))
        .await
        .renew_agent(RenewAgentRequest {
            public_key: next_key.public_key_der(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn sync_pushes_created_and_deleted_entry() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let existing = server
        .create_entry(&spiffe_id("/existing"), &agent.spiffe_id)
        .await;
    let mut stream = open_sync(&server, &agent).await;

    let snapshot = next_message(&mut stream).await;
    assert!(snapshot.snapshot);
    assert!(snapshot.complete);
    assert!(snapshot.bundle.is_some());
    let ids: Vec<&str> = snapshot.upserted.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [existing.id.as_str()]);

    let created = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;
    let change = next_message(&mut stream).await;
    assert!(!change.snapshot);
    assert!(change.complete);
    let ids: Vec<&str> = change.upserted.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [created.id.as_str()]);
    assert!(change.revision >= snapshot.revision);

    server
        .admin()
        .await
        .delete_entries(DeleteEntriesRequest {
            ids: vec![created.id.clone()],
        })
        .await
        .unwrap();
    let removal = next_message(&mut stream).await;
    assert_eq!(removal.removed_entry_ids, [created.id]);
    assert!(removal.upserted.is_empty());
}

#[tokio::test]
async fn sync_skips_other_agents_entries() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let mut stream = open_sync(&server, &agent).await;
    next_message(&mut stream).await;

    server
        .create_entry(
            &spiffe_id("/db"),
            &spiffe_id("/tessera/agent/join_token/ffffffffffffffff"),
        )
        .await;
    let mine = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;

    let change = next_message(&mut stream).await;
    let ids: Vec<&str> = change.upserted.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [mine.id.as_str()]);
}

#[tokio::test]
async fn sync_reparented_entry_removed() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let created = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;
    let mut stream = open_sync(&server, &agent).await;
    next_message(&mut stream).await;

    let mut moved = created.clone();
    moved.parent_id = spiffe_id("/tessera/agent/join_token/ffffffffffffffff");
    server
        .admin()
        .await
        .update_entry(tessera_proto::admin::UpdateEntryRequest { entry: Some(moved) })
        .await
        .unwrap();

    let change = next_message(&mut stream).await;
    assert_eq!(change.removed_entry_ids, [created.id]);
}

#[tokio::test]
async fn evict_ends_sync_stream() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let mut stream = open_sync(&server, &agent).await;
    next_message(&mut stream).await;

    server
        .admin()
        .await
        .evict_agent(EvictAgentRequest {
            spiffe_id: agent.spiffe_id.clone(),
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(PUSH_TIMEOUT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("evicted"), "{}", status.message());

    let status = server
        .agent(Some(&agent))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn banned_agent_rejected() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let mut stream = open_sync(&server, &agent).await;
    next_message(&mut stream).await;

    server
        .admin()
        .await
        .ban_agent(BanAgentRequest {
            spiffe_id: agent.spiffe_id.clone(),
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(PUSH_TIMEOUT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let status = server
        .agent(Some(&agent))
        .await
        .renew_agent(RenewAgentRequest {
            public_key: key.public_key_der(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("banned"), "{}", status.message());
}

#[tokio::test]
async fn token_alias_authorizes_children() {
    let server = TestServer::start().await;
    let token = server
        .admin()
        .await
        .create_join_token(CreateJoinTokenRequest {
            agent_alias: spiffe_id("/node/web-1"),
            ..CreateJoinTokenRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let child = server
        .create_entry(&spiffe_id("/web"), &spiffe_id("/node/web-1"))
        .await;
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let svid = server
        .agent(None)
        .await
        .attest_agent(attest_request(&token.token, &key))
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    let agent = AgentSvid {
        spiffe_id: svid.spiffe_id,
        chain: svid.cert_chain.into_iter().map(Into::into).collect(),
        key,
    };

    let response = server
        .agent(Some(&agent))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest {
            params: vec![svid_params(&child.id)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results[0].status.as_ref().unwrap().code, 0);
}

#[tokio::test]
async fn entry_create_batch_pushed_once() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let mut stream = open_sync(&server, &agent).await;
    next_message(&mut stream).await;

    let entries = vec![
        entry(&spiffe_id("/a"), &agent.spiffe_id),
        entry(&spiffe_id("/b"), &agent.spiffe_id),
    ];
    server
        .admin()
        .await
        .create_entries(CreateEntriesRequest { entries })
        .await
        .unwrap();

    let change = next_message(&mut stream).await;
    assert_eq!(change.upserted.len(), 2);
}

#[tokio::test]
async fn tls12_client_served() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let entry = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;

    let response = server
        .agent_with_versions(Some(&agent), &[&rustls::version::TLS12])
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest {
            params: vec![svid_params(&entry.id)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results[0].status.as_ref().unwrap().code, 0);
}

#[tokio::test]
async fn foreign_ca_client_cert_rejected() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let entry = server
        .create_entry(&spiffe_id("/web"), &agent.spiffe_id)
        .await;
    let impostor = foreign_svid(&agent.spiffe_id);

    // With TLS 1.3 the client finishes its side of the handshake before the
    // server checks the certificate, so the rejection shows on the first call.
    let status = server
        .agent(Some(&impostor))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest {
            params: vec![svid_params(&entry.id)],
        })
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert_ne!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn rotation_pushes_bundle_to_stream() {
    // The shortest CA lifetime is 1m, so a new authority is prepared and
    // published about 30s after start.
    let server = TestServer::start_with(|raw| {
        raw.ca.ttl = Some("1m".into());
        raw.svid.x509_ttl = Some("50s".into());
        raw.svid.jwt_ttl = Some("10s".into());
    })
    .await;
    let agent = server.attest().await;
    let mut stream = open_sync(&server, &agent).await;
    let snapshot = next_message(&mut stream).await;
    let first = snapshot.bundle.unwrap();
    assert_eq!(first.x509_authorities.len(), 1);

    let change = tokio::time::timeout(Duration::from_secs(45), stream.message())
        .await
        .expect("a bundle change arrives within 45 seconds")
        .unwrap()
        .unwrap();
    let bundle = change.bundle.expect("the change carries the bundle");
    assert_eq!(bundle.x509_authorities.len(), 2);
    assert!(bundle.sequence_number > first.sequence_number);
    assert!(change.complete);
    assert_eq!(server.bundle().x509_authorities().len(), 2);
}

#[tokio::test]
async fn sync_ends_when_agent_svid_expires() {
    let server = TestServer::start_with(|raw| {
        raw.svid.x509_ttl = Some("2s".into());
    })
    .await;
    let agent = server.attest().await;
    let mut stream = open_sync(&server, &agent).await;
    next_message(&mut stream).await;

    let status = tokio::time::timeout(PUSH_TIMEOUT, stream.message())
        .await
        .expect("the stream ends within the timeout")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("expired"), "{}", status.message());
}
