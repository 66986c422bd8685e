//! The hyper server: accepts connections on each listener (the public port, and the
//! cluster listener of `[cluster] listen`) within their caps (in total and per address,
//! before anything is read), opens TLS on them when configured, serves each through the
//! pipeline of its listener (`pipeline.rs`) and closes it when it waits for a request's
//! headers too long (`conn.rs`), and shuts down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::app::{App, Live, ServeOptions};
use super::conn::{watchdog, HeadWait, Serve, Signals, Watched};
use super::router::Plane;
use crate::engine::Engine;
use crate::tls::ServerTls;

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

/// A bound listener and what it serves.
pub struct Listener {
    /// The socket.
    pub tcp: TcpListener,
    /// Which routes it serves.
    pub plane: Plane,
    /// TLS on its connections (None: plain HTTP).
    pub tls: Option<ServerTls>,
}

impl Listener {
    /// A plain HTTP listener serving every route (a node without a cluster listener).
    #[cfg(any(test, feature = "testing"))]
    pub fn plain(tcp: TcpListener) -> Listener {
        Listener {
            tcp,
            plane: Plane::All,
            tls: None,
        }
    }
}

/// Serves every listener until `shutdown` resolves, then lets in-flight requests finish
/// and stops the store.
pub async fn serve(
    listeners: Vec<Listener>,
    engine: Arc<Engine>,
    live: Live,
    openapi: Option<&'static str>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    live.firewall.spawn_cleanup(Duration::from_secs(10));
    let app = Arc::new(App::new(engine.clone(), live, openapi, opts.clone()));
    // `stop` ends the accept loops; `tell` tells the connections, each of which holds a
    // receiver of it (in its watchdog) until it ends.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (tell, told) = tokio::sync::watch::channel(false);
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(accept(l, app.clone(), stopped.clone(), told.clone())))
        .collect();
    drop(told);
    shutdown.await;
    let _ = stop.send(true);
    for l in loops {
        let _ = l.await;
    }
    // `/ready` answers 503 from now on, and the change feeds end (their connections
    // would hold the drain up to its timeout).
    engine.store.health().stopping();
    engine.store.feed().close();
    tracing::info!("shutting down: finishing in-flight requests");
    // Every listener's connections are told at once, then waited for: each holds a
    // receiver of `tell` until it ends.
    tell.send_replace(true);
    tokio::select! {
        () = tell.closed() => {}
        _ = tokio::time::sleep(opts.drain_timeout) => tracing::warn!("some requests did not finish in time"),
    }
    engine.store.shutdown().await;
    tracing::info!("Raft node stopped; bye");
    Ok(())
}

/// Serves a connection (`served`) until it ends, until it has waited for a request's
/// headers longer than `timeout` (then it is closed, as it is dropped), or until `told`
/// turns true (then it finishes the request in flight and closes); its watchdog holds
/// `told` until it ends.
async fn watched<C: hyper_util::server::graceful::GracefulConnection>(
    served: C,
    wait: Arc<HeadWait>,
    timeout: Duration,
    told: tokio::sync::watch::Receiver<bool>,
) -> Result<(), C::Error> {
    let signals = Arc::new(Signals::default());
    tokio::spawn(watchdog(signals.clone(), wait, timeout, told));
    Watched::new(served, signals).await
}

/// Accepts connections on `l` within their caps until `stopped` turns true; each
/// connection holds a receiver of `told` (the server's shutdown) until it ends.
async fn accept(
    l: Listener,
    app: Arc<App>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    told: tokio::sync::watch::Receiver<bool>,
) {
    let opts = app.opts.clone();
    // The public port's connections are the ones `/metrics` counts; the cluster
    // listener has caps of its own, so a flood of clients cannot keep peers out.
    let total = match l.plane {
        Plane::Cluster => Arc::new(AtomicUsize::new(0)),
        _ => app.open_connections.clone(),
    };
    let connections = Arc::new(Connections {
        total,
        per_ip: Mutex::new(HashMap::new()),
        max_total: opts.max_connections,
        max_per_ip: opts.max_connections_per_ip,
    });
    let stack = super::pipeline::stack::<Incoming>(app, l.plane);
    loop {
        tokio::select! {
            accepted = l.tcp.accept() => {
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
                let wait = HeadWait::new();
                let svc = Serve {
                    stack: stack.clone(),
                    peer,
                    wait: wait.clone(),
                };
                let told = told.clone();
                let tls = l.tls.clone();
                let header_timeout = opts.header_timeout;
                tokio::spawn(async move {
                    let _admitted = admitted;
                    // The header timeout is the connection's own (`conn.rs`), not hyper's.
                    // An answer's head and body go out in one write of one buffer: for the
                    // small answers of an API, copying the body is cheaper than the kernel's
                    // gathered write of two (CPU per GET -4 % in `bench/README.md`; a list
                    // of 100 records showed no change).
                    let http = http1::Builder::new()
                        .header_read_timeout(None)
                        .writev(false)
                        .clone();
                    let served = match tls {
                        None => {
                            let conn = http.serve_connection(TokioIo::new(stream), svc);
                            watched(conn, wait, header_timeout, told).await
                        }
                        // The handshake has the headers' time: a client that stalls in
                        // it holds no more than one that stalls in its headers.
                        Some(tls) => match tokio::time::timeout(header_timeout, tls.0.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let conn = http.serve_connection(TokioIo::new(stream), svc);
                                watched(conn, wait, header_timeout, told).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                    };
                    if let Err(e) = served {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                });
            }
            _ = stopped.changed() => break,
        }
    }
}
