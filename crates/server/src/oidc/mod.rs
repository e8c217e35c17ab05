//! OIDC discovery for JWT-SVIDs: an HTTPS listener that serves
//! `/.well-known/openid-configuration` (the issuer document) and `/keys`
//! (the JWT-SVID signing keys as a JWK Set with `use` and `alg`), so that
//! OIDC relying parties such as cloud providers can validate JWT-SVIDs.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use crate::ServerError;
use crate::bundle_endpoint::https;
use crate::bundle_endpoint::web_cert::WebCertificate;
use crate::federation::FederationError;
use crate::state::ServerState;

/// File in the data directory that contains the bound OIDC discovery
/// address while the server runs.
pub const OIDC_ADDR_FILE: &str = "oidc.addr";

/// Path of the JWK Set, relative to the issuer.
const KEYS_PATH: &str = "/keys";

/// Binds the OIDC discovery endpoint when `[oidc]` is configured, writes
/// its address to `<data_dir>/oidc.addr` and adds its task to `tasks`.
pub(crate) async fn start(
    state: &Arc<ServerState>,
    tasks: &mut tokio::task::JoinSet<Result<(), ServerError>>,
) -> Result<(), ServerError> {
    let Some(config) = &state.config.oidc else {
        return Ok(());
    };
    let certificate = Arc::new(
        WebCertificate::load(config.certificate.clone()).map_err(ServerError::Federation)?,
    );
    let tls = https::tls_config(Arc::clone(&certificate) as _)?;
    let bind_error = |source| {
        ServerError::Federation(FederationError::Bind {
            endpoint: "OIDC discovery",
            address: config.address,
            source,
        })
    };
    let listener = TcpListener::bind(config.address)
        .await
        .map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let path = state.config.data_dir.join(OIDC_ADDR_FILE);
    crate::bundle::write_atomically(&path, format!("{address}\n").as_bytes())
        .map_err(|source| ServerError::WriteAddress { path, source })?;

    tokio::spawn(Arc::clone(&certificate).watch(state.stopped()));
    let router = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery_document))
        .route(KEYS_PATH, get(keys))
        .with_state(Arc::clone(state));
    let stopped = state.stopped();
    tracing::info!(%address, issuer = %config.issuer, "OIDC discovery listening");
    let address_file = path_for_cleanup(state);
    tasks.spawn(async move {
        let result = https::serve("OIDC discovery", listener, tls, router, stopped).await;
        if let Err(e) = std::fs::remove_file(&address_file) {
            tracing::debug!(path = %address_file.display(), error = %e, "failed to remove the OIDC address file");
        }
        result
    });
    Ok(())
}

fn path_for_cleanup(state: &ServerState) -> std::path::PathBuf {
    state.config.data_dir.join(OIDC_ADDR_FILE)
}

async fn discovery_document(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let issuer = state
        .config
        .oidc
        .as_ref()
        .map(|oidc| oidc.issuer.clone())
        .unwrap_or_default();
    let document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}{KEYS_PATH}"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"],
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
}

async fn keys(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let jwks = state.bundle.load().bundle.jwt_jwks();
    (
        [(header::CONTENT_TYPE, "application/json")],
        oidc_jwks(&jwks).to_string(),
    )
}

/// Rewrites a JWK Set of JWT-SVID keys for OIDC relying parties: `use` is
/// `sig`, and `alg` names the algorithm that the CA signs with for the key
/// type (ES256 for P-256, ES384 for P-384, RS256 for RSA).
fn oidc_jwks(jwks: &[u8]) -> Value {
    let parsed: Value = serde_json::from_slice(jwks).unwrap_or_else(|_| json!({ "keys": [] }));
    let keys: Vec<Value> = parsed["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|key| {
            let mut key: Map<String, Value> = key.clone();
            let alg = match (key["kty"].as_str(), key.get("crv").and_then(Value::as_str)) {
                (Some("EC"), Some("P-256")) => Some("ES256"),
                (Some("EC"), Some("P-384")) => Some("ES384"),
                (Some("RSA"), _) => Some("RS256"),
                _ => None,
            };
            key.insert("use".into(), json!("sig"));
            if let Some(alg) = alg {
                key.insert("alg".into(), json!(alg));
            }
            Value::Object(key)
        })
        .collect();
    json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_jwks_sets_use_and_alg() {
        let input = br#"{"keys":[
            {"kty":"EC","crv":"P-256","x":"a","y":"b","kid":"k1","use":"jwt-svid"},
            {"kty":"EC","crv":"P-384","x":"a","y":"b","kid":"k2","use":"jwt-svid"},
            {"kty":"RSA","n":"a","e":"AQAB","kid":"k3","use":"jwt-svid"}]}"#;
        let output = oidc_jwks(input);
        let keys = output["keys"].as_array().unwrap();
        let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
        assert_eq!(algs, ["ES256", "ES384", "RS256"]);
        assert!(keys.iter().all(|k| k["use"] == "sig"));
        assert_eq!(keys[0]["kid"], "k1");
    }
}
