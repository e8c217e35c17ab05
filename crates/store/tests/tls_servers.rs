//! TLS to PostgreSQL and MariaDB servers that the test runs itself, with
//! a CA the test generates. Each server accepts the test's user only with
//! a client certificate signed by that CA: PostgreSQL through `hostssl`
//! and `cert` authentication, MariaDB through `REQUIRE X509`. The server
//! binaries must be installed (/usr/lib/postgresql/*/bin,
//! /usr/sbin/mariadbd); a test is skipped with a note when they are
//! missing. As root, PostgreSQL runs as the `postgres` user because it
//! refuses to run as root, and MariaDB runs with `--user=root`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustix::process::{Pid, Signal};
use sqlx::{AnyConnection, Connection, Executor};
use tessera_store::{PoolSettings, Store, StoreError, StoreOptions, TlsSettings};

/// Upper bound for the test server to start on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn note(text: &str) {
    // Written directly so that it shows without --nocapture.
    let _ = writeln!(std::io::stderr(), "note: {text}");
}

/// Returns the newest PostgreSQL server binary directory, if any.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Returns the uid and gid of the `postgres` user from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("a postgres user exists when running as root");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// A CA, a server certificate for `localhost` and 127.0.0.1, and a client
/// certificate with the common name `postgres`, as PEM files.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write_file(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn generate_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tessera test database CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "postgres");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    let pki = Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    write_file(&pki.ca, &ca_cert.pem(), 0o644);
    write_file(&pki.server_cert, &server_cert.pem(), 0o644);
    write_file(&pki.server_key, &server_key.serialize_pem(), 0o600);
    write_file(&pki.client_cert, &client_cert.pem(), 0o644);
    write_file(&pki.client_key, &client_key.serialize_pem(), 0o600);
    pki
}

/// A PostgreSQL server in a temporary directory, stopped on drop.
struct TlsPostgres {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    pki: Pki,
}

impl TlsPostgres {
    fn start(bin: &Path) -> TlsPostgres {
        let dir = tempfile::Builder::new()
            .prefix("tessera-pgtls-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let pki = generate_pki(dir.path());
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        fs::create_dir(&data).unwrap();
        fs::create_dir(&sockets).unwrap();
        let user = running_as_root().then(postgres_user);
        if let Some((uid, gid)) = user {
            for path in [&data, &sockets, &pki.server_key, &pki.server_cert, &pki.ca] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(&data)
            .stdout(Stdio::null());
        run_as(&mut initdb, user);
        let status = initdb.status().unwrap();
        assert!(status.success(), "initdb failed: {status}");
        fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 cert\n",
        )
        .unwrap();

        let port = free_port();
        let setting = |name: &str, path: &Path| format!("{name}={}", path.display());
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&sockets)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .args(["-c", &setting("ssl_cert_file", &pki.server_cert)])
            .args(["-c", &setting("ssl_key_file", &pki.server_key)])
            .args(["-c", &setting("ssl_ca_file", &pki.ca)])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        run_as(&mut postgres, user);
        let child = postgres.spawn().unwrap();

        let server = TlsPostgres {
            child,
            port,
            _dir: dir,
            pki,
        };
        wait_until_listening(port);
        server
    }

    fn options(&self, tls: TlsSettings) -> StoreOptions {
        let url = format!("postgres://postgres@localhost:{}/postgres", self.port);
        options(url, tls)
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the database server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn options(url: String, tls: TlsSettings) -> StoreOptions {
    StoreOptions {
        pool: PoolSettings {
            acquire_timeout: Duration::from_secs(5),
            ..PoolSettings::default()
        },
        tls,
        ..StoreOptions::new(url)
    }
}

/// Sends `signal` to a database server child and waits for it to exit.
fn stop(child: &mut Child, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let _ = rustix::process::kill_process(pid, signal);
    let _ = child.wait();
}

fn run_as(command: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: it ends every backend.
        stop(&mut self.child, Signal::INT);
    }
}

#[tokio::test]
async fn postgres_verify_full_with_client_certificate() {
    let Some(bin) = postgres_bin_dir() else {
        note("skipped: no PostgreSQL server binaries under /usr/lib/postgresql");
        return;
    };
    let server = TlsPostgres::start(&bin);
    let pki = &server.pki;
    let full = TlsSettings {
        mode: Some("verify-full".into()),
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
    };

    let store = Store::open_with(&server.options(full.clone()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    store.close().await;

    let without_client_certificate = TlsSettings {
        cert_file: None,
        key_file: None,
        ..full.clone()
    };
    let err = Store::open_with(&server.options(without_client_certificate))
        .await
        .expect_err("the server requires a client certificate");
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("valid client certificate"), "{message}");
    assert!(message.contains("datastore.ssl_cert_file"), "{message}");

    let public_roots_only = TlsSettings {
        ca_file: None,
        ..full
    };
    let err = Store::open_with(&server.options(public_roots_only))
        .await
        .expect_err("no trusted CA signs the server certificate");
    let message = err.to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("datastore.ssl_mode"), "{message}");
}

/// A MariaDB server in a temporary directory, stopped on drop, with a
/// database `tessera` and a user `tessera` that must present a client
/// certificate.
struct TlsMariaDb {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    pki: Pki,
}

const MARIADB_SERVER: &str = "/usr/sbin/mariadbd";
const MARIADB_INSTALL: &str = "/usr/bin/mariadb-install-db";

impl TlsMariaDb {
    async fn start() -> TlsMariaDb {
        let dir = tempfile::Builder::new()
            .prefix("tessera-mytls-")
            .tempdir()
            .unwrap();
        let pki = generate_pki(dir.path());
        let data = dir.path().join("data");
        let root_flag: &[&str] = if running_as_root() {
            &["--user=root"]
        } else {
            &[]
        };

        let status = Command::new(MARIADB_INSTALL)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(root_flag)
            .arg("--auth-root-authentication-method=normal")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "mariadb-install-db failed: {status}");

        let port = free_port();
        let path_flag = |name: &str, path: &Path| format!("--{name}={}", path.display());
        let child = Command::new(MARIADB_SERVER)
            .arg("--no-defaults")
            .args(root_flag)
            .arg(path_flag("datadir", &data))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(path_flag("socket", &dir.path().join("mysqld.sock")))
            .arg(path_flag("pid-file", &dir.path().join("mysqld.pid")))
            .arg(path_flag("ssl-ca", &pki.ca))
            .arg(path_flag("ssl-cert", &pki.server_cert))
            .arg(path_flag("ssl-key", &pki.server_key))
            .arg("--skip-log-bin")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();

        let server = TlsMariaDb {
            child,
            port,
            _dir: dir,
            pki,
        };
        wait_until_listening(port);
        server.create_user().await;
        server
    }

    async fn create_user(&self) {
        sqlx::any::install_default_drivers();
        let admin_url = format!("mysql://root@127.0.0.1:{}/?ssl-mode=DISABLED", self.port);
        let mut admin = AnyConnection::connect(&admin_url).await.unwrap();
        for statement in [
            "CREATE DATABASE tessera",
            // Host localhost, because the anonymous user ''@'localhost'
            // that mariadb-install-db creates matches before any '%' host.
            "CREATE USER 'tessera'@'localhost' REQUIRE X509",
            "GRANT ALL ON tessera.* TO 'tessera'@'localhost'",
        ] {
            admin.execute(statement).await.unwrap();
        }
        admin.close().await.unwrap();
    }

    fn options(&self, tls: TlsSettings) -> StoreOptions {
        let url = format!("mysql://tessera@localhost:{}/tessera", self.port);
        options(url, tls)
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        stop(&mut self.child, Signal::TERM);
    }
}

#[tokio::test]
async fn mariadb_verify_identity_with_client_certificate() {
    if !Path::new(MARIADB_SERVER).is_file() || !Path::new(MARIADB_INSTALL).is_file() {
        note("skipped: no MariaDB server binaries (mariadbd, mariadb-install-db)");
        return;
    }
    let server = TlsMariaDb::start().await;
    let pki = &server.pki;
    let full = TlsSettings {
        mode: Some("VERIFY_IDENTITY".into()),
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
    };

    let store = Store::open_with(&server.options(full.clone()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    store.close().await;

    let without_client_certificate = TlsSettings {
        cert_file: None,
        key_file: None,
        ..full
    };
    let err = Store::open_with(&server.options(without_client_certificate))
        .await
        .expect_err("the user must present a client certificate");
    let message = err.to_string();
    assert!(message.contains("Access denied"), "{message}");
    assert!(message.contains("datastore.ssl_cert_file"), "{message}");
}
