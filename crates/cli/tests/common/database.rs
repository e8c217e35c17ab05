//! Fresh databases on the machine's PostgreSQL server (127.0.0.1:5432,
//! user postgres, trust authentication) and MariaDB/MySQL server
//! (127.0.0.1:3306, user root, empty password) for tests in which several
//! servers share one datastore. Each database has a random name and is
//! dropped with the value. An unreachable database server fails the test
//! unless `TESSERA_SKIP_EXTERNAL_DB=1` is set, which skips it with a note.

use std::io::Write;

use sqlx::{AnyConnection, Connection, Executor};

/// The environment variable that skips the PostgreSQL and MySQL tests.
const SKIP_EXTERNAL_ENV: &str = "TESSERA_SKIP_EXTERNAL_DB";

/// A database server that several Tessera servers can share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MySql,
}

impl Backend {
    /// URL of the administrative connection that creates and drops
    /// databases.
    fn admin_url(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres://postgres@127.0.0.1:5432/postgres",
            Backend::MySql => "mysql://root@127.0.0.1:3306",
        }
    }

    /// Describes the database server, for messages.
    fn describe(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL at 127.0.0.1:5432 (user postgres)",
            Backend::MySql => "MariaDB/MySQL at 127.0.0.1:3306 (user root, empty password)",
        }
    }
}

/// A fresh, empty database, dropped with the value.
pub struct ExternalDb {
    backend: Backend,
    name: String,
}

impl ExternalDb {
    /// Creates a database on `backend`'s server. Returns `None`, after a
    /// note on stderr, when `TESSERA_SKIP_EXTERNAL_DB=1` is set.
    pub fn create(backend: Backend) -> Option<ExternalDb> {
        if std::env::var(SKIP_EXTERNAL_ENV).as_deref() == Ok("1") {
            // A direct write, unlike eprintln!, is not captured by the test
            // harness, so the note shows without --nocapture.
            let _ = writeln!(
                std::io::stderr(),
                "note: skipped a {backend:?} test because {SKIP_EXTERNAL_ENV}=1"
            );
            return None;
        }

        let name = format!("tessera_e2e_{}", uuid::Uuid::new_v4().simple());
        let statement = format!("CREATE DATABASE {name}");
        run_admin(backend, &statement).unwrap_or_else(|e| {
            panic!(
                "failed to create test database {name} on {}: {e}; start the server, or set \
                 {SKIP_EXTERNAL_ENV}=1 to skip the PostgreSQL and MySQL tests",
                backend.describe()
            )
        });
        Some(ExternalDb { backend, name })
    }

    /// Returns the backend the database lives on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Returns the datastore URL that a Tessera server is configured with.
    pub fn url(&self) -> String {
        match self.backend {
            Backend::Postgres => format!("postgres://postgres@127.0.0.1:5432/{}", self.name),
            Backend::MySql => format!("mysql://root@127.0.0.1:3306/{}", self.name),
        }
    }

    /// Runs a query that returns one integer, on a connection of its own.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let url = self.url();
        let statement = sql.to_owned();
        block_on(async move {
            let mut conn = AnyConnection::connect(&url).await?;
            let value: i64 = sqlx::query_scalar(&statement).fetch_one(&mut conn).await?;
            conn.close().await?;
            Ok(value)
        })
        .unwrap_or_else(|e| panic!("query {sql:?} on {:?} failed: {e}", self.backend))
    }
}

impl Drop for ExternalDb {
    fn drop(&mut self) {
        let statement = match self.backend {
            Backend::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Backend::MySql => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        // A failed drop must not turn a passing test into a panic, or a
        // panicking one into an abort, so it is only reported.
        if let Err(e) = run_admin(self.backend, &statement) {
            eprintln!("warning: failed to drop test database {}: {e}", self.name);
        }
    }
}

/// Runs `statement` on the backend's administrative connection.
fn run_admin(backend: Backend, statement: &str) -> Result<(), String> {
    let statement = statement.to_owned();
    block_on(async move {
        let mut admin = AnyConnection::connect(backend.admin_url()).await?;
        admin.execute(statement.as_str()).await?;
        admin.close().await
    })
}

/// Runs `future` on a runtime of its own on a new thread, so that it works
/// from synchronous tests and from `Drop` during unwinding alike.
fn block_on<T: Send + 'static>(
    future: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, String> {
    sqlx::any::install_default_drivers();
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("failed to start a tokio runtime: {e}"))?;
        runtime.block_on(future).map_err(|e| e.to_string())
    });
    worker
        .join()
        .unwrap_or_else(|_| Err("the database thread panicked".to_owned()))
}
