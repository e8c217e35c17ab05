//! Settings for opening a store: the datastore URL, the connection pool
//! and TLS to PostgreSQL and MySQL/MariaDB.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::redact::redact_url;

/// Default maximum number of open connections in the pool (sqlx's default).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// Default number of connections the pool keeps open while idle.
pub const DEFAULT_MIN_CONNECTIONS: u32 = 0;
/// Default time to wait for a connection, at startup and for each query.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time after which an idle connection above `min_connections` is
/// closed (sqlx's default).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default age after which a connection is closed and replaced (sqlx's
/// default).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Everything needed to open a [`Store`](crate::Store).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The datastore URL. It may contain a password, so `Debug` and every
    /// log line and error show it through [`redact_url`].
    pub url: String,
    /// Connection pool settings.
    pub pool: PoolSettings,
    /// TLS settings for PostgreSQL and MySQL/MariaDB.
    pub tls: TlsSettings,
}

impl StoreOptions {
    /// Returns options for `url` with the default pool and no TLS settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool: PoolSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("url", &redact_url(&self.url))
            .field("pool", &self.pool)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Connection pool settings, applied to sqlx's pool. An in-memory SQLite
/// store ignores them and keeps exactly one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Maximum number of open connections.
    pub max_connections: u32,
    /// Number of connections kept open even while idle.
    pub min_connections: u32,
    /// How long opening the store waits for the database to accept a
    /// connection, and how long a query waits for a free connection.
    pub acquire_timeout: Duration,
    /// Idle time after which a connection above `min_connections` is closed.
    pub idle_timeout: Duration,
    /// Age after which a connection is closed and replaced.
    pub max_lifetime: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            min_connections: DEFAULT_MIN_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }
}

/// TLS settings for PostgreSQL and MySQL/MariaDB, passed to sqlx as
/// parameters of the connection URL. `None` leaves the URL's own
/// parameter, or sqlx's default, in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The backend's TLS mode name, such as `verify-full` for PostgreSQL
    /// or `VERIFY_IDENTITY` for MySQL; see [`Backend::ssl_modes`](crate::Backend::ssl_modes).
    pub mode: Option<String>,
    /// PEM file of the CA certificates that sign the database server's
    /// certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Returns whether no TLS setting is given.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}
