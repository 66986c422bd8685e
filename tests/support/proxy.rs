//! A TCP proxy in front of one node that a test can cut, per source address: the nodes of
//! a cluster reach each other only through these proxies (the `--peers` list names them),
//! and each node calls its peers from its own loopback address (127.0.0.N), so blocking
//! a source address on a node's proxy cuts the link from that node to this one, in that
//! direction only. Blocking also ends the connections already open from that address.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Open connections by id: (source address, the two sockets).
type Open = BTreeMap<u64, (IpAddr, TcpStream, TcpStream)>;

/// A proxy to one target.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    blocked: Arc<Mutex<HashSet<IpAddr>>>,
    open: Arc<Mutex<Open>>,
    stop: Arc<AtomicBool>,
    /// The first [`SEEN`] bytes sent to the target, for [`Proxy::seen`].
    sent: Arc<Mutex<Vec<u8>>>,
}

/// How many of the bytes sent to the target a proxy keeps.
const SEEN: usize = 64 * 1024 * 1024;

impl Proxy {
    /// Listens on 127.0.0.1 (any free port) and forwards to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy address");
        let blocked: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
        let open: Arc<Mutex<Open>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (b, o, st, se) = (blocked.clone(), open.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let ids = AtomicU64::new(0);
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(peer) = client.peer_addr() else {
                    continue;
                };
                if b.lock().unwrap().contains(&peer.ip()) {
                    // A cut link: the connection is closed at once.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                    continue;
                };
                o.lock().unwrap().insert(id, (peer.ip(), c2, u2));
                let o = o.clone();
                pump(client, upstream, se.clone(), move || {
                    o.lock().unwrap().remove(&id);
                });
            }
        });
        Proxy {
            addr,
            blocked,
            open,
            stop,
            sent,
        }
    }

    /// Whether `needle` was among the bytes sent to the target so far.
    pub fn seen(&self, needle: &[u8]) -> bool {
        self.sent
            .lock()
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    }

    /// Cuts the link from `from` to the target (new and open connections).
    pub fn block(&self, from: IpAddr) {
        self.blocked.lock().unwrap().insert(from);
        for (ip, a, b) in self.open.lock().unwrap().values() {
            if *ip == from {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
    }

    /// Heals every link to the target.
    pub fn heal(&self) {
        self.blocked.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for (_, a, b) in self.open.lock().unwrap().values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

/// Copies both ways between `a` and `b` until either side ends (keeping what `a` sends
/// in `sent`); then `done`.
fn pump(
    a: TcpStream,
    b: TcpStream,
    sent: Arc<Mutex<Vec<u8>>>,
    done: impl FnOnce() + Send + 'static,
) {
    let (a2, b2) = match (a.try_clone(), b.try_clone()) {
        (Ok(a2), Ok(b2)) => (a2, b2),
        _ => return done(),
    };
    let back = std::thread::spawn(move || copy(b2, a2, None));
    std::thread::spawn(move || {
        copy(a, b, Some(&sent));
        let _ = back.join();
        done();
    });
}

fn copy(mut from: TcpStream, mut to: TcpStream, sent: Option<&Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(sent) = sent {
                    let mut kept = sent.lock().unwrap();
                    if kept.len() < SEEN {
                        kept.extend_from_slice(&buf[..n]);
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
