//! The store's domain, without I/O: the commands a write proposes, the events they
//! become, the in-memory state reads are served from, the decision rule that turns a
//! command into events against that state (`decide.rs`, the same on every replica), the
//! compact form records are kept in (`row.rs`), the snapshot format (`snapshot.rs`), the
//! projections kept beside the records (`projection.rs`) and the node's write health
//! (`health.rs`).
//!
//! The I/O around it (the logs, the data dir, recovery and checkpoints) is in
//! [`crate::raft`]; the facade the engine uses is [`crate::store`].

pub mod decide;
pub mod event;
pub mod health;
pub mod hot;
pub mod projection;
pub mod row;
pub mod snapshot;
pub mod state;
pub mod tree;

use std::sync::atomic::AtomicU64;

use crate::histogram::{exponential_buckets, Histogram};

use serde_json::Value;
use uuid::Uuid;

use event::Record;

/// A write, as proposed to the store.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// Create `record` (complete: id, timestamps and version stamped).
    Create {
        /// Model.
        model: String,
        /// The new record.
        record: Record,
    },
    /// Replace record `id`, which must still be at `expected_version`.
    Replace {
        /// Model.
        model: String,
        /// Record id.
        id: Uuid,
        /// The whole new record.
        record: Record,
        /// The version the change was computed from.
        expected_version: u64,
        /// Whether that version came from the client's If-Match (412) or from our read (retry).
        from_client: bool,
    },
    /// Delete record `id`.
    Delete {
        /// Model.
        model: String,
        /// Record id.
        id: Uuid,
        /// The version the client saw, if it sent If-Match.
        expected_version: Option<u64>,
    },
    /// Several writes decided together, in order, all or nothing: an action's
    /// transaction (one log entry, one event per write, each marked with the
    /// transaction; see [`event::Transaction`]). It holds no transaction itself.
    Together {
        /// The writes.
        writes: Vec<Command>,
    },
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Refused {
    /// No such record.
    NotFound,
    /// The record changed since the version given.
    VersionMismatch {
        /// Its version now.
        current: u64,
        /// Whether the expected version came from the client.
        from_client: bool,
    },
    /// A unique field's value is taken.
    Unique {
        /// Field.
        field: String,
        /// The holder.
        holder: Uuid,
    },
    /// A ref points at no record.
    MissingRef {
        /// Field (with index for lists).
        field: String,
        /// Target model.
        model: String,
        /// The missing id.
        id: String,
    },
    /// The write could not be completed; its outcome is unknown (it may still commit).
    Storage(String),
    /// This node stopped taking writes after a storage failure (until it is restarted).
    Fault(health::Fault),
    /// The request's deadline passed before the write was answered; it may still commit.
    Timeout,
    /// Too many writes are waiting already: refused at once, nothing was written.
    Overloaded,
    /// The Idempotency-Key was used before for a different request.
    KeyReused,
    /// Write number `write` (from 0) of a transaction was refused, so none of its
    /// writes was made.
    InTransaction {
        /// Its place among the transaction's writes.
        write: usize,
        /// Why it was refused.
        refused: Box<Refused>,
    },
}

/// Counters and histograms the store exposes (also at `/metrics`).
#[derive(Debug)]
pub struct Stats {
    /// Events replayed at the last start (after snapshots).
    pub replayed_events: AtomicU64,
    /// Records loaded from snapshots at the last start.
    pub snapshot_records: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Events committed.
    pub events: AtomicU64,
    /// Snapshots written.
    pub snapshots: AtomicU64,
    /// How long each `fdatasync` of the Raft log and the event log took, in seconds.
    pub fsync: Histogram,
    /// How many commands each applied Raft entry carried (a batch of concurrent writes).
    pub batch_size: Histogram,
    /// How long each stage of a request took (`/metrics`: `lithair_stage_duration_seconds`).
    pub stages: Stages,
}

/// The stages of a request whose time is measured, in the order a write passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The firewall's checks (address, allow and deny lists, rate limit).
    Firewall,
    /// Resolving the route.
    Route,
    /// Finding the caller (token, JWT).
    Authenticate,
    /// The role check.
    Authorize,
    /// A body's schema check.
    Validate,
    /// The user's `before_*` hooks (with `validate`).
    Hooks,
    /// A write's wait for Raft: proposed, committed, applied here.
    Raft,
    /// Applying one Raft entry to the state (deciding its commands, the events).
    Apply,
    /// Rendering a record's answer.
    Respond,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 9] = [
        Stage::Firewall,
        Stage::Route,
        Stage::Authenticate,
        Stage::Authorize,
        Stage::Validate,
        Stage::Hooks,
        Stage::Raft,
        Stage::Apply,
        Stage::Respond,
    ];

    /// Its `stage` label.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Firewall => "firewall",
            Stage::Route => "route",
            Stage::Authenticate => "authenticate",
            Stage::Authorize => "authorize",
            Stage::Validate => "validate",
            Stage::Hooks => "hooks",
            Stage::Raft => "raft",
            Stage::Apply => "apply",
            Stage::Respond => "respond",
        }
    }
}

/// One histogram per [`Stage`], in seconds (1 µs to ~4 s).
#[derive(Clone, Debug)]
pub struct Stages([Histogram; 9]);

impl Default for Stages {
    fn default() -> Self {
        Stages(std::array::from_fn(|_| {
            Histogram::new(exponential_buckets(0.000001, 2.0, 22))
        }))
    }
}

impl Stages {
    /// The histogram of `stage`.
    pub fn of(&self, stage: Stage) -> &Histogram {
        &self.0[stage as usize]
    }

    /// Records that `stage` took `took`.
    pub fn record(&self, stage: Stage, took: std::time::Duration) {
        self.of(stage).observe(took.as_secs_f64());
    }

    /// Records the time from `started` until now for `stage`, and as a span of the
    /// current request if it is traced.
    pub fn since(&self, stage: Stage, started: crate::clock::Instant) {
        let now = crate::clock::Instant::now();
        self.record(stage, now - started);
        crate::telemetry::record(stage, started, now);
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            replayed_events: AtomicU64::new(0),
            snapshot_records: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            // 50 µs to ~1.6 s.
            fsync: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            // 1 to 1024 commands (a batch holds at most 1024).
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            stages: Stages::default(),
        }
    }
}

pub(crate) fn record_id(r: &Record) -> Result<Uuid, Refused> {
    r.get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| Refused::Storage("a record without a valid id was proposed".into()))
}

/// The `version` of a record.
pub fn version_of(r: &Record) -> u64 {
    r.get("version").and_then(Value::as_u64).unwrap_or(0)
}
