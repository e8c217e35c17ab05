//! End-to-end tests of JWT-SVIDs: the CLI's fetch and validate round trip,
//! and ValidateJWTSVID rejecting tokens crafted to get past a careless
//! validator (alg none, HS256 with the public key as secret, unknown key
//! ID, foreign signature, edited payload, expiry).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests panic on failure"
)]

mod common;

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Cluster, Options, spiffe_id, uid_selector, workload};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tessera_proto::workload::{JwtBundlesRequest, JwtsvidRequest, ValidateJwtsvidRequest};
use tonic::transport::Channel;

type Client = tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient<Channel>;

const AUDIENCE: &str = "e2e-audience";

/// Finds the first string in `json` that has the shape of a compact JWS.
fn find_jwt(json: &Value) -> Option<String> {
    match json {
        Value::String(s) if s.starts_with("eyJ") && s.split('.').count() == 3 => Some(s.clone()),
        Value::Array(items) => items.iter().find_map(find_jwt),
        Value::Object(map) => map.values().find_map(find_jwt),
        _ => None,
    }
}

fn decode_part(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .expect("a JWT part is base64url");
    serde_json::from_slice(&bytes).expect("a JWT part is JSON")
}

fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

async fn fetch_token(client: &mut Client) -> String {
    let response = client
        .fetch_jwtsvid(workload::request(JwtsvidRequest {
            audience: vec![AUDIENCE.into()],
            spiffe_id: String::new(),
        }))
        .await
        .expect("FetchJWTSVID")
        .into_inner();
    response.svids[0].svid.clone()
}

async fn validate(client: &mut Client, token: &str) -> Result<String, tonic::Status> {
    client
        .validate_jwtsvid(workload::request(ValidateJwtsvidRequest {
            audience: AUDIENCE.into(),
            svid: token.into(),
        }))
        .await
        .map(|response| response.into_inner().spiffe_id)
}

/// Signs `claims` with a freshly generated P-256 key that no bundle trusts.
fn sign_with_foreign_key(kid: &str, claims: &Value) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".into());
    let encoding = EncodingKey::from_ec_der(&key.serialize_der());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

#[test]
fn jwt_fetch_validate_round_trip() {
    let cluster = Cluster::start();
    let id = spiffe_id("/workload/jwt");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);

    let fetched = cluster
        .tessera(&["jwt", "fetch", "--audience", AUDIENCE, "--output", "json"])
        .success();
    let token = find_jwt(&fetched.json()).expect("jwt fetch printed a token");

    let valid = cluster
        .tessera(&["jwt", "validate", "--audience", AUDIENCE, &token])
        .success();
    assert!(
        valid.stdout.contains(&id),
        "validate output lacks {id}: {valid:?}"
    );

    let wrong = cluster.tessera(&["jwt", "validate", "--audience", "other", &token]);
    assert_eq!(wrong.code(), 1, "validate with a wrong audience: {wrong:?}");
    assert!(
        !wrong.stderr.is_empty(),
        "validate failed without a message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_rejects_crafted_tokens() {
    let cluster = Cluster::start();
    let id = spiffe_id("/workload/jwt-crafted");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);
    let mut client = workload::client(&cluster.workload_socket()).await;

    let genuine = fetch_token(&mut client).await;
    assert_eq!(
        validate(&mut client, &genuine)
            .await
            .expect("genuine token"),
        id
    );

    let parts: Vec<&str> = genuine.split('.').collect();
    let header = decode_part(parts[0]);
    let claims = decode_part(parts[1]);
    let kid = header["kid"]
        .as_str()
        .expect("JWT-SVIDs carry a kid")
        .to_owned();

    let bundles = client
        .fetch_jwt_bundles(workload::request(JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .expect("a JWT bundles message");
    let jwks = bundles
        .bundles
        .values()
        .next()
        .expect("one JWT bundle")
        .clone();

    let alg_none = format!(
        "{}.{}.",
        encode_part(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        parts[1]
    );

    // HMAC keyed with the public JWKS: accepted by a validator that lets the
    // token pick its algorithm.
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &EncodingKey::from_secret(jwks.as_slice()).unwrap(),
    )
    .unwrap();

    let unknown_kid = sign_with_foreign_key("e2e-unknown-kid", &claims);
    let foreign_signature = sign_with_foreign_key(&kid, &claims);

    let mut edited = claims.clone();
    edited["sub"] = json!(spiffe_id("/workload/impostor"));
    let edited_payload = format!("{}.{}.{}", parts[0], encode_part(&edited), parts[2]);

    let mut stale = claims.clone();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    stale["exp"] = json!(now - 60);
    let expired_foreign = sign_with_foreign_key(&kid, &stale);

    let cases = [
        ("alg none", alg_none),
        ("HS256 keyed with the JWKS", hs256),
        ("unknown kid", unknown_kid),
        ("known kid, foreign signature", foreign_signature),
        ("edited payload", edited_payload),
        ("expired, foreign signature", expired_foreign),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    for (case, token) in cases {
        let result = validate(&mut client, &token).await;
        assert!(result.is_err(), "{case}: accepted as {result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_rejects_expired_token() {
    let options = Options {
        jwt_ttl: "2s".into(),
        ..Options::default()
    };
    let cluster = Cluster::start_with(options);
    let id = spiffe_id("/workload/jwt-expiry");
    cluster.create_entry(&id, &[&uid_selector()]);
    cluster.wait_for_svid(&common::tessera_bin(), &id);
    let mut client = workload::client(&cluster.workload_socket()).await;

    let token = fetch_token(&mut client).await;
    let claims = decode_part(token.split('.').nth(1).unwrap());
    let exp = claims["exp"].as_i64().expect("exp is an integer");
    let iat = claims["iat"].as_i64().unwrap_or(exp);
    assert!(exp - iat <= 2, "jwt_ttl = 2s was not applied: {claims}");

    // Wait until one second past `exp`, so no rounding keeps it valid.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let wait = (exp + 1 - now).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;

    let result = validate(&mut client, &token).await;
    assert!(result.is_err(), "expired token accepted as {result:?}");
}
