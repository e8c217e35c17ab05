//! TLS for the agent API. The rustls server configuration presents the
//! server SVID and checks client certificates against the bundle current at
//! each handshake. An accept loop runs handshakes in their own tasks, and a
//! stream wrapper hands the verified peer SVID to the request handlers
//! through tonic's `Connected`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tessera_spiffe::SpiffeId;
use tessera_spiffe::x509::validate_x509_svid;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::identity::ServerIdentity;
use crate::ServerError;
use crate::state::BundleHandle;

/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; the accept loop waits beyond this.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// Handshaken connections waiting for tonic to pick them up.
const ACCEPTED_BACKLOG: usize = 64;

/// Builds the TLS configuration: TLS 1.3 and 1.2, ALPN `h2`, the server SVID
/// from `identity`, and optional client certificates checked against the
/// current bundle.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    identity: Arc<ServerIdentity>,
    bundle: BundleHandle,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let verifier = Arc::new(AgentCertVerifier {
        bundle,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ServerError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(identity);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Checks client certificates as X.509-SVIDs of the server's trust domain
/// against the bundle published at the time of the handshake. A client
/// without a certificate is let through; handlers that need an agent check
/// for one.
struct AgentCertVerifier {
    bundle: BundleHandle,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for AgentCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentCertVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for AgentCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());

        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let published = self.bundle.load();
        match validate_x509_svid(&chain, &published.bundle, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                tracing::warn!(error = %e, "rejected agent API client certificate");
                Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(e)),
                )))
            }
        }
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

/// The client's SVID, validated against the bundle after the handshake.
#[derive(Debug, Clone)]
pub(crate) struct PeerSvid {
    /// SPIFFE ID of the leaf.
    pub spiffe_id: SpiffeId,
    /// Lowercase hex serial number of the leaf.
    pub serial: String,
    /// The leaf's notAfter time.
    pub not_after: SystemTime,
}

/// Connection facts that handlers read from the request extensions.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    /// The client's TCP address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's SVID, when it presented one.
    pub svid: Option<PeerSvid>,
}

/// A TLS connection of the agent API with the facts about its peer.
pub(crate) struct AgentTlsStream {
    inner: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for AgentTlsStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for AgentTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections and runs each TLS handshake in its own task,
/// so a slow client cannot hold up others. Returns the stream of finished
/// handshakes for `serve_with_incoming`; failed handshakes are logged and
/// dropped. The loop ends at shutdown or when the stream is dropped.
pub(crate) fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    bundle: BundleHandle,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> ReceiverStream<Result<AgentTlsStream, io::Error>> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_BACKLOG);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));

    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            let Ok(permit) = Arc::clone(&pending).acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                () = &mut stopped => return,
                () = sender.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, remote_addr) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Errors such as EMFILE are transient; pause so the loop
                    // does not spin while they last.
                    tracing::warn!(error = %e, "failed to accept an agent API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };

            // gRPC writes small frames and waits for the reply; with Nagle's
            // algorithm each reply waited for the client's delayed ACK,
            // about 40 ms per call.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, %remote_addr, "failed to set TCP_NODELAY");
            }

            let acceptor = acceptor.clone();
            let bundle = Arc::clone(&bundle);
            let sender = sender.clone();
            tokio::spawn(async move {
                if let Some(stream) = handshake(acceptor, tcp, remote_addr, &bundle).await {
                    // An error means the server stopped serving.
                    let _ = sender.send(Ok(stream)).await;
                }
                drop(permit);
            });
        }
    });
    ReceiverStream::new(receiver)
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    bundle: &BundleHandle,
) -> Option<AgentTlsStream> {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!(remote_addr = %remote_addr, error = %e, "agent API TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::warn!(remote_addr = %remote_addr, "agent API TLS handshake timed out");
            return None;
        }
    };

    let svid = match tls.get_ref().1.peer_certificates() {
        None => None,
        Some(chain) => match peer_svid(chain, bundle) {
            Ok(svid) => Some(svid),
            Err(e) => {
                tracing::warn!(remote_addr = %remote_addr, error = %e, "rejected agent API client SVID");
                return None;
            }
        },
    };
    let peer = PeerInfo {
        remote_addr: Some(remote_addr),
        svid,
    };
    Some(AgentTlsStream { inner: tls, peer })
}

/// Validates the chain the verifier accepted once more, now to learn its
/// SPIFFE ID, serial number and expiry.
fn peer_svid(chain: &[CertificateDer<'static>], bundle: &BundleHandle) -> Result<PeerSvid, String> {
    let published = bundle.load();
    let verified = validate_x509_svid(chain, &published.bundle, SystemTime::now())
        .map_err(|e| e.to_string())?;
    let leaf = chain
        .first()
        .ok_or("the client sent an empty certificate chain")?;
    let facts = super::LeafFacts::parse(leaf).map_err(|e| e.to_string())?;
    Ok(PeerSvid {
        spiffe_id: verified.spiffe_id().clone(),
        serial: facts.serial,
        not_after: verified.not_after(),
    })
}
