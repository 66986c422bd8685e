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
//! (the leader brings it up to date). The lowest id initializes a new cluster only once a
//! majority of the members (itself included) answer with none and nothing applied
//! ([`found`]): until then it waits, listening, so a wiped node whose peers are down does
//! not start a second cluster when they come back. A wiped node may have voted before it
//! lost its data dir: when its peers answered at start, it grants no vote until it has
//! caught up with the log they had applied, so it cannot vote a second time in a term it
//! has forgotten.

use std::time::Duration;

use openraft::Raft;

use super::network::{call_json, Link};
use super::node::{ClusterOptions, StartError};
use super::TypeConfig;
use crate::raft::data_dir::DataDir;

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

/// What the lowest node of a new data dir waits for before it initializes a cluster.
pub(crate) struct Founding {
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) opts: ClusterOptions,
    pub(crate) link: Link,
    pub(crate) dir: std::sync::Arc<DataDir>,
    pub(crate) stopped: tokio::sync::watch::Receiver<bool>,
    /// Counts this task among the data dir's holders (dropped after `dir`).
    pub(crate) _holder: std::sync::Arc<()>,
}

/// How often the peers are asked while founding.
const FOUNDING_ROUND: Duration = Duration::from_millis(500);

/// Initializes the cluster of `f.opts.peers` once a majority of them (this node included)
/// answer that they are in no cluster and have applied nothing; gives up as soon as one
/// answers with a cluster (this node then joins it: its leader brings it up to date).
pub(crate) async fn found(mut f: Founding) {
    let members = f.opts.peers.len();
    let mut waiting_logged = false;
    loop {
        let mut fresh = 1; // this node
        let mut cluster = None;
        for (id, addr) in &f.opts.peers {
            if *id == f.opts.node_id {
                continue;
            }
            match ask(addr, &f.link, Duration::from_secs(1)).await {
                Ok(PeerView {
                    cluster_id: Some(cid),
                    node_id,
                    ..
                }) => {
                    cluster = Some((node_id, cid));
                    break;
                }
                Ok(view) if view.last_applied.unwrap_or(0) == 0 => fresh += 1,
                _ => {}
            }
        }
        if let Some((peer, cid)) = cluster {
            tracing::info!(cluster_id = %cid, peer, "the peers form a cluster: joining it instead of starting one");
            if let Err(e) = f.dir.update_node_info(|i| i.cluster_id = Some(cid.clone())) {
                tracing::warn!(error = %e, "cannot record the cluster's id");
            }
            return;
        }
        if fresh * 2 > members {
            match create(&f.dir) {
                Ok(_) => {
                    let nodes = f
                        .opts
                        .peers
                        .iter()
                        .map(|(id, addr)| (*id, openraft::BasicNode { addr: addr.clone() }))
                        .collect::<std::collections::BTreeMap<_, _>>();
                    tracing::info!(node_id = f.opts.node_id, members = ?f.opts.peers, "initializing the cluster");
                    if let Err(e) = f.raft.initialize(nodes).await {
                        tracing::error!(error = %e, "cannot initialize the cluster");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot record a new cluster id"),
            }
            return;
        }
        if !waiting_logged {
            tracing::info!(
                answering_fresh = fresh,
                members,
                "waiting for a majority of the members before initializing the cluster"
            );
            waiting_logged = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOUNDING_ROUND) => {}
            _ = f.stopped.changed() => return,
        }
    }
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
