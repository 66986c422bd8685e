//! Golden files: every file generated from every example, as an insta snapshot.
//!
//! A template or renderer change shows up as a reviewable diff of `tests/snapshots/`.
//! Accept intended changes with `INSTA_UPDATE=always cargo test -p lithair-gen --test golden`
//! (or `cargo insta review`), then read the diff before committing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lithair_gen::render::{self, templates, OutputFile, Owner, RenderOptions};
use lithair_gen::schema::{check, render_diagnostics};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `(stem, path)` of every `examples/*.yaml`, sorted.
fn examples() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    v.sort();
    v
}

fn render_example(path: &Path) -> Vec<OutputFile> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let schema =
        check(&text).unwrap_or_else(|d| panic!("{}", render_diagnostics(&name, &text, &d, false)));
    let templates = templates::load(None).unwrap();
    let opts = RenderOptions {
        runtime_dependency: "lithair-runtime = { path = \"../runtime\" }".into(),
    };
    render::render(&schema, &templates, &opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `shop` + `src/generated/product.rs` -> `shop__src_generated_product.rs`.
fn snapshot_name(example: &str, path: &str) -> String {
    format!("{example}__{}", path.replace('/', "_"))
}

#[test]
fn generated_files_match_snapshots() {
    let examples = examples();
    assert!(!examples.is_empty(), "no examples/*.yaml");
    // Compare every file before failing, so one run shows (and, with INSTA_UPDATE,
    // records) every changed snapshot rather than the first one only.
    let mut changed = Vec::new();
    for (example, path) in examples {
        for file in render_example(&path) {
            let name = snapshot_name(&example, &file.path);
            let owner = match file.owner {
                Owner::Generated => "generated",
                Owner::User => "user",
            };
            let compare = std::panic::AssertUnwindSafe(|| {
                insta::with_settings!({
                    description => format!("examples/{example}.yaml -> {} ({owner})", file.path),
                    omit_expression => true,
                }, {
                    insta::assert_snapshot!(name.as_str(), file.contents.as_str());
                });
            });
            if std::panic::catch_unwind(compare).is_err() {
                changed.push(name);
            }
        }
    }
    assert!(
        changed.is_empty(),
        "{} generated file(s) differ from their snapshot: {changed:#?}\n\
         review the diffs above; accept intended changes with \
         `INSTA_UPDATE=always cargo test -p lithair-gen --test golden` (or `cargo insta review`)",
        changed.len()
    );
}

#[test]
fn no_snapshot_is_left_over() {
    let mut expected = BTreeSet::new();
    for (example, path) in examples() {
        for file in render_example(&path) {
            expected.insert(format!(
                "golden__{}.snap",
                snapshot_name(&example, &file.path)
            ));
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let stale: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("golden__") && n.ends_with(".snap") && !expected.contains(n))
        .collect();
    assert!(
        stale.is_empty(),
        "snapshots of files that are no longer generated (delete them): {stale:?} in {}",
        dir.display()
    );
}

#[test]
fn rendering_is_deterministic() {
    for (example, path) in examples() {
        let first = render_example(&path);
        let second = render_example(&path);
        assert_eq!(first, second, "{example}: two renderings differ");
        let paths: Vec<&str> = first.iter().map(|f| f.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            paths, sorted,
            "{example}: files are not sorted by path, or a path repeats"
        );
    }
}

#[test]
fn every_example_yields_the_designed_tree() {
    for (example, path) in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let schema = check(&text).unwrap();
        let files = render_example(&path);
        let owner_of = |p: &str| files.iter().find(|f| f.path == p).map(|f| f.owner);
        for (p, owner) in [
            ("Cargo.toml", Owner::User),
            ("lithair.toml", Owner::User),
            ("src/main.rs", Owner::User),
            ("src/generated/mod.rs", Owner::Generated),
            ("openapi.json", Owner::Generated),
            ("docs/API.md", Owner::Generated),
        ] {
            assert_eq!(owner_of(p), Some(owner), "{example}: {p}");
        }
        for m in &schema.models {
            assert_eq!(
                owner_of(&format!("src/generated/{}.rs", m.snake)),
                Some(Owner::Generated),
                "{example}"
            );
            let handler = files
                .iter()
                .find(|f| f.path == format!("src/handlers/{}.rs", m.snake));
            let handler = handler.unwrap_or_else(|| panic!("{example}: no handler for {}", m.name));
            assert_eq!(handler.owner, Owner::User);
            assert_eq!(handler.model.as_deref(), Some(m.name.as_str()));
        }
        for f in &files {
            assert!(
                f.contents.ends_with('\n') && !f.contents.ends_with("\n\n"),
                "{example}: {} must end with one newline",
                f.path
            );
            if f.path.ends_with(".rs") {
                syn::parse_file(&f.contents)
                    .unwrap_or_else(|e| panic!("{example}: {} is not valid Rust: {e}", f.path));
            }
            if f.path.ends_with(".json") {
                serde_json::from_str::<serde_json::Value>(&f.contents)
                    .unwrap_or_else(|e| panic!("{example}: {}: {e}", f.path));
            }
            if f.owner == Owner::Generated && f.path.ends_with(".rs") {
                assert!(
                    f.contents.starts_with("//! Generated by lithair-gen"),
                    "{example}: {} has no generated header",
                    f.path
                );
            }
        }
        let cargo = files.iter().find(|f| f.path == "Cargo.toml").unwrap();
        assert!(
            cargo
                .contents
                .contains("lithair-runtime = { path = \"../runtime\" }"),
            "{}",
            cargo.contents
        );
    }
}
