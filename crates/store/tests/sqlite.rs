//! SQLite-only behavior: file creation, in-memory stores, and durability
//! of acknowledged writes when the writing process is killed.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::process::Stdio;

use tessera_registration::EntryId;
use tessera_store::{Store, StoreError};
use tokio::io::{AsyncBufReadExt, BufReader};

use common::{TEST_TIMEOUT, entry};

const WEB: &str = "spiffe://example.org/web";
const NODE: &str = "spiffe://example.org/tessera/agent/join_token/0123456789abcdef";

/// Names the database file for [`durability_child_writer`].
const CHILD_DB_ENV: &str = "TESSERA_STORE_DURABILITY_CHILD_DB";

/// How many acknowledged writes the parent collects before the kill.
const ACKNOWLEDGED_WRITES: usize = 20;

#[tokio::test]
async fn open_creates_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sqlite3");
    assert!(!path.exists());

    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.is_file(), "open created {}", path.display());
    assert_eq!(store.backend_name(), "sqlite");
    store.ping().await.unwrap();
}

#[tokio::test]
async fn open_accepts_relative_path() {
    let dir = tempfile::tempdir().unwrap();
    // A path from the working directory up to the root and down into the
    // temporary directory.
    let cwd = std::env::current_dir().unwrap();
    let mut relative = std::path::PathBuf::new();
    for _ in cwd.components().skip(1) {
        relative.push("..");
    }
    let relative = relative
        .join(dir.path().strip_prefix("/").unwrap())
        .join("relative.sqlite3");

    Store::open(&format!("sqlite:{}", relative.display()))
        .await
        .unwrap();
    assert!(dir.path().join("relative.sqlite3").is_file());
}

#[tokio::test]
async fn memory_store_keeps_data_between_calls() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let other = Store::open("sqlite::memory:").await.unwrap();

    let (created, _) = store
        .create_entry(&entry(WEB, NODE, &["unix:uid:1"]))
        .await
        .unwrap();
    assert_eq!(
        store.get_entry(&created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        other.get_entry(&created.id).await.unwrap(),
        None,
        "each in-memory store is a separate database"
    );
}

#[tokio::test]
async fn open_rejects_unknown_scheme() {
    let err = Store::open("redis://127.0.0.1:6379")
        .await
        .expect_err("redis is no backend");
    assert!(matches!(&err, StoreError::UnsupportedScheme { scheme } if scheme == "redis"));
    let message = err.to_string();
    assert!(message.contains("\"redis\""), "{message}");
    assert!(message.contains("sqlite, postgres and mysql"), "{message}");
}

/// Writes entries to the database named by [`CHILD_DB_ENV`] and prints
/// `written <entry ID>` after each write returns, until it is killed. Run
/// by [`entries_survive_sigkill`] as a child process.
#[test]
#[ignore = "runs only as the child process of entries_survive_sigkill"]
fn durability_child_writer() {
    use std::io::Write;

    let path = std::env::var(CHILD_DB_ENV)
        .expect("CHILD_DB_ENV is set by entries_survive_sigkill; run that test instead");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(&format!("sqlite://{path}")).await.unwrap();
        let mut stdout = std::io::stdout();
        for uid in 0.. {
            let selector = format!("unix:uid:{uid}");
            let (created, _) = store
                .create_entry(&entry(WEB, NODE, &[&selector]))
                .await
                .unwrap();
            writeln!(stdout, "written {}", created.id).unwrap();
            stdout.flush().unwrap();
        }
    });
}

/// Every write that returned before the writer got SIGKILL is in the
/// database afterwards.
///
/// A kill does not drop the page cache, so this checks that the store does
/// not acknowledge before commit; `synchronous=FULL`, which covers a power
/// loss, is checked by a unit test of the SQLite backend.
#[tokio::test]
async fn entries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("durability.sqlite3");

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child_writer",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(CHILD_DB_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acknowledged = Vec::new();
    let collect = async {
        while acknowledged.len() < ACKNOWLEDGED_WRITES {
            let line = lines.next_line().await.unwrap();
            let Some(line) = line else {
                panic!(
                    "the writer exited after {} writes; see its stderr above",
                    acknowledged.len()
                );
            };
            if let Some(id) = line.strip_prefix("written ") {
                acknowledged.push(EntryId::parse(id).unwrap());
            }
        }
    };
    tokio::time::timeout(TEST_TIMEOUT, collect)
        .await
        .expect("the writer acknowledged its writes in time");

    // tokio's Child::kill sends SIGKILL on Unix.
    child.kill().await.unwrap();
    let status = child.wait().await.unwrap();
    assert!(
        !status.success(),
        "the writer was killed, not finished: {status}"
    );

    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for id in &acknowledged {
        let stored = store.get_entry(id).await.unwrap();
        assert!(
            stored.is_some(),
            "acknowledged entry {id} is missing after SIGKILL"
        );
    }
}
