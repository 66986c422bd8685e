//! `lithair-gen run --watch`: the dev loop. Watches `lithair.yaml`, `src/` and the
//! project's `templates/`; on a change it regenerates, rebuilds and restarts the service.
//! A schema that does not pass the checks, a refused generate or a failed build prints
//! its problems and keeps the last good service running.
//!
//! Changes are found by polling a fingerprint of the watched files (path, size and
//! modification time) a few times a second, taken again after each generate, so that
//! the generator's own writes are not taken for the user's. A project is a few dozen
//! files, so a poll costs nothing; an event-based watcher would have to tell its own
//! writes from the user's, which the fingerprint does by construction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime};

use anstream::eprintln;
use lithair_gen::project::{self, ApplyOptions, PlanOptions, ProjectError};

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(300);
/// How long the files must stay unchanged before a rebuild (an editor's save may be
/// several writes).
const SETTLE: Duration = Duration::from_millis(200);

/// Path -> (size, modification time) of every watched file.
type Fingerprint = BTreeMap<PathBuf, (u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Fingerprint::new();
    let mut add = |p: &Path| {
        if let Ok(m) = std::fs::metadata(p) {
            out.insert(p.to_path_buf(), (m.len(), m.modified().ok()));
        }
    };
    add(&dir.join(project::SCHEMA_FILE));
    let mut stack = vec![dir.join("src"), dir.join("templates")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => add(&p),
                Err(_) => {}
            }
        }
    }
    out
}

/// The running service.
struct Running(Child);

impl Running {
    /// Stops it (SIGTERM, then SIGKILL after 30 s).
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Generates if needed, as `generate` does (its notes, its refusals and their diffs);
/// answers whether the project is ready to build.
fn generate(dir: &Path) -> bool {
    let plan = match project::plan(dir, &PlanOptions::default(), true) {
        Ok(p) => p,
        Err(ProjectError::Schema(diagnostics)) => {
            eprintln!("{diagnostics}");
            return false;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    if !plan.is_stale() {
        return true;
    }
    match crate::finish_generate(&plan, ApplyOptions::default(), false) {
        Ok(code) if code == ExitCode::SUCCESS => {
            eprintln!("[watch] regenerated");
            true
        }
        Ok(_) => {
            eprintln!("[watch] generate refused (see above)");
            false
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// Builds the crate (cargo's output shows); answers the binary, or None when it failed.
fn build(dir: &Path, release: bool) -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["build", "--message-format=json-render-diagnostics"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.stderr(Stdio::inherit()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    // The binary is the artifact with an executable.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
}

/// Runs the loop until the process is stopped (Ctrl-C reaches the service too).
pub fn run(dir: &Path, release: bool, args: &[String]) -> Result<ExitCode, ProjectError> {
    eprintln!("[watch] watching lithair.yaml, src/ and templates/ (Ctrl-C stops)");
    let mut running: Option<Running> = None;
    loop {
        let ready = generate(dir);
        // The fingerprint after generate: its own writes are not changes.
        let seen = fingerprint(dir);
        if ready {
            eprintln!("[watch] building");
            match build(dir, release) {
                Some(bin) => {
                    if let Some(old) = running.take() {
                        eprintln!("[watch] restarting");
                        old.stop();
                    }
                    let child = Command::new(&bin)
                        .current_dir(dir)
                        .arg("serve")
                        .args(args)
                        .spawn()
                        .map_err(|e| {
                            ProjectError::Other(format!("cannot start {}: {e}", bin.display()))
                        })?;
                    running = Some(Running(child));
                }
                None if running.is_some() => {
                    eprintln!("[watch] build failed: the last good service keeps running")
                }
                None => eprintln!("[watch] build failed: fix it and save"),
            }
        } else if running.is_some() {
            eprintln!("[watch] the last good service keeps running");
        }
        // Wait for a change, then for the files to settle.
        loop {
            std::thread::sleep(POLL);
            if let Some(r) = running.as_mut() {
                if let Ok(Some(status)) = r.0.try_wait() {
                    eprintln!("[watch] the service exited ({status}); waiting for a change");
                    running = None;
                }
            }
            let now = fingerprint(dir);
            if now != seen {
                let mut settled = now;
                loop {
                    std::thread::sleep(SETTLE);
                    let again = fingerprint(dir);
                    if again == settled {
                        break;
                    }
                    settled = again;
                }
                eprintln!("[watch] change seen");
                break;
            }
        }
    }
}
