//! The change feed (`GET /api/<plural>/_events`), in process (a schema compiled by the
//! generator's library, the runtime's pipeline and a real store in a temp dir, restarted
//! on the same data dir): live events with the record after each change, field masks,
//! resuming with `Last-Event-ID` or `?since=` after a reconnect and after a restart, the
//! heartbeat, and a consumer that does not read being cut with `event: lagged`.

#[path = "support/compiled.rs"]
mod compiled;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use lithair_runtime::testing::{mint_token, Body, InProcess};
use lithair_runtime::Service;
use serde_json::{json, Value};

const SCHEMA: &str = r#"
service: { name: feeds }
roles: [clerk, boss]
models:
  Order:
    permissions: { read: [clerk, boss], create: [clerk], update: [clerk], delete: [clerk] }
    fields:
      total: float
      status: { type: enum, values: [pending, paid] }
      margin: { type: float, optional: true, permissions: { read: [boss], write: [clerk] } }
  Note:
    permissions: { read: [clerk], create: [clerk], update: [clerk], delete: [clerk] }
    fields:
      text: string
"#;

fn service() -> Service {
    compiled::service("feeds.yaml", SCHEMA).0
}

fn config(extra: &str) -> (String, HashMap<&'static str, String>) {
    let mut text = format!("{extra}\n");
    let mut tokens = HashMap::new();
    for (name, role) in [("cy", "clerk"), ("bo", "boss")] {
        let (token, table) = mint_token(name, &[role]);
        text.push_str(&table);
        tokens.insert(name, token);
    }
    (text, tokens)
}

struct Feeds {
    svc: InProcess,
    tokens: HashMap<&'static str, String>,
}

impl Feeds {
    async fn start(dir: &Path, config: &(String, HashMap<&'static str, String>)) -> Feeds {
        let svc = InProcess::start(service(), &config.0, dir)
            .await
            .expect("start");
        Feeds {
            svc,
            tokens: config.1.clone(),
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        who: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder().method(method).uri(path);
        if let Some(w) = who {
            b = b.header("authorization", format!("Bearer {}", self.tokens[w]));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let bytes = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        b.body(Full::new(bytes)).expect("request")
    }

    async fn write(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self
            .svc
            .call(self.request(method, path, Some("cy"), &[], body))
            .await;
        let a = lithair_runtime::testing::read(r).await;
        assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.json);
        a.json
    }

    /// Opens the feed at `path` as `who`, with `headers`.
    async fn open(&self, path: &str, who: &str, headers: &[(&str, &str)]) -> Sse {
        let r = self
            .svc
            .call(self.request("GET", path, Some(who), headers, None))
            .await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        Sse {
            body: r.into_body(),
            text: String::new(),
        }
    }
}

/// A feed being read: its body, and what was read of it and not yet taken.
struct Sse {
    body: Body,
    text: String,
}

/// One SSE frame: its fields (`id`, `event`, `data`, or `:` for a comment).
#[derive(Debug, Default)]
struct Frame {
    id: Option<u64>,
    event: Option<String>,
    data: Option<Value>,
    comment: Option<String>,
}

impl Sse {
    /// The next frame, within `wait` (None: the stream ended).
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let raw: String = self.text.drain(..end + 2).collect();
                let mut f = Frame::default();
                for line in raw.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        f.comment = Some(c.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        f.id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        f.event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        f.data = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                return Some(f);
            }
            let frame = tokio::time::timeout(wait, self.body.frame())
                .await
                .expect("the feed sent nothing in time")?;
            let chunk = frame.expect("a frame").into_data().expect("data");
            self.text
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next frame that is an event.
    async fn event(&mut self) -> Frame {
        loop {
            let f = self
                .next(Duration::from_secs(10))
                .await
                .expect("the feed ended");
            if f.event.is_some() {
                return f;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_sends_each_change_with_its_record_and_resumes_after_a_reconnect_and_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config("");
    let f = Feeds::start(dir.path(), &config).await;
    let mut boss = f.open("/api/orders/_events", "bo", &[]).await;
    let mut clerk = f.open("/api/orders/_events", "cy", &[]).await;
    // The stream opens with a comment.
    assert!(boss
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .comment
        .is_some());

    let o = f
        .write(
            "POST",
            "/api/orders",
            Some(json!({"total": 10.0, "status": "pending", "margin": 2.5})),
        )
        .await;
    let id = o["id"].as_str().unwrap().to_string();
    f.write("POST", "/api/notes", Some(json!({"text": "not an order"})))
        .await;
    f.write(
        "PATCH",
        &format!("/api/orders/{id}"),
        Some(json!({"status": "paid"})),
    )
    .await;
    f.write("DELETE", &format!("/api/orders/{id}"), None).await;

    let created = boss.event().await;
    assert_eq!(created.event.as_deref(), Some("OrderCreated"));
    let d = created.data.unwrap();
    assert_eq!(
        (d["kind"].clone(), d["id"].clone(), d["principal"].clone()),
        (json!("created"), json!(id), json!("cy"))
    );
    assert_eq!(d["record"]["margin"], 2.5, "{d}");
    assert_eq!(created.id, d["sequence_number"].as_u64());
    let updated = boss.event().await;
    let d = updated.data.unwrap();
    assert_eq!(
        (d["kind"].clone(), d["version"].clone()),
        (json!("updated"), json!(2))
    );
    assert_eq!(
        (d["record"]["status"].clone(), d["record"]["total"].clone()),
        (json!("paid"), json!(10.0))
    );
    let deleted = boss.event().await;
    assert_eq!(deleted.event.as_deref(), Some("OrderDeleted"));
    assert_eq!(deleted.data.unwrap()["record"], Value::Null);
    // Only the model's events, in order; the clerk does not see `margin`.
    assert!(created.id < updated.id && updated.id < deleted.id);
    let c = clerk.event().await.data.unwrap();
    assert!(c["record"].get("margin").is_none(), "{c}");
    assert_eq!(c["record"]["total"], 10.0);

    // Reconnect after the first event: what followed comes from the event log, with the
    // record after each change.
    drop(boss);
    let first = created.id.unwrap().to_string();
    let mut again = f
        .open("/api/orders/_events", "bo", &[("last-event-id", &first)])
        .await;
    let u = again.event().await;
    assert_eq!(u.id, updated.id);
    assert_eq!(u.data.unwrap()["record"]["status"], "paid");
    assert_eq!(again.event().await.id, deleted.id);
    // ...and then live.
    f.write(
        "POST",
        "/api/orders",
        Some(json!({"total": 1.0, "status": "paid"})),
    )
    .await;
    let live = again.event().await;
    assert_eq!(live.event.as_deref(), Some("OrderCreated"));
    let last = live.id.unwrap();
    drop(again);
    let mut since = f
        .open(
            &format!("/api/orders/_events?since={}", created.id.unwrap()),
            "bo",
            &[],
        )
        .await;
    assert_eq!(since.event().await.id, updated.id);

    // More writes, a restart: the stream ends at shutdown, and resumes after it.
    for total in [2.0, 3.0] {
        f.write(
            "POST",
            "/api/orders",
            Some(json!({"total": total, "status": "paid"})),
        )
        .await;
    }
    f.svc.shutdown().await;
    // The open stream ends at shutdown.
    while since.next(Duration::from_secs(10)).await.is_some() {}
    let f = Feeds::start(dir.path(), &config).await;
    let mut after = f
        .open(
            "/api/orders/_events",
            "bo",
            &[("last-event-id", &last.to_string())],
        )
        .await;
    let totals = [after.event().await, after.event().await]
        .map(|e| e.data.unwrap()["record"]["total"].as_f64().unwrap());
    assert_eq!(totals, [2.0, 3.0]);
    f.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_refuses_bad_requests_and_sends_a_heartbeat() {
    let dir = tempfile::tempdir().expect("temp dir");
    let f = Feeds::start(dir.path(), &config("")).await;
    let status = |r: hyper::Response<Body>| r.status().as_u16();
    let ask = |path: &str, who: Option<&str>, headers: &[(&str, &str)]| {
        f.svc.call(f.request("GET", path, who, headers, None))
    };
    assert_eq!(status(ask("/api/orders/_events", None, &[]).await), 401);
    assert_eq!(
        status(ask("/api/notes/_events", Some("bo"), &[]).await),
        403
    );
    assert_eq!(
        status(ask("/api/orders/_events?since=x", Some("bo"), &[]).await),
        400
    );
    assert_eq!(
        status(ask("/api/orders/_events?from=1", Some("bo"), &[]).await),
        400
    );
    assert_eq!(
        status(
            ask(
                "/api/orders/_events",
                Some("bo"),
                &[("last-event-id", "abc")]
            )
            .await
        ),
        400
    );
    let post = f
        .svc
        .call(f.request(
            "POST",
            "/api/orders/_events",
            Some("cy"),
            &[],
            Some(json!({})),
        ))
        .await;
    assert_eq!(post.status(), 405);

    let mut feed = f.open("/api/orders/_events", "bo", &[]).await;
    assert!(feed
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .comment
        .is_some());
    let beat = feed
        .next(Duration::from_secs(20))
        .await
        .expect("a heartbeat");
    assert_eq!(beat.comment.as_deref(), Some("heartbeat"));
    f.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_keep_up_is_cut_with_lagged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let f = std::sync::Arc::new(
        Feeds::start(dir.path(), &config("[storage]\nsync = \"never\"\n")).await,
    );
    let mut slow = f.open("/api/orders/_events", "bo", &[]).await;
    // Far more changes than the feed keeps for a live reader, while this one reads nothing.
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                for _ in 0..650 {
                    f.write("POST", "/api/notes", Some(json!({"text": "n"})))
                        .await;
                    f.write(
                        "POST",
                        "/api/orders",
                        Some(json!({"total": 1.0, "status": "paid"})),
                    )
                    .await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let mut events = 0;
    let mut last = None;
    while let Some(frame) = slow.next(Duration::from_secs(10)).await {
        if frame.event.is_some() {
            events += 1;
            last = Some(frame);
        }
    }
    let last = last.expect("some events");
    assert_eq!(
        last.event.as_deref(),
        Some("lagged"),
        "after {events} events"
    );
    assert!(
        events < 5200,
        "the slow consumer was sent everything ({events})"
    );
    let resume = last.data.unwrap()["last_event_id"].as_u64().unwrap();
    assert_eq!(last.id, Some(resume));
    // It resumes from the log where it was cut, and gets the rest.
    let mut again = f
        .open(
            "/api/orders/_events",
            "bo",
            &[("last-event-id", &resume.to_string())],
        )
        .await;
    let mut rest = 0;
    while rest + events - 1 < 5200 {
        let frame = again
            .next(Duration::from_secs(10))
            .await
            .expect("the feed ended");
        if frame.event.is_some() {
            rest += 1;
        }
    }
    assert_eq!(
        rest + events - 1,
        5200,
        "every order once: {events} - 1 before the cut, {rest} after"
    );
    drop((slow, again));
    if let Ok(f) = std::sync::Arc::try_unwrap(f) {
        f.svc.shutdown().await;
    }
}
