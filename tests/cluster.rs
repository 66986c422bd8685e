//! Raft clusters of real processes on 127.0.0.1: writes to any node, leader and follower
//! kills (SIGKILL) under load, restarts, and the secret that guards Raft messages.
//! Every process is stopped at the end; every wait is bounded.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::{free_ports, start_on, Load, SECRET};
use support::*;

const GEN: &str = env!("CARGO_BIN_EXE_lithair-gen");

fn shop() -> &'static Example {
    static SHOP: OnceLock<Example> = OnceLock::new();
    SHOP.get_or_init(|| Example::build(GEN, "shop", &[("admin", &["admin"])]))
}

/// Writers over the nodes at `addrs`, with the admin token.
fn load(addrs: Vec<String>, writers: usize) -> Load {
    Load::start(addrs, writers, shop().token("admin"))
}

struct Node {
    id: u64,
    /// The loopback address it listens on (127.0.0.1, or 127.0.0.N behind proxies).
    host: String,
    port: u16,
    data: PathBuf,
    server: Option<Server>,
}

struct Cluster {
    _tmp: tempfile::TempDir,
    nodes: Vec<Node>,
    peers: String,
    extra: Vec<String>,
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        Self::start_with(n, Vec::new())
    }

    /// Starts `n` nodes; `extra` goes to every node's `serve`.
    fn start_with(n: usize, extra: Vec<String>) -> Cluster {
        let ports = free_ports(n);
        let hosts = vec!["127.0.0.1".to_string(); n];
        let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        Self::launch(hosts, ports, peers, extra)
    }

    /// Starts node `i + 1` on `hosts[i]:ports[i]`, every node with the `--peers` list of
    /// the addresses in `peers`.
    fn launch(
        hosts: Vec<String>,
        ports: Vec<u16>,
        peers: Vec<String>,
        extra: Vec<String>,
    ) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let list = peers
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = hosts
            .into_iter()
            .zip(ports)
            .enumerate()
            .map(|(i, (host, port))| Node {
                id: i as u64 + 1,
                host,
                port,
                data: tmp.path().join(format!("d{}", i + 1)),
                server: None,
            })
            .collect();
        let mut c = Cluster {
            _tmp: tmp,
            nodes,
            peers: list,
            extra,
        };
        for i in 0..peers.len() {
            c.up(i);
        }
        c
    }

    fn up(&mut self, i: usize) {
        let s = shop();
        let node = &self.nodes[i];
        let mut args = vec![
            "--host".to_string(),
            node.host.clone(),
            "--node-id".to_string(),
            node.id.to_string(),
            "--peers".to_string(),
            self.peers.clone(),
        ];
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = start_on(&s.bin, &s.dir, &node.data, node.port, &args);
        self.nodes[i].server = Some(server);
    }

    /// Creates `n` categories named `<prefix>-<k>` through node `i`; answers their ids.
    fn categories(&self, i: usize, prefix: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|k| {
                let a = call(
                    "POST",
                    &self.url(i, "/api/categories"),
                    Some(shop().token("admin")),
                    Some(&json!({"name": format!("{prefix}-{k}")})),
                    &[],
                );
                assert_eq!(a.status, 201, "{}", a.text);
                a.json["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// Every category of `ids` can be read on node `i`.
    fn assert_categories_on(&self, i: usize, ids: &[String]) {
        for id in ids {
            let got = call(
                "GET",
                &self.url(i, &format!("/api/categories/{id}")),
                None,
                None,
                &[],
            );
            assert_eq!(
                got.status,
                200,
                "record {id} on node {}: {}",
                i + 1,
                got.text
            );
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.addr(i))
    }

    /// Where node `i` listens (clients talk to it there, never through a proxy).
    fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].host, self.nodes[i].port)
    }

    fn addrs(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.addr(i)).collect()
    }

    fn status(&self, i: usize) -> Option<Value> {
        self.nodes[i].server.as_ref()?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        agent
            .get(&self.url(i, "/_cluster/status"))
            .call()
            .ok()?
            .into_json()
            .ok()
    }

    /// Waits for one leader that every running node agrees on; answers its index.
    fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let views: Vec<Option<u64>> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].server.is_some())
                .map(|i| self.status(i).and_then(|s| s["leader"].as_u64()))
                .collect();
            if let Some(Some(l)) = views.first() {
                if views.iter().all(|v| *v == Some(*l)) {
                    if let Some(i) = self
                        .nodes
                        .iter()
                        .position(|n| n.id == *l && n.server.is_some())
                    {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {views:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node has applied the same last entry.
    fn converge(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let applied: Vec<Option<u64>> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].server.is_some())
                .map(|i| self.status(i).and_then(|s| s["last_applied"].as_u64()))
                .collect();
            if applied.iter().all(|a| a.is_some() && *a == applied[0]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge: {applied:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn events(&self, i: usize) -> Vec<(u64, String)> {
        let a = call(
            "GET",
            &self.url(i, "/_raft/events"),
            None,
            None,
            &[("x-lithair-cluster-secret", SECRET)],
        );
        assert_eq!(a.status, 200, "{}", a.text);
        a.json
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["sequence_number"].as_u64().unwrap(),
                    e["event_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn running(c: &Cluster) -> Vec<usize> {
    (0..c.nodes.len())
        .filter(|i| c.nodes[*i].server.is_some())
        .collect()
}

fn assert_everywhere(c: &Cluster, acked: &BTreeMap<String, Value>) {
    assert_records_everywhere(c, acked);
    let logs: Vec<Vec<(u64, String)>> = running(c).into_iter().map(|i| c.events(i)).collect();
    for (i, log) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            log, &logs[0],
            "running node #{i} holds a different event log than the first"
        );
    }
    let seqs: Vec<u64> = logs[0].iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "sequence numbers are gap-free"
    );
}

fn assert_records_everywhere(c: &Cluster, acked: &BTreeMap<String, Value>) {
    for i in running(c) {
        let mut found: BTreeMap<String, Value> = BTreeMap::new();
        loop {
            let page = call(
                "GET",
                &c.url(
                    i,
                    &format!("/api/categories?limit=1000&offset={}", found.len()),
                ),
                None,
                None,
                &[],
            );
            let items = page.json["items"].as_array().unwrap().clone();
            if items.is_empty() {
                break;
            }
            let before = found.len();
            found.extend(
                items
                    .into_iter()
                    .map(|v| (v["id"].as_str().unwrap().to_string(), v)),
            );
            // A page of records already seen would repeat forever.
            assert!(
                found.len() > before,
                "node {i}: the page at {before} repeats"
            );
        }
        for (id, body) in acked {
            assert_eq!(
                found.get(id),
                Some(body),
                "node {}: acknowledged write {id} missing or different",
                i + 1
            );
        }
    }
}

#[test]
fn leader_and_follower_kills_lose_no_acknowledged_write() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let load = load(c.addrs(), 6);
    let hot = Hot::start(&c, leader, 3, 3);
    std::thread::sleep(Duration::from_millis(1500));

    // Kill the leader: a new one is elected and writes go on.
    let killed_at = Instant::now();
    c.nodes[leader].server.as_mut().unwrap().kill9();
    c.nodes[leader].server = None;
    let new_leader = c.leader();
    assert_ne!(new_leader, leader);
    eprintln!("new leader after {:?}", killed_at.elapsed());
    std::thread::sleep(Duration::from_millis(1500));
    c.up(leader);

    // Kill a follower, then bring it back.
    std::thread::sleep(Duration::from_millis(1000));
    let follower = (0..3).find(|i| *i != c.leader()).unwrap();
    c.nodes[follower].server.as_mut().unwrap().kill9();
    c.nodes[follower].server = None;
    std::thread::sleep(Duration::from_millis(1500));
    c.up(follower);
    std::thread::sleep(Duration::from_millis(1000));

    let acked = load.finish();
    hot.finish();
    c.converge();
    assert_everywhere(&c, &acked);
}

#[test]
fn raft_messages_need_the_cluster_secret() {
    let c = Cluster::start(3);
    c.leader();
    let vote = json!({"vote": {"leader_id": {"term": 99, "node_id": 2}, "committed": false}, "last_log_id": null});
    let no_secret = call("POST", &c.url(0, "/_raft/vote"), None, Some(&vote), &[]);
    assert_eq!(no_secret.status, 401);
    let wrong = call(
        "POST",
        &c.url(0, "/_raft/vote"),
        None,
        Some(&vote),
        &[("x-lithair-cluster-secret", "not-the-secret-at-all")],
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(
        c.status(0).unwrap()["term"].as_u64(),
        c.status(1).unwrap()["term"].as_u64(),
        "the refused vote changed nothing"
    );

    // A multi-node cluster without a secret does not start (unless --insecure-cluster).
    let s = shop();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&s.bin)
        .current_dir(&s.dir)
        .args([
            "serve",
            "--port",
            "0",
            "--node-id",
            "1",
            "--peers",
            "1=127.0.0.1:1,2=127.0.0.1:2",
            "--data-dir",
        ])
        .arg(tmp.path())
        .env_remove("LITHAIR_CLUSTER_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_paused_leader_steps_down_without_split_brain() {
    let c = Cluster::start(3);
    let leader = c.leader();
    let load = load(c.addrs(), 4);
    let hot = Hot::start(&c, leader, 3, 3);
    std::thread::sleep(Duration::from_millis(800));
    let pid = c.nodes[leader].server.as_ref().unwrap().pid() as i32;
    // Who claims to lead, per term, sampled while the leader is frozen and after it wakes.
    let mut claims: BTreeMap<u64, std::collections::BTreeSet<u64>> = BTreeMap::new();
    let sample = claim_leaders;
    // SAFETY: signals our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        sample(&c, &mut claims);
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        sample(&c, &mut claims);
        std::thread::sleep(Duration::from_millis(100));
    }
    let new_leader = c.leader();
    assert_ne!(new_leader, leader, "the frozen leader lost its leadership");
    assert_eq!(
        c.status(leader).unwrap()["state"],
        "Follower",
        "the old leader stepped down"
    );
    for (term, leaders) in &claims {
        assert!(
            leaders.len() <= 1,
            "term {term} had several leaders: {leaders:?}"
        );
    }
    let acked = load.finish();
    hot.finish();
    c.converge();
    assert_everywhere(&c, &acked);
}

#[test]
fn a_lagging_follower_catches_up_through_a_snapshot() {
    let s = shop();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("small-snapshots.toml");
    let text = std::fs::read_to_string(s.dir.join("lithair.toml")).unwrap();
    let text = format!("{text}\n[cluster]\nsnapshot_every = 40\nkeep_after_snapshot = 0\n");
    std::fs::write(&config, text).unwrap();
    let mut c = Cluster::start_with(3, vec!["--config".into(), config.display().to_string()]);
    let leader = c.leader();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    c.nodes[follower].server.as_mut().unwrap().kill9();
    c.nodes[follower].server = None;
    let mut acked = BTreeMap::new();
    for n in 0..150 {
        let body = json!({"name": format!("lag-{n}")});
        let a = call(
            "POST",
            &c.url(leader, "/api/categories"),
            Some(s.token("admin")),
            Some(&body),
            &[],
        );
        assert_eq!(a.status, 201, "{}", a.text);
        acked.insert(a.json["id"].as_str().unwrap().to_string(), a.json.clone());
    }
    c.up(follower);
    c.converge();
    assert_records_everywhere(&c, &acked);
    // The snapshot skipped the follower's events; it fetches them from the leader, and
    // then every node holds the same, whole event log.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.events(follower) != c.events(leader) {
        assert!(
            Instant::now() < deadline,
            "the follower did not fetch the events its snapshot skipped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_everywhere(&c, &acked);
}

#[test]
fn membership_grows_to_five_and_shrinks_under_load() {
    let s = shop();
    let mut c = Cluster::start(3);
    let ports = free_ports(2);
    c.peers = format!(
        "{},4=127.0.0.1:{},5=127.0.0.1:{}",
        c.peers, ports[0], ports[1]
    );
    for (k, port) in ports.iter().enumerate() {
        let id = 4 + k as u64;
        let data = c._tmp.path().join(format!("d{id}"));
        c.nodes.push(Node {
            id,
            host: "127.0.0.1".into(),
            port: *port,
            data,
            server: None,
        });
    }
    let load = load(c.addrs().into_iter().take(3).collect(), 4);
    for i in 3..5 {
        // Ask for the leader before the new node runs: until it is added it knows none.
        let leader = c.leader();
        c.up(i);
        let body = json!({"id": c.nodes[i].id, "addr": format!("127.0.0.1:{}", c.nodes[i].port)});
        // The first change goes to the leader, the second to a follower, which forwards it.
        let target = if i == 3 {
            leader
        } else {
            (0..3).find(|j| *j != leader).unwrap()
        };
        let added = add_member(&c.url(target, "/_cluster/members"), s.token("admin"), &body);
        assert_eq!(added.status, 200, "{}", added.text);
    }
    let leader = c.leader();
    assert_eq!(c.status(leader).unwrap()["members"], json!([1, 2, 3, 4, 5]));
    // Remove a node that is not the leader, then stop it.
    let gone = (0..3).find(|i| *i != leader).unwrap();
    let path = format!("/_cluster/members/{}", c.nodes[gone].id);
    let removed = call(
        "DELETE",
        &c.url(leader, &path),
        Some(s.token("admin")),
        None,
        &[],
    );
    assert_eq!(removed.status, 200, "{}", removed.text);
    std::thread::sleep(Duration::from_millis(500));
    c.nodes[gone].server.as_mut().unwrap().kill9();
    c.nodes[gone].server = None;
    std::thread::sleep(Duration::from_millis(1000));
    let acked = load.finish();
    c.converge();
    let members = c.status(c.leader()).unwrap()["members"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(members, 4);
    assert_records_everywhere(&c, &acked);
}

#[test]
fn a_new_member_must_answer_the_handshake_as_itself_in_this_cluster() {
    let s = shop();
    let c = Cluster::start(3);
    let tmp = tempfile::tempdir().unwrap();
    // A node started alone is a cluster of its own, with its own id (node 1).
    let ports = free_ports(2);
    let mut lone = start_on(&s.bin, &s.dir, &tmp.path().join("lone"), ports[0], &[]);
    let leader = c.leader();
    let add = |id: u64, addr: String| {
        call(
            "POST",
            &c.url(leader, "/_cluster/members"),
            Some(s.token("admin")),
            Some(&json!({"id": id, "addr": addr})),
            &[],
        )
    };
    let a = add(4, lone.addr.to_string());
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("is node 1, not node 4"), "{}", a.text);
    let a = add(1, lone.addr.to_string());
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("belongs to cluster"), "{}", a.text);
    // Sent to a follower, the leader's refusal comes back as it is.
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let a = call(
        "POST",
        &c.url(follower, "/_cluster/members"),
        Some(s.token("admin")),
        Some(&json!({"id": 4, "addr": lone.addr.to_string()})),
        &[],
    );
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(a.text.contains("is node 1, not node 4"), "{}", a.text);
    // Nothing answers at the address: 502, nothing changed.
    let a = add(4, format!("127.0.0.1:{}", ports[1]));
    assert_eq!(a.status, 502, "{}", a.text);
    assert!(a.text.contains("handshake"), "{}", a.text);
    assert_eq!(c.status(leader).unwrap()["members"], json!([1, 2, 3]));
    lone.stop();
}

#[test]
fn a_follower_hands_a_membership_change_to_the_leader_without_the_callers_token() {
    let s = shop();
    let (mut c, mut proxies) = Cluster::start_proxied(3);
    let leader = c.leader();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let new = c.plan_proxied(&mut proxies);
    c.up(new);
    let body = json!({"id": c.nodes[new].id, "addr": proxies[new].addr.to_string()});
    let token = s.token("admin");
    let added = add_member(&c.url(follower, "/_cluster/members"), token, &body);
    assert_eq!(added.status, 200, "{}", added.text);
    assert_eq!(added.json["members"], json!([1, 2, 3, 4]), "{}", added.text);
    // The change reached the leader through its proxy, with the secret only: the
    // caller's token stayed on the follower that checked it.
    let to_leader = &proxies[leader];
    assert!(
        to_leader.seen(b"POST /_cluster/members"),
        "the change did not pass the leader's proxy"
    );
    assert!(to_leader.seen(support::cluster::SECRET.as_bytes()));
    assert!(
        !to_leader.seen(token.as_bytes()),
        "the caller's token was passed on"
    );
}

#[test]
fn linearizable_reads_on_a_follower_see_the_latest_write() {
    let s = shop();
    let c = Cluster::start(3);
    let leader = c.leader();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    for n in 0..20 {
        let body = json!({"name": format!("lin-{n}")});
        let a = call(
            "POST",
            &c.url(leader, "/api/categories"),
            Some(s.token("admin")),
            Some(&body),
            &[],
        );
        assert_eq!(a.status, 201);
        let id = a.json["id"].as_str().unwrap();
        // Half of the reads ask with the query parameter, half with the header.
        let read = if n % 2 == 0 {
            let path = format!("/api/categories/{id}?consistency=linearizable");
            call("GET", &c.url(follower, &path), None, None, &[])
        } else {
            let path = format!("/api/categories/{id}");
            call(
                "GET",
                &c.url(follower, &path),
                None,
                None,
                &[("x-lithair-consistency", "linearizable")],
            )
        };
        assert_eq!(
            read.status, 200,
            "write {n} not visible on the follower: {}",
            read.text
        );
        assert_eq!(read.json, a.json);
    }
    let bad = call(
        "GET",
        &c.url(follower, "/api/categories?consistency=eventually"),
        None,
        None,
        &[],
    );
    assert_eq!(bad.status, 400);
    let bad = call(
        "GET",
        &c.url(follower, "/api/categories"),
        None,
        None,
        &[("x-lithair-consistency", "eventually")],
    );
    assert_eq!(bad.status, 400);
}

#[test]
fn a_node_without_quorum_is_unready_and_answers_writes_within_the_deadline() {
    let s = shop();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("deadline.toml");
    let text = std::fs::read_to_string(s.dir.join("lithair.toml"))
        .unwrap()
        .replace("request_timeout_ms = 10000", "request_timeout_ms = 1500");
    assert!(text.contains("request_timeout_ms = 1500"));
    std::fs::write(&config, text).unwrap();
    let mut c = Cluster::start_with(
        3,
        vec!["--config".into(), config.to_str().unwrap().to_string()],
    );
    let leader = c.leader();
    for i in 0..3 {
        let ready = call("GET", &c.url(i, "/ready"), None, None, &[]);
        assert_eq!(ready.status, 200, "node {i}: {}", ready.text);
    }
    // The leader and one follower go: the last node has no quorum.
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].server.as_mut().unwrap().kill9();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let r = call("GET", &c.url(survivor, "/ready"), None, None, &[]);
        if r.status == 503 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(
        ready.json["reason"]
            .as_str()
            .unwrap_or("")
            .contains("leader"),
        "{}",
        ready.text
    );
    // A write cannot commit: answered 503 with Retry-After at the deadline, not never.
    let started = Instant::now();
    let w = call(
        "POST",
        &c.url(survivor, "/api/categories"),
        Some(s.token("admin")),
        Some(&json!({"name": "no quorum"})),
        &[],
    );
    assert_eq!(w.status, 503, "{}", w.text);
    assert_eq!(w.header("retry-after"), Some("1"), "{:?}", w.headers);
    assert!(
        w.json["detail"]
            .as_str()
            .unwrap_or("")
            .contains("outcome is unknown"),
        "{}",
        w.text
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    // Reads are still served from memory.
    let list = call("GET", &c.url(survivor, "/api/categories"), None, None, &[]);
    assert_eq!(list.status, 200, "{}", list.text);
}

/// Runs `serve` with `args`, expecting it to refuse to start; answers its stderr.
fn refused_start(data: &Path, args: &[&str]) -> String {
    let s = shop();
    let mut child = std::process::Command::new(&s.bin)
        .current_dir(&s.dir)
        .args(["serve", "--host", "127.0.0.1", "--data-dir"])
        .arg(data)
        .args(args)
        .env("LITHAIR_CLUSTER_SECRET", SECRET)
        .env("LITHAIR_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "serve {args:?} started");
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} neither started nor refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_data_dir_knows_its_node_and_cluster_and_a_wiped_node_rejoins() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let ids = c.categories(leader, "known", 5);
    // Every node learns the cluster's id.
    let deadline = Instant::now() + Duration::from_secs(20);
    let cluster_id = loop {
        let seen: Vec<Value> = (0..3)
            .map(|i| {
                c.status(i)
                    .map(|s| s["cluster_id"].clone())
                    .unwrap_or(Value::Null)
            })
            .collect();
        if seen[0].is_string() && seen.iter().all(|s| *s == seen[0]) {
            break seen[0].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "cluster ids: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    c.converge();

    // Node 2's data dir under another node id is refused.
    c.nodes[1].server.as_mut().unwrap().kill9();
    c.nodes[1].server = None;
    let port = c.nodes[1].port.to_string();
    let err = refused_start(
        &c.nodes[1].data,
        &["--port", &port, "--node-id", "3", "--peers", &c.peers],
    );
    assert!(err.contains("belongs to node 2"), "{err}");

    // A data dir of another cluster is refused: a cluster of one made with id 2 ...
    let other = c._tmp.path().join("other");
    let peers_alone = format!("2=127.0.0.1:{port}");
    let mut alone = start_on(
        &shop().bin,
        &shop().dir,
        &other,
        c.nodes[1].port,
        &["--node-id", "2", "--peers", &peers_alone],
    );
    alone.stop();
    // ... does not join this one.
    let err = refused_start(
        &other,
        &["--port", &port, "--node-id", "2", "--peers", &c.peers],
    );
    assert!(err.contains("another cluster"), "{err}");
    c.up(1);

    // Node 1 (the lowest id, which initialized the cluster) loses its disk: started empty,
    // it joins the cluster it belonged to instead of starting a second one. It may have
    // voted before: it grants no vote until it has caught up. With the leader frozen it
    // cannot catch up, so the third node, alone with it, elects nobody.
    let first = 0;
    c.nodes[first].server.as_mut().unwrap().kill9();
    c.nodes[first].server = None;
    std::fs::remove_dir_all(&c.nodes[first].data).unwrap();
    let leader = c.leader();
    let pid = c.nodes[leader].server.as_ref().unwrap().pid() as i32;
    // SAFETY: signals our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    c.up(first);
    let third = (0..3).find(|i| *i != first && *i != leader).unwrap();
    std::thread::sleep(Duration::from_millis(4000));
    let wiped = c.status(first).unwrap();
    assert_eq!(wiped["voting"], json!(false), "{wiped}");
    let alone = c.status(third).unwrap();
    assert_ne!(
        alone["state"], "Leader",
        "elected with a wiped node's vote: {alone}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    c.leader();
    c.converge();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.status(first).unwrap()["voting"] != json!(true) {
        assert!(
            Instant::now() < deadline,
            "the wiped node never votes again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = c.status(first).unwrap();
    assert_eq!(status["cluster_id"], json!(cluster_id), "{status}");
    c.assert_categories_on(first, &ids);
}

/// The lowest node loses its disk while its peers are down too: started alone and empty,
/// it does not initialize a second cluster; when the peers come back it joins theirs and
/// catches up.
#[test]
fn a_wiped_lowest_node_with_its_peers_down_waits_and_joins_their_cluster() {
    let mut c = Cluster::start(3);
    let leader = c.leader();
    let ids = c.categories(leader, "kept", 3);
    c.converge();
    let cluster_id = c.status(1).unwrap()["cluster_id"].clone();
    for i in 0..3 {
        c.nodes[i].server.as_mut().unwrap().kill9();
        c.nodes[i].server = None;
    }
    std::fs::remove_dir_all(&c.nodes[0].data).unwrap();
    c.up(0);
    std::thread::sleep(Duration::from_millis(2500));
    let waiting = c.status(0).unwrap();
    assert_eq!(waiting["cluster_id"], Value::Null, "{waiting}");
    assert_eq!(waiting["leader"], Value::Null, "{waiting}");
    c.up(1);
    c.up(2);
    c.leader();
    c.converge();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.status(0).unwrap()["cluster_id"] != cluster_id {
        assert!(
            Instant::now() < deadline,
            "node 1 never joined the old cluster"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.assert_categories_on(0, &ids);
}

/// Clients on a few hot records, through every node: linearizable reads and updates with
/// If-Match, each recorded with its invoke and completion time for the linearizability
/// checker (`support::linearizable`).
struct Hot {
    stop: Arc<AtomicBool>,
    history: Arc<linearizable::History>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Hot {
    /// Creates `keys` records through node `via`, then starts `threads` clients on `addrs`.
    fn start(c: &Cluster, via: usize, keys: usize, threads: usize) -> Hot {
        use linearizable::{Event, History, Op};
        let history = Arc::new(History::default());
        let token = shop().token("admin").to_string();
        let mut ids = Vec::new();
        for k in 0..keys {
            let invoke = Instant::now();
            let a = call(
                "POST",
                &c.url(via, "/api/categories"),
                Some(&token),
                Some(
                    &json!({"name": format!("hot-{k}-{}", rand::random::<u32>()), "description": "v0"}),
                ),
                &[],
            );
            assert_eq!(a.status, 201, "{}", a.text);
            let id = a.json["id"].as_str().unwrap().to_string();
            history.record(Event {
                key: id.clone(),
                op: Op::Create { value: "v0".into() },
                invoke,
                complete: Some(Instant::now()),
            });
            ids.push(id);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let addrs = c.addrs();
        let workers = (0..threads)
            .map(|t| {
                let (stop, history, ids, addrs, token) = (
                    stop.clone(),
                    history.clone(),
                    ids.clone(),
                    addrs.clone(),
                    token.clone(),
                );
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(4))
                        .build();
                    let mut known = vec![1u64; ids.len()];
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) && n < 5000 {
                        n += 1;
                        let k = (t * 7 + n * 3) % ids.len();
                        let url = format!(
                            "http://{}/api/categories/{}",
                            addrs[(t + n) % addrs.len()],
                            ids[k]
                        );
                        let invoke = Instant::now();
                        let record = |op: Op, done: bool| {
                            history.record(Event {
                                key: ids[k].clone(),
                                op,
                                invoke,
                                complete: done.then(Instant::now),
                            })
                        };
                        if n.is_multiple_of(2) {
                            let r = agent.get(&format!("{url}?consistency=linearizable")).call();
                            match r {
                                Ok(r) => {
                                    let v: Value = r.into_json().unwrap();
                                    let version = v["version"].as_u64().unwrap();
                                    known[k] = version;
                                    let seen = Some((
                                        version,
                                        v["description"].as_str().unwrap().to_string(),
                                    ));
                                    record(Op::Read { seen }, true);
                                }
                                Err(ureq::Error::Status(404, _)) => {
                                    record(Op::Read { seen: None }, true)
                                }
                                // No answer, or no leader to confirm with: a read changes nothing.
                                Err(_) => {}
                            }
                        } else {
                            let value = format!("t{t}-{n}");
                            let expect = known[k];
                            let r = agent
                                .request("PATCH", &url)
                                .set("authorization", &format!("Bearer {token}"))
                                .set("if-match", &format!("\"{expect}\""))
                                .set("content-type", "application/merge-patch+json")
                                .send_string(&json!({"description": value}).to_string());
                            let update = |ok| Op::Update {
                                expect,
                                value: value.clone(),
                                ok,
                            };
                            match r {
                                Ok(r) => {
                                    let v: Value = r.into_json().unwrap();
                                    assert_eq!(v["version"].as_u64(), Some(expect + 1), "{v}");
                                    known[k] = expect + 1;
                                    record(update(Some(true)), true);
                                }
                                Err(ureq::Error::Status(412, _)) => {
                                    record(update(Some(false)), true);
                                    // Learn the version again with the next read.
                                }
                                Err(ureq::Error::Status(404, _)) => {
                                    record(Op::Read { seen: None }, true)
                                }
                                Err(ureq::Error::Status(code, r)) => {
                                    assert!(
                                        matches!(code, 503 | 507),
                                        "{code}: {:?}",
                                        r.into_string()
                                    );
                                    record(update(None), false);
                                }
                                // Never sent: nothing happened.
                                Err(ureq::Error::Transport(e))
                                    if e.kind() == ureq::ErrorKind::ConnectionFailed => {}
                                Err(ureq::Error::Transport(_)) => record(update(None), false),
                            }
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Hot {
            stop,
            history,
            workers,
        }
    }

    /// Stops the clients and checks the history: every record's operations linearizable.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.join().unwrap();
        }
        let events = self.history.events();
        let done = events.iter().filter(|e| e.complete.is_some()).count();
        assert!(done > 20, "too few operations completed: {done}");
        eprintln!(
            "linearizability: {} operations ({} unknown) checked",
            events.len(),
            events.len() - done
        );
        if let Err(e) = linearizable::check(&events) {
            panic!("{e}");
        }
    }
}

impl Cluster {
    /// Starts `n` nodes, each on its own loopback address (127.0.0.11, .12, ...) behind a
    /// proxy that the test can cut per source address (see `support::proxy`): the
    /// `--peers` list names the proxies, so all Raft traffic passes them.
    fn start_proxied(n: usize) -> (Cluster, Vec<proxy::Proxy>) {
        let ports = free_ports(n);
        let hosts: Vec<String> = (0..n).map(|i| format!("127.0.0.{}", 11 + i)).collect();
        let proxies: Vec<proxy::Proxy> = (0..n)
            .map(|i| proxy::Proxy::start(format!("{}:{}", hosts[i], ports[i]).parse().unwrap()))
            .collect();
        let peers = proxies.iter().map(|p| p.addr.to_string()).collect();
        (Self::launch(hosts, ports, peers, Vec::new()), proxies)
    }

    fn ip(&self, i: usize) -> std::net::IpAddr {
        self.nodes[i].host.parse().unwrap()
    }

    /// Plans one more node behind a proxy of its own (not started, not a member yet).
    fn plan_proxied(&mut self, proxies: &mut Vec<proxy::Proxy>) -> usize {
        let i = self.nodes.len();
        let host = format!("127.0.0.{}", 11 + i);
        let port = free_ports(1)[0];
        let p = proxy::Proxy::start(format!("{host}:{port}").parse().unwrap());
        self.peers = format!("{},{}={}", self.peers, i + 1, p.addr);
        self.nodes.push(Node {
            id: i as u64 + 1,
            host,
            port,
            data: self._tmp.path().join(format!("d{}", i + 1)),
            server: None,
        });
        proxies.push(p);
        i
    }

    /// Cuts node `i` off from every other node, both ways.
    fn isolate(&self, i: usize, proxies: &[proxy::Proxy]) {
        for j in (0..proxies.len()).filter(|j| *j != i) {
            proxies[j].block(self.ip(i));
            proxies[i].block(self.ip(j));
        }
    }
}

/// `POST url` (a membership change) with `token`, sent again while the answer is a 503
/// (no leader yet, or the last change, or the cluster's first membership, has not
/// committed yet), for at most 15 s.
fn add_member(url: &str, token: &str, body: &Value) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = call("POST", url, Some(token), Some(body), &[]);
        if a.status != 503 || Instant::now() > deadline {
            return a;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Who claims to lead, per term.
fn claim_leaders(c: &Cluster, claims: &mut BTreeMap<u64, std::collections::BTreeSet<u64>>) {
    for i in running(c) {
        if let Some(s) = c.status(i) {
            if s["state"] == "Leader" {
                let term = s["term"].as_u64().unwrap();
                claims
                    .entry(term)
                    .or_default()
                    .insert(s["node_id"].as_u64().unwrap());
            }
        }
    }
}

/// Acknowledged records by id, as `assert_everywhere` takes them.
fn by_id(acked: Vec<(usize, Instant, Value)>) -> BTreeMap<String, Value> {
    acked
        .into_iter()
        .map(|(_, _, v)| (v["id"].as_str().unwrap().to_string(), v))
        .collect()
}

/// Creates through every node, recording which node acknowledged each and when.
fn timed_writes(
    c: &Cluster,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(usize, Instant, Value)>> {
    let addrs = c.addrs();
    let token = shop().token("admin").to_string();
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..addrs.len() * 2)
            .map(|w| {
                let (addrs, token, stop) = (addrs.clone(), token.clone(), stop.clone());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(4))
                        .build();
                    let node = w % addrs.len();
                    let mut out = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && n < 10_000 {
                        n += 1;
                        let r = agent
                            .post(&format!("http://{}/api/categories", addrs[node]))
                            .set("authorization", &format!("Bearer {token}"))
                            .set("content-type", "application/json")
                            .send_string(&json!({"name": format!("p{w}-{n}")}).to_string());
                        match r {
                            Ok(r) => out.push((node, Instant::now(), r.into_json().unwrap())),
                            Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                    out
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
}

#[test]
fn a_partitioned_leader_acknowledges_nothing_and_the_majority_goes_on() {
    let (c, proxies) = Cluster::start_proxied(3);
    let leader = c.leader();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = timed_writes(&c, stop.clone());
    let hot = Hot::start(&c, leader, 3, 4);
    std::thread::sleep(Duration::from_millis(1000));
    // Cut the leader off from both followers, both ways.
    let cut = Instant::now();
    c.isolate(leader, &proxies);
    let mut claims = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let new_leader = loop {
        claim_leaders(&c, &mut claims);
        let views: Vec<Option<u64>> = (0..3)
            .filter(|j| *j != leader)
            .map(|j| c.status(j).and_then(|s| s["leader"].as_u64()))
            .collect();
        if let [Some(a), Some(b)] = views[..] {
            if a == b && a != c.nodes[leader].id {
                break a;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the majority elected no leader: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "majority elected node {new_leader} after {:?}",
        cut.elapsed()
    );
    // Let the majority take writes while the old leader is alone.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        claim_leaders(&c, &mut claims);
        std::thread::sleep(Duration::from_millis(100));
    }
    // The old leader, heard by no quorum, is not ready.
    let ready = call("GET", &c.url(leader, "/ready"), None, None, &[]);
    assert_eq!(ready.status, 503, "{}", ready.text);
    let heal = Instant::now();
    for p in &proxies {
        p.heal();
    }
    std::thread::sleep(Duration::from_millis(2000));
    stop.store(true, Ordering::Relaxed);
    let acked = writes.join().unwrap();
    hot.finish();
    // The isolated old leader acknowledged nothing while it was cut off (a write it had
    // committed just before may still be answered right after the cut).
    let grace = Duration::from_millis(300);
    let alone: Vec<_> = acked
        .iter()
        .filter(|(node, at, _)| *node == leader && *at > cut + grace && *at < heal)
        .collect();
    assert!(
        alone.is_empty(),
        "the isolated leader acknowledged {} writes",
        alone.len()
    );
    let majority = acked
        .iter()
        .filter(|(node, at, _)| *node != leader && *at > cut + grace && *at < heal)
        .count();
    assert!(
        majority > 0,
        "the majority acknowledged nothing during the partition"
    );
    for (term, leaders) in &claims {
        assert!(
            leaders.len() <= 1,
            "term {term} had several leaders: {leaders:?}"
        );
    }
    c.converge();
    assert_everywhere(&c, &by_id(acked));
}

#[test]
fn a_one_way_partition_of_the_leader_heals_into_one_log() {
    let (c, proxies) = Cluster::start_proxied(3);
    let leader = c.leader();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = timed_writes(&c, stop.clone());
    let hot = Hot::start(&c, leader, 3, 4);
    std::thread::sleep(Duration::from_millis(1000));
    // The leader's messages no longer reach the followers; theirs still reach it.
    for j in (0..3).filter(|j| *j != leader) {
        proxies[j].block(c.ip(leader));
    }
    let mut claims = BTreeMap::new();
    // The followers, hearing nothing from the leader, elect one of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        claim_leaders(&c, &mut claims);
        let others: Vec<Option<u64>> = (0..3)
            .filter(|j| *j != leader)
            .map(|j| c.status(j).and_then(|s| s["leader"].as_u64()))
            .collect();
        if others
            .iter()
            .all(|l| l.is_some() && *l == others[0] && *l != Some(c.nodes[leader].id))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the followers did not move on: {others:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Writes go on for a while on that side.
    std::thread::sleep(Duration::from_millis(1500));
    for p in &proxies {
        p.heal();
    }
    std::thread::sleep(Duration::from_millis(2000));
    claim_leaders(&c, &mut claims);
    stop.store(true, Ordering::Relaxed);
    let acked = writes.join().unwrap();
    hot.finish();
    for (term, leaders) in &claims {
        assert!(
            leaders.len() <= 1,
            "term {term} had several leaders: {leaders:?}"
        );
    }
    c.leader();
    c.converge();
    assert_everywhere(&c, &by_id(acked));
}

#[test]
fn a_membership_change_completes_while_a_follower_is_cut_off() {
    let s = shop();
    let (mut c, mut proxies) = Cluster::start_proxied(3);
    let leader = c.leader();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = timed_writes(&c, stop.clone());
    let hot = Hot::start(&c, leader, 3, 3);
    std::thread::sleep(Duration::from_millis(800));
    let new = c.plan_proxied(&mut proxies);
    c.up(new);
    // A follower is cut off; the leader, the other follower and the new node are a
    // majority of the old and of the new configuration.
    let cut = (0..3).find(|i| *i != leader).unwrap();
    c.isolate(cut, &proxies);
    let body = json!({"id": c.nodes[new].id, "addr": proxies[new].addr.to_string()});
    let added = add_member(&c.url(leader, "/_cluster/members"), s.token("admin"), &body);
    assert_eq!(added.status, 200, "{}", added.text);
    assert_eq!(added.json["members"], json!([1, 2, 3, 4]), "{}", added.text);
    std::thread::sleep(Duration::from_millis(1000));
    for p in &proxies {
        p.heal();
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let acked = writes.join().unwrap();
    hot.finish();
    c.leader();
    c.converge();
    for i in 0..4 {
        assert_eq!(
            c.status(i).unwrap()["members"],
            json!([1, 2, 3, 4]),
            "node {i}"
        );
    }
    assert_everywhere(&c, &by_id(acked));
}

/// Every order on node `i` (all pages).
fn orders_on(c: &Cluster, i: usize, token: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let page = call(
            "GET",
            &c.url(i, &format!("/api/orders?limit=1000&offset={}", out.len())),
            Some(token),
            None,
            &[],
        );
        assert_eq!(page.status, 200, "{}", page.text);
        let items = page.json["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return out;
        }
        out.extend(items);
        assert!(out.len() <= 1_000_000, "node {i}: the pages do not end");
    }
}

/// Writers of orders while the leader is killed: creates (paid or not, over four days),
/// patches that move an order between days or in and out of `paid`, and deletes. At the
/// end every node's `SalesMetrics` (paid orders per UTC day) is the same, to the bit,
/// and equals a reference computed from the orders.
#[test]
fn a_projection_is_the_same_on_every_node_after_a_leader_kill() {
    let mut c = Cluster::start(3);
    let token = shop().token("admin").to_string();
    let leader = c.leader();
    let post = |path: &str, body: Value| {
        let a = call("POST", &c.url(leader, path), Some(&token), Some(&body), &[]);
        assert_eq!(a.status, 201, "{path}: {}", a.text);
        a.json["id"].as_str().unwrap().to_string()
    };
    let category = post("/api/categories", json!({"name": "projection-test"}));
    let product = post(
        "/api/products",
        json!({"name": "p", "sku": "P-1", "price": 1.0, "category": category}),
    );
    let customer = post(
        "/api/customers",
        json!({"email": "c@example.com", "name": "C"}),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (stop, addrs, token) = (stop.clone(), c.addrs(), token.clone());
            let (product, customer) = (product.clone(), customer.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                let mut mine: Vec<String> = Vec::new();
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    n += 7;
                    let addr = &addrs[(n as usize) % addrs.len()];
                    let day = 1 + n % 4;
                    let status = if n % 3 == 0 { "pending" } else { "paid" };
                    let (method, url, body) = match (n % 10, mine.last()) {
                        (0..=5, _) | (_, None) => (
                            "POST",
                            format!("http://{addr}/api/orders"),
                            json!({"customer": customer, "products": [product],
                                "total": (n % 997) as f64 * 1.37 + 0.01, "status": status,
                                "placed_at": format!("2026-11-{day:02}T{:02}:15:00Z", n % 24)}),
                        ),
                        (6 | 7, Some(id)) => (
                            "PATCH",
                            format!("http://{addr}/api/orders/{id}"),
                            json!({"status": status, "placed_at": format!("2026-11-0{day}T08:00:00Z")}),
                        ),
                        (_, Some(id)) => ("DELETE", format!("http://{addr}/api/orders/{id}"), Value::Null),
                    };
                    let req = agent
                        .request(method, &url)
                        .set("authorization", &format!("Bearer {token}"));
                    let r = if body.is_null() {
                        req.call()
                    } else {
                        req.set("content-type", "application/json")
                            .send_string(&body.to_string())
                    };
                    match r {
                        Ok(resp) if method == "POST" => {
                            if let Ok(v) = resp.into_json::<Value>() {
                                mine.push(v["id"].as_str().unwrap_or_default().to_string());
                            }
                        }
                        Ok(_) if method == "DELETE" => {
                            mine.pop();
                        }
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    c.nodes[leader].server.as_mut().unwrap().kill9();
    c.nodes[leader].server = None;
    let _ = c.leader();
    std::thread::sleep(Duration::from_millis(1500));
    c.up(leader);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    c.converge();

    // The reference, from the orders a node holds.
    let orders = orders_on(&c, 0, &token);
    assert!(orders.len() > 20, "too few orders: {}", orders.len());
    let mut days: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for o in orders.iter().filter(|o| o["status"] == "paid") {
        let day = o["placed_at"].as_str().unwrap()[..10].to_string();
        days.entry(day)
            .or_default()
            .push(o["total"].as_f64().unwrap());
    }
    let metrics: Vec<Value> = running(&c)
        .into_iter()
        .map(|i| {
            let a = call(
                "GET",
                &c.url(i, "/api/sales_metrics?limit=1000"),
                Some(&token),
                None,
                &[],
            );
            assert_eq!(a.status, 200, "{}", a.text);
            a.json
        })
        .collect();
    assert_eq!(metrics.len(), 3);
    for (i, m) in metrics.iter().enumerate().skip(1) {
        assert_eq!(
            m, &metrics[0],
            "node #{i} holds other metrics than the first"
        );
    }
    let groups = metrics[0]["items"].as_array().unwrap();
    assert_eq!(groups.len(), days.len(), "{groups:?}");
    for (g, (day, totals)) in groups.iter().zip(&days) {
        let sum: f64 = totals.iter().sum();
        let max = totals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(g["placed_at"], day.as_str());
        assert_eq!(g["orders_count"], totals.len());
        assert!(
            (g["daily_revenue"].as_f64().unwrap() - sum).abs() < 1e-6 * sum.max(1.0),
            "{g} vs {sum}"
        );
        assert_eq!(g["biggest_order"].as_f64(), Some(max), "{g}");
    }
}

/// A change feed at `url`, open: the node has subscribed it once this returns (the
/// answer's head is sent after the subscription).
fn open_feed(url: &str) -> std::io::BufReader<Box<dyn std::io::Read + Send + Sync>> {
    let agent = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(20))
        .build();
    let resp = agent.get(url).call().expect("the feed");
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    std::io::BufReader::new(resp.into_reader())
}

/// The events of the next `n` data lines of an open change feed: (id, record id). Fails
/// after 60 s without them (the feed's comments every 15 s keep the reads returning).
fn read_feed(
    reader: &mut std::io::BufReader<Box<dyn std::io::Read + Send + Sync>>,
    n: usize,
) -> Vec<(u64, String)> {
    use std::io::BufRead;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut out, mut id, mut line) = (Vec::new(), 0, String::new());
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} events in 60 s",
            out.len()
        );
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("a line") > 0,
            "the feed ended"
        );
        if let Some(i) = line.strip_prefix("id: ") {
            id = i.trim().parse().expect("an id");
        }
        if let Some(d) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d.trim()).expect("JSON data");
            out.push((id, v["id"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// A follower serves the change feed of what it applies, and another node resumes it
/// from its own event log at the same sequence numbers. The leader's metrics show each
/// peer's replication lag.
#[test]
fn followers_serve_the_change_feed() {
    let c = Cluster::start(3);
    let leader = c.leader();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // The stream is open before the writes (it starts with the next change).
    let mut feed = open_feed(&c.url(others[0], "/api/categories/_events"));
    let ids = c.categories(leader, "feed", 3);
    let live = read_feed(&mut feed, 3);
    assert_eq!(
        live.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    c.converge();
    let since = live[0].0 - 1;
    let resumed = read_feed(
        &mut open_feed(&c.url(others[1], &format!("/api/categories/_events?since={since}"))),
        3,
    );
    assert_eq!(resumed, live, "the other follower's feed differs");

    // The leader reports each peer's replication lag (all caught up once the nodes
    // converged, as the metrics show within a few heartbeats); a follower reports none.
    let peers: Vec<u64> = others.iter().map(|i| c.nodes[*i].id).collect();
    let lag_of = |text: &str, peer: u64| {
        let series = format!("lithair_raft_replication_lag{{peer=\"{peer}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader_metrics = loop {
        let text = call("GET", &c.url(leader, "/metrics"), None, None, &[]).text;
        if peers.iter().all(|p| lag_of(&text, *p) == Some(0)) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the peers' lag is not 0:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        leader_metrics.contains("lithair_raft_is_leader 1"),
        "{leader_metrics}"
    );
    let follower_metrics = call("GET", &c.url(others[0], "/metrics"), None, None, &[]).text;
    assert!(
        !follower_metrics.contains("lithair_raft_replication_lag{"),
        "{follower_metrics}"
    );
    assert!(
        follower_metrics.contains("lithair_raft_is_leader 0"),
        "{follower_metrics}"
    );
}

/// A write sent to a follower with a `traceparent` is one trace on both nodes: the
/// follower's server span continues the caller's, its raft span holds the hand-over,
/// and the leader's span of the proposal (with its apply) goes under that raft span.
#[test]
fn a_forwarded_write_is_one_trace_across_the_follower_and_the_leader() {
    let s = shop();
    let receiver = support::otlp::Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("traced.toml");
    let text = std::fs::read_to_string(s.dir.join("lithair.toml"))
        .unwrap()
        .replace(
            "# otlp_endpoint = \"http://127.0.0.1:4318\"",
            &format!("otlp_endpoint = \"{}\"", receiver.endpoint()),
        )
        // Only the caller's sampled traceparent makes a trace.
        .replace("# sample_rate = 0.1", "sample_rate = 0");
    assert!(
        text.contains("sample_rate = 0\n"),
        "the template's [telemetry] changed"
    );
    std::fs::write(&config, text).unwrap();
    let c = Cluster::start_with(
        3,
        vec!["--config".to_string(), config.to_str().unwrap().to_string()],
    );
    let leader = c.leader();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let (leader_id, follower_id) = (
        c.nodes[leader].id.to_string(),
        c.nodes[follower].id.to_string(),
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let created = call(
        "POST",
        &c.url(follower, "/api/categories"),
        Some(s.token("admin")),
        Some(&json!({"name": "traced across"})),
        &[("traceparent", &format!("00-{trace}-b7ad6b7169203331-01"))],
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let on = |spans: &[support::otlp::Received], node: &str, name: &str| {
        spans
            .iter()
            .find(|s| {
                s.trace_id() == trace
                    && s.span.name == name
                    && s.resource.get("service.instance.id").map(String::as_str) == Some(node)
            })
            .cloned()
    };
    let spans = receiver.wait(Duration::from_secs(30), |spans| {
        on(spans, &leader_id, "apply").is_some()
            && on(spans, &follower_id, "POST Category.create").is_some()
    });
    let root = on(&spans, &follower_id, "POST Category.create")
        .unwrap_or_else(|| panic!("no span of the follower's request in {spans:#?}"));
    assert_eq!(
        root.parent_id(),
        "b7ad6b7169203331",
        "the caller's span is the parent"
    );
    let raft = on(&spans, &follower_id, "raft").expect("the follower's raft span");
    assert_eq!(raft.parent_id(), root.span_id());
    let proposal = on(&spans, &leader_id, "raft propose (leader)")
        .unwrap_or_else(|| panic!("no span of the leader in {spans:#?}"));
    assert_eq!(
        proposal.parent_id(),
        raft.span_id(),
        "the leader's span is under the follower's raft span"
    );
    assert_eq!(proposal.span.kind, 2, "a server span");
    let apply = on(&spans, &leader_id, "apply").expect("the leader's apply span");
    assert_eq!(apply.parent_id(), proposal.span_id());
    assert!(
        raft.span.start_time_unix_nano <= proposal.span.start_time_unix_nano + 50_000_000,
        "the leader's span starts within the follower's raft span (clocks of one host)"
    );
}
