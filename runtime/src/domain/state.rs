//! The in-memory state the store serves reads from: records per model, the secondary
//! indexes of `unique` and `indexed` fields (value → ids), and the ordered indexes of the
//! default list order (`created_at`) and of `indexed` fields (value, id in order), which
//! let a sorted page read only the rows it returns. Only the Raft state machine changes
//! it, by applying committed events; readers take a read lock.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::event::{Event, Record};
use super::row::{Layout, Stored};
use crate::spec::ServiceSpec;

/// One model's records and indexes.
#[derive(Clone, Debug)]
pub struct ModelState {
    /// How its records are laid out (`row.rs`).
    pub layout: Arc<Layout>,
    /// Records by id. A persistent map: cloning it for a snapshot is O(1).
    pub records: imbl::OrdMap<Uuid, Arc<Stored>>,
    /// field -> canonical value -> ids holding it.
    pub indexes: HashMap<String, HashMap<String, IdSet>>,
    /// field -> every record's (value, id), in list order: `created_at` and each
    /// `indexed` field. Persistent, so a list's frozen view of one is O(1).
    pub ordered: HashMap<String, imbl::OrdSet<(SortKey, Uuid)>>,
    /// Events of this model applied since the last snapshot.
    pub since_snapshot: u64,
}

/// A value as an ordered index keeps it, in the order lists compare values: a missing
/// value or `null` first, then numbers by value, strings by their bytes, booleans (a
/// field's values share one JSON type, so kinds never meet in one index).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey {
    /// Absent or `null`.
    Missing,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(Num),
    /// A string.
    Str(String),
    /// An array or object, by its JSON text.
    Other(String),
}

/// A JSON number, totally ordered (JSON has no NaN; `-0` equals `0`).
#[derive(Clone, Copy, Debug)]
pub struct Num(f64);

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Num {}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl SortKey {
    /// The key of a record's value.
    pub fn of(v: Option<&Value>) -> SortKey {
        match v {
            None | Some(Value::Null) => SortKey::Missing,
            Some(Value::Bool(b)) => SortKey::Bool(*b),
            // `+ 0.0` turns -0 into 0, which lists compare as equal.
            Some(Value::Number(n)) => SortKey::Num(Num(n.as_f64().unwrap_or(0.0) + 0.0)),
            Some(Value::String(s)) => SortKey::Str(s.clone()),
            Some(other) => SortKey::Other(other.to_string()),
        }
    }
}

/// The ids holding one indexed value. Most values of unique or selective fields are held
/// by one record: that case takes no allocation of its own.
#[derive(Clone, Debug)]
pub enum IdSet {
    /// One id.
    One(Uuid),
    /// Several ids.
    Many(BTreeSet<Uuid>),
}

impl IdSet {
    fn insert(&mut self, id: Uuid) {
        match self {
            IdSet::One(x) if *x == id => {}
            IdSet::One(x) => *self = IdSet::Many(BTreeSet::from([*x, id])),
            IdSet::Many(set) => {
                set.insert(id);
            }
        }
    }

    /// Removes `id`; answers whether the set is now empty.
    fn remove(&mut self, id: &Uuid) -> bool {
        match self {
            IdSet::One(x) => x == id,
            IdSet::Many(set) => {
                set.remove(id);
                if set.len() == 1 {
                    if let Some(only) = set.iter().next().copied() {
                        *self = IdSet::One(only);
                    }
                }
                set_is_empty(self)
            }
        }
    }

    /// The ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = Uuid> + '_ {
        let (one, many) = match self {
            IdSet::One(x) => (Some(*x), None),
            IdSet::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

fn set_is_empty(s: &IdSet) -> bool {
    matches!(s, IdSet::Many(set) if set.is_empty())
}

impl ModelState {
    /// An empty model state of `layout`.
    pub fn new(layout: Arc<Layout>) -> Self {
        ModelState {
            layout,
            records: Default::default(),
            indexes: Default::default(),
            ordered: Default::default(),
            since_snapshot: 0,
        }
    }

    /// Encodes `record` in this model's layout.
    pub fn encode(&self, record: &Record) -> Arc<Stored> {
        Arc::new(Stored::encode(&self.layout, record))
    }

    fn unindex(&mut self, id: Uuid, r: &Stored) {
        for (field, set) in self.ordered.iter_mut() {
            set.remove(&(SortKey::of(r.get(field).as_ref()), id));
        }
        for (field, idx) in self.indexes.iter_mut() {
            if let Some(v) = r.get(field).filter(|v| !v.is_null()) {
                let key = index_key(&v);
                if let Some(set) = idx.get_mut(&key) {
                    if set.remove(&id) {
                        idx.remove(&key);
                    }
                }
            }
        }
    }

    fn index(&mut self, id: Uuid, r: &Stored) {
        for (field, set) in self.ordered.iter_mut() {
            set.insert((SortKey::of(r.get(field).as_ref()), id));
        }
        for (field, idx) in self.indexes.iter_mut() {
            if let Some(v) = r.get(field).filter(|v| !v.is_null()) {
                match idx.get_mut(&index_key(&v)) {
                    Some(set) => set.insert(id),
                    None => {
                        idx.insert(index_key(&v), IdSet::One(id));
                    }
                }
            }
        }
    }

    /// Puts (or removes, with `None`) a record, keeping the indexes right.
    pub fn put(&mut self, id: Uuid, record: Option<Arc<Stored>>) {
        if let Some(old) = self.records.get(&id).cloned() {
            self.unindex(id, &old);
        }
        match record {
            Some(r) => {
                self.index(id, &r);
                self.records.insert(id, r);
            }
            None => {
                self.records.remove(&id);
            }
        }
    }

    /// Fills an empty model with `rows` (sorted by id, as a snapshot holds them): the
    /// records and each index are built on threads of their own.
    pub fn fill(&mut self, rows: Vec<(Uuid, Arc<Stored>)>) {
        let rows = &rows;
        let records = || rows.iter().cloned().collect::<imbl::OrdMap<_, _>>();
        let ordered = |field: &str| -> imbl::OrdSet<(SortKey, Uuid)> {
            rows.iter()
                .map(|(id, r)| (SortKey::of(r.get(field).as_ref()), *id))
                .collect()
        };
        let hashed = |field: &str| {
            let mut idx: HashMap<String, IdSet> = HashMap::new();
            for (id, r) in rows {
                if let Some(v) = r.get(field).filter(|v| !v.is_null()) {
                    match idx.get_mut(&index_key(&v)) {
                        Some(set) => set.insert(*id),
                        None => {
                            idx.insert(index_key(&v), IdSet::One(*id));
                        }
                    }
                }
            }
            idx
        };
        let ordered_fields: Vec<String> = self.ordered.keys().cloned().collect();
        let hashed_fields: Vec<String> = self.indexes.keys().cloned().collect();
        std::thread::scope(|s| {
            let records = in_background(s, records);
            let ordered: Vec<_> = ordered_fields
                .iter()
                .map(|f| (f, in_background(s, move || ordered(f))))
                .collect();
            let hashed: Vec<_> = hashed_fields
                .iter()
                .map(|f| (f, in_background(s, move || hashed(f))))
                .collect();
            self.records = records.join();
            for (f, set) in ordered {
                self.ordered.insert(f.clone(), set.join());
            }
            for (f, idx) in hashed {
                self.indexes.insert(f.clone(), idx.join());
            }
        });
    }

    /// Ids whose `field` equals `value` (only for indexed fields).
    pub fn lookup(&self, field: &str, value: &Value) -> Option<Vec<Uuid>> {
        let idx = self.indexes.get(field)?;
        Some(
            idx.get(&index_key(value))
                .map(|s| s.iter().collect())
                .unwrap_or_default(),
        )
    }
}

/// A snapshot is written once the events since the last one are at least this share
/// (one in N) of the records.
const SNAPSHOT_RATIO: u64 = 4;

/// Every model's state, and the last applied sequence number.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Per model name.
    pub models: HashMap<String, ModelState>,
    /// Last event applied.
    pub last_seq: u64,
    /// Events applied since the last snapshot (taken or loaded).
    pub since_snapshot: u64,
    /// Per model: fields with a default, which records written before the field existed get.
    defaults: HashMap<String, Vec<(String, Value)>>,
}

impl State {
    /// Empty state with indexes declared for every unique or indexed field.
    pub fn new(spec: &ServiceSpec) -> Self {
        let mut models = HashMap::new();
        for m in &spec.models {
            let mut ms = ModelState::new(Layout::of(m));
            for f in m.fields.iter().filter(|f| f.unique || f.indexed) {
                ms.indexes.insert(f.name.clone(), HashMap::new());
            }
            ms.ordered
                .insert("created_at".to_string(), imbl::OrdSet::new());
            for f in m.fields.iter().filter(|f| f.indexed) {
                ms.ordered.insert(f.name.clone(), imbl::OrdSet::new());
            }
            models.insert(m.name.clone(), ms);
        }
        let defaults = spec
            .models
            .iter()
            .map(|m| {
                let fields = m
                    .fields
                    .iter()
                    .filter_map(|f| f.default.clone().map(|d| (f.name.clone(), d)));
                (m.name.clone(), fields.collect())
            })
            .collect();
        State {
            models,
            last_seq: 0,
            since_snapshot: 0,
            defaults,
        }
    }

    /// Brings a record written under an older schema up to date: a field added since,
    /// with a default, gets that default (optional fields stay absent).
    /// Answers whether it changed anything.
    pub fn upcast(&self, model: &str, record: &mut Record) -> bool {
        let mut changed = false;
        for (field, value) in self.defaults.get(model).into_iter().flatten() {
            if !record.contains_key(field) {
                record.insert(field.clone(), value.clone());
                changed = true;
            }
        }
        changed
    }

    /// Applies a committed event. Events of models the schema no longer has are skipped
    /// (their records stay in the log).
    pub fn apply(&mut self, ev: &Event) {
        self.last_seq = self.last_seq.max(ev.sequence_number);
        let Some(previous) = self
            .models
            .get(&ev.model)
            .map(|ms| ms.records.get(&ev.aggregate_id).cloned())
        else {
            return;
        };
        let mut next = ev.apply(previous.map(|s| s.record()).as_ref());
        if let Some(r) = next.as_mut() {
            self.upcast(&ev.model, r);
        }
        if let Some(ms) = self.models.get_mut(&ev.model) {
            let next = next.map(|r| ms.encode(&r));
            ms.put(ev.aggregate_id, next);
            ms.since_snapshot += 1;
            self.since_snapshot += 1;
        }
    }

    /// Publishes a committed event whose resulting record the state machine already holds.
    pub fn publish(&mut self, ev: &Event, record: Option<Arc<Stored>>) {
        self.last_seq = self.last_seq.max(ev.sequence_number);
        if let Some(ms) = self.models.get_mut(&ev.model) {
            ms.put(ev.aggregate_id, record);
            ms.since_snapshot += 1;
            self.since_snapshot += 1;
        }
    }

    /// How many records it holds.
    pub fn records(&self) -> u64 {
        self.models.values().map(|ms| ms.records.len() as u64).sum()
    }

    /// Notes that a snapshot of the state as it is now was taken (or loaded).
    pub fn mark_snapshot(&mut self) {
        for ms in self.models.values_mut() {
            ms.since_snapshot = 0;
        }
        self.since_snapshot = 0;
    }

    /// Whether a snapshot is due: a model had `every` (its period; 1000 when absent)
    /// events since the last one, and the events since the last one are at least a
    /// quarter of the records now. So a restart replays at most a quarter of the store's
    /// size in events after loading the snapshot (loading a compact record costs a
    /// fraction of replaying a JSON event), and the snapshots of a large store write at
    /// most four records per event, on the checkpoint thread.
    pub fn snapshot_due(&self, every: &HashMap<String, u64>) -> bool {
        let period_reached = self
            .models
            .iter()
            .any(|(m, ms)| ms.since_snapshot >= every.get(m).copied().unwrap_or(1000));
        period_reached && self.since_snapshot * SNAPSHOT_RATIO >= self.records()
    }

    /// The record `id` of `model`.
    pub fn get(&self, model: &str, id: Uuid) -> Option<Arc<Stored>> {
        self.models.get(model)?.records.get(&id).cloned()
    }
}

/// The value under which a field is indexed (unique and indexed fields): canonical JSON.
pub fn index_key(v: &Value) -> String {
    v.to_string()
}

/// Work started on a thread of a scope, or done at once when no thread can be started.
enum Background<'scope, T> {
    Thread(std::thread::ScopedJoinHandle<'scope, T>),
    Done(T),
}

fn in_background<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    job: impl Fn() -> T + Send + Sync + 'scope,
) -> Background<'scope, T> {
    let job = Arc::new(job);
    let on_thread = job.clone();
    match std::thread::Builder::new()
        .name("lithair-load".into())
        .spawn_scoped(s, move || on_thread())
    {
        Ok(handle) => Background::Thread(handle),
        Err(_) => Background::Done(job()),
    }
}

impl<T> Background<'_, T> {
    /// Its result; a panic of the thread goes on in this one.
    fn join(self) -> T {
        match self {
            Background::Thread(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Background::Done(t) => t,
        }
    }
}
