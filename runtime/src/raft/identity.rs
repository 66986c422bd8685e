//! Which cluster and which node a data dir belongs to.
//!
//! The data dir records its node id at the first start and the cluster's id once it
//! knows it (the node that initializes a cluster makes the id; the others learn it from
//! their leader). At start a node asks its peers (`GET /_cluster/status`) which cluster
//! they form, and refuses to start:
//! - with a data dir of another node id;
//! - with a data dir of another cluster than the one its peers form.
//!
//! A node with an empty data dir whose peers answer with a cluster joins that cluster
//! (the leader brings it up to date); the lowest id initializes a new cluster only when
//! no peer answers with one, so a wiped node does not start a second cluster. Such a
//! node may have voted before it lost its data dir: it grants no vote until it has
//! caught up with the log its peers had applied when it started, so it cannot vote a
//! second time in a term it has forgotten.

use std::time::Duration;

use openraft::Raft;

use super::network::{call_json, Link};
use super::node::{ClusterOptions, StartError};
use super::TypeConfig;

/// Key in the `meta` tree: the node id this data dir belongs to.
const NODE_ID: &str = "node_id";
/// Key in the `meta` tree: the id of the cluster this data dir belongs to.
const CLUSTER_ID: &str = "cluster_id";

/// What a peer says about its cluster.
#[derive(serde::Deserialize)]
struct PeerView {
    node_id: u64,
    cluster_id: Option<String>,
    #[serde(default)]
    last_applied: Option<u64>,
}

/// What the peers said at start.
pub(crate) struct Peers {
    /// The log index the answering peer had applied.
    pub applied: u64,
}

/// Asks the node at `addr` what it knows of its cluster.
async fn ask(
    addr: &str,
    link: &Link,
    timeout: Duration,
) -> Result<PeerView, super::network::CallError> {
    call_json(
        hyper::Method::GET,
        addr,
        "/_cluster/status",
        link,
        &(),
        timeout,
    )
    .await
}

/// The cluster id this data dir belongs to, if it knows it.
pub fn cluster_id(meta: &sled::Tree) -> Option<String> {
    meta.get(CLUSTER_ID)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v.to_vec()).ok())
}

/// Checks the data dir against `opts` and the peers, asked through `link` (see the
/// module's doc); answers what the first peer in a cluster said, if any answered.
pub(crate) async fn check(
    meta: &sled::Tree,
    opts: &ClusterOptions,
    link: &Link,
) -> Result<Option<Peers>, StartError> {
    let err = |m: String| StartError(m);
    match meta.get(NODE_ID).map_err(|e| err(e.to_string()))? {
        Some(v) => {
            let stored = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| err("the data dir's node id is damaged".into()))?;
            if stored != opts.node_id {
                return Err(err(format!(
                    "this data dir belongs to node {stored}, not to node {}: start it with \
                     --node-id {stored}, or give node {} a data dir of its own",
                    opts.node_id, opts.node_id
                )));
            }
        }
        None => {
            meta.insert(NODE_ID, &opts.node_id.to_be_bytes())
                .map_err(|e| err(e.to_string()))?;
        }
    }
    let mine = cluster_id(meta);
    let mut theirs: Option<(u64, String, u64)> = None;
    for (id, addr) in &opts.peers {
        if *id == opts.node_id {
            continue;
        }
        let view = ask(addr, link, Duration::from_secs(1)).await;
        let Ok(view) = view else { continue };
        if let Some(cid) = view.cluster_id {
            theirs = Some((view.node_id, cid, view.last_applied.unwrap_or(0)));
            break;
        }
    }
    let Some((peer, cid, applied)) = theirs else {
        return Ok(None);
    };
    match &mine {
        Some(m) if *m != cid => {
            return Err(err(format!(
                "this data dir belongs to cluster {m}, but node {peer} is in cluster {cid}: \
                 it is another cluster's data. Give this node an empty data dir to join \
                 cluster {cid} as a new member"
            )))
        }
        Some(_) => {}
        None => {
            meta.insert(CLUSTER_ID, cid.as_bytes())
                .map_err(|e| err(e.to_string()))?;
        }
    }
    tracing::info!(cluster_id = %cid, peer, applied, "the peers form a cluster: joining it");
    Ok(Some(Peers { applied }))
}

/// Makes a new cluster id (the node that initializes the cluster).
pub(crate) fn create(meta: &sled::Tree) -> Result<String, sled::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    meta.insert(CLUSTER_ID, id.as_bytes())?;
    Ok(id)
}

/// A node that does not know its cluster's id yet asks its leader for it.
pub(crate) async fn learn(raft: &Raft<TypeConfig>, node_id: u64, link: &Link, meta: &sled::Tree) {
    if cluster_id(meta).is_some() {
        return;
    }
    let leader = {
        let m = raft.metrics().borrow().clone();
        m.current_leader
            .filter(|l| *l != node_id)
            .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
    };
    let Some(leader) = leader else { return };
    let view = ask(&leader.addr, link, Duration::from_secs(2)).await;
    if let Ok(PeerView {
        cluster_id: Some(cid),
        ..
    }) = view
    {
        if meta.insert(CLUSTER_ID, cid.as_bytes()).is_ok() {
            tracing::info!(cluster_id = %cid, "learned the cluster's id from the leader");
        }
    }
}
