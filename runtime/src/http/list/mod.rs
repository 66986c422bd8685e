//! `GET /api/<plural>`: pagination, sorting and filters (`filter.rs`: equality and
//! ranges).
//!
//! A list never holds the state's lock while it works: under the lock it takes a frozen
//! [`View`] of the model (the records are a persistent map, so this is O(1), plus the ids
//! of an indexed filter), and the filtering, sorting and rendering run on the list
//! [`Workers`]: threads of their own (one per two cores) at a lower CPU priority, so that heavy lists
//! delay neither the applies of the Raft state machine nor its heartbeats. At most
//! [`MAX_SORT_KEYS`] sort keys are taken, and each filter parameter once (so a query holds
//! at most as many filters as the OpenAPI document lists parameters).
//!
//! What a list costs: one in the default order (`created_at`), by `id`, or by one
//! `indexed` or `unique` field (either direction), without filters or with filters on
//! that same field only (equality and ranges, not `ne`), reads only its page (its offset
//! costs nothing) from an ordered index of the state, and counts its `total` there in
//! O(log n). Any other list (filters on other fields, several sort keys, an unindexed
//! field) selects the matching rows (through the index of the first filtered field that
//! has one) and orders them: its cost grows with the rows it selects.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::auth::Access;
use crate::domain::row::Stored;
use crate::domain::state::State;
use crate::error::ApiError;
use crate::spec::ModelSpec;
use filter::Filter;
pub(crate) use filter::Op;
use ordered::InOrder;

mod filter;
mod ordered;

/// A model's records as of one moment, for a list to work on without the state's lock.
#[derive(Default)]
pub struct View {
    records: crate::domain::snapshot::Records,
    /// The ids an indexed filter selects (None: every record is a candidate).
    ids: Option<Vec<Uuid>>,
    /// For a list without filters in an order an index keeps: that order.
    ordered: Option<InOrder>,
}

/// The threads lists run on (see the module's doc).
pub struct Workers {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

/// The nice value of the list workers: under contention writes and Raft get the CPU first.
const WORKER_NICENESS: libc::c_int = 10;

impl Workers {
    /// Starts one worker per two cores (at least one).
    pub fn start() -> Workers {
        let (jobs, queue) =
            std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(MAX_WAITING_LISTS);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        // Half the cores: lists never take the whole machine, even at a low priority
        // (their scans also compete for the caches).
        let count = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        for i in 0..count {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("lithair-list-{i}"))
                .spawn(move || {
                    // On Linux the nice value is per thread: this lowers this worker only.
                    // SAFETY: plain system calls on the calling thread.
                    unsafe {
                        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                        libc::setpriority(libc::PRIO_PROCESS, tid, WORKER_NICENESS);
                    }
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => break,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a list worker");
            }
        }
        Workers { jobs }
    }

    /// Runs `query` on `view` on a worker; a full queue answers 503 at once.
    pub async fn run(&self, query: ListQuery, view: View) -> Result<bytes::Bytes, ApiError> {
        let (done, page) = tokio::sync::oneshot::channel();
        let job = Box::new(move || {
            let _ = done.send(query.run(&view));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                ApiError::overloaded("too many list requests are waiting; retry")
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                ApiError::internal("the list workers stopped")
            }
        })?;
        page.await
            .map_err(|_| ApiError::internal("a list worker stopped"))
    }
}

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
pub const MAX_LIMIT: usize = 1000;
/// Most sort keys in one list request.
pub const MAX_SORT_KEYS: usize = 8;
/// List requests waiting for a worker; more are refused at once (503 with Retry-After).
const MAX_WAITING_LISTS: usize = 64;

/// A parsed list query.
#[derive(Debug, Default)]
pub struct ListQuery {
    limit: usize,
    offset: usize,
    sort: Vec<(String, bool)>,
    filters: Vec<Filter>,
    /// The fields the caller does not see: left out of every item.
    hidden: Vec<String>,
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => out.push(b),
                    None => {
                        return Err(ApiError::bad_request("the query string has a bad %-escape"))
                    }
                }
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("the query string is not UTF-8"))
}

/// The `key=value` pairs of a query string, decoded.
pub fn pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

impl ListQuery {
    /// Parses the query string of a list request.
    pub fn parse(model: &ModelSpec, query: Option<&str>) -> Result<ListQuery, ApiError> {
        let mut q = ListQuery {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (k, v) in pairs(query)? {
            match k.as_str() {
                "limit" => {
                    q.limit = v.parse().ok().filter(|l| *l <= MAX_LIMIT).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be a whole number from 0 to {MAX_LIMIT}"
                        ))
                    })?
                }
                // Checked by the router (`?consistency=local|linearizable`).
                "consistency" => {}
                "offset" => {
                    q.offset = v
                        .parse()
                        .map_err(|_| ApiError::bad_request("offset must be a whole number"))?
                }
                "sort" if v.is_empty() => {}
                "sort" => {
                    for part in v.split(',') {
                        if part.is_empty() || part == "-" {
                            return Err(ApiError::bad_request(format!(
                                "sort `{v}` has an empty key"
                            )));
                        }
                        let (name, desc) = match part.strip_prefix('-') {
                            Some(n) => (n, true),
                            None => (part, false),
                        };
                        let known = model.field(name).is_some()
                            || matches!(name, "id" | "created_at" | "updated_at" | "version");
                        if !known {
                            return Err(ApiError::bad_request(format!(
                                "cannot sort by `{name}`: {} has no such field",
                                model.name
                            )));
                        }
                        q.sort.push((name.to_string(), desc));
                        if q.sort.len() > MAX_SORT_KEYS {
                            return Err(ApiError::bad_request(format!(
                                "at most {MAX_SORT_KEYS} sort keys are taken"
                            )));
                        }
                    }
                }
                name => {
                    if !seen.insert(name.to_string()) {
                        return Err(ApiError::bad_request(format!(
                            "the filter `{name}` is given twice"
                        )));
                    }
                    q.filters.push(Filter::parse(model, name, &v)?);
                }
            }
        }
        Ok(q)
    }

    /// Fits the query to the caller: 403 when its filters or sort name a field the
    /// caller does not see; the items leave those fields out; and when the caller reads
    /// only its own records, an equality filter on the owner field keeps just those (so
    /// `total` counts only them, and an indexed owner field selects them from its index).
    pub fn restrict(&mut self, model: &ModelSpec, access: &Access) -> Result<(), ApiError> {
        access.check_query(
            self.filters
                .iter()
                .map(|f| f.field.as_str())
                .chain(self.sort.iter().map(|(f, _)| f.as_str())),
        )?;
        self.hidden = access.hidden().to_vec();
        if let Some(own) = access.own() {
            self.filters
                .push(Filter::parse(model, &own.field, &own.subject)?);
        }
        Ok(())
    }

    /// What the query needs of the state, frozen (taken under the state's lock, O(1)
    /// plus the ids that the filters on the first filtered field with an ordered index
    /// select, when the page is not read in order).
    pub fn view(&self, state: &State, model: &ModelSpec) -> View {
        let Some(ms) = state.models.get(&model.name) else {
            return View::default();
        };
        let ordered = self.in_order(ms);
        let ids = if ordered.is_some() {
            None
        } else {
            self.filters
                .iter()
                .filter(|f| f.uses_index())
                .find_map(|first| {
                    let index = ms.index(&first.field)?;
                    let on_it = self
                        .filters
                        .iter()
                        .filter(|f| f.field == first.field && f.uses_index());
                    let ids = index
                        .entries
                        .range(filter::bounds(on_it))
                        .map(|((_, id), _)| *id);
                    Some(ids.collect())
                })
        };
        View {
            records: ms.records.clone(),
            ids,
            ordered,
        }
    }

    /// Runs the query on a view; answers the page as JSON text.
    pub fn run(&self, view: &View) -> bytes::Bytes {
        if let Some(order) = &view.ordered {
            let (ids, total) = self.page_in_order(view, order);
            let rows = ids
                .into_iter()
                .filter_map(|id| view.records.get(&id).cloned());
            return self.page(rows, total);
        }
        let matches = |r: &Arc<Stored>| {
            self.filters
                .iter()
                .all(|f| f.matches(r.get(&f.field).as_ref()))
        };
        let rows: Vec<Arc<Stored>> = match &view.ids {
            Some(ids) => ids
                .iter()
                .filter_map(|id| view.records.get(id).cloned())
                .filter(matches)
                .collect(),
            None => view
                .records
                .values()
                .filter(|r| matches(r))
                .cloned()
                .collect(),
        };
        let mut keys = self.sort.clone();
        if keys.is_empty() {
            keys.push(("created_at".into(), false));
        }
        keys.push(("id".into(), false));
        // The sort keys of every row, looked up once (not once per comparison), and the
        // rows ordered through their positions.
        let width = keys.len();
        let flat: Vec<Option<Value>> = rows
            .iter()
            .flat_map(|r| keys.iter().map(move |(k, _)| r.get(k)))
            .collect();
        let order = |a: &u32, b: &u32| {
            let (a, b) = (*a as usize * width, *b as usize * width);
            for (i, (_, desc)) in keys.iter().enumerate() {
                let o = compare(flat[a + i].as_ref(), flat[b + i].as_ref());
                if o != Ordering::Equal {
                    return if *desc { o.reverse() } else { o };
                }
            }
            Ordering::Equal
        };
        let total = rows.len();
        let mut positions: Vec<u32> = (0..total as u32).collect();
        // Only the rows up to the end of the page need to be in order: select them
        // (linear on average), then sort just those.
        let end = self.offset.saturating_add(self.limit);
        if end < positions.len() {
            positions.select_nth_unstable_by(end, order);
            positions.truncate(end);
        }
        positions.sort_by(order);
        let page = positions
            .iter()
            .skip(self.offset)
            .take(self.limit)
            .map(|p| rows[*p as usize].clone());
        self.page(page, total)
    }

    /// The answer: the page's records, rendered as JSON, and the total.
    fn page(&self, page: impl Iterator<Item = Arc<Stored>>, total: usize) -> bytes::Bytes {
        let mut out = Vec::with_capacity(64 + self.limit.min(total) * 400);
        out.extend_from_slice(b"{\"items\":[");
        for (i, r) in page.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            r.write_json_without(&mut out, &self.hidden);
        }
        out.extend_from_slice(
            format!(
                "],\"total\":{total},\"limit\":{},\"offset\":{}}}",
                self.limit, self.offset
            )
            .as_bytes(),
        );
        out.into()
    }
}

/// The order of values in a list. The ordered indexes keep the same order
/// (`domain::state::SortKey`); `a_page_read_in_index_order_equals_the_full_sort` checks
/// that the two agree.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::fixtures::item;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    /// An item's `name` and optional `n`.
    const FIELDS: &str = r#"{"name": "name", "type": {"kind": "string"}},
        {"name": "n", "type": {"kind": "int"}, "optional": true}"#;

    fn ids(page: &bytes::Bytes) -> Vec<String> {
        let v: Value = serde_json::from_slice(page).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The page of the selection-then-sort equals the page of a full sort, for sort keys
    /// with many ties and missing values, at every offset.
    #[test]
    fn a_page_is_the_same_as_the_page_of_a_full_sort() {
        let spec = item(FIELDS);
        let model = spec.model("Item").unwrap();
        let mut state = State::new(&spec.spec);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 0..300 {
            let id = Uuid::new_v4();
            let mut r = serde_json::Map::new();
            r.insert("id".into(), Value::String(id.to_string()));
            r.insert(
                "name".into(),
                Value::String(format!("n{}", rng.gen_range(0..12))),
            );
            if i % 3 != 0 {
                r.insert("n".into(), Value::from(rng.gen_range(-5..5)));
            }
            r.insert(
                "created_at".into(),
                Value::String(format!("2024-01-01T00:00:{:02}Z", i % 60)),
            );
            let ms = state.models.get_mut("Item").unwrap();
            ms.put(id, Some(ms.encode(&r)));
        }
        for sort in ["", "&sort=name", "&sort=-n,name", "&sort=n,-created_at"] {
            let all = ListQuery::parse(model, Some(&format!("limit=1000{sort}"))).unwrap();
            let full = ids(&all.run(&all.view(&state, model)));
            assert_eq!(full.len(), 300);
            for (offset, limit) in [
                (0, 1),
                (0, 20),
                (17, 5),
                (290, 20),
                (299, 1),
                (300, 5),
                (0, 0),
            ] {
                let q =
                    ListQuery::parse(model, Some(&format!("limit={limit}&offset={offset}{sort}")))
                        .unwrap();
                let page = ids(&q.run(&q.view(&state, model)));
                let expected: Vec<String> = full.iter().skip(offset).take(limit).cloned().collect();
                assert_eq!(
                    page, expected,
                    "sort {sort:?}, offset {offset}, limit {limit}"
                );
            }
        }
    }

    /// Indexed fields of every kind a list sorts by, and one unindexed.
    const INDEXED: &str = r#"{"name": "name", "type": {"kind": "string"}, "indexed": true},
        {"name": "n", "type": {"kind": "float"}, "optional": true, "indexed": true},
        {"name": "on", "type": {"kind": "bool"}, "optional": true, "indexed": true},
        {"name": "plain", "type": {"kind": "int"}}"#;

    /// A page read from an ordered index (or from the records' own order, for `id`)
    /// equals the page of the full sort: random values with many ties, missing and null
    /// values, `-0` and `0`, records updated and deleted, every offset kind.
    #[test]
    fn a_page_read_in_index_order_equals_the_full_sort() {
        let spec = item(INDEXED);
        let model = spec.model("Item").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..4 {
            let mut state = State::new(&spec.spec);
            let mut live = Vec::new();
            for i in 0..400 {
                // Updates and deletes of records made before.
                if !live.is_empty() && rng.gen_bool(0.2) {
                    let id = live[rng.gen_range(0..live.len())];
                    let ms = state.models.get_mut("Item").unwrap();
                    if rng.gen_bool(0.5) {
                        ms.put(id, None);
                        live.retain(|x| *x != id);
                        continue;
                    }
                }
                let id = Uuid::new_v4();
                let mut r = serde_json::Map::new();
                r.insert("id".into(), Value::String(id.to_string()));
                r.insert(
                    "name".into(),
                    Value::String(format!("n{}", rng.gen_range(0..(5 + round * 20)))),
                );
                match rng.gen_range(0..5) {
                    0 => {}
                    1 => {
                        r.insert("n".into(), Value::Null);
                    }
                    2 => {
                        r.insert(
                            "n".into(),
                            json_f64(if rng.gen_bool(0.5) { -0.0 } else { 0.0 }),
                        );
                    }
                    _ => {
                        r.insert("n".into(), json_f64(rng.gen_range(-3..3) as f64 / 2.0));
                    }
                }
                if rng.gen_bool(0.7) {
                    r.insert("on".into(), Value::Bool(rng.gen_bool(0.5)));
                }
                r.insert("plain".into(), Value::from(i));
                // Timestamps in the server's form (kept as microseconds by the index)
                // mixed with others (kept as text).
                let minute = rng.gen_range(0..30);
                let at = if rng.gen_bool(0.5) {
                    format!("2024-01-01T00:{minute:02}:00.000000Z")
                } else {
                    format!("2024-01-01T00:{minute:02}:00Z")
                };
                r.insert("created_at".into(), Value::String(at));
                let ms = state.models.get_mut("Item").unwrap();
                ms.put(id, Some(ms.encode(&r)));
                live.push(id);
            }
            let sorts = [
                "",
                "&sort=created_at",
                "&sort=-created_at",
                "&sort=n",
                "&sort=-n",
                "&sort=name",
                "&sort=-name",
                "&sort=on",
                "&sort=-on",
                "&sort=id",
                "&sort=-id",
            ];
            for sort in sorts {
                for (offset, limit) in [
                    (0, 1),
                    (0, 20),
                    (13, 7),
                    (50, 100),
                    (390, 20),
                    (0, 1000),
                    (5, 0),
                ] {
                    let q = ListQuery::parse(
                        model,
                        Some(&format!("limit={limit}&offset={offset}{sort}")),
                    )
                    .unwrap();
                    let fast = q.view(&state, model);
                    assert!(fast.ordered.is_some(), "{sort} should read an index");
                    let slow = View {
                        ordered: None,
                        ..q.view(&state, model)
                    };
                    let (a, b) = (q.run(&fast), q.run(&slow));
                    assert_eq!(
                        ids(&a),
                        ids(&b),
                        "round {round}, sort {sort:?}, offset {offset}, limit {limit}"
                    );
                    assert_eq!(a, b);
                }
            }
            // Not read in index order: a filter, two keys, an unindexed field.
            for query in ["name=n1", "sort=name,-n", "sort=plain"] {
                let q = ListQuery::parse(model, Some(query)).unwrap();
                assert!(q.view(&state, model).ordered.is_none(), "{query}");
            }
        }
    }

    /// Filters with every operator, on indexed fields (read as an index range, in order
    /// or as the candidates of a sort) and on unindexed ones (checked row by row), select
    /// exactly what a plain comparison of the values selects, `total` counts that, and
    /// every page equals the page of the full sort of the selection.
    #[test]
    fn filters_select_what_a_plain_comparison_selects() {
        let spec = item(INDEXED);
        let model = spec.model("Item").unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut state = State::new(&spec.spec);
        let mut rows = Vec::new();
        for i in 0..500 {
            let id = Uuid::new_v4();
            let mut r = serde_json::Map::new();
            r.insert("id".into(), Value::String(id.to_string()));
            r.insert(
                "name".into(),
                Value::String(format!("n{}", rng.gen_range(0..40))),
            );
            match rng.gen_range(0..4) {
                0 => {}
                1 => {
                    r.insert("n".into(), Value::Null);
                }
                _ => {
                    r.insert("n".into(), json_f64(rng.gen_range(-8..8) as f64 / 4.0));
                }
            }
            if rng.gen_bool(0.8) {
                r.insert("on".into(), Value::Bool(rng.gen_bool(0.5)));
            }
            r.insert("plain".into(), Value::from(i % 37));
            let at = format!("2024-01-01T00:{:02}:00.{:06}Z", rng.gen_range(0..10), i);
            r.insert("created_at".into(), Value::String(at));
            let ms = state.models.get_mut("Item").unwrap();
            ms.put(id, Some(ms.encode(&r)));
            rows.push(r);
        }
        // What a filter passes, compared plainly.
        let passes = |r: &serde_json::Map<String, Value>, field: &str, op: &str, raw: &str| {
            use std::cmp::Ordering::*;
            let o = match (r.get(field), field) {
                (None | Some(Value::Null), _) => return false,
                (Some(v), "n" | "plain") => {
                    let (a, b) = (v.as_f64().unwrap(), raw.parse::<f64>().unwrap());
                    a.partial_cmp(&b).unwrap()
                }
                (Some(Value::Bool(b)), "on") => b.cmp(&raw.parse::<bool>().unwrap()),
                (Some(v), "created_at") => {
                    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
                    t(v.as_str().unwrap()).cmp(&t(raw))
                }
                (Some(v), _) => v.as_str().unwrap().cmp(raw),
            };
            match op {
                "eq" => o == Equal,
                "ne" => o != Equal,
                "gt" => o == Greater,
                "gte" => o != Less,
                "lt" => o == Less,
                _ => o != Greater,
            }
        };
        let ops = ["eq", "ne", "gt", "gte", "lt", "lte"];
        let value = |rng: &mut rand::rngs::StdRng, field: &str| match field {
            "n" => format!("{}", rng.gen_range(-9..9) as f64 / 4.0),
            "plain" => format!("{}", rng.gen_range(0..40)),
            "on" => format!("{}", rng.gen_bool(0.5)),
            "created_at" => format!("2024-01-01T01:{:02}:00+01:00", rng.gen_range(0..11)),
            _ => format!("n{}", rng.gen_range(0..45)),
        };
        let sorts = [
            "",
            "&sort=n",
            "&sort=-n",
            "&sort=name",
            "&sort=-name",
            "&sort=plain",
            "&sort=-created_at",
        ];
        let mut read_in_order = 0;
        for round in 0..300 {
            // Filters on one field (often the sort field) or on several.
            let sort = sorts[round % sorts.len()];
            let sorted_by = sort.trim_start_matches("&sort=").trim_start_matches('-');
            let sorted_by = if sorted_by.is_empty() {
                "created_at"
            } else {
                sorted_by
            };
            let mut filters = Vec::new();
            for _ in 0..rng.gen_range(1..4) {
                let field = if rng.gen_bool(0.6) {
                    sorted_by
                } else {
                    ["n", "name", "plain", "on", "created_at"][rng.gen_range(0..5)]
                };
                let op = if field == "on" {
                    ops[rng.gen_range(0..2)]
                } else {
                    ops[rng.gen_range(0..6)]
                };
                // Each filter parameter is taken once.
                if !filters.iter().any(|(f, o, _)| (*f, *o) == (field, op)) {
                    filters.push((field, op, value(&mut rng, field)));
                }
            }
            let query: String = filters
                .iter()
                .map(|(f, op, v)| format!("&{f}%5B{op}%5D={}", v.replace('+', "%2B")))
                .collect();
            let expected: std::collections::BTreeSet<String> = rows
                .iter()
                .filter(|r| filters.iter().all(|(f, op, v)| passes(r, f, op, v)))
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
            let all = ListQuery::parse(model, Some(&format!("limit=1000{sort}{query}"))).unwrap();
            let view = all.view(&state, model);
            read_in_order += usize::from(view.ordered.is_some());
            let page = all.run(&view);
            let got: Value = serde_json::from_slice(&page).unwrap();
            assert_eq!(got["total"], json!(expected.len()), "{query}{sort}");
            let full = ids(&page);
            assert_eq!(
                full.iter()
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>(),
                expected,
                "{query}{sort}"
            );
            // Pages, read as the view reads them and by the full sort of every row.
            for (offset, limit) in [(0, 3), (4, 10), (expected.len().saturating_sub(2), 5)] {
                let q = ListQuery::parse(
                    model,
                    Some(&format!("limit={limit}&offset={offset}{sort}{query}")),
                )
                .unwrap();
                let slow = View {
                    ordered: None,
                    ids: None,
                    ..q.view(&state, model)
                };
                let page = q.run(&q.view(&state, model));
                assert_eq!(page, q.run(&slow), "{query}{sort} at {offset}");
                let expected: Vec<String> = full.iter().skip(offset).take(limit).cloned().collect();
                assert_eq!(ids(&page), expected, "{query}{sort} at {offset}");
            }
        }
        assert!(
            read_in_order > 50,
            "only {read_in_order} lists were read in index order"
        );
    }

    /// Filters a field's type cannot take are the client's mistake, each named.
    #[test]
    fn a_filter_the_field_cannot_take_is_a_400() {
        let spec = item(
            r#"{"name": "name", "type": {"kind": "string"}},
            {"name": "on", "type": {"kind": "bool"}},
            {"name": "born", "type": {"kind": "date"}},
            {"name": "at", "type": {"kind": "datetime"}},
            {"name": "tags", "type": {"kind": "list", "item": {"kind": "string"}}}"#,
        );
        let model = spec.model("Item").unwrap();
        for (query, says) in [
            ("on[gt]=true", "takes eq and ne only"),
            ("name[like]=a", "unknown filter operator `like`"),
            ("born=", "is not a valid date"),
            ("born[gte]=2024-13-01", "is not a valid date"),
            ("born[lt]=2024-2-1", "is not a valid date"),
            ("born[gte]=+2024-01-01", "is not a valid date"),
            ("at[lt]=yesterday", "is not a valid RFC 3339 timestamp"),
            (
                "created_at[gt]=2024-01-01",
                "is not a valid RFC 3339 timestamp",
            ),
            ("tags=a", "cannot be filtered on"),
            ("nope[gt]=1", "unknown query parameter `nope[gt]`"),
        ] {
            let e = ListQuery::parse(model, Some(query)).unwrap_err();
            assert_eq!(e.status, 400, "{query}");
            assert!(e.detail.contains(says), "{query}: {}", e.detail);
        }
        for query in [
            "name[gte]=a&name[lt]=b",
            "born[lte]=2024-01-01",
            "at[gt]=2024-01-01T00:00:00%2B02:00",
            "on[ne]=true",
            "created_at[gte]=2024-01-01T00:00:00Z",
            "updated_at[lt]=2024-01-01T00:00:00.5Z",
        ] {
            assert!(ListQuery::parse(model, Some(query)).is_ok(), "{query}");
        }
    }

    /// A `datetime` field's values keep their offsets: its filters compare instants.
    #[test]
    fn datetime_filters_compare_instants_not_text() {
        let spec = item(r#"{"name": "at", "type": {"kind": "datetime"}, "indexed": true}"#);
        let model = spec.model("Item").unwrap();
        let mut state = State::new(&spec.spec);
        for at in [
            "2024-01-01T10:00:00+02:00",
            "2024-01-01T09:00:00Z",
            "2024-01-01T07:30:00Z",
        ] {
            let id = Uuid::new_v4();
            let r = json!({"id": id.to_string(), "at": at, "created_at": "2024-01-01T00:00:00.000000Z"});
            let ms = state.models.get_mut("Item").unwrap();
            ms.put(id, Some(ms.encode(r.as_object().unwrap())));
        }
        let count = |query: &str| {
            let q = ListQuery::parse(model, Some(query)).unwrap();
            let v: Value = serde_json::from_slice(&q.run(&q.view(&state, model))).unwrap();
            v["total"].as_u64().unwrap()
        };
        // 10:00+02:00 is 08:00Z.
        assert_eq!(count("at[gte]=2024-01-01T08:00:00Z"), 2);
        assert_eq!(count("at=2024-01-01T08:00:00Z"), 1);
        assert_eq!(
            count("at[lt]=2024-01-01T08:00:00Z&at[ne]=2024-01-01T07:30:00%2B00:00"),
            0
        );
    }

    fn json_f64(x: f64) -> Value {
        serde_json::Number::from_f64(x).map(Value::Number).unwrap()
    }
}
