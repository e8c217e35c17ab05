//! Reaching a PostgreSQL or MySQL server: TLS settings as URL parameters,
//! a first connection made outside the pool so that a failure reports its
//! cause, and hints that name what to check for each kind of failure.
//!
//! sqlx's pool retries a refused connection until its acquire timeout and
//! then reports only that it timed out. Opening the store and a failed
//! health ping therefore connect once directly, which returns the driver's
//! own error: connection refused, unknown database, authentication or TLS.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Connection};

use crate::StoreError;
use crate::backend::Backend;
use crate::options::TlsSettings;

/// First wait after a refused connection. It doubles after each retry,
/// up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Names of one TLS setting among a backend's URL parameters.
struct TlsParameter {
    /// The name the store writes.
    name: &'static str,
    /// Every name sqlx 0.8 accepts for the setting.
    aliases: &'static [&'static str],
}

/// URL parameters of the TLS settings, in the order mode, CA file,
/// certificate file, key file.
fn tls_parameters(backend: Backend) -> [TlsParameter; 4] {
    let parameter = |name, aliases| TlsParameter { name, aliases };
    match backend {
        Backend::Sqlite | Backend::Postgres => [
            parameter("sslmode", &["sslmode", "ssl-mode"]),
            parameter("sslrootcert", &["sslrootcert", "ssl-root-cert", "ssl-ca"]),
            parameter("sslcert", &["sslcert", "ssl-cert"]),
            parameter("sslkey", &["sslkey", "ssl-key"]),
        ],
        Backend::MySql => [
            parameter("ssl-mode", &["ssl-mode", "sslmode"]),
            parameter("ssl-ca", &["ssl-ca", "sslca"]),
            parameter("ssl-cert", &["ssl-cert", "sslcert"]),
            parameter("ssl-key", &["ssl-key", "sslkey"]),
        ],
    }
}

fn parse_url(backend: Backend, url: &str) -> Result<url::Url, StoreError> {
    url::Url::parse(url).map_err(|e| StoreError::InvalidUrl {
        scheme: backend.name(),
        reason: format!("the URL does not parse: {e}"),
    })
}

/// Returns the TLS settings that the query parameters of a PostgreSQL or
/// MySQL `url` set.
pub(crate) fn tls_settings_in_url(backend: Backend, url: &str) -> Result<TlsSettings, StoreError> {
    let parsed = parse_url(backend, url)?;
    let [mode, ca, cert, key] = tls_parameters(backend);
    let find = |parameter: &TlsParameter| {
        parsed
            .query_pairs()
            .find(|(name, _)| parameter.aliases.contains(&name.as_ref()))
            .map(|(_, value)| value.into_owned())
    };
    Ok(TlsSettings {
        mode: find(&mode),
        ca_file: find(&ca).map(Into::into),
        cert_file: find(&cert).map(Into::into),
        key_file: find(&key).map(Into::into),
    })
}

/// Returns `url` with `tls` appended as query parameters. A setting that
/// the URL already has is an error, so that neither silently wins.
pub(crate) fn with_tls_parameters(
    backend: Backend,
    url: &str,
    tls: &TlsSettings,
) -> Result<String, StoreError> {
    if tls.is_empty() {
        return Ok(url.to_owned());
    }
    let in_url = tls_settings_in_url(backend, url)?;
    let [mode, ca, cert, key] = tls_parameters(backend);
    let settings = [
        (mode, tls.mode.clone(), in_url.mode.is_some()),
        (
            ca,
            path_text(backend, tls.ca_file.as_deref())?,
            in_url.ca_file.is_some(),
        ),
        (
            cert,
            path_text(backend, tls.cert_file.as_deref())?,
            in_url.cert_file.is_some(),
        ),
        (
            key,
            path_text(backend, tls.key_file.as_deref())?,
            in_url.key_file.is_some(),
        ),
    ];

    let mut parsed = parse_url(backend, url)?;
    for (parameter, value, already_set) in settings {
        let Some(value) = value else { continue };
        if already_set {
            return Err(StoreError::InvalidUrl {
                scheme: backend.name(),
                reason: format!(
                    "the URL sets the {} parameter and the TLS settings set it too; keep one",
                    parameter.name
                ),
            });
        }
        parsed.query_pairs_mut().append_pair(parameter.name, &value);
    }
    Ok(parsed.to_string())
}

fn path_text(
    backend: Backend,
    path: Option<&std::path::Path>,
) -> Result<Option<String>, StoreError> {
    let Some(path) = path else { return Ok(None) };
    match path.to_str() {
        Some(text) => Ok(Some(text.to_owned())),
        None => Err(StoreError::InvalidUrl {
            scheme: backend.name(),
            reason: format!("the TLS file path {} is not valid UTF-8", path.display()),
        }),
    }
}

/// Treatment of a refused connection by [`connect_directly`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnRefused {
    /// Retry until the timeout, for a database server that is starting.
    Retry,
    /// Report it at once.
    Fail,
}

/// Opens and closes one connection to `url` outside the pool, within
/// `timeout`. `redacted_url` is the redacted URL for the error.
pub(crate) async fn connect_directly(
    backend: Backend,
    url: &str,
    redacted_url: &str,
    timeout: Duration,
    on_refused: OnRefused,
) -> Result<(), StoreError> {
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(url)
        .map_err(|error| connect_failed(backend, redacted_url, &error))?
        .disable_statement_logging();
    let started = Instant::now();
    let deadline = started + timeout;
    let mut delay = FIRST_RETRY_DELAY;
    let mut retried = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(remaining, AnyConnection::connect_with(&options)).await;
        let error = match attempt {
            Ok(Ok(conn)) => {
                // The connection was only a check, so an error while
                // closing it is ignored.
                let _ = conn.close().await;
                return Ok(());
            }
            Ok(Err(error)) => error,
            Err(_elapsed) => return Err(connect_timed_out(backend, redacted_url, timeout)),
        };
        let retry = on_refused == OnRefused::Retry
            && is_retryable(&error)
            && Instant::now() + delay < deadline;
        if !retry {
            let mut failure = connect_failed(backend, redacted_url, &error);
            if let (true, StoreError::Connect { cause, .. }) = (retried, &mut failure) {
                let waited = seconds_text(started.elapsed());
                cause.push_str(&format!(" (after retrying for {waited})"));
            }
            return Err(failure);
        }
        retried = true;
        tracing::debug!(backend = backend.name(), url = redacted_url, error = %error, "datastore not ready; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// Returns whether a connect error may pass by itself: a refused
/// connection while the server starts, or PostgreSQL's
/// `too_many_connections` (53300) and `cannot_connect_now` (57P03).
fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("53300" | "57P03")),
        _ => false,
    }
}

/// Builds [`StoreError::Connect`] for a driver error, with a hint chosen
/// from its kind.
pub(crate) fn connect_failed(
    backend: Backend,
    redacted_url: &str,
    error: &sqlx::Error,
) -> StoreError {
    StoreError::Connect {
        backend: backend.name(),
        url: redacted_url.to_owned(),
        cause: error.to_string(),
        hint: match backend {
            Backend::Sqlite => {
                "check that the database file's directory exists and that this user may \
                 read and write the file and the directory"
            }
            Backend::Postgres | Backend::MySql => hint(error),
        },
    }
}

fn connect_timed_out(backend: Backend, redacted_url: &str, timeout: Duration) -> StoreError {
    StoreError::Connect {
        backend: backend.name(),
        url: redacted_url.to_owned(),
        cause: format!(
            "no connection within {} (datastore.acquire_timeout)",
            seconds_text(timeout)
        ),
        hint: "check that the host and port are right and that no firewall drops the \
               connection, or raise datastore.acquire_timeout for a slow network",
    }
}

fn seconds_text(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

const TLS_HINT: &str = "check datastore.ssl_mode, ssl_ca_file, ssl_cert_file and ssl_key_file, \
                        and that the database server has TLS enabled";

/// Returns what the operator should check for a connect error.
fn hint(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "check that the database server is running and listens on that host and port"
        }
        // rustls reports a failed handshake, such as an unknown issuer,
        // as invalid data.
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => TLS_HINT,
        sqlx::Error::Io(_) => {
            "check the host and port in datastore.url and that the network lets this host \
             reach the database server"
        }
        sqlx::Error::Tls(_) => TLS_HINT,
        sqlx::Error::Database(db) => database_hint(db.code().as_deref(), db.message()),
        sqlx::Error::Configuration(_) => "check datastore.url and the datastore TLS settings",
        _ => "check datastore.url and that the database server accepts connections from this host",
    }
}

/// Hints for errors that the database server returned, by SQLSTATE.
fn database_hint(code: Option<&str>, message: &str) -> &'static str {
    // PostgreSQL's invalid_catalog_name; MySQL and MariaDB report an
    // unknown database as ER_BAD_DB_ERROR with the generic SQLSTATE 42000,
    // so their message is matched.
    if code == Some("3D000") || message.starts_with("Unknown database") {
        return "check the database name in datastore.url: the database must exist \
                (CREATE DATABASE), and Tessera creates its tables in it";
    }
    // MySQL's ER_DBACCESS_DENIED_ERROR (1044) has SQLSTATE 42000.
    if code.is_some_and(|code| code.starts_with("28")) || message.starts_with("Access denied") {
        return "check the user name and password in datastore.url, the client certificate \
                (datastore.ssl_cert_file and ssl_key_file) when the database server requires \
                one, and that the database server lets this user connect from this host";
    }
    "check datastore.url and the database server's log"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: Option<&str>, ca: Option<&str>) -> TlsSettings {
        TlsSettings {
            mode: mode.map(str::to_owned),
            ca_file: ca.map(Into::into),
            ..TlsSettings::default()
        }
    }

    #[test]
    fn with_tls_parameters_names_per_backend() {
        let settings = TlsSettings {
            mode: Some("verify-full".into()),
            ca_file: Some("/etc/tessera/db ca.pem".into()),
            cert_file: Some("/etc/tessera/client.pem".into()),
            key_file: Some("/etc/tessera/client.key".into()),
        };
        let url = with_tls_parameters(Backend::Postgres, "postgres://u:p@db/t", &settings).unwrap();
        assert_eq!(
            url,
            "postgres://u:p@db/t?sslmode=verify-full&sslrootcert=%2Fetc%2Ftessera%2Fdb+ca.pem\
             &sslcert=%2Fetc%2Ftessera%2Fclient.pem&sslkey=%2Fetc%2Ftessera%2Fclient.key"
        );

        let settings = tls(Some("VERIFY_IDENTITY"), Some("/ca.pem"));
        let url = with_tls_parameters(
            Backend::MySql,
            "mysql://root@db/t?charset=utf8mb4",
            &settings,
        )
        .unwrap();
        assert_eq!(
            url,
            "mysql://root@db/t?charset=utf8mb4&ssl-mode=VERIFY_IDENTITY&ssl-ca=%2Fca.pem"
        );
    }

    #[test]
    fn with_tls_parameters_rejects_setting_in_both() {
        let cases = [
            (
                Backend::Postgres,
                "postgres://db/t?ssl-mode=require",
                tls(Some("require"), None),
            ),
            (
                Backend::Postgres,
                "postgres://db/t?ssl-ca=/a.pem",
                tls(None, Some("/b.pem")),
            ),
            (
                Backend::MySql,
                "mysql://db/t?sslmode=REQUIRED",
                tls(Some("REQUIRED"), None),
            ),
        ];
        for (backend, url, settings) in cases {
            let err = with_tls_parameters(backend, url, &settings).expect_err(url);
            assert!(err.to_string().contains("keep one"), "{url}: {err}");
        }
    }

    #[test]
    fn tls_settings_in_url_reads_aliases() {
        let url = "postgres://db/t?ssl-mode=require&sslrootcert=/ca.pem&ssl-key=/k.pem";
        let settings = tls_settings_in_url(Backend::Postgres, url).unwrap();
        assert_eq!(settings.mode.as_deref(), Some("require"));
        assert_eq!(settings.ca_file.as_deref(), Some("/ca.pem".as_ref()));
        assert_eq!(settings.cert_file, None);
        assert_eq!(settings.key_file.as_deref(), Some("/k.pem".as_ref()));
    }

    #[test]
    fn hint_for_each_database_error() {
        let cases = [
            (
                Some("3D000"),
                "database \"x\" does not exist",
                "database name",
            ),
            (Some("42000"), "Unknown database 'x'", "database name"),
            (Some("28P01"), "password authentication failed", "password"),
            (Some("28000"), "Access denied for user", "password"),
            (
                Some("42000"),
                "Access denied for user 'a'@'b' to database 'c'",
                "password",
            ),
            (Some("XX000"), "internal error", "server's log"),
        ];
        for (code, message, expected) in cases {
            let hint = database_hint(code, message);
            assert!(hint.contains(expected), "{code:?} {message}: {hint}");
        }
    }

    #[tokio::test]
    async fn connect_directly_reports_refused_connection() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("postgres://tessera:s3cret@127.0.0.1:{port}/tessera");
        let redacted = crate::redact_url(&url);

        let err = connect_directly(
            Backend::Postgres,
            &url,
            &redacted,
            Duration::from_secs(1),
            OnRefused::Fail,
        )
        .await
        .expect_err("nothing listens on the port");
        let message = err.to_string();
        assert!(message.contains(&redacted), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("is running and listens"), "{message}");
    }
}
