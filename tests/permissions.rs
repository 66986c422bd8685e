//! Field- and row-level permissions, in process: a schema compiled by the generator's
//! library, the runtime's whole pipeline and a real store in a temp dir.
//!
//! - Field masks: a field with `permissions: { read }` is absent from everything a
//!   caller without the role receives (get, list, create and update answers, action
//!   answers, linearizable reads), and filtering or sorting on it is a 403; a write of a
//!   field without its `write` role is a 403 naming it, while a PUT that leaves it out or
//!   unchanged keeps it.
//! - Ownership: `owner_field` is filled with the caller's subject, and the pseudo-role
//!   `owner` grants read, update and delete on the caller's own records only (a list
//!   holds only them and `total` counts only them; another's record is 404, or 403 where
//!   the caller may read it).

#[path = "support/compiled.rs"]
mod compiled;

use std::collections::HashMap;
use std::sync::Arc;

use lithair_runtime::prelude::*;
use lithair_runtime::testing::{mint_token, Actions, Answer, InProcess};

const SCHEMA: &str = r#"
service: { name: desk }
roles:
  - staff
  - { name: manager, inherits: [staff] }
  - { name: admin, inherits: [manager] }
  - writer
  - moderator
models:
  Product:
    permissions: { read: [public], create: [staff], update: [staff], delete: [admin] }
    fields:
      name: { type: string, indexed: true }
      price: float
      cost: { type: float, optional: true, indexed: true, permissions: { read: [manager], write: [admin] } }
      supplier: { type: string, optional: true, permissions: { read: [manager] } }
    actions:
      peek: { method: POST, path: "{id}/peek", permission: [staff] }
  Post:
    owner_field: author
    permissions: { read: [owner, moderator], create: [writer, moderator], update: [owner, moderator], delete: [owner, moderator] }
    fields:
      author: string
      title: string
  Comment:
    owner_field: by
    permissions: { read: [public], create: [writer], update: [owner], delete: [owner] }
    fields:
      by: string
      text: string
"#;

/// The hooks of `Product`: its action `peek` answers with the record it is called on,
/// as handlers often do.
fn peek_hooks() -> Box<dyn ModelHooks> {
    Box::new(Actions(
        |ctx: ActionContext, id: Option<Uuid>, _: Value| -> BoxFuture<'static, ActionResult> {
            Box::pin(async move {
                let record = id
                    .and_then(|id| ctx.get_json(&ctx.model, id))
                    .unwrap_or(Value::Null);
                // One record, and a list of them: both are masked.
                Ok(ActionResponse {
                    status: 200,
                    body: json!([record.clone(), record]),
                })
            })
        },
    ))
}

struct Desk {
    svc: InProcess,
    tokens: HashMap<&'static str, String>,
    openapi: Value,
    _dir: tempfile::TempDir,
}

impl Desk {
    async fn start() -> Desk {
        let (service, openapi) = compiled::service("desk.yaml", SCHEMA);
        let service = service.with_hooks("Product", peek_hooks());
        let mut config = String::new();
        let mut tokens = HashMap::new();
        for (name, role) in [
            ("staff", "staff"),
            ("manager", "manager"),
            ("admin", "admin"),
            ("alice", "writer"),
            ("bob", "writer"),
            ("mod", "moderator"),
        ] {
            let (token, table) = mint_token(name, &[role]);
            config.push_str(&table);
            tokens.insert(name, token);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let svc = InProcess::start(service, &config, dir.path())
            .await
            .expect("start");
        Desk {
            svc,
            tokens,
            openapi,
            _dir: dir,
        }
    }

    /// `method path` as the token named `who` (None: anonymous).
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

    async fn create(&self, path: &str, who: &str, body: Value) -> Value {
        let a = self.call("POST", path, Some(who), Some(body)).await;
        assert_eq!(a.status, 201, "{}", a.json);
        a.json
    }
}

fn id(record: &Value) -> String {
    record["id"].as_str().expect("an id").to_string()
}

/// The `field` of every listed item.
fn column(a: &Answer, field: &str) -> Vec<Value> {
    a.json["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {}", a.json))
        .iter()
        .map(|i| i.get(field).cloned().unwrap_or(Value::Null))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_is_absent_from_everything_a_caller_without_its_read_role_receives() {
    let desk = Desk::start().await;
    let p = desk
        .create(
            "/api/products",
            "admin",
            json!({"name": "Hammer", "price": 9.5, "cost": 4.25, "supplier": "Acme"}),
        )
        .await;
    assert_eq!(
        (p["cost"].clone(), p["supplier"].clone()),
        (json!(4.25), json!("Acme"))
    );
    let item = format!("/api/products/{}", id(&p));

    for who in [None, Some("staff")] {
        let got = desk.call("GET", &item, who, None).await;
        assert_eq!(got.status, 200, "{}", got.json);
        assert_eq!(got.json["name"], "Hammer");
        assert!(
            got.json.get("cost").is_none() && got.json.get("supplier").is_none(),
            "{who:?}: {}",
            got.json
        );
        let text = String::from_utf8_lossy(&got.bytes).to_string();
        assert!(!text.contains("4.25") && !text.contains("Acme"), "{text}");
        let linearizable = desk
            .call(
                "GET",
                &format!("{item}?consistency=linearizable"),
                who,
                None,
            )
            .await;
        assert!(
            linearizable.json.get("cost").is_none(),
            "{}",
            linearizable.json
        );
        let list = desk.call("GET", "/api/products", who, None).await;
        assert_eq!(list.status, 200, "{}", list.json);
        assert_eq!(column(&list, "cost"), vec![Value::Null]);
        assert!(!String::from_utf8_lossy(&list.bytes).contains("Acme"));
    }
    let seen = desk.call("GET", &item, Some("manager"), None).await;
    assert_eq!(
        (seen.json["cost"].clone(), seen.json["supplier"].clone()),
        (json!(4.25), json!("Acme"))
    );

    // Filtering or sorting on a hidden field is no oracle: 403, for each spelling.
    for query in [
        "cost=4.25",
        "cost[gt]=1",
        "sort=-cost",
        "sort=name,cost",
        "supplier=Acme",
        "name=Hammer&supplier[ne]=x",
    ] {
        let a = desk
            .call(
                "GET",
                &format!("/api/products?{query}"),
                Some("staff"),
                None,
            )
            .await;
        assert_eq!(a.status, 403, "{query}: {}", a.json);
        assert!(
            a.json["detail"]
                .as_str()
                .unwrap_or("")
                .contains("filter or sort"),
            "{}",
            a.json
        );
        let m = desk
            .call(
                "GET",
                &format!("/api/products?{query}"),
                Some("manager"),
                None,
            )
            .await;
        assert_eq!(m.status, 200, "{query}: {}", m.json);
    }
    let cheap = desk
        .call("GET", "/api/products?cost[lt]=5", Some("manager"), None)
        .await;
    assert_eq!(cheap.json["total"], 1, "{}", cheap.json);

    // A staff member's own writes are answered without the hidden fields too.
    let patched = desk
        .call("PATCH", &item, Some("staff"), Some(json!({"price": 11.0})))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.json);
    assert!(patched.json.get("cost").is_none(), "{}", patched.json);
    let created = desk
        .call(
            "POST",
            "/api/products",
            Some("staff"),
            Some(json!({"name": "Saw", "price": 20.0})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert!(created
        .json
        .as_object()
        .is_some_and(|o| !o.contains_key("cost") && !o.contains_key("supplier")));

    // An action's answer built from records is masked, one record or a list of them.
    let peek = desk
        .call("POST", &format!("{item}/peek"), Some("staff"), None)
        .await;
    assert_eq!(peek.status, 200, "{}", peek.json);
    for r in peek.json.as_array().expect("two records") {
        assert_eq!(r["name"], "Hammer");
        assert!(
            r.get("cost").is_none() && r.get("supplier").is_none(),
            "{r}"
        );
    }
    let managed = desk
        .call("POST", &format!("{item}/peek"), Some("manager"), None)
        .await;
    assert_eq!(managed.json[0]["cost"], json!(4.25), "{}", managed.json);
    desk.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_is_set_only_by_its_write_roles_and_a_put_keeps_what_it_leaves_out() {
    let desk = Desk::start().await;
    // Setting a field without its write role is a 403 that names every such field.
    let refused = desk
        .call(
            "POST",
            "/api/products",
            Some("staff"),
            Some(json!({"name": "Saw", "price": 20.0, "cost": 1.0, "supplier": "X"})),
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.json);
    let fields: Vec<&str> = refused.json["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["cost", "supplier"], "{}", refused.json);
    // A manager reads `cost` but may not set it; `supplier` follows its read roles.
    let m = desk
        .call(
            "POST",
            "/api/products",
            Some("manager"),
            Some(json!({"name": "Saw", "price": 20.0, "cost": 1.0})),
        )
        .await;
    assert_eq!(m.status, 403, "{}", m.json);
    let p = desk
        .create(
            "/api/products",
            "admin",
            json!({"name": "Saw", "price": 20.0, "cost": 7.5, "supplier": "Acme"}),
        )
        .await;
    let item = format!("/api/products/{}", id(&p));

    // PATCH: a hidden or fixed field in the patch is refused; others go through.
    let a = desk
        .call("PATCH", &item, Some("staff"), Some(json!({"cost": 1.0})))
        .await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert_eq!(a.json["errors"][0]["field"], "cost", "{}", a.json);
    let a = desk
        .call(
            "PATCH",
            &item,
            Some("manager"),
            Some(json!({"supplier": "Bolt"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    // PUT without the fields the caller does not see keeps them.
    let a = desk
        .call(
            "PUT",
            &item,
            Some("staff"),
            Some(json!({"name": "Big saw", "price": 25.0})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let now = desk.call("GET", &item, Some("admin"), None).await;
    assert_eq!(
        (
            now.json["name"].clone(),
            now.json["cost"].clone(),
            now.json["supplier"].clone()
        ),
        (json!("Big saw"), json!(7.5), json!("Bolt")),
        "{}",
        now.json
    );
    // A PUT that sends a fixed field unchanged is fine; changed, it is a 403.
    let same = json!({"name": "Big saw", "price": 26.0, "cost": 7.5, "supplier": "Bolt"});
    let a = desk.call("PUT", &item, Some("manager"), Some(same)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let changed = json!({"name": "Big saw", "price": 26.0, "cost": 3.0, "supplier": "Bolt"});
    let a = desk
        .call("PUT", &item, Some("manager"), Some(changed))
        .await;
    assert_eq!(a.status, 403, "{}", a.json);
    let a = desk
        .call("PATCH", &item, Some("admin"), Some(json!({"cost": null})))
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(a.json.get("cost").is_none(), "{}", a.json);
    desk.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_read_and_change_only_their_own_records() {
    let desk = Desk::start().await;
    // The owner field is the caller's subject, filled by the server.
    let a1 = desk
        .create("/api/posts", "alice", json!({"title": "one"}))
        .await;
    assert_eq!(a1["author"], "alice");
    let a2 = desk
        .create(
            "/api/posts",
            "alice",
            json!({"title": "two", "author": "alice"}),
        )
        .await;
    let b1 = desk
        .create("/api/posts", "bob", json!({"title": "three"}))
        .await;
    assert_eq!(b1["author"], "bob");
    // Naming another owner needs a role that may change others' records.
    let forged = desk
        .call(
            "POST",
            "/api/posts",
            Some("alice"),
            Some(json!({"title": "x", "author": "bob"})),
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.json);
    assert_eq!(forged.json["errors"][0]["field"], "author");
    let carol = desk
        .create(
            "/api/posts",
            "mod",
            json!({"title": "four", "author": "carol"}),
        )
        .await;
    assert_eq!(carol["author"], "carol");

    // Lists: only one's own records, and `total` counts only those.
    let mine = desk.call("GET", "/api/posts", Some("alice"), None).await;
    assert_eq!(mine.status, 200, "{}", mine.json);
    assert_eq!(mine.json["total"], 2, "{}", mine.json);
    assert_eq!(column(&mine, "title"), [json!("one"), json!("two")]);
    let theirs = desk
        .call("GET", "/api/posts?author=bob", Some("alice"), None)
        .await;
    assert_eq!(theirs.json["total"], 0, "{}", theirs.json);
    let page = desk
        .call("GET", "/api/posts?limit=1&sort=-title", Some("alice"), None)
        .await;
    assert_eq!(
        (page.json["total"].clone(), column(&page, "title")),
        (json!(2), vec![json!("two")])
    );
    let all = desk.call("GET", "/api/posts", Some("mod"), None).await;
    assert_eq!(all.json["total"], 4, "{}", all.json);
    assert_eq!(desk.call("GET", "/api/posts", None, None).await.status, 401);

    // Another's record does not exist for a caller who reads only its own.
    let alices = format!("/api/posts/{}", id(&a1));
    assert_eq!(
        desk.call("GET", &alices, Some("bob"), None).await.status,
        404
    );
    assert_eq!(
        desk.call("GET", &alices, Some("alice"), None).await.status,
        200
    );
    assert_eq!(
        desk.call("GET", &alices, Some("mod"), None).await.status,
        200
    );
    let a = desk
        .call(
            "PATCH",
            &alices,
            Some("bob"),
            Some(json!({"title": "mine now"})),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.json);
    assert_eq!(
        desk.call("DELETE", &alices, Some("bob"), None).await.status,
        404
    );

    // The owner changes its record, but not who owns it.
    let a = desk
        .call(
            "PATCH",
            &alices,
            Some("alice"),
            Some(json!({"title": "one, edited"})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["author"].clone()),
        (200, json!("alice")),
        "{}",
        a.json
    );
    let a = desk
        .call(
            "PUT",
            &alices,
            Some("alice"),
            Some(json!({"title": "one, again"})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["author"].clone()),
        (200, json!("alice")),
        "{}",
        a.json
    );
    let a = desk
        .call(
            "PATCH",
            &alices,
            Some("alice"),
            Some(json!({"author": "bob"})),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.json);
    // A moderator hands it over: now it is bob's, and alice no longer sees it.
    let a = desk
        .call(
            "PATCH",
            &alices,
            Some("mod"),
            Some(json!({"author": "bob"})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["author"].clone()),
        (200, json!("bob")),
        "{}",
        a.json
    );
    assert_eq!(
        desk.call("GET", &alices, Some("alice"), None).await.status,
        404
    );
    let bobs = desk.call("GET", "/api/posts", Some("bob"), None).await;
    assert_eq!(bobs.json["total"], 2, "{}", bobs.json);
    assert_eq!(
        desk.call("DELETE", &alices, Some("alice"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        desk.call("DELETE", &alices, Some("bob"), None).await.status,
        204
    );
    let a2 = format!("/api/posts/{}", id(&a2));
    assert_eq!(
        desk.call("DELETE", &a2, Some("alice"), None).await.status,
        204
    );
    desk.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_others_may_read_but_only_its_owner_change_answers_403() {
    let desk = Desk::start().await;
    let c = desk
        .create("/api/comments", "alice", json!({"text": "first"}))
        .await;
    let item = format!("/api/comments/{}", id(&c));
    // Everyone reads it (read is public), so its existence is no secret: 403.
    assert_eq!(desk.call("GET", &item, Some("bob"), None).await.status, 200);
    let a = desk
        .call("PATCH", &item, Some("bob"), Some(json!({"text": "edited"})))
        .await;
    assert_eq!(a.status, 403, "{}", a.json);
    assert!(
        a.json["detail"].as_str().unwrap_or("").contains("owner"),
        "{}",
        a.json
    );
    assert_eq!(
        desk.call("DELETE", &item, Some("bob"), None).await.status,
        403
    );
    // An anonymous caller owns nothing: it needs a token.
    assert_eq!(desk.call("DELETE", &item, None, None).await.status, 401);
    let a = desk
        .call(
            "PATCH",
            &item,
            Some("alice"),
            Some(json!({"text": "edited"})),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(
        desk.call("DELETE", &item, Some("alice"), None).await.status,
        204
    );
    // The list of a public model holds everyone's records.
    desk.create("/api/comments", "bob", json!({"text": "b"}))
        .await;
    desk.create("/api/comments", "alice", json!({"text": "a"}))
        .await;
    let all = desk.call("GET", "/api/comments", None, None).await;
    assert_eq!(all.json["total"], 2, "{}", all.json);
    desk.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_says_who_sees_and_sets_which_field() {
    let desk = Desk::start().await;
    let doc = Arc::new(desk.openapi.clone());
    let product = &doc["components"]["schemas"]["Product"]["properties"];
    let cost = &product["cost"]["oneOf"][0];
    assert_eq!(cost["x-lithair-read-roles"], json!(["manager"]), "{cost}");
    assert_eq!(cost["x-lithair-write-roles"], json!(["admin"]), "{cost}");
    assert!(
        cost["description"]
            .as_str()
            .unwrap_or("")
            .contains("manager"),
        "{cost}"
    );
    let supplier = &product["supplier"]["oneOf"][0];
    assert_eq!(
        supplier["x-lithair-write-roles"],
        json!(["manager"]),
        "{supplier}"
    );
    let post = &doc["components"]["schemas"]["Post"]["properties"]["author"];
    assert!(
        post["description"].as_str().unwrap_or("").contains("owner"),
        "{post}"
    );
    let list = doc["paths"]["/api/posts"]["get"]["description"]
        .as_str()
        .unwrap_or("");
    assert!(list.contains("only its own records"), "{list}");
    desk.svc.shutdown().await;
}
