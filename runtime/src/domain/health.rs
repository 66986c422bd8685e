//! Whether this node may acknowledge writes.
//!
//! A failed write or sync of the Raft log or the event log, or a failed checkpoint, is a
//! [`Fault`]: after a failed `fdatasync` the kernel may have dropped the dirty pages, so
//! retrying the sync on the same file could report success for data that is not on disk.
//! A fault is therefore final: the node stops taking writes (the state machine refuses to
//! apply, which stops its Raft core) until it is restarted, and the restart reads what is
//! really on disk. Reads from memory go on; `/ready` answers 503 with the fault.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// A storage failure that stopped this node's writes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fault {
    /// What failed, for people (the operation and the operating system's error).
    pub what: String,
    /// Whether the disk is full (answered 507 instead of 503).
    pub no_space: bool,
}

/// The node's write health, shared by the log store, the state machine, the checkpoint
/// thread and the HTTP layer.
#[derive(Debug, Default)]
pub struct Health {
    fault: OnceLock<Fault>,
    stopping: AtomicBool,
    /// The node stops as a crash would: without its last snapshot (tests).
    abrupt: AtomicBool,
}

/// Whether an error message is the operating system's "no space left on device"
/// (errors reach here as text through openraft).
pub fn is_no_space(message: &str) -> bool {
    message.contains("os error 28") || message.contains("No space left on device")
}

impl Health {
    /// Records the first fault; later ones are logged only.
    pub fn fail(&self, operation: &str, error: impl std::fmt::Display) {
        let what = format!("{operation}: {error}");
        let fault = Fault {
            no_space: is_no_space(&what),
            what,
        };
        tracing::error!(fault = %fault.what, "storage fault: this node stops taking writes until it is restarted");
        let _ = self.fault.set(fault);
    }

    /// The fault that stopped writes, if any.
    pub fn fault(&self) -> Option<&Fault> {
        self.fault.get()
    }

    /// Marks the node as shutting down.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the node is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Makes the node's shutdown skip its last snapshot, as a crash would (tests of the
    /// replay after a crash).
    #[cfg(any(test, feature = "testing"))]
    pub fn stop_abruptly(&self) {
        self.abrupt.store(true, Ordering::Relaxed);
    }

    /// Whether the shutdown skips the last snapshot.
    pub fn is_abrupt(&self) -> bool {
        self.abrupt.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fault_stays_and_a_full_disk_is_recognised() {
        let h = Health::default();
        assert!(h.fault().is_none());
        h.fail(
            "syncing the event log",
            std::io::Error::from_raw_os_error(28),
        );
        h.fail("later", "something else");
        let f = h.fault().unwrap();
        assert!(f.no_space, "{f:?}");
        assert!(f.what.starts_with("syncing the event log"), "{f:?}");
    }
}
