//! Workloads watching FetchX509SVID: each keeps a stream open on its own
//! connection and reports the SPIFFE IDs of every message it receives,
//! stamped with the time of receipt.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tessera_proto::workload::{X509svidRequest, X509svidResponse};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::{Code, Streaming};

use super::workload_api;

/// Pause before retrying a watch that the agent rejected because the
/// workload's entry had not reached it yet.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// One message received by one watcher.
#[derive(Debug)]
pub struct Update {
    /// Index of the watcher.
    pub watcher: usize,
    /// When the message arrived.
    pub received_at: Instant,
    /// SPIFFE IDs of the SVIDs in the message.
    pub spiffe_ids: HashSet<String>,
    /// Encoded size of the message, in bytes.
    pub bytes: usize,
}

/// A set of watchers and the channel of their updates.
pub struct Watchers {
    tasks: JoinSet<()>,
    updates: mpsc::UnboundedReceiver<Result<Update>>,
    /// Latest SPIFFE IDs of each watcher.
    pub current: Vec<HashSet<String>>,
    /// Largest message received so far, encoded, in bytes.
    pub largest_message_bytes: usize,
}

/// Opens `count` watches on the Workload API at `socket`, each retried
/// until the agent returns a first message or `timeout` passes, and
/// returns once every watch has its first message.
pub async fn open(socket: &Path, count: usize, timeout: Duration) -> Result<Watchers> {
    let deadline = Instant::now() + timeout;
    let (sender, updates) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for watcher in 0..count {
        let stream = open_stream(socket, deadline)
            .await
            .with_context(|| format!("opening watch {watcher}"))?;
        let sender = sender.clone();
        tasks.spawn(forward(watcher, stream, sender));
    }
    let mut watchers = Watchers {
        tasks,
        updates,
        current: vec![HashSet::new(); count],
        largest_message_bytes: 0,
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    watchers
        .wait_for(remaining, |ids| !ids.is_empty())
        .await
        .context("waiting for the first message of every watch")?;
    Ok(watchers)
}

async fn open_stream(socket: &Path, deadline: Instant) -> Result<Streaming<X509svidResponse>> {
    let mut client = workload_api::connect(socket).await?;
    loop {
        match client
            .fetch_x509svid(workload_api::request(X509svidRequest {}))
            .await
        {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if status.code() == Code::PermissionDenied && Instant::now() < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(status) => bail!("FetchX509SVID failed: {status}"),
        }
    }
}

async fn forward(
    watcher: usize,
    mut stream: Streaming<X509svidResponse>,
    sender: mpsc::UnboundedSender<Result<Update>>,
) {
    use prost::Message;
    loop {
        let update = match stream.message().await {
            Ok(Some(message)) => Ok(Update {
                watcher,
                received_at: Instant::now(),
                bytes: message.encoded_len(),
                spiffe_ids: message
                    .svids
                    .into_iter()
                    .map(|svid| svid.spiffe_id)
                    .collect(),
            }),
            Ok(None) => Err(anyhow::anyhow!("watch {watcher} ended")),
            Err(status) => Err(anyhow::anyhow!("watch {watcher} failed: {status}")),
        };
        let failed = update.is_err();
        if sender.send(update).is_err() || failed {
            return;
        }
    }
}

impl Watchers {
    /// Number of watchers.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Waits until the latest message of every watcher satisfies `done`,
    /// at most `timeout`, and returns for each watcher the receipt time of
    /// the first message that did. A watcher already satisfied returns
    /// `None`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        done: impl Fn(&HashSet<String>) -> bool,
    ) -> Result<Vec<Option<Instant>>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut reached: Vec<Option<Instant>> = vec![None; self.len()];
        let mut satisfied: Vec<bool> = self.current.iter().map(&done).collect();
        while satisfied.iter().any(|ok| !ok) {
            let Ok(received) = tokio::time::timeout_at(deadline, self.updates.recv()).await else {
                let waiting = satisfied.iter().filter(|ok| !**ok).count();
                bail!(
                    "{waiting} of {} watches did not get the change within {timeout:?}",
                    self.len()
                );
            };
            let update = received.context("every watch ended")??;
            let watcher = update.watcher;
            self.largest_message_bytes = self.largest_message_bytes.max(update.bytes);
            if done(&update.spiffe_ids) && !satisfied[watcher] {
                satisfied[watcher] = true;
                reached[watcher] = Some(update.received_at);
            }
            self.current[watcher] = update.spiffe_ids;
        }
        Ok(reached)
    }

    /// Closes every watch.
    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}
