//! Simulated agents: real clients of the server's agent API over TLS on
//! loopback. An agent attests with a join token (TLS without a client
//! certificate), then calls the API over mTLS with the SVID it received.
//! The server's certificate is checked against the trust bundle and must
//! carry the server's SPIFFE ID.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tessera_proto::agent::agent_api_client::AgentApiClient;
use tessera_proto::agent::{
    AttestAgentRequest, AttestationData, BatchNewX509SvidRequest, NewX509SvidParams,
    SyncEntriesRequest, SyncEntriesResponse,
};
use tessera_spiffe::{KeyAlgorithm, PrivateKey, SpiffeId, TrustBundle, TrustDomain};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// The agent API server and how to trust it.
#[derive(Clone)]
pub struct ServerTarget {
    address: SocketAddr,
    bundle: Arc<TrustBundle>,
    server_id: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl ServerTarget {
    /// Creates a target at `address` whose certificate chains to
    /// `bundle_pem`.
    pub fn new(address: SocketAddr, trust_domain: &TrustDomain, bundle_pem: &str) -> Result<Self> {
        let bundle = TrustBundle::from_pem(trust_domain, bundle_pem)
            .context("parsing the server's trust bundle")?;
        let server_id = SpiffeId::from_path(trust_domain, "/tessera/server")?;
        Ok(Self {
            address,
            bundle: Arc::new(bundle),
            server_id,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        })
    }

    fn tls_config(
        &self,
        client_auth: Option<(&[CertificateDer<'static>], &PrivateKey)>,
    ) -> Result<ClientConfig> {
        let verifier = Arc::new(SpiffeServerVerifier {
            bundle: Arc::clone(&self.bundle),
            server_id: self.server_id.clone(),
            algorithms: self.provider.signature_verification_algorithms,
        });
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client_auth {
            Some((chain, key)) => {
                let key_der =
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()));
                builder.with_client_auth_cert(chain.to_vec(), key_der)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    async fn connect(&self, config: ClientConfig) -> Result<Channel> {
        let connector = TlsConnector::from(Arc::new(config));
        let address = self.address;
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(30))
            .connect_with_connector(tower::service_fn(move |_| {
                let connector = connector.clone();
                async move {
                    let tcp = TcpStream::connect(address).await?;
                    tcp.set_nodelay(true)?;
                    // The verifier checks the SPIFFE ID, not this name.
                    let name = ServerName::try_from("tessera-server")
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .with_context(|| format!("connecting to the agent API at {address}"))?;
        Ok(channel)
    }
}

/// An attested simulated agent with its mTLS connection.
pub struct SimulatedAgent {
    /// The agent's SPIFFE ID.
    pub id: String,
    client: AgentApiClient<Channel>,
}

impl SimulatedAgent {
    /// Attests with `join_token` and opens an mTLS connection with the
    /// returned SVID.
    pub async fn attest(target: &ServerTarget, join_token: &str) -> Result<Self> {
        let key = PrivateKey::generate(KeyAlgorithm::EcP256)?;
        let channel = target.connect(target.tls_config(None)?).await?;
        let request = AttestAgentRequest {
            data: Some(AttestationData {
                r#type: "join_token".to_owned(),
                payload: join_token.as_bytes().to_vec(),
            }),
            public_key: key.public_key_der(),
        };
        let response = AgentApiClient::new(channel)
            .attest_agent(request)
            .await
            .context("AttestAgent failed")?
            .into_inner();
        let svid = response.svid.context("AttestAgent returned no SVID")?;
        if svid.cert_chain.is_empty() {
            bail!("AttestAgent returned an empty certificate chain");
        }
        let chain: Vec<CertificateDer<'static>> = svid
            .cert_chain
            .into_iter()
            .map(CertificateDer::from)
            .collect();

        let channel = target
            .connect(target.tls_config(Some((&chain, &key)))?)
            .await?;
        // Snapshots are split by the server; the 4 MiB default limit of a
        // received message is kept, as an agent would.
        let client = AgentApiClient::new(channel);
        Ok(Self {
            id: svid.spiffe_id,
            client,
        })
    }

    /// Calls BatchNewX509Svid and returns how many SVIDs were signed.
    pub async fn batch_new_x509_svid(&mut self, params: Vec<NewX509SvidParams>) -> Result<usize> {
        let requested = params.len();
        let response = self
            .client
            .batch_new_x509_svid(BatchNewX509SvidRequest { params })
            .await
            .context("BatchNewX509Svid failed")?
            .into_inner();
        if response.results.len() != requested {
            bail!(
                "BatchNewX509Svid returned {} results for {requested} requests",
                response.results.len()
            );
        }
        let mut signed = 0;
        for result in response.results {
            let code = result.status.as_ref().map_or(0, |status| status.code);
            if code != 0 {
                let message = result
                    .status
                    .map(|status| status.message)
                    .unwrap_or_default();
                bail!("BatchNewX509Svid rejected a request with code {code}: {message}");
            }
            if result.svid.is_some_and(|svid| !svid.cert_chain.is_empty()) {
                signed += 1;
            }
        }
        Ok(signed)
    }

    /// Opens the entry stream from a full snapshot.
    pub async fn sync_entries(&mut self) -> Result<Streaming<SyncEntriesResponse>> {
        let stream = self
            .client
            .sync_entries(SyncEntriesRequest { known_revision: 0 })
            .await
            .context("SyncEntries failed")?
            .into_inner();
        Ok(stream)
    }
}

/// Contents of a simulated agent's first snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Entries in the snapshot.
    pub entries: usize,
    /// Messages that carried it.
    pub messages: usize,
    /// Largest message, encoded, in bytes.
    pub largest_message_bytes: usize,
}

/// Reads `stream` until the first message with `complete` set.
pub async fn read_snapshot(stream: &mut Streaming<SyncEntriesResponse>) -> Result<Snapshot> {
    use prost::Message;
    let mut snapshot = Snapshot::default();
    while let Some(message) = stream.message().await.context("reading the entry stream")? {
        snapshot.messages += 1;
        snapshot.entries += message.upserted.len();
        snapshot.largest_message_bytes = snapshot.largest_message_bytes.max(message.encoded_len());
        if message.complete {
            return Ok(snapshot);
        }
    }
    bail!("the entry stream ended before its snapshot was complete")
}

/// Checks the server's certificate the SPIFFE way: an X.509-SVID chaining
/// to the bundle, with the server's SPIFFE ID. The TLS server name is not
/// used.
struct SpiffeServerVerifier {
    bundle: Arc<TrustBundle>,
    server_id: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
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
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone().into_owned());
        chain.extend(intermediates.iter().map(|cert| cert.clone().into_owned()));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let verified = tessera_spiffe::x509::validate_x509_svid(&chain, self.bundle.as_ref(), now)
            .map_err(|e| rustls::Error::General(format!("server SVID is invalid: {e}")))?;
        if verified.spiffe_id() != &self.server_id {
            return Err(rustls::Error::General(format!(
                "server SVID has SPIFFE ID {}, expected {}",
                verified.spiffe_id(),
                self.server_id
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
