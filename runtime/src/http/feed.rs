//! `GET /api/<plural>/_events`: a model's change feed, as server-sent events
//! (`text/event-stream`).
//!
//! One event per change of the model: `id:` its sequence number, `event:` its type
//! (`OrderCreated`, `OrderUpdated`, `OrderDeleted`), `data:` its envelope on one line
//! (`sequence_number`, `event_id`, `event_type`, `kind`, `model`, `id`, `version`,
//! `timestamp`, `principal`, `by_action`, and `record`: the record after the change, as
//! the caller may see it; `null` after a delete).
//!
//! - `Last-Event-ID` (as a browser's `EventSource` sends it when it reconnects) or
//!   `?since=<sequence number>` resumes after that event: what followed is read from the
//!   event log (`store/feed.rs`), then the stream goes on live. Without either, the feed
//!   starts with the next change. A point before the first event this node holds is 410.
//! - The model's read permission applies, its field masks too, and a caller who reads
//!   only its own records is sent only their changes.
//! - Every node serves it from the events it applies: a follower's feed works as the
//!   leader's.
//! - A comment opens the stream and another comes every 15 s while nothing happens, so
//!   that proxies keep the connection.
//! - A consumer too slow to keep up (more than `store::feed::CAPACITY` live events
//!   behind) is sent a last `event: lagged` with the id to resume after, and the stream
//!   ends; nothing is buffered beyond that. (A reader that falls behind while it catches
//!   up from the log only reads on from the log.)
//! - A shutdown ends every stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::app::App;
use super::list::pairs;
use super::respond::{Body, Resp};
use crate::auth::{Access, Principal};
use crate::domain::event::{Event, EventKind};
use crate::error::ApiError;
use crate::spec::{ModelSpec, Operation};
use crate::store::feed::After;

/// Events read from the log at a time while catching up.
const PAGE: usize = 256;
/// A comment this often while nothing else is sent.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Chunks written but not yet taken by the connection.
const BUFFER: usize = 16;

/// Where the stream resumes: after `Last-Event-ID`, or after `?since=`.
fn resume_point(query: Option<&str>, headers: &hyper::HeaderMap) -> Result<Option<u64>, ApiError> {
    let mut since = None;
    for (k, v) in pairs(query)? {
        match k.as_str() {
            "since" => {
                let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
                since = Some(v.parse::<u64>().ok().filter(|_| digits).ok_or_else(|| {
                    ApiError::bad_request(
                        "since must be the sequence number of an event (a whole number)",
                    )
                })?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`: the change feed takes `since`"
                )))
            }
        }
    }
    if let Some(v) = headers.get("last-event-id") {
        let id = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|t| (1..=19).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be the id of an event this feed sent")
            })?;
        return Ok(Some(id));
    }
    Ok(since)
}

/// Answers the feed of `m` for `who`: the stream's head now, its events as they come.
pub(crate) fn serve(
    app: &Arc<App>,
    m: &ModelSpec,
    who: &Principal,
    query: Option<&str>,
    headers: &hyper::HeaderMap,
) -> Result<Resp, ApiError> {
    let since = resume_point(query, headers)?;
    let store = &app.engine.store;
    if let (Some(s), Some(first)) = (since, store.first_event()) {
        if s.saturating_add(1) < first {
            return Err(ApiError::new(
                410,
                "Gone",
                format!("this node holds the events from {first} on; resume from a later event, or read the records again"),
            ));
        }
    }
    let (live, closing) = store.feed().subscribe();
    // Subscribed first: an event applied after this is sent live, or read from the log.
    let now = store.read(|s| s.last_seq);
    let (tx, rx) = tokio::sync::mpsc::channel(BUFFER);
    let stream = Stream {
        app: app.clone(),
        model: m.name.clone(),
        access: Access::of(m, who, Operation::List),
        pos: since.unwrap_or(now),
        now,
        tx,
        closing,
    };
    tokio::spawn(stream.run(since.is_some(), live));
    let mut r = Resp::new(Body::stream(rx));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer answers (nginx) pass this one on as it comes.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// One client's stream.
struct Stream {
    app: Arc<App>,
    model: String,
    access: Access,
    /// The last event sent (or skipped).
    pos: u64,
    /// The state's last event when the stream subscribed: a catch-up reads the log at
    /// least up to it (what came before it may not have been sent live).
    now: u64,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    /// Turns true at shutdown.
    closing: tokio::sync::watch::Receiver<bool>,
}

type Live = tokio::sync::broadcast::Receiver<Arc<crate::store::feed::Change>>;

/// What woke a stream up.
enum Next {
    Change(Result<Arc<crate::store::feed::Change>, RecvError>),
    Beat,
    Stop,
}

impl Stream {
    async fn run(mut self, catch_up: bool, mut live: Live) {
        let head = format!(": the change feed of {}\nretry: 2000\n\n", self.model);
        if !self.write(Bytes::from(head)).await {
            return;
        }
        let mut catching_up = catch_up;
        // Whether the live receiver has not been read since a catch-up ended.
        let mut fresh = false;
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        let mut closing = self.closing.clone();
        loop {
            if *closing.borrow() {
                return;
            }
            if catching_up {
                match self.catch_up().await {
                    Ok(true) => continue,
                    Ok(false) => {
                        catching_up = false;
                        fresh = true;
                    }
                    Err(()) => return,
                }
            }
            let next = tokio::select! {
                r = live.recv() => Next::Change(r),
                _ = heartbeat.tick() => Next::Beat,
                _ = closing.changed() => Next::Stop,
                _ = self.tx.closed() => Next::Stop,
            };
            match next {
                Next::Change(Ok(change)) => {
                    fresh = false;
                    let ev = &change.event;
                    if ev.model != self.model || ev.sequence_number <= self.pos {
                        continue;
                    }
                    let after = change.record.clone().map_or(After::Gone, After::Stored);
                    if !self.send(ev, &after).await {
                        return;
                    }
                    heartbeat.reset();
                }
                // Behind while catching up: the log has what was missed.
                Next::Change(Err(RecvError::Lagged(_))) if fresh => {
                    live = self.app.engine.store.feed().subscribe().0;
                    self.now = self.app.engine.store.read(|s| s.last_seq);
                    catching_up = true;
                }
                Next::Change(Err(RecvError::Lagged(missed))) => {
                    let data = json!({
                        "message": "this consumer fell too far behind the changes; reconnect with Last-Event-ID to resume from the event log",
                        "missed": missed,
                        "last_event_id": self.pos,
                    });
                    let frame = format!("id: {}\nevent: lagged\ndata: {data}\n\n", self.pos);
                    self.write(Bytes::from(frame)).await;
                    return;
                }
                Next::Change(Err(RecvError::Closed)) | Next::Stop => return,
                Next::Beat => {
                    if !self.write(Bytes::from_static(b": heartbeat\n\n")).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sends the next page of the log after `pos`; answers whether there was one (Err:
    /// the stream is over).
    async fn catch_up(&mut self) -> Result<bool, ()> {
        let engine = self.app.engine.clone();
        let (model, after) = (self.model.clone(), self.pos);
        let page =
            tokio::task::spawn_blocking(move || engine.store.feed_page(&model, after, PAGE)).await;
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                tracing::error!(error = %e, model = %self.model, "the change feed cannot read the event log");
                let data = json!({"message": format!("the event log cannot be read: {e}")});
                self.write(Bytes::from(format!("event: error\ndata: {data}\n\n")))
                    .await;
                return Err(());
            }
            Err(_) => return Err(()),
        };
        if page.is_empty() {
            // The events up to `now` are applied, but may not be in the log yet.
            if self.app.engine.store.last_event().unwrap_or(0) < self.now {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                return Ok(true);
            }
            return Ok(false);
        }
        for (ev, after) in page {
            if ev.sequence_number > self.pos && !self.send(&ev, &after).await {
                return Err(());
            }
        }
        Ok(true)
    }

    /// Sends `ev` (if the caller may see it); answers whether the stream goes on.
    async fn send(&mut self, ev: &Event, after: &After) -> bool {
        self.pos = ev.sequence_number;
        match frame(ev, after, &self.access) {
            Some(f) => self.write(f).await,
            None => true,
        }
    }

    /// Writes `chunk` once the client has room for it; answers whether the stream goes
    /// on (false: the client left, or the service is shutting down, which a client that
    /// does not read would otherwise hold up until the drain's timeout).
    async fn write(&mut self, chunk: Bytes) -> bool {
        let mut closing = self.closing.clone();
        tokio::select! {
            sent = self.tx.send(chunk) => sent.is_ok(),
            _ = closing.wait_for(|c| *c) => false,
        }
    }
}

/// The SSE frame of `ev`, or None when `access` does not reach its record.
fn frame(ev: &Event, after: &After, access: &Access) -> Option<Bytes> {
    let covered = match after {
        After::Stored(r) => access.covers(|f| r.get(f)),
        After::Record(r) => access.covers(|f| r.get(f).cloned()),
        // A delete: whose the record was is in the event.
        After::Gone => access.covers(|f| ev.event_data.get("old").and_then(|o| o.get(f)).cloned()),
    };
    if !covered {
        return None;
    }
    let kind = match ev.kind {
        EventKind::Created => "created",
        EventKind::Updated => "updated",
        EventKind::Deleted => "deleted",
    };
    let envelope = json!({
        "sequence_number": ev.sequence_number,
        "event_id": ev.event_id,
        "event_type": ev.event_type,
        "kind": kind,
        "model": ev.model,
        "id": ev.aggregate_id,
        "version": ev.version,
        "timestamp": ev.created_at,
        "principal": ev.principal.name,
        "by_action": ev.principal.action,
    });
    let mut data = serde_json::to_vec(&envelope).unwrap_or_default();
    // The record goes in as the state renders it, without what the caller may not see.
    data.pop();
    data.extend_from_slice(b",\"record\":");
    match after {
        After::Stored(r) => r.write_json_without(&mut data, access.hidden()),
        After::Record(r) => {
            let mut r = Value::Object(r.clone());
            access.mask_value(&mut r);
            data.extend_from_slice(&serde_json::to_vec(&r).unwrap_or_default());
        }
        After::Gone => data.extend_from_slice(b"null"),
    }
    data.push(b'}');
    let mut out = format!(
        "id: {}\nevent: {}\ndata: ",
        ev.sequence_number, ev.event_type
    )
    .into_bytes();
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\n\n");
    Some(Bytes::from(out))
}
