//! The server and its datastore as an operator sees them: startup errors
//! for a database that cannot be reached or is newer than the binary,
//! and `tessera healthcheck` following the database's reachability while
//! an agent keeps serving its cached SVIDs. PostgreSQL cases use the
//! machine's server at 127.0.0.1:5432.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    COMMAND_TIMEOUT, Cluster, CmdOutput, Options, POSTGRES_ADDRESS, PostgresDb, READY_TIMEOUT,
    TRUST_DOMAIN, TcpProxy, run_with_timeout, spiffe_id, tessera_bin, uid_selector, wait_until,
};

/// Password written into datastore URLs; it must never appear in output.
const PASSWORD: &str = "s3cret-pw";
/// `datastore.acquire_timeout` of these tests.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Startup work besides waiting for the database, on a loaded machine.
const STARTUP_SLACK: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Writes a server configuration with `datastore` as its `[datastore]`
/// table body into `dir` and returns its path.
fn write_server_config(dir: &Path, datastore: &str) -> std::path::PathBuf {
    let data_dir = dir.join("server");
    let config = format!(
        "trust_domain = \"{TRUST_DOMAIN}\"\ndata_dir = \"{}\"\nbind_address = \"127.0.0.1:0\"\n\
         \n[datastore]\n{datastore}\n",
        data_dir.display()
    );
    let path = dir.join("server.toml");
    fs::write(&path, config).unwrap();
    path
}

/// Runs `tessera server run` and returns its output once it has exited,
/// with the time it took.
fn run_server_expecting_exit(config: &Path) -> (CmdOutput, Duration) {
    let mut command = Command::new(tessera_bin());
    command
        .args(["server", "run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG");
    let started = Instant::now();
    let output = run_with_timeout(command, COMMAND_TIMEOUT);
    (output, started.elapsed())
}

fn postgres_url(address: &str, database: &str) -> String {
    format!("postgres://postgres:{PASSWORD}@{address}/{database}")
}

fn redacted_postgres_url(address: &str, database: &str) -> String {
    format!("postgres://postgres:***@{address}/{database}")
}

#[test]
fn server_run_unreachable_database_exits() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let datastore = format!(
        "url = \"{}\"\nacquire_timeout = \"2s\"",
        postgres_url(&address, "tessera")
    );
    let config = write_server_config(dir.path(), &datastore);

    let (output, took) = run_server_expecting_exit(&config);
    println!("the server exited after {took:?}");

    assert!(!output.status.success(), "{output:?}");
    let stderr = &output.stderr;
    assert!(
        stderr.contains(&redacted_postgres_url(&address, "tessera")),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(
        stderr.contains("check that the database server is running"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(!output.stdout.contains(PASSWORD), "{}", output.stdout);
    assert!(
        took < ACQUIRE_TIMEOUT + STARTUP_SLACK,
        "the server took {took:?} to give up"
    );
}

#[test]
fn server_run_missing_database_exits() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("{}_missing", db.name);
    let datastore = format!(
        "url = \"{}\"\nacquire_timeout = \"2s\"",
        postgres_url(POSTGRES_ADDRESS, &missing)
    );
    let config = write_server_config(dir.path(), &datastore);

    let (output, took) = run_server_expecting_exit(&config);
    println!("the server exited after {took:?}");

    assert!(!output.status.success(), "{output:?}");
    let stderr = &output.stderr;
    assert!(
        stderr.contains(&redacted_postgres_url(POSTGRES_ADDRESS, &missing)),
        "{stderr}"
    );
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("CREATE DATABASE"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(
        took < ACQUIRE_TIMEOUT + STARTUP_SLACK,
        "the server took {took:?} to give up"
    );
}

/// Returns the newest PostgreSQL migration version this build embeds.
fn newest_postgres_migration() -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/migrations/postgres");
    fs::read_dir(&dir)
        .unwrap()
        .map(|file| {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            name.split('_').next().unwrap().parse::<i64>().unwrap()
        })
        .max()
        .expect("the build has PostgreSQL migrations")
}

#[test]
fn server_run_newer_schema_exits() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let options = Options {
        extra_server_toml: format!(
            "[datastore]\nurl = \"{}\"\n",
            postgres_url(POSTGRES_ADDRESS, &db.name)
        ),
        ..Options::default()
    };
    let mut cluster = Cluster::start_server_only(options);
    assert!(cluster.stop_server().success());

    let supported = newest_postgres_migration();
    let newer = supported + 1;
    db.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
         execution_time) VALUES ({newer}, 'added by a newer build', TRUE, '\\x00'::bytea, 0)"
    ));

    let (output, took) = run_server_expecting_exit(&cluster.server_config_path());
    println!("the server exited after {took:?}");

    assert!(!output.status.success(), "{output:?}");
    let stderr = &output.stderr;
    assert!(
        stderr.contains(&format!("schema is at version {newer}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("up to version {supported}")),
        "{stderr}"
    );
    assert!(stderr.contains("upgrade the tessera binary"), "{stderr}");
}

fn healthcheck(cluster: &Cluster) -> CmdOutput {
    cluster.tessera(&["healthcheck"])
}

#[test]
fn healthcheck_follows_database_reachability() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let mut proxy = TcpProxy::start(POSTGRES_ADDRESS.parse().unwrap());
    let proxied = proxy.address().to_string();
    let options = Options {
        extra_server_toml: format!(
            "[datastore]\nurl = \"{}\"\nacquire_timeout = \"2s\"\n",
            postgres_url(&proxied, &db.name)
        ),
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(options);
    let workload_id = spiffe_id("/db-outage");
    cluster.create_entry(&workload_id, &[&uid_selector()]);
    cluster.wait_for_svid(&tessera_bin(), &workload_id);

    let healthy = healthcheck(&cluster).success();
    assert!(healthy.stdout.contains("datastore: ok"), "{healthy:?}");

    proxy.stop();
    let checked_at = Instant::now();
    let down = healthcheck(&cluster);
    println!(
        "healthcheck reported the outage in {:?}",
        checked_at.elapsed()
    );
    assert!(!down.status.success(), "{down:?}");
    assert!(down.stdout.contains("datastore: failed"), "{down:?}");
    assert!(down.stdout.contains("Connection refused"), "{down:?}");
    assert!(
        down.stdout
            .contains(&redacted_postgres_url(&proxied, &db.name)),
        "{down:?}"
    );
    assert!(down.stderr.contains("not serving"), "{down:?}");

    let fetched = cluster.tessera(&["svid", "fetch", "--output", "json"]);
    assert!(fetched.status.success(), "{fetched:?}");
    assert!(fetched.stdout.contains(&workload_id), "{fetched:?}");
    cluster.server().assert_running();

    proxy.restart();
    let restarted_at = Instant::now();
    let mut last = None;
    wait_until(
        "a healthy server after the database came back",
        READY_TIMEOUT,
        || {
            let output = healthcheck(&cluster);
            let ok = output.status.success();
            last = Some(output);
            ok
        },
    );
    println!(
        "healthcheck passed {:?} after the restart",
        restarted_at.elapsed()
    );
    let back = last.expect("at least one healthcheck ran");
    assert!(back.stdout.contains("datastore: ok"), "{back:?}");

    let log = cluster.server().log_text();
    assert!(
        log.contains(&redacted_postgres_url(&proxied, &db.name)),
        "the server log does not show the datastore URL:\n{log}"
    );
    assert!(!log.contains(PASSWORD), "the server log shows the password");
}

#[test]
fn agent_run_malformed_server_address_exits() {
    let mut command = Command::new(tessera_bin());
    command.args([
        "agent",
        "run",
        "--server-address",
        "127.0.0.1:8081",
        "--server-address",
        "server-b.example.org",
    ]);
    let output = run_with_timeout(command, COMMAND_TIMEOUT);

    assert_eq!(output.code(), 2, "{output:?}");
    assert!(
        output.stderr.contains("--server-address"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("\"server-b.example.org\""),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("expected host:port"),
        "{}",
        output.stderr
    );
}
