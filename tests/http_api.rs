//! The shop's HTTP contract, in process: the schema is compiled from `examples/shop.yaml`
//! by the generator's library, and the runtime's whole pipeline (firewall, router,
//! authentication, authorization, body, endpoints, engine, a real store in a temp dir) is
//! called without a socket. The status codes, validation, permissions and list queries
//! are tested here; `http_shop.rs` keeps what only the built binary shows.

use std::collections::HashMap;

use lithair_runtime::testing::{mint_token, Answer, InProcess};
use lithair_runtime::Service;
use serde_json::{json, Value};

/// The shop's `spec.json` and OpenAPI document, as `lithair-gen` writes them.
fn shop_schema() -> (String, &'static str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shop.yaml");
    let text = std::fs::read_to_string(path).expect("examples/shop.yaml");
    let schema = lithair_gen::schema::check(&text).unwrap_or_else(|d| {
        panic!(
            "{}",
            lithair_gen::schema::render_diagnostics("shop.yaml", &text, &d, false)
        )
    });
    let spec = serde_json::to_string(&schema).expect("spec.json");
    let openapi = serde_json::to_string(&lithair_gen::render::openapi::document(&schema))
        .expect("openapi.json");
    (spec, Box::leak(openapi.into_boxed_str()))
}

/// A running shop with one token per role.
struct Shop {
    svc: InProcess,
    tokens: HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

impl Shop {
    async fn start() -> Shop {
        Shop::with_config("").await
    }

    /// Starts with `extra` settings after the tokens.
    async fn with_config(extra: &str) -> Shop {
        let (spec, openapi) = shop_schema();
        let service = Service::from_spec_json(&spec)
            .expect("spec")
            .with_openapi(openapi);
        let mut config = String::new();
        let mut tokens = HashMap::new();
        for role in ["viewer", "editor", "admin"] {
            let (token, table) = mint_token(role, &[role]);
            config.push_str(&table);
            tokens.insert(role, token);
        }
        config.push_str(extra);
        let dir = tempfile::tempdir().expect("temp dir");
        let svc = InProcess::start(service, &config, dir.path())
            .await
            .expect("start the shop");
        Shop {
            svc,
            tokens,
            _dir: dir,
        }
    }

    /// `method path` as `role` (None: anonymous), with a JSON body and more headers.
    async fn call(
        &self,
        method: &str,
        path: &str,
        role: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let bearer = role.map(|r| format!("Bearer {}", self.tokens[r]));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(b) = &bearer {
            all.push(("authorization", b));
        }
        self.svc.send(method, path, &all, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, None, None, &[]).await
    }

    async fn category(&self, name: &str) -> String {
        let a = self
            .call(
                "POST",
                "/api/categories",
                Some("editor"),
                Some(&json!({ "name": name })),
                &[],
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.json);
        a.json["id"].as_str().expect("id").to_string()
    }

    async fn product(&self, cat: &str, sku: &str, price: f64) -> Answer {
        let body =
            json!({"name": format!("Item {sku}"), "sku": sku, "price": price, "category": cat});
        self.call("POST", "/api/products", Some("editor"), Some(&body), &[])
            .await
    }

    /// Sends `body` as it is, with `content_type`.
    async fn raw(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Answer {
        let token = format!("Bearer {}", self.tokens["editor"]);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", token)
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
                body,
            )))
            .expect("request");
        lithair_runtime::testing::read(self.svc.call(req).await).await
    }
}

fn prices(a: &Answer) -> Vec<f64> {
    a.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["price"].as_f64().expect("price"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_follows_the_http_contract() {
    let shop = Shop::start().await;
    let ed = Some("editor");
    let cat = shop.category("Tools").await;

    let created = shop.product(&cat, "HM-1", 9.5).await;
    assert_eq!(created.status, 201, "{}", created.json);
    let id = created.json["id"].as_str().expect("id").to_string();
    let item = format!("/api/products/{id}");
    assert_eq!(created.header("location"), Some(item.as_str()));
    assert_eq!(created.header("etag"), Some("\"1\""));
    assert_eq!(created.json["stock"], 0, "default applied");
    assert_eq!(created.json["status"], "draft");
    assert_eq!(created.json["version"], 1);

    let got = shop.get(&item).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("etag"), Some("\"1\""));
    assert_eq!(got.json, created.json);

    // PATCH is a JSON merge patch; PUT replaces.
    let patch = json!({"stock": 5, "tags": ["a"]});
    let patched = shop
        .call("PATCH", &item, ed, Some(&patch), &[("if-match", "\"1\"")])
        .await;
    assert_eq!(patched.status, 200, "{}", patched.json);
    assert_eq!(patched.json["stock"], 5);
    assert_eq!(patched.json["name"], "Item HM-1");
    assert_eq!(patched.json["version"], 2);
    assert_eq!(patched.header("etag"), Some("\"2\""));
    let stale = shop
        .call(
            "PATCH",
            &item,
            ed,
            Some(&json!({"stock": 6})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(stale.status, 412);
    let mut full = patched.json.clone();
    full["price"] = json!(12.0);
    let put = shop.call("PUT", &item, ed, Some(&full), &[]).await;
    assert_eq!(put.status, 200, "{}", put.json);
    assert_eq!(put.json["price"], 12.0);
    assert_eq!(put.json["created_at"], created.json["created_at"]);
    let merge = shop
        .raw(
            "PATCH",
            &item,
            "application/merge-patch+json",
            b"{\"stock\": 7}",
        )
        .await;
    assert_eq!(merge.status, 200, "{}", merge.json);
    assert_eq!(merge.json["stock"], 7);

    // Immutable and unique fields; several failing fields at once.
    let immut = shop
        .call("PATCH", &item, ed, Some(&json!({"sku": "OTHER"})), &[])
        .await;
    assert_eq!(immut.status, 422);
    assert_eq!(immut.json["errors"][0]["code"], "immutable");
    let dup = shop.product(&cat, "HM-1", 1.0).await;
    assert_eq!(dup.status, 409, "{}", dup.json);
    assert_eq!(dup.header("content-type"), Some("application/problem+json"));
    let bad = json!({"name": "", "sku": "lower case", "price": -1, "stock": "many", "status": "gone", "extra": true});
    let bad = shop
        .call("POST", "/api/products", ed, Some(&bad), &[])
        .await;
    assert_eq!(bad.status, 422);
    let fields: Vec<&str> = bad.json["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    for f in [
        "name", "sku", "price", "stock", "status", "category", "extra",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    let nobody = "00000000-0000-4000-8000-000000000000";
    let missing_ref = shop.product(nobody, "REF-1", 1.0).await;
    assert_eq!(missing_ref.status, 422);
    assert_eq!(missing_ref.json["errors"][0]["code"], "ref");

    // Status codes of the contract.
    assert_eq!(
        shop.get(&format!("/api/products/{nobody}")).await.status,
        404
    );
    assert_eq!(shop.get("/api/products/not-a-uuid").await.status, 404);
    let not_allowed = shop.call("DELETE", "/api/products", ed, None, &[]).await;
    assert_eq!(not_allowed.status, 405);
    assert_eq!(not_allowed.header("allow"), Some("GET, POST"));
    let text = shop.raw("POST", "/api/products", "text/plain", b"{}").await;
    assert_eq!(text.status, 415);
    let cut = shop
        .raw("POST", "/api/products", "application/json", b"{\"a\":")
        .await;
    assert_eq!(cut.status, 400);
    // The schema has the action; without a handler behind it (the runtime's default) it
    // is not found. Its typed input is checked before: a create's 422, every field named.
    let action = shop
        .call(
            "POST",
            &format!("{item}/restock"),
            ed,
            Some(&json!({"quantity": 3})),
            &[],
        )
        .await;
    assert_eq!(action.status, 404, "{}", action.json);
    let refused = shop
        .call(
            "POST",
            &format!("{item}/restock"),
            ed,
            Some(&json!({"quantity": 20000, "units": 3})),
            &[],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.json);
    assert_eq!(
        refused.json["errors"].as_array().map(Vec::len),
        Some(2),
        "{}",
        refused.json
    );

    let deleted = shop.call("DELETE", &item, Some("admin"), None, &[]).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(shop.get(&item).await.status, 404);
    let again = shop.call("DELETE", &item, Some("admin"), None, &[]).await;
    assert_eq!(again.status, 404);
    assert_eq!(shop.get("/health").await.status, 200);
    assert_eq!(shop.get("/ready").await.status, 200);
    let api = shop.get("/openapi.json").await;
    assert_eq!(api.json["openapi"], "3.1.0");
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_sorts_and_filters() {
    let shop = Shop::start().await;
    let cat = shop.category("Lists").await;
    for (i, price) in [5.0, 1.0, 4.0, 2.0, 3.0].iter().enumerate() {
        let p = shop.product(&cat, &format!("L-{i}"), *price).await;
        assert_eq!(p.status, 201, "{}", p.json);
    }
    let all = shop.get("/api/products?sort=price").await;
    assert_eq!(prices(&all), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(all.json["total"], 5);
    let page = shop.get("/api/products?sort=-price&limit=2&offset=1").await;
    assert_eq!(prices(&page), vec![4.0, 3.0]);
    assert_eq!(page.json["total"], 5);
    let some = shop.get("/api/products?sku=L-3").await;
    assert_eq!(some.json["total"], 1);
    assert_eq!(some.json["items"][0]["price"], 2.0);
    let id = some.json["items"][0]["id"].as_str().expect("id");
    let published = json!({"status": "published"});
    let path = format!("/api/products/{id}");
    let p = shop
        .call("PATCH", &path, Some("editor"), Some(&published), &[])
        .await;
    assert_eq!(p.status, 200, "{}", p.json);
    let published = shop.get("/api/products?status=published").await;
    assert_eq!(published.json["total"], 1, "indexed filter sees the change");
    // Ranges, with the brackets as they are or percent-encoded, and `ne`.
    let range = shop
        .get("/api/products?price[gt]=1.5&price%5Blte%5D=4&sort=-price")
        .await;
    assert_eq!(prices(&range), vec![4.0, 3.0, 2.0]);
    assert_eq!(range.json["total"], 3);
    let others = shop
        .get("/api/products?status[ne]=published&sort=price")
        .await;
    assert_eq!(prices(&others), vec![1.0, 3.0, 4.0, 5.0]);
    let since = shop
        .get(&format!(
            "/api/products?created_at[gte]={}&limit=1",
            page.json["items"][0]["created_at"]
                .as_str()
                .expect("created_at")
        ))
        .await;
    assert_eq!(since.status, 200, "{}", since.json);
    assert!(since.json["total"].as_u64().expect("total") >= 1);
    for bad in [
        "/api/products?status[gt]=draft",
        "/api/products?price[about]=3",
        "/api/products?status=nope",
        "/api/products?colour=red",
        "/api/products?sort=colour",
        "/api/products?limit=-1",
    ] {
        assert_eq!(shop.get(bad).await.status, 400, "{bad}");
    }
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queries_are_bounded() {
    let shop = Shop::start().await;
    let nine = "name,-name,id,-id,created_at,updated_at,version,-version,description";
    let a = shop.get(&format!("/api/categories?sort={nine}")).await;
    assert_eq!(a.status, 400, "{}", a.json);
    assert!(
        a.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 8 sort keys"),
        "{}",
        a.json
    );
    let a = shop.get("/api/categories?name=a&name[ne]=b&name=c").await;
    assert_eq!(a.status, 400, "{}", a.json);
    assert!(
        a.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("the filter `name` is given twice"),
        "{}",
        a.json
    );
    for bad in ["name,", ",name", "name,,id", "-"] {
        let a = shop.get(&format!("/api/categories?sort={bad}")).await;
        assert_eq!(a.status, 400, "sort={bad}: {}", a.json);
    }
    // Every filter parameter of the document at once is taken.
    let all: Vec<String> = ["eq", "ne", "gt", "gte", "lt", "lte"]
        .iter()
        .flat_map(|op| {
            [
                format!("name[{op}]=m"),
                format!("created_at[{op}]=2026-01-01T00:00:00Z"),
            ]
        })
        .chain(["name=m".to_string(), "sort=".to_string()])
        .collect();
    let a = shop
        .get(&format!("/api/categories?{}", all.join("&")))
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let ok = shop.get("/api/categories?sort=-name,id&name=x").await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_per_role_deny_by_default() {
    let shop = Shop::start().await;
    let body = json!({"name": "Perm"});
    let cats = "/api/categories";
    let anonymous = shop.call("POST", cats, None, Some(&body), &[]).await;
    assert_eq!(anonymous.status, 401);
    let nonsense = shop
        .svc
        .send(
            "POST",
            cats,
            &[("authorization", "Bearer nonsense")],
            Some(&body),
        )
        .await;
    assert_eq!(nonsense.status, 401);
    let viewer = shop
        .call("POST", cats, Some("viewer"), Some(&body), &[])
        .await;
    assert_eq!(viewer.status, 403);
    let created = shop
        .call("POST", cats, Some("editor"), Some(&body), &[])
        .await;
    assert_eq!(created.status, 201);
    let id = created.json["id"].as_str().expect("id");
    let one = format!("{cats}/{id}");
    let editor = shop.call("DELETE", &one, Some("editor"), None, &[]).await;
    assert_eq!(editor.status, 403);
    // admin inherits editor: it may create too, and delete.
    let adm = json!({"name": "Adm"});
    let admin = shop
        .call("POST", cats, Some("admin"), Some(&adm), &[])
        .await;
    assert_eq!(admin.status, 201);
    let admin = shop.call("DELETE", &one, Some("admin"), None, &[]).await;
    assert_eq!(admin.status, 204);
    // Customers: anyone may sign up, only viewers (and roles above) may read.
    let signup = json!({"email": "a@b.co", "name": "A"});
    let c = shop
        .call("POST", "/api/customers", None, Some(&signup), &[])
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(shop.get("/api/customers").await.status, 401);
    for role in ["viewer", "admin"] {
        let a = shop
            .call("GET", "/api/customers", Some(role), None, &[])
            .await;
        assert_eq!(a.status, 200, "{role}");
    }
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_never_a_5xx() {
    let shop = Shop::start().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{".to_vec(), "application/json"),
        (b"[1,2".to_vec(), "application/json"),
        (b"\"just a string\"".to_vec(), "application/json"),
        (b"{\"name\": 12}".to_vec(), "application/json"),
        (b"{\"name\": 1e999999}".to_vec(), "application/json"),
        (b"{\"name\": \"\xff\xfe\"}".to_vec(), "application/json"),
        (deep.into_bytes(), "application/json"),
        (
            b"{\"name\": \"ok\", \"unknown\": {\"a\": [1,2,3]}}".to_vec(),
            "application/json",
        ),
        (b"{\"name\": \"x\"}".to_vec(), "text/html"),
        (b"".to_vec(), "application/json"),
    ];
    for (body, ctype) in cases {
        let a = shop.raw("POST", "/api/categories", ctype, &body).await;
        assert!(
            (400..500).contains(&a.status),
            "body {:?}… got {}",
            String::from_utf8_lossy(&body[..body.len().min(40)]),
            a.status
        );
    }
    let big = vec![b' '; 2 * 1024 * 1024];
    let a = shop
        .raw("POST", "/api/categories", "application/json", &big)
        .await;
    assert_eq!(a.status, 413);
    let id = shop.category("Odd").await;
    for p in [
        "/api/categories/".to_string(),
        format!("/api/categories/{id}/nothing"),
        "/api/categories/%ZZ".to_string(),
        "/api/categories?limit=abc".to_string(),
        "/api/categories?%ff=1".to_string(),
        "/nowhere".to_string(),
        "/api/products/1/restock/more".to_string(),
    ] {
        let status = shop.get(&p).await.status;
        assert!((400..500).contains(&status), "{p} got {status}");
    }
    let one = format!("/api/categories/{id}");
    let a = shop
        .call(
            "PATCH",
            &one,
            Some("editor"),
            Some(&json!({})),
            &[("if-match", "\"abc\"")],
        )
        .await;
    assert_eq!(a.status, 412);
    // An empty If-Match, or one that is no list of ETags, is the client's syntax error; a
    // list naming the current version among others that name none is taken, and so is an
    // unquoted tag.
    for bad in [" ", "\"1", "\"1\",", "1,,2", "\"a b\"", "a b", "W/\"1"] {
        for method in ["PATCH", "DELETE"] {
            let body = (method == "PATCH").then(|| json!({}));
            let who = if method == "DELETE" {
                "admin"
            } else {
                "editor"
            };
            let a = shop
                .call(method, &one, Some(who), body.as_ref(), &[("if-match", bad)])
                .await;
            assert_eq!(a.status, 400, "{method} If-Match {bad:?}: {}", a.json);
        }
        let a = shop
            .call("GET", &one, Some("editor"), None, &[("if-none-match", bad)])
            .await;
        assert_eq!(a.status, 400, "If-None-Match {bad:?}: {}", a.json);
    }
    let a = shop
        .call(
            "PATCH",
            &one,
            Some("editor"),
            Some(&json!({})),
            &[("if-match", "\"x\", W/\"1\"")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.json);
    let a = shop
        .call(
            "PATCH",
            &one,
            Some("editor"),
            Some(&json!({})),
            &[(
                "if-match",
                a.header("etag").unwrap_or_default().trim_matches('"'),
            )],
        )
        .await;
    assert_eq!(a.status, 200, "an unquoted tag: {}", a.json);
    assert_eq!(shop.get("/health").await.status, 200, "still alive");
    shop.svc.shutdown().await;
}

/// Every read the document says takes `consistency` (the query parameter and its header)
/// takes `local` and `linearizable`, and refuses any other value with a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_documented_with_consistency_takes_it() {
    let shop = Shop::start().await;
    let doc: Value = serde_json::from_str(shop_schema().1).expect("document");
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().expect("paths") {
        let Some(params) = item["get"]["parameters"].as_array() else {
            continue;
        };
        let takes = |name: &str| params.iter().any(|p| p["name"] == name);
        if !takes("consistency") {
            continue;
        }
        assert!(takes("X-Lithair-Consistency"), "{template}: the header too");
        let path = template
            .replace("{id}", "9b2f4c1e-0000-4000-8000-000000000001")
            .replace("{v}", "1");
        for value in ["local", "linearizable"] {
            let a = shop
                .call(
                    "GET",
                    &format!("{path}?consistency={value}"),
                    Some("admin"),
                    None,
                    &[],
                )
                .await;
            assert!(matches!(a.status, 200 | 404), "{path} {value}: {}", a.json);
            let a = shop
                .call(
                    "GET",
                    &path,
                    Some("admin"),
                    None,
                    &[("x-lithair-consistency", value)],
                )
                .await;
            assert!(matches!(a.status, 200 | 404), "{path} {value}: {}", a.json);
        }
        let a = shop
            .call(
                "GET",
                &format!("{path}?consistency=eventual"),
                Some("admin"),
                None,
                &[],
            )
            .await;
        assert_eq!(a.status, 400, "{path}: {}", a.json);
        let a = shop
            .call(
                "GET",
                &path,
                Some("admin"),
                None,
                &[("x-lithair-consistency", "eventual")],
            )
            .await;
        assert_eq!(a.status, 400, "{path}: {}", a.json);
        // A bad header is refused even beside a good parameter (which wins when both are
        // good).
        let a = shop
            .call(
                "GET",
                &format!("{path}?consistency=local"),
                Some("admin"),
                None,
                &[("x-lithair-consistency", "eventual")],
            )
            .await;
        assert_eq!(a.status, 400, "{path}: {}", a.json);
        checked += 1;
    }
    // Lists, gets, history and versions of orders, and the projection.
    assert!(checked >= 10, "only {checked} reads document consistency");
    shop.svc.shutdown().await;
}

/// The runtime reads `If-Match` and `If-None-Match` by the grammar the document states:
/// random values built from the characters that matter (quotes, commas, `W/`, blanks,
/// `*`) are refused with a 400 exactly when they do not match the document's pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_headers_follow_the_documents_pattern() {
    use rand::{Rng, SeedableRng};
    let shop = Shop::start().await;
    let created = shop
        .call(
            "POST",
            "/api/categories",
            Some("editor"),
            Some(&json!({"name": "Tags"})),
            &[],
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let one = format!(
        "/api/categories/{}",
        created.json["id"].as_str().expect("id")
    );
    let doc: Value = serde_json::from_str(shop_schema().1).expect("document");
    let param = |method: &str, name: &str| -> regex::Regex {
        let params = doc["paths"]["/api/categories/{id}"][method]["parameters"]
            .as_array()
            .expect("parameters");
        let p = params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} of {method}"));
        regex::Regex::new(p["schema"]["pattern"].as_str().expect("pattern")).expect("regex")
    };
    let (if_match, if_none_match) = (param("patch", "If-Match"), param("get", "If-None-Match"));
    let pieces = [
        "\"", ",", " ", "\t", "W/", "W", "/", "*", "1", "a", "#", "~", ", ", "\"1\"",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut taken, mut refused) = (0, 0);
    for _ in 0..600 {
        let value: String = (0..rng.gen_range(1..7))
            .map(|_| pieces[rng.gen_range(0..pieces.len())])
            .collect();
        let matches = if_none_match.is_match(&value);
        assert_eq!(matches, if_match.is_match(&value));
        let got = shop
            .call(
                "GET",
                &one,
                Some("editor"),
                None,
                &[("if-none-match", &value)],
            )
            .await;
        let patched = shop
            .call(
                "PATCH",
                &one,
                Some("editor"),
                Some(&json!({})),
                &[("if-match", &value)],
            )
            .await;
        let trimmed = value.trim_matches([' ', '\t']);
        if matches && !trimmed.is_empty() {
            taken += 1;
            assert!(
                matches!(got.status, 200 | 304),
                "If-None-Match {value:?}: {}",
                got.json
            );
            assert!(
                matches!(patched.status, 200 | 412),
                "If-Match {value:?}: {}",
                patched.json
            );
        } else {
            refused += 1;
            assert_eq!(got.status, 400, "If-None-Match {value:?}: {}", got.json);
            assert_eq!(patched.status, 400, "If-Match {value:?}: {}", patched.json);
        }
    }
    assert!(
        taken > 50 && refused > 50,
        "{taken} taken, {refused} refused"
    );
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_create_safe_to_retry() {
    let shop = Shop::start().await;
    let url = "/api/categories";
    let ed = Some("editor");
    let body = json!({"name": "Once"});
    let key = [("idempotency-key", "order-7f3a")];
    let first = shop.call("POST", url, ed, Some(&body), &key).await;
    assert_eq!(first.status, 201, "{}", first.json);
    let again = shop.call("POST", url, ed, Some(&body), &key).await;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(again.json["id"], first.json["id"]);
    // The same key with another body is the client's mistake.
    let twice = json!({"name": "Twice"});
    let other = shop.call("POST", url, ed, Some(&twice), &key).await;
    assert_eq!(other.status, 422, "{}", other.json);
    // Without a key, the same body is a new request (and here a unique clash).
    let plain = shop.call("POST", url, ed, Some(&body), &[]).await;
    assert_eq!(plain.status, 409, "{}", plain.json);
    let empty = [("idempotency-key", "")];
    let bad = shop.call("POST", url, ed, Some(&body), &empty).await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    assert_eq!(shop.get(url).await.json["total"], 1);
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let shop =
        Shop::with_config("[server.cors]\nallow_origins = [\"https://shop.example\"]\n").await;
    let ok = shop.get("/api/categories").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));
    // Every answer names its request: the client's id, or a new one.
    let made = ok.header("x-request-id").expect("a request id").to_string();
    let next = shop.get("/nowhere").await;
    assert_eq!(next.status, 404);
    let other = next.header("x-request-id").expect("a request id on a 404");
    assert_ne!(other, made);
    let mine = shop
        .svc
        .send(
            "GET",
            "/api/categories",
            &[("x-request-id", "client-7")],
            None,
        )
        .await;
    assert_eq!(mine.header("x-request-id"), Some("client-7"));
    let refused = shop
        .call("DELETE", "/api/categories", None, None, &[])
        .await;
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    // An authenticated answer is not stored, unless its model is a `cache` one.
    let authed = shop
        .call("GET", "/api/products", Some("viewer"), None, &[])
        .await;
    assert_eq!(authed.header("cache-control"), Some("no-store"));
    let cors = shop
        .svc
        .send(
            "GET",
            "/api/categories",
            &[("origin", "https://shop.example")],
            None,
        )
        .await;
    assert_eq!(
        cors.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let elsewhere = shop
        .svc
        .send(
            "GET",
            "/api/categories",
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    assert_eq!(elsewhere.header("access-control-allow-origin"), None);
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_and_lists_have_etags_and_answer_if_none_match_with_304() {
    let shop = Shop::start().await;
    let cat = shop.category("Tools").await;
    let p = shop.product(&cat, "ET-1", 3.0).await;
    let item = format!("/api/products/{}", p.json["id"].as_str().expect("id"));
    let got = shop.get(&item).await;
    assert_eq!(got.header("etag"), Some("\"1\""));
    for tag in ["\"1\"", "W/\"1\"", "\"7\", \"1\"", "*"] {
        let a = shop
            .call("GET", &item, None, None, &[("if-none-match", tag)])
            .await;
        assert_eq!(a.status, 304, "{tag}");
        assert!(a.bytes.is_empty());
        assert_eq!(a.header("etag"), Some("\"1\""));
    }
    let a = shop
        .call("GET", &item, None, None, &[("if-none-match", " ")])
        .await;
    assert_eq!(a.status, 400, "{}", a.json);
    let ed = Some("editor");
    let patched = shop
        .call("PATCH", &item, ed, Some(&json!({"price": 4.0})), &[])
        .await;
    assert_eq!(patched.status, 200, "{}", patched.json);
    let a = shop
        .call("GET", &item, None, None, &[("if-none-match", "\"1\"")])
        .await;
    assert_eq!((a.status, a.header("etag")), (200, Some("\"2\"")));

    // A list's ETag changes with any write to the model, and differs per query.
    let list = shop.get("/api/products?limit=5").await;
    let etag = list.header("etag").expect("a list ETag").to_string();
    let again = shop
        .call(
            "GET",
            "/api/products?limit=5",
            None,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, 304);
    let other = shop.get("/api/products?limit=6").await;
    assert_ne!(other.header("etag"), Some(etag.as_str()));
    // An admin sees `cost`, which anonymous callers and editors do not: another
    // representation, another ETag; the editor's is the anonymous one.
    let full = shop
        .call("GET", "/api/products?limit=5", Some("admin"), None, &[])
        .await;
    assert_ne!(full.header("etag"), Some(etag.as_str()));
    assert_eq!(full.header("vary"), Some("authorization"));
    let masked = shop
        .call("GET", "/api/products?limit=5", ed, None, &[])
        .await;
    assert_eq!(masked.header("etag"), Some(etag.as_str()));
    shop.product(&cat, "ET-2", 5.0).await;
    let after = shop
        .call(
            "GET",
            "/api/products?limit=5",
            None,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(after.status, 200);
    assert_eq!(after.json["total"], 2);
    // A model without `cache` says nothing of caching to anonymous callers.
    assert_eq!(after.header("cache-control"), None);
    shop.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_model_says_how_long_and_its_kept_pages_follow_every_write() {
    let shop = Shop::start().await;
    shop.category("A").await;
    let first = shop.get("/api/categories?sort=name").await;
    assert_eq!(first.header("cache-control"), Some("public, max-age=60"));
    // The same list again is the kept page: the same bytes and ETag.
    let kept = shop.get("/api/categories?sort=name").await;
    assert_eq!(
        (kept.bytes.clone(), kept.header("etag")),
        (first.bytes.clone(), first.header("etag"))
    );
    let one = shop
        .get(&format!(
            "/api/categories/{}",
            first.json["items"][0]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(one.header("cache-control"), Some("public, max-age=60"));
    // A write to the model: the next list is computed again and holds it.
    shop.category("B").await;
    let after = shop.get("/api/categories?sort=name").await;
    assert_eq!(after.json["total"], 2, "{}", after.json);
    assert_ne!(after.header("etag"), first.header("etag"));
    let names: Vec<&str> = after.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["A", "B"]);
    let renamed = shop
        .call(
            "PATCH",
            &format!(
                "/api/categories/{}",
                after.json["items"][0]["id"].as_str().expect("id")
            ),
            Some("editor"),
            Some(&json!({"name": "C"})),
            &[],
        )
        .await;
    assert_eq!(renamed.status, 200);
    let last = shop.get("/api/categories?sort=name").await;
    assert_eq!(last.json["items"][0]["name"], "B", "{}", last.json);
    shop.svc.shutdown().await;
}

/// `/metrics` and `/openapi.json` are public unless `[server] metrics_roles` and
/// `openapi_roles` name roles; membership changes take the roles of `[cluster]
/// admin_roles` (default `admin`); a role the schema does not declare stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operational_routes_take_the_roles_the_config_names() {
    let open = Shop::start().await;
    let metrics = open.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.headers
    );
    // A client that takes only text/plain gets the same text under that name.
    let plain = open
        .call("GET", "/metrics", None, None, &[("accept", "text/plain")])
        .await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&plain.bytes).contains("lithair_raft_term"));
    assert_eq!(open.get("/openapi.json").await.status, 200);
    // A new member's addr is host:port.
    for addr in ["0", "host", ":80", "h:99999", "a b:1"] {
        let a = open
            .call(
                "POST",
                "/_cluster/members",
                Some("admin"),
                Some(&json!({"id": 9, "addr": addr})),
                &[],
            )
            .await;
        assert_eq!(a.status, 400, "addr {addr:?}: {}", a.json);
    }
    // Default membership roles: admin only (the id is checked after the role).
    assert_eq!(member(&open, "editor").await, 403);
    assert_eq!(member(&open, "admin").await, 404);
    open.svc.shutdown().await;

    let guarded = Shop::with_config(
        "\n[server]\nmetrics_roles = [\"admin\"]\nopenapi_roles = [\"viewer\"]\n\n[cluster]\nadmin_roles = [\"editor\"]\n",
    )
    .await;
    let status = |a: Answer| a.status;
    assert_eq!(status(guarded.get("/metrics").await), 401);
    assert_eq!(
        status(
            guarded
                .call("GET", "/metrics", Some("editor"), None, &[])
                .await
        ),
        403
    );
    assert_eq!(
        status(
            guarded
                .call("GET", "/metrics", Some("admin"), None, &[])
                .await
        ),
        200
    );
    assert_eq!(status(guarded.get("/openapi.json").await), 401);
    // viewer, and editor through what it inherits.
    assert_eq!(
        status(
            guarded
                .call("GET", "/openapi.json", Some("editor"), None, &[])
                .await
        ),
        200
    );
    assert_eq!(
        status(guarded.get("/health").await),
        200,
        "health stays public"
    );
    assert_eq!(member(&guarded, "viewer").await, 403);
    assert_eq!(member(&guarded, "editor").await, 404);
    guarded.svc.shutdown().await;

    let (spec, openapi) = shop_schema();
    for bad in [
        "[server]\nmetrics_roles = [\"ops\"]\n",
        "[cluster]\nadmin_roles = [\"root\"]\n",
        "[cluster]\nadmin_roles = [\"public\"]\n",
    ] {
        let service = Service::from_spec_json(&spec)
            .expect("spec")
            .with_openapi(openapi);
        let dir = tempfile::tempdir().expect("temp dir");
        let e = InProcess::start(service, bad, dir.path())
            .await
            .err()
            .expect("a role the schema lacks");
        let e = e.to_string();
        assert!(
            e.contains("unknown role") || e.contains("would let anyone"),
            "{e}"
        );
    }
}

/// A membership change (of a member id that is not a number, so nothing changes) as
/// `role`: 403 without the role, 404 past the role check.
async fn member(shop: &Shop, role: &str) -> u16 {
    shop.call("DELETE", "/_cluster/members/x", Some(role), None, &[])
        .await
        .status
}

/// `/metrics`: every routed request counted by model, operation and status and timed,
/// Raft's term and leadership, the process's memory and descriptors, the store's series
/// under the names they always had, its syncs timed and its batches sized, each stage of
/// a request timed; requests the rate limit refuses are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_model_operation_and_status() {
    let shop = Shop::with_config("\n[firewall.rate_limit]\nper_ip = 1\nburst = 200\n").await;
    let ed = Some("editor");
    let created = shop
        .call(
            "POST",
            "/api/categories",
            ed,
            Some(&json!({"name": "Tools"})),
            &[],
        )
        .await;
    assert_eq!(created.status, 201);
    let refused = shop
        .call(
            "POST",
            "/api/categories",
            ed,
            Some(&json!({"name": ""})),
            &[],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert_eq!(shop.get("/api/categories").await.status, 200);
    let text = String::from_utf8_lossy(&shop.get("/metrics").await.bytes).to_string();
    for line in [
        "lithair_http_requests_total{model=\"Category\",operation=\"create\",status=\"201\"} 1",
        "lithair_http_requests_total{model=\"Category\",operation=\"create\",status=\"422\"} 1",
        "lithair_http_requests_total{model=\"Category\",operation=\"list\",status=\"200\"} 1",
        "lithair_http_request_duration_seconds_count{model=\"Category\",operation=\"create\"} 2",
        "lithair_raft_is_leader 1",
        "lithair_store_events_total 1",
        "lithair_store_records 1",
        "lithair_rate_limited_total 0",
        // One create, one command in its Raft entry.
        "lithair_store_batch_size_count 1",
        "lithair_store_batch_size_bucket{le=\"1.0\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    for name in [
        "lithair_raft_term",
        "lithair_raft_last_applied",
        "process_resident_memory_bytes",
        "process_open_fds",
        // The create's Raft entry was synced (sync = "always"), and so on.
        "lithair_store_fsync_duration_seconds_count",
    ] {
        let value: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert!(value > 0, "{name} is {value}");
    }
    // Every stage of the create was timed.
    for stage in [
        "firewall",
        "route",
        "authenticate",
        "authorize",
        "validate",
        "hooks",
        "raft",
        "apply",
        "respond",
    ] {
        let series = format!("lithair_stage_duration_seconds_count{{stage=\"{stage}\"}} ");
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series:?} in\n{text}"));
        assert!(count > 0, "{stage} was not timed");
    }
    // Past the burst, the rate limit refuses, and says how often.
    let mut limited = 0;
    for _ in 0..250 {
        if shop.get("/api/categories").await.status == 429 {
            limited += 1;
        }
    }
    assert!(limited > 0);
    // The scrape waits for the sustained rate to let it through (one a second).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let text = String::from_utf8_lossy(&shop.get("/metrics").await.bytes).to_string();
    let counted: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("lithair_rate_limited_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(counted >= limited, "{counted} counted, {limited} refused");
    shop.svc.shutdown().await;
}

/// Every path of the OpenAPI document answers a method it does not list with 405, and
/// its `Allow` is the one the document gives (the document and the router agree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_path_does_not_take_is_405_with_the_documents_allow() {
    let shop = Shop::start().await;
    let doc: Value = serde_json::from_str(shop_schema().1).expect("openapi.json");
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let ops = ops.as_object().expect("operations");
        let Some(missing) = ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .find(|m| !ops.contains_key(&m.to_lowercase()))
        else {
            continue;
        };
        let first = ops.values().next().expect("an operation");
        let allow = first["responses"]["405"]["headers"]["Allow"]["schema"]["enum"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no 405 with Allow"));
        let concrete = path
            .replace("{id}", "67e55044-10b1-426f-9247-bb680e5fe0c8")
            .replace("{v}", "1");
        let a = shop
            .call(missing, &concrete, Some("admin"), None, &[])
            .await;
        assert_eq!(a.status, 405, "{missing} {concrete}: {}", a.json);
        let got = a.headers.get("allow").and_then(|v| v.to_str().ok());
        assert_eq!(got, Some(allow), "{missing} {concrete}");
        checked += 1;
    }
    assert!(checked > 20, "only {checked} paths checked");
    shop.svc.shutdown().await;
}
