//! MySQL and MariaDB, for several servers that share one database. A
//! committed write is as durable as `innodb_flush_log_at_trx_commit`
//! makes it; its default, 1, flushes the log at every commit.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

/// The MySQL schema migrations, embedded at build time.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/mysql");

/// Locks the `store_state` row until the transaction ends, so write
/// transactions run one at a time.
pub(super) const WRITE_LOCK: &str =
    "SELECT pruned_through FROM store_state WHERE id = 1 FOR UPDATE";

/// Takes a server-wide lock named after the database around migrations.
/// sqlx 0.8 calls `GET_LOCK(name, -1)` and ignores the result; MariaDB
/// (checked on 10.11) returns NULL for a negative timeout instead of
/// waiting, so sqlx's own lock does not exclude a second server there.
/// This statement returns 1 once the lock is held and 0 after the timeout.
pub(super) const MIGRATION_LOCK: &str =
    "SELECT GET_LOCK(CONCAT('tessera-migrate:', SHA1(DATABASE())), 300)";

/// Releases [`MIGRATION_LOCK`].
pub(super) const MIGRATION_UNLOCK: &str =
    "SELECT RELEASE_LOCK(CONCAT('tessera-migrate:', SHA1(DATABASE())))";

/// How long [`MIGRATION_LOCK`] waits, as written in the statement.
pub(super) const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(300);

/// Opens a pool for a `mysql://` or `mariadb://` URL.
pub(super) async fn connect(url: &str, options: AnyPoolOptions) -> Result<AnyPool, sqlx::Error> {
    options
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Strict mode makes a value that does not fit its column an
                // error instead of a silently truncated write.
                conn.execute(
                    "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')",
                )
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}
