//! Raft RPC between nodes, over HTTP under `/_raft/*` (on each node's public port, or on
//! its cluster listener, `[cluster] listen`; over mutual TLS with `[cluster.tls]`), with
//! the cluster secret in the `x-lithair-cluster-secret` header.
//!
//! A request body is the openraft RPC as JSON; the answer is `Result<response, RaftError>`
//! as JSON. Connections to peers are kept alive and reused ([`Pool`]): a call takes an
//! idle connection to its peer, or opens one, and gives it back once the answer is read.
//! A connection idle for [`IDLE`] is not used again (the peer closes idle connections
//! after its header timeout); a call that fails on a reused connection is sent once
//! more on a new one (every call between nodes may be sent again: Raft messages are
//! idempotent, and a forwarded batch that reached the log is answered, not applied,
//! again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::TypeConfig;

/// The header that carries the cluster secret.
pub const SECRET_HEADER: &str = "x-lithair-cluster-secret";

/// How this node calls its peers: with the cluster secret, from its own address, over
/// kept-alive connections.
#[derive(Clone, Debug, Default)]
pub struct Link {
    /// The cluster secret sent with every call.
    pub secret: Option<String>,
    /// The local address calls leave from (the address the node listens on), so that
    /// peers see one address per node; None: chosen by the system.
    pub from: Option<std::net::IpAddr>,
    /// Idle connections to peers (shared by the clones of one node's link).
    pub pool: Pool,
    /// Mutual TLS to peers (`[cluster.tls]`); None: plain HTTP.
    pub tls: Option<crate::tls::ClientTls>,
}

/// How long an idle connection to a peer is reused (below any sensible header timeout of
/// the peer, which closes idle connections).
pub const IDLE: Duration = Duration::from_secs(2);

/// Most idle connections kept per peer.
const IDLE_PER_PEER: usize = 8;

/// A client connection to a peer.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle connections to one peer, each with when it became idle.
type Idle = Vec<(Sender, Instant)>;

/// Idle connections to peers, by address.
#[derive(Clone, Default)]
pub struct Pool {
    idle: Arc<Mutex<HashMap<String, Idle>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// An idle connection to `addr` that is still open and not idle for too long.
    fn take(&self, addr: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(addr)?;
        while let Some((sender, since)) = list.pop() {
            if since.elapsed() < IDLE && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Gives a connection back after its answer was read whole.
    fn put(&self, addr: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr.to_string()).or_default();
        list.retain(|(s, since)| since.elapsed() < IDLE && !s.is_closed());
        if list.len() < IDLE_PER_PEER {
            list.push((sender, Instant::now()));
        }
    }
}

impl Link {
    /// Opens a TCP connection to `addr` from [`Link::from`].
    async fn connect(&self, addr: &str) -> std::io::Result<tokio::net::TcpStream> {
        let Some(from) = self.from else {
            return tokio::net::TcpStream::connect(addr).await;
        };
        let mut last = std::io::Error::other(format!("{addr} resolves to no address"));
        for target in tokio::net::lookup_host(addr).await? {
            if target.is_ipv4() != from.is_ipv4() {
                continue;
            }
            let socket = if from.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(std::net::SocketAddr::new(from, 0))?;
            match socket.connect(target).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The node could not be reached (connect, send, read).
    #[error("node {addr} unreachable: {message}")]
    Unreachable { addr: String, message: String },
    /// The node answered with an error status or an unreadable body.
    #[error("node {addr} answered {status}: {message}")]
    Bad {
        addr: String,
        status: u16,
        message: String,
    },
}

/// Sends `body` as JSON with `method` to `http://addr{path}` and reads a JSON answer.
pub async fn call_json<Req: Serialize, Resp: DeserializeOwned>(
    method: hyper::Method,
    addr: &str,
    path: &str,
    link: &Link,
    body: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    call_as(method, addr, path, link, None, body, timeout).await
}

/// [`call_json`] with the caller's `Authorization` header passed on (a request a
/// follower hands to the leader on behalf of its client).
pub async fn call_as<Req: Serialize, Resp: DeserializeOwned>(
    method: hyper::Method,
    addr: &str,
    path: &str,
    link: &Link,
    authorization: Option<&str>,
    body: &Req,
    timeout: Duration,
) -> Result<Resp, CallError> {
    let unreachable = |m: String| CallError::Unreachable {
        addr: addr.to_string(),
        message: m,
    };
    let call = async {
        let bytes = Bytes::from(serde_json::to_vec(body).map_err(|e| unreachable(e.to_string()))?);
        let request = || {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", addr)
                .header("content-type", "application/json");
            if let Some(s) = &link.secret {
                req = req.header(SECRET_HEADER, s);
            }
            if let Some(a) = authorization {
                req = req.header(hyper::header::AUTHORIZATION, a);
            }
            req.body(Full::new(bytes.clone()))
                .map_err(|e| unreachable(e.to_string()))
        };
        let mut reused = link.pool.take(addr);
        let (sender, resp) = loop {
            let fresh = reused.is_none();
            let mut sender = match reused.take() {
                // Ready once it has finished with its previous answer; an error: closed.
                Some(mut s) => match s.ready().await {
                    Ok(()) => s,
                    Err(_) => continue,
                },
                None => open(link, addr)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?,
            };
            match sender.send_request(request()?).await {
                Ok(resp) => break (sender, resp),
                // A kept-alive connection the peer closed meanwhile: once more, on a new one.
                Err(_) if !fresh => continue,
                Err(e) => return Err(unreachable(e.to_string())),
            }
        };
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        link.pool.put(addr, sender);
        if status != 200 {
            return Err(CallError::Bad {
                addr: addr.to_string(),
                status,
                message: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| CallError::Bad {
            addr: addr.to_string(),
            status,
            message: e.to_string(),
        })
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
    }
}

/// Opens a new connection to `addr` (with `TCP_NODELAY`), its I/O driven by a task of its
/// own until the last sender of it is dropped.
async fn open(link: &Link, addr: &str) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>> {
    let stream = link.connect(addr).await?;
    let _ = stream.set_nodelay(true);
    match &link.tls {
        None => handshake(stream).await,
        Some(tls) => handshake(tls.connect(addr, stream).await?).await,
    }
}

/// HTTP/1.1 over `io`, its connection driven by a task of its own.
async fn handshake<IO>(io: IO) -> Result<Sender, Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Makes connections to peers.
#[derive(Clone, Debug)]
pub struct Network {
    /// How calls are made.
    pub link: Link,
}

/// A connection to one peer.
pub struct Connection {
    target: u64,
    addr: String,
    link: Link,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Connection {
        Connection {
            target,
            addr: node.addr.clone(),
            link: self.link.clone(),
        }
    }
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<u64, E>> = call_json(
            hyper::Method::POST,
            &self.addr,
            path,
            &self.link,
            rpc,
            option.hard_ttl(),
        )
        .await
        .map_err(|e| match e {
            CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Bad { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/_raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call("/_raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call("/_raft/vote", &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A peer that answers `{"n": <calls so far>}`, closing the connection after the
    /// answer when the request's path is `/close`; counts the connections it accepted.
    async fn peer() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let calls = calls.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let close = req.uri().path() == "/close";
                    async move {
                        let mut r =
                            hyper::Response::new(Full::new(Bytes::from(format!("{{\"n\":{n}}}"))));
                        if close {
                            r.headers_mut().insert(
                                "connection",
                                hyper::header::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        (addr, accepted)
    }

    async fn n(link: &Link, addr: &str, path: &str) -> u64 {
        let v: serde_json::Value = call_json(
            hyper::Method::POST,
            addr,
            path,
            link,
            &(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        v["n"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn calls_reuse_a_kept_alive_connection_and_open_a_new_one_when_it_closed() {
        let (addr, accepted) = peer().await;
        let link = Link::default();
        for expected in 1..=5 {
            assert_eq!(n(&link, &addr, "/").await, expected);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "five calls, one connection"
        );
        // The peer closes the connection after this answer: the next call opens another.
        assert_eq!(n(&link, &addr, "/close").await, 6);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(n(&link, &addr, "/").await, 7);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Concurrent calls each take a connection; afterwards they are kept for reuse.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (link, addr) = (link.clone(), addr.clone());
                tokio::spawn(async move { n(&link, &addr, "/").await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let before = accepted.load(Ordering::SeqCst);
        assert!(before <= 2 + 4, "{before}");
        for _ in 0..4 {
            n(&link, &addr, "/").await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            before,
            "kept connections are reused"
        );
        // A connection idle longer than IDLE is not used again.
        tokio::time::sleep(IDLE + Duration::from_millis(100)).await;
        n(&link, &addr, "/").await;
        assert_eq!(accepted.load(Ordering::SeqCst), before + 1);
    }
}
