//! Template overrides, invalid templates, and where the generated crate finds the runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

use lithair_gen::project::{self, ApplyOptions, Change, PlanOptions, ProjectError};

const SCHEMA: &str = "service: { name: tiny }\nroles: [editor]\nmodels:\n  Note:\n    permissions: { read: [public], create: [editor] }\n    operations: [list, get, create]\n    fields:\n      text: { type: string }\n";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn new_project(opts: &PlanOptions) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("tiny.yaml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let dir = tmp.path().join("tiny");
    let plan = project::create(&dir, &schema, opts, false).unwrap();
    project::apply(&plan, ApplyOptions::default())
        .unwrap()
        .unwrap();
    (tmp, dir)
}

fn version_opts() -> PlanOptions {
    PlanOptions {
        runtime_version: Some("0.1".into()),
        ..Default::default()
    }
}

#[test]
fn a_project_template_overrides_the_built_in_one_and_status_says_so() {
    let (_tmp, dir) = new_project(&version_opts());
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let builtin = lithair_gen::render::templates::EMBEDDED
        .iter()
        .find(|(n, _)| *n == "model.rs.hbs")
        .unwrap()
        .1;
    let custom = builtin.replace(
        "/// Server-assigned id.",
        "/// Server-assigned id (custom template).",
    );
    std::fs::write(dir.join("templates/model.rs.hbs"), custom).unwrap();
    std::fs::write(dir.join("templates/modle.rs.hbs"), "typo").unwrap();
    let plan = project::plan(&dir, &PlanOptions::default(), false).unwrap();
    assert_eq!(plan.overrides, vec!["templates/model.rs.hbs".to_string()]);
    assert_eq!(plan.unknown_overrides, vec!["modle.rs.hbs".to_string()]);
    assert!(plan
        .files
        .iter()
        .any(|f| f.path == "src/generated/note.rs" && f.change == Change::Update));
    project::apply(&plan, ApplyOptions::default())
        .unwrap()
        .unwrap();
    let model = std::fs::read_to_string(dir.join("src/generated/note.rs")).unwrap();
    assert!(model.contains("(custom template)"));

    let out = Command::new(env!("CARGO_BIN_EXE_lithair-gen"))
        .args(["status", "--project"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("templates/model.rs.hbs") && text.contains("overrides the built-in template"),
        "{text}"
    );
    assert!(
        text.contains("templates/modle.rs.hbs") && text.contains("matches no template"),
        "{text}"
    );
}

#[test]
fn a_template_that_yields_invalid_rust_names_itself_and_writes_nothing() {
    let (_tmp, dir) = new_project(&version_opts());
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("templates/model.rs.hbs"),
        "//! Broken.\n\npub struct {{name}} {\n    oops oops\n}\n",
    )
    .unwrap();
    let before = std::fs::read_to_string(dir.join("src/generated/note.rs")).unwrap();
    match project::plan(&dir, &PlanOptions::default(), false) {
        Err(ProjectError::Render(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("templates/model.rs.hbs"), "{msg}");
            assert!(
                msg.contains("src/generated/note.rs") && msg.contains("line 4"),
                "{msg}"
            );
        }
        other => panic!("expected a render error, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("src/generated/note.rs")).unwrap(),
        before
    );
}

#[test]
fn the_runtime_is_found_from_the_checkout_or_where_the_user_says() {
    // Default: the checkout lithair-gen was built from, as a relative path.
    let (_tmp, dir) = new_project(&PlanOptions::default());
    let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let line = cargo
        .lines()
        .find(|l| l.starts_with("lithair-runtime"))
        .unwrap();
    assert!(
        line.contains("path = \"") && !line.contains("\"/"),
        "relative path expected: {line}"
    );
    let rel = line.split('"').nth(1).unwrap();
    assert_eq!(
        dir.join(rel).canonicalize().unwrap(),
        workspace().join("runtime")
    );

    // --runtime-path
    let opts = PlanOptions {
        runtime_path: Some(workspace().join("runtime")),
        ..Default::default()
    };
    let (_tmp2, dir2) = new_project(&opts);
    let cargo = std::fs::read_to_string(dir2.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("lithair-runtime = { path = "), "{cargo}");

    // A folder without the runtime is refused with a clear message.
    let tmp = tempfile::tempdir().unwrap();
    let schema = tmp.path().join("tiny.yaml");
    std::fs::write(&schema, SCHEMA).unwrap();
    let bad = PlanOptions {
        runtime_path: Some(tmp.path().to_path_buf()),
        ..Default::default()
    };
    let err = project::create(&tmp.path().join("x"), &schema, &bad, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not hold lithair-runtime"), "{err}");

    // --runtime-version
    let (_tmp3, dir3) = new_project(&version_opts());
    let cargo = std::fs::read_to_string(dir3.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("lithair-runtime = \"0.1\""), "{cargo}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lithair-gen"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("lithair-gen") && text.contains("generate"),
            "{shell}: {text}"
        );
    }
}
