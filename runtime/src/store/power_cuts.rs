//! Power cuts of the whole store, on the simulated disk of `wal::disk::sim` (which keeps
//! only what was synced): a running store cut at random points across appends, segment
//! rotations, checkpoints, snapshots and purges, and a follower cut at every point of a
//! snapshot install. After each cut the store must open again and hold every write it
//! acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use super::{Store, StoreOptions};
use crate::config::{ClusterConfig, SyncMode};
use crate::domain::decide::Stamped;
use crate::domain::event::{Actor, Record};
use crate::domain::{Command, Stats};
use crate::raft::data_dir::DataDir;
use crate::raft::node::ClusterOptions;
use crate::raft::state_machine::StateMachine;
use crate::raft::Loaded;
use crate::raft::{Batch, TypeConfig};
use crate::spec::{CompiledSpec, ServiceSpec};
use crate::wal::disk::sim::SimDisk;
use crate::wal::disk::Disk;

const SPEC: &str = r#"{
  "service": {"name": "t"},
  "roles": [],
  "models": [{
    "name": "Item", "snake": "item", "path": "/api/items",
    "operations": ["list", "get", "create", "update", "patch", "delete"],
    "permissions": {"read": [], "create": [], "update": [], "delete": []},
    "fields": [
      {"name": "code", "type": {"kind": "string"}, "unique": true},
      {"name": "n", "type": {"kind": "int"}}
    ]
  }]
}"#;

fn spec() -> ServiceSpec {
    CompiledSpec::from_json(SPEC).expect("spec").spec
}

fn actor() -> Actor {
    Actor {
        name: "test".into(),
        roles: vec![],
        action: None,
    }
}

fn record(id: Uuid, code: &str, n: i64, version: u64) -> Record {
    let v = json!({"id": id.to_string(), "code": code, "n": n,
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z", "version": version});
    v.as_object().cloned().unwrap_or_default()
}

const DATA: &str = "/data";

/// Opens a data dir on `disk` with small log segments (so that purges remove some).
fn data_dir(disk: &Arc<SimDisk>) -> Arc<DataDir> {
    let d: Arc<dyn crate::wal::disk::Disk> = disk.clone();
    Arc::new(DataDir::open_on(d, Path::new(DATA), 2048, None).expect("the data dir opens"))
}

/// Store snapshots every 6 events, Raft snapshots (and purges) every 16 entries.
fn options() -> StoreOptions {
    let mut node = ClusterOptions::single("127.0.0.1:0");
    node.tuning = ClusterConfig {
        snapshot_every: 16,
        keep_after_snapshot: 4,
        ..ClusterConfig::default()
    };
    StoreOptions {
        snapshot_every: 6,
        write_timeout: Duration::from_secs(5),
        ..StoreOptions::new(SyncMode::Always, node)
    }
}

/// What a client knows of a record: the value a write was acknowledged with, and the
/// value of a write whose answer was lost in the cut (it may or may not be there).
#[derive(Clone, Copy, Debug)]
struct Known {
    acked: Option<(i64, u64)>,
    maybe: Option<(i64, u64)>,
}

#[test]
fn power_cuts_of_a_running_store_lose_no_acknowledged_write() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let spec = spec();
    // What the cuts reached, so that the test shows it covers them.
    let (mut snapshots, mut purged, mut cut_in_flight) = (0, 0, 0);
    for seed in 0..12u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let disk = Arc::new(SimDisk::default());
        let mut known: BTreeMap<Uuid, Known> = BTreeMap::new();
        for round in 0..4 {
            let store = rt
                .block_on(Store::open_in(data_dir(&disk), &spec, options()))
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: no start: {e}"));
            // Every acknowledged write is there (and a lost answer may be).
            for (id, k) in known.iter_mut() {
                let now = store
                    .get("Item", *id)
                    .and_then(|r| r.get("n").and_then(|n| n.as_i64()))
                    .map(|n| (n, store.get("Item", *id).unwrap().version()));
                let ok = now == k.acked || (k.maybe.is_some() && now == k.maybe);
                assert!(
                    ok,
                    "seed {seed} round {round}: record {id} is {now:?}, acknowledged {:?}",
                    k.acked
                );
                k.acked = now;
                k.maybe = None;
            }
            let events = store.events().expect("events");
            let seqs: Vec<u64> = events.iter().map(|e| e.sequence_number).collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as u64).collect::<Vec<_>>(),
                "seed {seed} round {round}: the event log has a gap"
            );
            disk.cut_power_after(rng.gen_range(0..600));
            let ids: Vec<Uuid> = known.keys().copied().collect();
            for op in 0..300 {
                let update = !ids.is_empty() && rng.gen_bool(0.6);
                let (id, n, version, command) = if update {
                    let id = ids[rng.gen_range(0..ids.len())];
                    let Some(old) = store.get("Item", id) else {
                        continue;
                    };
                    let version = old.version();
                    let n = rng.gen_range(0..1_000_000);
                    let code = old.get("code");
                    let code = code.as_ref().and_then(|c| c.as_str()).unwrap_or("");
                    let command = Command::Replace {
                        model: "Item".into(),
                        id,
                        record: record(id, code, n, version + 1),
                        expected_version: version,
                        from_client: true,
                    };
                    (id, n, version + 1, command)
                } else {
                    let id = Uuid::new_v4();
                    let code = format!("s{seed}-r{round}-{op}");
                    let command = Command::Create {
                        model: "Item".into(),
                        record: record(id, &code, op, 1),
                    };
                    (id, op, 1, command)
                };
                let answer = rt.block_on(store.propose(command, actor()));
                let k = known.entry(id).or_insert(Known {
                    acked: None,
                    maybe: None,
                });
                match answer {
                    Ok(_) => k.acked = Some((n, version)),
                    Err(_) => {
                        k.maybe = Some((n, version));
                        break;
                    }
                }
            }
            cut_in_flight += usize::from(disk.is_off());
            snapshots += store
                .stats
                .snapshots
                .load(std::sync::atomic::Ordering::Relaxed);
            let segments = disk
                .list(&Path::new(DATA).join("raft-log"))
                .unwrap_or_default();
            purged += usize::from(
                !segments
                    .iter()
                    .any(|s| s.starts_with("00000000000000000001")),
            );
            // The power goes now if it has not yet; the process ends.
            disk.cut_power_after(0);
            rt.block_on(store.cluster().shutdown());
            drop(store);
            disk.cut_power(|unsynced| rng.gen_range(0..=unsynced));
            disk.power_on();
        }
    }
    assert!(
        cut_in_flight >= 24,
        "only {cut_in_flight} of 48 cuts came amid writes"
    );
    assert!(snapshots > 0, "no snapshot was written");
    assert!(purged > 0, "the Raft log was never purged");
}

/// The entries of a log that creates three records and then changes them in turn.
fn entries(count: u64) -> Vec<Entry<TypeConfig>> {
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    (1..=count)
        .map(|i| {
            let slot = (i as usize - 1) % 3;
            let round = (i - 1) / 3;
            let command = if round == 0 {
                Command::Create {
                    model: "Item".into(),
                    record: record(ids[slot], &format!("c{slot}"), 0, 1),
                }
            } else {
                Command::Replace {
                    model: "Item".into(),
                    id: ids[slot],
                    record: record(ids[slot], &format!("c{slot}"), i as i64, round + 1),
                    expected_version: round,
                    from_client: true,
                }
            };
            let stamped = Stamped {
                command,
                actor: actor(),
                event_id: Uuid::new_v4(),
                at: "2024-01-01T00:00:00Z".into(),
                node_id: "1".into(),
                key: None,
                trace: None,
            };
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Normal(Batch::new(vec![stamped])),
            }
        })
        .collect()
}

/// A state machine on the data dir of `disk`, and the holder its threads keep.
fn state_machine(disk: &Arc<SimDisk>, spec: &ServiceSpec) -> (StateMachine, Arc<()>) {
    let dir = data_dir(disk);
    let stats = Arc::new(Stats::default());
    let mut events = super::open_events(&dir).expect("event log");
    let recovered = super::load_state(&dir, &mut events, spec, &stats)
        .unwrap_or_else(|e| panic!("the state machine does not start: {e}"));
    let loaded = Loaded {
        recovered,
        dir,
        events: Arc::new(std::sync::Mutex::new(events)),
        stats,
        snapshot_every: super::snapshot_periods(spec, 4),
        health: Arc::default(),
        feed: Arc::new(super::feed::Feed::new(spec)),
    };
    let holder = Arc::new(());
    let sm = StateMachine::new(spec, loaded, holder.clone()).expect("state machine");
    (sm, holder)
}

/// Stops a state machine and waits until its checkpoint thread is done.
fn stop(sm: StateMachine, holder: Arc<()>) {
    drop(sm);
    for _ in 0..500 {
        if Arc::strong_count(&holder) == 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the checkpoint thread does not end");
}

/// Every record's `n`, by id.
fn values(sm: &StateMachine) -> BTreeMap<Uuid, Option<serde_json::Value>> {
    let state = sm.state();
    let state = state.read().unwrap_or_else(|p| p.into_inner());
    state.models["Item"]
        .records
        .iter()
        .map(|(id, r)| (*id, r.get("n")))
        .collect()
}

#[test]
fn power_cuts_during_a_snapshot_install_leave_the_old_state_or_the_new_one() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let spec = spec();
    let log = entries(30);
    // The leader: all 30 entries, and its snapshot.
    let leader_disk = Arc::new(SimDisk::default());
    let (mut leader, leader_holder) = state_machine(&leader_disk, &spec);
    rt.block_on(leader.apply(log.clone()))
        .expect("leader applies");
    let new_values = values(&leader);
    let snapshot = rt.block_on(async {
        let mut builder = leader.get_snapshot_builder().await;
        builder.build_snapshot().await.expect("build");
        leader
            .get_current_snapshot()
            .await
            .expect("snapshot")
            .expect("a snapshot")
    });
    stop(leader, leader_holder);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut completed = false;
    let mut cut = 0;
    while !completed {
        // A follower that applied the first 10 entries (with a snapshot of its own).
        let disk = Arc::new(SimDisk::default());
        let (mut follower, holder) = state_machine(&disk, &spec);
        rt.block_on(follower.apply(log[..10].to_vec()))
            .expect("follower applies");
        let old_values = values(&follower);
        let (done, recorded) = tokio::sync::oneshot::channel();
        follower
            .checkpoints()
            .send(crate::raft::Checkpoint::Barrier(done))
            .expect("checkpoint thread");
        assert_eq!(rt.block_on(recorded), Ok(true));
        disk.cut_power_after(cut);
        let data = Box::new(std::io::Cursor::new(snapshot.snapshot.get_ref().clone()));
        let installed = rt
            .block_on(follower.install_snapshot(&snapshot.meta, data))
            .is_ok();
        // Let the checkpoint thread record the new applied state, if it still can.
        let (done, recorded) = tokio::sync::oneshot::channel();
        let _ = follower
            .checkpoints()
            .send(crate::raft::Checkpoint::Barrier(done));
        let _ = rt.block_on(recorded);
        completed = installed && !disk.is_off();
        disk.cut_power_after(0);
        stop(follower, holder);
        disk.cut_power(|unsynced| rng.gen_range(0..=unsynced));
        disk.power_on();
        let (again, holder) = state_machine(&disk, &spec);
        let now = values(&again);
        assert!(
            now == old_values || now == new_values,
            "cut after {cut} changes: a state that is neither the old one nor the new one"
        );
        if installed {
            assert_eq!(
                now, new_values,
                "cut after {cut}: the install was acknowledged"
            );
        }
        // The event log continues where the state stands.
        let events = again.events();
        let events = super::lock_events(&events);
        let last_seq = again.state().read().map(|s| s.last_seq).unwrap_or(0);
        assert!(
            events.last_index().unwrap_or(0) >= last_seq.min(10) || events.start() == last_seq + 1,
            "cut after {cut}: the event log ends at {:?} for a state at {last_seq}",
            events.last_index()
        );
        drop(events);
        stop(again, holder);
        cut += 1;
        assert!(cut < 200, "the install never completes");
    }
}
