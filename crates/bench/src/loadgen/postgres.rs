//! A database of the run's own on a PostgreSQL server, and the server's
//! transaction counters for it. The database is created through the
//! maintenance database that the given URL names, and dropped at the end.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

/// A database that the run created and drops with [`BenchDatabase::drop`].
pub struct BenchDatabase {
    /// URL of the maintenance database, such as
    /// `postgres://postgres@127.0.0.1:5432/postgres`.
    admin_url: String,
    name: String,
}

impl BenchDatabase {
    /// Creates a database with a name of its own on the server of
    /// `admin_url`.
    pub async fn create(admin_url: &str) -> Result<Self> {
        let (_, path) = split_database(admin_url)?;
        if path.is_empty() {
            bail!("--postgres-url {admin_url} names no database; add one such as /postgres");
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or_default();
        let name = format!("tessera_bench_{}_{nanos}", std::process::id());

        let mut admin = connect(admin_url).await?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("creating database {name}"))?;
        admin.close().await?;
        eprintln!("created database {name}");
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    /// URL of the created database, for the server's datastore. Query
    /// parameters of the maintenance URL are not carried over.
    pub fn url(&self) -> Result<String> {
        let (server, _) = split_database(&self.admin_url)?;
        Ok(format!("{server}/{}", self.name))
    }

    /// Returns the server's version string.
    pub async fn server_version(&self) -> Result<String> {
        let mut admin = connect(&self.admin_url).await?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut admin)
            .await?;
        admin.close().await?;
        Ok(version)
    }

    /// Returns the transactions committed and rolled back in the database
    /// so far, from `pg_stat_database`. Read through the maintenance
    /// database, so the reading itself is not counted. The figure lags by
    /// a few seconds, because PostgreSQL backends report their counts
    /// periodically rather than at each commit.
    pub async fn transactions(&self) -> Result<i64> {
        let mut admin = connect(&self.admin_url).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = $1",
        )
        .bind(&self.name)
        .fetch_one(&mut admin)
        .await
        .with_context(|| format!("reading pg_stat_database for {}", self.name))?;
        admin.close().await?;
        Ok(count)
    }

    /// Drops the database, closing the connections that remain.
    pub async fn drop(self) -> Result<()> {
        let mut admin = connect(&self.admin_url).await?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await
            .with_context(|| format!("dropping database {}", self.name))?;
        admin.close().await?;
        eprintln!("dropped database {}", self.name);
        Ok(())
    }
}

async fn connect(url: &str) -> Result<PgConnection> {
    PgConnection::connect(url).await.with_context(|| {
        format!("connecting to PostgreSQL at {url}; start it or pass --postgres-url")
    })
}

/// Splits a PostgreSQL URL into the part before the database name and the
/// database name (with any query string). A URL without a database path
/// has an empty name.
fn split_database(url: &str) -> Result<(&str, &str)> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        bail!("--postgres-url {url} is not a postgres:// URL");
    };
    let scheme_len = url.len() - rest.len();
    match rest.find('/') {
        Some(slash) => Ok((&url[..scheme_len + slash], &rest[slash + 1..])),
        None => Ok((url, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_database_cases() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                ("postgres://postgres@127.0.0.1:5432", "postgres"),
            ),
            (
                "postgresql://u:p@db/maintenance",
                ("postgresql://u:p@db", "maintenance"),
            ),
            ("postgres://127.0.0.1", ("postgres://127.0.0.1", "")),
        ];
        for (url, expected) in cases {
            assert_eq!(split_database(url).expect(url), expected, "{url}");
        }
    }

    #[test]
    fn split_database_rejects_other_schemes() {
        assert!(split_database("mysql://root@127.0.0.1/x").is_err());
    }
}
