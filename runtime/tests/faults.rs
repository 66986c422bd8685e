//! Storage faults injected through failpoints (the `fail` crate) in the real I/O paths of
//! a real store in a temp dir: a failed write or sync of the Raft log or the event log, a
//! failed checkpoint, snapshot or purge. Whatever fails, a write that was acknowledged is
//! there after a restart, a failed sync is never retried, and a node that hit a fault
//! acknowledges nothing more until it is restarted.
//!
//! Failpoints are process-wide: every test holds a `FailScenario`, which runs them one
//! at a time.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lithair_runtime::config::SyncMode;
use lithair_runtime::raft::node::ClusterOptions;
use lithair_runtime::store::{NotReady, Refused, Store, StoreOptions};
use serde_json::json;
use uuid::Uuid;

mod common;
use common::*;

fn opts(snapshot_every: u64) -> StoreOptions {
    let mut node = ClusterOptions::single("127.0.0.1:0");
    // Raft snapshots (and so purges of the log) every 40 entries.
    node.tuning.snapshot_every = 40;
    node.tuning.keep_after_snapshot = 0;
    StoreOptions {
        snapshot_every,
        write_timeout: Duration::from_secs(5),
        ..StoreOptions::new(SyncMode::Always, node)
    }
}

/// Sets record `id` to `n` (a new version).
async fn bump(store: &Store, id: Uuid, n: i64) -> Result<(), Refused> {
    try_bump(store, id, n).await
}

/// Defect (of the incremental snapshots this store had): a snapshot that failed dropped
/// its records from the changed set, so the next one moved past records it never held,
/// and a restart lost them. A snapshot now holds every record and replaces the previous
/// one whole: a failed one leaves the previous one, and the next one holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_failed_is_made_good_by_the_next_one() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut ids = Vec::new();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(10)).await.unwrap();
        for i in 0..3 {
            let ev = store.propose(create(&format!("s{i}"), 0), actor()).await;
            ids.push(ev.unwrap().aggregate_id);
        }
        // The first snapshot (at event 10: records 0 and 1 changed, after their
        // creation) fails.
        fail::cfg("snapshot-write", "1*return").unwrap();
        for n in 1..=7 {
            bump(&store, ids[(n % 2) as usize], n).await.unwrap();
        }
        // The next one (at event 20) comes after changes of record 2 only; it must hold
        // records 0 and 1 too.
        for n in 8..=17 {
            bump(&store, ids[2], n).await.unwrap();
        }
        let stats = store.stats.clone();
        wait_for(|| stats.snapshots.load(Ordering::Relaxed) >= 1).await;
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(10)).await.unwrap();
    assert!(store.stats.snapshot_records.load(Ordering::Relaxed) >= 3);
    let n = |i: usize| store.get("Item", ids[i]).map(|r| r.get("n"));
    assert_eq!(n(0), Some(Some(json!(6))));
    assert_eq!(n(1), Some(Some(json!(7))));
    assert_eq!(n(2), Some(Some(json!(17))));
    assert_eq!(store.stats.replayed_events.load(Ordering::Relaxed), 0);
    scenario.teardown();
}

/// A failed `fdatasync` of the Raft log is never retried: the node stops acknowledging
/// writes for good, says why in `ready()`, and a restart finds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_of_the_raft_log_stops_writes_until_restart() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut acked = Vec::new();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(1000))
            .await
            .unwrap();
        assert_eq!(store.ready(), Ok(()));
        for i in 0..5 {
            acked.push(
                store
                    .propose(create(&format!("a{i}"), i), actor())
                    .await
                    .unwrap(),
            );
        }
        fail::cfg("raft-log-sync", "1*return").unwrap();
        match store.propose(create("lost", 0), actor()).await {
            Err(Refused::Fault(f)) => assert!(f.what.contains("Raft log"), "{f:?}"),
            other => panic!("expected a fault, got {other:?}"),
        }
        // The failpoint fired once; the disk would work again, but the node does not
        // trust it until it is restarted.
        for i in 0..3 {
            match store
                .propose(create(&format!("after{i}"), i), actor())
                .await
            {
                Err(Refused::Fault(_)) => {}
                other => panic!("a write after the fault: {other:?}"),
            }
        }
        let reason = store.ready().unwrap_err();
        assert!(matches!(reason, NotReady::Fault(_)), "{reason}");
        // Reads go on.
        assert!(store.get("Item", acked[0].aggregate_id).is_some());
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(1000))
        .await
        .unwrap();
    for ev in &acked {
        assert!(store.get("Item", ev.aggregate_id).is_some());
    }
    store.propose(create("fresh", 1), actor()).await.unwrap();
    assert_eq!(store.ready(), Ok(()));
    scenario.teardown();
}

/// The event log is synced by the checkpoint thread: a failed sync there records no
/// applied state, allows no purge, and stops the node's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_of_the_event_log_stops_writes_until_restart() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let mut acked = Vec::new();
    {
        let store = Store::open(dir.path(), &spec.spec, opts(1000))
            .await
            .unwrap();
        fail::cfg("events-sync", "1*return").unwrap();
        let mut faulted = false;
        for i in 0..200 {
            match store.propose(create(&format!("e{i}"), i), actor()).await {
                Ok(ev) => acked.push(ev),
                Err(Refused::Fault(f)) => {
                    assert!(f.what.contains("event log"), "{f:?}");
                    faulted = true;
                    break;
                }
                Err(other) => panic!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(faulted, "writes went on after the event log failed to sync");
        assert!(store.ready().is_err());
        close(store).await;
    }
    let store = Store::open(dir.path(), &spec.spec, opts(1000))
        .await
        .unwrap();
    for ev in &acked {
        assert!(store.get("Item", ev.aggregate_id).is_some(), "{ev:?}");
    }
    let seqs: Vec<u64> = store
        .events()
        .unwrap()
        .iter()
        .map(|e| e.sequence_number)
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    scenario.teardown();
}

/// Every I/O failpoint, under concurrent write load: no acknowledged write is lost after
/// a restart, and the store opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_io_failpoint_under_load_loses_no_acknowledged_write() {
    let scenario = fail::FailScenario::setup();
    let spec = spec();
    for point in [
        "raft-log-write",
        "raft-log-sync",
        "events-write",
        "events-sync",
        "applied-write",
        "applied-sync",
        "snapshot-write",
        "snapshot-sync",
        "raft-state-write",
        "raft-state-sync",
        "raft-log-remove",
    ] {
        // Snapshots and the removal of purged segments may fail without harm (a longer
        // replay, a longer log); every other failure stops the node's writes.
        let fatal = !matches!(
            point,
            "snapshot-write" | "snapshot-sync" | "raft-log-remove"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut acked: BTreeMap<Uuid, i64> = BTreeMap::new();
        {
            let store = Arc::new(Store::open(dir.path(), &spec.spec, opts(10)).await.unwrap());
            let mut seeded = Vec::new();
            for i in 0..4 {
                let ev = store.propose(create(&format!("{point}-seed{i}"), 0), actor());
                seeded.push(ev.await.unwrap().aggregate_id);
            }
            for id in &seeded {
                acked.insert(*id, 0);
            }
            let mut writers = tokio::task::JoinSet::new();
            for w in 0..8i64 {
                let store = store.clone();
                let target = seeded[(w % 4) as usize];
                writers.spawn(async move {
                    let mut mine = Vec::new();
                    let mut last_bump = None;
                    for i in 0..60i64 {
                        if w % 2 == 0 {
                            match store
                                .propose(create(&format!("w{w}-{i}"), i), actor())
                                .await
                            {
                                Ok(ev) => mine.push((ev.aggregate_id, i)),
                                Err(_) => break,
                            }
                        } else {
                            // Updates make the snapshots worth writing.
                            match bump(&store, target, i).await {
                                Ok(()) => last_bump = Some((target, i)),
                                Err(Refused::VersionMismatch { .. }) => {}
                                Err(_) => break,
                            }
                        }
                    }
                    (mine, last_bump)
                });
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            fail::cfg(point, "return").unwrap();
            let mut bumped: BTreeMap<Uuid, ()> = BTreeMap::new();
            while let Some(done) = writers.join_next().await {
                let (mine, last) = done.unwrap();
                acked.extend(mine);
                if let Some((id, _)) = last {
                    bumped.insert(id, ());
                }
            }
            fail::remove(point);
            assert_eq!(
                store.health().fault().is_some(),
                fatal,
                "{point}: {:?}",
                store.health().fault()
            );
            // Updated records: their value is whatever was last acknowledged by any
            // writer; only their presence is checked below.
            for id in bumped.keys() {
                acked.remove(id);
            }
            close(Arc::into_inner(store).expect("the only handle")).await;
        }
        let store = Store::open(dir.path(), &spec.spec, opts(10))
            .await
            .unwrap_or_else(|e| panic!("{point}: the store does not open again: {e}"));
        for (id, n) in &acked {
            let r = store
                .get("Item", *id)
                .unwrap_or_else(|| panic!("{point}: acknowledged record {id} is missing"));
            assert_eq!(r.get("n"), Some(json!(n)), "{point}: record {id}");
        }
        store
            .propose(create(&format!("{point}-after"), 0), actor())
            .await
            .unwrap_or_else(|e| panic!("{point}: no write after the restart: {e:?}"));
        close(store).await;
    }
    scenario.teardown();
}

/// An `Idempotency-Key` sent again is answered with the first write, across a restart
/// too; the same key with another request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_a_retry_with_the_first_write() {
    use lithair_runtime::domain::decide::IdempotencyKey;
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let key = IdempotencyKey::new("alice", "/api/items", "k-1", b"{\"code\":\"x\"}");
    let first = {
        let store = Store::open(dir.path(), &spec.spec, opts(1000))
            .await
            .unwrap();
        let first = store
            .propose_once(create("x", 1), actor(), Some(key.clone()))
            .await
            .unwrap();
        // A retry makes a new record id and event id; the key makes it the same write.
        let again = store
            .propose_once(create("x", 1), actor(), Some(key.clone()))
            .await
            .unwrap();
        assert_eq!(again.aggregate_id, first.aggregate_id);
        assert_eq!(again.sequence_number, first.sequence_number);
        close(store).await;
        first
    };
    let store = Store::open(dir.path(), &spec.spec, opts(1000))
        .await
        .unwrap();
    let again = store
        .propose_once(create("x", 1), actor(), Some(key.clone()))
        .await
        .unwrap();
    assert_eq!(again.aggregate_id, first.aggregate_id);
    let other = IdempotencyKey::new("alice", "/api/items", "k-1", b"{\"code\":\"y\"}");
    assert_eq!(
        store
            .propose_once(create("y", 1), actor(), Some(other))
            .await
            .unwrap_err(),
        Refused::KeyReused
    );
    // Another principal's key of the same text is another key.
    let bob = IdempotencyKey::new("bob", "/api/items", "k-1", b"{\"code\":\"x\"}");
    let ev = store.propose_once(create("z", 1), actor(), Some(bob)).await;
    assert_ne!(ev.unwrap().aggregate_id, first.aggregate_id);
    assert_eq!(store.read(|s| s.models["Item"].records.len()), 2);
    scenario.teardown();
}

/// A full queue of waiting writes refuses at once instead of growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_refuses_at_once() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let store = Arc::new(
        Store::open(
            dir.path(),
            &spec.spec,
            StoreOptions {
                max_pending_writes: 4,
                ..opts(1000)
            },
        )
        .await
        .unwrap(),
    );
    // A slow disk: every sync of the Raft log takes 300 ms.
    fail::cfg("raft-log-sync", "sleep(300)").unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        writers.spawn(async move { store.propose(create(&format!("q{i}"), i), actor()).await });
    }
    let (mut ok, mut overloaded) = (0, 0);
    while let Some(r) = writers.join_next().await {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(Refused::Overloaded) => overloaded += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    fail::remove("raft-log-sync");
    assert!(
        ok >= 1 && overloaded >= 1,
        "ok {ok}, overloaded {overloaded}"
    );
    assert_eq!(
        store.read(|s| s.models["Item"].records.len()),
        ok,
        "a refused write left nothing behind"
    );
    scenario.teardown();
}

/// A write that cannot commit in time answers Timeout (its outcome is unknown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_its_deadline_answers_timeout() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let store = Store::open(
        dir.path(),
        &spec.spec,
        StoreOptions {
            write_timeout: Duration::from_millis(200),
            ..opts(1000)
        },
    )
    .await
    .unwrap();
    fail::cfg("raft-log-sync", "sleep(1000)").unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        store.propose(create("slow", 1), actor()).await.unwrap_err(),
        Refused::Timeout
    );
    assert!(started.elapsed() < Duration::from_millis(900));
    fail::remove("raft-log-sync");
    scenario.teardown();
}

/// A node of an in-process cluster: its store behind the real HTTP server (Raft messages
/// travel over HTTP on loopback between the nodes).
struct Node {
    engine: Arc<lithair_runtime::engine::Engine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

const CLUSTER_SECRET: &str = "in-process-cluster-secret";

async fn node(
    dir: &std::path::Path,
    id: u64,
    peers: &BTreeMap<u64, String>,
    listener: tokio::net::TcpListener,
) -> Node {
    let spec = Arc::new(spec());
    let tuning = lithair_runtime::config::ClusterConfig {
        snapshot_every: 40,
        keep_after_snapshot: 0,
        election_timeout_ms: 600,
        heartbeat_interval_ms: 100,
        ..Default::default()
    };
    let node = ClusterOptions {
        node_id: id,
        peers: peers.clone(),
        secret: Some(CLUSTER_SECRET.into()),
        insecure: false,
        tuning,
        bind_ip: None,
        tls: None,
    };
    let opts = StoreOptions {
        write_timeout: Duration::from_secs(3),
        ..StoreOptions::new(SyncMode::Always, node)
    };
    let store = Store::open(dir, &spec.spec, opts).await.unwrap();
    let engine = Arc::new(lithair_runtime::engine::Engine::new(
        spec.clone(),
        Default::default(),
        store,
    ));
    let auth = lithair_runtime::auth::Authenticator::new(&[], &spec).unwrap();
    let opts = lithair_runtime::http::ServeOptions {
        drain_timeout: Duration::from_secs(5),
        ..lithair_runtime::http::ServeOptions::of(&Default::default())
    };
    let firewall = lithair_runtime::http::firewall::Firewall::new(
        lithair_runtime::http::firewall::Rules::new(&Default::default(), vec![]),
    );
    let live = lithair_runtime::http::Live::new(firewall, auth);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn({
        let engine = engine.clone();
        async move {
            let listeners = vec![lithair_runtime::http::Listener::plain(listener)];
            let _ = lithair_runtime::http::serve(listeners, engine, live, None, opts, async {
                let _ = stopped.await;
            })
            .await;
        }
    });
    Node {
        engine,
        stop: Some(stop),
        served,
    }
}

impl Node {
    fn store(&self) -> &Store {
        &self.engine.store
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.served.await;
    }
}

/// A follower whose snapshot install fails stops taking writes; restarted, it catches up
/// through a snapshot and holds every acknowledged write and the same event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_snapshot_install_stops_the_follower_and_a_restart_catches_up() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap().to_string());
        listeners.push(l);
    }
    let mut listeners = listeners.into_iter();
    let dir = |id: u64| tmp.path().join(format!("d{id}"));
    let n1 = node(&dir(1), 1, &peers, listeners.next().unwrap()).await;
    let n2 = node(&dir(2), 2, &peers, listeners.next().unwrap()).await;
    let third = listeners.next().unwrap();
    // Two of three nodes: a quorum. Write enough for the log to be purged past a snapshot.
    fn leader(nodes: [&Node; 2]) -> Option<&Store> {
        nodes
            .into_iter()
            .find(|n| n.store().cluster().is_leader())
            .map(|n| n.store())
    }
    let mut acked = Vec::new();
    for _ in 0..200 {
        if leader([&n1, &n2]).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..150 {
        let store = leader([&n1, &n2]).expect("a leader");
        acked.push(
            store
                .propose(create(&format!("c{i}"), i), actor())
                .await
                .unwrap(),
        );
    }
    fail::cfg("snapshot-install", "return").unwrap();
    let n3 = node(&dir(3), 3, &peers, third).await;
    let health = n3.store().health().clone();
    wait_for(|| health.fault().is_some()).await;
    assert!(
        health.fault().unwrap().what.contains("snapshot"),
        "{:?}",
        health.fault()
    );
    assert!(n3.store().ready().is_err());
    match n3.store().propose(create("on-3", 0), actor()).await {
        Err(Refused::Fault(_)) => {}
        other => panic!("a faulted node took a write: {other:?}"),
    }
    // Writes go on through the other two.
    for i in 150..170 {
        let store = leader([&n1, &n2]).expect("a leader");
        acked.push(
            store
                .propose(create(&format!("c{i}"), i), actor())
                .await
                .unwrap(),
        );
    }
    fail::remove("snapshot-install");
    n3.stop().await;
    let again = tokio::net::TcpListener::bind(&peers[&3]).await.unwrap();
    let n3 = node(&dir(3), 3, &peers, again).await;
    for _ in 0..600 {
        if n3.store().read(|s| s.models["Item"].records.len()) == acked.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for ev in &acked {
        assert!(n3.store().get("Item", ev.aggregate_id).is_some(), "{ev:?}");
    }
    // The events the snapshot skipped are fetched: the same log as the leader's.
    let reference = leader([&n1, &n2]).unwrap().events().unwrap();
    let mut same = false;
    for _ in 0..300 {
        let mine = n3.store().events().unwrap();
        if mine.len() == reference.len() {
            let ids = |e: &[lithair_runtime::domain::event::Event]| {
                e.iter().map(|e| e.event_id).collect::<Vec<_>>()
            };
            assert_eq!(ids(&mine), ids(&reference));
            same = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(same, "node 3 did not fetch the events its snapshot skipped");
    assert_eq!(n3.store().ready(), Ok(()));
    for n in [n1, n2, n3] {
        n.stop().await;
    }
    scenario.teardown();
}

/// A deposed leader whose log must be cut back (its entries never committed) and whose
/// truncation fails stops taking writes; restarted, it takes the new leader's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_truncation_of_the_raft_log_stops_the_node_and_a_restart_recovers() {
    let scenario = fail::FailScenario::setup();
    let tmp = tempfile::tempdir().unwrap();
    let mut peers = BTreeMap::new();
    let mut listeners = Vec::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap().to_string());
        listeners.push(l);
    }
    let dir = |id: u64| tmp.path().join(format!("d{id}"));
    let rebind = |id: u64| {
        let addr = peers[&id].clone();
        async move { tokio::net::TcpListener::bind(addr).await.unwrap() }
    };
    let mut listeners = listeners.into_iter();
    let n1 = node(&dir(1), 1, &peers, listeners.next().unwrap()).await;
    let n2 = node(&dir(2), 2, &peers, listeners.next().unwrap()).await;
    let n3 = node(&dir(3), 3, &peers, listeners.next().unwrap()).await;
    let is_leader = |n: &Node| n.store().cluster().is_leader();
    let mut nodes = vec![Some(n1), Some(n2), Some(n3)];
    let mut leader = None;
    for _ in 0..200 {
        leader = nodes.iter().position(|n| n.as_ref().is_some_and(is_leader));
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = leader.expect("a leader");
    let mut acked = Vec::new();
    for i in 0..20 {
        let store = nodes[leader].as_ref().unwrap().store();
        acked.push(
            store
                .propose(create(&format!("t{i}"), i), actor())
                .await
                .unwrap(),
        );
    }
    // The followers stop; the leader appends writes it cannot commit.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for f in &followers {
        nodes[*f].take().unwrap().stop().await;
    }
    for i in 0..3 {
        let store = nodes[leader].as_ref().unwrap().store();
        match store.propose(create(&format!("lost{i}"), i), actor()).await {
            Err(Refused::Timeout) => {}
            other => panic!("a write without quorum: {other:?}"),
        }
    }
    nodes[leader].take().unwrap().stop().await;
    // The followers come back and elect one of them; it writes over those entries.
    for f in &followers {
        let id = *f as u64 + 1;
        nodes[*f] = Some(node(&dir(id), id, &peers, rebind(id).await).await);
    }
    let mut new_leader = None;
    for _ in 0..200 {
        new_leader = followers
            .iter()
            .copied()
            .find(|f| nodes[*f].as_ref().is_some_and(is_leader));
        if new_leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = new_leader.expect("a new leader");
    for i in 0..20 {
        let store = nodes[new_leader].as_ref().unwrap().store();
        acked.push(
            store
                .propose(create(&format!("n{i}"), i), actor())
                .await
                .unwrap(),
        );
    }
    // The old leader returns and must cut its uncommitted entries: the cut fails.
    fail::cfg("raft-log-truncate", "return").unwrap();
    let id = leader as u64 + 1;
    let old = node(&dir(id), id, &peers, rebind(id).await).await;
    let health = old.store().health().clone();
    wait_for(|| health.fault().is_some()).await;
    assert!(
        health.fault().unwrap().what.contains("truncating"),
        "{:?}",
        health.fault()
    );
    fail::remove("raft-log-truncate");
    old.stop().await;
    let old = node(&dir(id), id, &peers, rebind(id).await).await;
    for _ in 0..400 {
        if old.store().read(|s| s.models["Item"].records.len()) == acked.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for ev in &acked {
        assert!(old.store().get("Item", ev.aggregate_id).is_some(), "{ev:?}");
    }
    assert_eq!(
        old.store().read(|s| s.models["Item"].records.len()),
        acked.len(),
        "an uncommitted write survived"
    );
    old.stop().await;
    for n in nodes.into_iter().flatten() {
        n.stop().await;
    }
    scenario.teardown();
}

/// A node that is shutting down is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_is_not_ready() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = spec();
    let store = Store::open(dir.path(), &spec.spec, opts(1000))
        .await
        .unwrap();
    assert_eq!(store.ready(), Ok(()));
    store.shutdown().await;
    let reason = store.ready().unwrap_err();
    assert_eq!(reason, NotReady::ShuttingDown);
    scenario.teardown();
}

/// Defect: a write was answered with the record as this node held it when the answer
/// was built, and a later write could be applied by then: the client got the later
/// version (its next If-Match) and the later write's values as its own. The answer is
/// now the record as its own write made it, for an update and for a create.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_write_is_answered_with_its_own_version_when_a_later_one_applied_first() {
    use lithair_runtime::auth::Principal;
    use lithair_runtime::engine::Engine;
    use lithair_runtime::hooks::HookContext;
    use lithair_runtime::spec::Operation;
    use std::sync::mpsc;

    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let spec = Arc::new(spec());
    let store = Store::open(dir.path(), &spec.spec, opts(1000))
        .await
        .unwrap();
    let engine = Arc::new(Engine::new(spec, Default::default(), store));
    let ctx = |operation| HookContext {
        principal: Principal {
            name: "clerk".into(),
            roles: vec![],
            effective: Default::default(),
        },
        model: "Item".into(),
        operation,
        action: None,
    };
    // Holds the next write that reaches its answer until the test lets it go.
    let hold = || {
        let (arrived, wait_arrived) = mpsc::channel::<()>();
        let (release, wait_release) = mpsc::channel::<()>();
        let once = std::sync::Mutex::new(Some((arrived, wait_release)));
        fail::cfg_callback("engine-answer", move || {
            let first = once.lock().unwrap().take();
            if let Some((arrived, wait_release)) = first {
                let _ = arrived.send(());
                // The worker hands its queued tasks to another thread while it waits.
                tokio::task::block_in_place(|| {
                    let _ = wait_release.recv_timeout(Duration::from_secs(10));
                });
            }
        })
        .unwrap();
        (wait_arrived, release)
    };

    // A create, answered after an update of its record landed.
    let (arrived, release) = hold();
    let create = tokio::spawn({
        let engine = engine.clone();
        let ctx = ctx(Operation::Create);
        async move { engine.create(&ctx, json!({"code": "a", "n": 1})).await }
    });
    tokio::task::spawn_blocking(move || arrived.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the create reached its answer");
    let id = engine.store.read(|s| {
        let records = &s.models["Item"].records;
        records
            .iter()
            .next()
            .map(|(id, _)| *id)
            .expect("the record")
    });
    let later = engine
        .update(&ctx(Operation::Patch), id, json!({"n": 2}), true, Some(1))
        .await
        .expect("the later update");
    assert_eq!(later.version(), 2);
    release.send(()).unwrap();
    let created = create.await.unwrap().expect("create");
    assert_eq!(
        (created.version(), created.record()["n"].clone()),
        (1, json!(1))
    );

    // An update, answered after the next update landed.
    let (arrived, release) = hold();
    let update = tokio::spawn({
        let engine = engine.clone();
        let ctx = ctx(Operation::Patch);
        async move {
            engine
                .update(&ctx, id, json!({"n": 3}), true, Some(2))
                .await
        }
    });
    tokio::task::spawn_blocking(move || arrived.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the update reached its answer");
    let next = engine
        .update(&ctx(Operation::Patch), id, json!({"n": 4}), true, Some(3))
        .await
        .expect("the next update");
    assert_eq!(next.version(), 4);
    release.send(()).unwrap();
    let updated = update.await.unwrap().expect("update");
    assert_eq!(
        (updated.version(), updated.record()["n"].clone()),
        (3, json!(3))
    );
    fail::remove("engine-answer");
    engine.store.shutdown().await;
    scenario.teardown();
}
