//! mTLS server of the multicloud example. It gets its X.509-SVID and the
//! bundles from the SPIFFE Workload API, accepts only the client whose
//! SPIFFE ID `--peer-id` names, and replies to each connection with one
//! line that names both SPIFFE IDs. It runs until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use spiffe::SpiffeId;
use tessera_example_multicloud::certificate::issuer_name;
use tessera_example_multicloud::report::LastSeen;
use tessera_example_multicloud::shutdown::shutdown_signal;
use tessera_example_multicloud::workload::Workload;
use tessera_example_multicloud::{CONNECTION_TIMEOUT, STARTUP_TIMEOUT, tls};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Serve mTLS with this workload's X.509-SVID.
#[derive(Debug, Parser)]
#[command(name = "multicloud-server")]
struct Args {
    /// Address to listen on; port 0 picks a free port, which the server
    /// prints once it listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// SPIFFE ID of the only client accepted, such as
    /// `spiffe://aws.example/checkout`.
    #[arg(long)]
    peer_id: SpiffeId,
    /// SPIFFE Workload API endpoint, such as `unix:///run/agent/api.sock`.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    workload_api: String,
}

/// State shared by the connection tasks.
struct Server {
    workload: Workload,
    peer_id: SpiffeId,
    /// Issuer of the SVID this server presents.
    own_issuer: LastSeen,
    /// Issuer of the client's SVID.
    peer_issuer: LastSeen,
    /// Message of the last failed connection, cleared by a success.
    last_error: LastSeen,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let workload = Workload::connect(&args.workload_api, STARTUP_TIMEOUT).await?;
    let snapshot = workload
        .wait_for_bundle(args.peer_id.trust_domain(), STARTUP_TIMEOUT)
        .await?;
    println!("server: my SPIFFE ID is {}", snapshot.svid.spiffe_id());

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let address = listener
        .local_addr()
        .context("failed to read the bound address")?;
    println!(
        "server: listening on {address}, accepting only {}",
        args.peer_id
    );

    let server = Arc::new(Server {
        workload,
        peer_id: args.peer_id,
        own_issuer: LastSeen::default(),
        peer_issuer: LastSeen::default(),
        last_error: LastSeen::default(),
    });
    accept_until_stopped(&server, listener).await?;

    println!("server: stopping");
    if let Some(server) = Arc::into_inner(server) {
        server.workload.shutdown().await;
    }
    Ok(())
}

async fn accept_until_stopped(server: &Arc<Server>, listener: TcpListener) -> Result<()> {
    let stop = shutdown_signal()?;
    tokio::pin!(stop);
    loop {
        let (tcp, from) = tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => accepted.context("failed to accept a connection")?,
        };
        let server = Arc::clone(server);
        tokio::spawn(async move {
            let served = match tokio::time::timeout(CONNECTION_TIMEOUT, serve(&server, tcp)).await {
                Ok(served) => served,
                Err(_) => Err(anyhow!("timed out after {CONNECTION_TIMEOUT:?}")),
            };
            match served {
                Ok(()) => server.last_error.clear(),
                Err(e) => {
                    // Only the first of a run of equal failures prints.
                    let message = format!("{e:#}");
                    if server.last_error.replace(message.clone()) {
                        println!("server: connection from {from} failed: {message}");
                    }
                }
            }
        });
    }
}

/// Completes mTLS on `tcp` with the current SVID and bundles, then sends
/// the greeting.
async fn serve(server: &Server, tcp: TcpStream) -> Result<()> {
    let snapshot = server.workload.snapshot()?;
    let own_leaf = snapshot.svid.leaf().as_bytes();
    let own_issuer = issuer_name(own_leaf);
    if server.own_issuer.replace(own_issuer.clone()) {
        println!("server: presenting an SVID issued by {own_issuer}");
    }

    let config = tls::server_config(&snapshot, &server.peer_id)?;
    let mut stream = TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .context("TLS handshake failed")?;

    // The verifier accepted only `peer_id`, so the certificate is its SVID.
    let peer_leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("the client sent no certificate")?;
    let peer_issuer = issuer_name(peer_leaf);
    if server.peer_issuer.replace(peer_issuer.clone()) {
        println!(
            "server: mTLS with {}, whose SVID was issued by {peer_issuer}",
            server.peer_id
        );
    }

    let greeting = format!(
        "hello {}, this is {}\n",
        server.peer_id,
        snapshot.svid.spiffe_id()
    );
    stream
        .write_all(greeting.as_bytes())
        .await
        .context("failed to send the greeting")?;
    stream
        .shutdown()
        .await
        .context("failed to close the TLS session")?;
    Ok(())
}
