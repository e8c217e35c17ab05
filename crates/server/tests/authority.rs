//! Manual CA rotation through the admin API of a server running in this
//! process: prepare publishes the new authority everywhere the scheduled
//! rotation does, activate switches every signer to it, a step the CA
//! state does not allow changes nothing, and the schedule continues after
//! manual steps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{AgentSvid, TestServer, spiffe_id, trust_domain};
use tessera_proto::admin::{
    ActivateAuthorityRequest, Authority, AuthorityState, GetBundleRequest, ListAuthoritiesRequest,
    PrepareAuthorityRequest,
};
use tessera_proto::agent::{
    BatchNewX509SvidRequest, NewJwtSvidRequest, NewX509SvidParams, RenewAgentRequest,
    SyncEntriesRequest, SyncEntriesResponse,
};
use tessera_proto::types;
use tessera_spiffe::rustls_pki_types::CertificateDer;
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{KeyAlgorithm, PrivateKey, TrustBundle};
use tonic::{Code, Streaming};

/// Upper bound for a pushed change to reach a sync stream.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

async fn list_authorities(server: &TestServer) -> Vec<Authority> {
    server
        .admin()
        .await
        .list_authorities(ListAuthoritiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .authorities
}

async fn prepare(server: &TestServer) -> Authority {
    server
        .admin()
        .await
        .prepare_authority(PrepareAuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .prepared
        .expect("the response names the prepared authority")
}

async fn get_bundle(server: &TestServer) -> types::Bundle {
    server
        .admin()
        .await
        .get_bundle(GetBundleRequest {})
        .await
        .unwrap()
        .into_inner()
}

fn in_state(authorities: &[Authority], state: AuthorityState) -> Vec<&Authority> {
    authorities
        .iter()
        .filter(|a| a.state == state as i32)
        .collect()
}

/// Returns a bundle that contains only the CA certificate of `authority`.
fn bundle_of(authority: &Authority) -> TrustBundle {
    let mut bundle = TrustBundle::new(trust_domain());
    bundle
        .add_x509_authority(CertificateDer::from(authority.x509_certificate.clone()))
        .unwrap();
    bundle
}

fn validates(chain: &[Vec<u8>], bundle: &TrustBundle) -> bool {
    let chain: Vec<CertificateDer<'_>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    validate_x509_svid(&chain, bundle, SystemTime::now()).is_ok()
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

async fn next_message(stream: &mut Streaming<SyncEntriesResponse>) -> SyncEntriesResponse {
    tokio::time::timeout(PUSH_TIMEOUT, stream.message())
        .await
        .expect("a sync message arrives in time")
        .unwrap()
        .expect("the stream is open")
}

/// Signs a workload X.509-SVID for `entry_id` through the agent API.
async fn sign_svid(server: &TestServer, agent: &AgentSvid, entry_id: &str) -> Vec<Vec<u8>> {
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let mut results = server
        .agent(Some(agent))
        .await
        .batch_new_x509_svid(BatchNewX509SvidRequest {
            params: vec![NewX509SvidParams {
                entry_id: entry_id.to_owned(),
                public_key: key.public_key_der(),
            }],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    results
        .remove(0)
        .svid
        .expect("the SVID is signed")
        .cert_chain
}

/// Returns the `kid` in the header of a compact JWT.
fn jwt_key_id(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&json).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn prepare_publishes_new_authority() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let mut stream = open_sync(&server, &agent).await;
    let snapshot = next_message(&mut stream).await.bundle.unwrap();
    assert_eq!(snapshot.x509_authorities.len(), 1);

    let prepared = prepare(&server).await;
    assert_eq!(prepared.state, AuthorityState::Prepared as i32);
    assert!(!prepared.x509_subject_key_id.is_empty());
    assert!(!prepared.jwt_key_id.is_empty());
    assert!(prepared.not_after > prepared.not_before);

    let authorities = list_authorities(&server).await;
    assert_eq!(authorities.len(), 2, "{authorities:?}");
    assert_eq!(in_state(&authorities, AuthorityState::Active).len(), 1);
    assert_eq!(
        in_state(&authorities, AuthorityState::Prepared),
        [&prepared]
    );

    let file = server.bundle();
    assert_eq!(file.x509_authorities().len(), 2);
    assert!(
        file.x509_authorities()
            .iter()
            .any(|c| c.as_ref() == prepared.x509_certificate)
    );
    let published = get_bundle(&server).await;
    assert_eq!(published.x509_authorities.len(), 2);
    assert!(
        published
            .jwt_authorities
            .iter()
            .any(|k| k.key_id == prepared.jwt_key_id)
    );

    let pushed = next_message(&mut stream).await;
    let pushed = pushed.bundle.expect("the change carries the bundle");
    assert!(pushed.x509_authorities.contains(&prepared.x509_certificate));
    assert_eq!(pushed.x509_authorities.len(), 2);
    assert!(pushed.sequence_number > snapshot.sequence_number);
}

#[tokio::test]
async fn prepare_twice_fails_and_keeps_first() {
    let server = TestServer::start().await;
    let first = prepare(&server).await;
    let before = list_authorities(&server).await;

    let status = server
        .admin()
        .await
        .prepare_authority(PrepareAuthorityRequest {})
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains(&first.id), "{}", status.message());
    assert_eq!(list_authorities(&server).await, before);
    assert_eq!(server.bundle().x509_authorities().len(), 2);
}

#[tokio::test]
async fn activate_without_prepare_changes_nothing() {
    let server = TestServer::start().await;
    let authorities = list_authorities(&server).await;
    let bundle = get_bundle(&server).await;
    let file = server.bundle();

    let status = server
        .admin()
        .await
        .activate_authority(ActivateAuthorityRequest {})
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("no authority is prepared"),
        "{}",
        status.message()
    );
    assert_eq!(list_authorities(&server).await, authorities);
    assert_eq!(get_bundle(&server).await, bundle);
    assert_eq!(server.bundle().x509_authorities(), file.x509_authorities());
}

#[tokio::test]
async fn activate_switches_every_signer() {
    let server = TestServer::start().await;
    let agent = server.attest().await;
    let entry = server
        .create_entry(&spiffe_id("/workload"), &agent.spiffe_id)
        .await;
    let old_active = list_authorities(&server).await.remove(0);
    let before = sign_svid(&server, &agent, &entry.id).await;
    let mut stream = open_sync(&server, &agent).await;
    next_message(&mut stream).await;

    let prepared = prepare(&server).await;
    next_message(&mut stream).await;
    let response = server
        .admin()
        .await
        .activate_authority(ActivateAuthorityRequest {})
        .await
        .unwrap()
        .into_inner();

    let activated = response.activated.unwrap();
    let retired = response.retired.unwrap();
    assert_eq!(activated.id, prepared.id);
    assert_eq!(activated.state, AuthorityState::Active as i32);
    assert_eq!(retired.id, old_active.id);
    assert_eq!(retired.state, AuthorityState::Retired as i32);
    let authorities = list_authorities(&server).await;
    assert_eq!(in_state(&authorities, AuthorityState::Prepared).len(), 0);
    assert_eq!(in_state(&authorities, AuthorityState::Active), [&activated]);

    // Workload SVIDs: a new one chains to the new CA only, and the one
    // signed before still validates against the published bundle.
    let after = sign_svid(&server, &agent, &entry.id).await;
    assert!(validates(&after, &bundle_of(&activated)));
    assert!(!validates(&after, &bundle_of(&old_active)));
    assert!(validates(&before, &server.bundle()));

    // The agent API presents a server SVID of the new CA, and the agent's
    // SVID of the old CA still renews.
    let mut client = server
        .agent_trusting(Some(&agent), bundle_of(&activated))
        .await;
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let renewed = client
        .renew_agent(RenewAgentRequest {
            public_key: key.public_key_der(),
        })
        .await
        .expect("an agent SVID of the retired CA renews")
        .into_inner()
        .svid
        .unwrap();
    assert!(validates(&renewed.cert_chain, &bundle_of(&activated)));

    // JWT-SVIDs carry the new authority's key id. The renewal replaced
    // the agent's current SVID, so the renewed one makes the call.
    let renewed_agent = AgentSvid {
        spiffe_id: renewed.spiffe_id,
        chain: renewed.cert_chain.into_iter().map(Into::into).collect(),
        key,
    };
    let token = server
        .agent(Some(&renewed_agent))
        .await
        .new_jwt_svid(NewJwtSvidRequest {
            entry_id: entry.id.clone(),
            audience: vec!["audience".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert_eq!(jwt_key_id(&token), activated.jwt_key_id);

    // The sync stream opened before the rotation still delivers changes.
    server
        .create_entry(&spiffe_id("/after-rotation"), &agent.spiffe_id)
        .await;
    let change = next_message(&mut stream).await;
    assert_eq!(change.upserted.len(), 1);
}

fn unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_continues_after_manual_steps() {
    // One minute is the shortest CA lifetime the server accepts. The
    // manually activated authority is due for a successor at half of its
    // lifetime, about 25 s from now.
    let server = TestServer::start_with(|raw| {
        raw.ca.ttl = Some("1m".into());
        raw.svid.x509_ttl = Some("20s".into());
        raw.svid.jwt_ttl = Some("20s".into());
    })
    .await;
    let first = list_authorities(&server).await.remove(0);
    prepare(&server).await;
    let activated = server
        .admin()
        .await
        .activate_authority(ActivateAuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .activated
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let successor = loop {
        let authorities = list_authorities(&server).await;
        if let Some(prepared) = in_state(&authorities, AuthorityState::Prepared).pop() {
            assert_eq!(in_state(&authorities, AuthorityState::Active), [&activated]);
            break prepared.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no successor was prepared: {authorities:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The successor is created at half of the activated authority's
    // lifetime. Authorities are backdated by 10 s and times are whole
    // seconds, hence the 1 s margin.
    let backdate = Duration::from_secs(10);
    let created = unix(successor.not_before) + backdate;
    let activated_life = activated.not_after - activated.not_before;
    let due = unix(activated.not_before + activated_life / 2);
    assert!(
        created + Duration::from_secs(1) >= due,
        "prepared at {created:?}, before the schedule's {due:?}"
    );
    // A schedule left from before the manual steps would have waited for
    // the first authority's activation time, at five sixths of its life.
    let first_life = first.not_after - first.not_before;
    let stale = unix(first.not_before + first_life * 5 / 6);
    assert!(
        created < stale,
        "prepared at {created:?}, on the schedule of the first authority ({stale:?})"
    );
}
