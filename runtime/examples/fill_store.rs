//! Fills a service's store with N records of one model, straight through the store's write
//! path (no HTTP), for the restart-time and memory benchmark of `bench/run.sh`.
//!
//! Run: `fill_store SPEC.json DATA_DIR MODEL COUNT 'TEMPLATE-JSON'` where the template's
//! string values may contain `{i}`, replaced by the record's number, and `{day}`, replaced
//! by a day of the month from it (`01` to `28`); a string that is exactly `"{i}"` becomes
//! the number itself.
//!
//! It stops as a crash would (without the last snapshot a shutdown writes), so the next
//! start replays the events since the store's last snapshot: the worst case of a restart.
//!
//! `FILL_IN_FLIGHT` (default 4096) is how many writes it keeps in flight, and so about how
//! many commands share a Raft entry; `FILL_IN_FLIGHT=64` fills in the batches a service
//! under 64 connections makes (its Raft log, which keeps the last entries by count, is
//! then of the size such a service keeps).

use std::sync::Arc;
use std::time::Instant;

use lithair_runtime::config::SyncMode;
use lithair_runtime::domain::event::Actor;
use lithair_runtime::raft::node::ClusterOptions;
use lithair_runtime::spec::CompiledSpec;
use lithair_runtime::store::{Command, Store, StoreOptions};
use serde_json::Value;

fn fill(template: &Value, i: u64) -> Value {
    match template {
        Value::String(s) if s == "{i}" => Value::from(i),
        Value::String(s) => Value::String(
            s.replace("{i}", &i.to_string())
                .replace("{day}", &format!("{:02}", i % 28 + 1)),
        ),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), fill(v, i))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, i)).collect()),
        other => other.clone(),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6,
        "usage: fill_store SPEC.json DATA_DIR MODEL COUNT TEMPLATE-JSON"
    );
    let spec = CompiledSpec::from_json(&std::fs::read_to_string(&args[1])?)?;
    let count: u64 = args[4].parse()?;
    let template: Value = serde_json::from_str(&args[5])?;
    let opts = StoreOptions::new(SyncMode::Never, ClusterOptions::single("127.0.0.1:0"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let in_flight: usize = match std::env::var("FILL_IN_FLIGHT") {
        Ok(n) => n.parse()?,
        Err(_) => 4096,
    };
    let started = Instant::now();
    runtime.block_on(async {
        let store = Arc::new(Store::open(std::path::Path::new(&args[2]), &spec.spec, opts).await?);
        let mut pending = tokio::task::JoinSet::new();
        for i in 0..count {
            let mut record = fill(&template, i);
            let now = "2026-01-01T00:00:00.000000Z";
            record["id"] = Value::String(uuid::Uuid::new_v4().to_string());
            record["created_at"] = Value::String(now.into());
            record["updated_at"] = Value::String(now.into());
            record["version"] = Value::from(1);
            let command = Command::Create {
                model: args[3].clone(),
                record: record.as_object().cloned().unwrap_or_default(),
            };
            let store = store.clone();
            pending.spawn(async move {
                store
                    .propose(
                        command,
                        Actor {
                            name: "fill".into(),
                            roles: vec![],
                            action: None,
                        },
                    )
                    .await
            });
            if pending.len() >= in_flight {
                if let Some(r) = pending.join_next().await {
                    r?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
                }
            }
        }
        while let Some(r) = pending.join_next().await {
            r?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        store.stop_as_a_crash_would().await;
        anyhow::Ok(())
    })?;
    println!(
        "{count} records written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
