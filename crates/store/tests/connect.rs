//! Opening a store on PostgreSQL and MySQL/MariaDB with pool and TLS
//! settings, and the errors of a database that cannot be reached. TLS
//! cases depend on the machine's servers: the PostgreSQL case needs
//! `ssl = on` and the MySQL case needs TLS off, and each is skipped with a
//! note otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::io::Write;
use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use tessera_store::{PoolSettings, Store, StoreError, StoreOptions, TlsSettings};

use common::{Backend, TestDb};

const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";
const MYSQL_ADMIN_URL: &str = "mysql://root@127.0.0.1:3306?ssl-mode=DISABLED";

fn note(text: &str) {
    // Written directly so that it shows without --nocapture.
    let _ = writeln!(std::io::stderr(), "note: {text}");
}

fn database_name(db: &TestDb) -> String {
    db.url().rsplit('/').next().unwrap().to_owned()
}

async fn admin_scalar(url: &str, query: &str) -> String {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.unwrap();
    let value: String = sqlx::query_scalar(query)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    value
}

/// Counts the connections to `db` that use TLS (`ssl = true`) or not.
async fn postgres_connections(db: &TestDb, ssl: bool) -> i64 {
    let query = format!(
        "SELECT COUNT(*)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = '{}' AND s.ssl = {ssl}",
        database_name(db)
    );
    admin_scalar(POSTGRES_ADMIN_URL, &query)
        .await
        .parse()
        .unwrap()
}

fn with_tls(db: &TestDb, mode: &str) -> StoreOptions {
    StoreOptions {
        tls: TlsSettings {
            mode: Some(mode.to_owned()),
            ..TlsSettings::default()
        },
        ..StoreOptions::new(db.url())
    }
}

#[tokio::test]
async fn postgres_ssl_mode_reaches_driver() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    if admin_scalar(POSTGRES_ADMIN_URL, "SHOW ssl").await != "on" {
        note("skipped: PostgreSQL at 127.0.0.1:5432 runs with ssl = off");
        return;
    }

    let plain = Store::open_with(&with_tls(&db, "disable")).await.unwrap();
    assert!(postgres_connections(&db, false).await >= 1);
    assert_eq!(postgres_connections(&db, true).await, 0);
    plain.close().await;

    let encrypted = Store::open_with(&with_tls(&db, "require")).await.unwrap();
    encrypted.ping().await.unwrap();
    assert!(postgres_connections(&db, true).await >= 1);
    assert_eq!(postgres_connections(&db, false).await, 0);
    encrypted.close().await;
}

#[tokio::test]
async fn postgres_unverified_certificate_rejected() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    if admin_scalar(POSTGRES_ADMIN_URL, "SHOW ssl").await != "on" {
        note("skipped: PostgreSQL at 127.0.0.1:5432 runs with ssl = off");
        return;
    }

    // The server's certificate is not signed by a public root, and no
    // ssl_ca_file adds its CA.
    let err = Store::open_with(&with_tls(&db, "verify-full"))
        .await
        .expect_err("the certificate cannot be verified");
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("datastore.ssl_mode"), "{message}");
    assert!(message.contains(db.url()), "{message}");
}

#[tokio::test]
async fn mysql_required_tls_unavailable_reported() {
    let Some(db) = TestDb::create(Backend::MySql).await else {
        return;
    };
    let have_ssl = admin_scalar(MYSQL_ADMIN_URL, "SELECT @@have_ssl").await;
    if have_ssl == "YES" {
        note("skipped: MySQL at 127.0.0.1:3306 has TLS enabled");
        return;
    }

    let err = Store::open_with(&with_tls(&db, "REQUIRED"))
        .await
        .expect_err("the server has no TLS");
    let message = err.to_string();
    assert!(message.contains("does not support TLS"), "{message}");
    assert!(message.contains("has TLS enabled"), "{message}");
}

#[tokio::test]
async fn postgres_unknown_database_named() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let url = format!(
        "postgres://postgres:s3cret@127.0.0.1:5432/{}_missing",
        database_name(&db)
    );

    let err = Store::open(&url)
        .await
        .expect_err("the database is missing");
    let message = err.to_string();
    assert!(
        message.contains("postgres://postgres:***@127.0.0.1:5432/"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("CREATE DATABASE"), "{message}");
}

#[tokio::test]
async fn postgres_pool_keeps_min_connections() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let options = StoreOptions {
        pool: PoolSettings {
            max_connections: 4,
            min_connections: 3,
            acquire_timeout: Duration::from_secs(5),
            ..PoolSettings::default()
        },
        ..StoreOptions::new(db.url())
    };

    let store = Store::open_with(&options).await.unwrap();
    let open = postgres_connections(&db, false).await + postgres_connections(&db, true).await;
    assert!(open >= 3, "{open} connections open");
    assert!(open <= 4, "{open} connections open");
    store.close().await;
}
