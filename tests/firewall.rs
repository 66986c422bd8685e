//! The firewall and the connection limits of a built service, over real sockets. Clients
//! bind distinct loopback source addresses (all of 127.0.0.0/8 is loopback), so per-address
//! rules see distinct clients.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::*;

const GEN: &str = env!("CARGO_BIN_EXE_lithair-gen");

fn shop() -> &'static Example {
    static SHOP: OnceLock<Example> = OnceLock::new();
    SHOP.get_or_init(|| Example::build(GEN, "shop", &[("admin", &["admin"])]))
}

/// The shop's `lithair.toml` with some lines replaced, written to `dir/name`.
fn config(dir: &std::path::Path, name: &str, replace: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(shop().dir.join("lithair.toml")).expect("config");
    for (from, to) in replace {
        assert!(text.contains(from), "the template has no `{from}`");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn serve(dir: &tempfile::TempDir, config: &std::path::Path) -> Server {
    let s = shop();
    Server::start_with(
        &s.bin,
        &s.dir,
        &dir.path().join("data"),
        &[],
        &["--config", config.to_str().unwrap_or_default()],
    )
}

/// A connection to `addr` from the loopback address `127.0.0.<n>` (or `from`).
fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

/// Sends one request on `s` and reads the answer's head: the status (0: the connection
/// was closed without an answer) and the head's text.
fn exchange(s: &mut TcpStream, request: &str) -> (u16, String) {
    let _ = s.write_all(request.as_bytes());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    // Read the body too, so the connection can carry the next request.
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    return (status, head);
                }
            }
        }
    }
    (0, String::from_utf8_lossy(&buf).to_string())
}

fn get(path: &str, headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n{headers}\r\n")
}

/// One GET from `127.0.0.<from>` on a new connection.
fn get_from(from: [u8; 4], addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = connect_from(from, addr);
    exchange(
        &mut s,
        &get(path, &format!("{headers}connection: close\r\n")),
    )
}

/// Whether the server has closed `s` (a read ends at once, with nothing).
fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let _ = s.set_read_timeout(Some(within));
    let mut one = [0u8; 1];
    matches!(s.read(&mut one), Ok(0))
        || matches!(s.read(&mut one), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn deny_allow_and_trusted_proxies_decide_by_the_real_source_address() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(
        dir.path(),
        "firewall.toml",
        &[
            ("allow = []", "allow = [\"127.0.0.0/24\"]"),
            ("deny = []", "deny = [\"127.0.0.66\", \"203.0.113.0/24\"]"),
            ("trusted_proxies = []", "trusted_proxies = [\"127.0.0.2\"]"),
        ],
    );
    let server = serve(&dir, &path);
    let a = server.addr;
    assert_eq!(get_from([127, 0, 0, 5], a, "/api/categories", "").0, 200);
    let (status, head) = get_from([127, 0, 0, 66], a, "/api/categories", "");
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    // Outside the allowed block.
    assert_eq!(get_from([127, 0, 1, 5], a, "/health", "").0, 403);
    // The proxy names the client; anyone else's header is ignored.
    let xff = "x-forwarded-for: 203.0.113.9\r\n";
    assert_eq!(get_from([127, 0, 0, 2], a, "/api/categories", xff).0, 403);
    assert_eq!(get_from([127, 0, 0, 3], a, "/api/categories", xff).0, 200);
    let clean = "x-forwarded-for: 127.0.0.9\r\n";
    assert_eq!(get_from([127, 0, 0, 2], a, "/api/categories", clean).0, 200);
}

#[test]
fn the_rate_limit_lets_through_the_burst_plus_the_sustained_rate() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(
        dir.path(),
        "limited.toml",
        &[("per_ip = 0", "per_ip = 20"), ("burst = 0", "burst = 10")],
    );
    let server = serve(&dir, &path);
    let mut s = connect_from([127, 0, 0, 7], server.addr);
    let started = Instant::now();
    let (mut passed, mut limited) = (0u32, 0u32);
    let mut refusal = String::new();
    while started.elapsed() < Duration::from_secs(2) {
        let (status, head) = exchange(&mut s, &get("/api/categories", ""));
        match status {
            200 => passed += 1,
            429 => {
                limited += 1;
                refusal = head;
            }
            other => panic!("unexpected {other}: {head}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 10.0 + 20.0 * elapsed;
    let off = (f64::from(passed) - expected).abs() / expected;
    assert!(
        off <= 0.15,
        "{passed} passed in {elapsed:.2} s, expected {expected:.0} ± 15 %"
    );
    assert!(limited > 0);
    assert!(refusal.contains("retry-after: 1"), "{refusal}");
    assert!(
        refusal.contains("ratelimit-policy: \"per-ip\";q=10;w=1"),
        "{refusal}"
    );
    assert!(
        refusal.contains("ratelimit: \"per-ip\";r=0;t=1"),
        "{refusal}"
    );
    // A node of one exempts nobody: its own address is limited like any other.
    let mut local = connect_from([127, 0, 0, 1], server.addr);
    let (status, head) = exchange(&mut local, &get("/api/categories", ""));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("ratelimit-policy: "), "{head}");
    // /health is never limited; another address has its own budget.
    for _ in 0..30 {
        assert_eq!(exchange(&mut s, &get("/health", "")).0, 200);
    }
    assert_eq!(
        get_from([127, 0, 0, 8], server.addr, "/api/categories", "").0,
        200
    );
}

#[test]
fn the_rate_limit_forgets_idle_addresses() {
    let dir = tempfile::tempdir().expect("tmp");
    // A burst of 10 at 1000/s is whole again 10 ms after the last request.
    let path = config(
        dir.path(),
        "many.toml",
        &[("per_ip = 0", "per_ip = 1000"), ("burst = 0", "burst = 10")],
    );
    let server = serve(&dir, &path);
    let tracked = || metric(&server, "lithair_firewall_tracked_addresses");
    for i in 0..300u32 {
        let from = [127, 1, (i / 200) as u8, (i % 200 + 1) as u8];
        assert_eq!(get_from(from, server.addr, "/api/categories", "").0, 200);
    }
    // The metrics requests come from 127.0.0.1: one more address.
    assert!(tracked() >= 300, "{} addresses tracked", tracked());
    let deadline = Instant::now() + Duration::from_secs(25);
    while tracked() > 1 {
        assert!(
            Instant::now() < deadline,
            "idle addresses are never forgotten: {}",
            tracked()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn connections_are_capped_per_address_and_in_total() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(
        dir.path(),
        "caps.toml",
        &[
            ("max_connections = 4096", "max_connections = 3"),
            ("max_connections_per_ip = 256", "max_connections_per_ip = 2"),
        ],
    );
    let server = serve(&dir, &path);
    let a = server.addr;
    let open = |from: [u8; 4]| {
        let mut s = connect_from(from, a);
        let answered = exchange(&mut s, &get("/health", "")).0;
        (s, answered)
    };
    let (first, ok1) = open([127, 0, 0, 20]);
    let (_second, ok2) = open([127, 0, 0, 20]);
    assert_eq!((ok1, ok2), (200, 200));
    // A third from the same address is closed at accept, before anything is read.
    let (_, third) = open([127, 0, 0, 20]);
    assert_eq!(third, 0, "a third connection from one address was served");
    // Another address gets the last place in total; then nobody.
    let (_other, ok3) = open([127, 0, 0, 21]);
    assert_eq!(ok3, 200);
    let (_, over) = open([127, 0, 0, 22]);
    assert_eq!(over, 0, "a connection over the total cap was served");
    // A place frees up when a connection ends.
    first.shutdown(std::net::Shutdown::Both).ok();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_s, status) = open([127, 0, 0, 22]);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn slow_bodies_get_408_and_slow_or_idle_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(
        dir.path(),
        "slow.toml",
        &[
            ("body_timeout_ms = 10000", "body_timeout_ms = 500"),
            ("header_timeout_secs = 10", "header_timeout_secs = 1"),
        ],
    );
    let server = serve(&dir, &path);
    let a = server.addr;
    let token = shop().token("admin");
    // The body stops after 3 of its 20 bytes.
    let mut s = connect_from([127, 0, 0, 30], a);
    let head = format!(
        "POST /api/categories HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{{\"n"
    );
    let started = Instant::now();
    let (status, text) = exchange(&mut s, &head);
    assert_eq!(status, 408, "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Clients that never finish their headers hold nothing: others are served meanwhile,
    // and the stalled connections are closed at the header timeout.
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s = connect_from([127, 0, 0, 40 + i], a);
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nhost:");
            s
        })
        .collect();
    let served = Instant::now();
    assert_eq!(get_from([127, 0, 0, 31], a, "/health", "").0, 200);
    assert!(served.elapsed() < Duration::from_millis(500));
    for s in stalled.iter_mut() {
        assert!(
            closed(s, Duration::from_secs(5)),
            "a stalled connection stayed open"
        );
    }
    // An idle keep-alive connection is closed too.
    let mut idle = connect_from([127, 0, 0, 32], a);
    assert_eq!(exchange(&mut idle, &get("/health", "")).0, 200);
    assert!(
        closed(&mut idle, Duration::from_secs(5)),
        "an idle connection stayed open"
    );
}

#[test]
fn sighup_reloads_the_firewall_and_the_tokens_and_a_bad_file_keeps_them() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(dir.path(), "live.toml", &[]);
    let server = serve(&dir, &path);
    let a = server.addr;
    assert_eq!(get_from([127, 0, 0, 11], a, "/health", "").0, 200);
    // A keep-alive connection opened before the reload stays open after it.
    let mut kept = connect_from([127, 0, 0, 12], a);
    assert_eq!(exchange(&mut kept, &get("/health", "")).0, 200);
    config(
        dir.path(),
        "live.toml",
        &[("deny = []", "deny = [\"127.0.0.11\"]")],
    );
    // A token minted after the start works once the file is reloaded.
    let s = shop();
    let late = mint_token_into(&s.bin, &s.dir, &path, "late", &["admin"]);
    let create = |token: &str, name: &str| create_category([127, 0, 0, 14], a, token, name);
    assert_eq!(create(&late, "Early"), 401, "a token not loaded yet");
    let hup = |pid: u32| {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    };
    hup(server.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_from([127, 0, 0, 11], a, "/health", "").0 != 403 {
        assert!(Instant::now() < deadline, "the reload never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(exchange(&mut kept, &get("/health", "")).0, 200);
    assert_eq!(create(&late, "Reloaded"), 201);
    // A file that does not load keeps the rules in force.
    std::fs::write(&path, "[firewall]\ndeny = [\"not an address\"]\n").expect("write");
    hup(server.pid());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get_from([127, 0, 0, 11], a, "/health", "").0, 403);
    assert_eq!(get_from([127, 0, 0, 13], a, "/health", "").0, 200);
    assert_eq!(exchange(&mut kept, &get("/health", "")).0, 200);
    assert_eq!(create(&late, "Kept"), 201, "the tokens in force stay");
}

/// `[auth.jwt]` in a built service: the key file is named relative to the configuration
/// file, a JWT signed with that key is let in, and `SIGHUP` reads a replaced key: the
/// tokens of the old key are refused after it, those of the new one let in.
#[test]
fn a_jwt_key_is_read_beside_the_config_and_again_on_sighup() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/keys");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(keys.join("rsa.pub"), dir.path().join("idp.pem")).expect("key");
    let path = config(dir.path(), "jwt.toml", &[]);
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str("\n[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"idp.pem\"\n");
    std::fs::write(&path, text).expect("write config");
    let server = serve(&dir, &path);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let token = |key: &str| {
        let pem = std::fs::read(keys.join(key)).expect("private key");
        let claims = serde_json::json!({"sub": "alice", "exp": exp, "roles": ["admin"]});
        encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&pem).expect("rsa key"),
        )
        .expect("sign")
    };
    let (first, second) = (token("rsa.key"), token("rsa2.key"));
    let create =
        |token: &str, name: &str| create_category([127, 0, 0, 15], server.addr, token, name);
    assert_eq!(create(&first, "By JWT"), 201);
    assert_eq!(create(&second, "Other key"), 401);
    std::fs::copy(keys.join("rsa2.pub"), dir.path().join("idp.pem")).expect("key");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(server.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while create(&second, "New key") != 201 {
        assert!(Instant::now() < deadline, "the reload never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(create(&first, "Old key"), 401);
}

/// `token new --expires` writes an `expires_at` that the service enforces, and
/// `token list` shows names, roles and expiry, never a hash.
#[test]
fn a_token_expires_and_token_list_shows_it_without_its_hash() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = config(dir.path(), "expiring.toml", &[]);
    let s = shop();
    let out = std::process::Command::new(&s.bin)
        .current_dir(&s.dir)
        .args([
            "token",
            "new",
            "--name",
            "brief",
            "--role",
            "admin",
            "--expires",
            "10s",
        ])
        .output()
        .expect("token new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("expires_at = \""), "{table}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let token = err
        .lines()
        .find_map(|l| l.split("give it to the client): ").nth(1))
        .expect("token")
        .trim()
        .to_string();
    let mut text = std::fs::read_to_string(&path).expect("config");
    text.push_str(&table);
    std::fs::write(&path, &text).expect("write");
    let list = std::process::Command::new(&s.bin)
        .current_dir(&s.dir)
        .args([
            "token",
            "list",
            "--config",
            path.to_str().unwrap_or_default(),
        ])
        .output()
        .expect("token list");
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let line = listed
        .lines()
        .find(|l| l.starts_with("brief "))
        .expect("the token's line");
    assert!(
        line.contains("admin") && line.contains('T') && !line.contains("never"),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l.contains("never")),
        "the admin token does not expire: {listed}"
    );
    assert!(
        !listed.contains("sha256")
            && !text
                .split("sha256 = \"")
                .skip(1)
                .any(|h| listed.contains(&h[..64])),
        "{listed}"
    );
    let server = serve(&dir, &path);
    let create = |name: &str| create_category([127, 0, 0, 16], server.addr, &token, name);
    assert_eq!(create("Before"), 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    while create("After") != 401 {
        assert!(Instant::now() < deadline, "the token never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `POST /api/categories {"name": name}` with `token`, from `127.0.0.<from>`: the status.
fn create_category(from: [u8; 4], addr: SocketAddr, token: &str, name: &str) -> u16 {
    let body = format!("{{\"name\": \"{name}\"}}");
    let request = format!(
        "POST /api/categories HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(&mut connect_from(from, addr), &request).0
}
