//! A small HTTPS/1.1 server for the bundle endpoint and OIDC discovery: an
//! accept loop that runs each TLS handshake and connection in its own
//! task and serves an axum router on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::ServerError;

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay open; the endpoints serve small documents.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; the accept loop waits beyond this.
const MAX_CONNECTIONS: usize = 256;

/// Builds a TLS 1.3/1.2 server configuration without client
/// authentication that presents the certificate `resolver` returns.
pub(crate) fn tls_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over TLS on `listener` until `stopped` completes, then
/// closes every open connection. `name` labels the logs.
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    stopped: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    tokio::pin!(stopped);
    loop {
        while connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
        }
        let accepted = tokio::select! {
            () = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, remote_addr)) => {
                let acceptor = acceptor.clone();
                let router = router.clone();
                connections.spawn(serve_connection(name, acceptor, tcp, remote_addr, router));
            }
            Err(e) => {
                // Errors such as EMFILE are transient; pause so the loop
                // does not spin while they last.
                tracing::warn!(endpoint = name, error = %e, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.shutdown().await;
    Ok(())
}

async fn serve_connection(
    name: &'static str,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote_addr: SocketAddr,
    router: axum::Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = name, %remote_addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(endpoint = name, %remote_addr, "TLS handshake timed out");
            return;
        }
    };
    let service = TowerToHyperService::new(router);
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(endpoint = name, %remote_addr, error = %e, "connection failed")
        }
        Err(_) => tracing::debug!(endpoint = name, %remote_addr, "connection timed out"),
    }
}
