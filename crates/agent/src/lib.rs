//! The Tessera agent. It attests its node to the server and keeps the
//! registration entries and trust bundles that the server streams to it. It
//! signs workload SVIDs ahead of time and serves them on the SPIFFE Workload
//! API to local processes, which it identifies from the kernel.

#![cfg_attr(test, allow(clippy::expect_used))]

pub mod bundle_refresh;
pub mod cache;
pub mod config;
mod convert;
pub mod error;
pub mod node;
pub mod retry;
pub mod storage;
pub mod svid;
pub mod sync;
pub mod workload;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use config::{AgentConfig, ConfigError, RawConfig};
pub use error::AgentError;

use crate::bundle_refresh::BundleRefresher;
use crate::cache::Cache;
use crate::node::renew::AgentSvidRenewal;
use crate::storage::Storage;
use crate::svid::jwt::JwtSvidCache;
use crate::svid::x509::X509SvidManager;
use crate::sync::EntrySync;
use crate::workload::attestor::unix::UnixAttestor;
use crate::workload::service::WorkloadApi;

/// How long open Workload API streams may keep the server alive after
/// shutdown starts; streams never end on their own.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` completes or a task fails for good.
///
/// The Workload API socket is bound first, so a misconfigured socket fails
/// at once. Callers that arrive before the first entry sync wait for it, at
/// most `workload.svid_wait_timeout`.
///
/// # Errors
///
/// Returns an error when the data directory or socket cannot be set up,
/// when attestation fails, or when the server rejects the agent later
/// (evicted or banned).
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let storage = Storage::open(&config.data_dir)?;
    let listener = workload::bind_socket(&config.socket_path)?;
    tracing::info!(socket = %config.socket_path.display(), trust_domain = %config.trust_domain, "agent starting");

    let node = tokio::select! {
        node = node::attest::establish(&config, &storage) => node?,
        () = &mut shutdown => {
            remove_socket(&config.socket_path);
            return Ok(());
        }
    };
    let agent_id = node.svid.spiffe_id().clone();

    let cache = Arc::new(Cache::new(config.trust_domain.clone(), Some(node.bundle)));
    let jwt_svids = Arc::new(JwtSvidCache::new(node.server.clone()));
    let bundle_refresher = Arc::new(BundleRefresher::new(node.server.clone()));
    let api = WorkloadApi::new(
        cache.clone(),
        Arc::new(UnixAttestor::new()),
        jwt_svids,
        bundle_refresher,
        config.svid_wait_timeout,
    );

    let mut tasks = JoinSet::new();
    let renewal = AgentSvidRenewal::new(
        node.identity.clone(),
        node.server.clone(),
        storage.clone(),
        config.retry,
    );
    tasks.spawn(named(
        "agent SVID renewal",
        renewal
            .run()
            .instrument(tracing::info_span!("agent_svid_renewal", %agent_id)),
    ));
    let sync = EntrySync::new(
        cache.clone(),
        node.server.clone(),
        node.identity.clone(),
        storage,
        config.retry,
    );
    tasks.spawn(named(
        "entry sync",
        sync.run()
            .instrument(tracing::info_span!("entry_sync", %agent_id)),
    ));
    let manager = X509SvidManager::new(cache, node.server.clone(), config.retry);
    tasks.spawn(named(
        "workload SVID rotation",
        manager
            .run()
            .instrument(tracing::info_span!("x509_svid_rotation", %agent_id)),
    ));

    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(
        workload::serve(listener, api, async {
            let _ = server_stopped.await;
        })
        .instrument(tracing::info_span!("workload_api", socket = %config.socket_path.display())),
    );
    tracing::info!(%agent_id, "agent running");

    let result = tokio::select! {
        () = &mut shutdown => {
            tracing::info!("agent shutting down");
            Ok(())
        }
        Some(joined) = tasks.join_next() => match joined {
            Ok((_, Err(error))) => Err(error),
            Ok((task, Ok(()))) => Err(AgentError::TaskStopped { task }),
            Err(_) => Err(AgentError::TaskStopped { task: "agent task" }),
        },
        served = &mut server => match served {
            Ok(Err(error)) => Err(error),
            _ => Err(AgentError::TaskStopped { task: "Workload API server" }),
        },
    };

    tasks.abort_all();
    let _ = stop_server.send(());
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    remove_socket(&config.socket_path);
    if let Err(error) = &result {
        tracing::error!(error = %sync::error_chain(error), "agent stopped");
    }
    result
}

/// Labels a task's result with the task's name.
async fn named(
    task: &'static str,
    future: impl Future<Output = Result<(), AgentError>>,
) -> (&'static str, Result<(), AgentError>) {
    (task, future.await)
}

fn remove_socket(path: &std::path::Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %path.display(), %error, "failed to remove the Workload API socket");
    }
}
