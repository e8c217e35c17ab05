//! The `[federation]` and `[oidc]` tables of the server configuration:
//! the bundle endpoint this server serves, the CA file for `https_web`
//! peers, and the OIDC discovery endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::InvalidKey;

/// Default `spiffe_refresh_hint` that the bundle endpoint publishes.
pub const DEFAULT_ENDPOINT_REFRESH_HINT: Duration = Duration::from_secs(5 * 60);

/// The `[federation]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFederationConfig {
    /// The `[federation.bundle_endpoint]` table; no endpoint when absent.
    pub bundle_endpoint: Option<RawBundleEndpointConfig>,
    /// PEM file of the CA certificates that authenticate `https_web`
    /// bundle endpoints of peers. The system's web roots are not used.
    pub https_web_ca_file: Option<PathBuf>,
}

/// The `[federation.bundle_endpoint]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBundleEndpointConfig {
    /// Address to serve on (`IP:port`); port 0 picks a free port.
    pub address: Option<String>,
    /// `https_spiffe` (the server's own X509-SVID) or `https_web` (the
    /// certificate and key files below).
    pub profile: Option<String>,
    /// PEM certificate chain for `https_web`.
    pub certificate_path: Option<PathBuf>,
    /// PEM PKCS#8 private key for `https_web`.
    pub key_path: Option<PathBuf>,
    /// `spiffe_refresh_hint` of the served bundle, such as `5m`.
    pub refresh_hint: Option<String>,
}

/// The `[oidc]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidcConfig {
    /// Address to serve OIDC discovery on (`IP:port`).
    pub address: Option<String>,
    /// Issuer URL, such as `https://oidc.example.org`. JWT-SVIDs carry it
    /// as `iss` unless `jwt_issuer` is set.
    pub issuer: Option<String>,
    /// PEM certificate chain of the HTTPS listener.
    pub certificate_path: Option<PathBuf>,
    /// PEM PKCS#8 private key of the HTTPS listener.
    pub key_path: Option<PathBuf>,
}

/// The authentication profile a bundle endpoint presents to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
    /// The server's own X509-SVID, checked by clients against its bundle.
    HttpsSpiffe,
    /// A Web PKI certificate and key, reloaded when the files change.
    HttpsWeb(WebCertificatePaths),
}

/// Paths of a certificate chain and its key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebCertificatePaths {
    /// The certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The PKCS#8 private key.
    pub key: PathBuf,
}

/// The checked bundle endpoint settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// TLS profile.
    pub profile: EndpointProfile,
    /// `spiffe_refresh_hint` of the served bundle.
    pub refresh_hint: Duration,
}

/// The checked `[federation]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FederationConfig {
    /// The bundle endpoint to serve, if any.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// CA file for `https_web` peers.
    pub https_web_ca_file: Option<PathBuf>,
}

/// The checked `[oidc]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// Issuer URL, without a trailing slash.
    pub issuer: String,
    /// The HTTPS certificate and key.
    pub certificate: WebCertificatePaths,
}

fn invalid(errors: &mut Vec<InvalidKey>, key: &str, value: Option<&str>, expected: &str) {
    errors.push(InvalidKey {
        key: key.to_owned(),
        value: value.map(str::to_owned),
        expected: expected.to_owned(),
    });
}

fn resolve_address(
    key: &str,
    value: Option<&str>,
    errors: &mut Vec<InvalidKey>,
) -> Option<SocketAddr> {
    const EXPECTED: &str = "an IP:port address such as \"127.0.0.1:8443\"";
    let Some(value) = value else {
        invalid(errors, key, None, EXPECTED);
        return None;
    };
    match value.parse() {
        Ok(address) => Some(address),
        Err(_) => {
            invalid(errors, key, Some(value), EXPECTED);
            None
        }
    }
}

fn resolve_web_paths(
    table: &str,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    errors: &mut Vec<InvalidKey>,
) -> Option<WebCertificatePaths> {
    if certificate.is_none() {
        let name = format!("{table}.certificate_path");
        invalid(errors, &name, None, "the path of a PEM certificate chain");
    }
    if key.is_none() {
        let name = format!("{table}.key_path");
        invalid(errors, &name, None, "the path of a PEM PKCS#8 private key");
    }
    Some(WebCertificatePaths {
        certificate: certificate?,
        key: key?,
    })
}

/// Checks the `[federation]` table, recording each invalid key.
pub(crate) fn resolve_federation(
    raw: RawFederationConfig,
    errors: &mut Vec<InvalidKey>,
) -> FederationConfig {
    FederationConfig {
        bundle_endpoint: raw
            .bundle_endpoint
            .and_then(|endpoint| resolve_bundle_endpoint(endpoint, errors)),
        https_web_ca_file: raw.https_web_ca_file,
    }
}

fn resolve_bundle_endpoint(
    raw: RawBundleEndpointConfig,
    errors: &mut Vec<InvalidKey>,
) -> Option<BundleEndpointConfig> {
    const TABLE: &str = "federation.bundle_endpoint";
    let address = resolve_address(&format!("{TABLE}.address"), raw.address.as_deref(), errors);
    let profile = match raw.profile.as_deref() {
        None | Some("https_spiffe") => Some(EndpointProfile::HttpsSpiffe),
        Some("https_web") => resolve_web_paths(TABLE, raw.certificate_path, raw.key_path, errors)
            .map(EndpointProfile::HttpsWeb),
        Some(other) => {
            let key = format!("{TABLE}.profile");
            invalid(
                errors,
                &key,
                Some(other),
                "\"https_spiffe\" or \"https_web\"",
            );
            None
        }
    };
    let refresh_hint = match raw.refresh_hint.as_deref() {
        None => Some(DEFAULT_ENDPOINT_REFRESH_HINT),
        Some(text) => match humantime::parse_duration(text) {
            Ok(hint) if hint >= Duration::from_secs(1) => Some(hint),
            _ => {
                let key = format!("{TABLE}.refresh_hint");
                invalid(
                    errors,
                    &key,
                    Some(text),
                    "a duration of at least 1s, such as \"5m\"",
                );
                None
            }
        },
    };
    Some(BundleEndpointConfig {
        address: address?,
        profile: profile?,
        refresh_hint: refresh_hint?,
    })
}

/// Checks the `[oidc]` table, recording each invalid key. Returns `None`
/// when the table is absent or invalid.
pub(crate) fn resolve_oidc(
    raw: Option<RawOidcConfig>,
    errors: &mut Vec<InvalidKey>,
) -> Option<OidcConfig> {
    let raw = raw?;
    let address = resolve_address("oidc.address", raw.address.as_deref(), errors);
    let issuer = match raw.issuer.as_deref() {
        Some(issuer) if issuer.starts_with("https://") && issuer.len() > "https://".len() => {
            Some(issuer.trim_end_matches('/').to_owned())
        }
        other => {
            invalid(
                errors,
                "oidc.issuer",
                other,
                "an https:// URL such as \"https://oidc.example.org\"",
            );
            None
        }
    };
    let certificate = resolve_web_paths("oidc", raw.certificate_path, raw.key_path, errors);
    Some(OidcConfig {
        address: address?,
        issuer: issuer?,
        certificate: certificate?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(profile: Option<&str>, cert: bool) -> RawBundleEndpointConfig {
        RawBundleEndpointConfig {
            address: Some("127.0.0.1:8443".into()),
            profile: profile.map(str::to_owned),
            certificate_path: cert.then(|| PathBuf::from("/c.pem")),
            key_path: cert.then(|| PathBuf::from("/k.pem")),
            refresh_hint: None,
        }
    }

    #[test]
    fn bundle_endpoint_profiles() {
        let cases = [
            (None, false, true),
            (Some("https_spiffe"), false, true),
            (Some("https_web"), true, true),
            (Some("https_web"), false, false),
            (Some("http"), false, false),
        ];
        for (profile, cert, valid) in cases {
            let mut errors = Vec::new();
            let resolved = resolve_bundle_endpoint(endpoint(profile, cert), &mut errors);
            assert_eq!(
                resolved.is_some(),
                valid,
                "profile {profile:?}, certificate {cert}"
            );
            assert_eq!(errors.is_empty(), valid, "profile {profile:?}: {errors:?}");
        }
    }

    #[test]
    fn oidc_issuer_must_be_https() {
        let raw = RawOidcConfig {
            address: Some("127.0.0.1:8444".into()),
            issuer: Some("http://oidc.example.org".into()),
            certificate_path: Some("/c.pem".into()),
            key_path: Some("/k.pem".into()),
        };
        let mut errors = Vec::new();
        assert!(resolve_oidc(Some(raw), &mut errors).is_none());
        assert_eq!(errors[0].key, "oidc.issuer");
    }
}
