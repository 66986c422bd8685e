//! The event store on a real data dir in a temp dir, written through a single-node Raft
//! group: durability across reopen, a gap-free log, group commit, decisions taken in the
//! state machine, and refusal of damaged data.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lithair_runtime::config::SyncMode;
use lithair_runtime::raft::node::ClusterOptions;
use lithair_runtime::spec::CompiledSpec;
use lithair_runtime::store::{Command, OpenError, Refused, Store, StoreOptions};
use serde_json::json;
use uuid::Uuid;

mod common;
use common::*;

fn opts(sync: SyncMode, snapshot_every: u64) -> StoreOptions {
    StoreOptions {
        flush_interval: Duration::from_millis(5),
        snapshot_every,
        ..StoreOptions::new(sync, ClusterOptions::single("127.0.0.1:0"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_reopen_with_a_gap_free_log() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut ids = Vec::new();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000))
            .await
            .unwrap();
        for i in 0..20 {
            let ev = store
                .propose(create(&format!("c{i}"), i), actor())
                .await
                .unwrap();
            ids.push(ev.aggregate_id);
        }
        let del = Command::Delete {
            model: "Item".into(),
            id: ids[3],
            expected_version: None,
        };
        store.propose(del, actor()).await.unwrap();
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000))
        .await
        .unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(store.get("Item", *id).is_some(), i != 3, "record {i}");
    }
    let events = store.events().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence_number).collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<_>>());
    assert_eq!(events[20].event_type, "ItemDeleted");
    // The tombstone keeps the record it removed.
    assert_eq!(
        events[20].event_data["old"]["id"].as_str(),
        Some(ids[3].to_string().as_str())
    );
    assert_eq!(store.stats.replayed_events.load(Ordering::Relaxed), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_flushes_and_unique_is_decided_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let store = Arc::new(
        Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000))
            .await
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        // Every pair of writers races for the same code: exactly one of each pair wins.
        tasks.push(tokio::spawn(async move {
            store
                .propose(create(&format!("k{}", i / 2), i), actor())
                .await
        }));
    }
    let mut won = 0;
    let mut lost = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(Refused::Unique { field, .. }) => {
                assert_eq!(field, "code");
                lost += 1;
            }
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((won, lost), (32, 32));
    let batches = store.stats.batches.load(Ordering::Relaxed);
    assert!(
        batches < 32,
        "64 concurrent writers should share flushes; got {batches} batches for 32 events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_checked_in_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Never, 1000))
        .await
        .unwrap();
    let ev = store.propose(create("v", 1), actor()).await.unwrap();
    let mut next = store.get("Item", ev.aggregate_id).unwrap().record();
    next.insert("n".into(), json!(2));
    next.insert("version".into(), json!(2));
    let replace = |expected| Command::Replace {
        model: "Item".into(),
        id: ev.aggregate_id,
        record: next.clone(),
        expected_version: expected,
        from_client: true,
    };
    assert!(store.propose(replace(1), actor()).await.is_ok());
    assert_eq!(
        store.propose(replace(1), actor()).await.unwrap_err(),
        Refused::VersionMismatch {
            current: 2,
            from_client: true
        }
    );
    let events = store.events().unwrap();
    assert_eq!(
        events[1].event_data["changes"]["n"],
        json!({"old": 1, "new": 2})
    );
}

/// Proposes a new version of record `id` with `n`.
async fn bump(store: &Store, id: Uuid, n: i64) {
    try_bump(store, id, n).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut ids = Vec::new();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 10))
            .await
            .unwrap();
        for i in 0..3 {
            let ev = store
                .propose(create(&format!("s{i}"), 0), actor())
                .await
                .unwrap();
            ids.push(ev.aggregate_id);
        }
        // 42 updates of 3 records: snapshots save most of the replay.
        for n in 1..=42 {
            bump(&store, ids[n as usize % 3], n).await;
        }
        for _ in 0..200 {
            if store.stats.snapshots.load(Ordering::Relaxed) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.stats.snapshots.load(Ordering::Relaxed) >= 3);
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 10))
        .await
        .unwrap();
    let replayed = store.stats.replayed_events.load(Ordering::Relaxed);
    let loaded = store.stats.snapshot_records.load(Ordering::Relaxed);
    assert_eq!(loaded, 3, "the snapshot holds the three records");
    assert!(replayed < 10, "replayed {replayed} of 45 events");
    assert_eq!(store.get("Item", ids[0]).unwrap().get("n"), Some(json!(42)));
    assert_eq!(store.get("Item", ids[1]).unwrap().get("n"), Some(json!(40)));
}

/// A model that only grows is snapshotted too (a compact record loads faster than its
/// event replays): a restart after a crash replays only the tail after the last
/// snapshot, one after a clean shutdown nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_only_grows_restarts_from_a_snapshot_and_a_short_tail() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 10))
            .await
            .unwrap();
        for i in 0..35 {
            store
                .propose(create(&format!("g{i}"), i), actor())
                .await
                .unwrap();
        }
        let stats = store.stats.clone();
        wait_for(|| stats.snapshots.load(Ordering::Relaxed) >= 3).await;
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 10))
        .await
        .unwrap();
    let loaded = store.stats.snapshot_records.load(Ordering::Relaxed);
    let replayed = store.stats.replayed_events.load(Ordering::Relaxed);
    assert_eq!(loaded, 30, "the last snapshot, at event 30");
    assert_eq!(replayed, 5);
    assert_eq!(store.read(|s| s.models["Item"].records.len()), 35);
    // A clean shutdown writes a last snapshot: the next start replays nothing.
    store.shutdown().await;
    drop(store);
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 10))
        .await
        .unwrap();
    assert_eq!(store.stats.snapshot_records.load(Ordering::Relaxed), 35);
    assert_eq!(store.stats.replayed_events.load(Ordering::Relaxed), 0);
    assert_eq!(store.events().unwrap().len(), 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_event_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000))
            .await
            .unwrap();
        for i in 0..5 {
            store
                .propose(create(&format!("d{i}"), i), actor())
                .await
                .unwrap();
        }
        close(store).await;
    }
    // A flipped byte in the middle of the event log.
    let segment = std::fs::read_dir(dir.path().join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    match Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000)).await {
        Err(OpenError::Corrupt { what, .. }) => assert!(what.contains("checksum"), "{what}"),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Nothing was cut off: the damaged file is left as it was.
    assert_eq!(std::fs::read(&segment).unwrap(), bytes);
}

/// A store of five items, closed.
async fn five_items(dir: &std::path::Path, spec: &CompiledSpec) {
    let store = Store::open(dir, &spec.spec, opts(SyncMode::Always, 1000))
        .await
        .unwrap();
    for i in 0..5 {
        store
            .propose(create(&format!("e{i}"), i), actor())
            .await
            .unwrap();
    }
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_past_the_applied_state_are_cut_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    five_items(dir.path(), &spec).await;
    // An event written just before a crash, whose applied state never was: no Raft entry
    // stands behind this one, so nothing applies it again.
    {
        use lithair_runtime::wal::Wal;
        let mut log = Wal::open(&dir.path().join("events")).unwrap();
        let last = log.read(5).unwrap().unwrap();
        let mut extra: serde_json::Value = serde_json::from_slice(&last).unwrap();
        extra["sequence_number"] = json!(6);
        log.append(&[(6, serde_json::to_vec(&extra).unwrap())])
            .unwrap();
        log.syncer().sync().unwrap();
    }
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000))
        .await
        .unwrap();
    let seqs: Vec<u64> = store
        .events()
        .unwrap()
        .iter()
        .map(|e| e.sequence_number)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(store.read(|s| s.models["Item"].records.len()), 5);
    // The next write takes sequence 6 for itself.
    let ev = store.propose(create("next", 9), actor()).await.unwrap();
    assert_eq!(ev.sequence_number, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_log_shorter_than_the_applied_state_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    five_items(dir.path(), &spec).await;
    std::fs::remove_dir_all(dir.path().join("events")).unwrap();
    match Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000)).await {
        Err(OpenError::Corrupt { what, .. }) => {
            assert!(what.contains("applied up to 5"), "{what}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    close(
        Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000))
            .await
            .unwrap(),
    )
    .await;
    {
        use lithair_runtime::wal::disk::OsDisk;
        use lithair_runtime::wal::slot::Slot;
        let node = Slot::new(Arc::new(OsDisk), dir.path(), "node");
        let mut info: serde_json::Value =
            serde_json::from_slice(&node.read().unwrap().unwrap()).unwrap();
        info["format"] = json!(99);
        node.write(&serde_json::to_vec(&info).unwrap()).unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000)).await,
        Err(OpenError::NewerFormat { found: 99, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_sled_era_is_refused_with_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("store")).unwrap();
    let err = Store::open(dir.path(), &spec().spec, opts(SyncMode::Always, 1000))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, OpenError::OlderFormat { .. }), "{err}");
    assert!(err.to_string().contains("empty data dir"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &spec().spec, opts(SyncMode::Always, 1000))
        .await
        .unwrap();
    let err = Store::open(dir.path(), &spec().spec, opts(SyncMode::Always, 1000))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("another process"), "{err}");
    close(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_records_get_the_defaults_of_fields_added_later() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path(), &spec().spec, opts(SyncMode::Always, 1000))
            .await
            .unwrap();
        let id = store
            .propose(create("old", 1), actor())
            .await
            .unwrap()
            .aggregate_id;
        close(store).await;
        id
    };
    let newer = SPEC.replace(
        r#"{"name": "n", "type": {"kind": "int"}}"#,
        r#"{"name": "n", "type": {"kind": "int"}}, {"name": "flag", "type": {"kind": "bool"}, "default": true}"#,
    );
    let newer = CompiledSpec::from_json(&newer).unwrap();
    let store = Store::open(dir.path(), &newer.spec, opts(SyncMode::Always, 1000))
        .await
        .unwrap();
    let r = store.get("Item", id).unwrap();
    assert_eq!(r.get("flag"), Some(json!(true)));
    assert_eq!(r.get("n"), Some(json!(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sync_flushes_in_the_background_and_reopens_intact() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut ids = Vec::new();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Periodic, 1000))
            .await
            .unwrap();
        for i in 0..10 {
            ids.push(
                store
                    .propose(create(&format!("p{i}"), i), actor())
                    .await
                    .unwrap()
                    .aggregate_id,
            );
        }
        // Longer than flush_interval (5 ms): the flusher has run.
        tokio::time::sleep(Duration::from_millis(50)).await;
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Periodic, 1000))
        .await
        .unwrap();
    assert!(ids.iter().all(|id| store.get("Item", *id).is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_snapshot_every_overrides_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let spec = CompiledSpec::from_json(&SPEC.replace(
        r#""path": "/api/items","#,
        r#""path": "/api/items", "snapshot_every": 4,"#,
    ))
    .unwrap();
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 1000))
        .await
        .unwrap();
    let id = store
        .propose(create("o", 0), actor())
        .await
        .unwrap()
        .aggregate_id;
    for n in 1..=8 {
        bump(&store, id, n).await;
    }
    // Snapshots are written in the background: wait for them, then check none more come.
    for _ in 0..200 {
        if store.stats.snapshots.load(Ordering::Relaxed) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store.stats.snapshots.load(Ordering::Relaxed),
        2,
        "every 4 events of Item, not every 1000"
    );
}

/// A model with every field type, unique and indexed fields, and a ref.
const ALL_TYPES: &str = r#"{
  "service": {"name": "t"},
  "roles": [],
  "models": [
    {"name": "Tag", "snake": "tag", "path": "/api/tags",
     "operations": ["list", "get", "create", "update", "patch", "delete"],
     "permissions": {"read": [], "create": [], "update": [], "delete": []},
     "fields": [{"name": "label", "type": {"kind": "string"}}]},
    {"name": "Thing", "snake": "thing", "path": "/api/things",
     "operations": ["list", "get", "create", "update", "patch", "delete"],
     "permissions": {"read": [], "create": [], "update": [], "delete": []},
     "fields": [
       {"name": "s", "type": {"kind": "string"}, "unique": true},
       {"name": "t", "type": {"kind": "text"}, "optional": true},
       {"name": "b", "type": {"kind": "bool"}, "optional": true, "indexed": true},
       {"name": "i", "type": {"kind": "int"}, "indexed": true},
       {"name": "f", "type": {"kind": "float"}, "optional": true},
       {"name": "u", "type": {"kind": "uuid"}, "optional": true},
       {"name": "d", "type": {"kind": "date"}, "optional": true},
       {"name": "dt", "type": {"kind": "datetime"}, "optional": true},
       {"name": "j", "type": {"kind": "json"}, "optional": true},
       {"name": "e", "type": {"kind": "enum", "values": ["a", "b", "c"]}, "indexed": true},
       {"name": "l", "type": {"kind": "list", "item": {"kind": "string"}}, "optional": true},
       {"name": "r", "type": {"kind": "ref", "model": "Tag"}, "optional": true}
     ]}
  ]
}"#;

/// A random `Thing` (fields left out at random), with id `id` at `version`.
fn random_thing(
    rng: &mut impl rand::Rng,
    id: Uuid,
    version: u64,
    tags: &[Uuid],
) -> serde_json::Map<String, serde_json::Value> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let e = ["a", "b", "c"][rng.gen_range(0..3)];
    let mut r = json!({
        "id": id.to_string(),
        "s": format!("s-{}", Uuid::new_v4()),
        "i": rng.gen_range(-3..4),
        "e": e,
        "created_at": now, "updated_at": now, "version": version,
    });
    let optional = [
        ("t", json!("a longer \"text\"\nwith é and \\ in it")),
        ("b", json!(rng.gen_bool(0.5))),
        ("f", json!(rng.gen_range(-1e6..1e6))),
        ("u", json!(Uuid::new_v4().to_string())),
        ("d", json!("2024-02-29")),
        ("dt", json!("2024-09-13T10:00:00+02:00")),
        (
            "j",
            json!({"nested": [1, 2.5, null, {"k": "v"}], "n": u64::MAX}),
        ),
        ("l", json!(["x", "y"])),
        ("r", json!(tags[rng.gen_range(0..tags.len())].to_string())),
    ];
    for (k, v) in optional {
        match rng.gen_range(0..3) {
            0 => {}
            1 => r[k] = json!(null),
            _ => r[k] = v,
        }
    }
    r.as_object().unwrap().clone()
}

/// One model's state in a form that compares: name, records, ordered indexes (as text).
type ModelDump = (
    String,
    Vec<serde_json::Map<String, serde_json::Value>>,
    String,
);

/// The state a store serves, model by model.
fn state_of(store: &Store) -> Vec<ModelDump> {
    store.read(|s| {
        let mut models: Vec<_> = s
            .models
            .iter()
            .map(|(name, ms)| {
                let records = ms.records.values().map(|r| r.record()).collect();
                let indexes: Vec<_> = ms
                    .indexes
                    .iter()
                    .map(|i| format!("{}: {:?}", i.field, i.entries))
                    .collect();
                (name.clone(), records, indexes.join("\n"))
            })
            .collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        models
    })
}

/// Restart from the compact snapshot plus the tail of events equals the state before:
/// every field type, updates and deletes, written by four concurrent writers while
/// snapshots are taken (each from a frozen view of the state between two applies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_a_snapshot_written_during_writes_equals_the_state_before() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let spec = CompiledSpec::from_json(ALL_TYPES).unwrap();
    let before;
    let events;
    {
        let store = Arc::new(
            Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 16))
                .await
                .unwrap(),
        );
        let mut tags = Vec::new();
        for i in 0..3 {
            let id = Uuid::new_v4();
            let r = json!({"id": id.to_string(), "label": format!("tag {i}"), "version": 1});
            let create = Command::Create {
                model: "Tag".into(),
                record: r.as_object().unwrap().clone(),
            };
            store.propose(create, actor()).await.unwrap();
            tags.push(id);
        }
        let tags = Arc::new(tags);
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let (store, tags) = (store.clone(), tags.clone());
                tokio::spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(w);
                    let mut mine: Vec<Uuid> = Vec::new();
                    for _ in 0..120 {
                        let roll = rng.gen_range(0..10);
                        let command = if mine.is_empty() || roll < 5 {
                            let id = Uuid::new_v4();
                            mine.push(id);
                            Command::Create {
                                model: "Thing".into(),
                                record: random_thing(&mut rng, id, 1, &tags),
                            }
                        } else if roll < 8 {
                            let id = mine[rng.gen_range(0..mine.len())];
                            let version = store.get("Thing", id).unwrap().version();
                            let mut next = random_thing(&mut rng, id, version + 1, &tags);
                            let old = store.get("Thing", id).unwrap();
                            next.insert("created_at".into(), old.get("created_at").unwrap());
                            Command::Replace {
                                model: "Thing".into(),
                                id,
                                record: next,
                                expected_version: version,
                                from_client: true,
                            }
                        } else {
                            let id = mine.swap_remove(rng.gen_range(0..mine.len()));
                            Command::Delete {
                                model: "Thing".into(),
                                id,
                                expected_version: None,
                            }
                        };
                        store.propose(command, actor()).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let stats = store.stats.clone();
        wait_for(|| stats.snapshots.load(Ordering::Relaxed) >= 3).await;
        before = state_of(&store);
        events = store.stats.events.load(Ordering::Relaxed);
        let store = Arc::into_inner(store).unwrap();
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(SyncMode::Always, 16))
        .await
        .unwrap();
    let loaded = store.stats.snapshot_records.load(Ordering::Relaxed);
    let replayed = store.stats.replayed_events.load(Ordering::Relaxed);
    assert!(loaded > 0, "the restart loaded a snapshot");
    assert!(replayed < events, "replayed {replayed} of {events} events");
    let after = state_of(&store);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0);
        assert_eq!(b.1.len(), a.1.len(), "records of {}", b.0);
        for (rb, ra) in b.1.iter().zip(&a.1) {
            assert_eq!(rb, ra, "a record of {}", b.0);
        }
        assert_eq!(b.2, a.2, "ordered indexes of {}", b.0);
    }
    assert!(after[1].1.len() > 100, "{} things", after[1].1.len());
}
