//! Progress lines that print only when something changes, so a loop of
//! hundreds of handshakes shows the rotation and not the repetition. A
//! failure that repeats prints once, and the totals count every one.

use std::sync::Mutex;

/// The last value of something the program reports, such as the CA that
/// issued the peer's SVID.
#[derive(Debug, Default)]
pub struct LastSeen(Mutex<Option<String>>);

impl LastSeen {
    /// Stores `value` and returns whether it differs from the value stored
    /// before (true on the first call).
    pub fn replace(&self, value: String) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.as_deref() == Some(value.as_str()) {
            return false;
        }
        *last = Some(value);
        true
    }

    /// Forgets the stored value, so that the next `replace` returns true.
    pub fn clear(&self) {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *last = None;
    }
}
