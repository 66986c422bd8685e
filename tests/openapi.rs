//! The OpenAPI documents of the examples as the tools outside this project read them:
//! each validates against the official OpenAPI 3.1 JSON Schema (shipped here as
//! `tests/openapi-3.1.schema.json`, checked with the `jsonschema` package) and passes
//! openapi-spec-validator, and the client openapi-python-client generates from each
//! comes out without warnings and fully typed (no field of a model left as `Any`). The
//! tools are pinned in `tests/openapi-tools.txt` and installed into the shared e2e target
//! dir on first use. The built shop is fuzzed from its document in `tests/http_shop.rs`.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::tools::openapi_tools;
use support::workspace;

/// Each example's document, written to a temp dir: (name, path).
fn documents(dir: &Path) -> Vec<(String, PathBuf)> {
    ["shop", "blog"]
        .iter()
        .map(|name| {
            let file = format!("{name}.yaml");
            let text = std::fs::read_to_string(workspace().join("examples").join(&file))
                .expect("example schema");
            let schema = lithair_gen::schema::check(&text).unwrap_or_else(|d| {
                panic!(
                    "{}",
                    lithair_gen::schema::render_diagnostics(&file, &text, &d, false)
                )
            });
            let doc = lithair_gen::render::openapi::document(&schema);
            let path = dir.join(format!("{name}.openapi.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json"))
                .expect("write the document");
            (name.to_string(), path)
        })
        .collect()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out =
        support::output_within(cmd, std::time::Duration::from_secs(600)).expect("run the tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Validates `doc` against the JSON Schema `schema` (draft 2020-12, formats checked) with
/// the `jsonschema` package of the tools' virtualenv: every error, one per line.
fn json_schema_errors(bin: &Path, schema: &Path, doc: &Path) -> (bool, String) {
    const CHECK: &str = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)\n\
        errors = list(v.iter_errors(json.load(open(sys.argv[2]))))\n\
        for e in errors: print(e.json_path, e.message)\n\
        sys.exit(1 if errors else 0)\n";
    run(Command::new(bin.join("python3"))
        .arg("-c")
        .arg(CHECK)
        .arg(schema)
        .arg(doc))
}

#[test]
fn every_example_document_is_valid_openapi_3_1() {
    let bin = openapi_tools();
    let dir = tempfile::tempdir().expect("temp dir");
    // The official schema of OpenAPI 3.1 documents (spec.openapis.org, 2022-10-07),
    // shipped in the repository.
    let official = workspace().join("tests").join("openapi-3.1.schema.json");
    for (name, doc) in documents(dir.path()) {
        let (ok, text) = json_schema_errors(&bin, &official, &doc);
        assert!(ok, "{name} against {}:\n{text}", official.display());
        // openapi-spec-validator checks more: the Schema Objects, references, unique
        // operation ids, path parameters.
        let (ok, text) = run(Command::new(bin.join("openapi-spec-validator")).arg(&doc));
        assert!(ok && text.contains(": OK"), "{name}: {text}");
    }
    // The validator does refuse what the 3.1 schema forbids.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"openapi": "3.1.0", "info": {"title": "x"}, "paths": {"/a": {"get": {"responses": {"200": {}}}}}}"#,
    )
    .expect("write");
    let (ok, text) = run(Command::new(bin.join("openapi-spec-validator")).arg(&bad));
    assert!(!ok, "a document without info.version passed: {text}");
    let (ok, text) = json_schema_errors(&bin, &official, &bad);
    assert!(
        !ok && text.contains("version"),
        "a document without info.version passed the shipped schema: {text}"
    );
}

#[test]
fn clients_generated_from_the_documents_are_typed_and_warning_free() {
    let bin = openapi_tools();
    let dir = tempfile::tempdir().expect("temp dir");
    // ruff (the client's formatter) is found on PATH.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (name, doc) in documents(dir.path()) {
        let out = dir.path().join(format!("{name}-client"));
        let (ok, text) = run(Command::new(bin.join("openapi-python-client"))
            .env("PATH", &path)
            .arg("generate")
            .arg("--path")
            .arg(&doc)
            .arg("--output-path")
            .arg(&out));
        assert!(ok, "{name}: {text}");
        assert!(
            !text.contains("Warning") && !text.contains("Skipping"),
            "{name}: the generator warned:\n{text}"
        );
        let package = out.join(format!("{name}_client"));
        let models = package.join("models");
        let mut untyped = Vec::new();
        let mut patch_models = 0;
        for entry in std::fs::read_dir(&models).expect("models") {
            let file = entry.expect("entry").path();
            let text = std::fs::read_to_string(&file).expect("model");
            if text.contains("A JSON merge patch of") {
                patch_models += 1;
            }
            // A model's attributes are the class body's `name: type` lines.
            for line in text.lines() {
                let Some(attr) = line.strip_prefix("    ") else {
                    continue;
                };
                let Some((field, ty)) = attr.split_once(": ") else {
                    continue;
                };
                let is_attr = field
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
                if is_attr
                    && field != "additional_properties"
                    && ty.split(['|', '[', ']', ' ', '=']).any(|t| t == "Any")
                {
                    untyped.push(format!("{}: {attr}", file.display()));
                }
            }
        }
        assert!(
            untyped.is_empty(),
            "{name}: untyped fields:\n{}",
            untyped.join("\n")
        );
        assert!(
            patch_models > 0,
            "{name}: no merge-patch models were generated"
        );
    }
}
