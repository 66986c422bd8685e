//! Actions as transactions, in process (a schema compiled by the generator's library, the
//! runtime's pipeline, a real store in a temp dir): an action reads and writes records of
//! several models through its context, and its writes are one Raft entry decided together
//! in apply, all or nothing. A record changed by another write between the action's read
//! and its commit makes the action a 409 with nothing written; so does a refusal decided
//! in apply (a unique value) on any of its writes.

#[path = "support/compiled.rs"]
mod compiled;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use lithair_runtime::prelude::*;
use lithair_runtime::testing::{mint_token, Actions, Answer, InProcess};
use tokio::sync::Notify;

const SCHEMA: &str = r#"
service: { name: depot }
roles: [clerk]
models:
  Item:
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields:
      name: { type: string, unique: true }
      stock: { type: int, validate: { min: 0 } }
  Order:
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields:
      item: { type: "ref<Item>" }
      quantity: { type: int, validate: { min: 1 } }
      status: { type: enum, values: [pending, placed], default: pending }
    actions:
      # The body's `mode` says what the test wants the handler to do (see `order_action`).
      place: { method: POST, path: "{id}/place", permission: [clerk] }
      reorder: { method: POST, path: "reorder", permission: [clerk] }
"#;

/// Where the handler waits, when asked to, between staging its writes and committing them
/// (`staged` is told, then it waits for `go`).
fn gates() -> &'static (Notify, Notify) {
    static GATES: OnceLock<(Notify, Notify)> = OnceLock::new();
    GATES.get_or_init(|| (Notify::new(), Notify::new()))
}

fn id_of(v: &Value) -> Result<Uuid, ApiError> {
    v["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| ApiError::internal("a record without an id"))
}

/// `place`: the order takes its quantity from its item's stock and is marked placed, in
/// one transaction. `reorder`: creates an item (named in the body) and an order of it
/// in one transaction.
async fn order_action(ctx: ActionContext, id: Option<Uuid>, body: Value) -> ActionResult {
    let mode = body["mode"].as_str().unwrap_or("");
    if ctx.action == "reorder" {
        let item = ctx.create_json("Item", json!({"name": body["name"], "stock": 5}))?;
        // The new item is seen by the order's ref check, inside the same transaction.
        let order = ctx.create_json("Order", json!({"item": item["id"], "quantity": 2}))?;
        let done = ctx.commit().await?;
        let order = done.record("Order", id_of(&order)?).flatten().cloned();
        return Ok(ActionResponse::ok(
            json!({ "order": order, "events": done.events().len() }),
        ));
    }
    let id = id.ok_or_else(|| ApiError::not_found("no order"))?;
    let order = ctx
        .get_json("Order", id)
        .ok_or_else(|| ApiError::not_found("no order"))?;
    let item_id = order["item"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let item_id = item_id.ok_or_else(|| ApiError::internal("an order without its item"))?;
    let item = ctx
        .get_json("Item", item_id)
        .ok_or_else(|| ApiError::not_found("no item"))?;
    let left = item["stock"].as_i64().unwrap_or(0) - order["quantity"].as_i64().unwrap_or(0);
    // The order first, so that a refusal of a later write shows the first one undone.
    ctx.patch_json("Order", id, json!({"status": "placed"}))?;
    ctx.patch_json("Item", item_id, json!({"stock": left}))?;
    if mode == "take a taken name" {
        ctx.create_json("Item", json!({"name": item["name"], "stock": 1}))?;
    }
    // Read your writes: the item as this transaction left it.
    let seen = ctx.get_json("Item", item_id).map(|i| i["stock"].clone());
    if seen != Some(json!(left)) {
        return Err(ApiError::internal(format!(
            "the staged item reads {seen:?}"
        )));
    }
    if mode == "wait" {
        gates().0.notify_one();
        gates().1.notified().await;
    }
    if mode == "fail after staging" {
        return Err(ApiError::conflict("status", "the handler changed its mind"));
    }
    let done = ctx.commit().await?;
    let order = done.record("Order", id).flatten().cloned();
    let item = done.record("Item", item_id).flatten().cloned();
    Ok(ActionResponse::ok(json!({
        "order": order,
        "item": item,
        "transaction": done.events().iter().map(|e| e.transaction.map(|t| t.id)).collect::<Vec<_>>(),
        "seqs": done.events().iter().map(|e| e.sequence_number).collect::<Vec<_>>(),
    })))
}

struct Depot {
    svc: InProcess,
    bearer: String,
}

impl Depot {
    async fn start(dir: &Path, config: &str, token: &str) -> Depot {
        let hooks: Box<dyn ModelHooks> = Box::new(Actions(
            |ctx: ActionContext,
             id: Option<Uuid>,
             body: Value|
             -> BoxFuture<'static, ActionResult> {
                Box::pin(order_action(ctx, id, body))
            },
        ));
        let service = compiled::service("depot.yaml", SCHEMA)
            .0
            .with_hooks("Order", hooks);
        let svc = InProcess::start(service, config, dir).await.expect("start");
        Depot {
            svc,
            bearer: format!("Bearer {token}"),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut headers = vec![("authorization", self.bearer.as_str())];
        headers.extend_from_slice(extra);
        self.svc.send(method, path, &headers, body.as_ref()).await
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let a = self.call(method, path, body, &[]).await;
        assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.json);
        a.json
    }

    /// An item of `stock` and an order of `quantity` of it: their paths.
    async fn order(&self, name: &str, stock: i64, quantity: i64) -> (String, String) {
        let item = self
            .ok(
                "POST",
                "/api/items",
                Some(json!({"name": name, "stock": stock})),
            )
            .await;
        let order = self
            .ok(
                "POST",
                "/api/orders",
                Some(json!({"item": item["id"], "quantity": quantity})),
            )
            .await;
        (
            format!("/api/items/{}", item["id"].as_str().unwrap_or("")),
            format!("/api/orders/{}", order["id"].as_str().unwrap_or("")),
        )
    }

    fn events(&self) -> usize {
        self.svc.store().events().expect("events").len()
    }
}

fn config() -> (String, String) {
    let (token, table) = mint_token("clerk", &["clerk"]);
    (table, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_writes_two_models_in_one_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, token) = config();
    let d = Depot::start(dir.path(), &config, &token).await;
    let (item, order) = d.order("bolt", 10, 3).await;
    let before = d.events();
    let placed = d
        .ok("POST", &format!("{order}/place"), Some(json!({})))
        .await;
    assert_eq!(placed["order"]["status"], "placed", "{placed}");
    assert_eq!(placed["item"]["stock"], 7, "{placed}");
    // Two events, consecutive, both marked with the one transaction (the first's id).
    let seqs = placed["seqs"].as_array().cloned().unwrap_or_default();
    assert_eq!(seqs.len(), 2, "{placed}");
    assert_eq!(seqs[1].as_u64(), seqs[0].as_u64().map(|s| s + 1));
    let tx = placed["transaction"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(tx[0].is_string() && tx[0] == tx[1], "{placed}");
    assert_eq!(d.events(), before + 2);
    assert_eq!(d.ok("GET", &item, None).await["stock"], 7);
    assert_eq!(d.ok("GET", &order, None).await["version"], 2);

    // Records created in one transaction may refer to each other.
    let re = d
        .ok("POST", "/api/orders/reorder", Some(json!({"name": "nut"})))
        .await;
    assert_eq!(re["events"], 2, "{re}");
    let new_order = format!("/api/orders/{}", re["order"]["id"].as_str().unwrap_or(""));
    let got = d.ok("GET", &new_order, None).await;
    assert_eq!(
        d.ok(
            "GET",
            &format!("/api/items/{}", got["item"].as_str().unwrap_or("")),
            None
        )
        .await["name"],
        "nut"
    );

    // The transaction's events replay after a restart.
    d.svc.shutdown().await;
    let d = Depot::start(dir.path(), &config, &token).await;
    assert_eq!(d.ok("GET", &item, None).await["stock"], 7);
    assert_eq!(d.ok("GET", &order, None).await["status"], "placed");
    assert_eq!(d.ok("GET", &new_order, None).await["quantity"], 2);
    d.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_update_fails_the_action_and_nothing_is_half_done() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, token) = config();
    let d = Depot::start(dir.path(), &config, &token).await;
    let (item, order) = d.order("washer", 10, 4).await;
    let before = d.events();
    // The action reads and stages; before it commits, another client changes the item.
    let path = format!("{order}/place");
    let place = d.call("POST", &path, Some(json!({"mode": "wait"})), &[]);
    let meanwhile = async {
        gates().0.notified().await;
        let a = d
            .call("PATCH", &item, Some(json!({"stock": 50})), &[])
            .await;
        gates().1.notify_one();
        a
    };
    // Bounded: an action that answers before its gate would leave the other side waiting.
    let (placed, patched) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(place, meanwhile)
    })
    .await
    .expect("the action and the update both answer");
    assert_eq!(patched.status, 200, "{}", patched.json);
    assert_eq!(placed.status, 409, "{}", placed.json);
    let detail = placed.json["detail"].as_str().unwrap_or("");
    assert!(detail.contains("changed while the action ran"), "{detail}");
    // The other client's write stands, and the order was not placed either.
    assert_eq!(d.ok("GET", &item, None).await["stock"], 50);
    let o = d.ok("GET", &order, None).await;
    assert_eq!(
        (o["status"].clone(), o["version"].clone()),
        (json!("pending"), json!(1))
    );
    assert_eq!(d.events(), before + 1, "only the PATCH is in the log");

    // Run again, the action goes through.
    let placed = d
        .ok("POST", &format!("{order}/place"), Some(json!({})))
        .await;
    assert_eq!(placed["item"]["stock"], 46, "{placed}");
    d.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_any_write_leaves_every_write_unmade() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, token) = config();
    let d = Depot::start(dir.path(), &config, &token).await;
    let (item, order) = d.order("gear", 10, 2).await;
    let before = d.events();
    // Write 3 takes a unique name that is taken: decided in apply, after writes 1 and 2.
    let a = d
        .call(
            "POST",
            &format!("{order}/place"),
            Some(json!({"mode": "take a taken name"})),
            &[],
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.json);
    assert!(
        a.json["detail"]
            .as_str()
            .unwrap_or("")
            .contains("already has this `name`"),
        "{}",
        a.json
    );
    // A staged write the schema refuses (stock below 0) is a 422 before anything is proposed.
    let (_, greedy) = d.order("cog", 1, 5).await;
    let before_greedy = d.events();
    let b = d
        .call("POST", &format!("{greedy}/place"), Some(json!({})), &[])
        .await;
    assert_eq!(b.status, 422, "{}", b.json);
    // A handler that fails after staging writes nothing.
    let c = d
        .call(
            "POST",
            &format!("{order}/place"),
            Some(json!({"mode": "fail after staging"})),
            &[],
        )
        .await;
    assert_eq!(c.status, 409, "{}", c.json);
    assert_eq!(d.events(), before_greedy);
    assert_eq!(
        before_greedy,
        before + 2,
        "only the second item and order were written"
    );
    assert_eq!(d.ok("GET", &item, None).await["stock"], 10);
    assert_eq!(d.ok("GET", &order, None).await["status"], "pending");
    d.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_sent_again_with_its_key_commits_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, token) = config();
    let d = Depot::start(dir.path(), &config, &token).await;
    let key = [("idempotency-key", "reorder-1")];
    let first = d
        .call(
            "POST",
            "/api/orders/reorder",
            Some(json!({"name": "pin"})),
            &key,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.json);
    let count = d.events();
    // The retry creates the same ids, and is answered with the first run's records.
    let again = d
        .call(
            "POST",
            "/api/orders/reorder",
            Some(json!({"name": "pin"})),
            &key,
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["order"], first.json["order"]);
    assert_eq!(d.events(), count, "nothing written twice");
    let mut names = HashMap::new();
    for i in d.ok("GET", "/api/items", None).await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        *names.entry(i["name"].to_string()).or_insert(0) += 1;
    }
    assert_eq!(names.get("\"pin\""), Some(&1));
    d.svc.shutdown().await;
}
