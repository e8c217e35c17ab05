//! Registration entry RPCs of the admin API. Every entry is validated before
//! anything is stored, and each write reaches the entry cache and the sync
//! streams only after the store acknowledged it.

use std::sync::Arc;

use tessera_proto::admin::{
    CreateEntriesRequest, CreateEntriesResponse, CreateEntryResult, DeleteEntriesRequest,
    DeleteEntriesResponse, DeleteEntryResult, ListEntriesRequest, ListEntriesResponse,
};
use tessera_proto::types;
use tessera_registration::{EntryId, RegistrationEntry, Selector, SelectorSet};
use tessera_spiffe::SpiffeId;
use tonic::{Code, Status};

use super::unix_selectors;
use crate::ids;
use crate::state::{ServerState, SyncEvent, now_unix};
use crate::status::{check_batch_size, item_status, ok_item, rejected, store_status};

/// Maximum entries in one CreateEntries request.
pub(crate) const MAX_CREATE_BATCH: usize = 1000;
/// Maximum entry IDs in one DeleteEntries request.
pub(crate) const MAX_DELETE_BATCH: usize = 1000;
/// Page size of ListEntries when the request leaves it at 0.
const DEFAULT_PAGE_SIZE: usize = 500;
/// Maximum page size of ListEntries.
const MAX_PAGE_SIZE: usize = 1000;

/// Request kind an entry arrived in. Creation assigns the ID, update keeps it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Create,
    Update,
}

pub(super) async fn create_entries(
    state: &ServerState,
    request: CreateEntriesRequest,
) -> Result<CreateEntriesResponse, Status> {
    check_batch_size("entries", request.entries.len(), MAX_CREATE_BATCH)?;

    let mut results = Vec::with_capacity(request.entries.len());
    let mut created = 0usize;
    let _write = state.write_lock.lock().await;
    for proto in request.entries {
        let result = match create_one(state, proto).await {
            Ok(entry) => {
                created += 1;
                CreateEntryResult {
                    status: Some(ok_item()),
                    entry: Some(types::Entry::from(entry.as_ref())),
                }
            }
            Err(status) => CreateEntryResult {
                status: Some(item_status(&status)),
                entry: None,
            },
        };
        results.push(result);
    }
    if created > 0 {
        state.notify(SyncEvent::EntriesChanged);
    }
    Ok(CreateEntriesResponse { results })
}

async fn create_one(
    state: &ServerState,
    proto: types::Entry,
) -> Result<Arc<RegistrationEntry>, Status> {
    let entry = validate_entry(state, proto, Purpose::Create)?;
    let (stored, revision) = state
        .store
        .create_entry(&entry)
        .await
        .map_err(|e| store_status("create the registration entry", e))?;

    tracing::info!(
        entry_id = %stored.id,
        spiffe_id = %stored.spiffe_id,
        parent_id = %stored.parent_id,
        "created registration entry"
    );
    state.advance_revision(revision);
    let id = stored.id.clone();
    let mut cache = state.cache_mut();
    cache.upsert(stored, revision);
    cache
        .get(&id)
        .cloned()
        .ok_or_else(|| Status::internal("entry missing from the cache after insert"))
}

pub(super) async fn get_entry(state: &Arc<ServerState>, id: &str) -> Result<types::Entry, Status> {
    let id = parse_entry_id(id)?;
    catch_up(state).await;
    let cache = state.cache();
    match cache.get(&id) {
        Some(entry) => Ok(types::Entry::from(entry.as_ref())),
        None => Err(rejected(
            Code::NotFound,
            format!("registration entry {id} not found"),
        )),
    }
}

pub(super) async fn list_entries(
    state: &Arc<ServerState>,
    request: &ListEntriesRequest,
) -> Result<ListEntriesResponse, Status> {
    let filter = EntryFilter::parse(request)?;
    let page_size = page_size(request.page_size)?;
    let after = match request.page_token.as_str() {
        "" => None,
        token => Some(EntryId::parse(token).map_err(|e| {
            rejected(
                Code::InvalidArgument,
                format!("invalid page_token {token:?}: {e}"),
            )
        })?),
    };

    catch_up(state).await;
    let cache = state.cache();
    let mut page: Vec<types::Entry> = Vec::new();
    let mut matching = cache
        .iter_after(after.as_ref())
        .filter(|e| filter.matches(e));
    for entry in matching.by_ref().take(page_size) {
        page.push(types::Entry::from(entry.as_ref()));
    }
    let next_page_token = match (matching.next(), page.last()) {
        (Some(_), Some(last)) => last.id.clone(),
        _ => String::new(),
    };
    Ok(ListEntriesResponse {
        entries: page,
        next_page_token,
    })
}

pub(super) async fn update_entry(
    state: &Arc<ServerState>,
    proto: Option<types::Entry>,
) -> Result<types::Entry, Status> {
    let proto = proto.ok_or_else(|| rejected(Code::InvalidArgument, "entry is missing"))?;
    // Before the write lock: catching up takes it to apply each change.
    catch_up(state).await;
    let _write = state.write_lock.lock().await;
    let created_at = existing_created_at(state, &proto.id)?;
    let mut entry = validate_entry(state, proto, Purpose::Update)?;
    entry.created_at = created_at;

    let (stored, revision) = state
        .store
        .update_entry(&entry)
        .await
        .map_err(|e| store_status("update the registration entry", e))?;

    tracing::info!(entry_id = %stored.id, revision = stored.revision, "updated registration entry");
    let reply = types::Entry::from(&stored);
    state.advance_revision(revision);
    state.cache_mut().upsert(stored, revision);
    state.notify(SyncEvent::EntriesChanged);
    Ok(reply)
}

/// Applies the changes of other servers before an admin read, so that the
/// read returns every write acknowledged before it by any server on the
/// database. When the change feed cannot be read, the read is served from
/// the cache as it is.
async fn catch_up(state: &Arc<ServerState>) {
    if let Err(e) = crate::feed::catch_up(state).await {
        tracing::warn!(
            error = %crate::error_chain(&e),
            "failed to read the change feed before an admin read; serving the cached entries"
        );
    }
}

fn existing_created_at(state: &ServerState, id: &str) -> Result<i64, Status> {
    if id.is_empty() {
        return Err(rejected(
            Code::InvalidArgument,
            "entry id is missing: an update names the entry to replace",
        ));
    }
    let id = parse_entry_id(id)?;
    match state.cache().get(&id) {
        Some(entry) => Ok(entry.created_at),
        None => Err(rejected(
            Code::NotFound,
            format!("registration entry {id} not found"),
        )),
    }
}

pub(super) async fn delete_entries(
    state: &ServerState,
    request: DeleteEntriesRequest,
) -> Result<DeleteEntriesResponse, Status> {
    check_batch_size("entry IDs", request.ids.len(), MAX_DELETE_BATCH)?;

    let mut results = Vec::with_capacity(request.ids.len());
    let mut deleted = 0usize;
    let _write = state.write_lock.lock().await;
    for id in request.ids {
        let status = match delete_one(state, &id).await {
            Ok(()) => {
                deleted += 1;
                ok_item()
            }
            Err(status) => item_status(&status),
        };
        results.push(DeleteEntryResult {
            id,
            status: Some(status),
        });
    }
    if deleted > 0 {
        state.notify(SyncEvent::EntriesChanged);
    }
    Ok(DeleteEntriesResponse { results })
}

async fn delete_one(state: &ServerState, id: &str) -> Result<(), Status> {
    let id = parse_entry_id(id)?;
    let (deleted, revision) = state
        .store
        .delete_entry(&id)
        .await
        .map_err(|e| store_status("delete the registration entry", e))?;

    tracing::info!(entry_id = %deleted.id, spiffe_id = %deleted.spiffe_id, "deleted registration entry");
    state.advance_revision(revision);
    state.cache_mut().remove(&id, revision);
    Ok(())
}

/// Converts and checks an entry from a request. Beyond the field checks of
/// `RegistrationEntry::try_from`, both IDs must be in the server's trust
/// domain, the SPIFFE ID may not be a reserved server or agent ID, and an
/// entry may not be its own parent.
fn validate_entry(
    state: &ServerState,
    mut proto: types::Entry,
    purpose: Purpose,
) -> Result<RegistrationEntry, Status> {
    let invalid = |message: String| rejected(Code::InvalidArgument, message);
    if purpose == Purpose::Create {
        if proto.id.is_empty() {
            proto.id = EntryId::generate().to_string();
        }
        proto.revision = 0;
        proto.created_at = now_unix();
    }

    let entry = RegistrationEntry::try_from(proto).map_err(|e| invalid(e.to_string()))?;
    let td = state.trust_domain();
    for (field, id) in [
        ("spiffe_id", &entry.spiffe_id),
        ("parent_id", &entry.parent_id),
    ] {
        if id.trust_domain() != td {
            return Err(invalid(format!(
                "{field} {id} is not in the server's trust domain {td}; \
                 use an ID of the form spiffe://{td}/..."
            )));
        }
    }
    if ids::is_reserved(&entry.spiffe_id) {
        return Err(invalid(format!(
            "spiffe_id {} is reserved for the server and its agents: \
             choose a path outside {}",
            entry.spiffe_id,
            ids::RESERVED_PATH
        )));
    }
    if entry.spiffe_id == entry.parent_id {
        return Err(invalid(format!(
            "spiffe_id {} equals parent_id: an entry cannot be its own parent",
            entry.spiffe_id
        )));
    }
    if entry.federates_with.contains(td) {
        return Err(invalid(format!(
            "federates_with contains the server's own trust domain {td}: workloads always \
             receive its bundle, so list only foreign trust domains"
        )));
    }
    for selector in &entry.selectors {
        unix_selectors::check(selector).map_err(invalid)?;
    }
    Ok(entry)
}

fn parse_entry_id(id: &str) -> Result<EntryId, Status> {
    EntryId::parse(id).map_err(|e| {
        rejected(
            Code::InvalidArgument,
            format!("invalid entry id {id:?}: {e}"),
        )
    })
}

fn page_size(requested: i32) -> Result<usize, Status> {
    match usize::try_from(requested) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(rejected(
            Code::InvalidArgument,
            format!("invalid page_size {requested}: expected 0 (default) to {MAX_PAGE_SIZE}"),
        )),
    }
}

/// The filters of a ListEntries request, parsed.
struct EntryFilter {
    spiffe_id: Option<SpiffeId>,
    parent_id: Option<SpiffeId>,
    selectors: Vec<Selector>,
}

impl EntryFilter {
    fn parse(request: &ListEntriesRequest) -> Result<Self, Status> {
        let id = |field: &str, value: &str| -> Result<Option<SpiffeId>, Status> {
            if value.is_empty() {
                return Ok(None);
            }
            SpiffeId::parse(value).map(Some).map_err(|e| {
                rejected(
                    Code::InvalidArgument,
                    format!("invalid {field} {value:?}: {e}"),
                )
            })
        };
        let selectors = request
            .by_selectors
            .iter()
            .map(|s| {
                Selector::try_from(s.clone()).map_err(|e| {
                    rejected(Code::InvalidArgument, format!("invalid by_selectors: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            spiffe_id: id("by_spiffe_id", &request.by_spiffe_id)?,
            parent_id: id("by_parent_id", &request.by_parent_id)?,
            selectors,
        })
    }

    fn matches(&self, entry: &RegistrationEntry) -> bool {
        if self
            .spiffe_id
            .as_ref()
            .is_some_and(|id| *id != entry.spiffe_id)
        {
            return false;
        }
        if self
            .parent_id
            .as_ref()
            .is_some_and(|id| *id != entry.parent_id)
        {
            return false;
        }
        if self.selectors.is_empty() {
            return true;
        }
        let have: SelectorSet = entry.selectors.iter().cloned().collect();
        have.contains_all(&self.selectors)
    }
}
