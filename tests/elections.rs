//! A three-node cluster under a steady write load holds no election: the default Raft
//! timings (election timeout 300 ms, heartbeats every 50 ms) are short enough for a fast
//! failover (measured in `bench/run.sh cluster`) and long enough for a loaded node on
//! this machine. A test binary of its own, so that no other cluster test shares the
//! machine with it while it counts terms.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::cluster::{free_ports, start_on, Load};
use support::*;

const GEN: &str = env!("CARGO_BIN_EXE_lithair-gen");

#[test]
fn a_loaded_cluster_holds_no_election() {
    let shop = Example::build(GEN, "shop", &[("admin", &["admin"])]);
    let tmp = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let peers: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect();
    let peers = peers.join(",");
    let mut servers: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let data = tmp.path().join(format!("n{}", i + 1));
            let id = (i + 1).to_string();
            let args = ["--node-id", id.as_str(), "--peers", peers.as_str()];
            start_on(&shop.bin, &shop.dir, &data, *port, &args)
        })
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let status = |addr: &str| {
        let a = call(
            "GET",
            &format!("http://{addr}/_cluster/status"),
            None,
            None,
            &[],
        );
        (
            a.json["leader"].as_u64(),
            a.json["term"].as_u64().unwrap_or(0),
        )
    };
    // Wait for a leader that every node knows.
    let until = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let views: Vec<_> = addrs.iter().map(|a| status(a)).collect();
        if let Some(l) = views[0].0.filter(|l| views.iter().all(|v| v.0 == Some(*l))) {
            break l;
        }
        assert!(Instant::now() < until, "no leader after 30 s: {views:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let terms: Vec<u64> = addrs.iter().map(|a| status(a).1).collect();
    let load = Load::start(addrs.clone(), 8, shop.token("admin"));
    std::thread::sleep(Duration::from_secs(8));
    let acked = load.finish();
    let after: Vec<_> = addrs.iter().map(|a| status(a)).collect();
    for (i, (l, term)) in after.iter().enumerate() {
        assert_eq!(
            (*l, *term),
            (Some(leader), terms[i]),
            "node {}: an election during the load ({} writes acknowledged)",
            i + 1,
            acked.len()
        );
    }
    assert!(acked.len() > 100, "only {} writes under load", acked.len());
    for s in &mut servers {
        s.stop();
    }
}
