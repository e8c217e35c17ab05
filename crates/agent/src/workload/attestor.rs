//! Workload attestors: they turn the kernel's view of a caller into the
//! selectors that registration entries are matched against.

pub mod unix;

use tessera_registration::SelectorSet;

use crate::error::AgentError;
use crate::workload::peer::PeerCredentials;

/// Derives the selectors of a Workload API caller from what the kernel
/// reports about it, never from what the caller sends.
///
/// `attest` may block (it reads `/proc` and hashes files), so callers run
/// it on a blocking thread.
pub trait WorkloadAttestor: Send + Sync + 'static {
    /// Returns the selectors of the peer process.
    ///
    /// # Errors
    ///
    /// Returns [`AgentError::WorkloadExited`] when the process that
    /// connected is gone, and other errors when its properties cannot be read.
    fn attest(&self, peer: &PeerCredentials) -> Result<SelectorSet, AgentError>;
}
