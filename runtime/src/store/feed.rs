//! The change feed's source: every applied event with the record after it, live, and
//! the same read back from the event log for a reader that resumes.
//!
//! - Live: the state machine hands each event it applied to [`Feed::publish`] once the
//!   event is in the event log (so a reader that finds the log short of an event it was
//!   not sent will still be sent it). A bounded broadcast: a receiver more than
//!   [`CAPACITY`] events behind misses events and is told so (`Lagged`); nothing grows
//!   without bound. Without subscribers nothing is cloned or sent.
//! - Past: [`Feed::page`] reads the events of one model after a sequence number from the
//!   log, each with the record after it: a create's record is the event's, a delete has
//!   none, an update's is the record's events applied in order up to it (each brought up
//!   to the current schema, as the state's records are). The feed's own
//!   timeline (every model's events; built from the log the first time a reader resumes,
//!   then followed) finds them.
//! - Closing: at shutdown [`Feed::close`] ends every stream, so that draining the
//!   connections does not wait for them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::timeline::{HistoryError, Timeline};
use crate::domain::event::{Event, EventKind, Record};
use crate::domain::row::Stored;
use crate::spec::ServiceSpec;
use crate::wal::Wal;

/// Events a live receiver may fall behind by before it misses some.
pub const CAPACITY: usize = 4096;

/// One applied event and the record after it (None after a delete).
#[derive(Debug)]
pub struct Change {
    /// The event.
    pub event: Event,
    /// The record after it, as the state keeps it.
    pub record: Option<Arc<Stored>>,
}

/// The record after a change, live (compact) or read back (JSON).
#[derive(Debug, Clone)]
pub enum After {
    /// From the state.
    Stored(Arc<Stored>),
    /// Rebuilt from the log.
    Record(Record),
    /// Deleted.
    Gone,
}

/// The feed's hub.
#[derive(Debug)]
pub struct Feed {
    live: tokio::sync::broadcast::Sender<Arc<Change>>,
    closing: tokio::sync::watch::Sender<bool>,
    timeline: Timeline,
}

impl Feed {
    /// The feed of `spec`'s models.
    pub fn new(spec: &ServiceSpec) -> Feed {
        let (live, _) = tokio::sync::broadcast::channel(CAPACITY);
        let (closing, _) = tokio::sync::watch::channel(false);
        Feed {
            live,
            closing,
            timeline: Timeline::of_every_model(spec),
        }
    }

    /// Whether anyone listens (the state machine keeps changes only then).
    pub fn listened(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Sends `changes` to the live receivers.
    pub fn publish(&self, changes: Vec<Change>) {
        for c in changes {
            // No receiver left: nothing to do.
            let _ = self.live.send(Arc::new(c));
        }
    }

    /// A live receiver of what is applied from now on, and the signal that ends it.
    pub fn subscribe(
        &self,
    ) -> (
        tokio::sync::broadcast::Receiver<Arc<Change>>,
        tokio::sync::watch::Receiver<bool>,
    ) {
        (self.live.subscribe(), self.closing.subscribe())
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The events of `model` after sequence number `after` in the log, at most `limit`,
    /// each with the record after it. Reads files: call it off the async threads.
    pub fn page(
        &self,
        events: &Mutex<Wal>,
        model: &str,
        after: u64,
        limit: usize,
        upcast: impl Fn(&mut Record),
    ) -> Result<Vec<(Event, After)>, HistoryError> {
        let page = self.timeline.of_model(events, model, after, limit)?;
        // The records this page rebuilt so far: (the sequence number it is at, it).
        let mut known: HashMap<Uuid, (u64, Option<Record>)> = HashMap::new();
        let mut out = Vec::with_capacity(page.len());
        for ev in page {
            let id = ev.aggregate_id;
            let after = match ev.kind {
                EventKind::Created => ev.event_data.as_object().cloned(),
                EventKind::Deleted => None,
                EventKind::Updated => match known.get(&id) {
                    Some((_, before)) => ev.apply(before.as_ref()),
                    None => {
                        // The record's own events, applied up to this one.
                        let mut state: Option<Record> = None;
                        for past in self.timeline.of_record(events, model, id)? {
                            if past.sequence_number > ev.sequence_number {
                                break;
                            }
                            state = past.apply(state.as_ref());
                            if let Some(r) = state.as_mut() {
                                upcast(r);
                            }
                        }
                        state
                    }
                },
            };
            let mut after = after;
            if let Some(r) = after.as_mut() {
                upcast(r);
            }
            known.insert(id, (ev.sequence_number, after.clone()));
            out.push((ev, after.map_or(After::Gone, After::Record)));
        }
        Ok(out)
    }
}
