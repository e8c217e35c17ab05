//! The `[datastore]` table: the datastore URL, the connection pool and TLS
//! to PostgreSQL and MySQL/MariaDB, checked into [`StoreOptions`].
//!
//! TLS settings reach sqlx as parameters of the URL, because the store's
//! `Any` driver builds each backend's connect options from the URL alone.
//! A setting may be written either as a key here or as a URL parameter,
//! not both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_store::{
    Backend, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_LIFETIME, DEFAULT_MIN_CONNECTIONS, PoolSettings, StoreOptions, TlsSettings,
    redact_url,
};

use super::InvalidKey;
use super::keys::invalid;

/// Upper bound of `max_connections`, far above what one server needs;
/// it catches a mistyped number before the database rejects connections.
const MAX_CONNECTIONS_LIMIT: i64 = 1000;
/// Bounds of `acquire_timeout`.
const ACQUIRE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(600));
/// Bounds of `idle_timeout` and `max_lifetime`.
const CONNECTION_AGE_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 60 * 60));

/// The `[datastore]` table as written. `Debug` masks the URL's password.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatastoreConfig {
    /// Datastore URL, such as `sqlite:///var/lib/tessera/datastore.sqlite3`.
    pub url: Option<String>,
    /// Maximum number of open connections.
    pub max_connections: Option<i64>,
    /// Number of connections kept open while idle.
    pub min_connections: Option<i64>,
    /// Maximum wait for a connection, such as `10s`.
    pub acquire_timeout: Option<String>,
    /// Idle time after which a connection is closed, such as `10m`.
    pub idle_timeout: Option<String>,
    /// Age after which a connection is replaced, such as `30m`.
    pub max_lifetime: Option<String>,
    /// TLS mode: PostgreSQL's `sslmode` or MySQL's `ssl-mode` names.
    pub ssl_mode: Option<String>,
    /// PEM file of the CAs that sign the database server's certificate.
    pub ssl_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain.
    pub ssl_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub ssl_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for RawDatastoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDatastoreConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca_file", &self.ssl_ca_file)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("ssl_key_file", &self.ssl_key_file)
            .finish()
    }
}

/// Checks the `[datastore]` table. The URL defaults to a SQLite file in
/// `data_dir`.
pub(super) fn resolve_datastore(
    raw: RawDatastoreConfig,
    data_dir: Option<&Path>,
    errors: &mut Vec<InvalidKey>,
) -> Option<StoreOptions> {
    let url = resolve_datastore_url(raw.url.clone(), data_dir, errors);
    let pool = resolve_pool(&raw, errors);
    let tls = match &url {
        Some(url) => resolve_tls(&raw, url, errors),
        None => None,
    };
    Some(StoreOptions {
        url: url?,
        pool: pool?,
        tls: tls?,
    })
}

pub(super) fn resolve_datastore_url(
    value: Option<String>,
    data_dir: Option<&Path>,
    errors: &mut Vec<InvalidKey>,
) -> Option<String> {
    const SCHEMES: [&str; 5] = [
        "sqlite:",
        "postgres://",
        "postgresql://",
        "mysql://",
        "mariadb://",
    ];
    let Some(url) = value else {
        let path = data_dir?.join("datastore.sqlite3");
        return Some(format!("sqlite://{}", path.display()));
    };
    if SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        return Some(url);
    }
    // The URL may contain a password, so only its scheme is written.
    let scheme = url.split_once(':').map_or("(none)", |(scheme, _)| scheme);
    invalid(
        errors,
        "datastore.url",
        Some(&format!("<URL with scheme {scheme}>")),
        "a URL starting with sqlite:, postgres://, postgresql://, mysql:// or mariadb://",
    );
    None
}

fn resolve_pool(raw: &RawDatastoreConfig, errors: &mut Vec<InvalidKey>) -> Option<PoolSettings> {
    let max_connections = resolve_count(
        "datastore.max_connections",
        raw.max_connections,
        DEFAULT_MAX_CONNECTIONS,
        (1, MAX_CONNECTIONS_LIMIT),
        errors,
    );
    let min_connections = resolve_count(
        "datastore.min_connections",
        raw.min_connections,
        DEFAULT_MIN_CONNECTIONS,
        (0, MAX_CONNECTIONS_LIMIT),
        errors,
    );
    let acquire_timeout = resolve_pool_duration(
        "datastore.acquire_timeout",
        raw.acquire_timeout.as_deref(),
        DEFAULT_ACQUIRE_TIMEOUT,
        ACQUIRE_TIMEOUT_RANGE,
        errors,
    );
    let idle_timeout = resolve_pool_duration(
        "datastore.idle_timeout",
        raw.idle_timeout.as_deref(),
        DEFAULT_IDLE_TIMEOUT,
        CONNECTION_AGE_RANGE,
        errors,
    );
    let max_lifetime = resolve_pool_duration(
        "datastore.max_lifetime",
        raw.max_lifetime.as_deref(),
        DEFAULT_MAX_LIFETIME,
        CONNECTION_AGE_RANGE,
        errors,
    );

    let (max_connections, min_connections) = (max_connections?, min_connections?);
    if min_connections > max_connections {
        let expected = format!("at most datastore.max_connections ({max_connections})");
        let written = min_connections.to_string();
        invalid(
            errors,
            "datastore.min_connections",
            Some(&written),
            &expected,
        );
        return None;
    }
    Some(PoolSettings {
        max_connections,
        min_connections,
        acquire_timeout: acquire_timeout?,
        idle_timeout: idle_timeout?,
        max_lifetime: max_lifetime?,
    })
}

fn resolve_count(
    key: &str,
    value: Option<i64>,
    default: u32,
    (min, max): (i64, i64),
    errors: &mut Vec<InvalidKey>,
) -> Option<u32> {
    let Some(value) = value else {
        return Some(default);
    };
    match u32::try_from(value) {
        Ok(count) if (min..=max).contains(&value) => Some(count),
        _ => {
            let written = value.to_string();
            invalid(
                errors,
                key,
                Some(&written),
                &format!("a whole number from {min} to {max}"),
            );
            None
        }
    }
}

fn resolve_pool_duration(
    key: &str,
    value: Option<&str>,
    default: Duration,
    (min, max): (Duration, Duration),
    errors: &mut Vec<InvalidKey>,
) -> Option<Duration> {
    let Some(value) = value else {
        return Some(default);
    };
    let range = format!(
        "a duration from {} to {}",
        humantime::format_duration(min),
        humantime::format_duration(max)
    );
    match humantime::parse_duration(value) {
        Ok(duration) if (min..=max).contains(&duration) => Some(duration),
        Ok(_) => {
            invalid(errors, key, Some(value), &range);
            None
        }
        Err(e) => {
            let expected = format!("{range}, such as \"500ms\", \"10s\" or \"30m\" ({e})");
            invalid(errors, key, Some(value), &expected);
            None
        }
    }
}

/// Checks the TLS keys against the backend of `url` and the URL's own
/// TLS parameters. Giving `ssl_ca_file` without `ssl_mode` selects the
/// mode that verifies the certificate and host name.
fn resolve_tls(
    raw: &RawDatastoreConfig,
    url: &str,
    errors: &mut Vec<InvalidKey>,
) -> Option<TlsSettings> {
    let before = errors.len();
    let backend = match Backend::from_url(url) {
        Ok(backend) => backend,
        Err(e) => {
            invalid(
                errors,
                "datastore.url",
                Some(&redact_url(url)),
                &e.to_string(),
            );
            return None;
        }
    };
    if backend == Backend::Sqlite {
        reject_tls_for_sqlite(raw, errors);
        return (errors.len() == before).then(TlsSettings::default);
    }
    let in_url = match backend.tls_settings_in_url(url) {
        Ok(in_url) => in_url,
        Err(e) => {
            invalid(
                errors,
                "datastore.url",
                Some(&redact_url(url)),
                &e.to_string(),
            );
            return None;
        }
    };

    let ca_file = resolve_pem_file(
        "datastore.ssl_ca_file",
        raw.ssl_ca_file.as_deref(),
        "CERTIFICATE",
        errors,
    );
    let cert_file = resolve_pem_file(
        "datastore.ssl_cert_file",
        raw.ssl_cert_file.as_deref(),
        "CERTIFICATE",
        errors,
    );
    let key_file = resolve_pem_file(
        "datastore.ssl_key_file",
        raw.ssl_key_file.as_deref(),
        "PRIVATE KEY",
        errors,
    );
    check_client_pair(raw, &in_url, errors);
    let mode = resolve_ssl_mode(raw, backend, &in_url, errors);
    check_not_in_url(raw, &in_url, backend, errors);

    if errors.len() != before {
        return None;
    }
    Some(TlsSettings {
        mode,
        ca_file,
        cert_file,
        key_file,
    })
}

fn reject_tls_for_sqlite(raw: &RawDatastoreConfig, errors: &mut Vec<InvalidKey>) {
    const EXPECTED: &str =
        "no TLS setting, because TLS applies only to postgres:// and mysql:// datastore URLs";
    let keys = [
        ("datastore.ssl_mode", raw.ssl_mode.clone()),
        (
            "datastore.ssl_ca_file",
            shown_path(raw.ssl_ca_file.as_deref()),
        ),
        (
            "datastore.ssl_cert_file",
            shown_path(raw.ssl_cert_file.as_deref()),
        ),
        (
            "datastore.ssl_key_file",
            shown_path(raw.ssl_key_file.as_deref()),
        ),
    ];
    for (key, value) in keys {
        if let Some(value) = value {
            invalid(errors, key, Some(&value), EXPECTED);
        }
    }
}

fn shown_path(path: Option<&Path>) -> Option<String> {
    path.map(|path| path.display().to_string())
}

/// Checks that a PEM file is readable and contains a `BEGIN ... {label}`
/// block, and makes its path absolute, because sqlx opens it later from
/// the server's working directory.
fn resolve_pem_file(
    key: &str,
    path: Option<&Path>,
    label: &str,
    errors: &mut Vec<InvalidKey>,
) -> Option<PathBuf> {
    let path = path?;
    let written = path.display().to_string();
    let expected = |detail: String| format!("a readable PEM file with a {label} block ({detail})");
    let absolute = match std::path::absolute(path) {
        Ok(absolute) => absolute,
        Err(e) => {
            invalid(errors, key, Some(&written), &expected(e.to_string()));
            return None;
        }
    };
    let read = std::fs::read(&absolute).map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    match read {
        Ok(text) if text.contains("-----BEGIN") && text.contains(label) => Some(absolute),
        Ok(_) => {
            let detail = format!("no -----BEGIN ...{label}----- block found");
            invalid(errors, key, Some(&written), &expected(detail));
            None
        }
        Err(e) => {
            invalid(errors, key, Some(&written), &expected(e.to_string()));
            None
        }
    }
}

/// Checks that the client certificate and key are given together, in the
/// table or in the URL.
fn check_client_pair(raw: &RawDatastoreConfig, in_url: &TlsSettings, errors: &mut Vec<InvalidKey>) {
    let has_cert = raw.ssl_cert_file.is_some() || in_url.cert_file.is_some();
    let has_key = raw.ssl_key_file.is_some() || in_url.key_file.is_some();
    if has_cert && !has_key {
        invalid(
            errors,
            "datastore.ssl_key_file",
            None,
            "the client certificate's private key, because ssl_cert_file is set",
        );
    }
    if has_key && !has_cert {
        invalid(
            errors,
            "datastore.ssl_cert_file",
            None,
            "the client certificate, because ssl_key_file is set",
        );
    }
}

/// Returns the TLS mode in the backend's spelling, or the verifying mode
/// when only a CA file is given.
fn resolve_ssl_mode(
    raw: &RawDatastoreConfig,
    backend: Backend,
    in_url: &TlsSettings,
    errors: &mut Vec<InvalidKey>,
) -> Option<String> {
    let Some(written) = raw.ssl_mode.as_deref() else {
        let ca_only_here = raw.ssl_ca_file.is_some() && in_url.mode.is_none();
        return ca_only_here
            .then(|| backend.verifying_ssl_mode())
            .flatten()
            .map(str::to_owned);
    };
    let modes = backend.ssl_modes();
    let Some(mode) = modes.iter().find(|m| m.eq_ignore_ascii_case(written)) else {
        let expected = format!("one of {} for a {} URL", modes.join(", "), backend.name());
        invalid(errors, "datastore.ssl_mode", Some(written), &expected);
        return None;
    };

    let has_files =
        raw.ssl_ca_file.is_some() || raw.ssl_cert_file.is_some() || raw.ssl_key_file.is_some();
    if has_files && Some(*mode) == backend.disabled_ssl_mode() {
        invalid(
            errors,
            "datastore.ssl_mode",
            Some(written),
            "a mode that uses TLS, because a TLS file (ssl_ca_file, ssl_cert_file or \
             ssl_key_file) is set",
        );
        return None;
    }
    Some((*mode).to_owned())
}

/// Reports each key that the URL also sets as a query parameter.
fn check_not_in_url(
    raw: &RawDatastoreConfig,
    in_url: &TlsSettings,
    backend: Backend,
    errors: &mut Vec<InvalidKey>,
) {
    let pairs = [
        (
            "datastore.ssl_mode",
            raw.ssl_mode.clone(),
            in_url.mode.is_some(),
        ),
        (
            "datastore.ssl_ca_file",
            shown_path(raw.ssl_ca_file.as_deref()),
            in_url.ca_file.is_some(),
        ),
        (
            "datastore.ssl_cert_file",
            shown_path(raw.ssl_cert_file.as_deref()),
            in_url.cert_file.is_some(),
        ),
        (
            "datastore.ssl_key_file",
            shown_path(raw.ssl_key_file.as_deref()),
            in_url.key_file.is_some(),
        ),
    ];
    for (key, value, also_in_url) in pairs {
        if let (Some(value), true) = (value, also_in_url) {
            let expected = format!(
                "no value, because datastore.url already sets this {} TLS parameter; keep one",
                backend.name()
            );
            invalid(errors, key, Some(&value), &expected);
        }
    }
}
