//! The Tessera registration store: registration entries, attested agents,
//! join tokens, trust bundles and a change feed, in SQLite, PostgreSQL or
//! MySQL/MariaDB through `sqlx`.
//!
//! Every write runs in one transaction that also appends a row to the
//! change feed, so servers sharing a database can follow each other's
//! writes by polling [`Store::changes_since`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod agents;
mod backend;
mod bundles;
mod changes;
mod connect;
mod entries;
mod error;
mod federations;
mod options;
mod redact;
mod row;
mod schema;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, AnyPool, Transaction};

pub use agents::AttestedAgent;
pub use backend::Backend;
pub use changes::{Change, ChangeKind};
pub use error::{ObjectKind, StoreError};
pub use federations::FederationRecord;
pub use options::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_LIFETIME,
    DEFAULT_MIN_CONNECTIONS, PoolSettings, StoreOptions, TlsSettings,
};
pub use redact::redact_url;

use connect::OnRefused;
use error::query_failed;

/// A position in the change feed. Every write to entries, agents or
/// bundles gets a new, higher revision; 0 means "before the first write".
pub type Revision = u64;

/// A handle to the registration store. Cloning is cheap: clones share one
/// connection pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    target: Arc<Target>,
}

/// Maximum time [`Store::ping`] spends on its diagnosing connection,
/// after it already waited the acquire timeout for the pool.
const MAX_DIAGNOSIS_TIME: Duration = Duration::from_secs(5);

/// Connection target of the pool, kept to diagnose a failed ping.
struct Target {
    /// The URL with TLS parameters; it may contain a password.
    connect_url: String,
    /// The URL with its password masked.
    redacted_url: String,
    acquire_timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `url` with the default pool settings and applies
    /// pending schema migrations; see [`Store::open_with`].
    ///
    /// # Errors
    ///
    /// As [`Store::open_with`].
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(&StoreOptions::new(url)).await
    }

    /// Opens the store and applies pending schema migrations.
    ///
    /// Supported URLs:
    /// - `sqlite:///abs/path.db`, `sqlite://relative/path.db` or
    ///   `sqlite:path.db`: the file is created when missing; WAL journal,
    ///   `synchronous=FULL`, so a write that returned survives a crash of
    ///   the process, and of the machine when the disk honors `fsync`.
    /// - `sqlite::memory:`: a private in-memory database, lost on drop.
    /// - `postgres://user:password@host:port/database` (or
    ///   `postgresql://`) and `mysql://user:password@host:port/database`
    ///   (or `mariadb://`), with sqlx's connection parameters. The database
    ///   must exist; the store creates its tables.
    ///
    /// For PostgreSQL and MySQL, a first connection is made outside the
    /// pool, retrying a refused connection until
    /// [`PoolSettings::acquire_timeout`], so that a failure reports the
    /// driver's cause instead of the pool's timeout.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnsupportedScheme`] for an unknown scheme,
    /// [`StoreError::InvalidUrl`], [`StoreError::Connect`],
    /// [`StoreError::SchemaTooNew`] when a newer build migrated the
    /// database, [`StoreError::MigrationLockTimeout`] and
    /// [`StoreError::Migrate`].
    pub async fn open_with(options: &StoreOptions) -> Result<Store, StoreError> {
        let backend = Backend::from_url(&options.url)?;
        let target = Target {
            connect_url: connect::with_tls_parameters(backend, &options.url, &options.tls)?,
            redacted_url: redact_url(&options.url),
            acquire_timeout: options.pool.acquire_timeout,
        };
        tracing::info!(
            backend = backend.name(),
            url = %target.redacted_url,
            max_connections = options.pool.max_connections,
            acquire_timeout = ?options.pool.acquire_timeout,
            "opening the datastore"
        );

        if backend != Backend::Sqlite {
            connect::connect_directly(
                backend,
                &target.connect_url,
                &target.redacted_url,
                target.acquire_timeout,
                OnRefused::Retry,
            )
            .await?;
        }
        let pool = backend
            .connect(&target.connect_url, &target.redacted_url, &options.pool)
            .await?;

        let schema_version = match schema::migrate(&pool, backend).await {
            Ok(version) => version,
            Err(err) => {
                pool.close().await;
                return Err(err);
            }
        };

        tracing::info!(
            backend = backend.name(),
            url = %target.redacted_url,
            schema_version,
            "opened the datastore"
        );
        Ok(Store {
            pool,
            backend,
            target: Arc::new(target),
        })
    }

    /// Returns the backend name: `sqlite`, `postgres` or `mysql`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Runs a trivial query to check that the database is reachable. It
    /// waits up to the pool's acquire timeout for a connection, then up to
    /// 5 s more for a diagnosing connection when none came.
    ///
    /// # Errors
    ///
    /// [`StoreError::Connect`] with the driver's cause when no connection
    /// could be had, found by one more connection attempt outside the
    /// pool; [`StoreError::Query`] when the query itself failed.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let error = match sqlx::query("SELECT 1").execute(&self.pool).await {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        if !matches!(error, sqlx::Error::PoolTimedOut) || self.backend == Backend::Sqlite {
            return Err(query_failed("ping")(error));
        }

        let target = &self.target;
        let diagnosis = connect::connect_directly(
            self.backend,
            &target.connect_url,
            &target.redacted_url,
            target.acquire_timeout.min(MAX_DIAGNOSIS_TIME),
            OnRefused::Fail,
        )
        .await;
        match diagnosis {
            Err(connect_error) => Err(connect_error),
            // The database came back between the two attempts.
            Ok(()) => Err(query_failed("ping")(error)),
        }
    }

    /// Closes every connection. Later calls on this store or its clones
    /// fail with [`StoreError::Query`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a write transaction. Writers are serialized: SQLite takes its
    /// write lock at `BEGIN IMMEDIATE`, and PostgreSQL and MySQL lock the
    /// single `store_state` row before anything else. So change-feed
    /// revisions are handed out in commit order, and a reader that has
    /// seen revision N never later finds a new change below N.
    async fn begin_write(
        &self,
        operation: &'static str,
    ) -> Result<Transaction<'static, Any>, StoreError> {
        let begun = match self.backend.begin_statement() {
            Some(statement) => self.pool.begin_with(statement).await,
            None => self.pool.begin().await,
        };
        let mut tx = begun.map_err(query_failed(operation))?;

        if let Some(lock) = self.backend.write_lock_statement() {
            sqlx::query(lock)
                .execute(&mut *tx)
                .await
                .map_err(query_failed(operation))?;
        }
        Ok(tx)
    }

    /// Rewrites a statement written with `?` placeholders for the backend.
    fn sql<'a>(&self, statement: &'a str) -> std::borrow::Cow<'a, str> {
        self.backend.sql(statement)
    }
}

/// Returns the current time in Unix seconds.
fn unix_now() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// Converts a stored revision to a [`Revision`]. Stored revisions come
/// from an auto-increment column and are never negative.
fn to_revision(stored: i64) -> Revision {
    Revision::try_from(stored).unwrap_or(0)
}

/// Converts a [`Revision`] for binding; values past `i64::MAX` saturate.
fn from_revision(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}
