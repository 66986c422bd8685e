//! The store's snapshot: every record of every model as of one event, with the state
//! machine's applied state and the duplicate-detection window at that event.
//!
//! One format serves both snapshots: the one in the data dir's `snapshot` file, which
//! bounds the replay at restart (a restart loads it and replays only the events after
//! it), and openraft's, which brings a lagging node up to date (a node that installs one
//! keeps its bytes as its own `snapshot` file). It is encoded from an [`Image`], an O(1)
//! frozen copy of the state (persistent maps), off the apply path, and read back with one
//! sequential read.
//!
//! Layout: `"LTHSNAP2" | header length: u32 LE | header (JSON) | records`, where the
//! header holds the last event's sequence number, the applied state (as the state machine
//! encoded it), the window, and each model's name, record count and record layout
//! (`row.rs`); the records follow in the header's order, each `length: u32 LE | the
//! record's compact bytes`, as the state keeps them. Loading one copies each record's
//! bytes as they are when the model's layout is still the same (a changed schema
//! re-encodes them), and builds the indexes of each model on threads of their own. A
//! snapshot written before records were compact (`"LTHSNAP1"`: each record as its JSON
//! text) is still read. On disk and on the wire the whole is framed by `wal::slot`
//! (length and checksum).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::decide::IdempotencyKey;
use super::event::Record;
use super::row::{Layout, Slot, Stored};
use super::state::State;
use super::Stats;
use crate::spec::ServiceSpec;

const MAGIC: &[u8; 8] = b"LTHSNAP2";
/// Snapshots whose records are JSON text.
const MAGIC_JSON: &[u8; 8] = b"LTHSNAP1";

/// The duplicate-detection window of the state machine at one event, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// `(sequence number, event id)` of the newest events.
    pub events: Vec<(u64, Uuid)>,
    /// The idempotency keys of the same events.
    pub keys: Vec<(u64, IdempotencyKey)>,
}

/// A model's records by id, as the state keeps them.
pub type Records = super::tree::Tree<Uuid, Arc<Stored>>;

/// The state as of one event, frozen (cheap to take: the maps are shared).
#[derive(Clone)]
pub struct Image {
    /// The last event it holds.
    pub last_seq: u64,
    /// The state machine's applied state at that event (its own JSON).
    pub applied: Vec<u8>,
    /// Each model's name, layout and records, by model name.
    pub models: Vec<(String, Arc<Layout>, Records)>,
    /// The duplicate-detection window at that event.
    pub window: Window,
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    last_seq: u64,
    #[serde(borrow)]
    applied: &'a serde_json::value::RawValue,
    models: Vec<ModelHeader>,
    recent: Vec<(u64, Uuid)>,
    keys: Vec<(u64, IdempotencyKey)>,
}

/// A model in a snapshot's header.
#[derive(Serialize, Deserialize)]
struct ModelHeader {
    name: String,
    records: u64,
    /// The layout of its records (absent in `LTHSNAP1`: they are JSON text).
    #[serde(default)]
    slots: Vec<Slot>,
}

/// A snapshot read back: the state, and what the state machine needs besides.
pub struct Loaded {
    /// The state as of `state.last_seq`.
    pub state: State,
    /// The applied state stored with it.
    pub applied: Vec<u8>,
    /// The duplicate-detection window stored with it.
    pub window: Window,
}

impl Image {
    /// Freezes `state`, with the state machine's `applied` state and window.
    pub fn of(state: &State, applied: Vec<u8>, window: Window) -> Self {
        let mut models: Vec<_> = state
            .models
            .iter()
            .map(|(m, ms)| (m.clone(), ms.layout.clone(), ms.records.clone()))
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        Image {
            last_seq: state.last_seq,
            applied,
            models,
            window,
        }
    }

    /// How many records it holds.
    pub fn records(&self) -> usize {
        self.models.iter().map(|(_, _, r)| r.len()).sum()
    }

    /// Writes it to `out`, from the records' bytes as the state keeps them.
    pub fn encode(&self, out: &mut impl Write) -> std::io::Result<()> {
        let applied: &serde_json::value::RawValue = serde_json::from_slice(&self.applied)
            .map_err(|e| std::io::Error::other(format!("the applied state: {e}")))?;
        let header = Header {
            last_seq: self.last_seq,
            applied,
            models: self
                .models
                .iter()
                .map(|(m, layout, r)| ModelHeader {
                    name: m.clone(),
                    records: r.len() as u64,
                    slots: layout.slots().to_vec(),
                })
                .collect(),
            recent: self.window.events.clone(),
            keys: self.window.keys.clone(),
        };
        let header = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        out.write_all(MAGIC)?;
        out.write_all(&len32(header.len())?.to_le_bytes())?;
        out.write_all(&header)?;
        for (_, _, records) in &self.models {
            for r in records.values() {
                out.write_all(&len32(r.bytes().len())?.to_le_bytes())?;
                out.write_all(r.bytes())?;
            }
        }
        Ok(())
    }

    /// Its bytes, as [`Image::encode`] writes them.
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

fn len32(n: usize) -> std::io::Result<u32> {
    u32::try_from(n).map_err(|_| std::io::Error::other("a record of 4 GiB or more"))
}

/// Why a snapshot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// It ends before its content does.
    #[error("the snapshot ends early, at byte {0}")]
    EndsEarly(usize),
    /// It does not start with the snapshot's magic bytes.
    #[error("this is not a lithair snapshot")]
    NotASnapshot,
    /// Its header does not parse.
    #[error("its header: {0}")]
    Header(serde_json::Error),
    /// A record does not parse.
    #[error("a record of {0} cannot be read: {1}")]
    Record(String, serde_json::Error),
    /// A record's compact bytes do not read.
    #[error("a record of {0}: {1}")]
    Damaged(String, super::row::Damaged),
    /// A record has no valid id.
    #[error("a record of {0} has no valid id")]
    NoId(String),
    /// Bytes follow the last record.
    #[error("{0} bytes follow the last record")]
    Trailing(usize),
}

/// Reads `bytes` (written by [`Image::encode`]) into a state for `spec`; counts the
/// records in `stats`. Records of models the schema no longer has are skipped; records
/// written before a field with a default existed get it.
pub fn decode(bytes: &[u8], spec: &ServiceSpec, stats: &Stats) -> Result<Loaded, Unreadable> {
    Ok(parse(bytes, spec)?.finish(stats))
}

/// [`decode`], taking the bytes: they are freed once the records are read, before the
/// indexes are built (a start needs less memory at its peak).
pub fn decode_owned(
    bytes: Vec<u8>,
    spec: &ServiceSpec,
    stats: &Stats,
) -> Result<Loaded, Unreadable> {
    let parsed = parse(&bytes, spec)?;
    drop(bytes);
    Ok(parsed.finish(stats))
}

/// A record read from a snapshot, with its id.
type Row = (Uuid, Arc<Stored>);

/// A snapshot read, its models not yet filled.
struct Parsed {
    state: State,
    /// Each model's records, by id.
    rows: Vec<(String, Vec<Row>)>,
    last_seq: u64,
    applied: Vec<u8>,
    window: Window,
}

impl Parsed {
    /// Fills the models (records and indexes) and counts the records in `stats`.
    fn finish(self, stats: &Stats) -> Loaded {
        let mut state = self.state;
        let mut loaded = 0u64;
        for (name, rows) in self.rows {
            if let Some(ms) = state.models.get_mut(&name) {
                loaded += rows.len() as u64;
                ms.fill(rows);
            }
        }
        state.last_seq = self.last_seq;
        // What changed before the snapshot changed at its last event at the latest.
        for ms in state.models.values_mut() {
            ms.changed = ms.changed.max(self.last_seq);
        }
        state.mark_snapshot();
        stats.snapshot_records.fetch_add(loaded, Ordering::Relaxed);
        Loaded {
            state,
            applied: self.applied,
            window: self.window,
        }
    }
}

fn parse(bytes: &[u8], spec: &ServiceSpec) -> Result<Parsed, Unreadable> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], Unreadable> {
        let piece = bytes
            .get(at..at.saturating_add(n))
            .ok_or(Unreadable::EndsEarly(at))?;
        at += n;
        Ok(piece)
    };
    let json = match take(8)? {
        m if m == MAGIC => false,
        m if m == MAGIC_JSON => true,
        _ => return Err(Unreadable::NotASnapshot),
    };
    let len = |b: &[u8]| -> usize {
        let mut four = [0u8; 4];
        four.copy_from_slice(b);
        u32::from_le_bytes(four) as usize
    };
    let header_len = len(take(4)?);
    let header: Header = serde_json::from_slice(take(header_len)?).map_err(Unreadable::Header)?;
    let mut state = State::new(spec);
    let mut models = Vec::with_capacity(header.models.len());
    for model in &header.models {
        // A model stored under its former name is the renamed model.
        let name = &spec.current_name(&model.name).to_string();
        let current = state.models.get(name).map(|ms| ms.layout.clone());
        // The records keep their bytes when the layout is the same.
        let same = current
            .as_ref()
            .is_some_and(|l| !json && l.slots() == model.slots.as_slice());
        let written = Layout::from_slots(model.slots.clone());
        let mut rows = Vec::with_capacity(usize::try_from(model.records).unwrap_or(0).min(1 << 24));
        for _ in 0..model.records {
            let n = len(take(4)?);
            let piece = take(n)?;
            let Some(layout) = &current else { continue };
            let stored = if same {
                Stored::from_bytes(layout, piece)
                    .map_err(|e| Unreadable::Damaged(name.clone(), e))?
            } else {
                let mut r: Record = if json {
                    serde_json::from_slice(piece)
                        .map_err(|e| Unreadable::Record(name.clone(), e))?
                } else {
                    Stored::from_bytes(&written, piece)
                        .map_err(|e| Unreadable::Damaged(name.clone(), e))?
                        .record()
                };
                if state.upcast(name, &mut r) {
                    state.note_upgraded(name);
                }
                Stored::encode(layout, &r)
            };
            let id = stored.id().ok_or_else(|| Unreadable::NoId(name.clone()))?;
            rows.push((id, Arc::new(stored)));
        }
        models.push((name.clone(), rows));
    }
    if at != bytes.len() {
        return Err(Unreadable::Trailing(bytes.len() - at));
    }
    Ok(Parsed {
        state,
        rows: models,
        last_seq: header.last_seq,
        applied: header.applied.get().as_bytes().to_vec(),
        window: Window {
            events: header.recent,
            keys: header.keys,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(fields: &str) -> ServiceSpec {
        crate::spec::fixtures::item(fields).spec
    }

    const NAME: &str = r#"{"name": "name", "type": {"kind": "string"}, "indexed": true}"#;
    const OLD: &str = r#"{"name": "old", "type": {"kind": "int"}, "optional": true}"#;
    const STOCK: &str = r#"{"name": "stock", "type": {"kind": "int"}, "default": 7}"#;

    fn item(name: &str) -> Record {
        json!({"id": Uuid::new_v4().to_string(), "name": name, "old": 1, "version": 1})
            .as_object()
            .unwrap()
            .clone()
    }

    fn names(state: &State) -> Vec<String> {
        let ms = &state.models["Item"];
        ms.index("name")
            .unwrap()
            .entries
            .iter()
            .map(|(k, _)| format!("{k:?}"))
            .collect()
    }

    /// A snapshot read back under the schema it was written with holds the same records
    /// and indexes; under a changed schema the records are re-encoded: a new field with a
    /// default gets it, a dropped field stays in the record.
    #[test]
    fn a_snapshot_reads_back_under_the_same_and_a_changed_schema() {
        let before = spec(&format!("{NAME}, {OLD}"));
        let mut state = State::new(&before);
        for name in ["b", "a", "c"] {
            let ms = state.models.get_mut("Item").unwrap();
            let r = item(name);
            let id = Uuid::parse_str(r["id"].as_str().unwrap()).unwrap();
            let stored = ms.encode(&r);
            ms.put(id, Some(stored));
        }
        state.last_seq = 3;
        let bytes = Image::of(&state, b"{}".to_vec(), Window::default())
            .to_bytes()
            .unwrap();
        let same = decode(&bytes, &before, &Stats::default()).unwrap().state;
        assert_eq!(same.models["Item"].records, state.models["Item"].records);
        assert_eq!(names(&same), names(&state));
        assert_eq!(same.last_seq, 3);

        let after = spec(&format!("{NAME}, {STOCK}"));
        let changed = decode(&bytes, &after, &Stats::default()).unwrap().state;
        let ms = &changed.models["Item"];
        assert_eq!(ms.records.len(), 3);
        for r in ms.records.values() {
            assert_eq!(r.get("stock"), Some(json!(7)));
            assert_eq!(r.get("old"), Some(json!(1)));
            assert!(Arc::ptr_eq(r.layout(), &ms.layout));
        }
        assert_eq!(names(&changed), names(&state));
    }

    /// A snapshot of the earlier format (records as JSON text) is still read.
    #[test]
    fn a_snapshot_with_json_records_is_read() {
        let spec = spec(NAME);
        let records = [item("x"), item("y")];
        let header = json!({
            "last_seq": 9, "applied": {"k": 1}, "models": [["Item", 2]],
            "recent": [[9, Uuid::nil()]], "keys": []
        });
        let header = serde_json::to_vec(&header).unwrap();
        let mut bytes = MAGIC_JSON.to_vec();
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        for r in &records {
            let text = serde_json::to_vec(r).unwrap();
            bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&text);
        }
        let loaded = decode(&bytes, &spec, &Stats::default()).unwrap();
        assert_eq!(loaded.state.last_seq, 9);
        assert_eq!(loaded.applied, br#"{"k":1}"#);
        assert_eq!(loaded.window.events, vec![(9, Uuid::nil())]);
        let ms = &loaded.state.models["Item"];
        assert_eq!(ms.records.len(), 2);
        for r in &records {
            let id = Uuid::parse_str(r["id"].as_str().unwrap()).unwrap();
            assert_eq!(ms.records.get(&id).unwrap().record(), *r);
        }
        // Cut anywhere, it is refused, never read short.
        for cut in [8, 12, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], &spec, &Stats::default()).is_err());
        }
    }

    /// A record written before a field was renamed and another added with a backfill is
    /// read under the new name with the backfill: from a snapshot, and from its events
    /// (an update that names the field's former name changes the renamed field).
    #[test]
    fn records_of_an_earlier_schema_read_renamed_and_backfilled() {
        use crate::domain::event::{Actor, Event, EventKind};
        let before = spec(NAME);
        let after = spec(
            r#"{"name": "title", "type": {"kind": "string"}, "renamed_from": "name"},
            {"name": "stock", "type": {"kind": "int"}, "backfill": 5, "default": 0}"#,
        );
        let mut state = State::new(&before);
        let r = item("kept");
        let id = Uuid::parse_str(r["id"].as_str().unwrap()).unwrap();
        let ms = state.models.get_mut("Item").unwrap();
        let stored = ms.encode(&r);
        ms.put(id, Some(stored));
        let bytes = Image::of(&state, b"{}".to_vec(), Window::default())
            .to_bytes()
            .unwrap();
        let loaded = decode(&bytes, &after, &Stats::default()).unwrap().state;
        let got = loaded.get("Item", id).unwrap().record();
        assert_eq!(
            (got.get("title"), got.get("name")),
            (Some(&json!("kept")), None)
        );
        assert_eq!(
            got.get("stock"),
            Some(&json!(5)),
            "the backfill, not the default"
        );
        assert_eq!(loaded.upgraded.get("Item"), Some(&1));

        let event = |seq: u64, kind: EventKind, data: serde_json::Value| Event {
            format: 1,
            event_id: Uuid::new_v4(),
            sequence_number: seq,
            aggregate_id: id,
            model: "Item".into(),
            event_type: "ItemX".into(),
            kind,
            version: seq,
            event_data: data,
            created_at: "2026-12-02T00:00:00.000000Z".into(),
            node_id: "1".into(),
            principal: Actor {
                name: "t".into(),
                roles: vec![],
                action: None,
            },
            idempotency_key: None,
            transaction: None,
        };
        let mut replayed = State::new(&after);
        replayed.apply(&mut event(
            1,
            EventKind::Created,
            json!({"id": id.to_string(), "name": "a", "version": 1}),
        ));
        replayed.apply(&mut event(
            2,
            EventKind::Updated,
            json!({"changes": {"name": {"old": "a", "new": "b"}}}),
        ));
        let got = replayed.get("Item", id).unwrap().record();
        assert_eq!(
            (got.get("title"), got.get("name")),
            (Some(&json!("b")), None)
        );
        assert_eq!(got.get("stock"), Some(&json!(5)));
    }

    /// Records stored under a model's former name are the renamed model's: from a
    /// snapshot, from replayed events, and from a command proposed before the rename.
    #[test]
    fn records_of_a_renamed_model_are_read_as_its_own() {
        use crate::domain::decide::{Decider, Overlay, Stamped};
        use crate::domain::event::Actor;
        use crate::domain::Command;
        let before = spec(NAME);
        let after = crate::spec::CompiledSpec::from_json(&format!(
            r#"{{"service": {{"name": "t"}}, "roles": [],
              "models": [{{"name": "Part", "snake": "part", "path": "/api/parts", "renamed_from": "Item",
                "operations": ["list"], "permissions": {{"read": [], "create": [], "update": [], "delete": []}},
                "fields": [{NAME}]}}]}}"#
        ))
        .unwrap()
        .spec;
        let mut state = State::new(&before);
        let r = item("kept");
        let id = Uuid::parse_str(r["id"].as_str().unwrap()).unwrap();
        let ms = state.models.get_mut("Item").unwrap();
        let stored = ms.encode(&r);
        ms.put(id, Some(stored));
        let bytes = Image::of(&state, b"{}".to_vec(), Window::default())
            .to_bytes()
            .unwrap();
        let loaded = decode(&bytes, &after, &Stats::default()).unwrap().state;
        assert_eq!(
            loaded.get("Part", id).unwrap().get("name"),
            Some(json!("kept"))
        );
        assert!(!loaded.models.contains_key("Item"));

        // A create proposed under the former name, decided after the rename.
        let mut fresh = State::new(&after);
        let other = item("new");
        let other_id = Uuid::parse_str(other["id"].as_str().unwrap()).unwrap();
        let mut stamped = Stamped {
            command: Command::Create {
                model: "Item".into(),
                record: other,
            },
            event_id: Uuid::new_v4(),
            at: "2026-12-02T00:00:00.000000Z".into(),
            actor: Actor {
                name: "t".into(),
                roles: vec![],
                action: None,
            },
            node_id: "1".into(),
            key: None,
            trace: None,
        };
        let (mut ev, record) = Decider::new(&after)
            .decide(&fresh, &mut Overlay::default(), &mut stamped, 1)
            .expect("decided");
        assert_eq!(ev.model, "Part");
        fresh.publish(&ev, record);
        assert!(fresh.get("Part", other_id).is_some());
        // The same event, replayed from a log written before the rename.
        ev.model = "Item".into();
        let mut replayed = State::new(&after);
        let created = replayed.encoder().created(&mut ev);
        replayed.apply_encoded(&mut ev, created);
        assert!(replayed.get("Part", other_id).is_some());
    }
}
