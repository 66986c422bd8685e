//! The in-memory state the store serves reads from: records per model, and the ordered
//! indexes of the default list order (`created_at`) and of every `unique` and `indexed`
//! field: each record's (value, id), in order. One structure serves every use: a unique
//! value's holder is the range of one value, a list's filters on an indexed field select
//! a range of values, and a sorted page reads only the rows it returns. Each model also
//! keeps the projections fed by its records (`projection.rs`), changed where its records
//! are. Only the Raft state machine changes the state, by applying committed events;
//! readers take a read lock.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use super::event::{Event, EventKind, Record};
use super::projection::{Definition, Projection};
use super::row::{server_time, Layout, Stored};
use super::tree::Tree;
use crate::spec::ServiceSpec;

/// One model's records and indexes.
#[derive(Clone, Debug)]
pub struct ModelState {
    /// How its records are laid out (`row.rs`).
    pub layout: Arc<Layout>,
    /// Records by id. A persistent map: cloning it for a snapshot is O(1).
    pub records: Tree<Uuid, Arc<Stored>>,
    /// The ordered indexes: `created_at`, then each `unique` or `indexed` field.
    pub indexes: Vec<Index>,
    /// Events of this model applied since the last snapshot.
    pub since_snapshot: u64,
    /// The sequence number of the last event applied to the model (at least the loaded
    /// snapshot's last): it changes with every write to the model, so a list's ETag
    /// derives from it.
    pub changed: u64,
    /// The projections whose source this model is (`projection.rs`).
    pub projections: Vec<Projection>,
}

/// An index's entries: (value, id), in list order.
pub type Entries = Tree<(SortKey, Uuid), ()>;

/// An ordered index of one field: every record's (value, id), in list order. Persistent,
/// so a list's frozen view of one is O(1).
#[derive(Clone, Debug)]
pub struct Index {
    /// The field.
    pub field: String,
    /// Its slot in the model's layout.
    slot: usize,
    /// The entries.
    pub entries: Entries,
}

/// A value as an ordered index keeps it, in the order lists compare values: a missing
/// value or `null` first, then booleans, numbers by value, strings by their bytes (a
/// field's values share one JSON type, so kinds never meet in one index). A timestamp as
/// the server writes them (`created_at`, `updated_at`) is kept as its microseconds, which
/// order as its text does; a string of up to [`SHORT`] bytes is kept inline, so that
/// comparing keys reads no memory outside the index.
#[derive(Clone)]
pub enum SortKey {
    /// Absent or `null`.
    Missing,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(Num),
    /// A string that is a timestamp in the server's form: its microseconds since 1970.
    Time(i64),
    /// A string of at most [`SHORT`] bytes: its length and bytes.
    Short(u8, [u8; SHORT]),
    /// A longer string.
    Long(Box<str>),
    /// An array or object, by its JSON text.
    Other(Box<str>),
}

/// The longest string an index key holds inline (the key is 24 bytes).
pub const SHORT: usize = 22;

impl SortKey {
    /// The key of a record's value.
    pub fn of(v: Option<&Value>) -> SortKey {
        match v {
            None | Some(Value::Null) => SortKey::Missing,
            Some(Value::Bool(b)) => SortKey::Bool(*b),
            Some(Value::Number(n)) => SortKey::num(n.as_f64().unwrap_or(0.0)),
            Some(Value::String(s)) => SortKey::string(s),
            Some(other) => SortKey::Other(other.to_string().into()),
        }
    }

    /// The key of a number.
    pub fn num(n: f64) -> SortKey {
        // `+ 0.0` turns -0 into 0, which lists compare as equal.
        SortKey::Num(Num(n + 0.0))
    }

    /// The key of a string.
    pub fn string(s: &str) -> SortKey {
        if let Some(t) = server_time(s) {
            return SortKey::Time(t);
        }
        SortKey::text(s)
    }

    /// The key of a string known not to be a timestamp in the server's form.
    pub(super) fn text(s: &str) -> SortKey {
        if s.len() <= SHORT {
            let mut bytes = [0u8; SHORT];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            SortKey::Short(s.len() as u8, bytes)
        } else {
            SortKey::Long(s.into())
        }
    }

    /// The number of a number key.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SortKey::Num(n) => Some(n.0),
            _ => None,
        }
    }

    /// The text of a string key that is not a timestamp in the server's form.
    pub fn as_text(&self) -> Option<&str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The bytes of a string key (not of a timestamp).
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            SortKey::Short(n, b) => Some(&b[..usize::from(*n)]),
            SortKey::Long(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// Its rank among the kinds (a timestamp ranks as the string it is): keys of one
    /// rank are values of one JSON type.
    pub fn rank(&self) -> u8 {
        match self {
            SortKey::Missing => 0,
            SortKey::Bool(_) => 1,
            SortKey::Num(_) => 2,
            SortKey::Time(_) | SortKey::Short(..) | SortKey::Long(_) => 3,
            SortKey::Other(_) => 4,
        }
    }
}

impl std::fmt::Debug for SortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SortKey::Missing => f.write_str("Missing"),
            SortKey::Bool(b) => write!(f, "Bool({b})"),
            SortKey::Num(n) => write!(f, "Num({})", n.0),
            SortKey::Time(t) => write!(f, "Time({t})"),
            SortKey::Other(s) => write!(f, "Other({s:?})"),
            _ => write!(
                f,
                "Str({:?})",
                String::from_utf8_lossy(self.bytes().unwrap_or_default())
            ),
        }
    }
}

impl PartialEq for SortKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for SortKey {}

impl std::hash::Hash for SortKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.rank().hash(h);
        match self {
            SortKey::Missing => {}
            SortKey::Bool(b) => b.hash(h),
            SortKey::Num(n) => n.hash(h),
            SortKey::Time(t) => t.hash(h),
            SortKey::Other(s) => s.hash(h),
            _ => self.bytes().hash(h),
        }
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use SortKey::*;
        match (self, other) {
            (Short(la, a), Short(lb, b)) => short_cmp(a, *la, b, *lb),
            (Bool(a), Bool(b)) => a.cmp(b),
            (Num(a), Num(b)) => a.cmp(b),
            (Time(a), Time(b)) => a.cmp(b),
            (Other(a), Other(b)) => a.cmp(b),
            // A timestamp and another string compare as text (they are never equal: a
            // string in the server's form is always kept as a `Time`).
            (Time(t), _) if other.bytes().is_some() => {
                let text = super::row::time_text(*t).unwrap_or_default();
                text[..].cmp(other.bytes().unwrap_or_default())
            }
            (_, Time(_)) if self.bytes().is_some() => other.cmp(self).reverse(),
            _ => match (self.bytes(), other.bytes()) {
                (Some(a), Some(b)) => a.cmp(b),
                _ => self.rank().cmp(&other.rank()),
            },
        }
    }
}

/// Compares two inline strings as their bytes compare: the unused bytes are zeros, so
/// comparing the whole arrays (as two big-endian integers) and then the lengths gives the
/// order of the strings (a string is below every longer one it begins), without a call.
fn short_cmp(a: &[u8; SHORT], la: u8, b: &[u8; SHORT], lb: u8) -> std::cmp::Ordering {
    let head = |x: &[u8; SHORT]| {
        let mut h = [0u8; 16];
        h.copy_from_slice(&x[..16]);
        u128::from_be_bytes(h)
    };
    let tail = |x: &[u8; SHORT]| {
        let mut t = [0u8; 8];
        t[..SHORT - 16].copy_from_slice(&x[16..]);
        u64::from_be_bytes(t)
    };
    head(a)
        .cmp(&head(b))
        .then_with(|| tail(a).cmp(&tail(b)))
        .then(la.cmp(&lb))
}

/// A JSON number, totally ordered (JSON has no NaN; `-0` is kept as `0`).
#[derive(Clone, Copy, Debug)]
pub struct Num(f64);

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Num {}

impl std::hash::Hash for Num {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.to_bits().hash(h);
    }
}

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

/// The entries of one value in an index: from the lowest id to the highest.
fn value_range(key: &SortKey) -> std::ops::RangeInclusive<(SortKey, Uuid)> {
    (key.clone(), Uuid::nil())..=(key.clone(), Uuid::max())
}

impl Index {
    /// The ids of the records whose value is `key`, in id order.
    pub fn holders<'a>(&'a self, key: &SortKey) -> impl Iterator<Item = Uuid> + 'a {
        self.entries.range(value_range(key)).map(|((_, id), _)| *id)
    }
}

impl ModelState {
    /// An empty model state of `layout`, with an ordered index of each of `fields`.
    pub fn new(layout: Arc<Layout>, fields: &[&str]) -> Self {
        let indexes = fields
            .iter()
            .filter_map(|f| {
                Some(Index {
                    field: f.to_string(),
                    slot: layout.slot(f)?,
                    entries: Tree::new(),
                })
            })
            .collect();
        ModelState {
            layout,
            records: Default::default(),
            indexes,
            since_snapshot: 0,
            changed: 0,
            projections: Vec::new(),
        }
    }

    /// Encodes `record` in this model's layout.
    pub fn encode(&self, record: &Record) -> Arc<Stored> {
        Arc::new(Stored::encode(&self.layout, record))
    }

    /// The ordered index of `field`, if it has one.
    pub fn index(&self, field: &str) -> Option<&Index> {
        self.indexes.iter().find(|i| i.field == field)
    }

    /// Puts (or removes, with `None`) a record, keeping the indexes right.
    pub fn put(&mut self, id: Uuid, record: Option<Arc<Stored>>) {
        let old = match &record {
            Some(r) => self.records.insert(id, r.clone()),
            None => self.records.remove(&id),
        };
        for p in self.projections.iter_mut() {
            p.change(old.as_deref(), record.as_deref());
        }
        for index in self.indexes.iter_mut() {
            let before = old.as_ref().map(|o| o.key_at(index.slot));
            let after = record.as_ref().map(|r| r.key_at(index.slot));
            if before == after {
                continue;
            }
            if let Some(k) = before {
                index.entries.remove(&(k, id));
            }
            if let Some(k) = after {
                index.entries.insert((k, id), ());
            }
        }
    }

    /// Fills an empty model with `rows` (sorted by id, as a snapshot holds them): the
    /// records, the indexes and the projections are built at once (each index a dense
    /// tree), on threads of their own, as many at a time as there are cores.
    pub fn fill(&mut self, rows: Vec<(Uuid, Arc<Stored>)>) {
        let rows = &rows;
        let records = || rows.iter().cloned().collect::<Tree<_, _>>();
        let entries = |slot: usize| -> Entries {
            rows.iter()
                .map(|(id, r)| ((r.key_at(slot), *id), ()))
                .collect()
        };
        let slots: Vec<usize> = self.indexes.iter().map(|i| i.slot).collect();
        let definitions: Vec<Arc<Definition>> =
            self.projections.iter().map(|p| p.def.clone()).collect();
        let jobs = slots.len() + definitions.len();
        let projected: Vec<std::sync::Mutex<Option<Projection>>> = definitions
            .iter()
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        // As many builds at a time as there are cores (more would only add to the peak
        // memory: each build sorts a copy of its keys). The first worker builds the
        // records first; all take the indexes, then the projections, one after the other.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let built: Vec<std::sync::Mutex<Option<Entries>>> =
            slots.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let work = |first: bool| {
            let records = first.then(records);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(slot) = slots.get(i) {
                    let done = entries(*slot);
                    *built[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
                } else if let Some(def) = definitions.get(i - slots.len()) {
                    let started = std::time::Instant::now();
                    let done = Projection::build(def.clone(), rows.iter().map(|(_, r)| r));
                    tracing::info!(projection = %def.spec.name, source = %def.spec.source,
                        records = rows.len(), groups = done.groups.len(),
                        millis = started.elapsed().as_millis() as u64,
                        "projection built from the snapshot's records");
                    *projected[i - slots.len()]
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(done);
                } else {
                    return records;
                }
            }
        };
        let records = std::thread::scope(|s| {
            let others: Vec<_> = (1..workers.min(jobs + 1))
                .map(|_| in_background(s, || work(false)))
                .collect();
            let records = work(true);
            for other in others {
                other.join();
            }
            records
        });
        self.records = records.unwrap_or_default();
        for (index, entries) in self.indexes.iter_mut().zip(built) {
            let entries = entries.into_inner().unwrap_or_else(|p| p.into_inner());
            index.entries = entries.unwrap_or_default();
        }
        for (p, done) in self.projections.iter_mut().zip(projected) {
            if let Some(done) = done.into_inner().unwrap_or_else(|p| p.into_inner()) {
                *p = done;
            }
        }
    }
}

/// Encodes created records as a [`State`] does (see [`State::encoder`]).
pub struct Encoder {
    layouts: HashMap<String, Arc<Layout>>,
    upgrades: Arc<Upgrades>,
}

/// What records written under an older schema get when they are read: per model, the
/// fields renamed since (former name, name), and the value of each field a record may
/// lack (its `backfill`, else its `default`).
#[derive(Debug, Default)]
pub struct Upgrades {
    /// Per former model name (`renamed_from`): the model's name now.
    models: HashMap<String, String>,
    renames: HashMap<String, Vec<(String, String)>>,
    fills: HashMap<String, Vec<(String, Value)>>,
}

impl Upgrades {
    fn of(spec: &ServiceSpec) -> Upgrades {
        let mut u = Upgrades {
            models: spec.renamed_models(),
            ..Default::default()
        };
        for m in &spec.models {
            let renames: Vec<_> = m
                .fields
                .iter()
                .filter_map(|f| Some((f.renamed_from.clone()?, f.name.clone())))
                .collect();
            if !renames.is_empty() {
                u.renames.insert(m.name.clone(), renames);
            }
            let fills: Vec<_> = m
                .fields
                .iter()
                .filter_map(|f| Some((f.name.clone(), f.fill()?.clone())))
                .collect();
            if !fills.is_empty() {
                u.fills.insert(m.name.clone(), fills);
            }
        }
        u
    }

    /// Brings `record` of `model` up to date (see [`State::upcast`]).
    fn apply(&self, model: &str, record: &mut Record) -> bool {
        let mut changed = false;
        for (from, to) in self.renames.get(model).into_iter().flatten() {
            // An update event of the field's former name carries its newer value.
            if let Some(v) = record.remove(from) {
                record.insert(to.clone(), v);
                changed = true;
            }
        }
        for (field, value) in self.fills.get(model).into_iter().flatten() {
            if !record.contains_key(field) {
                record.insert(field.clone(), value.clone());
                changed = true;
            }
        }
        changed
    }

    /// Whether [`Upgrades::apply`] would change `record`.
    fn needed(&self, model: &str, record: &Record) -> bool {
        self.renames
            .get(model)
            .into_iter()
            .flatten()
            .any(|(from, _)| record.contains_key(from))
            || self
                .fills
                .get(model)
                .into_iter()
                .flatten()
                .any(|(field, _)| !record.contains_key(field))
    }
}

impl Encoder {
    /// The record a create event makes (its data is taken), brought up to date (see
    /// [`State::upcast`]), and whether that changed it; None for other events and for
    /// models the schema no longer has. Every event's model is set to the model's name
    /// now (a model `renamed_from` the one it names).
    pub fn created(&self, ev: &mut Event) -> Option<(Arc<Stored>, bool)> {
        // An event of a model under its former name is the renamed model's.
        if let Some(now) = self.upgrades.models.get(&ev.model) {
            ev.model = now.clone();
        }
        if ev.kind != EventKind::Created {
            return None;
        }
        let layout = self.layouts.get(&ev.model)?;
        let Value::Object(mut record) = std::mem::take(&mut ev.event_data) else {
            return None;
        };
        let upgraded = self.upgrades.apply(&ev.model, &mut record);
        Some((Arc::new(Stored::encode(layout, &record)), upgraded))
    }
}

/// A snapshot is written once the events since the last one are at least this share
/// (one in N) of the records.
const SNAPSHOT_RATIO: u64 = 12;

/// Every model's state, and the last applied sequence number.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Per model name (looked up by every request: hashed with foldhash, the names are
    /// the schema's).
    pub models: HashMap<String, ModelState, foldhash::fast::RandomState>,
    /// Last event applied.
    pub last_seq: u64,
    /// Events applied since the last snapshot (taken or loaded).
    pub since_snapshot: u64,
    /// What records written under an older schema get when they are read.
    upgrades: Arc<Upgrades>,
    /// Per model: records brought up to date as they were read since the last start
    /// (logged once the store is loaded).
    pub upgraded: HashMap<String, u64>,
}

impl State {
    /// Empty state with an ordered index of `created_at` and of every unique or indexed
    /// field.
    pub fn new(spec: &ServiceSpec) -> Self {
        let mut models = HashMap::default();
        for m in &spec.models {
            let fields: Vec<&str> = std::iter::once("created_at")
                .chain(
                    m.fields
                        .iter()
                        .filter(|f| f.unique || f.indexed)
                        .map(|f| f.name.as_str()),
                )
                .collect();
            let mut ms = ModelState::new(Layout::of(m), &fields);
            for p in spec.projections.iter().filter(|p| p.source == m.name) {
                match Definition::new(p, m, &ms.layout) {
                    Some(def) => ms.projections.push(Projection::new(Arc::new(def))),
                    None => tracing::error!(projection = %p.name,
                        "the projection names a field its source has no slot for; it is left out"),
                }
            }
            models.insert(m.name.clone(), ms);
        }
        State {
            models,
            last_seq: 0,
            since_snapshot: 0,
            upgrades: Arc::new(Upgrades::of(spec)),
            upgraded: HashMap::new(),
        }
    }

    /// Brings a record written under an older schema up to date: a value under a field's
    /// former name (`renamed_from`) moves to its name, and a field it lacks that has a
    /// `backfill` or a `default` gets that value (optional fields stay absent). Answers
    /// whether it changed anything.
    pub fn upcast(&self, model: &str, record: &mut Record) -> bool {
        self.upgrades.apply(model, record)
    }

    /// Whether [`State::upcast`] would change `record`.
    pub fn lacks_defaults(&self, model: &str, record: &Record) -> bool {
        self.upgrades.needed(model, record)
    }

    /// Counts a record of `model` that [`State::upcast`] changed as it was read.
    pub fn note_upgraded(&mut self, model: &str) {
        *self.upgraded.entry(model.to_string()).or_default() += 1;
    }

    /// What encodes created records as this state would, on another thread (a replay
    /// encodes them on its reading thread).
    pub fn encoder(&self) -> Encoder {
        Encoder {
            layouts: self
                .models
                .iter()
                .map(|(m, ms)| (m.clone(), ms.layout.clone()))
                .collect(),
            upgrades: self.upgrades.clone(),
        }
    }

    /// Applies a committed event, whose record `created` already holds if it is a create
    /// encoded by [`State::encoder`].
    pub fn apply_encoded(&mut self, ev: &mut Event, created: Option<(Arc<Stored>, bool)>) {
        let Some((record, upgraded)) = created else {
            return self.apply(ev);
        };
        if upgraded {
            self.note_upgraded(&ev.model);
        }
        self.last_seq = self.last_seq.max(ev.sequence_number);
        if let Some(ms) = self.models.get_mut(&ev.model) {
            ms.put(ev.aggregate_id, Some(record));
            ms.changed = ev.sequence_number;
            ms.since_snapshot += 1;
            self.since_snapshot += 1;
        }
    }

    /// Applies a committed event (its data is taken). Events of models the schema no
    /// longer has are skipped (their records stay in the log).
    pub fn apply(&mut self, ev: &mut Event) {
        self.last_seq = self.last_seq.max(ev.sequence_number);
        let Some(previous) = self
            .models
            .get(&ev.model)
            .map(|ms| ms.records.get(&ev.aggregate_id).cloned())
        else {
            return;
        };
        let mut next = match (ev.kind, std::mem::take(&mut ev.event_data)) {
            // The record itself: taken, not copied.
            (EventKind::Created, Value::Object(record)) => Some(record),
            (_, data) => {
                ev.event_data = data;
                ev.apply(previous.map(|s| s.record()).as_ref())
            }
        };
        if let Some(r) = next.as_mut() {
            if self.upcast(&ev.model, r) {
                self.note_upgraded(&ev.model);
            }
        }
        if let Some(ms) = self.models.get_mut(&ev.model) {
            let next = next.map(|r| ms.encode(&r));
            ms.put(ev.aggregate_id, next);
            ms.changed = ev.sequence_number;
            ms.since_snapshot += 1;
            self.since_snapshot += 1;
        }
    }

    /// Publishes a committed event whose resulting record the state machine already holds.
    pub fn publish(&mut self, ev: &Event, record: Option<Arc<Stored>>) {
        self.last_seq = self.last_seq.max(ev.sequence_number);
        if let Some(ms) = self.models.get_mut(&ev.model) {
            ms.put(ev.aggregate_id, record);
            ms.changed = ev.sequence_number;
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
    /// twelfth of the records now. So a restart after a crash replays at most a twelfth of
    /// the store's size in events after loading the snapshot (loading a compact record
    /// costs a tenth of replaying a JSON event; at a million records an eighth took the
    /// worst restart past 2 s), and the snapshots of a large store write at most twelve
    /// records per event, on the checkpoint thread.
    pub fn snapshot_due(&self, every: &HashMap<String, u64>) -> bool {
        let period_reached = self
            .models
            .iter()
            .any(|(m, ms)| ms.since_snapshot >= every.get(m).copied().unwrap_or(1000));
        period_reached && self.since_snapshot * SNAPSHOT_RATIO >= self.records()
    }

    /// The projection named `name`.
    pub fn projection(&self, name: &str) -> Option<&Projection> {
        self.models
            .values()
            .flat_map(|ms| ms.projections.iter())
            .find(|p| p.name() == name)
    }

    /// The record `id` of `model`.
    pub fn get(&self, model: &str, id: Uuid) -> Option<Arc<Stored>> {
        self.models.get(model)?.records.get(&id).cloned()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Keys of strings order and compare as the strings do, whether a string is kept as
    /// a timestamp or as text.
    #[test]
    fn string_keys_order_as_their_text() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut text = || -> String {
            let minute = rng.gen_range(0..3);
            let micros = rng.gen_range(0..3);
            match rng.gen_range(0..4) {
                0 => format!("2024-01-01T00:0{minute}:00.00000{micros}Z"),
                1 => format!("2024-01-01T00:0{minute}:00Z"),
                2 => format!("2024-01-01T00:0{minute}:00.00000{micros}+01:00"),
                _ => format!("2024-01-01T00:0{minute}"),
            }
        };
        for _ in 0..2000 {
            let (a, b) = (text(), text());
            let (ka, kb) = (SortKey::string(&a), SortKey::string(&b));
            assert_eq!(ka.cmp(&kb), a.cmp(&b), "{a} vs {b}");
            assert_eq!(ka == kb, a == b, "{a} vs {b}");
        }
        assert!(matches!(
            SortKey::string("2024-01-01T00:00:00.000000Z"),
            SortKey::Time(_)
        ));
        // Inline strings of every length, with prefixes and NUL bytes among them.
        let pieces = ["", "a", "ab", "ab\0", "\0", "b", "é", "zz", "a\0b"];
        for _ in 0..5000 {
            let mut word = || -> String {
                let n = rng.gen_range(0..8);
                (0..n)
                    .map(|_| pieces[rng.gen_range(0..pieces.len())])
                    .collect()
            };
            let (a, b) = (word(), word());
            let (ka, kb) = (SortKey::string(&a), SortKey::string(&b));
            assert_eq!(ka.cmp(&kb), a.cmp(&b), "{a:?} vs {b:?}");
            assert_eq!(ka == kb, a == b, "{a:?} vs {b:?}");
        }
        assert!(matches!(
            SortKey::string(&"x".repeat(SHORT)),
            SortKey::Short(..)
        ));
        assert!(matches!(
            SortKey::string(&"x".repeat(SHORT + 1)),
            SortKey::Long(_)
        ));
        assert_eq!(std::mem::size_of::<SortKey>(), 24);
    }
}
