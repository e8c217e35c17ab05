//! Test databases for every backend, and builders for test objects.
//!
//! Each [`TestDb`] is fresh: a SQLite file in a new temporary directory,
//! or a database with a random name on the machine's PostgreSQL server
//! (127.0.0.1:5432, user postgres, trust authentication) or MariaDB/MySQL
//! server (127.0.0.1:3306, user root, empty password), dropped at the end.
//! An unreachable server fails the test unless `TESSERA_SKIP_EXTERNAL_DB=1`
//! is set, which skips the PostgreSQL and MySQL tests with a note.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::io::Write;
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Executor};
use tempfile::TempDir;
use tessera_registration::{EntryId, RegistrationEntry, Selector};
use tessera_spiffe::{SpiffeId, TrustDomain};
use tessera_store::{AttestedAgent, Store};

/// The backends that the shared behavior tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// The environment variable that skips the PostgreSQL and MySQL tests.
const SKIP_EXTERNAL_ENV: &str = "TESSERA_SKIP_EXTERNAL_DB";

/// The administrative connection that creates and drops test databases.
const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MYSQL_ADMIN_URL: &str = "mysql://root@127.0.0.1:3306";

/// A fresh, empty database that is removed when the value is dropped.
pub struct TestDb {
    backend: Backend,
    url: String,
    /// The SQLite database's directory, removed on drop.
    _dir: Option<TempDir>,
    /// The statement that drops a server database on drop.
    drop_statement: Option<String>,
}

impl TestDb {
    /// Creates a database for `backend`. Returns `None` when the backend
    /// is skipped in this environment.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("create a temporary directory");
                let path = dir.path().join("datastore.sqlite3");
                let url = format!("sqlite://{}", path.display());
                Some(TestDb {
                    backend,
                    url,
                    _dir: Some(dir),
                    drop_statement: None,
                })
            }
            Backend::Postgres | Backend::MySql => Self::create_on_server(backend).await,
        }
    }

    /// Creates a database with a random name on the PostgreSQL or MySQL
    /// server.
    async fn create_on_server(backend: Backend) -> Option<TestDb> {
        let server = match backend {
            Backend::Postgres => "PostgreSQL at 127.0.0.1:5432 (user postgres)",
            _ => "MariaDB/MySQL at 127.0.0.1:3306 (user root, empty password)",
        };
        if std::env::var(SKIP_EXTERNAL_ENV).as_deref() == Ok("1") {
            // A direct write, unlike eprintln!, is not captured by the test
            // harness, so the note shows without --nocapture.
            let _ = writeln!(
                std::io::stderr(),
                "note: skipped a {backend:?} test because {SKIP_EXTERNAL_ENV}=1"
            );
            return None;
        }

        let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
        let (url, drop_statement) = match backend {
            Backend::Postgres => (
                format!("postgres://postgres@127.0.0.1:5432/{name}"),
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ),
            _ => (
                format!("mysql://root@127.0.0.1:3306/{name}"),
                format!("DROP DATABASE IF EXISTS {name}"),
            ),
        };

        sqlx::any::install_default_drivers();
        let mut admin = AnyConnection::connect(admin_url(backend))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to {server}: {e}; start the server, or set \
                 {SKIP_EXTERNAL_ENV}=1 to skip the PostgreSQL and MySQL tests"
                )
            });
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("create test database {name} on {server}: {e}"));
        admin.close().await.expect("close the admin connection");

        Some(TestDb {
            backend,
            url,
            _dir: None,
            drop_statement: Some(drop_statement),
        })
    }

    /// Returns the datastore URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens the store, failing the test on error.
    pub async fn open(&self) -> Store {
        Store::open(&self.url)
            .await
            .unwrap_or_else(|e| panic!("open {:?} store: {e}", self.backend))
    }

    /// Runs `sql` on a separate connection, outside the store.
    pub async fn execute(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {:?} database: {e}", self.backend));
        conn.execute(sql)
            .await
            .unwrap_or_else(|e| panic!("run {sql:?}: {e}"));
        conn.close().await.expect("close the test connection");
    }

    /// Makes every insert into the change feed fail, so a write fails
    /// after it changed its own table but before it commits.
    pub async fn break_change_feed(&self) {
        let sql = match self.backend {
            Backend::Sqlite => {
                "CREATE TRIGGER break_change_feed BEFORE INSERT ON changes \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            }
            Backend::Postgres => {
                "CREATE FUNCTION break_change_feed() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
                 CREATE TRIGGER break_change_feed BEFORE INSERT ON changes \
                 FOR EACH ROW EXECUTE FUNCTION break_change_feed()"
            }
            Backend::MySql => {
                "CREATE TRIGGER break_change_feed BEFORE INSERT ON changes FOR EACH ROW \
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'"
            }
        };
        self.execute(sql).await;
    }

    /// Undoes [`TestDb::break_change_feed`].
    pub async fn repair_change_feed(&self) {
        let sql = match self.backend {
            Backend::Sqlite | Backend::MySql => "DROP TRIGGER break_change_feed",
            Backend::Postgres => {
                "DROP TRIGGER break_change_feed ON changes; DROP FUNCTION break_change_feed()"
            }
        };
        self.execute(sql).await;
    }

    /// Returns the migration versions that this build embeds, read from
    /// the backend's migration directory.
    pub fn migration_versions(&self) -> Vec<i64> {
        let dialect = match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut versions: Vec<i64> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|file| {
                let name = file.expect("list the migration directory").file_name();
                let name = name.to_string_lossy();
                let digits = name.split('_').next().unwrap_or_default();
                digits
                    .parse()
                    .unwrap_or_else(|e| panic!("migration file {name} has no version: {e}"))
            })
            .collect();
        versions.sort_unstable();
        versions
    }

    /// Records migration `version` as applied, as a newer build would.
    pub async fn record_migration(&self, version: i64) {
        let checksum = match self.backend {
            Backend::Sqlite | Backend::MySql => "X'00'",
            Backend::Postgres => "'\\x00'::bytea",
        };
        self.execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES ({version}, 'added by a newer build', TRUE, {checksum}, 0)"
        ))
        .await;
    }

    /// Returns how many rows `table` has, read outside the store.
    pub async fn count_rows(&self, table: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {:?} database: {e}", self.backend));
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("count rows of {table}: {e}"));
        conn.close().await.expect("close the test connection");
        count
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(statement) = self.drop_statement.take() else {
            return;
        };
        let admin_url = admin_url(self.backend);

        // Drop runs outside any async context and may run while a failed
        // test unwinds, so the database is dropped on a thread with its
        // own runtime, and a failure is printed instead of panicking.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = AnyConnection::connect(admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute(statement.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: failed to drop test database {}: {e}", self.url),
            Err(_) => eprintln!(
                "warning: the thread dropping test database {} panicked",
                self.url
            ),
        }
    }
}

fn admin_url(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => POSTGRES_ADMIN_URL,
        Backend::MySql => MYSQL_ADMIN_URL,
        Backend::Sqlite => unreachable!("SQLite test databases need no admin connection"),
    }
}

/// Builds an entry with the given IDs and selectors and a value in every
/// optional field, so round trips check every column.
pub fn entry(spiffe_id: &str, parent_id: &str, selectors: &[&str]) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::generate(),
        spiffe_id: SpiffeId::parse(spiffe_id).expect("test SPIFFE ID is valid"),
        parent_id: SpiffeId::parse(parent_id).expect("test parent ID is valid"),
        selectors: selectors
            .iter()
            .map(|s| Selector::parse(s).expect("test selector is valid"))
            .collect(),
        x509_svid_ttl: Some(Duration::from_secs(3600)),
        jwt_svid_ttl: Some(Duration::from_secs(300)),
        federates_with: vec![TrustDomain::new("partner.example").expect("test trust domain")],
        dns_names: vec!["web.example.org".to_owned()],
        hint: "web frontend".to_owned(),
        admin: true,
        downstream: false,
        expires_at: Some(4_102_444_800),
        revision: 0,
        created_at: 0,
    }
}

/// Builds an attested agent with SPIFFE ID `spiffe_id`.
pub fn agent(spiffe_id: &str) -> AttestedAgent {
    AttestedAgent {
        spiffe_id: SpiffeId::parse(spiffe_id).expect("test agent ID is valid"),
        attestation_type: "join_token".to_owned(),
        selectors: vec![Selector::parse("join_token:abc").expect("test selector is valid")],
        x509_svid_serial: "0a1b2c".to_owned(),
        x509_svid_expires_at: 1_900_000_000,
        banned: false,
        created_at: 1_800_000_000,
        last_seen_at: 1_800_000_000,
    }
}

/// Parses a trust domain for a test.
pub fn trust_domain(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("test trust domain is valid")
}

/// How long a test waits for a child process or a concurrent task.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);
