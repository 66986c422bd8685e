//! The past of records, in process (a schema compiled by the generator's library, the
//! runtime's pipeline and a real store in a temp dir, restarted on the same data dir):
//! `lifecycle: { audited, versioned }` gives each record a history and its newest N
//! versions, and the audited models' writes are entries of `GET /api/_audit`, all rebuilt
//! from the event log, so they read the same after a restart.

#[path = "support/compiled.rs"]
mod compiled;

use std::collections::HashMap;
use std::path::Path;

use lithair_runtime::prelude::*;
use lithair_runtime::testing::{mint_token, Actions, Answer, InProcess};

const SCHEMA: &str = r#"
service: { name: ledger }
roles: [clerk, auditor]
audit: { read: [auditor] }
models:
  Invoice:
    lifecycle: { audited: true, versioned: 3 }
    permissions: { read: [clerk, auditor], create: [clerk], update: [clerk], delete: [clerk] }
    fields:
      customer: string
      total: float
      # Clerks set it but only auditors see it: masked in the history clerks read.
      note: { type: string, optional: true, permissions: { read: [auditor], write: [clerk] } }
    actions:
      bump: { method: POST, path: "{id}/bump", permission: [clerk] }
  Plain:
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields:
      name: string
"#;

/// The hooks of `Invoice`: its action `bump` adds one to the total through the action's
/// context.
fn bump_hooks() -> Box<dyn ModelHooks> {
    Box::new(Actions(
        |ctx: ActionContext, id: Option<Uuid>, _: Value| -> BoxFuture<'static, ActionResult> {
            Box::pin(async move {
                let id = id.ok_or_else(|| ApiError::not_found("no record"))?;
                let total = ctx
                    .get_json("Invoice", id)
                    .and_then(|r| r["total"].as_f64())
                    .unwrap_or(0.0);
                ctx.patch_json("Invoice", id, json!({"total": total + 1.0}))?;
                let done = ctx.commit().await?;
                let body = done
                    .record("Invoice", id)
                    .flatten()
                    .map(|r| Value::Object(r.clone()))
                    .unwrap_or(Value::Null);
                Ok(ActionResponse { status: 200, body })
            })
        },
    ))
}

struct Ledger {
    svc: InProcess,
    tokens: HashMap<&'static str, String>,
}

fn config() -> (String, HashMap<&'static str, String>) {
    let mut text = String::new();
    let mut tokens = HashMap::new();
    for (name, role) in [("ann", "clerk"), ("bob", "clerk"), ("aud", "auditor")] {
        let (token, table) = mint_token(name, &[role]);
        text.push_str(&table);
        tokens.insert(name, token);
    }
    (text, tokens)
}

impl Ledger {
    async fn start(dir: &Path, config: &str, tokens: &HashMap<&'static str, String>) -> Ledger {
        let service = compiled::service("ledger.yaml", SCHEMA)
            .0
            .with_hooks("Invoice", bump_hooks());
        let svc = InProcess::start(service, config, dir).await.expect("start");
        Ledger {
            svc,
            tokens: tokens.clone(),
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

    async fn ok(&self, method: &str, path: &str, who: &str, body: Option<Value>) -> Value {
        let a = self.call(method, path, Some(who), body).await;
        assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.json);
        a.json
    }
}

fn items(a: &Value) -> Vec<Value> {
    a["items"].as_array().cloned().unwrap_or_default()
}

/// What the history and versions of the invoice at `item` read (the same before and
/// after a restart).
async fn check_history(l: &Ledger, item: &str) {
    let h = l
        .call("GET", &format!("{item}/history"), Some("aud"), None)
        .await;
    assert_eq!(h.status, 200, "{}", h.json);
    let entries = items(&h.json);
    let versions: Vec<u64> = entries
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert_eq!(versions, [4, 3, 2, 1], "newest first: {}", h.json);
    assert_eq!(entries[2]["principal"], "bob");
    assert_eq!(entries[2]["action"], "updated");
    assert_eq!(
        entries[2]["changes"],
        json!({"total": {"old": 10.0, "new": 12.5}})
    );
    assert_eq!(entries[3]["action"], "created");
    assert_eq!(
        entries[3]["changes"]["customer"],
        json!({"old": null, "new": "Acme"})
    );
    // A clerk does not see `note`, in the history either.
    let h = l
        .call("GET", &format!("{item}/history"), Some("ann"), None)
        .await;
    let clerk = items(&h.json);
    assert_eq!(
        clerk[1]["changes"],
        json!({"customer": {"old": "Acme", "new": "Acme Ltd"}})
    );
    assert!(clerk[3]["changes"].get("note").is_none(), "{}", h.json);
    let page = l
        .call(
            "GET",
            &format!("{item}/history?limit=2&before=4"),
            Some("aud"),
            None,
        )
        .await;
    let versions: Vec<u64> = items(&page.json)
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert_eq!(versions, [3, 2]);
    // The newest three versions, whole; the first is gone; none past the last.
    let v2 = l
        .call("GET", &format!("{item}/versions/2"), Some("aud"), None)
        .await;
    assert_eq!(v2.status, 200, "{}", v2.json);
    assert_eq!(
        (
            v2.json["total"].clone(),
            v2.json["customer"].clone(),
            v2.json["note"].clone()
        ),
        (json!(12.5), json!("Acme"), json!("first"))
    );
    assert_eq!(v2.header("etag"), Some("\"2\""));
    let v3 = l
        .call("GET", &format!("{item}/versions/3"), Some("ann"), None)
        .await;
    assert_eq!(v3.json["customer"], "Acme Ltd");
    assert!(v3.json.get("note").is_none(), "{}", v3.json);
    assert_eq!(
        l.call("GET", &format!("{item}/versions/1"), Some("aud"), None)
            .await
            .status,
        410
    );
    assert_eq!(
        l.call("GET", &format!("{item}/versions/9"), Some("aud"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        l.call("GET", &format!("{item}/versions/x"), Some("aud"), None)
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_has_its_history_and_newest_versions_and_they_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, tokens) = config();
    let l = Ledger::start(dir.path(), &config, &tokens).await;
    let inv = l
        .ok(
            "POST",
            "/api/invoices",
            "ann",
            Some(json!({"customer": "Acme", "total": 10.0, "note": "first"})),
        )
        .await;
    let id = inv["id"].as_str().expect("id").to_string();
    let item = format!("/api/invoices/{id}");
    l.ok("PATCH", &item, "bob", Some(json!({"total": 12.5})))
        .await;
    l.ok(
        "PATCH",
        &item,
        "ann",
        Some(json!({"customer": "Acme Ltd", "note": "second"})),
    )
    .await;
    l.ok("PATCH", &item, "ann", Some(json!({"total": 13.0})))
        .await;

    check_history(&l, &item).await;
    assert_eq!(
        l.call("GET", &format!("{item}/history"), None, None)
            .await
            .status,
        401
    );
    assert_eq!(
        l.call("POST", &format!("{item}/history"), Some("ann"), None)
            .await
            .status,
        405
    );
    // A model without a lifecycle has no history.
    let plain = l
        .ok("POST", "/api/plains", "ann", Some(json!({"name": "x"})))
        .await;
    let path = format!("/api/plains/{}/history", plain["id"].as_str().expect("id"));
    assert_eq!(l.call("GET", &path, Some("ann"), None).await.status, 404);
    l.svc.shutdown().await;

    // The same after a restart: the history comes from the event log.
    let l = Ledger::start(dir.path(), &config, &tokens).await;
    check_history(&l, &item).await;
    // A deleted record's past stays readable, by the audit roles only.
    assert_eq!(l.call("DELETE", &item, Some("ann"), None).await.status, 204);
    assert_eq!(
        l.call("GET", &format!("{item}/history"), Some("ann"), None)
            .await
            .status,
        404
    );
    let h = l
        .call("GET", &format!("{item}/history"), Some("aud"), None)
        .await;
    assert_eq!(h.status, 200, "{}", h.json);
    let newest = &items(&h.json)[0];
    assert_eq!(newest["action"], "deleted");
    assert_eq!(
        newest["changes"]["customer"],
        json!({"old": "Acme Ltd", "new": null})
    );
    let v4 = l
        .call("GET", &format!("{item}/versions/4"), Some("aud"), None)
        .await;
    assert_eq!((v4.status, v4.json["total"].clone()), (200, json!(13.0)));
    l.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_lists_every_write_with_who_and_the_old_and_new_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, tokens) = config();
    let l = Ledger::start(dir.path(), &config, &tokens).await;
    let a = l
        .ok(
            "POST",
            "/api/invoices",
            "ann",
            Some(json!({"customer": "A", "total": 1.0, "note": "n"})),
        )
        .await;
    let b = l
        .ok(
            "POST",
            "/api/invoices",
            "bob",
            Some(json!({"customer": "B", "total": 2.0})),
        )
        .await;
    l.ok(
        "POST",
        "/api/plains",
        "ann",
        Some(json!({"name": "not audited"})),
    )
    .await;
    let a_item = format!("/api/invoices/{}", a["id"].as_str().expect("id"));
    l.ok(
        "PUT",
        &a_item,
        "bob",
        Some(json!({"customer": "A", "total": 3.0, "note": "n"})),
    )
    .await;
    let b_item = format!("/api/invoices/{}", b["id"].as_str().expect("id"));
    l.ok("POST", &format!("{b_item}/bump"), "ann", None).await;
    assert_eq!(
        l.call("DELETE", &a_item, Some("ann"), None).await.status,
        204
    );

    let log = l.call("GET", "/api/_audit", Some("aud"), None).await;
    assert_eq!(log.status, 200, "{}", log.json);
    let entries = items(&log.json);
    let seen: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_string(),
                e["user"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected = [
        ("created", "ann"),
        ("created", "bob"),
        ("updated", "bob"),
        ("updated", "ann"),
        ("deleted", "ann"),
    ];
    assert_eq!(
        seen,
        expected.map(|(a, u)| (a.to_string(), u.to_string())),
        "{}",
        log.json
    );
    assert_eq!(log.json["next_cursor"], Value::Null);
    assert_eq!(entries[0]["old_values"], Value::Null);
    assert_eq!(entries[0]["new_values"]["note"], "n");
    assert_eq!(entries[2]["old_values"], json!({"total": 1.0}));
    assert_eq!(entries[2]["new_values"], json!({"total": 3.0}));
    assert_eq!(entries[2]["by_action"], Value::Null);
    // The action's write names the action.
    assert_eq!(entries[3]["by_action"], "bump");
    assert_eq!(entries[3]["new_values"], json!({"total": 3.0}));
    assert_eq!(entries[4]["old_values"]["total"], 3.0);
    assert_eq!(entries[4]["new_values"], Value::Null);
    assert_eq!(entries[4]["model"], "Invoice");
    assert!(entries
        .iter()
        .all(|e| e["timestamp"].is_string() && e["event_id"].is_string()));

    // Filters, and pages through the cursor.
    let bobs = l
        .call("GET", "/api/_audit?principal=bob", Some("aud"), None)
        .await;
    assert_eq!(items(&bobs.json).len(), 2, "{}", bobs.json);
    let of_b = l
        .call(
            "GET",
            &format!(
                "/api/_audit?id={}&model=Invoice",
                b["id"].as_str().expect("id")
            ),
            Some("aud"),
            None,
        )
        .await;
    assert_eq!(items(&of_b.json).len(), 2, "{}", of_b.json);
    let mut cursor: Option<u64> = None;
    let mut walked = 0;
    loop {
        let q = match cursor {
            Some(c) => format!("/api/_audit?limit=1&cursor={c}"),
            None => "/api/_audit?limit=1".to_string(),
        };
        let page = l.call("GET", &q, Some("aud"), None).await;
        walked += items(&page.json).len();
        match page.json["next_cursor"].as_u64() {
            // A cursor that does not move would walk forever.
            Some(c) => {
                assert!(cursor.is_none_or(|before| c != before), "{}", page.json);
                cursor = Some(c);
            }
            None => break,
        }
        assert!(walked <= 5, "{}", page.json);
    }
    assert_eq!(walked, 5);
    let future = l
        .call(
            "GET",
            "/api/_audit?since=2999-01-01T00:00:00Z",
            Some("aud"),
            None,
        )
        .await;
    assert!(items(&future.json).is_empty());
    for bad in [
        "model=Plain",
        "model=Nope",
        "id=x",
        "since=yesterday",
        "limit=0",
        "colour=red",
    ] {
        let a = l
            .call("GET", &format!("/api/_audit?{bad}"), Some("aud"), None)
            .await;
        assert_eq!(a.status, 400, "{bad}: {}", a.json);
    }
    // Only the audit roles read it.
    assert_eq!(
        l.call("GET", "/api/_audit", Some("ann"), None).await.status,
        403
    );
    assert_eq!(l.call("GET", "/api/_audit", None, None).await.status, 401);
    l.svc.shutdown().await;

    // Rebuilt from the event log after a restart.
    let l = Ledger::start(dir.path(), &config, &tokens).await;
    let again = l.call("GET", "/api/_audit", Some("aud"), None).await;
    assert_eq!(again.json, log.json);
    l.svc.shutdown().await;
}
