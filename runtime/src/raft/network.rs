//! Raft RPC between nodes, over HTTP on each node's own port under `/_raft/*`, with the
//! cluster secret in the `x-lithair-cluster-secret` header.
//!
//! A request body is the openraft RPC as JSON; the answer is `Result<response, RaftError>`
//! as JSON. One short-lived HTTP/1.1 connection per call keeps the client simple; on
//! loopback and LANs the connect costs less than a heartbeat interval.

use std::time::Duration;

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

/// How this node calls its peers: with the cluster secret, from its own address.
#[derive(Clone, Debug, Default)]
pub struct Link {
    /// The cluster secret sent with every call.
    pub secret: Option<String>,
    /// The local address calls leave from (the address the node listens on), so that
    /// peers see one address per node; None: chosen by the system.
    pub from: Option<std::net::IpAddr>,
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
        let bytes = serde_json::to_vec(body).map_err(|e| unreachable(e.to_string()))?;
        let stream = link
            .connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr)
            .header("content-type", "application/json");
        if let Some(s) = &link.secret {
            req = req.header(SECRET_HEADER, s);
        }
        if let Some(a) = authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
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
