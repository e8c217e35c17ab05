//! mTLS between workloads of two trust domains with their X.509-SVIDs.

use super::*;

pub(super) async fn watch_x509(socket: &Path) -> watch::Receiver<X509svidResponse> {
    let mut client = workload::client(socket).await;
    let mut stream = client
        .fetch_x509svid(workload::request(X509svidRequest {}))
        .await
        .expect("FetchX509SVID")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("an X509SVIDResponse")
        .expect("the stream is open");
    let (sender, receiver) = watch::channel(first);
    tokio::spawn(async move {
        while let Ok(Some(response)) = stream.message().await {
            if sender.send(response).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Waits until the watched response satisfies `ready`.
pub(super) async fn wait_for_watched(
    watched: &mut watch::Receiver<X509svidResponse>,
    what: &str,
    ready: impl Fn(&X509svidResponse) -> bool,
) -> X509svidResponse {
    let result = tokio::time::timeout(READY_TIMEOUT, watched.wait_for(|r| ready(r))).await;
    let response = result
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|_| panic!("the Workload API stream ended while waiting for {what}"));
    response.clone()
}

/// The SVID, key and peer roots of one side of an mTLS connection, taken
/// from a Workload API response.
pub(super) struct TlsIdentity {
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: PrivateKeyDer<'static>,
    pub(super) roots: Arc<RootCertStore>,
}

impl TlsIdentity {
    /// Picks the SVID of `spiffe_id` and the federated bundle of
    /// `peer_trust_domain` from `response`.
    pub(super) fn from_response(
        response: &X509svidResponse,
        spiffe_id: &str,
        peer_trust_domain: &str,
    ) -> Result<TlsIdentity, String> {
        let svid = response
            .svids
            .iter()
            .find(|s| s.spiffe_id == spiffe_id)
            .ok_or_else(|| format!("no SVID for {spiffe_id}"))?;
        let peer_bundle = response
            .federated_bundles
            .get(&format!("spiffe://{peer_trust_domain}"))
            .ok_or_else(|| format!("no bundle of {peer_trust_domain}"))?;
        let mut roots = RootCertStore::empty();
        for root in split_der(peer_bundle) {
            roots.add(root).map_err(|e| e.to_string())?;
        }
        Ok(TlsIdentity {
            chain: split_der(&svid.x509_svid),
            key: PrivateKeyDer::Pkcs8(svid.x509_svid_key.clone().into()),
            roots: Arc::new(roots),
        })
    }

    pub(super) fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())
    }

    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
                roots: self.roots.clone(),
                provider,
            }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())
    }
}

/// Serves mTLS on `listener` as `spiffe://b.test/server`, with the SVID
/// and bundle that B's Workload API sent last at each accept. Each
/// connection reads `ping` and replies `pong`. Failures go to `failures`.
pub(super) async fn serve_mtls(
    listener: TcpListener,
    workload: watch::Receiver<X509svidResponse>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let identity =
            TlsIdentity::from_response(&workload.borrow(), "spiffe://b.test/server", "a.test");
        let config = identity.and_then(|identity| identity.server_config());
        let failures = Arc::clone(&failures);
        tokio::spawn(async move {
            let outcome = match config {
                Ok(config) => answer_ping(tcp, config).await,
                Err(e) => Err(format!("server TLS configuration: {e}")),
            };
            if let Err(e) = outcome {
                failures.lock().unwrap().push(format!("server side: {e}"));
            }
        });
    }
}

pub(super) async fn answer_ping(
    tcp: tokio::net::TcpStream,
    config: rustls::ServerConfig,
) -> Result<(), String> {
    let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config))
        .accept(tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut request = [0u8; 4];
    tls.read_exact(&mut request)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())
}

/// Connects to `address` as `spiffe://a.test/client` with the SVID and
/// bundle that A's Workload API sent last, exchanges `ping` and `pong`,
/// and returns the server's certificate.
pub(super) async fn call_mtls(
    address: SocketAddr,
    workload: &watch::Receiver<X509svidResponse>,
) -> Result<CertificateDer<'static>, String> {
    let identity =
        TlsIdentity::from_response(&workload.borrow(), "spiffe://a.test/client", "b.test")?;
    let config = identity.client_config()?;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("b-server").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();

    let server_id = common::svid_spiffe_id(&server_cert);
    if server_id != "spiffe://b.test/server" {
        return Err(format!("the server presented {server_id}"));
    }
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply)
        .await
        .map_err(|e| e.to_string())?;
    if reply != b"pong" {
        return Err(format!("unexpected reply {reply:?}"));
    }
    Ok(server_cert)
}

/// Outcomes of a client that handshakes in a loop.
#[derive(Default)]
pub(super) struct HandshakeLog {
    /// The server certificate of each successful handshake, in order.
    pub(super) server_certs: Vec<CertificateDer<'static>>,
    /// One message per failed handshake.
    pub(super) failures: Vec<String>,
}

/// Handshakes with `address` every 50 ms until `stop` turns true.
pub(super) async fn handshake_loop(
    address: SocketAddr,
    workload: watch::Receiver<X509svidResponse>,
    log: Arc<Mutex<HandshakeLog>>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let outcome = call_mtls(address, &workload).await;
        {
            let mut log = log.lock().unwrap();
            match outcome {
                Ok(cert) => log.server_certs.push(cert),
                Err(e) => log.failures.push(format!("client side: {e}")),
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// Fetches the bundle that `domain` serves on its `https_spiffe` bundle
/// endpoint, checking the endpoint's certificate against `roots`.
pub(super) async fn fetch_from_endpoint(
    domain: &Domain,
    roots: &[CertificateDer<'static>],
) -> TrustBundle {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
            roots: Arc::new(store),
            provider,
        }))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(domain.endpoint)
        .await
        .unwrap();
    let name = ServerName::try_from("bundle-endpoint").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake with the bundle endpoint");

    let request = format!(
        "GET / HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        domain.endpoint
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    TrustBundle::from_jwks(&TrustDomain::new(&domain.td).unwrap(), body.as_bytes()).unwrap()
}
