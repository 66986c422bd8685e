//! Projections, in process (a schema compiled by the generator's library, the runtime's
//! pipeline and a real store in a temp dir, restarted on the same data dir): after a
//! randomized run of creates, updates, patches and deletes (records that move between
//! groups, leave the `where` filter, and deletes of a group's current max), every
//! projection equals a reference the test computes from the records it wrote; it still
//! does after a restart that replays the events, after one that loads a snapshot, and
//! when the projection is added to a store that already holds records.

#[path = "support/compiled.rs"]
mod compiled;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lithair_runtime::testing::{mint_token, Answer, InProcess};
use lithair_runtime::Service;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const MODELS: &str = r#"
service: { name: sales }
roles: [clerk, boss]
models:
  Order:
    permissions: { read: [clerk, boss], create: [clerk], update: [clerk], delete: [clerk] }
    fields:
      total: float
      qty: { type: int, optional: true }
      status: { type: enum, values: [pending, paid, cancelled] }
      placed_at: { type: datetime, optional: true }
      region: string
      margin: { type: float, optional: true, permissions: { read: [boss], write: [clerk] } }
"#;

const PROJECTIONS: &str = r#"
projections:
  SalesMetrics:
    source: Order
    where: { status: paid }
    group_by: { field: placed_at, granularity: day }
    permissions: { read: [boss, clerk] }
    aggregates:
      daily_revenue: { sum: total }
      orders_count: { count: true }
      avg_order_value: { avg: total }
      biggest_order: { max: total }
      smallest_order: { min: total }
  RegionStats:
    source: Order
    group_by: { field: region }
    permissions: { read: [boss, clerk] }
    aggregates:
      orders: { count: true }
      units: { sum: qty }
      fewest: { min: qty }
      most: { max: qty }
      margin: { sum: margin }
  MonthlyCount:
    source: Order
    group_by: { field: created_at, granularity: month }
    permissions: { read: [boss] }
    aggregates:
      n: { count: true }
"#;

fn service(with_projections: bool) -> Service {
    let text = if with_projections {
        format!("{MODELS}{PROJECTIONS}")
    } else {
        MODELS.to_string()
    };
    compiled::service("sales.yaml", &text).0
}

struct Sales {
    svc: InProcess,
    tokens: HashMap<&'static str, String>,
}

fn config(snapshot_every: u64) -> (String, HashMap<&'static str, String>) {
    let mut text = format!("[storage]\nsnapshot_every = {snapshot_every}\n\n");
    let mut tokens = HashMap::new();
    for (name, role) in [("cy", "clerk"), ("bo", "boss")] {
        let (token, table) = mint_token(name, &[role]);
        text.push_str(&table);
        tokens.insert(name, token);
    }
    (text, tokens)
}

impl Sales {
    async fn start(
        dir: &Path,
        with: bool,
        config: &(String, HashMap<&'static str, String>),
    ) -> Sales {
        let svc = InProcess::start(service(with), &config.0, dir)
            .await
            .expect("start");
        Sales {
            svc,
            tokens: config.1.clone(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let bearer = who.map(|w| format!("Bearer {}", self.tokens[w]));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        self.svc.send(method, path, &headers, body.as_ref()).await
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let a = self.call(method, path, Some("cy"), body).await;
        assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.json);
        a.json
    }

    /// Every group of projection `path`, as the boss reads them (all pages).
    async fn groups(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let a = self
                .call(
                    "GET",
                    &format!("{path}?limit=7&offset={}", out.len()),
                    Some("bo"),
                    None,
                )
                .await;
            assert_eq!(a.status, 200, "{path}: {}", a.json);
            let items = a.json["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                assert_eq!(a.json["total"], out.len(), "{path}");
                return out;
            }
            out.extend(items);
            assert!(out.len() <= 100_000, "{path}: the pages do not end");
        }
    }
}

/// The UTC day of a time written as `2026-12-DDTHH:MM:SS±HH:00`.
fn utc_day(t: &str) -> String {
    let day: i64 = t[8..10].parse().unwrap();
    let hour: i64 = t[11..13].parse().unwrap();
    let sign = if &t[19..20] == "-" { 1 } else { -1 };
    let offset: i64 = t[20..22].parse().unwrap();
    let utc = day * 24 + hour + sign * offset;
    format!("2026-12-{:02}", utc.div_euclid(24))
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn assert_same(what: &str, got: &[Value], want: &[Value]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: got {got:#?}\nwant {want:#?}"
    );
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            w.keys().collect::<Vec<_>>(),
            "{what}: {g:?} vs {w:?}"
        );
        for (k, v) in w {
            assert!(
                close(&g[k], v),
                "{what}: `{k}` is {} , want {v} ({g:?})",
                g[k]
            );
        }
    }
}

/// Aggregates of `values` as the projection states them.
fn stats(values: &[f64]) -> (f64, Value, Value, Value) {
    let sum: f64 = values.iter().sum();
    if values.is_empty() {
        return (0.0, Value::Null, Value::Null, Value::Null);
    }
    let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (
        sum,
        json!(sum / values.len() as f64),
        json!(min),
        json!(max),
    )
}

/// The reference of `SalesMetrics` and `RegionStats` over `records`, in key order.
fn reference(records: &BTreeMap<String, Value>) -> (Vec<Value>, Vec<Value>) {
    let mut days: BTreeMap<Option<String>, Vec<f64>> = BTreeMap::new();
    let mut regions: BTreeMap<String, (u64, Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for r in records.values() {
        if r["status"] == "paid" {
            let day = r["placed_at"].as_str().map(utc_day);
            days.entry(day)
                .or_default()
                .push(r["total"].as_f64().unwrap());
        }
        let g = regions
            .entry(r["region"].as_str().unwrap().to_string())
            .or_default();
        g.0 += 1;
        if let Some(q) = r["qty"].as_f64() {
            g.1.push(q);
        }
        if let Some(m) = r["margin"].as_f64() {
            g.2.push(m);
        }
    }
    let days = days
        .into_iter()
        .map(|(day, totals)| {
            let (sum, avg, min, max) = stats(&totals);
            json!({"placed_at": day, "daily_revenue": sum, "orders_count": totals.len(),
                "avg_order_value": avg, "biggest_order": max, "smallest_order": min})
        })
        .collect();
    let regions = regions
        .into_iter()
        .map(|(region, (n, qty, margin))| {
            let (units, _, fewest, most) = stats(&qty);
            json!({"region": region, "orders": n, "units": units as i64, "fewest": fewest,
                "most": most, "margin": margin.iter().sum::<f64>()})
        })
        .collect();
    (days, regions)
}

/// A random order: totals with many decimals, paid or not, a time among five days in
/// two offsets (or none), a region of four.
fn order(rng: &mut rand::rngs::StdRng) -> Value {
    const REGIONS: [&str; 4] = ["north", "south", "east", "west"];
    let status = ["pending", "paid", "paid", "cancelled"][rng.gen_range(0..4)];
    let mut o = json!({
        "total": (rng.gen_range(1.0..500.0f64) * 100.0).round() / 100.0 + 0.001,
        "status": status,
        "region": REGIONS[rng.gen_range(0..4)],
    });
    if rng.gen_bool(0.9) {
        let offset = ["+00:00", "-05:00", "+09:00"][rng.gen_range(0..3)];
        o["placed_at"] = json!(format!(
            "2026-12-{:02}T{:02}:30:00{offset}",
            rng.gen_range(2..7),
            rng.gen_range(0..24)
        ));
    }
    if rng.gen_bool(0.8) {
        o["qty"] = json!(rng.gen_range(1..40));
    }
    if rng.gen_bool(0.5) {
        o["margin"] = json!(rng.gen_range(0.0..50.0f64));
    }
    o
}

/// `n` random writes: creates, replaces, patches (group moves, status changes) and
/// deletes, a fifth of them of the record that holds its day's biggest order.
async fn random_writes(
    s: &Sales,
    rng: &mut rand::rngs::StdRng,
    records: &mut BTreeMap<String, Value>,
    n: usize,
) {
    for _ in 0..n {
        let ids: Vec<String> = records.keys().cloned().collect();
        let pick = |rng: &mut rand::rngs::StdRng| ids[rng.gen_range(0..ids.len())].clone();
        match rng.gen_range(0..10) {
            _ if ids.len() < 5 => {
                let body = order(rng);
                let r = s.ok("POST", "/api/orders", Some(body.clone())).await;
                records.insert(r["id"].as_str().unwrap().to_string(), body);
            }
            0..=3 => {
                let body = order(rng);
                let r = s.ok("POST", "/api/orders", Some(body.clone())).await;
                records.insert(r["id"].as_str().unwrap().to_string(), body);
            }
            4 | 5 => {
                let id = pick(rng);
                let mut body = order(rng);
                s.ok("PUT", &format!("/api/orders/{id}"), Some(body.clone()))
                    .await;
                // A PUT that leaves out a field the clerk may not see keeps its value.
                if body.get("margin").is_none() {
                    if let Some(m) = records[&id].get("margin") {
                        body["margin"] = m.clone();
                    }
                }
                records.insert(id, body);
            }
            6 | 7 => {
                let id = pick(rng);
                let patch = match rng.gen_range(0..4) {
                    0 => {
                        let status = ["pending", "paid", "cancelled"][rng.gen_range(0..3)];
                        json!({ "status": status })
                    }
                    1 => json!({"placed_at": null}),
                    2 => json!({"qty": null, "region": "east"}),
                    _ => json!({"total": rng.gen_range(0.0..900.0f64)}),
                };
                s.ok("PATCH", &format!("/api/orders/{id}"), Some(patch.clone()))
                    .await;
                let r = records.get_mut(&id).unwrap();
                for (k, v) in patch.as_object().unwrap() {
                    if v.is_null() {
                        r.as_object_mut().unwrap().remove(k);
                    } else {
                        r[k] = v.clone();
                    }
                }
            }
            8 => {
                // The biggest paid order: its day's max must fall back to the next one.
                let biggest = records
                    .iter()
                    .filter(|(_, r)| r["status"] == "paid")
                    .max_by(|a, b| {
                        a.1["total"]
                            .as_f64()
                            .partial_cmp(&b.1["total"].as_f64())
                            .unwrap()
                    })
                    .map(|(id, _)| id.clone())
                    .unwrap_or_else(|| pick(rng));
                s.ok("DELETE", &format!("/api/orders/{biggest}"), None)
                    .await;
                records.remove(&biggest);
            }
            _ => {
                let id = pick(rng);
                s.ok("DELETE", &format!("/api/orders/{id}"), None).await;
                records.remove(&id);
            }
        }
    }
}

async fn check(s: &Sales, records: &BTreeMap<String, Value>, when: &str) {
    let (days, regions) = reference(records);
    assert!(
        days.len() >= 4 && regions.len() >= 4,
        "too few groups to tell: {days:?}"
    );
    assert_same(
        &format!("SalesMetrics {when}"),
        &s.groups("/api/sales_metrics").await,
        &days,
    );
    assert_same(
        &format!("RegionStats {when}"),
        &s.groups("/api/region_stats").await,
        &regions,
    );
    let months = s.groups("/api/monthly_counts").await;
    let counted: u64 = months.iter().map(|m| m["n"].as_u64().unwrap()).sum();
    assert_eq!(
        counted,
        records.len() as u64,
        "MonthlyCount {when}: {months:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_equal_a_reference_through_writes_restarts_and_snapshots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut records = BTreeMap::new();
    // Snapshots every 60 events: the second restart loads one and replays the rest.
    let config = config(60);
    let s = Sales::start(dir.path(), true, &config).await;
    random_writes(&s, &mut rng, &mut records, 120).await;
    check(&s, &records, "after the writes").await;
    s.svc.shutdown().await;

    let s = Sales::start(dir.path(), true, &config).await;
    check(&s, &records, "after a restart").await;
    random_writes(&s, &mut rng, &mut records, 200).await;
    check(&s, &records, "after more writes").await;
    let snapshots = s
        .svc
        .store()
        .stats
        .snapshots
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(snapshots > 0, "no snapshot was written");
    s.svc.shutdown().await;

    let s = Sales::start(dir.path(), true, &config).await;
    let loaded = s
        .svc
        .store()
        .stats
        .snapshot_records
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(loaded > 0, "the restart loaded no snapshot");
    check(&s, &records, "after a restart from a snapshot").await;
    s.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_added_to_a_store_is_built_from_its_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    let mut records = BTreeMap::new();
    let config = config(40);
    let s = Sales::start(dir.path(), false, &config).await;
    random_writes(&s, &mut rng, &mut records, 150).await;
    assert_eq!(
        s.call("GET", "/api/sales_metrics", Some("bo"), None)
            .await
            .status,
        404
    );
    s.svc.shutdown().await;

    let s = Sales::start(dir.path(), true, &config).await;
    check(&s, &records, "once added").await;
    random_writes(&s, &mut rng, &mut records, 30).await;
    check(&s, &records, "once added, after more writes").await;
    s.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_has_the_list_conventions_permissions_and_etags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Sales::start(dir.path(), true, &config(1000)).await;
    for (day, total, region) in [
        (2, 10.0, "north"),
        (2, 30.0, "south"),
        (3, 5.5, "north"),
        (4, 7.0, "east"),
    ] {
        s.ok(
            "POST",
            "/api/orders",
            Some(
                json!({"total": total, "status": "paid", "region": region, "qty": 2, "margin": 1.5,
                "placed_at": format!("2026-12-{day:02}T12:00:00Z")}),
            ),
        )
        .await;
    }
    let get = |path: &'static str, who: Option<&'static str>| s.call("GET", path, who, None);

    // Sorted by an aggregate, filtered on the key, paged.
    let a = get("/api/sales_metrics?sort=-daily_revenue", Some("bo")).await;
    let days: Vec<&str> = a.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["placed_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        days,
        ["2026-12-02", "2026-12-04", "2026-12-03"],
        "{}",
        a.json
    );
    let a = get(
        "/api/sales_metrics?sort=-placed_at&limit=1&offset=1",
        Some("bo"),
    )
    .await;
    assert_eq!(a.json["items"][0]["placed_at"], "2026-12-03", "{}", a.json);
    assert_eq!(
        (a.json["total"].clone(), a.json["limit"].clone()),
        (json!(3), json!(1))
    );
    let a = get("/api/sales_metrics?placed_at=2026-12-02", Some("bo")).await;
    assert_eq!(a.json["items"][0]["orders_count"], 2, "{}", a.json);
    assert_eq!(a.json["items"][0]["avg_order_value"], 20.0, "{}", a.json);
    let a = get("/api/sales_metrics?placed_at[gte]=2026-12-03", Some("bo")).await;
    assert_eq!(a.json["total"], 2, "{}", a.json);
    let a = get("/api/region_stats?region=north", Some("bo")).await;
    assert_eq!(
        a.json["items"][0]["units"], 4,
        "an int sum stays an integer: {}",
        a.json
    );
    assert_eq!(a.json["items"][0]["margin"], 3.0, "{}", a.json);

    // Bad queries are 400s; other methods 405.
    for bad in [
        "/api/sales_metrics?sort=total",
        "/api/sales_metrics?status=paid",
        "/api/sales_metrics?placed_at[around]=x",
        "/api/sales_metrics?limit=5000",
        "/api/sales_metrics?placed_at=",
        "/api/region_stats?region[gt]=",
    ] {
        let a = s.call("GET", bad, Some("bo"), None).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.json);
    }
    let a = s
        .call("POST", "/api/sales_metrics", Some("bo"), Some(json!({})))
        .await;
    assert_eq!((a.status, a.header("allow")), (405, Some("GET")));

    // Read permission: anonymous 401, a role not listed 403; a field the caller may not
    // see is left out of its aggregates, and sorting on it is refused.
    assert_eq!(get("/api/sales_metrics", None).await.status, 401);
    assert_eq!(get("/api/monthly_counts", Some("cy")).await.status, 403);
    let clerk = get("/api/region_stats", Some("cy")).await;
    assert_eq!(clerk.status, 200, "{}", clerk.json);
    assert!(
        clerk.json["items"][0].get("margin").is_none(),
        "{}",
        clerk.json
    );
    assert!(
        clerk.json["items"][0].get("units").is_some(),
        "{}",
        clerk.json
    );
    assert_eq!(
        get("/api/region_stats?sort=margin", Some("cy"))
            .await
            .status,
        403
    );

    // An ETag; If-None-Match is 304 until the source changes.
    let a = get("/api/sales_metrics", Some("bo")).await;
    let etag = a.header("etag").expect("an etag").to_string();
    let bearer = format!("Bearer {}", s.tokens["bo"]);
    let again = s
        .svc
        .send(
            "GET",
            "/api/sales_metrics",
            &[("authorization", &bearer), ("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(again.status, 304);
    s.ok(
        "POST",
        "/api/orders",
        Some(json!({"total": 1.0, "status": "pending", "region": "x"})),
    )
    .await;
    let after = s
        .svc
        .send(
            "GET",
            "/api/sales_metrics",
            &[("authorization", &bearer), ("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(after.status, 200);
    assert_ne!(after.header("etag"), Some(etag.as_str()));
    s.svc.shutdown().await;
}
