//! The Raft state machine: the store's state and event log, applied from committed entries.
//!
//! Each normal entry carries a [`Stamped`](crate::store::decide::Stamped) command; applying
//! it decides unique values, versions and refs against the state (deterministic on every
//! replica), appends the event (sequence numbers stay gap-free: blank and membership
//! entries make no event) and publishes the record to the in-memory state that reads are
//! served from. The events, the last applied log id and the membership are written in one
//! sled batch, so they never disagree after a crash. The Raft log is already durable, so
//! applying needs no flush of its own.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{io_error, Answers, Applied, Batch, Io, TypeConfig};
use crate::spec::ServiceSpec;
use crate::store::decide::{Decider, Overlay};
use crate::store::event::{Event, Record, Stored};
use crate::store::state::State;
use crate::store::Refused;

/// Key of the applied state in the events tree (9 bytes: never an event's 8-byte key).
const APPLIED_KEY: &[u8] = &[0xff; 9];

#[derive(Serialize, Deserialize)]
struct AppliedState {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    last_seq: u64,
    models: Vec<(String, Vec<Record>)>,
}

/// The state machine.
pub struct StateMachine {
    spec: ServiceSpec,
    state: Arc<RwLock<State>>,
    decider: Decider,
    events: sled::Tree,
    snapshots: sled::Tree,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    current: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    /// Answers of recently applied commands by event id: a batch that a follower sent
    /// again (its first answer was lost with a crashed leader) is answered, not re-applied.
    recent: std::collections::HashMap<Uuid, Recent>,
    recent_order: std::collections::VecDeque<Uuid>,
}

/// What applying a recent command answered, kept small: an accepted command is answered
/// again from the event log.
enum Recent {
    Done(u64),
    Refused(Refused),
}

/// How many recent answers are kept for duplicate detection.
const RECENT: usize = 100_000;

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    io_error(Io::ReadStateMachine, e)
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    io_error(Io::WriteStateMachine, e)
}

fn state_from(spec: &ServiceSpec, data: &SnapshotData) -> Result<State, StorageError<u64>> {
    let mut state = State::new(spec);
    for (model, records) in &data.models {
        let Some(ms) = state.models.get_mut(model) else {
            continue;
        };
        for r in records {
            let id = r
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| read_err("a snapshot record has no id"))?;
            ms.put(id, Some(Arc::new(Stored::new(r.clone()))));
        }
    }
    state.last_seq = data.last_seq;
    Ok(state)
}

impl StateMachine {
    /// Opens the state machine in `db`: the current snapshot, then the events after it.
    pub fn open(db: &sled::Db, spec: &ServiceSpec) -> Result<Self, StorageError<u64>> {
        let events = db.open_tree("events").map_err(read_err)?;
        let snapshots = db.open_tree("raft_snapshot").map_err(read_err)?;
        let current = match (
            snapshots.get("meta").map_err(read_err)?,
            snapshots.get("data").map_err(read_err)?,
        ) {
            (Some(m), Some(d)) => Some((
                serde_json::from_slice::<SnapshotMeta<u64, BasicNode>>(&m).map_err(read_err)?,
                d.to_vec(),
            )),
            _ => None,
        };
        let mut state = match &current {
            Some((_, data)) => state_from(spec, &serde_json::from_slice(data).map_err(read_err)?)?,
            None => State::new(spec),
        };
        for item in events.range((state.last_seq + 1).to_be_bytes()..) {
            let (k, v) = item.map_err(read_err)?;
            if k.len() != 8 {
                continue;
            }
            let ev: Event = serde_json::from_slice(&v).map_err(read_err)?;
            state.apply(&ev);
        }
        let (applied, membership) = match events.get(APPLIED_KEY).map_err(read_err)? {
            Some(v) => {
                let a: AppliedState = serde_json::from_slice(&v).map_err(read_err)?;
                (a.applied, a.membership)
            }
            None => match &current {
                Some((meta, _)) => (meta.last_log_id, meta.last_membership.clone()),
                None => (None, StoredMembership::default()),
            },
        };
        Ok(StateMachine {
            spec: spec.clone(),
            state: Arc::new(RwLock::new(state)),
            decider: Decider::new(spec),
            events,
            snapshots,
            applied,
            membership,
            current,
            recent: std::collections::HashMap::new(),
            recent_order: std::collections::VecDeque::new(),
        })
    }

    /// The state reads are served from.
    pub fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }

    /// The answer of a command applied before: a refusal as it was, an event read back
    /// from the log (or from this very `apply`, when the batch is not written yet).
    fn answer_again(
        &self,
        previous: &Recent,
        earlier: &[Answers],
        now: &[Applied],
    ) -> Result<Applied, StorageError<u64>> {
        let seq = match previous {
            Recent::Refused(r) => return Ok(Applied::Refused(r.clone())),
            Recent::Done(seq) => *seq,
        };
        if let Some(bytes) = self.events.get(seq.to_be_bytes()).map_err(read_err)? {
            return Ok(Applied::Done(
                serde_json::from_slice(&bytes).map_err(read_err)?,
            ));
        }
        earlier
            .iter()
            .flatten()
            .chain(now)
            .find(|a| matches!(a, Applied::Done(ev) if ev.sequence_number == seq))
            .cloned()
            .ok_or_else(|| read_err(format!("event {seq} is missing")))
    }

    fn applied_bytes(&self) -> Result<Vec<u8>, StorageError<u64>> {
        serde_json::to_vec(&AppliedState {
            applied: self.applied,
            membership: self.membership.clone(),
        })
        .map_err(write_err)
    }
}

/// Builds a snapshot from an O(1) copy of the state taken when it was asked for.
pub struct Builder {
    models: Vec<(String, imbl::OrdMap<Uuid, Arc<Stored>>)>,
    last_seq: u64,
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    snapshots: sled::Tree,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let data = SnapshotData {
            last_seq: self.last_seq,
            models: self
                .models
                .iter()
                .map(|(m, records)| {
                    (
                        m.clone(),
                        records.values().map(|r| r.record.clone()).collect(),
                    )
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&data).map_err(write_err)?;
        let snapshot_id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.last_seq),
            None => format!("empty-{}", self.last_seq),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let mut batch = sled::Batch::default();
        batch.insert("meta", serde_json::to_vec(&meta).map_err(write_err)?);
        batch.insert("data", bytes.clone());
        self.snapshots.apply_batch(batch).map_err(write_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answers>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut batch = sled::Batch::default();
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                self.applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Vec::new()),
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        responses.push(Vec::new());
                    }
                    EntryPayload::Normal(Batch(commands)) => {
                        // The log cache may still share the commands: copy them then.
                        let commands =
                            Arc::try_unwrap(commands).unwrap_or_else(|shared| (*shared).clone());
                        let mut answers = Vec::with_capacity(commands.len());
                        for mut stamped in commands {
                            if let Some(previous) = self.recent.get(&stamped.event_id) {
                                let again = self.answer_again(previous, &responses, &answers)?;
                                answers.push(again);
                                continue;
                            }
                            let event_id = stamped.event_id;
                            let mut overlay = Overlay::default();
                            let seq = state.last_seq + 1;
                            let remembered = match self.decider.decide(
                                &state,
                                &mut overlay,
                                &mut stamped,
                                seq,
                            ) {
                                Ok((ev, record)) => {
                                    batch.insert(
                                        &ev.key(),
                                        serde_json::to_vec(&ev).map_err(write_err)?,
                                    );
                                    state.publish(&ev, record);
                                    answers.push(Applied::Done(ev));
                                    Recent::Done(seq)
                                }
                                Err(refused) => {
                                    answers.push(Applied::Refused(refused.clone()));
                                    Recent::Refused(refused)
                                }
                            };
                            self.recent.insert(event_id, remembered);
                            self.recent_order.push_back(event_id);
                            if self.recent_order.len() > RECENT {
                                if let Some(old) = self.recent_order.pop_front() {
                                    self.recent.remove(&old);
                                }
                            }
                        }
                        responses.push(answers);
                    }
                }
            }
        }
        batch.insert(APPLIED_KEY, self.applied_bytes()?);
        self.events.apply_batch(batch).map_err(write_err)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        Builder {
            models: state
                .models
                .iter()
                .map(|(m, ms)| (m.clone(), ms.records.clone()))
                .collect(),
            last_seq: state.last_seq,
            applied: self.applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(read_err)?;
        let new_state = state_from(&self.spec, &data)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let mut batch = sled::Batch::default();
        batch.insert("meta", serde_json::to_vec(meta).map_err(write_err)?);
        batch.insert("data", bytes.clone());
        self.snapshots.apply_batch(batch).map_err(write_err)?;
        self.events
            .insert(APPLIED_KEY, self.applied_bytes()?)
            .map_err(write_err)?;
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = new_state;
        self.current = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        if let Ok(Some(m)) = self.snapshots.get("meta") {
            if let (Ok(meta), Ok(Some(d))) = (
                serde_json::from_slice::<SnapshotMeta<u64, BasicNode>>(&m),
                self.snapshots.get("data"),
            ) {
                return Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(d.to_vec())),
                }));
            }
        }
        Ok(self.current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
