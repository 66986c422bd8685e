//! The Raft log storage and state machine pass openraft's own storage test suite, on a
//! real data dir in a temp dir.

use lithair_runtime::config::SyncMode;
use lithair_runtime::raft::data_dir::DataDir;
use lithair_runtime::raft::log_store::{Durability, LogStore};
use lithair_runtime::raft::state_machine::StateMachine;
use lithair_runtime::raft::TypeConfig;
use lithair_runtime::spec::{CompiledSpec, ServiceSpec};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;

const SPEC: &str = r#"{
  "service": {"name": "t"},
  "roles": [],
  "models": [{
    "name": "Item", "snake": "item", "path": "/api/items",
    "operations": ["list", "get", "create"],
    "permissions": {"read": [], "create": [], "update": [], "delete": []},
    "fields": [{"name": "code", "type": {"kind": "string"}, "unique": true}]
  }]
}"#;

struct Builder {
    spec: ServiceSpec,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = Arc::new(DataDir::open(dir.path()).expect("data dir"));
        let sm = StateMachine::open(data.clone(), &self.spec)?;
        let durability = Durability {
            sync: SyncMode::Always,
            flush_interval: std::time::Duration::from_millis(10),
        };
        let log = LogStore::open(&data, durability, &sm, Default::default()).expect("log store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    let spec = CompiledSpec::from_json(SPEC).unwrap().spec;
    Suite::test_all(Builder { spec }).unwrap();
}

/// Two replicas applying the same entries decide the same and hold identical event logs,
/// refusals included (the second claim of a unique value).
#[test]
fn replicas_applying_the_same_entries_hold_identical_logs() {
    use lithair_runtime::domain::decide::Stamped;
    use lithair_runtime::domain::event::Actor;
    use lithair_runtime::domain::Command;
    use lithair_runtime::raft::{Applied, Batch};
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    let spec = CompiledSpec::from_json(SPEC).unwrap().spec;
    let entries: Vec<Entry<TypeConfig>> = (0..6u64)
        .map(|i| {
            let code = format!("c{}", i / 2);
            let id = uuid::Uuid::new_v4().to_string();
            let record = serde_json::json!({"id": id, "code": code, "created_at": "2024-01-01T00:00:00Z",
                "updated_at": "2024-01-01T00:00:00Z", "version": 1});
            let stamped = Stamped {
                command: Command::Create { model: "Item".into(), record: record.as_object().unwrap().clone() },
                actor: Actor { name: "t".into(), roles: vec![], action: None },
                event_id: uuid::Uuid::new_v4(),
                at: "2024-01-01T00:00:00Z".into(),
                node_id: "1".into(),
                key: None,
                trace: None,
            };
            Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), i + 1), payload: EntryPayload::Normal(Batch::new(vec![stamped])) }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let logs: Vec<Vec<String>> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let data = Arc::new(DataDir::open(dir.path()).unwrap());
            let mut sm = StateMachine::open(data, &spec).unwrap();
            let answers: Vec<Applied> = rt
                .block_on(sm.apply(entries.clone()))
                .unwrap()
                .into_iter()
                .flatten()
                .collect();
            let done = answers
                .iter()
                .filter(|a| matches!(a, Applied::Done(_)))
                .count();
            let refused = answers
                .iter()
                .filter(|a| matches!(a, Applied::Refused(_)))
                .count();
            assert_eq!(
                (done, refused),
                (3, 3),
                "one of each pair wins the unique code"
            );
            event_log(&sm)
        })
        .collect();
    assert_eq!(logs[0].len(), 3);
    assert_eq!(logs[0], logs[1], "identical event logs, byte for byte");
}

/// A batch proposed twice (a follower retrying after its leader died with the answer) is
/// answered from the first application, not applied again.
#[test]
fn a_command_sent_twice_is_applied_once() {
    use lithair_runtime::domain::decide::Stamped;
    use lithair_runtime::domain::event::Actor;
    use lithair_runtime::domain::Command;
    use lithair_runtime::raft::Applied;
    use openraft::storage::RaftStateMachine;

    let spec = CompiledSpec::from_json(SPEC).unwrap().spec;
    let record = serde_json::json!({"id": uuid::Uuid::new_v4().to_string(), "code": "once",
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z", "version": 1});
    let stamped = Stamped {
        command: Command::Create {
            model: "Item".into(),
            record: record.as_object().unwrap().clone(),
        },
        actor: Actor {
            name: "t".into(),
            roles: vec![],
            action: None,
        },
        event_id: uuid::Uuid::new_v4(),
        at: "2024-01-01T00:00:00Z".into(),
        node_id: "2".into(),
        key: None,
        trace: None,
    };
    let entry = |i: u64| entry(i, &stamped);
    let (_dir, db, mut sm, rt) = fresh(&spec);
    let first = rt.block_on(sm.apply(vec![entry(1)])).unwrap();
    let again = rt.block_on(sm.apply(vec![entry(2)])).unwrap();
    assert!(matches!(first[0][0], Applied::Done(_)));
    assert_eq!(
        first, again,
        "the same answer, not a second event or a refusal"
    );
    assert_eq!(event_log(&sm).len(), 1);
    // The window is rebuilt from the event log at start: the same after a restart.
    let (done, checkpointed) = tokio::sync::oneshot::channel();
    sm.checkpoints()
        .send(lithair_runtime::raft::Checkpoint::Barrier(done))
        .unwrap();
    assert!(rt.block_on(checkpointed).unwrap());
    drop(sm);
    let mut sm = StateMachine::open(db.clone(), &spec).unwrap();
    let after_restart = rt.block_on(sm.apply(vec![entry(3)])).unwrap();
    assert_eq!(first, after_restart);
    assert_eq!(event_log(&sm).len(), 1);
}

#[test]
fn a_refused_command_sent_again_is_decided_again() {
    use lithair_runtime::domain::decide::Stamped;
    use lithair_runtime::domain::event::Actor;
    use lithair_runtime::domain::Command;
    use lithair_runtime::raft::Applied;
    use openraft::storage::RaftStateMachine;

    let spec = CompiledSpec::from_json(SPEC).unwrap().spec;
    let stamp = |command| Stamped {
        command,
        actor: Actor {
            name: "t".into(),
            roles: vec![],
            action: None,
        },
        event_id: uuid::Uuid::new_v4(),
        at: "2024-01-01T00:00:00Z".into(),
        node_id: "1".into(),
        key: None,
        trace: None,
    };
    let create = |id: uuid::Uuid| {
        Command::Create {
        model: "Item".into(),
        record: serde_json::json!({"id": id.to_string(), "code": "taken",
                "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z", "version": 1})
            .as_object()
            .unwrap()
            .clone(),
    }
    };
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let holder = stamp(create(a));
    let contender = stamp(create(b));
    let delete = stamp(Command::Delete {
        model: "Item".into(),
        id: a,
        expected_version: None,
    });
    let (_dir, _db, mut sm, rt) = fresh(&spec);
    let answers = rt
        .block_on(sm.apply(vec![
            entry(1, &holder),
            entry(2, &contender),
            entry(3, &delete),
            entry(4, &contender),
        ]))
        .unwrap();
    assert!(
        matches!(answers[1][0], Applied::Refused(_)),
        "{:?}",
        answers[1]
    );
    // Every replica decides it again, against the same state: now it is accepted.
    assert!(
        matches!(answers[3][0], Applied::Done(_)),
        "{:?}",
        answers[3]
    );
    assert_eq!(event_log(&sm).len(), 3);
}

/// A log entry at index `i` carrying one command.
fn entry(i: u64, s: &lithair_runtime::domain::decide::Stamped) -> openraft::Entry<TypeConfig> {
    openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), i),
        payload: openraft::EntryPayload::Normal(lithair_runtime::raft::Batch::new(vec![s.clone()])),
    }
}

/// A state machine on a fresh store, and a runtime to drive it.
fn fresh(
    spec: &ServiceSpec,
) -> (
    tempfile::TempDir,
    Arc<DataDir>,
    StateMachine,
    tokio::runtime::Runtime,
) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(DataDir::open(dir.path()).unwrap());
    let sm = StateMachine::open(db.clone(), spec).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    (dir, db, sm, rt)
}

/// The event log of a state machine, one JSON text per event.
fn event_log(sm: &StateMachine) -> Vec<String> {
    let events = sm.events();
    let log = events.lock().unwrap();
    let (Some(first), Some(last)) = (log.first_index(), log.last_index()) else {
        return Vec::new();
    };
    (first..=last)
        .map(|seq| String::from_utf8(log.read(seq).unwrap().unwrap()).unwrap())
        .collect()
}
