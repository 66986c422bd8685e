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
use crate::store::data_dir::DataDir;

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

/// Checks the data dir against `opts` and the peers, asked through `link` (see the
/// module's doc); answers what the first peer in a cluster said, if any answered.
pub(crate) async fn check(
    dir: &DataDir,
    opts: &ClusterOptions,
    link: &Link,
) -> Result<Option<Peers>, StartError> {
    let err = |m: String| StartError(m);
    match dir.node_info().node_id {
        Some(stored) => {
            if stored != opts.node_id {
                return Err(err(format!(
                    "this data dir belongs to node {stored}, not to node {}: start it with \
                     --node-id {stored}, or give node {} a data dir of its own",
                    opts.node_id, opts.node_id
                )));
            }
        }
        None => {
            dir.update_node_info(|i| i.node_id = Some(opts.node_id))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    let mine = dir.node_info().cluster_id;
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
            dir.update_node_info(|i| i.cluster_id = Some(cid.clone()))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    tracing::info!(cluster_id = %cid, peer, applied, "the peers form a cluster: joining it");
    Ok(Some(Peers { applied }))
}

/// Makes a new cluster id (the node that initializes the cluster).
pub(crate) fn create(dir: &DataDir) -> std::io::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    dir.update_node_info(|i| i.cluster_id = Some(id.clone()))?;
    Ok(id)
}

/// A node that does not know its cluster's id yet asks its leader for it.
pub(crate) async fn learn(raft: &Raft<TypeConfig>, node_id: u64, link: &Link, dir: &DataDir) {
    if dir.node_info().cluster_id.is_some() {
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
        if dir
            .update_node_info(|i| i.cluster_id = Some(cid.clone()))
            .is_ok()
        {
            tracing::info!(cluster_id = %cid, "learned the cluster's id from the leader");
        }
    }
}
