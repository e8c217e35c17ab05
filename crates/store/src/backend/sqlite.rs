//! SQLite, the embedded default. A database file is created when missing
//! and runs with a WAL journal and `synchronous=FULL`. SQLite then syncs
//! the WAL at every commit, so a write that returned survives a crash of
//! the process, and of the machine when the disk honors `fsync`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::StoreError;

/// The SQLite schema migrations, embedded at build time.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Takes the write lock when the transaction begins instead of at its
/// first write. A deferred transaction that reads and then writes fails
/// with `SQLITE_BUSY` at once when another connection committed in
/// between, without waiting for the busy timeout.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// How long a connection waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The storage location of a SQLite database.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    Memory,
    File(PathBuf),
}

/// Parses `sqlite::memory:`, `sqlite://PATH` and `sqlite:PATH`. Paths are
/// taken literally, without percent-decoding.
fn parse_url(url: &str) -> Result<Location, StoreError> {
    let invalid = |reason: String| StoreError::InvalidUrl {
        scheme: "sqlite",
        reason,
    };

    let rest = url
        .strip_prefix("sqlite:")
        .ok_or_else(|| invalid("the URL does not start with sqlite:".to_owned()))?;
    let path = rest.strip_prefix("//").unwrap_or(rest);

    if path == ":memory:" {
        return Ok(Location::Memory);
    }
    if path.is_empty() {
        return Err(invalid(
            "the URL names no database file; write sqlite:///absolute/path.db".to_owned(),
        ));
    }
    if path.contains('?') {
        return Err(invalid(format!(
            "query parameters are not supported (in {path:?}); the store always creates the \
             file and sets its own options"
        )));
    }
    Ok(Location::File(PathBuf::from(path)))
}

/// Builds the URL that sqlx's Any driver parses for a database file.
/// sqlx percent-decodes the path, so characters that would end the path
/// or start an escape are encoded.
fn any_url_for_file(path: &Path) -> Result<String, StoreError> {
    let path = path.to_str().ok_or_else(|| StoreError::InvalidUrl {
        scheme: "sqlite",
        reason: format!("the path {} is not valid UTF-8", path.display()),
    })?;
    let encoded = path
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    // mode=rwc opens the file read-write and creates it when missing.
    Ok(format!("sqlite://{encoded}?mode=rwc"))
}

/// Opens a pool for a SQLite URL with `options`, except that an in-memory
/// database always gets a pool of one connection.
pub(super) async fn connect(url: &str, options: AnyPoolOptions) -> Result<AnyPool, StoreError> {
    let connect_failed =
        |error| crate::connect::connect_failed(super::Backend::Sqlite, url, &error);

    match parse_url(url)? {
        Location::Memory => {
            // Every connection to sqlite::memory: opens its own empty
            // database, so the pool keeps exactly one connection forever.
            options
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _| Box::pin(set_connection_pragmas(conn)))
                .connect("sqlite::memory:")
                .await
                .map_err(connect_failed)
        }
        Location::File(path) => {
            let path = absolute_path(&path)?;
            let any_url = any_url_for_file(&path)?;
            options
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        set_connection_pragmas(conn).await?;
                        enable_wal(conn).await
                    })
                })
                .connect(&any_url)
                .await
                .map_err(connect_failed)
        }
    }
}

/// Resolves a relative path against the working directory and checks
/// that its directory exists, because SQLite creates only the file.
fn absolute_path(path: &Path) -> Result<PathBuf, StoreError> {
    let absolute = std::path::absolute(path).map_err(|e| StoreError::InvalidUrl {
        scheme: "sqlite",
        reason: format!("cannot resolve the path {}: {e}", path.display()),
    })?;

    if let Some(dir) = absolute.parent()
        && !dir.is_dir()
    {
        return Err(StoreError::InvalidUrl {
            scheme: "sqlite",
            reason: format!(
                "the directory {} does not exist; create it before starting Tessera",
                dir.display()
            ),
        });
    }
    Ok(absolute)
}

/// Sets the options that SQLite keeps per connection.
async fn set_connection_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let busy_timeout_ms = BUSY_TIMEOUT.as_millis();
    conn.execute(format!("PRAGMA busy_timeout = {busy_timeout_ms}").as_str())
        .await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    conn.execute("PRAGMA synchronous = FULL").await?;
    Ok(())
}

/// Switches the database file to WAL mode, which is stored in the file,
/// and checks that SQLite accepted it: SQLite keeps the old journal mode
/// without an error on file systems that lack shared memory.
async fn enable_wal(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let row = sqlx::query("PRAGMA journal_mode = WAL")
        .fetch_one(&mut *conn)
        .await?;
    let mode: String = row.try_get(0)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(sqlx::Error::Configuration(
            format!(
                "SQLite kept journal mode {mode:?} instead of WAL; put the database on a \
                 local file system"
            )
            .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_url_accepts_forms() {
        let cases = [
            ("sqlite::memory:", Location::Memory),
            ("sqlite://:memory:", Location::Memory),
            (
                "sqlite:///var/lib/t.db",
                Location::File("/var/lib/t.db".into()),
            ),
            ("sqlite://data/t.db", Location::File("data/t.db".into())),
            ("sqlite:t.db", Location::File("t.db".into())),
            (
                "sqlite:///tmp/100%.db",
                Location::File("/tmp/100%.db".into()),
            ),
        ];
        for (url, expected) in cases {
            let location = parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(location, expected, "{url}");
        }
    }

    #[test]
    fn parse_url_rejects_invalid() {
        for url in ["sqlite:", "sqlite://", "sqlite:///t.db?mode=ro"] {
            let err = parse_url(url).expect_err(url);
            assert!(
                matches!(err, StoreError::InvalidUrl { .. }),
                "{url}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn file_connections_use_wal_and_full_sync() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("pragmas.db").display());
        let pool = connect(&url, AnyPoolOptions::new()).await.unwrap();

        // Two connections held at once are two different connections.
        let mut first = pool.acquire().await.unwrap();
        let mut second = pool.acquire().await.unwrap();
        for conn in [&mut *first, &mut *second] {
            let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(journal_mode, "wal");

            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(synchronous, 2, "2 is FULL");

            let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(foreign_keys, 1);

            let busy_timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(busy_timeout, 5000);
        }
    }

    #[tokio::test]
    async fn connect_rejects_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let url = format!("sqlite://{}/datastore.db", missing.display());

        let err = connect(&url, AnyPoolOptions::new())
            .await
            .expect_err("the directory does not exist");
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn any_url_encodes_special_characters() {
        let url = any_url_for_file(Path::new("/tmp/a%b?c#d.db")).expect("the path is UTF-8");
        assert_eq!(url, "sqlite:///tmp/a%25b%3Fc%23d.db?mode=rwc");
    }
}
