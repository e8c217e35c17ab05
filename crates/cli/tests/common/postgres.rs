//! Test databases on the machine's PostgreSQL server (127.0.0.1:5432,
//! user postgres, trust authentication), created and dropped with `psql`.
//! An unreachable server fails the test unless `TESSERA_SKIP_EXTERNAL_DB=1`
//! is set, which skips it with a note.

use std::io::Write;
use std::process::Command;

/// The environment variable that skips tests that need PostgreSQL.
const SKIP_EXTERNAL_ENV: &str = "TESSERA_SKIP_EXTERNAL_DB";

/// PostgreSQL's address on this machine.
pub const POSTGRES_ADDRESS: &str = "127.0.0.1:5432";

/// A database with a random name, dropped on drop.
pub struct PostgresDb {
    pub name: String,
}

impl PostgresDb {
    /// Creates the database, or returns `None` when PostgreSQL tests are
    /// skipped.
    pub fn create() -> Option<PostgresDb> {
        if std::env::var(SKIP_EXTERNAL_ENV).as_deref() == Ok("1") {
            let _ = writeln!(
                std::io::stderr(),
                "note: skipped a PostgreSQL test because {SKIP_EXTERNAL_ENV}=1"
            );
            return None;
        }
        let name = format!("tessera_e2e_{}", random_suffix());
        psql("postgres", &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!(
                "cannot create a database on PostgreSQL at {POSTGRES_ADDRESS}: {e}; start \
                 it, or set {SKIP_EXTERNAL_ENV}=1 to skip the PostgreSQL tests"
            )
        });
        Some(PostgresDb { name })
    }

    /// Runs `statement` in this database and returns psql's output.
    pub fn execute(&self, statement: &str) -> String {
        psql(&self.name, statement).unwrap_or_else(|e| panic!("{statement}: {e}"))
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql("postgres", &statement) {
            eprintln!("warning: failed to drop test database {}: {e}", self.name);
        }
    }
}

/// Runs one statement with `psql` and returns its unaligned output.
fn psql(database: &str, statement: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            database,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", statement])
        .output()
        .map_err(|e| format!("failed to run psql: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Returns 16 hex digits that differ between calls and processes.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", hasher.finish())
}
