//! The hyper server: accepts connections within their caps (in total and per address,
//! before anything is read), serves each through the pipeline (`pipeline.rs`), and shuts
//! down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::app::{App, Live, ServeOptions};
use super::firewall::PeerAddr;
use crate::engine::Engine;

/// Open connections, in total and per address: a connection over either cap is closed
/// at accept, before anything is read.
struct Connections {
    total: Arc<AtomicUsize>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_total: usize,
    max_per_ip: usize,
}

/// One admitted connection; counted until dropped.
struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per_ip.get(&ip).copied().unwrap_or(0);
        if mine >= self.max_per_ip || self.total.load(Ordering::Relaxed) >= self.max_total {
            return None;
        }
        per_ip.insert(ip, mine + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            connections: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let c = &self.connections;
        let mut per_ip = c.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        match per_ip.get_mut(&self.ip) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                per_ip.remove(&self.ip);
            }
        }
        c.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish and stops the store.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    live: Live,
    openapi: Option<&'static str>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    live.firewall.spawn_cleanup(Duration::from_secs(10));
    let app = Arc::new(App::new(engine.clone(), live, openapi, opts.clone()));
    let connections = Arc::new(Connections {
        total: app.open_connections.clone(),
        per_ip: Mutex::new(HashMap::new()),
        max_total: opts.max_connections,
        max_per_ip: opts.max_connections_per_ip,
    });
    let stack = super::pipeline::stack::<Incoming>(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and similar: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(admitted) = connections.admit(peer.ip()) else {
                    tracing::debug!(%peer, "connection refused: too many open connections");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = tower::ServiceExt::map_request(stack.clone(), move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(opts.header_timeout)
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _admitted = admitted;
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // `/ready` answers 503 from now on.
    engine.store.health().stopping();
    tracing::info!("shutting down: finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.drain_timeout) => tracing::warn!("some requests did not finish in time"),
    }
    engine.store.shutdown().await;
    tracing::info!("Raft node stopped; bye");
    Ok(())
}
