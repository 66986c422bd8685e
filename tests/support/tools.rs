//! The Python tools of the OpenAPI tests, pinned in `tests/openapi-tools.txt` and
//! installed (from PyPI) into a virtualenv in the shared e2e target dir the first time a
//! test asks for them, again only when the pins change.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::{e2e_target, workspace};

/// The `bin` folder of the virtualenv that holds the pinned tools.
pub fn openapi_tools() -> PathBuf {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(install).clone()
}

fn install() -> PathBuf {
    let pins = workspace().join("tests").join("openapi-tools.txt");
    let want = std::fs::read_to_string(&pins).expect("tests/openapi-tools.txt");
    let venv = e2e_target().join("openapi-tools");
    let stamp = venv.join("installed.txt");
    let bin = venv.join("bin");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return bin;
    }
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::create_dir_all(e2e_target()).expect("e2e target dir");
    let run = |cmd: &mut Command, what: &str| {
        let out = super::output_within(cmd, std::time::Duration::from_secs(900))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv (the OpenAPI tests need Python 3 with venv and pip)",
    );
    run(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&pins),
        "pip install -r tests/openapi-tools.txt",
    );
    std::fs::write(&stamp, want).expect("stamp the tools");
    bin
}
