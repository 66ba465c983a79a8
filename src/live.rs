//! Options a reload changes while threads use them: a value behind a lock
//! with a version number beside it. A thread on the per-frame path reads
//! only the version (one relaxed atomic load) and takes the lock only when
//! it changed, that is once per reload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A value that a reload may replace. See the module docs.
#[derive(Debug)]
pub struct Live<T> {
    version: AtomicU64,
    value: Mutex<T>,
}

impl<T: Clone> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live {
            version: AtomicU64::new(0),
            value: Mutex::new(value),
        }
    }

    /// The value now, and its version (for [`Live::changed`]).
    pub fn get(&self) -> (T, u64) {
        let value = self.value.lock().unwrap_or_else(|e| e.into_inner());
        // Read under the lock: the version matches the value.
        (value.clone(), self.version.load(Ordering::Acquire))
    }

    /// The new value if it changed since version `seen` (which it updates);
    /// `None`, at the cost of one atomic load, if not.
    pub fn changed(&self, seen: &mut u64) -> Option<T> {
        if self.version.load(Ordering::Relaxed) == *seen {
            return None;
        }
        let (value, version) = self.get();
        *seen = version;
        Some(value)
    }

    /// Replaces the value; every reader sees it at its next check.
    pub fn set(&self, value: T) {
        let mut slot = self.value.lock().unwrap_or_else(|e| e.into_inner());
        *slot = value;
        self.version.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_sees_each_change_once() {
        let live = Live::new(1);
        let (value, mut seen) = live.get();
        assert_eq!(value, 1);
        assert_eq!(live.changed(&mut seen), None);
        live.set(2);
        live.set(3);
        assert_eq!(live.changed(&mut seen), Some(3), "the latest value");
        assert_eq!(live.changed(&mut seen), None);
    }
}
