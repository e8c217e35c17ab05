//! The agent's TLS client to the server. The server must present an
//! X.509-SVID that chains to the trust bundle, with the SPIFFE ID
//! `spiffe://<trust domain>/tessera/server` exactly; DNS names are not
//! checked. The agent presents its current agent SVID as client certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use tessera_spiffe::x509::validate_x509_svid;
use tessera_spiffe::{SpiffeId, TrustBundle, TrustDomain, X509Svid};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::config::ServerAddress;
use crate::error::AgentError;

/// Path of the server's SPIFFE ID in its trust domain.
pub const SERVER_ID_PATH: &str = "/tessera/server";

/// Placeholder URI for the gRPC channel: the connector below dials the
/// configured addresses itself, so this name is never resolved.
const CHANNEL_URI: &str = "http://tessera-server";

/// SNI name sent when the configured host is not a valid DNS name or IP.
const FALLBACK_SERVER_NAME: &str = "tessera-server";

/// Largest agent API message the agent accepts, in bytes. A snapshot chunk
/// of entries or a batch of 500 signed SVIDs stays well below it.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The credentials the TLS client uses, shared with the tasks that change
/// them: the trust bundle (replaced by sync) and the agent SVID (replaced
/// by renewal). Each handshake reads the current values.
#[derive(Debug)]
pub struct TlsIdentity {
    server_id: SpiffeId,
    insecure_bootstrap: bool,
    bundle: ArcSwapOption<TrustBundle>,
    agent_svid: ArcSwapOption<AgentCertificate>,
    provider: Arc<CryptoProvider>,
}

/// The agent SVID with its key loaded for TLS signing.
#[derive(Debug)]
struct AgentCertificate {
    svid: X509Svid,
    certified: Arc<CertifiedKey>,
}

impl TlsIdentity {
    /// Creates the identity for `trust_domain`. Without a bundle, the server
    /// is authenticated only when `insecure_bootstrap` is false, and then no
    /// handshake succeeds until [`TlsIdentity::set_bundle`] is called.
    ///
    /// # Errors
    ///
    /// Returns an error when the server's SPIFFE ID cannot be built.
    pub fn new(
        trust_domain: &TrustDomain,
        bundle: Option<TrustBundle>,
        insecure_bootstrap: bool,
    ) -> Result<Arc<Self>, AgentError> {
        let server_id = SpiffeId::from_path(trust_domain, SERVER_ID_PATH).map_err(|e| {
            AgentError::InvalidSvid {
                spiffe_id: format!("{}{SERVER_ID_PATH}", trust_domain.id_string()),
                source: e.into(),
            }
        })?;
        Ok(Arc::new(Self {
            server_id,
            insecure_bootstrap,
            bundle: ArcSwapOption::new(bundle.map(Arc::new)),
            agent_svid: ArcSwapOption::empty(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }))
    }

    /// Returns the SPIFFE ID the server must present.
    pub fn server_id(&self) -> &SpiffeId {
        &self.server_id
    }

    /// Returns the current trust bundle.
    pub fn bundle(&self) -> Option<Arc<TrustBundle>> {
        self.bundle.load_full()
    }

    /// Replaces the trust bundle that server certificates are checked against.
    pub fn set_bundle(&self, bundle: TrustBundle) {
        self.bundle.store(Some(Arc::new(bundle)));
    }

    /// Returns the current agent SVID.
    pub fn agent_svid(&self) -> Option<X509Svid> {
        self.agent_svid.load().as_ref().map(|c| c.svid.clone())
    }

    /// Replaces the client certificate; later handshakes present `svid`.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Tls`] when rustls cannot load the key.
    pub fn set_agent_svid(&self, svid: X509Svid) -> Result<(), AgentError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            svid.private_key().pkcs8_der().to_vec(),
        ));
        let certified = CertifiedKey::from_der(svid.cert_chain().to_vec(), key, &self.provider)?;
        self.agent_svid.store(Some(Arc::new(AgentCertificate {
            svid,
            certified: Arc::new(certified),
        })));
        Ok(())
    }

    /// Builds a rustls client configuration (ALPN `h2`) that reads this
    /// identity on every handshake.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Tls`] when rustls rejects the protocol versions.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, AgentError> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier {
                identity: self.clone(),
            }))
            .with_client_cert_resolver(Arc::new(AgentCertResolver {
                identity: self.clone(),
            }));
        config.alpn_protocols = vec![b"h2".to_vec()];
        // A resumed TLS 1.3 session keeps the client identity of the session
        // it resumes: after attestation (no client certificate) or renewal,
        // the server would see the old identity. Every connection therefore
        // makes a full handshake with the current agent SVID.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// Checks the server's certificate against the SPIFFE trust bundle and the
/// server's SPIFFE ID, in place of the Web PKI's DNS name check.
#[derive(Debug)]
struct SpiffeServerVerifier {
    identity: Arc<TlsIdentity>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(bundle) = self.identity.bundle() else {
            if self.identity.insecure_bootstrap {
                // insecure_bootstrap: the operator chose to trust any server
                // until the first bundle arrives.
                tracing::warn!("insecure_bootstrap: accepting the server certificate unverified");
                return Ok(ServerCertVerified::assertion());
            }
            return Err(rustls::Error::General(
                "no trust bundle to verify the server certificate".into(),
            ));
        };

        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());

        let verified = validate_x509_svid(&chain, bundle.as_ref(), now).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        if verified.spiffe_id() != &self.identity.server_id {
            tracing::warn!(
                presented = %verified.spiffe_id(),
                expected = %self.identity.server_id,
                "server certificate has the wrong SPIFFE ID"
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.identity.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.identity.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.identity
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents the current agent SVID, or no certificate before attestation.
#[derive(Debug)]
struct AgentCertResolver {
    identity: Arc<TlsIdentity>,
}

impl ResolvesClientCert for AgentCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.identity
            .agent_svid
            .load()
            .as_ref()
            .map(|c| c.certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A gRPC channel to the servers' agent API that dials lazily, and a way to
/// start a fresh connection after the agent SVID changes.
///
/// With several server addresses, each new connection tries the address
/// that last worked first, then the others in order. When a server goes
/// away, tonic opens a new connection on the next call, which moves to the
/// next server.
#[derive(Debug)]
pub struct ServerChannel {
    dialer: Arc<Dialer>,
    channel: ArcSwap<Channel>,
}

impl ServerChannel {
    /// Creates a channel to the servers at `addresses`, authenticated by
    /// `identity`. No connection is made until the first call.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::Tls`] when the TLS configuration is invalid.
    pub fn new(
        addresses: Vec<ServerAddress>,
        identity: &Arc<TlsIdentity>,
    ) -> Result<Self, AgentError> {
        let dialer = Arc::new(Dialer {
            tls: identity.client_config()?,
            addresses,
            current: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            connected: AtomicUsize::new(usize::MAX),
        });
        let channel = lazy_channel(&dialer);
        Ok(Self {
            dialer,
            channel: ArcSwap::from_pointee(channel),
        })
    }

    /// Returns the current channel.
    pub fn channel(&self) -> Channel {
        self.channel.load().as_ref().clone()
    }

    /// Returns a client of the agent API on the current channel.
    pub fn client(&self) -> tessera_proto::agent::agent_api_client::AgentApiClient<Channel> {
        tessera_proto::agent::agent_api_client::AgentApiClient::new(self.channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Replaces the channel so that later calls use a new connection, made
    /// with the current client certificate. Calls already running keep the
    /// old connection until they finish.
    pub fn reconnect(&self) {
        self.channel.store(Arc::new(lazy_channel(&self.dialer)));
    }

    /// Reconnects, starting from the next server address, after a call
    /// failed with `status` in a way another server may not: the server
    /// is hung, lost its datastore, or closed the connection. Servers of a
    /// trust domain are equivalent, so moving on costs nothing. Final
    /// codes, which every server would return, change nothing.
    pub fn fail_over(&self, status: &Status) {
        if crate::retry::is_final(status.code()) {
            return;
        }
        let count = self.dialer.addresses.len();
        if count > 1 {
            let next = (self.dialer.current.load(Ordering::Acquire) + 1) % count;
            self.dialer.current.store(next, Ordering::Release);
            if let Some(address) = self.dialer.addresses.get(next) {
                tracing::info!(server = %address, code = ?status.code(), "moving to the next server");
            }
        }
        self.reconnect();
    }
}

/// Opens TLS connections to the first server address that accepts one.
#[derive(Debug)]
struct Dialer {
    tls: Arc<ClientConfig>,
    addresses: Vec<ServerAddress>,
    /// Index of the address that accepted the last connection.
    current: AtomicUsize,
    /// Whether the last dial failed on every address, so that the outage
    /// and the recovery are each logged once.
    failing: AtomicBool,
    /// Index of the address of the last connection, `usize::MAX` before
    /// the first, so that each change of server is logged.
    connected: AtomicUsize,
}

impl Dialer {
    async fn dial(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let start = self.current.load(Ordering::Acquire);
        let count = self.addresses.len();
        let mut last_error = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let Some(address) = self.addresses.get(index) else {
                continue;
            };
            let dialed = tokio::time::timeout(CONNECT_TIMEOUT, self.dial_one(address))
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection and TLS handshake timed out",
                    ))
                });
            match dialed {
                Ok(stream) => {
                    let was_failing = self.failing.swap(false, Ordering::AcqRel);
                    let previous = self.connected.swap(index, Ordering::AcqRel);
                    if index != previous || was_failing {
                        tracing::info!(server = %address, "connected to the server");
                    }
                    self.current.store(index, Ordering::Release);
                    return Ok(stream);
                }
                Err(e) => {
                    if count > 1 {
                        tracing::debug!(server = %address, error = %e, "failed to connect to the server; trying the next");
                    }
                    last_error = Some(e);
                }
            }
        }
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                servers = count,
                "failed to connect to every server; retrying"
            );
        }
        Err(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no server address")
        }))
    }

    async fn dial_one(&self, address: &ServerAddress) -> std::io::Result<TlsStream<TcpStream>> {
        let server_name = ServerName::try_from(address.host.clone())
            .or_else(|_| ServerName::try_from(FALLBACK_SERVER_NAME))
            .map(|name| name.to_owned())
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "invalid TLS server name")
            })?;
        let tcp = TcpStream::connect((address.host.as_str(), address.port)).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(Arc::clone(&self.tls))
            .connect(server_name, tcp)
            .await
    }
}

/// Maximum time to connect to one server address, TLS handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn lazy_channel(dialer: &Arc<Dialer>) -> Channel {
    let dialer = Arc::clone(dialer);
    let connect = tower::service_fn(move |_: Uri| {
        let dialer = Arc::clone(&dialer);
        async move { Ok::<_, std::io::Error>(TokioIo::new(dialer.dial().await?)) }
    });

    Endpoint::from_static(CHANNEL_URI)
        // A hung server is noticed within 15 s. The pings are a few bytes
        // per agent every 10 s.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(connect)
}
