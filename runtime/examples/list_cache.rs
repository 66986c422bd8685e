//! The cost of a repeated list of 100 records with and without the list-page cache of a
//! `cache` model (`bash bench/run.sh cache`): two models with the same fields and the
//! same 1,000 records, one with `cache: { ttl }`; the same list asked of each through
//! the whole pipeline in process (no socket), one request at a time, in alternating
//! rounds.
//!
//! Run: `cargo run --release -p lithair-runtime --example list_cache [-- REQUESTS]`

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use lithair_runtime::testing::InProcess;
use lithair_runtime::Service;
use serde_json::json;

const SPEC: &str = r#"{
  "service": {"name": "bench"}, "roles": [],
  "models": [
    {"name": "Plain", "snake": "plain", "path": "/api/plains",
     "operations": ["list", "get", "create"],
     "permissions": {"read": ["public"], "create": ["public"], "update": [], "delete": []},
     "fields": [{"name": "name", "type": {"kind": "string"}, "indexed": true},
                {"name": "n", "type": {"kind": "int"}}]},
    {"name": "Cached", "snake": "cached", "path": "/api/cacheds",
     "operations": ["list", "get", "create"],
     "permissions": {"read": ["public"], "create": ["public"], "update": [], "delete": []},
     "cache": {"ttl": 60},
     "fields": [{"name": "name", "type": {"kind": "string"}, "indexed": true},
                {"name": "n", "type": {"kind": "int"}}]}
  ]
}"#;

const RECORDS: usize = 1000;
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let service = Service::from_spec_json(SPEC)?;
        let svc = InProcess::start(service, "[storage]\nsync = \"never\"\n", dir.path()).await?;
        for path in ["/api/plains", "/api/cacheds"] {
            for i in 0..RECORDS {
                let body = json!({"name": format!("item {:04}", (i * 7919) % RECORDS), "n": i});
                let a = svc.send("POST", path, &[], Some(&body)).await;
                anyhow::ensure!(a.status == 201, "create: {}", a.json);
            }
        }
        let query = "?limit=100&sort=-n";
        let mut ratios = Vec::new();
        for round in 1..=ROUNDS {
            let mut micros = Vec::new();
            for path in ["/api/plains", "/api/cacheds"] {
                let url = format!("{path}{query}");
                let first = svc.send("GET", &url, &[], None).await;
                anyhow::ensure!(first.status == 200 && first.json["items"].as_array().map(Vec::len) == Some(100));
                let started = Instant::now();
                for _ in 0..requests {
                    // The answer is taken as the server made it: parsing its JSON here
                    // would cost more than the lookup being measured.
                    let req = hyper::Request::get(url.as_str()).body(Full::new(Bytes::new()))?;
                    let answer = svc.call(req).await;
                    anyhow::ensure!(answer.status() == 200);
                    let body = answer.into_body().collect().await?.to_bytes();
                    anyhow::ensure!(body.len() > 1000);
                }
                micros.push(started.elapsed().as_secs_f64() * 1e6 / requests as f64);
            }
            let ratio = micros[0] / micros[1];
            println!(
                "round {round}: list of 100 computed {:.1} µs, from the page cache {:.1} µs: {ratio:.1}x cheaper",
                micros[0], micros[1]
            );
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "median over {ROUNDS} rounds of {requests} requests: {:.1}x cheaper",
            ratios[ROUNDS / 2]
        );
        svc.shutdown().await;
        Ok(())
    })
}
