//! mTLS client of the multicloud example. It connects to the server again
//! and again, each time with the latest X.509-SVID and bundles from the
//! Workload API. It accepts only the server whose SPIFFE ID `--peer-id`
//! names, and counts the handshakes that succeed and fail. On
//! SIGINT or SIGTERM it prints the totals and exits with status 1 when any
//! handshake failed or none ran.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use rustls_pki_types::ServerName;
use spiffe::SpiffeId;
use tessera_example_multicloud::certificate::issuer_name;
use tessera_example_multicloud::report::LastSeen;
use tessera_example_multicloud::shutdown::shutdown_signal;
use tessera_example_multicloud::workload::Workload;
use tessera_example_multicloud::{CONNECTION_TIMEOUT, STARTUP_TIMEOUT, tls};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Maximum size of the server's reply, in bytes.
const MAX_REPLY_BYTES: u64 = 4096;

/// Connect to the multicloud server in a loop and count the handshakes.
#[derive(Debug, Parser)]
#[command(name = "multicloud-client")]
struct Args {
    /// Address of the server, such as `127.0.0.1:8443`.
    #[arg(long)]
    server: SocketAddr,
    /// SPIFFE ID the server must present, such as
    /// `spiffe://gcp.example/payments`.
    #[arg(long)]
    peer_id: SpiffeId,
    /// Pause between two connections, such as `200ms`.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How often to print the running totals, such as `5s`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    report_every: Duration,
    /// SPIFFE Workload API endpoint, such as `unix:///run/agent/api.sock`.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    workload_api: String,
}

/// The client's state across connections.
struct Client {
    args: Args,
    workload: Workload,
    /// X.509 authorities in the bundle of the server's trust domain.
    peer_authorities: LastSeen,
    /// Issuer of the server's SVID.
    peer_issuer: LastSeen,
    /// The server's greeting.
    reply: LastSeen,
    /// Message of the last failure, cleared by a success.
    last_error: LastSeen,
    succeeded: u64,
    failed: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("client: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the loop until a signal and returns whether every handshake
/// succeeded.
async fn run(args: Args) -> Result<bool> {
    let workload = Workload::connect(&args.workload_api, STARTUP_TIMEOUT).await?;
    let snapshot = workload
        .wait_for_bundle(args.peer_id.trust_domain(), STARTUP_TIMEOUT)
        .await?;
    println!("client: my SPIFFE ID is {}", snapshot.svid.spiffe_id());

    let mut client = Client {
        args,
        workload,
        peer_authorities: LastSeen::default(),
        peer_issuer: LastSeen::default(),
        reply: LastSeen::default(),
        last_error: LastSeen::default(),
        succeeded: 0,
        failed: 0,
    };
    client.connect_until_stopped().await?;

    let total = client.succeeded + client.failed;
    println!(
        "client: stopped after {total} handshakes: {} succeeded, {} failed",
        client.succeeded, client.failed
    );
    client.workload.shutdown().await;
    Ok(total > 0 && client.failed == 0)
}

impl Client {
    async fn connect_until_stopped(&mut self) -> Result<()> {
        let stop = shutdown_signal()?;
        tokio::pin!(stop);
        let mut last_report = Instant::now();
        loop {
            let outcome = match tokio::time::timeout(CONNECTION_TIMEOUT, self.exchange()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow!("timed out after {CONNECTION_TIMEOUT:?}")),
            };
            match outcome {
                Ok(()) => {
                    self.succeeded += 1;
                    self.last_error.clear();
                }
                Err(e) => {
                    self.failed += 1;
                    let message = format!("{e:#}");
                    if self.last_error.replace(message.clone()) {
                        println!("client: handshake failed: {message}");
                    }
                }
            }

            if last_report.elapsed() >= self.args.report_every {
                last_report = Instant::now();
                println!(
                    "client: {} handshakes so far: {} succeeded, {} failed",
                    self.succeeded + self.failed,
                    self.succeeded,
                    self.failed
                );
            }

            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(self.args.interval) => {}
            }
        }
    }

    /// Completes mTLS with the server using the current SVID and bundles,
    /// and reads its greeting.
    async fn exchange(&self) -> Result<()> {
        let snapshot = self.workload.snapshot()?;
        let peer_domain = self.args.peer_id.trust_domain();
        let authorities = snapshot.authority_count(peer_domain);
        if self.peer_authorities.replace(authorities.to_string()) {
            let noun = if authorities == 1 {
                "authority"
            } else {
                "authorities"
            };
            println!("client: the bundle of {peer_domain} has {authorities} X.509 {noun}");
        }

        let config = tls::client_config(&snapshot, &self.args.peer_id)?;
        let tcp = TcpStream::connect(self.args.server)
            .await
            .with_context(|| format!("failed to connect to {}", self.args.server))?;
        // Sent as SNI only: the verifier checks the SPIFFE ID, not this name.
        let name = ServerName::try_from(peer_domain.to_string())
            .context("the trust domain is not a valid server name")?;
        let mut stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake failed")?;

        // In TLS 1.3 the server checks the client's certificate after the
        // client has finished its side, so only the reply proves that the
        // server accepted this client.
        let mut reply = String::new();
        (&mut stream)
            .take(MAX_REPLY_BYTES)
            .read_to_string(&mut reply)
            .await
            .context("failed to read the server's reply")?;
        if reply.is_empty() {
            bail!("the server closed the connection without a reply");
        }

        let peer_leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .context("the server sent no certificate")?;
        let issuer = issuer_name(peer_leaf);
        if self.peer_issuer.replace(issuer.clone()) {
            println!(
                "client: mTLS with {}, whose SVID was issued by {issuer}",
                self.args.peer_id
            );
        }
        if self.reply.replace(reply.clone()) {
            println!("client: the server replied: {}", reply.trim_end());
        }
        Ok(())
    }
}
