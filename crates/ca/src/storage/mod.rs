//! Persistence of authorities and of the rotation state, on disk or only
//! in memory.

mod disk;
mod memory;

use tessera_spiffe::id::TrustDomain;

use crate::authority::{PublishedAuthority, SigningAuthority};
use crate::config::KeyStorage;
use crate::error::CaError;
use crate::state::StateFile;

use disk::DiskStorage;
use memory::MemoryStorage;

/// Authorities read back from storage, in their slots.
pub(crate) struct Loaded {
    pub state: StateFile,
    pub active: SigningAuthority,
    pub prepared: Option<SigningAuthority>,
    pub retired: Vec<PublishedAuthority>,
}

/// The configured storage backend.
#[derive(Debug)]
pub(crate) enum Storage {
    Memory(MemoryStorage),
    Disk(DiskStorage),
}

impl Storage {
    /// Opens the storage, creating the key directory if needed.
    pub fn open(kind: &KeyStorage) -> Result<Self, CaError> {
        match kind {
            KeyStorage::Memory => Ok(Self::Memory(MemoryStorage)),
            KeyStorage::Disk(dir) => Ok(Self::Disk(DiskStorage::open(dir)?)),
        }
    }

    /// Loads the stored authorities, or returns `None` when nothing is stored yet.
    pub fn load(&self, trust_domain: &TrustDomain) -> Result<Option<Loaded>, CaError> {
        match self {
            Self::Memory(_) => Ok(None),
            Self::Disk(disk) => disk.load(trust_domain),
        }
    }

    /// Durably records `state` after writing the authorities created since the last commit.
    ///
    /// Files of authorities that `state` no longer names, and private keys of
    /// retired ones, are removed afterwards.
    pub fn commit(&self, state: &StateFile, created: &[&SigningAuthority]) -> Result<(), CaError> {
        match self {
            Self::Memory(memory) => {
                memory.commit(state, created);
                Ok(())
            }
            Self::Disk(disk) => disk.commit(state, created),
        }
    }
}
