//! Storage that keeps nothing beyond the process. The CA object contains the
//! only copy of its keys, so a restart creates a new CA.

use crate::authority::SigningAuthority;
use crate::state::StateFile;

/// Storage for [`KeyStorage::Memory`](crate::KeyStorage::Memory).
#[derive(Debug, Default)]
pub(crate) struct MemoryStorage;

impl MemoryStorage {
    /// Accepts a new state and keeps nothing, because the CA already contains it.
    pub fn commit(&self, _state: &StateFile, _created: &[&SigningAuthority]) {}
}
