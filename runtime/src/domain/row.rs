//! Compact records: how the state keeps a record in memory and how snapshots store it.
//!
//! A [`Layout`] lists a model's slots in schema order: `id`, the schema's fields,
//! `created_at`, `updated_at`, `version`. A record is one byte string: each slot's value
//! in that order (a tag byte, then the value), then the keys the layout does not know (a
//! field the schema dropped since the record was written) as `name, value` pairs. No
//! field name is stored per record, and the common values are smaller than their JSON
//! text: integers as varints, floats as 8 bytes, UUIDs as 16 bytes, the server's
//! timestamps as microseconds, enum values as their position. Any JSON value can be kept
//! (strings, arrays and objects in a self-describing form), so a record read back is
//! exactly the record written.
//!
//! Reads decode what they need: one field ([`Stored::get`]), the whole record
//! ([`Stored::record`]) or its JSON answer with its version ([`Stored::json_and_version`]),
//! rendered from the bytes in schema order, without the fields the caller may not see.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use uuid::Uuid;

use super::event::Record;
use super::state::SortKey;
use crate::spec::{FieldType, ModelSpec};

/// The slots of a model's records, in schema order.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    slots: Vec<Slot>,
    by_name: HashMap<Box<str>, usize>,
    /// The `version` slot (read by every get, for its `ETag`).
    version: Option<usize>,
    /// Each slot's name as a JSON object's key (`"name":`), written once for every
    /// record's JSON.
    keys: Vec<Box<[u8]>>,
    /// The bytes the keys take in a JSON object (with a comma each).
    keys_len: usize,
}

/// One slot of a layout: a field name, and for an enum the values its tag numbers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slot {
    /// The field.
    pub name: String,
    /// The enum's values, in order (empty for other fields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Layout {
    /// The layout of `model`'s records.
    pub fn of(model: &ModelSpec) -> Arc<Layout> {
        let plain = |name: &str| Slot {
            name: name.to_string(),
            values: Vec::new(),
        };
        let mut slots = vec![plain("id")];
        slots.extend(model.fields.iter().map(|f| Slot {
            name: f.name.clone(),
            values: match &f.ty {
                FieldType::Enum { values } => values.clone(),
                _ => Vec::new(),
            },
        }));
        slots.extend(["created_at", "updated_at", "version"].map(plain));
        Layout::from_slots(slots)
    }

    /// A layout of these slots (as a snapshot lists them).
    pub fn from_slots(slots: Vec<Slot>) -> Arc<Layout> {
        let by_name = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str().into(), i))
            .collect::<HashMap<Box<str>, usize>>();
        let version = by_name.get("version").copied();
        let keys: Vec<Box<[u8]>> = slots
            .iter()
            .map(|s| {
                let mut key = Vec::with_capacity(s.name.len() + 3);
                write_str(&mut key, &s.name);
                key.push(b':');
                key.into_boxed_slice()
            })
            .collect();
        let keys_len = keys.iter().map(|k| k.len() + 1).sum();
        Arc::new(Layout {
            slots,
            by_name,
            version,
            keys,
            keys_len,
        })
    }

    /// Its slots, in order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The position of field `name`, if the layout has a slot for it.
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

/// A record as the state keeps it: its bytes in its model's layout.
#[derive(Clone)]
pub struct Stored {
    layout: Arc<Layout>,
    bytes: Box<[u8]>,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.record().fmt(f)
    }
}

/// Two records are equal when their fields are (whatever their layouts).
impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.layout, &other.layout) || self.layout == other.layout {
            self.bytes == other.bytes
        } else {
            self.record() == other.record()
        }
    }
}

/// Why stored bytes cannot be read as a record of a layout.
#[derive(Debug, thiserror::Error)]
#[error("a stored record is damaged (at byte {0})")]
pub struct Damaged(usize);

impl Stored {
    /// Encodes `record` in `layout`.
    pub fn encode(layout: &Arc<Layout>, record: &Record) -> Stored {
        let mut out = Vec::with_capacity(128);
        for slot in &layout.slots {
            match record.get(&slot.name) {
                None => out.push(tag::ABSENT),
                Some(v) => put_value(&mut out, v, &slot.values),
            }
        }
        let extras: Vec<(&String, &Value)> = record
            .iter()
            .filter(|(k, _)| layout.slot(k).is_none())
            .collect();
        put_varint(&mut out, extras.len() as u64);
        for (k, v) in extras {
            put_str(&mut out, k);
            put_value(&mut out, v, &[]);
        }
        Stored {
            layout: layout.clone(),
            bytes: out.into_boxed_slice(),
        }
    }

    /// Takes `bytes` (as [`Stored::bytes`] gave them, for the same layout) after checking
    /// that they read as a record.
    pub fn from_bytes(layout: &Arc<Layout>, bytes: &[u8]) -> Result<Stored, Damaged> {
        let mut r = Reader { bytes, at: 0 };
        for slot in &layout.slots {
            r.skip_slot(&slot.values)?;
        }
        for _ in 0..r.varint()? {
            r.str()?;
            r.skip(&[])?;
        }
        if r.at != bytes.len() {
            return Err(Damaged(r.at));
        }
        Ok(Stored {
            layout: layout.clone(),
            bytes: bytes.into(),
        })
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its layout.
    #[cfg(any(test, feature = "testing"))]
    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    fn reader(&self) -> Reader<'_> {
        Reader {
            bytes: &self.bytes,
            at: 0,
        }
    }

    /// A reader at slot `i`'s value, and that slot's enum values.
    fn seek(&self, i: usize) -> Option<(Reader<'_>, &[String])> {
        let mut r = self.reader();
        let (target, before) = self.layout.slots.get(..=i)?.split_last()?;
        for slot in before {
            r.skip_slot(&slot.values).ok()?;
        }
        Some((r, &target.values))
    }

    /// The value of slot `i`.
    pub fn at(&self, i: usize) -> Option<Value> {
        let (mut r, values) = self.seek(i)?;
        r.slot(values).ok()?
    }

    /// The index key of slot `i`'s value (as `SortKey::of` its value, without building
    /// the value).
    pub fn key_at(&self, i: usize) -> SortKey {
        self.seek(i)
            .and_then(|(mut r, values)| r.sort_key(values).ok())
            .unwrap_or(SortKey::Missing)
    }

    /// The value of field `name` (also one the layout has no slot for).
    pub fn get(&self, name: &str) -> Option<Value> {
        if let Some(i) = self.layout.slot(name) {
            return self.at(i);
        }
        let mut r = self.reader();
        for slot in &self.layout.slots {
            r.skip_slot(&slot.values).ok()?;
        }
        for _ in 0..r.varint().ok()? {
            let k = r.str().ok()?;
            if k == name {
                return r.value(&[]).ok();
            }
            r.skip(&[]).ok()?;
        }
        None
    }

    /// Its id (slot 0).
    pub fn id(&self) -> Option<Uuid> {
        let mut r = self.reader();
        if r.peek() == Some(tag::UUID) {
            r.at += 1;
            return r.uuid().ok();
        }
        match r.slot(&[]).ok()?? {
            Value::String(s) => Uuid::parse_str(&s).ok(),
            _ => None,
        }
    }

    /// Its `version` (0 if it has none that is a number).
    pub fn version(&self) -> u64 {
        let Some((mut r, _)) = self.layout.version.and_then(|i| self.seek(i)) else {
            return self.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        };
        // Versions are written as integers; anything else is read as a value.
        if r.peek() == Some(tag::INT) {
            return r.peek_u64().unwrap_or(0);
        }
        r.slot(&[])
            .ok()
            .flatten()
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }

    /// The whole record.
    pub fn record(&self) -> Record {
        let mut out = Map::new();
        let mut r = self.reader();
        for slot in &self.layout.slots {
            match r.slot(&slot.values) {
                Ok(Some(v)) => {
                    out.insert(slot.name.clone(), v);
                }
                Ok(None) => {}
                Err(_) => return out,
            }
        }
        let extras = r.varint().unwrap_or(0);
        for _ in 0..extras {
            match (r.str().map(str::to_string), r.value(&[])) {
                (Ok(k), Ok(v)) => {
                    out.insert(k, v);
                }
                _ => break,
            }
        }
        out
    }

    /// Its JSON text, in schema order, without the fields named in `hidden` (a caller's
    /// field mask), and its version (as [`Stored::version`]), read in the same pass over
    /// its bytes.
    pub fn json_and_version(&self, hidden: &[String]) -> (bytes::Bytes, u64) {
        // Room for the names and the values' text (a UUID's 16 bytes are 38 characters, a
        // timestamp's ~8 are 29), so that the text seldom outgrows it.
        let mut out = Vec::with_capacity(self.layout.keys_len + self.bytes.len() * 3 + 2);
        let version = self.write_json_versioned(&mut out, hidden);
        (out.into(), version.unwrap_or_else(|| self.version()))
    }

    /// Appends its JSON text to `out`, leaving out the fields named in `hidden`: their
    /// values are skipped in the bytes, never rendered.
    pub fn write_json_without(&self, out: &mut Vec<u8>, hidden: &[String]) {
        self.write_json_versioned(out, hidden);
    }

    /// [`Stored::write_json_without`], answering the version when its slot holds an
    /// integer (None: read it with [`Stored::version`]).
    fn write_json_versioned(&self, out: &mut Vec<u8>, hidden: &[String]) -> Option<u64> {
        let hides = |name: &str| !hidden.is_empty() && hidden.iter().any(|h| h == name);
        let mut r = self.reader();
        let mut version = None;
        out.push(b'{');
        let mut first = true;
        let mut comma = |out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
        };
        for (i, (slot, key)) in self.layout.slots.iter().zip(&self.layout.keys).enumerate() {
            if r.peek() == Some(tag::ABSENT) {
                r.at += 1;
                continue;
            }
            if Some(i) == self.layout.version {
                version = r.peek_u64();
            }
            if hides(&slot.name) {
                if r.skip_slot(&slot.values).is_err() {
                    break;
                }
                continue;
            }
            comma(out);
            out.extend_from_slice(key);
            if r.write_json(out, &slot.values).is_err() {
                break;
            }
        }
        let extras = r.varint().unwrap_or(0);
        for _ in 0..extras {
            let Ok(k) = r.str() else { break };
            if hides(k) {
                if r.skip(&[]).is_err() {
                    break;
                }
                continue;
            }
            comma(out);
            write_str(out, k);
            out.push(b':');
            if r.write_json(out, &[]).is_err() {
                break;
            }
        }
        out.push(b'}');
        version
    }
}

/// The tag bytes of values.
mod tag {
    /// The slot holds nothing (the field is absent).
    pub const ABSENT: u8 = 0;
    pub const NULL: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const TRUE: u8 = 3;
    /// An integer in `i64`, zigzag varint.
    pub const INT: u8 = 4;
    /// An integer above `i64::MAX`, varint.
    pub const UINT: u8 = 5;
    /// A float, 8 bytes little-endian.
    pub const FLOAT: u8 = 6;
    /// A string: varint length, UTF-8.
    pub const STR: u8 = 7;
    /// A string that is a UUID in its lower-case hyphenated form: 16 bytes.
    pub const UUID: u8 = 8;
    /// A string that is a UTC timestamp as the server writes it
    /// (`2024-09-13T10:00:00.000000Z`): zigzag varint of microseconds since 1970.
    pub const TIME: u8 = 9;
    /// An enum value: varint of its position in the slot's values.
    pub const ENUM: u8 = 10;
    /// An array: varint count, values.
    pub const ARRAY: u8 = 11;
    /// An object: varint count, then (string, value) pairs.
    pub const OBJECT: u8 = 12;
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The microseconds of `s` if it is a timestamp exactly as the server writes them.
pub(super) fn server_time(s: &str) -> Option<i64> {
    // `YYYY-MM-DDTHH:MM:SS.ffffffZ`
    if s.len() != 27 || !s.ends_with('Z') || s.as_bytes()[19] != b'.' {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let micros = t.timestamp_micros();
    (time_text(micros)? == *s.as_bytes()).then_some(micros)
}

/// A timestamp as the server writes them.
pub(super) fn render_time(micros: i64) -> Option<String> {
    let text = time_text(micros)?;
    String::from_utf8(text.to_vec()).ok()
}

/// The text of a timestamp as the server writes them, `YYYY-MM-DDTHH:MM:SS.ffffffZ`
/// (years 0 to 9999, the only ones stored as timestamps), written without formatting
/// machinery: every GET of a record renders two.
pub(crate) fn time_text(micros: i64) -> Option<[u8; 27]> {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    put(20, 6, frac);
    Some(out)
}

fn put_value(out: &mut Vec<u8>, v: &Value, values: &[String]) {
    match v {
        Value::Null => out.push(tag::NULL),
        Value::Bool(false) => out.push(tag::FALSE),
        Value::Bool(true) => out.push(tag::TRUE),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(tag::INT);
                put_varint(out, zigzag(i));
            } else if let Some(u) = n.as_u64() {
                out.push(tag::UINT);
                put_varint(out, u);
            } else {
                out.push(tag::FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        }
        Value::String(s) => {
            if let Some(i) = values.iter().position(|e| e == s) {
                out.push(tag::ENUM);
                put_varint(out, i as u64);
            } else if let Some(id) = canonical_uuid(s) {
                out.push(tag::UUID);
                out.extend_from_slice(id.as_bytes());
            } else if let Some(t) = server_time(s) {
                out.push(tag::TIME);
                put_varint(out, zigzag(t));
            } else {
                out.push(tag::STR);
                put_str(out, s);
            }
        }
        Value::Array(items) => {
            out.push(tag::ARRAY);
            put_varint(out, items.len() as u64);
            for item in items {
                put_value(out, item, &[]);
            }
        }
        Value::Object(m) => {
            out.push(tag::OBJECT);
            put_varint(out, m.len() as u64);
            for (k, v) in m {
                put_str(out, k);
                put_value(out, v, &[]);
            }
        }
    }
}

/// The UUID `s` is, if it is one in its lower-case hyphenated form (the form it is
/// rendered back in).
fn canonical_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    let id = Uuid::try_parse(s).ok()?;
    let mut buf = Uuid::encode_buffer();
    (id.hyphenated().encode_lower(&mut buf) == s).then_some(id)
}

/// Appends `s` as a JSON string.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // serde_json escapes as every other answer of the service does.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Reads values from stored bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The value here as a `u64`, without moving: None unless it is an integer (as
    /// versions are written) that is not negative.
    fn peek_u64(&self) -> Option<u64> {
        if self.peek() != Some(tag::INT) {
            return None;
        }
        let mut at = Reader {
            bytes: self.bytes,
            at: self.at + 1,
        };
        at.varint()
            .ok()
            .and_then(|n| u64::try_from(unzigzag(n)).ok())
    }

    fn byte(&mut self) -> Result<u8, Damaged> {
        let b = self.peek().ok_or(Damaged(self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let piece = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or(Damaged(self.at))?;
        self.at += n;
        Ok(piece)
    }

    fn varint(&mut self) -> Result<u64, Damaged> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(Damaged(self.at))
    }

    fn len(&mut self) -> Result<usize, Damaged> {
        let n = self.varint()?;
        usize::try_from(n).map_err(|_| Damaged(self.at))
    }

    fn str(&mut self) -> Result<&'a str, Damaged> {
        let n = self.len()?;
        let at = self.at;
        std::str::from_utf8(self.take(n)?).map_err(|_| Damaged(at))
    }

    fn uuid(&mut self) -> Result<Uuid, Damaged> {
        let at = self.at;
        Uuid::from_slice(self.take(16)?).map_err(|_| Damaged(at))
    }

    fn float(&mut self) -> Result<f64, Damaged> {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(eight))
    }

    fn enum_value<'v>(&mut self, values: &'v [String]) -> Result<&'v str, Damaged> {
        let at = self.at;
        let i = self.len()?;
        values.get(i).map(String::as_str).ok_or(Damaged(at))
    }

    /// A slot's value (None: absent).
    fn slot(&mut self, values: &[String]) -> Result<Option<Value>, Damaged> {
        if self.peek() == Some(tag::ABSENT) {
            self.at += 1;
            return Ok(None);
        }
        self.value(values).map(Some)
    }

    fn skip_slot(&mut self, values: &[String]) -> Result<(), Damaged> {
        if self.peek() == Some(tag::ABSENT) {
            self.at += 1;
            return Ok(());
        }
        self.skip(values)
    }

    /// The next slot's index key.
    fn sort_key(&mut self, values: &[String]) -> Result<SortKey, Damaged> {
        let at = self.at;
        Ok(match self.peek().ok_or(Damaged(at))? {
            tag::ABSENT | tag::NULL => SortKey::Missing,
            tag::FALSE => SortKey::Bool(false),
            tag::TRUE => SortKey::Bool(true),
            tag::INT => {
                self.at += 1;
                SortKey::num(unzigzag(self.varint()?) as f64)
            }
            tag::UINT => {
                self.at += 1;
                SortKey::num(self.varint()? as f64)
            }
            tag::FLOAT => {
                self.at += 1;
                SortKey::num(self.float()?)
            }
            tag::STR => {
                self.at += 1;
                SortKey::text(self.str()?)
            }
            tag::TIME => {
                self.at += 1;
                SortKey::Time(unzigzag(self.varint()?))
            }
            tag::ENUM => {
                self.at += 1;
                SortKey::string(self.enum_value(values)?)
            }
            _ => SortKey::of(Some(&self.value(values)?)),
        })
    }

    fn value(&mut self, values: &[String]) -> Result<Value, Damaged> {
        let at = self.at;
        Ok(match self.byte()? {
            tag::NULL => Value::Null,
            tag::FALSE => Value::Bool(false),
            tag::TRUE => Value::Bool(true),
            tag::INT => Value::from(unzigzag(self.varint()?)),
            tag::UINT => Value::from(self.varint()?),
            tag::FLOAT => Number::from_f64(self.float()?)
                .map(Value::Number)
                .ok_or(Damaged(at))?,
            tag::STR => Value::String(self.str()?.to_string()),
            tag::UUID => Value::String(self.uuid()?.hyphenated().to_string()),
            tag::TIME => Value::String(render_time(unzigzag(self.varint()?)).ok_or(Damaged(at))?),
            tag::ENUM => Value::String(self.enum_value(values)?.to_string()),
            tag::ARRAY => {
                let n = self.len()?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.value(&[])?);
                }
                Value::Array(items)
            }
            tag::OBJECT => {
                let n = self.len()?;
                let mut m = Map::new();
                for _ in 0..n {
                    let k = self.str()?.to_string();
                    m.insert(k, self.value(&[])?);
                }
                Value::Object(m)
            }
            _ => return Err(Damaged(at)),
        })
    }

    fn skip(&mut self, values: &[String]) -> Result<(), Damaged> {
        let at = self.at;
        match self.byte()? {
            tag::NULL | tag::FALSE | tag::TRUE => {}
            tag::INT | tag::UINT | tag::TIME => {
                self.varint()?;
            }
            tag::FLOAT => {
                self.take(8)?;
            }
            tag::STR => {
                self.str()?;
            }
            tag::UUID => {
                self.take(16)?;
            }
            tag::ENUM => {
                self.enum_value(values)?;
            }
            tag::ARRAY => {
                for _ in 0..self.len()? {
                    self.skip(&[])?;
                }
            }
            tag::OBJECT => {
                for _ in 0..self.len()? {
                    self.str()?;
                    self.skip(&[])?;
                }
            }
            _ => return Err(Damaged(at)),
        }
        Ok(())
    }

    /// Appends the next value as JSON text.
    fn write_json(&mut self, out: &mut Vec<u8>, values: &[String]) -> Result<(), Damaged> {
        let at = self.at;
        match self.byte()? {
            tag::NULL => out.extend_from_slice(b"null"),
            tag::FALSE => out.extend_from_slice(b"false"),
            tag::TRUE => out.extend_from_slice(b"true"),
            tag::INT => {
                let mut buf = itoa::Buffer::new();
                out.extend_from_slice(buf.format(unzigzag(self.varint()?)).as_bytes());
            }
            tag::UINT => {
                let mut buf = itoa::Buffer::new();
                out.extend_from_slice(buf.format(self.varint()?).as_bytes());
            }
            tag::FLOAT => {
                let n = Number::from_f64(self.float()?).ok_or(Damaged(at))?;
                let _ = serde_json::to_writer(&mut *out, &n);
            }
            tag::STR => write_str(out, self.str()?),
            tag::UUID => {
                let mut buf = Uuid::encode_buffer();
                let id = self.uuid()?;
                out.push(b'"');
                out.extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
                out.push(b'"');
            }
            tag::TIME => {
                let t = time_text(unzigzag(self.varint()?)).ok_or(Damaged(at))?;
                out.push(b'"');
                out.extend_from_slice(&t);
                out.push(b'"');
            }
            tag::ENUM => write_str(out, self.enum_value(values)?),
            tag::ARRAY => {
                out.push(b'[');
                for i in 0..self.len()? {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_json(out, &[])?;
                }
                out.push(b']');
            }
            tag::OBJECT => {
                out.push(b'{');
                for i in 0..self.len()? {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, self.str()?);
                    out.push(b':');
                    self.write_json(out, &[])?;
                }
                out.push(b'}');
            }
            _ => return Err(Damaged(at)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    fn layout() -> Arc<Layout> {
        let spec = crate::spec::fixtures::item(
            r#"{"name": "name", "type": {"kind": "string"}},
               {"name": "n", "type": {"kind": "int"}, "optional": true},
               {"name": "status", "type": {"kind": "enum", "values": ["draft", "live"]}},
               {"name": "doc", "type": {"kind": "json"}, "optional": true}"#,
        );
        Layout::of(spec.model("Item").unwrap())
    }

    fn random_value(rng: &mut impl Rng, depth: u32) -> Value {
        match rng.gen_range(0..if depth > 2 { 9 } else { 11 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.gen()),
            2 => Value::from(rng.gen::<i64>()),
            3 => Value::from(rng.gen::<u64>()),
            4 => json!(rng.gen::<f64>() * 1e6 - 5e5),
            5 => Value::String(Uuid::new_v4().to_string()),
            6 => Value::String(Uuid::new_v4().to_string().to_uppercase()),
            7 => Value::String(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
            8 => Value::String(
                [
                    "",
                    "draft",
                    "a \"quoted\" \\ line\n",
                    "été",
                    "2024-01-01T00:00:00Z",
                ][rng.gen_range(0..5)]
                .to_string(),
            ),
            9 => Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.gen_range(0..4))
                    .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                    .collect(),
            ),
        }
    }

    /// Any record reads back as written: whole, field by field and as JSON text (which
    /// parses to the same record), with values of every kind in slots and in extras.
    #[test]
    fn a_record_reads_back_exactly() {
        let layout = layout();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let mut r = Map::new();
            for name in [
                "id",
                "name",
                "n",
                "status",
                "doc",
                "created_at",
                "version",
                "gone",
                "older",
            ] {
                if rng.gen_bool(0.7) {
                    r.insert(name.to_string(), random_value(&mut rng, 0));
                }
            }
            let stored = Stored::encode(&layout, &r);
            assert_eq!(stored.record(), r);
            for (k, v) in &r {
                assert_eq!(stored.get(k).as_ref(), Some(v), "{k}");
            }
            assert_eq!(stored.get("missing"), None);
            let version = r.get("version").and_then(Value::as_u64).unwrap_or(0);
            assert_eq!(stored.version(), version, "{r:?}");
            // The JSON's pass reads the same version, whatever it leaves out.
            for hidden in [&[][..], &["name".to_string(), "version".to_string()][..]] {
                let (json, v) = stored.json_and_version(hidden);
                assert_eq!(v, version, "{r:?}");
                let json: Map<String, Value> = serde_json::from_slice(&json).unwrap();
                assert!(hidden.iter().all(|h| !json.contains_key(h)));
                assert_eq!(json.len(), r.keys().filter(|k| !hidden.contains(k)).count());
            }
            // Parsed by the same parser as serde_json's own text of the record (serde_json
            // parses some floats one unit off; the digits must be the same).
            let text: Value = serde_json::from_slice(&stored.json_and_version(&[]).0).unwrap();
            let theirs: Value = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
            assert_eq!(text, theirs);
            let again = Stored::from_bytes(&layout, stored.bytes()).unwrap();
            assert_eq!(again, stored);
        }
    }

    #[test]
    fn a_server_record_is_small_and_renders_in_schema_order() {
        let layout = layout();
        let id = Uuid::new_v4();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let r = json!({
            "id": id.to_string(), "name": "Tea", "n": 3, "status": "live",
            "created_at": now, "updated_at": now, "version": 1
        });
        let r = r.as_object().unwrap();
        let stored = Stored::encode(&layout, r);
        assert!(stored.bytes().len() < 50, "{} bytes", stored.bytes().len());
        assert_eq!(stored.id(), Some(id));
        assert_eq!(stored.version(), 1);
        let text = String::from_utf8(stored.json_and_version(&[]).0.to_vec()).unwrap();
        assert!(
            text.starts_with(&format!(
                "{{\"id\":\"{id}\",\"name\":\"Tea\",\"n\":3,\"status\":\"live\",\"created_at\""
            )),
            "{text}"
        );
    }

    /// Timestamps render as chrono renders them, over the whole range of years kept.
    #[test]
    fn timestamps_render_as_chrono_renders_them() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let lowest = -62_167_219_200_000_000i64; // 0000-01-01
        let highest = 253_402_300_799_999_999i64; // 9999-12-31T23:59:59.999999
        let edges = [
            lowest,
            highest,
            0,
            -1,
            951_782_400_000_000,
            4_107_542_399_999_999,
        ];
        for micros in edges
            .into_iter()
            .chain((0..20_000).map(|_| rng.gen_range(lowest..=highest)))
        {
            let theirs = chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(
                render_time(micros).as_deref(),
                Some(theirs.as_str()),
                "{micros}"
            );
            assert_eq!(server_time(&theirs), Some(micros));
        }
        assert_eq!(render_time(lowest - 1), None);
        assert_eq!(render_time(highest + 1), None);
    }

    #[test]
    fn damaged_bytes_are_refused() {
        let layout = layout();
        let r = json!({"id": Uuid::new_v4().to_string(), "name": "x", "version": 1});
        let stored = Stored::encode(&layout, r.as_object().unwrap());
        let bytes = stored.bytes();
        for cut in 0..bytes.len() {
            assert!(
                Stored::from_bytes(&layout, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Stored::from_bytes(&layout, &longer).is_err());
    }
}
