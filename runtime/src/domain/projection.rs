//! Projections: per group of a model's records, the aggregates the schema declares
//! (`count`, `sum`, `avg`, `min`, `max`), kept up to date by every change of a record.
//!
//! A projection lives in its source model's state and changes where the records do
//! ([`super::state::ModelState::put`], inside apply): a record's old contribution (its
//! group and values, if it passed the `where` filter) is taken out and its new one put
//! in, so a record that moves between groups or leaves the filter is counted once, in
//! the right place. What a projection holds is a function of the current records only,
//! so it is the same on every replica, and a start builds it from the snapshot's
//! records ([`Projection::build`], beside the indexes) and then follows the replayed
//! tail: a projection that is new, or whose definition changed, comes out built from
//! every record without anything kept for it.
//!
//! - Sums are exact ([`ExactSum`]): the float sum of a group does not depend on the
//!   order its values came and went in, so replicas, rebuilds and incremental updates
//!   agree to the bit, and taking a value out undoes adding it.
//! - `min` and `max` keep each group's values in an ordered multiset, so deleting the
//!   current extreme finds the next one.
//! - Time buckets are UTC: `2026-12-01T13` (hour), `2026-12-01` (day), `2026-W49` (ISO
//!   week), `2026-12` (month). A record without a value (or with one that does not read
//!   as a date) falls in the group `null`.
//!
//! The maps are persistent ([`Tree`]), so a reader's frozen copy costs O(1).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, Timelike, Utc};
use serde_json::{Map, Value};

use super::row::{Layout, Stored};
use super::state::SortKey;
use super::tree::Tree;
use crate::spec::{AggregateOp, FieldType, Granularity, ModelSpec, ProjectionSpec};

/// A projection's definition, resolved against its source's layout.
#[derive(Debug)]
pub struct Definition {
    /// The projection.
    pub spec: ProjectionSpec,
    /// `where`: each slot's required value.
    filter: Vec<(usize, SortKey)>,
    /// The slot grouped by.
    group: usize,
    /// How a value of that slot becomes a group key.
    bucket: Bucket,
    /// Each aggregate's slot (None for `count`) and whether its field is an `int`.
    slots: Vec<(Option<usize>, bool)>,
    /// For each `min`/`max` aggregate, its place among the projection's multisets.
    extremes: Vec<Option<usize>>,
}

/// How a value becomes its group's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bucket {
    /// The value itself.
    Value,
    /// A date's bucket.
    Date(Granularity),
    /// A datetime's bucket, in UTC.
    Datetime(Granularity),
}

impl Definition {
    /// Resolves `spec` against `source` and its `layout`; None when a field it names has
    /// no slot (the checker never lets that through).
    pub fn new(spec: &ProjectionSpec, source: &ModelSpec, layout: &Layout) -> Option<Definition> {
        let filter = spec
            .filter
            .iter()
            .map(|c| Some((layout.slot(&c.field)?, SortKey::of(Some(&c.value)))))
            .collect::<Option<Vec<_>>>()?;
        let group_ty = match spec.group_by.field.as_str() {
            "created_at" | "updated_at" => FieldType::Datetime,
            f => source.field(f)?.ty.clone(),
        };
        let bucket = match (spec.group_by.granularity, group_ty) {
            (None, _) => Bucket::Value,
            (Some(g), FieldType::Date) => Bucket::Date(g),
            (Some(g), _) => Bucket::Datetime(g),
        };
        let mut extremes = Vec::new();
        let mut count = 0;
        let mut slots = Vec::new();
        for a in &spec.aggregates {
            let slot = match &a.field {
                Some(f) => Some(layout.slot(f)?),
                None => None,
            };
            let int = a
                .field
                .as_ref()
                .and_then(|f| source.field(f))
                .is_some_and(|f| f.ty == FieldType::Int);
            slots.push((slot, int));
            if matches!(a.op, AggregateOp::Min | AggregateOp::Max) {
                extremes.push(Some(count));
                count += 1;
            } else {
                extremes.push(None);
            }
        }
        Some(Definition {
            spec: spec.clone(),
            filter,
            group: layout.slot(&spec.group_by.field)?,
            bucket,
            slots,
            extremes,
        })
    }

    fn multisets(&self) -> usize {
        self.extremes.iter().flatten().count()
    }

    /// What `r` adds to the projection: its group's key, and each aggregate's number
    /// (None for `count`, or where the record has no number); None when the `where`
    /// filter leaves it out. Read from the record's bytes without building its values.
    fn contribution(&self, r: &Stored) -> Option<Contribution> {
        if !self
            .filter
            .iter()
            .all(|(slot, want)| r.key_at(*slot) == *want)
        {
            return None;
        }
        let raw = r.key_at(self.group);
        let key = match self.bucket {
            Bucket::Value => raw,
            Bucket::Date(g) | Bucket::Datetime(g) => {
                let mut text = Small::default();
                if bucket(&raw, self.bucket == Bucket::Date(g), g, &mut text) {
                    SortKey::string(text.as_str())
                } else {
                    SortKey::Missing
                }
            }
        };
        let mut numbers: Vec<Option<f64>> = Vec::with_capacity(self.slots.len());
        for (i, (slot, _)) in self.slots.iter().enumerate() {
            // Aggregates of one field read it once.
            let seen = self.slots[..i]
                .iter()
                .position(|(s, _)| s.is_some() && s == slot);
            let n = match (seen, slot) {
                (Some(j), _) => numbers[j],
                (None, Some(s)) => r.key_at(*s).as_f64(),
                (None, None) => None,
            };
            numbers.push(n);
        }
        Some(Contribution { key, numbers })
    }

    /// The key of a new group, as shown: the bucket's text, or the record's value.
    fn shown(&self, key: &SortKey, r: &Stored) -> Value {
        match (self.bucket, key) {
            (_, SortKey::Missing) => Value::Null,
            (Bucket::Value, _) => r.at(self.group).unwrap_or(Value::Null),
            _ => key
                .as_text()
                .map_or(Value::Null, |t| Value::String(t.to_string())),
        }
    }
}

/// A record's part in a projection.
#[derive(Debug, PartialEq)]
struct Contribution {
    key: SortKey,
    numbers: Vec<Option<f64>>,
}

/// Up to 16 bytes of text, on the stack (a bucket's name).
#[derive(Default)]
struct Small {
    bytes: [u8; 16],
    len: usize,
}

impl Small {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for Small {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes the UTC bucket of the date (`date`) or datetime whose index key is `key` into
/// `out`; false when it is neither.
fn bucket(key: &SortKey, date: bool, g: Granularity, out: &mut Small) -> bool {
    use std::fmt::Write;
    let (day, hour) = match key {
        // A timestamp in the server's form (as `created_at`): its microseconds.
        SortKey::Time(micros) => match chrono::DateTime::from_timestamp_micros(*micros) {
            Some(t) => (t.date_naive(), t.hour()),
            None => return false,
        },
        _ => {
            let Some(text) = key.as_text() else {
                return false;
            };
            if date {
                match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                    Ok(d) => (d, 0),
                    Err(_) => return false,
                }
            } else {
                match chrono::DateTime::parse_from_rfc3339(text) {
                    Ok(t) => {
                        let t = t.with_timezone(&Utc);
                        (t.date_naive(), t.hour())
                    }
                    Err(_) => return false,
                }
            }
        }
    };
    let (y, m, d) = (day.year(), day.month(), day.day());
    let written = match g {
        Granularity::Hour => write!(out, "{y:04}-{m:02}-{d:02}T{hour:02}"),
        Granularity::Day => write!(out, "{y:04}-{m:02}-{d:02}"),
        Granularity::Week => {
            let w = day.iso_week();
            write!(out, "{:04}-W{:02}", w.year(), w.week())
        }
        Granularity::Month => write!(out, "{y:04}-{m:02}"),
    };
    written.is_ok()
}

/// One group: its key, how many records it has, and each aggregate's running values.
#[derive(Clone, Debug)]
pub struct Group {
    /// The group's key, as shown (`"2026-12-01"`, `"paid"`, `null`).
    pub key: Value,
    /// An id of the group's own, for its values in the multisets.
    id: u64,
    /// Records in the group.
    pub count: u64,
    /// Per aggregate: how many records have a number, and the numbers' exact sum.
    sums: Vec<(u64, ExactSum)>,
}

impl Group {
    fn new(key: Value, id: u64, aggregates: usize) -> Group {
        Group {
            key,
            id,
            count: 0,
            sums: vec![(0, ExactSum::default()); aggregates],
        }
    }

    /// Counts a record's `numbers` in; `extreme` is handed each number a `min` or `max`
    /// aggregate keeps (its multiset's place, and the entry).
    fn take_in(
        &mut self,
        def: &Definition,
        numbers: &[Option<f64>],
        mut extreme: impl FnMut(usize, Entry),
    ) {
        self.count += 1;
        for (i, x) in numbers.iter().enumerate() {
            let Some(x) = *x else { continue };
            self.sums[i].0 += 1;
            self.sums[i].1.add(x);
            if let Some(e) = def.extremes[i] {
                extreme(e, (self.id, ordered_bits(x)));
            }
        }
    }
}

/// A value in a multiset: the group's id and the number's bits, ordered as the numbers.
type Entry = (u64, u64);

/// The bits of `x`, ordered as `f64::total_cmp` orders the numbers.
fn ordered_bits(x: f64) -> u64 {
    let b = (x + 0.0).to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

fn from_ordered_bits(b: u64) -> f64 {
    if b >> 63 == 1 {
        f64::from_bits(b & !(1 << 63))
    } else {
        f64::from_bits(!b)
    }
}

/// A projection's groups.
#[derive(Clone, Debug)]
pub struct Projection {
    /// What it computes.
    pub def: Arc<Definition>,
    /// The groups by key, in key order.
    pub groups: Tree<SortKey, Arc<Group>>,
    /// Per `min`/`max` aggregate: each group's numbers and how often each occurs.
    extremes: Vec<Tree<Entry, u32>>,
    /// The id the next new group gets.
    next_id: u64,
}

impl Projection {
    /// An empty projection.
    pub fn new(def: Arc<Definition>) -> Projection {
        let n = def.multisets();
        Projection {
            def,
            groups: Tree::new(),
            extremes: vec![Tree::new(); n],
            next_id: 0,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.def.spec.name
    }

    /// Takes a record's change into account: `old` is the record before (None: it is
    /// created), `new` after (None: it is deleted).
    pub fn change(&mut self, old: Option<&Stored>, new: Option<&Stored>) {
        let before = old.and_then(|r| self.def.contribution(r));
        let after = new.and_then(|r| self.def.contribution(r));
        if before == after {
            return;
        }
        if let Some(c) = before {
            self.remove(c);
        }
        if let (Some(c), Some(r)) = (after, new) {
            self.add(c, r);
        }
    }

    fn add(&mut self, c: Contribution, r: &Stored) {
        let mut group = match self.groups.get(&c.key) {
            Some(g) => Group::clone(g),
            None => {
                self.next_id += 1;
                Group::new(
                    self.def.shown(&c.key, r),
                    self.next_id,
                    self.def.slots.len(),
                )
            }
        };
        group.take_in(&self.def, &c.numbers, |e, entry| {
            let n = self.extremes[e].get(&entry).copied().unwrap_or(0);
            self.extremes[e].insert(entry, n + 1);
        });
        self.groups.insert(c.key, Arc::new(group));
    }

    fn remove(&mut self, c: Contribution) {
        let Some(mut group) = self.groups.get(&c.key).map(|g| Group::clone(g)) else {
            return;
        };
        group.count = group.count.saturating_sub(1);
        for (i, x) in c.numbers.iter().enumerate() {
            let Some(x) = *x else { continue };
            group.sums[i].0 = group.sums[i].0.saturating_sub(1);
            group.sums[i].1.add(-x);
            if let Some(e) = self.def.extremes[i] {
                let entry = (group.id, ordered_bits(x));
                match self.extremes[e].get(&entry).copied() {
                    Some(n) if n > 1 => {
                        self.extremes[e].insert(entry, n - 1);
                    }
                    _ => {
                        self.extremes[e].remove(&entry);
                    }
                }
            }
        }
        if group.count == 0 {
            self.groups.remove(&c.key);
        } else {
            self.groups.insert(c.key, Arc::new(group));
        }
    }

    /// Builds it from every record of its source at once (a start): the groups and
    /// the multisets are filled in one pass and each multiset is built dense.
    pub fn build<'a>(
        def: Arc<Definition>,
        records: impl Iterator<Item = &'a Arc<Stored>>,
    ) -> Projection {
        let mut groups: BTreeMap<SortKey, Group> = BTreeMap::new();
        let mut values: Vec<Vec<Entry>> = vec![Vec::new(); def.multisets()];
        let mut next_id = 0;
        for r in records {
            let Some(c) = def.contribution(r) else {
                continue;
            };
            let group = groups.entry(c.key).or_insert_with_key(|key| {
                next_id += 1;
                Group::new(def.shown(key, r), next_id, def.slots.len())
            });
            group.take_in(&def, &c.numbers, |e, entry| values[e].push(entry));
        }
        let extremes = values
            .into_iter()
            .map(|mut v| {
                v.sort_unstable();
                let mut counted: Vec<(Entry, u32)> = Vec::with_capacity(v.len());
                for e in v {
                    match counted.last_mut() {
                        Some((last, n)) if *last == e => *n += 1,
                        _ => counted.push((e, 1)),
                    }
                }
                counted.into_iter().collect()
            })
            .collect();
        Projection {
            groups: groups.into_iter().map(|(k, g)| (k, Arc::new(g))).collect(),
            extremes,
            next_id,
            def,
        }
    }

    /// A group as its JSON object: the key under the grouped field's name, then each
    /// aggregate, leaving out those `hidden` names (aggregates of fields the caller does
    /// not see).
    pub fn render(&self, group: &Group, hidden: &[bool]) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert(self.def.spec.group_by.field.clone(), group.key.clone());
        for (i, a) in self.def.spec.aggregates.iter().enumerate() {
            if hidden.get(i).copied().unwrap_or(false) {
                continue;
            }
            let (n, sum) = &group.sums[i];
            let int = self.def.slots[i].1;
            let value = match a.op {
                AggregateOp::Count => Value::from(group.count),
                AggregateOp::Sum => number(sum.value(), int),
                AggregateOp::Avg if *n == 0 => Value::Null,
                AggregateOp::Avg => number(sum.value() / *n as f64, false),
                AggregateOp::Min | AggregateOp::Max => {
                    let tree = self.def.extremes[i].and_then(|e| self.extremes.get(e));
                    let mut range = tree
                        .into_iter()
                        .flat_map(|t| t.range((group.id, 0)..=(group.id, u64::MAX)));
                    let found = if a.op == AggregateOp::Min {
                        range.next()
                    } else {
                        range.next_back()
                    };
                    match found {
                        Some(((_, bits), _)) => number(from_ordered_bits(*bits), int),
                        None => Value::Null,
                    }
                }
            };
            out.insert(a.name.clone(), value);
        }
        out
    }
}

/// A number as JSON: an integer when the field is an `int` and the value is whole.
fn number(x: f64, int: bool) -> Value {
    if int && x.fract() == 0.0 && x.abs() < 9.0e15 {
        return Value::from(x as i64);
    }
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// An exact sum of floats: the partial sums of Shewchuk's algorithm (as in Python's
/// `math.fsum`), which together hold the sum without rounding; [`ExactSum::value`] is
/// that sum rounded once. So the value depends only on which numbers are in it, not on
/// the order they were added in, and adding `-x` takes `x` out exactly. (Written here:
/// the crates that do this sum slices, not a running total that values also leave.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExactSum {
    /// Non-overlapping partials, smallest magnitude first.
    partials: Vec<f64>,
}

impl ExactSum {
    /// Adds `x` (a finite number).
    pub fn add(&mut self, mut x: f64) {
        if !x.is_finite() {
            return;
        }
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        if x != 0.0 {
            self.partials.push(x);
        }
    }

    /// The sum, correctly rounded.
    pub fn value(&self) -> f64 {
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            let x = hi;
            n -= 1;
            let y = p[n];
            hi = x + y;
            let y_rounded = hi - x;
            lo = y - y_rounded;
            if lo != 0.0 {
                break;
            }
        }
        // Round half to even across the partials below, as a single rounding would.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// An exact sum equals the sum of the same numbers as rationals, whatever the order
    /// they are added in and after some are taken out again.
    #[test]
    fn an_exact_sum_does_not_depend_on_the_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let xs: Vec<f64> = (0..50)
                .map(|_| rng.gen_range(-1e6..1e6) * 10f64.powi(rng.gen_range(-8..8)))
                .collect();
            let mut forward = ExactSum::default();
            xs.iter().for_each(|x| forward.add(*x));
            let mut backward = ExactSum::default();
            xs.iter().rev().for_each(|x| backward.add(*x));
            assert_eq!(forward.value().to_bits(), backward.value().to_bits());
            // Add extra values and take them out again.
            let extra: Vec<f64> = (0..20).map(|_| rng.gen_range(-1e12..1e12)).collect();
            extra.iter().for_each(|x| backward.add(*x));
            extra.iter().for_each(|x| backward.add(-x));
            assert_eq!(forward.value().to_bits(), backward.value().to_bits());
        }
        let mut s = ExactSum::default();
        for x in [1e16, 1.0, -1e16] {
            s.add(x);
        }
        assert_eq!(s.value(), 1.0);
        let mut s = ExactSum::default();
        for _ in 0..10 {
            s.add(0.1);
        }
        assert_eq!(s.value(), 1.0);
    }

    #[test]
    fn ordered_bits_order_as_the_numbers() {
        let xs = [-1e300, -2.5, -0.0, 0.0, 1e-300, 3.0, 1e300];
        for w in xs.windows(2) {
            assert!(ordered_bits(w[0]) <= ordered_bits(w[1]), "{w:?}");
        }
        for x in xs {
            assert_eq!(from_ordered_bits(ordered_bits(x)), x + 0.0);
        }
    }

    #[test]
    fn buckets_are_utc() {
        let b = |s: &str, date: bool, g| {
            let mut out = Small::default();
            bucket(&SortKey::string(s), date, g, &mut out).then(|| out.as_str().to_string())
        };
        let dt = |s: &str, g| b(s, false, g);
        assert_eq!(
            dt("2026-12-01T23:30:00-02:00", Granularity::Day).as_deref(),
            Some("2026-12-02")
        );
        assert_eq!(
            dt("2026-12-01T23:30:00-02:00", Granularity::Hour).as_deref(),
            Some("2026-12-02T01")
        );
        assert_eq!(
            dt("2026-12-01T10:00:00Z", Granularity::Week).as_deref(),
            Some("2026-W49")
        );
        assert_eq!(
            dt("2027-01-01T10:00:00Z", Granularity::Week).as_deref(),
            Some("2026-W53")
        );
        assert_eq!(
            dt("2026-12-31T23:59:59+00:00", Granularity::Month).as_deref(),
            Some("2026-12")
        );
        // A timestamp in the server's form is kept as its microseconds.
        assert_eq!(
            dt("2026-12-01T13:00:00.000000Z", Granularity::Hour).as_deref(),
            Some("2026-12-01T13")
        );
        assert_eq!(dt("not a time", Granularity::Day), None);
        assert_eq!(
            b("2026-12-01", true, Granularity::Month).as_deref(),
            Some("2026-12")
        );
        assert_eq!(
            b("2026-12-01", true, Granularity::Week).as_deref(),
            Some("2026-W49")
        );
    }
}
