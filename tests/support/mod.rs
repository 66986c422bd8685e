//! Shared helpers of the end-to-end tests: generate a crate with the real `lithair-gen`
//! binary, build it with cargo (one shared target dir, so dependencies compile once),
//! start it on an ephemeral port, talk HTTP to it, kill it. Every answer [`call`] reads
//! from a server started here is held to the OpenAPI document that server serves: a route
//! or status code the document does not describe fails the test.

#![allow(dead_code)]

pub mod cluster;
pub mod linearizable;
pub mod otlp;
pub mod proxy;
pub mod tools;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lithair_runtime::testing::Described;
use serde_json::Value;

/// The documents of the servers started here, by their address (`127.0.0.1:port`).
fn documents(
) -> &'static std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Described>>> {
    static DOCS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Described>>>,
    > = std::sync::OnceLock::new();
    DOCS.get_or_init(Default::default)
}

/// Reads the OpenAPI document `addr` serves (when `/openapi.json` is open to anonymous
/// callers) and holds the answers [`call`] reads from it to the document.
fn describe(addr: SocketAddr, scheme: &str) {
    if scheme != "http" {
        return;
    }
    let url = format!("http://{addr}/openapi.json");
    let Ok(r) = ureq::get(&url).timeout(Duration::from_secs(30)).call() else {
        return;
    };
    if let Ok(doc) = r.into_json::<Value>() {
        documents()
            .lock()
            .unwrap()
            .insert(addr.to_string(), std::sync::Arc::new(Described::of(&doc)));
    }
}

/// Panics when `method url` answered `status` is an answer the server's document does not
/// describe.
fn hold_to_document(method: &str, url: &str, status: u16) {
    let Some(rest) = url.strip_prefix("http://") else {
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let doc = documents().lock().unwrap().get(authority).cloned();
    if let Some(doc) = doc {
        if let Err(why) = doc.check(method, path, status) {
            panic!("undocumented answer: {why}");
        }
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

/// The target dir shared by every generated crate the tests build.
pub fn e2e_target() -> PathBuf {
    std::env::var_os("LITHAIR_E2E_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target").join("e2e"))
}

/// Points a command that runs cargo on a generated crate (directly, or through
/// `lithair-gen run`) at the shared target dir, without debug info: every generated crate
/// the tests build links the whole runtime, and its debug info would take gigabytes of disk
/// that a test never reads. Every such command gets the same settings, so the dependencies
/// compile once.
pub fn generated_cargo_env(cmd: &mut Command) -> &mut Command {
    cmd.env("CARGO_TARGET_DIR", e2e_target())
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
}

/// `cargo ARGS` in the generated crate at `dir`, with [`generated_cargo_env`].
fn cargo_on(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(dir);
    generated_cargo_env(&mut cmd);
    cmd
}

/// The lines a child writes to some of its pipes, read on threads of their own as they
/// come. Each thread drains its pipe to the end, also once nobody waits for its lines,
/// so that the child never blocks on a full pipe.
pub struct ChildLines(std::sync::mpsc::Receiver<String>);

impl ChildLines {
    /// Reads `pipes` (a child's stdout, stderr) from now on.
    pub fn of(pipes: Vec<Box<dyn Read + Send>>) -> ChildLines {
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        ChildLines(rx)
    }

    /// The next line that satisfies `want`, within `limit`: `Timeout` when the time ran
    /// out, `Disconnected` when every pipe closed first.
    pub fn next_matching(
        &self,
        want: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<String, std::sync::mpsc::RecvTimeoutError> {
        let deadline = Instant::now() + limit;
        loop {
            let line = self
                .0
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
            if want(&line) {
                return Ok(line);
            }
        }
    }
}

/// `cmd`'s output, as `Command::output` gives it, except that a command still running
/// after `limit` is killed and fails the test (a tool that hangs must not hang the run).
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Runs `lithair-gen` with `args`; answers (exit code, stdout, stderr).
pub fn gen(bin: &str, args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env_remove("LITHAIR_RUNTIME_PATH")
        .output()
        .expect("run lithair-gen");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lithair-gen new <dir> --schema examples/<example>.yaml`, asserting success.
pub fn new_project(bin: &str, example: &str, dir: &Path) {
    new_project_with(bin, example, dir, false)
}

/// Like [`new_project`]; with `handlers`, the project starts from the example's handler
/// files (`examples/<example>/`, `lithair-gen new --handlers`) instead of the stubs.
pub fn new_project_with(bin: &str, example: &str, dir: &Path, handlers: bool) {
    let schema = workspace().join("examples").join(format!("{example}.yaml"));
    let code_dir = workspace().join("examples").join(example);
    let mut args = vec![
        "new".to_string(),
        dir.display().to_string(),
        "--schema".to_string(),
        schema.display().to_string(),
    ];
    if handlers {
        args.push("--handlers".to_string());
        args.push(code_dir.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = gen(bin, &args, &workspace());
    assert_eq!(code, 0, "lithair-gen new failed:\n{out}\n{err}");
}

/// Builds a generated crate (debug) and answers its binary.
pub fn build(dir: &Path) -> PathBuf {
    // Start from the workspace's lock file so the generated crate resolves the same
    // dependency versions, and reuses what the shared target dir already compiled.
    let lock = workspace().join("Cargo.lock");
    if lock.exists() && !dir.join("Cargo.lock").exists() {
        std::fs::copy(&lock, dir.join("Cargo.lock")).expect("copy Cargo.lock");
    }
    let mut build = cargo_on(dir, &["build", "--quiet"]);
    build.env_remove("RUSTFLAGS");
    // A cold build of the dependency tree takes minutes on two cores.
    let out = output_within(&mut build, Duration::from_secs(1800)).expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build of {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = package_name(dir);
    e2e_target().join("debug").join(name)
}

/// `cargo clippy --all-targets -- -D warnings` on a generated crate: generated code is
/// held to the same bar as ours.
pub fn assert_clippy_clean(dir: &Path) {
    let mut clippy = cargo_on(
        dir,
        &["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"],
    );
    let out = output_within(&mut clippy, Duration::from_secs(1800)).expect("run cargo clippy");
    assert!(
        out.status.success(),
        "clippy on {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn package_name(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("name = ")
                .map(|v| v.trim_matches('"').to_string())
        })
        .expect("package name")
}

/// A generated example crate, built, with tokens minted into its lithair.toml.
pub struct Example {
    _tmp: tempfile::TempDir,
    /// The project folder.
    pub dir: PathBuf,
    /// The service binary.
    pub bin: PathBuf,
    tokens: Vec<(String, String)>,
}

impl Example {
    /// Generates `examples/<name>.yaml` with `gen`, with the example's handlers
    /// (`examples/<name>/`), builds it, and mints one token per `(token name, roles)`.
    pub fn build(gen: &str, name: &str, tokens: &[(&str, &[&str])]) -> Example {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join(name);
        new_project_with(gen, name, &dir, true);
        let bin = build(&dir);
        let tokens = tokens
            .iter()
            .map(|(t, roles)| (t.to_string(), mint_token(&bin, &dir, t, roles)))
            .collect();
        Example {
            _tmp: tmp,
            dir,
            bin,
            tokens,
        }
    }

    /// The token minted under `name`.
    pub fn token(&self, name: &str) -> &str {
        self.tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .expect("token minted")
    }
}

/// Mints a token with the service binary and appends its table to the project's lithair.toml.
pub fn mint_token(bin: &Path, project: &Path, name: &str, roles: &[&str]) -> String {
    mint_token_into(bin, project, &project.join("lithair.toml"), name, roles)
}

/// Mints a token with the service binary (run in `project`) and appends its table to
/// `config`.
pub fn mint_token_into(
    bin: &Path,
    project: &Path,
    config: &Path,
    name: &str,
    roles: &[&str],
) -> String {
    let mut cmd = Command::new(bin);
    cmd.current_dir(project)
        .args(["token", "new", "--name", name]);
    for r in roles {
        cmd.args(["--role", r]);
    }
    let out = cmd.output().expect("token new");
    assert!(
        out.status.success(),
        "token new failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let token = err
        .lines()
        .find_map(|l| {
            l.split("token (shown once; give it to the client): ")
                .nth(1)
        })
        .expect("token in output")
        .trim()
        .to_string();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(config)
        .expect("the configuration file");
    f.write_all(&out.stdout).expect("append token");
    token
}

/// A running service process.
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it wrote to stderr (its log) so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `bin serve --port 0 --data-dir <data>` in `project` and waits until it listens.
    pub fn start(bin: &Path, project: &Path, data: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(bin, project, data, env, &[])
    }

    /// Like [`Server::start`], with extra arguments for `serve`.
    pub fn start_with(
        bin: &Path,
        project: &Path,
        data: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        let mut cmd = Command::new(bin);
        cmd.current_dir(project).arg("serve");
        if !args.contains(&"--host") {
            cmd.args(["--host", "127.0.0.1"]);
        }
        if !args.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.arg("--data-dir")
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LITHAIR_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start service");
        // Its log, collected from the start so that a service that does not come up
        // says why.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr_done = child.stderr.take().map(|stderr| {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if std::env::var_os("LITHAIR_E2E_VERBOSE").is_some() {
                        eprintln!("[service] {line}");
                    }
                    log.lock().unwrap().push(line);
                }
            })
        });
        // Its stdout, read apart so that waiting for the first line has a deadline.
        let stdout = child.stdout.take().expect("stdout");
        let lines = ChildLines::of(vec![Box::new(stdout)]);
        let listening = lines.next_matching(
            |l| l.starts_with("listening on http://") || l.starts_with("listening on https://"),
            Duration::from_secs(60),
        );
        let (addr, scheme) = match listening {
            Ok(line) => {
                let (scheme, a) = line
                    .trim_start_matches("listening on ")
                    .split_once("://")
                    .expect("a URL");
                let scheme = if scheme == "https" { "https" } else { "http" };
                (a.trim().parse().expect("address"), scheme)
            }
            Err(waited) => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(drain) = stderr_done {
                    let _ = drain.join();
                }
                let err = log.lock().unwrap().join("\n");
                match waited {
                    std::sync::mpsc::RecvTimeoutError::Timeout => {
                        panic!("service did not listen within 60 s: {err}")
                    }
                    std::sync::mpsc::RecvTimeoutError::Disconnected => {
                        panic!("service exited before listening: {err}")
                    }
                }
            }
        };
        describe(addr, scheme);
        Server {
            child: Some(child),
            addr,
            log,
        }
    }

    /// What it logged so far (its stderr).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit; answers the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Lower-cased header names with values.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (Null when empty or not JSON).
    pub json: Value,
    /// The raw body.
    pub text: String,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a request; `body` is sent as JSON when given.
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> Answer {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    for (k, v) in extra {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req
            .set("content-type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    hold_to_document(method, url, status);
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or("").to_string();
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    let text = resp.into_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
        text,
    }
}

/// Sends raw bytes as one HTTP/1.1 request and answers the status code of the reply.
pub fn raw(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    // The server may answer (413, 400) and close before reading everything: a failed
    // write is fine as long as the answer can be read.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Reads one value of the service's `/metrics`.
pub fn metric(server: &Server, name: &str) -> u64 {
    let a = call("GET", &server.url("/metrics"), None, None, &[]);
    a.text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{}", a.text))
}
