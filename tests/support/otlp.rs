//! An OTLP/HTTP trace receiver for the tests: a hyper server on 127.0.0.1 (an ephemeral
//! port, on its own thread) that decodes each `POST /v1/traces` body as the protocol's
//! `ExportTraceServiceRequest` and keeps the spans, with their resource's attributes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A span as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The span.
    pub span: Span,
    /// Its resource's attributes (`service.name`, `service.instance.id`…), as text.
    pub resource: HashMap<String, String>,
}

impl Received {
    /// The span's trace id, hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    /// Its id, hex.
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    /// Its parent's id, hex ("" for a root).
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// The attribute `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        text(&self.span.attributes, key)
    }
}

/// The receiver; it stops with the test's process.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    posts: Arc<Mutex<usize>>,
}

impl Receiver {
    /// Starts a receiver.
    pub fn start() -> Receiver {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let posts: Arc<Mutex<usize>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        listener.set_nonblocking(true).expect("nonblocking");
        let (kept, counted) = (spans.clone(), posts.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (kept, counted) = (kept.clone(), counted.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let (kept, counted) = (kept.clone(), counted.clone());
                                async move {
                                    let path = req.uri().path().to_string();
                                    let body =
                                        req.into_body().collect().await.map(|b| b.to_bytes());
                                    let status = match (path.as_str(), body) {
                                        ("/v1/traces", Ok(bytes)) => {
                                            match ExportTraceServiceRequest::decode(bytes) {
                                                Ok(export) => {
                                                    keep(&kept, export);
                                                    *counted.lock().unwrap() += 1;
                                                    200
                                                }
                                                Err(_) => 400,
                                            }
                                        }
                                        _ => 404,
                                    };
                                    Ok::<_, std::convert::Infallible>(
                                        hyper::Response::builder()
                                            .status(status)
                                            .header("content-type", "application/x-protobuf")
                                            .body(Full::new(Bytes::new()))
                                            .expect("answer"),
                                    )
                                }
                            },
                        );
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    });
                }
            });
        });
        Receiver { addr, spans, posts }
    }

    /// The endpoint to configure (`[telemetry] otlp_endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// How many export requests came.
    pub fn posts(&self) -> usize {
        *self.posts.lock().unwrap()
    }

    /// Waits (up to `within`) until `done` holds for the spans received; answers them.
    pub fn wait(&self, within: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Receiver {
    /// [`Receiver::wait`] for async tests.
    pub async fn until(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn keep(kept: &Mutex<Vec<Received>>, export: ExportTraceServiceRequest) {
    let mut kept = kept.lock().unwrap();
    for rs in export.resource_spans {
        let resource: HashMap<String, String> = rs
            .resource
            .map(|r| {
                r.attributes
                    .iter()
                    .filter_map(|kv| {
                        text(std::slice::from_ref(kv), &kv.key).map(|v| (kv.key.clone(), v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                kept.push(Received {
                    span,
                    resource: resource.clone(),
                });
            }
        }
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        Any::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
