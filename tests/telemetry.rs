//! Traces, in process (the generator's library compiles the schema; the runtime's whole
//! pipeline and a real store in a temp dir answer), exported over real OTLP/HTTP to a
//! receiver inside the test that decodes them with `opentelemetry-proto`: a traced
//! request is a server span with a child per stage, an incoming `traceparent` is
//! continued, `sample_rate` is honoured, and a model's `tracing:` wins over
//! `[telemetry]`.

#[path = "support/compiled.rs"]
mod compiled;

#[path = "support/otlp.rs"]
mod otlp;

use std::collections::HashMap;
use std::time::Duration;

use lithair_runtime::testing::{mint_token, Answer, InProcess};
use otlp::{Received, Receiver};
use serde_json::{json, Value};

const SCHEMA: &str = r#"
service: { name: traced, version: "2.3.0" }
roles: [writer]
models:
  Note:
    permissions: { read: [public], create: [writer], update: [writer], delete: [writer] }
    fields:
      title: string
  Payment:
    tracing: { sample_rate: 1, include_body: true }
    permissions: { read: [writer], create: [writer], update: [writer], delete: [writer] }
    fields:
      amount: float
  Secret:
    tracing: { enabled: false }
    permissions: { read: [writer], create: [writer], update: [writer], delete: [writer] }
    fields:
      value: string
"#;

struct Traced {
    svc: InProcess,
    token: String,
    receiver: Receiver,
    _dir: tempfile::TempDir,
}

impl Traced {
    /// The service, exporting to a new receiver with `[telemetry]` `settings`.
    async fn start(settings: &str) -> Traced {
        let service = compiled::service("traced.yaml", SCHEMA).0;
        let receiver = Receiver::start();
        let (token, mut config) = mint_token("wendy", &["writer"]);
        config.push_str(&format!(
            "[telemetry]\notlp_endpoint = \"{}\"\n{settings}\n",
            receiver.endpoint()
        ));
        let dir = tempfile::tempdir().expect("temp dir");
        let svc = InProcess::start(service, &config, dir.path())
            .await
            .expect("start");
        Traced {
            svc,
            token,
            receiver,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let bearer = format!("Bearer {}", self.token);
        let mut all = headers.to_vec();
        all.push(("authorization", &bearer));
        self.svc.send(method, path, &all, body.as_ref()).await
    }
}

/// The spans of trace `trace`.
fn of_trace<'a>(spans: &'a [Received], trace: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.trace_id() == trace).collect()
}

/// The server spans (one per traced request).
fn roots(spans: &[Received]) -> Vec<&Received> {
    spans.iter().filter(|s| s.span.kind == 2).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_is_a_server_span_with_a_child_span_per_stage() {
    // The request log off: the span still names the model and the operation.
    let t = Traced::start("sample_rate = 0\nrequest_log = \"off\"").await;
    let created = t
        .call("POST", "/api/payments", Some(json!({"amount": 12.5})), &[])
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let stages = [
        "firewall",
        "route",
        "authenticate",
        "authorize",
        "validate",
        "hooks",
        "raft",
        "apply",
        "respond",
    ];
    let spans = t
        .receiver
        .until(Duration::from_secs(15), |s| s.len() > stages.len())
        .await;
    let root = *roots(&spans)
        .first()
        .unwrap_or_else(|| panic!("no server span in {spans:#?}"));
    assert_eq!(root.span.name, "POST Payment.create");
    assert_eq!(
        root.parent_id(),
        "",
        "a request without traceparent starts a trace"
    );
    for (key, value) in [
        ("http.request.method", "POST"),
        ("url.path", "/api/payments"),
        ("http.response.status_code", "201"),
        ("lithair.model", "Payment"),
        ("lithair.operation", "create"),
        ("enduser.id", "wendy"),
    ] {
        assert_eq!(
            root.attribute(key).as_deref(),
            Some(value),
            "{key} of {root:#?}"
        );
    }
    // The model's include_body: the body is on the span.
    assert_eq!(
        root.attribute("http.request.body")
            .and_then(|b| serde_json::from_str::<Value>(&b).ok()),
        Some(json!({"amount": 12.5}))
    );
    assert!(root.attribute("lithair.request_id").is_some());
    assert_eq!(
        root.resource.get("service.name").map(String::as_str),
        Some("traced")
    );
    assert_eq!(
        root.resource.get("service.version").map(String::as_str),
        Some("2.3.0")
    );
    assert_eq!(
        root.resource.get("service.instance.id").map(String::as_str),
        Some("1")
    );
    let trace = of_trace(&spans, &root.trace_id());
    let by_name: HashMap<&str, &Received> =
        trace.iter().map(|s| (s.span.name.as_str(), *s)).collect();
    for stage in stages {
        let span = by_name
            .get(stage)
            .unwrap_or_else(|| panic!("no {stage} span in {:?}", by_name.keys()));
        assert!(
            span.span.start_time_unix_nano >= root.span.start_time_unix_nano
                && span.span.end_time_unix_nano <= root.span.end_time_unix_nano,
            "{stage} lies within the request"
        );
        let parent = if stage == "apply" {
            by_name["raft"].span_id()
        } else {
            root.span_id()
        };
        assert_eq!(span.parent_id(), parent, "the parent of {stage}");
    }
    t.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_continued_and_its_sampled_flag_followed() {
    let t = Traced::start("sample_rate = 0").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = format!("00-{trace}-00f067aa0ba902b7-01");
    let created = t
        .call(
            "POST",
            "/api/notes",
            Some(json!({"title": "a"})),
            &[("traceparent", &sampled)],
        )
        .await;
    assert_eq!(created.status, 201);
    // Not sampled by the caller: no span, though the model traces every request.
    let unsampled = "00-11111111111111111111111111111111-00f067aa0ba902b7-00";
    let paid = t
        .call(
            "POST",
            "/api/payments",
            Some(json!({"amount": 1})),
            &[("traceparent", unsampled)],
        )
        .await;
    assert_eq!(paid.status, 201);
    // A model with `enabled: false` follows no traceparent.
    let secret = t
        .call(
            "POST",
            "/api/secrets",
            Some(json!({"value": "x"})),
            &[("traceparent", &sampled)],
        )
        .await;
    assert_eq!(secret.status, 201);
    // At sample_rate 0, a request without traceparent is not traced.
    let listed = t.call("GET", "/api/notes", None, &[]).await;
    assert_eq!(listed.status, 200);
    let spans = t
        .receiver
        .until(Duration::from_secs(15), |s| !roots(s).is_empty())
        .await;
    // Whatever else came would have come with the first batch; give it a moment more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = if spans.is_empty() {
        spans
    } else {
        t.receiver.spans()
    };
    let roots = roots(&spans);
    assert_eq!(roots.len(), 1, "{roots:#?}");
    let root = roots[0];
    assert_eq!(root.trace_id(), trace);
    assert_eq!(root.parent_id(), "00f067aa0ba902b7");
    assert_eq!(root.span.name, "POST Note.create");
    assert_eq!(
        root.attribute("http.request.body"),
        None,
        "include_body is off by default"
    );
    assert!(spans.iter().all(|s| s.trace_id() == trace), "{spans:#?}");
    t.svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_rate_is_honoured_over_a_thousand_requests() {
    let t = Traced::start("sample_rate = 0.5").await;
    let created = t
        .call("POST", "/api/notes", Some(json!({"title": "read me"})), &[])
        .await;
    assert_eq!(created.status, 201);
    let path = format!("/api/notes/{}", created.json["id"].as_str().expect("id"));
    for _ in 0..1000 {
        let got = t.call("GET", &path, None, &[]).await;
        assert_eq!(got.status, 200);
    }
    // Probes are never traced.
    for probe in ["/health", "/ready"] {
        assert_eq!(t.call("GET", probe, None, &[]).await.status, 200);
    }
    t.svc.shutdown().await;
    let spans = t.receiver.spans();
    let gets = roots(&spans)
        .into_iter()
        .filter(|s| s.span.name == "GET Note.get")
        .count();
    // Half of 1,000, within ±10 % of the requests.
    assert!(
        (400..=600).contains(&gets),
        "{gets} of 1000 GETs traced at 0.5"
    );
    assert!(
        roots(&spans).iter().all(|s| !s
            .attribute("url.path")
            .is_some_and(|p| p == "/health" || p == "/ready")),
        "a probe was traced"
    );
}
