//! A certificate and key read from PEM files for the `https_web` profile
//! and OIDC discovery. A watcher checks the files' modification times on
//! a short interval and swaps in the new pair, so a renewed certificate
//! is served without a restart and without dropping open connections.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::WebCertificatePaths;
use crate::federation::FederationError;

/// Interval between checks of the files' modification times.
pub(crate) const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The served certificate, swapped when its files change.
pub(crate) struct WebCertificate {
    paths: WebCertificatePaths,
    current: ArcSwap<CertifiedKey>,
    loaded_mtimes: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl fmt::Debug for WebCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebCertificate")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl WebCertificate {
    /// Reads the certificate chain and key.
    pub fn load(paths: WebCertificatePaths) -> Result<Self, FederationError> {
        let mtimes = modification_times(&paths);
        let key = read_certified_key(&paths)?;
        Ok(Self {
            paths,
            current: ArcSwap::from_pointee(key),
            loaded_mtimes: Mutex::new(mtimes),
        })
    }

    /// Reads the files again when either modification time changed, and
    /// returns whether a new pair is served. A pair that fails to load is
    /// logged and the old one stays; it is retried at the next change.
    pub fn reload_if_changed(&self) -> bool {
        let mtimes = modification_times(&self.paths);
        let mut loaded = self
            .loaded_mtimes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *loaded == mtimes {
            return false;
        }
        *loaded = mtimes;
        match read_certified_key(&self.paths) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(certificate = %self.paths.certificate.display(), "reloaded the HTTPS certificate");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to reload the HTTPS certificate; serving the previous one");
                false
            }
        }
    }

    /// Checks the files every [`RELOAD_CHECK_INTERVAL`] until `stopped`
    /// completes.
    pub async fn watch(self: Arc<Self>, stopped: impl Future<Output = ()>) {
        tokio::pin!(stopped);
        let mut interval = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                _ = interval.tick() => {}
            }
            let this = Arc::clone(&self);
            // File reads stay off the async workers. A panic in the check
            // is only logged, because the previous pair stays served.
            if let Err(e) = tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                tracing::warn!(error = %e, "the HTTPS certificate check failed");
            }
        }
    }
}

impl ResolvesServerCert for WebCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modification_times(paths: &WebCertificatePaths) -> (Option<SystemTime>, Option<SystemTime>) {
    let mtime = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (mtime(&paths.certificate), mtime(&paths.key))
}

fn read_certified_key(paths: &WebCertificatePaths) -> Result<CertifiedKey, FederationError> {
    let invalid = |path: &Path, reason: String| FederationError::WebCertificate {
        path: path.to_path_buf(),
        reason,
    };

    let chain_pem = std::fs::read(&paths.certificate)
        .map_err(|e| invalid(&paths.certificate, e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> = pem::parse_many(&chain_pem)
        .map_err(|e| invalid(&paths.certificate, e.to_string()))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if chain.is_empty() {
        return Err(invalid(
            &paths.certificate,
            "no CERTIFICATE block found".to_owned(),
        ));
    }

    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(&paths.key).map_err(|e| invalid(&paths.key, e.to_string()))?,
    );
    let block = pem::parse(&*key_pem).map_err(|e| invalid(&paths.key, e.to_string()))?;
    if block.tag() != "PRIVATE KEY" {
        let reason = format!(
            "expected a PKCS#8 \"PRIVATE KEY\" block, found {:?}",
            block.tag()
        );
        return Err(invalid(&paths.key, reason));
    }
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(block.into_contents()));
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| invalid(&paths.key, e.to_string()))?;

    let key = CertifiedKey::new(chain, signing_key);
    key.keys_match().map_err(|e| {
        invalid(
            &paths.key,
            format!("the key does not match the certificate: {e}"),
        )
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    #[test]
    fn web_certificate_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "one.example");
        let paths = WebCertificatePaths {
            certificate: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let served = WebCertificate::load(paths).unwrap();
        assert_eq!(served.current.load().cert[0].as_ref(), first.as_slice());
        assert!(!served.reload_if_changed());

        // Modification times have a coarse resolution on some file systems.
        std::thread::sleep(Duration::from_millis(20));
        let second = write_pair(dir.path(), "two.example");
        let later = SystemTime::now() + Duration::from_secs(5);
        for name in ["cert.pem", "key.pem"] {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join(name))
                .unwrap();
            file.set_modified(later).unwrap();
        }
        assert!(served.reload_if_changed());
        assert_eq!(served.current.load().cert[0].as_ref(), second.as_slice());
    }

    #[test]
    fn web_certificate_keeps_old_pair_on_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "one.example");
        let paths = WebCertificatePaths {
            certificate: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        let served = WebCertificate::load(paths).unwrap();
        std::fs::write(dir.path().join("key.pem"), "garbage").unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("key.pem"))
            .unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();

        assert!(!served.reload_if_changed());
        assert_eq!(served.current.load().cert[0].as_ref(), first.as_slice());
    }
}
