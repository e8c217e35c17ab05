//! The README's two-server deployment, run as written. The server and
//! agent configuration blocks marked `<!-- e2e: NAME -->` are read from
//! README.md, and only host-specific lines are replaced: data directories,
//! addresses and the database URL. The TLS mode and CA file are replaced
//! too, because the machine's PostgreSQL has no certificate from a CA the
//! test holds. Two servers then share one fresh PostgreSQL database on
//! loopback, an agent attests with both addresses, and a workload fetches
//! its SVID.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    COMMAND_TIMEOUT, CmdOutput, Daemon, POSTGRES_ADDRESS, PostgresDb, READY_TIMEOUT,
    run_with_timeout, socket_accepts, tessera_bin, wait_until,
};

/// The README's database password; it must not appear in any log.
const PASSWORD: &str = "change-me";
/// The trust domain that the README's configurations name.
const TRUST_DOMAIN: &str = "example.org";

/// Returns the TOML block that follows `<!-- e2e: name -->` in README.md.
fn readme_block(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = fs::read_to_string(&path).unwrap();
    let marker = format!("<!-- e2e: {name} -->\n```toml\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no block marked {marker:?}"))
        + marker.len();
    let length = readme[start..].find("```").expect("the block is closed");
    readme[start..start + length].to_owned()
}

/// Replaces the line `from` of `text` with `to`, failing when the README
/// no longer contains that line.
fn replace_line(text: &str, from: &str, to: &str) -> String {
    let line = format!("{from}\n");
    assert!(
        text.contains(&line),
        "the README block no longer has the line {from:?}:\n{text}"
    );
    text.replace(&line, &format!("{to}\n"))
}

fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Returns the TLS mode for the machine's PostgreSQL: `require` when it
/// has TLS on, else `prefer`.
fn local_ssl_mode(db: &PostgresDb) -> &'static str {
    if db.execute("SHOW ssl") == "on" {
        "require"
    } else {
        "prefer"
    }
}

struct Server {
    daemon: Daemon,
    data_dir: PathBuf,
    address: String,
}

impl Server {
    fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }

    fn bundle(&self) -> PathBuf {
        self.data_dir.join("bundle.pem")
    }

    fn tessera(&self, args: &[&str]) -> CmdOutput {
        let mut command = Command::new(tessera_bin());
        command
            .args(args)
            .env("TESSERA_ADMIN_SOCKET", self.admin_socket());
        run_with_timeout(command, COMMAND_TIMEOUT)
    }
}

/// Starts the server of README block `block`, with `readme_address` as
/// its documented bind address.
fn start_server(dir: &Path, block: &str, readme_address: &str, db: &PostgresDb) -> Server {
    let name = block.trim_end_matches(".toml");
    let data_dir = dir.join(name);
    let address = free_address();
    let url = format!(
        "postgres://postgres:{PASSWORD}@{POSTGRES_ADDRESS}/{}",
        db.name
    );

    let mut config = readme_block(block);
    config = replace_line(
        &config,
        "data_dir = \"/var/lib/tessera/server\"",
        &format!("data_dir = \"{}\"", data_dir.display()),
    );
    config = replace_line(
        &config,
        &format!("bind_address = \"{readme_address}\""),
        &format!("bind_address = \"{address}\""),
    );
    config = replace_line(
        &config,
        "url = \"postgres://tessera:change-me@db.example.org:5432/tessera\"",
        &format!("url = \"{url}\""),
    );
    config = replace_line(
        &config,
        "ssl_mode = \"verify-full\"",
        &format!("ssl_mode = \"{}\"", local_ssl_mode(db)),
    );
    config = replace_line(&config, "ssl_ca_file = \"/etc/tessera/db-ca.pem\"", "");

    let path = dir.join(block);
    fs::write(&path, config).unwrap();
    let log = dir.join(format!("{name}.log"));
    let args = [
        "server".as_ref(),
        "run".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ];
    let daemon = Daemon::spawn(name, &tessera_bin(), args, &log);
    let server = Server {
        daemon,
        data_dir,
        address,
    };

    let admin = server.admin_socket();
    wait_until(&format!("{name}'s admin socket"), READY_TIMEOUT, || {
        socket_accepts(&admin)
    });
    server
}

fn certificate_count(path: &Path) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .matches("BEGIN CERTIFICATE")
        .count()
}

/// Writes the README's agent configuration with the servers' addresses.
fn write_agent_config(dir: &Path, servers: &[&Server], bundle: &Path) -> PathBuf {
    let mut config = readme_block("agent.toml");
    let addresses: Vec<String> = servers
        .iter()
        .map(|s| format!("\"{}\"", s.address))
        .collect();
    config = replace_line(
        &config,
        "server_addresses = [\"192.0.2.11:8081\", \"192.0.2.12:8081\"]",
        &format!("server_addresses = [{}]", addresses.join(", ")),
    );
    config = replace_line(
        &config,
        "data_dir = \"/var/lib/tessera/agent\"",
        &format!("data_dir = \"{}\"", dir.join("agent").display()),
    );
    config = replace_line(
        &config,
        "trust_bundle_path = \"/etc/tessera/bundle.pem\"",
        &format!("trust_bundle_path = \"{}\"", bundle.display()),
    );
    let path = dir.join("agent.toml");
    fs::write(&path, config).unwrap();
    path
}

#[test]
fn readme_two_servers_serve_agent() {
    let Some(db) = PostgresDb::create() else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("tessera-ha-")
        .tempdir()
        .unwrap();
    let a = start_server(dir.path(), "server-a.toml", "192.0.2.11:8081", &db);
    let b = start_server(dir.path(), "server-b.toml", "192.0.2.12:8081", &db);

    // As the README instructs, the bundle is copied once it has both CAs.
    wait_until("server A's bundle with both CAs", READY_TIMEOUT, || {
        certificate_count(&a.bundle()) >= 2
    });
    let bundle = dir.path().join("bundle.pem");
    fs::copy(a.bundle(), &bundle).unwrap();
    assert!(certificate_count(&b.bundle()) >= 2);

    let token = a
        .tessera(&["token", "generate", "--output", "json"])
        .success();
    let token = token.json();
    let agent_id = token["agent_id"].as_str().unwrap().to_owned();
    let agent_config = write_agent_config(dir.path(), &[&a, &b], &bundle);
    let mut command = Command::new(tessera_bin());
    command
        .args(["agent", "run", "--config"])
        .arg(&agent_config)
        .env("TESSERA_JOIN_TOKEN", token["token"].as_str().unwrap());
    let mut agent = Daemon::spawn_command("agent", command, &dir.path().join("agent.log"));

    // The entry is created on B for an agent that attested to A.
    let workload_id = format!("spiffe://{TRUST_DOMAIN}/readme/workload");
    let selector = format!("unix:uid:{}", common::current_uid());
    let created = b.tessera(&[
        "entry",
        "create",
        "--spiffe-id",
        &workload_id,
        "--parent-id",
        &agent_id,
        "--selector",
        &selector,
    ]);
    assert!(created.status.success(), "{created:?}");

    let socket = dir.path().join("agent/public/api.sock");
    let endpoint = format!("unix://{}", socket.display());
    wait_until("an SVID from the agent", READY_TIMEOUT, || {
        agent.assert_running();
        let mut fetch = Command::new(tessera_bin());
        fetch
            .args(["svid", "fetch", "--output", "json", "--timeout", "1s"])
            .env("SPIFFE_ENDPOINT_SOCKET", &endpoint);
        let output = run_with_timeout(fetch, COMMAND_TIMEOUT);
        output.status.success() && output.stdout.contains(&workload_id)
    });

    if local_ssl_mode(&db) == "require" {
        // min_connections = 1 keeps a connection of each server open.
        let encrypted = db.execute(&format!(
            "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = '{}' AND s.ssl",
            db.name
        ));
        let encrypted: u32 = encrypted.parse().unwrap();
        assert!(
            encrypted >= 2,
            "{encrypted} TLS connections to the database"
        );
    }

    for server in [&a, &b] {
        let health = server.tessera(&["healthcheck"]);
        assert!(health.status.success(), "{health:?}");
        assert!(health.stdout.contains("datastore: ok"), "{health:?}");
    }
    for server in [&a, &b] {
        let log = server.daemon.log_text();
        assert!(
            !log.contains(PASSWORD),
            "{} logs the password",
            server.daemon.name()
        );
        assert!(log.contains("postgres:***@"), "{log}");
    }
}
