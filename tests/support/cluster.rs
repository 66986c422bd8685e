//! Helpers of the tests that run clusters of real processes: ports, nodes started with
//! the cluster secret, and writers that record every acknowledged write.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::Server;

/// The cluster secret of the test clusters.
pub const SECRET: &str = "test-cluster-secret-0123456789";

/// Ports for the nodes, picked below the kernel's ephemeral range (32768 and up), so the
/// many short outgoing connections of a test cannot take one between pick and bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let mut ports = Vec::new();
    while ports.len() < n {
        let p: u16 = rng.gen_range(20000..32000);
        if !ports.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            ports.push(p);
        }
    }
    ports
}

/// Starts the service `bin` of `project` on `port` with the cluster secret and `args`.
pub fn start_on(bin: &Path, project: &Path, data: &Path, port: u16, args: &[&str]) -> Server {
    let mut all = vec!["--port".to_string(), port.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    Server::start_with(
        bin,
        project,
        data,
        &[("LITHAIR_CLUSTER_SECRET", SECRET)],
        &all,
    )
}

/// Writers that create categories through every running node and record each acknowledged one.
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, Value>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    attempts: Arc<AtomicUsize>,
}

impl Load {
    /// `writers` threads over the nodes at `addrs` (`host:port`), writing with `token`.
    pub fn start(addrs: Vec<String>, writers: usize, token: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let workers = (0..writers)
            .map(|w| {
                let (stop, acked, attempts, addrs) =
                    (stop.clone(), acked.clone(), attempts.clone(), addrs.clone());
                let token = token.to_string();
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(5))
                        .build();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let addr = &addrs[(w + n) % addrs.len()];
                        let body = json!({"name": format!("w{w}-{n}")});
                        let r = agent
                            .post(&format!("http://{addr}/api/categories"))
                            .set("authorization", &format!("Bearer {token}"))
                            .set("content-type", "application/json")
                            .send_string(&body.to_string());
                        match r {
                            Ok(resp) if resp.status() == 201 => {
                                if let Ok(v) = resp.into_json::<Value>() {
                                    let id = v["id"].as_str().unwrap_or_default().to_string();
                                    acked.lock().unwrap().insert(id, v);
                                }
                            }
                            // Refused or unreachable while a node is down or an election runs.
                            _ => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            workers,
            attempts,
        }
    }

    /// Stops the writers; answers every acknowledged write (at least one).
    pub fn finish(self) -> BTreeMap<String, Value> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
        let acked = self.acked.lock().unwrap().clone();
        assert!(
            !acked.is_empty(),
            "no write was acknowledged ({} attempts)",
            self.attempts.load(Ordering::Relaxed)
        );
        acked
    }
}
