//! One trust domain of the federation tests: a server with a bundle
//! endpoint and an agent, each a real process.

use super::*;

pub(super) const AUDIENCE: &str = "federated-service";

/// A trust domain: a server with a bundle endpoint and one agent.
pub(super) struct Domain {
    // Field order is drop order: the agent stops before the server.
    pub(super) agent: Option<Daemon>,
    pub(super) server: Option<Daemon>,
    pub(super) td: String,
    pub(super) agent_id: String,
    pub(super) endpoint: SocketAddr,
    pub(super) dir: TempDir,
}

impl Domain {
    pub(super) fn start(td: &str, extra_config: &str) -> Domain {
        let dir = tempfile::Builder::new()
            .prefix("tessera-fed-")
            .tempdir()
            .unwrap();
        let data_dir = dir.path().join("server");
        fs::create_dir_all(&data_dir).unwrap();
        let config = format!(
            r#"trust_domain = "{td}"
data_dir = "{data}"
bind_address = "127.0.0.1:0"
admin_socket = "{data}/admin.sock"
log_level = "debug"

[federation.bundle_endpoint]
address = "127.0.0.1:0"
profile = "https_spiffe"
{extra_config}
"#,
            data = data_dir.display(),
        );
        let config_path = dir.path().join("server.toml");
        fs::write(&config_path, config).unwrap();
        let args = [
            OsStr::new("server"),
            OsStr::new("run"),
            OsStr::new("--config"),
            config_path.as_os_str(),
        ];
        let server = Daemon::spawn(
            "server",
            &tessera_bin(),
            args,
            &dir.path().join("server.log"),
        );

        let mut domain = Domain {
            agent: None,
            server: Some(server),
            td: td.to_owned(),
            agent_id: String::new(),
            endpoint: "127.0.0.1:0".parse().unwrap(),
            dir,
        };
        let endpoint_file = data_dir.join("bundle_endpoint.addr");
        let agent_api_file = data_dir.join("agent_api.addr");
        domain.wait("the server's sockets and address files", |d| {
            socket_accepts(&d.admin_socket()) && endpoint_file.is_file() && agent_api_file.is_file()
        });
        domain.endpoint = fs::read_to_string(&endpoint_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let agent_api = fs::read_to_string(&agent_api_file).unwrap();
        domain.start_agent(agent_api.trim());
        domain
    }

    pub(super) fn start_agent(&mut self, server_address: &str) {
        let token = self
            .tessera(&["token", "generate", "--output", "json"])
            .success()
            .json();
        self.agent_id = token["agent_id"].as_str().unwrap().to_owned();
        let data_dir = self.dir.path().join("agent");
        fs::create_dir_all(&data_dir).unwrap();
        let config = format!(
            r#"trust_domain = "{td}"
server_address = "{server_address}"
data_dir = "{data}"
socket_path = "{socket}"
join_token = "{token}"
trust_bundle_path = "{bundle}"
log_level = "debug"
"#,
            td = self.td,
            data = data_dir.display(),
            socket = self.workload_socket().display(),
            token = token["token"].as_str().unwrap(),
            bundle = self.bundle_pem().display(),
        );
        let config_path = self.dir.path().join("agent.toml");
        fs::write(&config_path, config).unwrap();
        let args = [
            OsStr::new("agent"),
            OsStr::new("run"),
            OsStr::new("--config"),
            config_path.as_os_str(),
        ];
        let log = self.dir.path().join("agent.log");
        self.agent = Some(Daemon::spawn("agent", &tessera_bin(), args, &log));
        let socket = self.workload_socket();
        self.wait("the Workload API socket", |_| socket_accepts(&socket));
    }

    pub(super) fn wait(&mut self, what: &str, mut ready: impl FnMut(&Domain) -> bool) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready(self) {
            for daemon in [&mut self.server, &mut self.agent].into_iter().flatten() {
                daemon.assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} of {}",
                self.td
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("server").join("admin.sock")
    }

    pub(super) fn bundle_pem(&self) -> PathBuf {
        self.dir.path().join("server").join("bundle.pem")
    }

    pub(super) fn workload_socket(&self) -> PathBuf {
        self.dir.path().join("api").join("api.sock")
    }

    /// `unix://` URI of the Workload API, the form the `spiffe` crate takes.
    pub(super) fn workload_endpoint(&self) -> String {
        format!("unix://{}", self.workload_socket().display())
    }

    pub(super) fn endpoint_url(&self) -> String {
        format!("https://{}/", self.endpoint)
    }

    pub(super) fn run(&self, program: &Path, args: &[&str]) -> CmdOutput {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("TESSERA_ADMIN_SOCKET", self.admin_socket())
            .env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", self.workload_socket().display()),
            )
            .env_remove("RUST_LOG");
        run_with_timeout(command, COMMAND_TIMEOUT)
    }

    pub(super) fn tessera(&self, args: &[&str]) -> CmdOutput {
        self.run(&tessera_bin(), args)
    }

    /// Creates entries under this domain's agent from JSON objects with
    /// `spiffe_id`, `selectors` and `federates_with`.
    pub(super) fn create_entries(&self, entries: &[Value]) {
        let entries: Vec<Value> = entries
            .iter()
            .map(|entry| {
                let mut entry = entry.clone();
                entry["parent_id"] = json!(self.agent_id);
                entry
            })
            .collect();
        let path = self.dir.path().join("entries.json");
        fs::write(&path, json!({ "entries": entries }).to_string()).unwrap();
        self.tessera(&["entry", "create", "--data", path.to_str().unwrap()])
            .success();
    }

    pub(super) fn federate_with(&self, peer: &Domain) {
        self.tessera(&[
            "federation",
            "create",
            "--trust-domain",
            &peer.td,
            "--bundle-endpoint-url",
            &peer.endpoint_url(),
            "--trust-bundle",
            peer.bundle_pem().to_str().unwrap(),
        ])
        .success();
    }

    /// Refreshes the bundle of `peer` now and checks that the refresh
    /// stored at least one X.509 authority.
    pub(super) fn refresh_federation(&self, peer: &Domain) {
        let shown = self
            .tessera(&[
                "federation",
                "refresh",
                "--trust-domain",
                &peer.td,
                "--output",
                "json",
            ])
            .success()
            .json();
        assert!(shown["last_error"].is_null(), "refresh failed: {shown}");
        assert!(
            shown["last_success_at"].is_string(),
            "no success time: {shown}"
        );
        assert!(shown["x509_authorities"].as_u64().unwrap() >= 1, "{shown}");
    }

    pub(super) fn logs(&self) -> String {
        ["server.log", "agent.log"]
            .iter()
            .map(|name| {
                let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let text: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.contains("sqlx::query"))
                    .collect();
                format!("---- {} {name} ----\n{}\n", self.td, text.join("\n"))
            })
            .collect()
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Splits concatenated DER certificates.
pub(super) fn split_der(mut der: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut certs = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).unwrap();
        let len = der.len() - rest.len();
        certs.push(CertificateDer::from(der[..len].to_vec()));
        der = rest;
    }
    certs
}

pub(super) async fn first_x509_response(socket: &Path) -> X509svidResponse {
    let mut client = workload::client(socket).await;
    let mut stream = client
        .fetch_x509svid(workload::request(X509svidRequest {}))
        .await
        .expect("FetchX509SVID")
        .into_inner();
    stream
        .message()
        .await
        .expect("an X509SVIDResponse")
        .expect("the stream is open")
}

/// Polls FetchX509SVID on `socket` until `ready` holds for a response.
pub(super) async fn wait_for_x509(
    socket: &Path,
    what: &str,
    ready: impl Fn(&X509svidResponse) -> bool,
) -> X509svidResponse {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let response = tokio::time::timeout(Duration::from_secs(5), first_x509_response(socket))
            .await
            .ok();
        if let Some(response) = response.filter(|r| ready(r)) {
            return response;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn test_exe() -> String {
    let exe = std::env::current_exe().unwrap();
    fs::canonicalize(exe).unwrap().display().to_string()
}
