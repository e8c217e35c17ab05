//! An `https_web` bundle endpoint whose response the test sets.

use super::*;

pub(super) struct FakeEndpoint {
    pub(super) address: SocketAddr,
    pub(super) body: Arc<Mutex<Vec<u8>>>,
    pub(super) served: Arc<AtomicUsize>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl FakeEndpoint {
    pub(super) async fn start(ca_file: &Path) -> FakeEndpoint {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        fs::write(ca_file, cert.pem()).unwrap();

        let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(Vec::new()));
        let current = Arc::clone(&body);
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let body = current.lock().unwrap().clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = [0u8; 4096];
                    let _ = tls.read(&mut request).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        FakeEndpoint {
            address,
            body,
            served,
            task,
        }
    }

    pub(super) fn serve(&self, body: Vec<u8>) {
        *self.body.lock().unwrap() = body;
    }

    /// Returns the number of responses sent so far.
    pub(super) fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    pub(super) fn url(&self) -> String {
        format!("https://{}/", self.address)
    }
}

/// Returns a self-signed CA certificate with the SPIFFE ID of `ca_domain`.
pub(super) fn ca_certificate(ca_domain: &str) -> CertificateDer<'static> {
    let now = SystemTime::now();
    let td = TrustDomain::new(ca_domain).unwrap();
    let params = tessera_spiffe::x509::ca_params(&td, now, now + Duration::from_secs(3600));
    let key = PrivateKey::generate(KeyAlgorithm::EcP256).unwrap();
    let cert = params.self_signed(&key.to_rcgen().unwrap()).unwrap();
    CertificateDer::from(cert.der().to_vec())
}

/// Returns a bundle of `c.test` whose one X.509 authority is a CA of
/// `ca_domain`.
pub(super) fn bundle_json(ca_domain: &str, sequence: u64) -> Vec<u8> {
    let mut bundle = TrustBundle::new(TrustDomain::new("c.test").unwrap());
    bundle
        .add_x509_authority(ca_certificate(ca_domain))
        .unwrap();
    bundle.set_sequence_number(Some(sequence));
    bundle.to_jwks()
}

/// Returns a bundle of `c.test` with the X.509 authority `ca` and the
/// public keys of `jwt_keys`, given as (key ID, key).
pub(super) fn jwt_bundle_json(
    ca: &CertificateDer<'static>,
    jwt_keys: &[(&str, &PrivateKey)],
    sequence: u64,
) -> Vec<u8> {
    let mut bundle = TrustBundle::new(TrustDomain::new("c.test").unwrap());
    bundle.add_x509_authority(ca.clone()).unwrap();
    for (key_id, key) in jwt_keys {
        bundle
            .add_jwt_authority(JwtAuthority {
                key_id: (*key_id).to_owned(),
                public_key: key.public_key_der(),
                expires_at: None,
            })
            .unwrap();
    }
    bundle.set_sequence_number(Some(sequence));
    bundle.to_jwks()
}

/// Starts domain A with `https_web` peers authenticated by `ca_file`.
pub(super) fn start_with_web_peers(ca_file: &Path) -> Domain {
    Domain::start(
        "a.test",
        &format!(
            "\n[federation]\nhttps_web_ca_file = \"{}\"\n",
            ca_file.display()
        ),
    )
}
