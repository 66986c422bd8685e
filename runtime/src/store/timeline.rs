//! Where each record's events are in the event log, for the models with a `lifecycle`:
//! the sequence numbers of every record's events, and of every event of an `audited`
//! model. The history, versions and audit log read the events themselves from the log.
//! The change feed has a timeline of its own ([`Timeline::of_every_model`]): every
//! model's records, and each model's events, built only once a feed reader resumes.
//!
//! The timeline derives from the event log only, so it is the same on every node and
//! survives anything the log survives: it is built by reading the log's heads (sequence
//! number, model, record id) the first time it is asked, and caught up with what was
//! appended since each time after. The log grows at its end as events are applied, and at
//! its start when a node that installed a Raft snapshot fetches the events the snapshot
//! skipped; both ends are followed. The log is read in chunks, each under its lock for a
//! short time, so that applying events is never held up for long.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use uuid::Uuid;

use crate::domain::event::Event;
use crate::raft::lock_events;
use crate::spec::ServiceSpec;
use crate::wal::{Wal, WalError};

/// Events read under one hold of the event log's lock.
const CHUNK: u64 = 2048;

/// The part of an event the timeline reads.
#[derive(serde::Deserialize)]
struct Head<'a> {
    sequence_number: u64,
    #[serde(borrow)]
    model: Cow<'a, str>,
    aggregate_id: Uuid,
}

/// The positions of the lifecycle models' events.
#[derive(Debug)]
pub(crate) struct Timeline {
    /// Models with a lifecycle.
    kept: HashSet<String>,
    /// Models whose events are audit entries.
    audited: HashSet<String>,
    /// Whether each model's events are listed (the change feed's timeline).
    by_model: bool,
    /// Per former model name (`renamed_from`): the model's name now.
    renamed: HashMap<String, String>,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// The range of the log read so far (`lo > hi`: none).
    lo: u64,
    hi: u64,
    /// Each record's events, in order.
    records: HashMap<Uuid, Vec<u64>>,
    /// The events of audited models.
    audit: BTreeSet<u64>,
    /// Each model's events (only with `by_model`).
    models: HashMap<String, BTreeSet<u64>>,
}

/// Why an event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The log's files.
    #[error(transparent)]
    Log(#[from] WalError),
    /// An event that does not parse.
    #[error("an event does not parse: {0}")]
    Decode(#[from] serde_json::Error),
}

impl Timeline {
    /// The timeline of `spec`'s lifecycle models (nothing to keep when there are none).
    pub(crate) fn new(spec: &ServiceSpec) -> Timeline {
        let kept = spec
            .models
            .iter()
            .filter(|m| m.keeps_history())
            .map(|m| m.name.clone())
            .collect();
        let audited = spec
            .models
            .iter()
            .filter(|m| m.lifecycle.audited)
            .map(|m| m.name.clone())
            .collect();
        Timeline {
            kept,
            audited,
            by_model: false,
            renamed: spec.renamed_models(),
            seen: Mutex::new(Seen {
                lo: 1,
                hi: 0,
                ..Default::default()
            }),
        }
    }

    /// The timeline of every model of `spec`, with each model's events listed.
    pub(crate) fn of_every_model(spec: &ServiceSpec) -> Timeline {
        Timeline {
            kept: spec.models.iter().map(|m| m.name.clone()).collect(),
            audited: HashSet::new(),
            by_model: true,
            renamed: spec.renamed_models(),
            seen: Mutex::new(Seen {
                lo: 1,
                hi: 0,
                ..Default::default()
            }),
        }
    }

    /// The name a model has now (`name` may be its former one).
    fn current<'a>(&'a self, name: &'a str) -> &'a str {
        self.renamed.get(name).map_or(name, String::as_str)
    }

    /// An event read from the log, under its model's name now.
    fn read(&self, bytes: &[u8]) -> Result<Event, HistoryError> {
        let mut ev: Event = serde_json::from_slice(bytes)?;
        if let Some(now) = self.renamed.get(&ev.model) {
            ev.model = now.clone();
        }
        Ok(ev)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what the log holds beyond what was read before, at either end.
    fn catch_up(&self, events: &Mutex<Wal>) -> Result<(), HistoryError> {
        if self.kept.is_empty() {
            return Ok(());
        }
        loop {
            let (first, last) = {
                let log = lock_events(events);
                match (log.first_index(), log.last_index()) {
                    (Some(f), Some(l)) => (f, l),
                    _ => return Ok(()),
                }
            };
            let mut seen = self.seen();
            let range = if seen.lo > seen.hi {
                (first, first.saturating_add(CHUNK - 1).min(last))
            } else if seen.hi < last {
                (seen.hi + 1, (seen.hi + CHUNK).min(last))
            } else if first < seen.lo {
                (seen.lo.saturating_sub(CHUNK).max(first), seen.lo - 1)
            } else {
                return Ok(());
            };
            let log = lock_events(events);
            for seq in range.0..=range.1 {
                let Some(bytes) = log.read(seq)? else {
                    continue;
                };
                let head: Head = serde_json::from_slice(&bytes)?;
                let model = self.current(head.model.as_ref());
                if !self.kept.contains(model) {
                    continue;
                }
                let list = seen.records.entry(head.aggregate_id).or_default();
                if let Err(at) = list.binary_search(&head.sequence_number) {
                    list.insert(at, head.sequence_number);
                }
                if self.audited.contains(model) {
                    seen.audit.insert(head.sequence_number);
                }
                if self.by_model {
                    match seen.models.get_mut(model) {
                        Some(list) => {
                            list.insert(head.sequence_number);
                        }
                        None => {
                            let list = BTreeSet::from([head.sequence_number]);
                            seen.models.insert(model.to_string(), list);
                        }
                    }
                }
            }
            drop(log);
            if seen.lo > seen.hi {
                (seen.lo, seen.hi) = range;
            } else {
                seen.lo = seen.lo.min(range.0);
                seen.hi = seen.hi.max(range.1);
            }
        }
    }

    /// The events of record `id` of `model`, oldest first.
    pub(crate) fn of_record(
        &self,
        events: &Mutex<Wal>,
        model: &str,
        id: Uuid,
    ) -> Result<Vec<Event>, HistoryError> {
        self.catch_up(events)?;
        let seqs = self.seen().records.get(&id).cloned().unwrap_or_default();
        let log = lock_events(events);
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(bytes) = log.read(seq)? {
                let ev = self.read(&bytes)?;
                if ev.model == model {
                    out.push(ev);
                }
            }
        }
        Ok(out)
    }

    /// The events of `model` after sequence number `after`, oldest first, at most `limit`
    /// (a timeline of [`Timeline::of_every_model`]).
    pub(crate) fn of_model(
        &self,
        events: &Mutex<Wal>,
        model: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, HistoryError> {
        self.catch_up(events)?;
        let seqs: Vec<u64> = self
            .seen()
            .models
            .get(model)
            .map(|l| {
                l.range(after.saturating_add(1)..)
                    .take(limit)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let log = lock_events(events);
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(bytes) = log.read(seq)? {
                out.push(self.read(&bytes)?);
            }
        }
        Ok(out)
    }

    /// Audit entries after sequence number `after`, oldest first: the events of audited
    /// models that `keep` takes, at most `limit` of them, looking at no more than `budget`
    /// events; answers them and the sequence number the next page starts after (None:
    /// the end was reached).
    pub(crate) fn audit(
        &self,
        events: &Mutex<Wal>,
        after: u64,
        record: Option<Uuid>,
        limit: usize,
        budget: usize,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> Result<(Vec<Event>, Option<u64>), HistoryError> {
        self.catch_up(events)?;
        let candidates: Vec<u64> = {
            let seen = self.seen();
            match record {
                Some(id) => seen
                    .records
                    .get(&id)
                    .map(|l| {
                        l.iter()
                            .copied()
                            .filter(|s| *s > after && seen.audit.contains(s))
                            .take(budget)
                            .collect()
                    })
                    .unwrap_or_default(),
                None => seen
                    .audit
                    .range(after + 1..)
                    .copied()
                    .take(budget)
                    .collect(),
            }
        };
        let exhausted = candidates.len() < budget;
        let log = lock_events(events);
        let mut out = Vec::new();
        let mut last = after;
        for seq in candidates {
            last = seq;
            if let Some(bytes) = log.read(seq)? {
                let ev = self.read(&bytes)?;
                if keep(&ev) {
                    out.push(ev);
                    if out.len() == limit {
                        return Ok((out, Some(seq)));
                    }
                }
            }
        }
        Ok((out, (!exhausted).then_some(last)))
    }
}
