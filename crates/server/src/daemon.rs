//! Start and stop of the whole server: the order in which the datastore,
//! CA, entry cache, APIs and background tasks come up, and the cleanup at
//! shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use tessera_ca::{CaConfig, CertificateAuthority, KeyStorage};
use tessera_spiffe::TrustDomain;
use tessera_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::agent_api::identity::{self, ServerIdentity};
use crate::cache::EntryCache;
use crate::config::{KeyStorageKind, ServerConfig};
use crate::error_chain;
use crate::state::ServerState;
use crate::{AGENT_API_ADDR_FILE, KEYS_DIR, ServerError, admin, agent_api, bundle, rotation};

/// Runs the server until `shutdown` completes or a part of it fails.
///
/// It opens the datastore, loads or creates the CA, loads the entries into
/// memory and publishes the bundle to `<data_dir>/bundle.pem`. Then it
/// starts the admin API, the agent API, CA rotation and server SVID renewal,
/// and writes the agent API address to `<data_dir>/agent_api.addr`. At
/// shutdown every task stops and the admin socket and address files are
/// removed.
///
/// # Errors
///
/// Returns [`ServerError`] when starting fails or a task stops on an error.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    prepare_data_dir(&config.data_dir)?;
    let address_file = config.data_dir.join(AGENT_API_ADDR_FILE);
    remove_if_exists(&address_file).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;

    let (stop, stop_signal) = watch::channel(false);
    let state = Arc::new(open_state(config, stop_signal).await?);
    state.publish_bundle(state.ca.bundle()).await?;

    let admin_socket = admin::socket::bind(&state.config.admin_socket).await?;
    let admin_path = admin_socket.path.clone();
    let started = start_tasks(&state, admin_socket).await;
    let (mut tasks, agent_addr) = match started {
        Ok(started) => started,
        Err(e) => {
            remove_admin_socket(&admin_path);
            return Err(e);
        }
    };

    let result = match write_address_file(&address_file, agent_addr) {
        Ok(()) => {
            tracing::info!(
                trust_domain = %state.trust_domain(),
                agent_api = %agent_addr,
                admin_socket = %admin_path.display(),
                entries = state.cache().len(),
                "server ready"
            );
            wait_for_stop(&mut tasks, shutdown).await
        }
        Err(e) => Err(e),
    };

    // Errors here only mean every receiver is gone already.
    let _ = stop.send(true);
    let result = drain_tasks(&mut tasks, result).await;
    remove_admin_socket(&admin_path);
    if let Err(e) = remove_if_exists(&address_file) {
        tracing::warn!(path = %address_file.display(), error = %e, "failed to remove the agent API address file");
    }
    state.store.close().await;
    match &result {
        Ok(()) => tracing::info!("server stopped"),
        Err(e) => tracing::error!(error = %error_chain(e), "server stopped on an error"),
    }
    result
}

/// Opens the datastore and the CA and loads the entry cache.
async fn open_state(
    config: ServerConfig,
    stop_signal: watch::Receiver<bool>,
) -> Result<ServerState, ServerError> {
    let store = Store::open_with(&config.datastore)
        .await
        .map_err(ServerError::OpenStore)?;
    check_datastore_trust_domain(&store, &config.trust_domain).await?;
    let ca = load_ca(&config).await?;

    let revision = store.latest_revision().await.map_err(ServerError::Store)?;
    let entries = store.list_entries().await.map_err(ServerError::Store)?;
    let cache = EntryCache::new(entries, revision);
    Ok(ServerState::new(config, store, ca, cache, stop_signal))
}

/// Rejects a datastore of another trust domain. The own bundle is written
/// at the first start, so a datastore that lacks it but contains a bundle
/// without a federation relationship belongs to that bundle's domain.
/// Loading its entries and bundle would merge two trust domains.
async fn check_datastore_trust_domain(
    store: &Store,
    configured: &TrustDomain,
) -> Result<(), ServerError> {
    let bundles = store.list_bundles().await.map_err(ServerError::Store)?;
    if bundles.iter().any(|(td, _)| td == configured) {
        return Ok(());
    }

    let federations = store.list_federations().await.map_err(ServerError::Store)?;
    let unrelated = bundles
        .into_iter()
        .map(|(td, _)| td)
        .find(|td| !federations.iter().any(|f| &f.trust_domain == td));
    match unrelated {
        Some(stored) => Err(ServerError::ForeignDatastore {
            configured: configured.clone(),
            stored,
        }),
        None => Ok(()),
    }
}

async fn load_ca(config: &ServerConfig) -> Result<Arc<CertificateAuthority>, ServerError> {
    let ca_config = CaConfig {
        trust_domain: config.trust_domain.clone(),
        key_algorithm: config.ca_key_type,
        ca_ttl: config.ca_ttl,
        jwt_issuer: config.jwt_issuer.clone(),
    };
    let storage = match config.ca_key_storage {
        KeyStorageKind::Disk => KeyStorage::Disk(config.data_dir.join(KEYS_DIR)),
        KeyStorageKind::Memory => KeyStorage::Memory,
    };
    // Key generation (seconds for RSA-4096) and file I/O stay off the
    // async workers.
    let ca = tokio::task::spawn_blocking(move || {
        CertificateAuthority::load_or_create(ca_config, storage, SystemTime::now())
    })
    .await
    .map_err(|e| ServerError::Task(e.to_string()))?
    .map_err(ServerError::Ca)?;
    Ok(Arc::new(ca))
}

/// Binds the agent API and spawns every long-running task. Returns the
/// tasks and the bound agent API address.
async fn start_tasks(
    state: &Arc<ServerState>,
    admin_socket: admin::socket::AdminSocket,
) -> Result<(JoinSet<Result<(), ServerError>>, SocketAddr), ServerError> {
    let address = state.config.bind_address;
    let bind_error = |source| ServerError::Bind { address, source };
    let listener = TcpListener::bind(address).await.map_err(bind_error)?;
    let agent_addr = listener.local_addr().map_err(bind_error)?;
    let identity = Arc::new(ServerIdentity::issue(state, SystemTime::now())?);

    let (rotation_handle, manual_steps) = rotation::channel();

    let mut tasks = JoinSet::new();
    tasks.spawn(admin::serve(
        Arc::clone(state),
        admin_socket,
        rotation_handle,
    ));
    tasks.spawn(agent_api::serve(
        Arc::clone(state),
        Arc::clone(&identity),
        listener,
    ));
    tasks.spawn(rotation::run(
        Arc::clone(state),
        Arc::clone(&identity),
        manual_steps,
    ));
    tasks.spawn(crate::feed::run(Arc::clone(state)));
    tasks.spawn(crate::federation::run(Arc::clone(state)));
    crate::bundle_endpoint::start(state, &identity, &mut tasks).await?;
    crate::oidc::start(state, &mut tasks).await?;
    tasks.spawn(identity::run_renewal(Arc::clone(state), identity));
    Ok((tasks, agent_addr))
}

/// Waits for `shutdown`, or for a task to stop first, which is a failure.
async fn wait_for_stop(
    tasks: &mut JoinSet<Result<(), ServerError>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    tokio::select! {
        () = shutdown => {
            tracing::info!("shutdown requested");
            Ok(())
        }
        Some(joined) = tasks.join_next() => match joined {
            Ok(Ok(())) => Err(ServerError::Task("a server task stopped before shutdown".to_owned())),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(ServerError::Task(e.to_string())),
        },
    }
}

/// Waits for every task to stop, keeping the first error.
async fn drain_tasks(
    tasks: &mut JoinSet<Result<(), ServerError>>,
    mut result: Result<(), ServerError>,
) -> Result<(), ServerError> {
    while let Some(joined) = tasks.join_next().await {
        let outcome = match joined {
            Ok(outcome) => outcome,
            Err(e) => Err(ServerError::Task(e.to_string())),
        };
        if let Err(e) = outcome {
            if result.is_ok() {
                result = Err(e);
            } else {
                tracing::error!(error = %error_chain(&e), "server task failed during shutdown");
            }
        }
    }
    result
}

/// Creates the data directory with mode 0700 when missing, and warns when
/// an existing one is open to other users.
fn prepare_data_dir(path: &Path) -> Result<(), ServerError> {
    let error = |source| ServerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(error)?;
    let mode = std::fs::metadata(path).map_err(error)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the data directory is accessible to other users; consider chmod 700"
        );
    }
    Ok(())
}

fn write_address_file(path: &Path, address: SocketAddr) -> Result<(), ServerError> {
    bundle::write_atomically(path, format!("{address}\n").as_bytes()).map_err(|source| {
        ServerError::WriteAddress {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn remove_admin_socket(path: &Path) {
    if let Err(e) = remove_if_exists(path) {
        tracing::warn!(path = %path.display(), error = %e, "failed to remove the admin socket");
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
