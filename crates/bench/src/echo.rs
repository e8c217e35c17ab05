//! The bare gRPC baseline: a tonic service on a Unix socket that returns a
//! payload of the requested size and does no other work. Workload API
//! figures are compared with calls to it that return as many bytes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use crate::stats::Latencies;
use crate::uds;

/// Generated code of `proto/echo.proto`.
#[allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod proto {
    tonic::include_proto!("tessera.bench.v1");
}

use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};
use proto::{ReplyRequest, ReplyResponse};

/// Largest payload the echo service returns, in bytes.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The echo service: replies with a slice of one preallocated buffer.
#[derive(Debug, Clone)]
pub struct EchoService {
    buffer: Bytes,
}

impl Default for EchoService {
    fn default() -> Self {
        Self {
            buffer: Bytes::from(vec![0x5a; MAX_PAYLOAD]),
        }
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn reply(
        &self,
        request: Request<ReplyRequest>,
    ) -> Result<Response<ReplyResponse>, Status> {
        let size = request.into_inner().size as usize;
        if size > self.buffer.len() {
            return Err(Status::invalid_argument(format!(
                "payload size {size} is larger than the maximum {MAX_PAYLOAD}"
            )));
        }
        Ok(Response::new(ReplyResponse {
            payload: self.buffer.slice(..size),
        }))
    }
}

/// A running echo server; it stops when dropped.
pub struct RunningEcho {
    socket_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RunningEcho {
    /// Starts the echo service on a new Unix socket at `socket_path`.
    ///
    /// # Errors
    ///
    /// Fails when the socket cannot be bound.
    pub fn start(socket_path: &Path) -> std::io::Result<Self> {
        let listener = UnixListener::bind(socket_path)?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .add_service(EchoServer::new(EchoService::default()))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                }),
        );
        Ok(Self {
            socket_path: socket_path.to_owned(),
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// Path of the server's socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Opens a client on a new connection to this server.
    ///
    /// # Errors
    ///
    /// Fails when the connection cannot be made.
    pub async fn connect(&self) -> Result<EchoClient<Channel>, tonic::transport::Error> {
        Ok(EchoClient::new(uds::connect(&self.socket_path).await?))
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEcho {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Figures of one baseline run.
#[derive(Debug, Clone)]
pub struct EchoRun {
    /// Completed calls per second, over all clients.
    pub calls_per_second: f64,
    /// Latency of every call.
    pub latencies: Latencies,
}

/// Opens `count` clients, each on its own connection.
///
/// # Errors
///
/// Fails when a connection cannot be made.
pub async fn connect_clients(
    server: &RunningEcho,
    count: usize,
) -> Result<Vec<EchoClient<Channel>>, tonic::transport::Error> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(server.connect().await?);
    }
    Ok(clients)
}

/// Runs every client in `clients` concurrently, calling the echo service
/// for `payload` bytes in a loop until each has made `calls_per_client`
/// calls or `max_time` has passed.
///
/// # Errors
///
/// Fails when a call fails.
pub async fn run_clients(
    clients: &[EchoClient<Channel>],
    payload: usize,
    calls_per_client: u64,
    max_time: Duration,
) -> Result<EchoRun, tonic::Status> {
    let size = u32::try_from(payload).unwrap_or(u32::MAX);
    let start = Instant::now();
    let deadline = start + max_time;
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::with_capacity(calls_per_client as usize);
            for _ in 0..calls_per_client {
                if Instant::now() >= deadline {
                    break;
                }
                let sent = Instant::now();
                let reply = client.reply(ReplyRequest { size }).await?;
                std::hint::black_box(reply.into_inner().payload.len());
                latencies.record(sent.elapsed());
            }
            Ok::<_, Status>(latencies)
        }));
    }

    let mut latencies = Latencies::default();
    for task in tasks {
        let joined = task
            .await
            .map_err(|e| Status::internal(format!("echo client task failed: {e}")))?;
        latencies.merge(joined?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(EchoRun {
        calls_per_second: latencies.len() as f64 / elapsed,
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_returns_requested_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = RunningEcho::start(&dir.path().join("echo.sock")).expect("bind");
        let mut client = server.connect().await.expect("connect");
        let reply = client
            .reply(ReplyRequest { size: 1024 })
            .await
            .expect("call");
        assert_eq!(reply.into_inner().payload.len(), 1024);
        server.stop().await;
    }

    #[tokio::test]
    async fn echo_rejects_oversized_payload() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = RunningEcho::start(&dir.path().join("echo.sock")).expect("bind");
        let mut client = server.connect().await.expect("connect");
        let size = u32::try_from(MAX_PAYLOAD + 1).expect("fits u32");
        let status = client
            .reply(ReplyRequest { size })
            .await
            .expect_err("oversized payload");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn run_clients_counts_every_call() {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = RunningEcho::start(&dir.path().join("echo.sock")).expect("bind");
        let clients = connect_clients(&server, 3).await.expect("connect");
        let run = run_clients(&clients, 100, 10, Duration::from_secs(30))
            .await
            .expect("run");
        assert_eq!(run.latencies.len(), 30);
        assert!(run.calls_per_second > 0.0);
    }
}
