//! The baseline of the HTTP benchmarks: a bare hyper server on the same tokio runtime
//! setup as a lithair service, answering every request with a fixed JSON record of about
//! the size of a shop `Product`. `bench/run.sh` measures the generated service against it.
//!
//! Run: `cargo run --release -p lithair-runtime --example hello_baseline -- 127.0.0.1:0`
//!
//! With `--one-write` after the address, hyper writes each answer's head and body as one
//! buffer (`writev(false)`), as a lithair service does; without it, hyper's default (a
//! gathered write of the two). The benchmarks report the service against both.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BODY: &str = r#"{"id":"4c3bcaf6-1602-435a-9130-ac0f39299c4d","name":"Hammer","sku":"HM-1","price":9.5,"stock":0,"status":"draft","tags":[],"category":"242c3525-dc83-4db9-9438-0fd973edba24","created_at":"2026-11-26T19:35:46.734665Z","updated_at":"2026-11-26T19:35:46.734665Z","version":1}"#;

async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut r = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let one_write = std::env::args().nth(2).as_deref() == Some("--one-write");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut http = http1::Builder::new();
                if one_write {
                    http.writev(false);
                }
                let _ = http
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    })
}
