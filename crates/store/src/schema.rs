//! Schema migrations. sqlx's migrator records applied versions in the
//! `_sqlx_migrations` table. Servers that start together apply each
//! migration once. On PostgreSQL, sqlx holds an advisory lock while it
//! runs. On MySQL and MariaDB, the store takes a named lock itself. SQLite
//! has no lock, so a migration that loses a race there is retried. A
//! database migrated by a newer build is rejected before anything is
//! applied.

use sqlx::migrate::{Migrate, MigrateError};
use sqlx::{AnyConnection, AnyPool};

use crate::StoreError;
use crate::backend::{Backend, MigrationLock};
use crate::error::query_failed;

/// Applies pending migrations and returns the schema version.
pub(crate) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<i64, StoreError> {
    let supported_version = backend
        .migrator()
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);

    let mut conn = pool
        .acquire()
        .await
        .map_err(query_failed("acquire a connection to migrate the schema"))?;

    let result = migrate_locked(&mut conn, backend, supported_version).await;
    if result.is_err() {
        // A failed run may leave a migration lock held by this session, so
        // the connection is closed instead of going back to the pool.
        conn.close_on_drop();
    }
    result.map(|()| supported_version)
}

/// Runs the migrator inside the store's own migration lock, when the
/// backend needs one.
async fn migrate_locked(
    conn: &mut AnyConnection,
    backend: Backend,
    supported_version: i64,
) -> Result<(), StoreError> {
    let lock = backend.migration_lock();
    if let Some(lock) = &lock {
        acquire(conn, lock).await?;
    }

    let result = run_migrator(conn, backend).await;
    if let Err(err) = result {
        return Err(migrate_error(conn, err, supported_version).await);
    }

    if let Some(lock) = &lock {
        sqlx::query(lock.release)
            .execute(&mut *conn)
            .await
            .map_err(query_failed("release the migration lock"))?;
    }
    Ok(())
}

async fn acquire(conn: &mut AnyConnection, lock: &MigrationLock) -> Result<(), StoreError> {
    let acquired: Option<i64> = sqlx::query_scalar(lock.acquire)
        .fetch_one(&mut *conn)
        .await
        .map_err(query_failed("take the migration lock"))?;
    if acquired != Some(1) {
        return Err(StoreError::MigrationLockTimeout {
            waited: lock.timeout,
        });
    }
    Ok(())
}

async fn run_migrator(conn: &mut AnyConnection, backend: Backend) -> Result<(), MigrateError> {
    let migrator = backend.migrator();

    // Before it applies anything, the migrator checks that it contains
    // every applied version, and it reports the first one it lacks.
    //
    // NOTE: `run_direct` is hidden from sqlx 0.8's docs; it is `run` on a
    // connection without `run`'s higher-ranked `Acquire` bound, which makes
    // the future not `Send` and so unusable in `tokio::spawn`.
    let mut retries_left = if backend.has_migration_lock() {
        0
    } else {
        migrator.iter().count()
    };
    loop {
        let result = migrator.run_direct(&mut *conn).await;
        if retries_left == 0 || !matches!(result, Err(MigrateError::ExecuteMigration(..))) {
            return result;
        }
        // Without a lock, two processes that open a new database at once
        // may both apply a migration. Each migration runs in a transaction,
        // so the loser's copy fails on the existing tables and rolls back.
        // The next run finds the winner's migration applied, so one retry
        // per migration is enough.
        retries_left -= 1;
    }
}

/// Turns a migrator error into a store error, reporting a database
/// migrated by a newer build as [`StoreError::SchemaTooNew`].
async fn migrate_error(
    conn: &mut AnyConnection,
    err: MigrateError,
    supported_version: i64,
) -> StoreError {
    match err {
        MigrateError::VersionMissing(version) if version > supported_version => {
            let database_version = conn
                .list_applied_migrations()
                .await
                .ok()
                .and_then(|applied| applied.iter().map(|m| m.version).max())
                .unwrap_or(version);
            StoreError::SchemaTooNew {
                database_version,
                supported_version,
            }
        }
        other => StoreError::Migrate(other),
    }
}
