//! The SPIFFE bundle endpoint: `GET /` over HTTPS returns the current
//! trust bundle in the SPIFFE bundle format, with `spiffe_sequence` and
//! `spiffe_refresh_hint`, so that other trust domains can federate with
//! this one. Under `https_spiffe` it presents the server's X509-SVID;
//! under `https_web` a certificate from files that are reloaded on change.

pub(crate) mod https;
pub(crate) mod web_cert;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;

use crate::ServerError;
use crate::agent_api::identity::ServerIdentity;
use crate::config::{BundleEndpointConfig, EndpointProfile};
use crate::federation::FederationError;
use crate::state::ServerState;
use web_cert::WebCertificate;

/// File in the data directory that contains the bound bundle endpoint
/// address while the server runs, so tools find a port picked with port 0.
pub const BUNDLE_ENDPOINT_ADDR_FILE: &str = "bundle_endpoint.addr";

/// A bound bundle endpoint, ready to serve.
pub(crate) struct BundleEndpoint {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    web_certificate: Option<Arc<WebCertificate>>,
    refresh_hint: Duration,
    /// The bound address.
    pub address: SocketAddr,
}

impl BundleEndpoint {
    /// Binds the address and loads the certificate of the profile.
    pub async fn bind(
        config: &BundleEndpointConfig,
        identity: Arc<ServerIdentity>,
    ) -> Result<Self, ServerError> {
        let (resolver, web_certificate): (Arc<dyn ResolvesServerCert>, _) = match &config.profile {
            EndpointProfile::HttpsSpiffe => (identity, None),
            EndpointProfile::HttpsWeb(paths) => {
                let certificate =
                    Arc::new(WebCertificate::load(paths.clone()).map_err(ServerError::Federation)?);
                (Arc::clone(&certificate) as _, Some(certificate))
            }
        };
        let tls = https::tls_config(resolver)?;
        let bind_error = |source| {
            ServerError::Federation(FederationError::Bind {
                endpoint: "bundle endpoint",
                address: config.address,
                source,
            })
        };
        let listener = TcpListener::bind(config.address)
            .await
            .map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            tls,
            web_certificate,
            refresh_hint: config.refresh_hint,
            address,
        })
    }

    /// Serves until the server shuts down.
    pub async fn serve(self, state: Arc<ServerState>) -> Result<(), ServerError> {
        if let Some(certificate) = self.web_certificate {
            tokio::spawn(certificate.watch(state.stopped()));
        }
        tracing::info!(address = %self.address, "bundle endpoint listening");
        let router = axum::Router::new()
            .route("/", get(get_bundle))
            .with_state(BundleState {
                state: Arc::clone(&state),
                refresh_hint: self.refresh_hint,
            });
        let result = https::serve(
            "bundle endpoint",
            self.listener,
            self.tls,
            router,
            state.stopped(),
        )
        .await;
        let address_file = state.config.data_dir.join(BUNDLE_ENDPOINT_ADDR_FILE);
        if let Err(e) = std::fs::remove_file(&address_file) {
            tracing::debug!(path = %address_file.display(), error = %e, "failed to remove the bundle endpoint address file");
        }
        result
    }
}

#[derive(Clone)]
struct BundleState {
    state: Arc<ServerState>,
    refresh_hint: Duration,
}

async fn get_bundle(State(endpoint): State<BundleState>) -> impl IntoResponse {
    let mut bundle = endpoint.state.bundle.load().bundle.clone();
    bundle.set_refresh_hint(Some(endpoint.refresh_hint));
    // The CA numbers every bundle change; a bundle without a number is
    // published as sequence 0.
    if bundle.sequence_number().is_none() {
        bundle.set_sequence_number(Some(0));
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        bundle.to_jwks(),
    )
}

/// Binds the bundle endpoint when one is configured, writes its address
/// to `<data_dir>/bundle_endpoint.addr` and adds its task to `tasks`.
pub(crate) async fn start(
    state: &Arc<ServerState>,
    identity: &Arc<ServerIdentity>,
    tasks: &mut tokio::task::JoinSet<Result<(), ServerError>>,
) -> Result<(), ServerError> {
    let Some(config) = &state.config.federation.bundle_endpoint else {
        return Ok(());
    };
    let endpoint = BundleEndpoint::bind(config, Arc::clone(identity)).await?;
    let path = state.config.data_dir.join(BUNDLE_ENDPOINT_ADDR_FILE);
    crate::bundle::write_atomically(&path, format!("{}\n", endpoint.address).as_bytes())
        .map_err(|source| ServerError::WriteAddress { path, source })?;
    tasks.spawn(endpoint.serve(Arc::clone(state)));
    Ok(())
}
