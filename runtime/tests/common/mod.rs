//! What the store tests share: a small schema, records, commands.

#![allow(dead_code)]

use lithair_runtime::domain::event::{Actor, Record};
use lithair_runtime::spec::CompiledSpec;
use lithair_runtime::store::{Command, Refused, Store};
use serde_json::json;
use uuid::Uuid;

/// A model `Item` with a unique `code` and an int `n`.
pub const SPEC: &str = r#"{
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

pub fn spec() -> CompiledSpec {
    CompiledSpec::from_json(SPEC).unwrap()
}

/// Stops the store's Raft node so that the data dir can be opened again, as a crash would
/// leave it (no last snapshot: what is on disk is what the sync setting put there).
pub async fn close(store: Store) {
    store.stop_as_a_crash_would().await;
    drop(store);
}

pub fn actor() -> Actor {
    Actor {
        name: "test".into(),
        roles: vec![],
        action: None,
    }
}

pub fn record(code: &str, n: i64) -> Record {
    let v = json!({"id": Uuid::new_v4().to_string(), "code": code, "n": n,
        "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z", "version": 1});
    v.as_object().unwrap().clone()
}

pub fn create(code: &str, n: i64) -> Command {
    Command::Create {
        model: "Item".into(),
        record: record(code, n),
    }
}

/// Proposes a new version of record `id` with `n`.
pub async fn try_bump(store: &Store, id: Uuid, n: i64) -> Result<(), Refused> {
    let old = store.get("Item", id).expect("record");
    let version = old.get("version").and_then(|v| v.as_u64()).unwrap();
    let mut next = old.record();
    next.insert("n".into(), json!(n));
    next.insert("version".into(), json!(version + 1));
    let replace = Command::Replace {
        model: "Item".into(),
        id,
        record: next,
        expected_version: version,
        from_client: false,
    };
    store.propose(replace, actor()).await.map(|_| ())
}

/// Waits up to 5 s for `done`.
pub async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}
