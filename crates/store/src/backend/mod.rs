//! Database backends behind one [`Store`](crate::Store).
//!
//! The store keeps a single sqlx `Any` pool and this enum. Every query is
//! written once, in SQL that all three databases accept, so the backends
//! cannot drift apart in behavior. A trait with one implementation per
//! backend would repeat each query three times. A backend module owns only
//! what differs: connection settings, its migrations and DDL, the
//! placeholder style, and how a write transaction starts.

mod mysql;
mod postgres;
mod sqlite;

use std::borrow::Cow;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

use crate::options::{PoolSettings, TlsSettings};
use crate::{StoreError, connect};

/// Returns sqlx pool options for `settings`.
fn pool_options(settings: &PoolSettings) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(settings.idle_timeout)
        .max_lifetime(settings.max_lifetime)
}

/// Statements that take and release a lock on the whole database.
pub(crate) struct MigrationLock {
    /// Statement that returns 1 once the lock is held and 0 after
    /// `timeout`.
    pub(crate) acquire: &'static str,
    /// Statement that releases the lock.
    pub(crate) release: &'static str,
    /// How long `acquire` waits.
    pub(crate) timeout: Duration,
}

/// The database behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, for `sqlite:` URLs.
    Sqlite,
    /// PostgreSQL, for `postgres://` and `postgresql://` URLs.
    Postgres,
    /// MySQL or MariaDB, for `mysql://` and `mariadb://` URLs.
    MySql,
}

/// PostgreSQL's `sslmode` values, as libpq names them.
const POSTGRES_SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// MySQL's `--ssl-mode` values.
const MYSQL_SSL_MODES: &[&str] = &[
    "DISABLED",
    "PREFERRED",
    "REQUIRED",
    "VERIFY_CA",
    "VERIFY_IDENTITY",
];

impl Backend {
    /// Picks the backend from the scheme of a datastore URL.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnsupportedScheme`] for an unknown scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(StoreError::UnsupportedScheme {
                scheme: scheme.to_owned(),
            }),
        }
    }

    /// Returns the backend name used in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    /// Returns the TLS mode names the backend accepts, in increasing
    /// strictness; empty for SQLite, which has no network connection.
    /// sqlx compares them case-insensitively.
    pub fn ssl_modes(self) -> &'static [&'static str] {
        match self {
            Self::Sqlite => &[],
            Self::Postgres => POSTGRES_SSL_MODES,
            Self::MySql => MYSQL_SSL_MODES,
        }
    }

    /// Returns the TLS mode that verifies the server's certificate chain
    /// and host name (`verify-full`, `VERIFY_IDENTITY`).
    pub fn verifying_ssl_mode(self) -> Option<&'static str> {
        self.ssl_modes().last().copied()
    }

    /// Returns the TLS mode that turns TLS off (`disable`, `DISABLED`).
    pub fn disabled_ssl_mode(self) -> Option<&'static str> {
        self.ssl_modes().first().copied()
    }

    /// Returns the TLS settings that the query parameters of `url` set,
    /// under any name sqlx accepts; none for SQLite.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidUrl`] when the URL does not parse.
    pub fn tls_settings_in_url(self, url: &str) -> Result<TlsSettings, StoreError> {
        match self {
            Self::Sqlite => Ok(TlsSettings::default()),
            Self::Postgres | Self::MySql => connect::tls_settings_in_url(self, url),
        }
    }

    /// Opens a connection pool for `url` with the backend's settings.
    pub(crate) async fn connect(
        self,
        url: &str,
        redacted_url: &str,
        pool: &PoolSettings,
    ) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        let options = pool_options(pool);
        let connected = match self {
            Self::Sqlite => return sqlite::connect(url, options).await,
            Self::Postgres => postgres::connect(url, options).await,
            Self::MySql => mysql::connect(url, options).await,
        };
        connected.map_err(|error| connect::connect_failed(self, redacted_url, &error))
    }

    /// Returns the backend's embedded migrations.
    pub(crate) fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite => &sqlite::MIGRATOR,
            Self::Postgres => &postgres::MIGRATOR,
            Self::MySql => &mysql::MIGRATOR,
        }
    }

    /// Returns the lock that the store takes around migrations itself,
    /// for backends where sqlx's migration lock does not hold.
    pub(crate) fn migration_lock(self) -> Option<MigrationLock> {
        match self {
            Self::Sqlite | Self::Postgres => None,
            Self::MySql => Some(MigrationLock {
                acquire: mysql::MIGRATION_LOCK,
                release: mysql::MIGRATION_UNLOCK,
                timeout: mysql::MIGRATION_LOCK_TIMEOUT,
            }),
        }
    }

    /// Returns whether a lock keeps two processes from applying the same
    /// migration at once: sqlx's advisory lock on PostgreSQL, or
    /// [`Backend::migration_lock`].
    pub(crate) fn has_migration_lock(self) -> bool {
        match self {
            Self::Sqlite => false,
            Self::Postgres | Self::MySql => true,
        }
    }

    /// Returns the statement that begins a write transaction, when it is
    /// not the driver's plain `BEGIN`.
    pub(crate) fn begin_statement(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => Some(sqlite::BEGIN_WRITE),
            Self::Postgres | Self::MySql => None,
        }
    }

    /// Returns the statement that a write transaction runs first to
    /// serialize writers, when beginning the transaction does not.
    pub(crate) fn write_lock_statement(self) -> Option<&'static str> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(postgres::WRITE_LOCK),
            Self::MySql => Some(mysql::WRITE_LOCK),
        }
    }

    /// Rewrites a statement written with `?` placeholders for the backend.
    /// Statements in this crate never contain a literal question mark.
    pub(crate) fn sql(self, statement: &str) -> Cow<'_, str> {
        match self {
            Self::Sqlite | Self::MySql => Cow::Borrowed(statement),
            Self::Postgres => Cow::Owned(postgres::numbered_placeholders(statement)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url_picks_backend() {
        let cases = [
            ("sqlite::memory:", Backend::Sqlite),
            (
                "sqlite:///var/lib/tessera/datastore.sqlite3",
                Backend::Sqlite,
            ),
            ("sqlite:datastore.sqlite3", Backend::Sqlite),
            ("postgres://postgres@127.0.0.1/tessera", Backend::Postgres),
            ("postgresql://postgres@127.0.0.1/tessera", Backend::Postgres),
            ("mysql://root@127.0.0.1/tessera", Backend::MySql),
            ("mariadb://root@127.0.0.1/tessera", Backend::MySql),
        ];
        for (url, expected) in cases {
            let backend = Backend::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(backend, expected, "{url}");
        }
    }

    #[test]
    fn from_url_rejects_unknown_scheme() {
        for (url, scheme) in [("redis://127.0.0.1", "redis"), ("/var/lib/x.db", "")] {
            let err = Backend::from_url(url).expect_err(url);
            assert!(
                matches!(&err, StoreError::UnsupportedScheme { scheme: s } if s == scheme),
                "{url}: {err:?}"
            );
            let message = err.to_string();
            assert!(message.contains("sqlite, postgres and mysql"), "{message}");
        }
    }
}
