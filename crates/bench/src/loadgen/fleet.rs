//! Many simulated agents at once: join tokens, attestation, and open
//! SyncEntries streams held by background tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use tessera_proto::admin::JoinToken;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::admin::Admin;
use super::agent_api::{ServerTarget, SimulatedAgent, Snapshot, read_snapshot};

/// Attestations in flight at once.
const CONCURRENT_ATTESTATIONS: usize = 16;

/// Creates `count` join tokens.
pub async fn join_tokens(admin: &mut Admin, count: usize) -> Result<Vec<JoinToken>> {
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(admin.join_token().await?);
    }
    Ok(tokens)
}

/// Attests one simulated agent per token, keeping the tokens' order.
pub async fn attest(target: &ServerTarget, tokens: &[JoinToken]) -> Result<Vec<SimulatedAgent>> {
    let started = Instant::now();
    let mut agents = Vec::with_capacity(tokens.len());
    let mut attestations = futures::stream::iter(tokens.iter().map(|token| {
        let target = target.clone();
        let secret = token.token.clone();
        async move { SimulatedAgent::attest(&target, &secret).await }
    }))
    .buffered(CONCURRENT_ATTESTATIONS);
    while let Some(agent) = attestations.next().await {
        let agent = agent?;
        let promised = &tokens[agents.len()].agent_id;
        if &agent.id != promised {
            bail!(
                "an agent attested as {}, but its join token promised {promised}",
                agent.id
            );
        }
        agents.push(agent);
        if agents.len().is_multiple_of(1000) {
            eprintln!(
                "attested {} of {} simulated agents",
                agents.len(),
                tokens.len()
            );
        }
    }
    eprintln!(
        "attested {} simulated agents in {:.1} s",
        agents.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(agents)
}

/// Simulated agents holding their SyncEntries streams open. Dropping the
/// value closes every stream.
pub struct SyncHolders {
    tasks: JoinSet<()>,
    /// Messages received after the snapshots, over all agents.
    pub updates: Arc<AtomicU64>,
    /// Streams that ended after their snapshot.
    pub ended: Arc<AtomicU64>,
    /// Each agent's first snapshot, in the agents' order.
    pub snapshots: Vec<Snapshot>,
    /// Time from opening the first stream to the last complete snapshot.
    pub all_synced_after: Duration,
}

/// Opens a SyncEntries stream on every agent, waits up to `timeout` for
/// every first snapshot, and keeps reading the streams in the background.
pub async fn hold_sync_streams(
    agents: Vec<SimulatedAgent>,
    timeout: Duration,
) -> Result<SyncHolders> {
    let started = Instant::now();
    let updates = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut receivers = Vec::with_capacity(agents.len());
    for mut agent in agents {
        let (sender, receiver) = oneshot::channel();
        receivers.push(receiver);
        let updates = Arc::clone(&updates);
        let ended = Arc::clone(&ended);
        tasks.spawn(async move {
            let first = async {
                let mut stream = agent.sync_entries().await?;
                let snapshot = read_snapshot(&mut stream).await?;
                Ok::<_, anyhow::Error>((stream, snapshot))
            }
            .await;
            let mut stream = match first {
                Ok((stream, snapshot)) => {
                    let _ = sender.send(Ok(snapshot));
                    stream
                }
                Err(error) => {
                    let _ = sender.send(Err(error));
                    return;
                }
            };
            while let Ok(Some(_)) = stream.message().await {
                updates.fetch_add(1, Ordering::Relaxed);
            }
            ended.fetch_add(1, Ordering::Relaxed);
            // The agent, and so its connection, lives as long as its stream.
            drop(agent);
        });
    }

    let deadline = tokio::time::Instant::now() + timeout;
    let mut snapshots = Vec::with_capacity(receivers.len());
    for (index, receiver) in receivers.into_iter().enumerate() {
        let Ok(received) = tokio::time::timeout_at(deadline, receiver).await else {
            bail!(
                "{index} of the simulated agents had their snapshot within {timeout:?}; the others had not"
            );
        };
        let snapshot = received
            .context("a sync task ended without a result")?
            .with_context(|| format!("simulated agent {index} could not sync"))?;
        snapshots.push(snapshot);
    }
    Ok(SyncHolders {
        tasks,
        updates,
        ended,
        snapshots,
        all_synced_after: started.elapsed(),
    })
}

impl SyncHolders {
    /// Number of streams still open.
    pub fn open_streams(&self) -> usize {
        let ended = self.ended.load(Ordering::Relaxed) as usize;
        self.snapshots.len().saturating_sub(ended)
    }

    /// Total entries over the first snapshots.
    pub fn snapshot_entries(&self) -> usize {
        self.snapshots.iter().map(|snapshot| snapshot.entries).sum()
    }

    /// Closes every stream.
    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}
