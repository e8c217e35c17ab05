//! The bundle endpoint client: one HTTPS/1.1 `GET` per fetch, with the
//! peer authenticated by its SPIFFE ID (`https_spiffe`) or by a configured
//! CA file (`https_web`), and the response body capped.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{SpiffeId, TrustBundle};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Maximum size of a bundle endpoint response body.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Time allowed for a whole fetch: connect, handshake, request and body.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The profile by which the client authenticates the endpoint.
pub(crate) enum EndpointAuth {
    /// The endpoint must present an X509-SVID with `endpoint_id` that
    /// chains to `bundle`.
    Spiffe {
        /// The stored bundle of the endpoint's trust domain.
        bundle: TrustBundle,
        /// The SPIFFE ID the endpoint must present.
        endpoint_id: SpiffeId,
    },
    /// The endpoint must present a certificate for the URL's host that
    /// chains to one of `roots`.
    Web {
        /// Trust anchors read from the configured CA file.
        roots: RootCertStore,
    },
}

/// Fetches the body of `GET url`.
pub(crate) async fn fetch(url: &http::Uri, auth: EndpointAuth) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url, auth)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "fetching {url} timed out after {}s",
            FETCH_TIMEOUT.as_secs()
        )),
    }
}

async fn fetch_inner(url: &http::Uri, auth: EndpointAuth) -> Result<Vec<u8>, String> {
    let host = url
        .host()
        .ok_or_else(|| format!("the URL {url} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("invalid host {host:?} in {url}: {e}"))?;

    let connector = TlsConnector::from(client_config(auth)?);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("failed to connect to {host}:{port}: {e}"))?;
    let tls = connector.connect(server_name, tcp).await.map_err(|e| {
        format!(
            "TLS handshake with {host}:{port} failed: {}",
            tls_reason(&e)
        )
    })?;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port} failed: {e}"))?;
    let driver = tokio::spawn(connection);

    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or(host, |a| a.as_str());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("failed to build the request for {url}: {e}"))?;
    let result = read_response(url, sender.send_request(request).await).await;
    driver.abort();
    result
}

async fn read_response(
    url: &http::Uri,
    response: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<Vec<u8>, String> {
    let response = response.map_err(|e| format!("request to {url} failed: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("{url} returned HTTP status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| {
            format!(
                "failed to read the response of {url} (at most {MAX_RESPONSE_BYTES} bytes): {e}"
            )
        })?;
    Ok(body.to_bytes().to_vec())
}

fn client_config(auth: EndpointAuth) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("invalid TLS configuration: {e}"))?;
    let mut config = match auth {
        EndpointAuth::Spiffe {
            bundle,
            endpoint_id,
        } => builder
            .dangerous()
            // Not a bypass: the verifier checks the chain against the
            // peer's bundle and the SPIFFE ID instead of Web PKI names.
            .with_custom_certificate_verifier(Arc::new(SpiffeEndpointVerifier {
                bundle,
                endpoint_id,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        EndpointAuth::Web { roots } => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Reads the trust anchors for `https_web` endpoints from a PEM file.
pub(crate) fn read_web_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "failed to read the https_web CA file {}: {e}",
            path.display()
        )
    })?;
    let blocks = pem::parse_many(&text)
        .map_err(|e| format!("invalid https_web CA file {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for block in blocks.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
        roots
            .add(CertificateDer::from(block.into_contents()))
            .map_err(|e| format!("invalid certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "the https_web CA file {} has no certificate",
            path.display()
        ));
    }
    Ok(roots)
}

/// Accepts a server chain that is a valid X509-SVID of the peer's trust
/// domain with exactly the expected SPIFFE ID.
struct SpiffeEndpointVerifier {
    bundle: TrustBundle,
    endpoint_id: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for SpiffeEndpointVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeEndpointVerifier")
            .field("endpoint_id", &self.endpoint_id)
            .finish_non_exhaustive()
    }
}

/// Returns the reason of a failed handshake. A rejection by the verifier
/// below is shown as its own message, because rustls prints the wrapped
/// error in Rust's debug form.
fn tls_reason(error: &std::io::Error) -> String {
    let rejected = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rejected {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        _ => error.to_string(),
    }
}

fn reject(reason: impl Into<String>) -> rustls::Error {
    let reason: String = reason.into();
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        std::io::Error::other(reason),
    ))))
}

impl ServerCertVerifier for SpiffeEndpointVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let verified = validate_x509_svid(&chain, &self.bundle, now).map_err(|e| {
            reject(format!(
                "the bundle endpoint's X509-SVID is not valid for trust domain {}: {e}",
                self.bundle.trust_domain()
            ))
        })?;
        if verified.spiffe_id() != &self.endpoint_id {
            return Err(reject(format!(
                "the bundle endpoint presented SPIFFE ID {}, expected {}",
                verified.spiffe_id(),
                self.endpoint_id
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
