//! Diagnostics of bad schemas, compared with their expected text.
//!
//! Each `tests/bad-schemas/NAME.yaml` must fail the checks, and the plain-text rendering of
//! its diagnostics must equal `tests/bad-schemas/NAME.expected` byte for byte. Run with
//! `UPDATE_EXPECTED=1` to rewrite the `.expected` files, then review their diff.

use std::path::{Path, PathBuf};

use lithair_gen::schema::model::FieldType;
use lithair_gen::schema::{check, render_diagnostics};

fn bad_schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-schemas")
}

/// Every `NAME.yaml` of the folder, sorted by name.
fn bad_schemas() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(bad_schemas_dir())
        .expect("tests/bad-schemas exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

fn updating() -> bool {
    std::env::var("UPDATE_EXPECTED").is_ok_and(|v| v == "1")
}

/// The rendered diagnostics of a bad schema; panics if the schema passes.
fn diagnostics_of(name: &str, text: &str) -> (usize, String) {
    match check(text) {
        Ok(_) => panic!("{name} passed the checks, but it is a bad schema"),
        Err(diags) => {
            assert!(
                !diags.is_empty(),
                "{name}: check failed without a diagnostic"
            );
            (diags.len(), render_diagnostics(name, text, &diags, false))
        }
    }
}

/// The `(line, col)` of every `NAME.yaml:L:C: error:` line of a rendering.
fn locations(name: &str, rendered: &str) -> Vec<(usize, usize)> {
    let prefix = format!("{name}:");
    rendered
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().and_then(|s| s.parse().ok());
            let col = parts.next().and_then(|s| s.parse().ok());
            match (line, col, parts.next()) {
                (Some(line), Some(col), Some(tail)) if tail.starts_with(" error: ") => (line, col),
                _ => panic!("{name}: malformed diagnostic line: {name}:{rest}"),
            }
        })
        .collect()
}

#[test]
fn bad_schemas_match_their_expected_output() {
    let schemas = bad_schemas();
    assert!(
        schemas.len() >= 25,
        "tests/bad-schemas lost cases: only {} left",
        schemas.len()
    );
    let mut failures = Vec::new();
    for (name, path) in &schemas {
        let text = std::fs::read_to_string(path).unwrap();
        let (count, rendered) = diagnostics_of(name, &text);

        // Shape checks that hold for every case, whatever the wording.
        let locs = locations(name, &rendered);
        assert_eq!(
            locs.len(),
            count,
            "{name}: one `file:line:col` line per diagnostic\n{rendered}"
        );
        let mut sorted = locs.clone();
        sorted.sort();
        assert_eq!(
            locs, sorted,
            "{name}: diagnostics are not in source order\n{rendered}"
        );
        let plural = if count == 1 { "" } else { "s" };
        assert!(
            rendered.ends_with(&format!(
                "{count} error{plural} in {name}; nothing was written.\n"
            )),
            "{name}: missing summary line\n{rendered}"
        );
        assert!(
            !rendered.contains('\u{1b}'),
            "{name}: colour codes in plain output"
        );

        let expected_path = path.with_extension("expected");
        if updating() {
            std::fs::write(&expected_path, &rendered).unwrap();
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == rendered => {}
            Ok(expected) => failures.push(format!(
                "--- {name}: expected ({})\n{expected}--- {name}: actual\n{rendered}",
                expected_path.display()
            )),
            Err(_) => failures.push(format!(
                "--- {name}: {} is missing; actual output:\n{rendered}",
                expected_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} bad schema(s) render differently (run with UPDATE_EXPECTED=1 to accept, then review the diff):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_expected_file_has_its_schema() {
    for entry in std::fs::read_dir(bad_schemas_dir()).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") => {}
            Some("expected") => assert!(
                path.with_extension("yaml").is_file(),
                "{} has no schema beside it: remove it",
                path.display()
            ),
            _ => panic!("unexpected file in tests/bad-schemas: {}", path.display()),
        }
    }
}

/// Reads `bad-schemas/NAME.yaml` and returns its rendered diagnostics.
fn render_case(name: &str) -> String {
    let file = format!("{name}.yaml");
    let text = std::fs::read_to_string(bad_schemas_dir().join(&file)).unwrap();
    diagnostics_of(&file, &text).1
}

#[test]
fn several_errors_are_all_reported_in_line_order() {
    let rendered = render_case("several_errors");
    let locs = locations("several_errors.yaml", &rendered);
    let lines: Vec<usize> = locs.iter().map(|(l, _)| *l).collect();
    // One problem on each of these lines of the file (see its comments).
    assert_eq!(lines, vec![6, 8, 9, 10, 11, 12, 15, 16], "{rendered}");
    let messages: Vec<&str> = rendered
        .lines()
        .filter(|l| l.starts_with("several_errors.yaml:"))
        .collect();
    let must = [
        "unknown role \"editr\"",
        "unknown type \"strng\"",
        "min (10) is greater than max (1)",
        "default of field \"Product.stock\"",
        "field name \"id\" is reserved",
        "unknown model \"Categroy\"",
        "unknown key \"max_len\"",
        "invalid regular expression",
    ];
    for (msg, want) in messages.iter().zip(must) {
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
    }
    assert!(
        rendered.ends_with("8 errors in several_errors.yaml; nothing was written.\n"),
        "{rendered}"
    );
}

#[test]
fn did_you_mean_is_offered_for_near_names() {
    for (case, hint) in [
        ("unknown_top_key", "did you mean \"roles\"?"),
        ("unknown_service_key", "did you mean \"description\"?"),
        ("unknown_model_key", "did you mean \"permissions\"?"),
        ("unknown_field_key", "did you mean \"optional\"?"),
        ("unknown_validate_key", "did you mean \"max_length\"?"),
        ("unknown_type", "did you mean \"string\"?"),
        ("ref_to_missing_model", "did you mean \"Category\"?"),
        ("unknown_role", "did you mean \"editor\"?"),
        ("default_not_an_enum_value", "did you mean \"published\"?"),
    ] {
        let rendered = render_case(case);
        assert!(
            rendered.contains(hint),
            "{case}: no {hint:?} in\n{rendered}"
        );
    }
}

#[test]
fn projection_mistakes_have_hints() {
    let rendered = render_case("bad_projections");
    for hint in [
        "did you mean \"Order\"?",
        "did you mean \"paid\"?",
        "did you mean \"total\"?",
        "did you mean \"week\"?",
        "numeric fields of \"Order\": total",
        "overlaps the path \"/api/orders\"",
        "read by the pseudo-role \"owner\" only",
    ] {
        assert!(rendered.contains(hint), "no {hint:?} in\n{rendered}");
    }
}

#[test]
fn colour_output_differs_only_by_escape_codes() {
    let text = std::fs::read_to_string(bad_schemas_dir().join("several_errors.yaml")).unwrap();
    let diags = check(&text).unwrap_err();
    let plain = render_diagnostics("x.yaml", &text, &diags, false);
    let colour = render_diagnostics("x.yaml", &text, &diags, true);
    assert!(
        colour.contains('\u{1b}'),
        "colour output has no escape codes"
    );
    let stripped = strip_ansi(&colour);
    assert_eq!(stripped, plain);
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---- schemas that must pass -------------------------------------------------------

#[test]
fn escapable_rust_keyword_is_accepted_as_field_name() {
    let text = "\
service: { name: shop }
models:
  Product:
    fields:
      type: { type: string }
      match: { type: int, optional: true }
      name: string
";
    let schema = check(text)
        .unwrap_or_else(|d| panic!("{}", render_diagnostics("kw.yaml", text, &d, false)));
    let fields: Vec<&str> = schema.models[0]
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(fields, ["type", "match", "name"]);
    assert_eq!(schema.models[0].fields[0].ty, FieldType::String);

    // And the generated code uses a raw identifier that still serialises as `type`.
    let templates = lithair_gen::render::templates::load(None).unwrap();
    let opts = lithair_gen::render::RenderOptions {
        runtime_dependency: "lithair-runtime = \"0.1\"".into(),
    };
    let files = lithair_gen::render::render(&schema, &templates, &opts).expect("renders");
    let model = files
        .iter()
        .find(|f| f.path == "src/generated/product.rs")
        .expect("model file");
    assert!(
        model.contents.contains("pub r#type: String"),
        "{}",
        model.contents
    );
    assert!(
        model.contents.contains("pub r#match: Option<i64>"),
        "{}",
        model.contents
    );
}

#[test]
fn enum_value_self_becomes_a_valid_variant() {
    let text = "\
service: { name: social }
models:
  Post:
    fields:
      audience: { type: enum, values: [self, friends, public], default: self }
";
    let schema = check(text)
        .unwrap_or_else(|d| panic!("{}", render_diagnostics("self.yaml", text, &d, false)));
    let templates = lithair_gen::render::templates::load(None).unwrap();
    let opts = lithair_gen::render::RenderOptions {
        runtime_dependency: "lithair-runtime = \"0.1\"".into(),
    };
    let files = lithair_gen::render::render(&schema, &templates, &opts)
        .expect("`self` as an enum value renders");
    let model = files
        .iter()
        .find(|f| f.path == "src/generated/post.rs")
        .unwrap();
    assert!(
        model
            .contents
            .contains("#[serde(rename = \"self\")]\n    VSelf,"),
        "{}",
        model.contents
    );
}

#[test]
fn other_edge_cases_that_are_valid() {
    let text = "\
service: { name: my-shop }
roles:
  - viewer
  - { name: admin, inherits: [viewer] }
models:
  Product:
    path: /api/v1/products
    operations: [list, get]
    permissions: { read: [viewer] }
    fields:
      stock: { type: int, default: 0, validate: { min: 0, max: 0 } }
      price: { type: float, default: 2, validate: { min: 1.5 } }
      code: { type: string, default: \"AB\", validate: { min_length: 2, max_length: 2, pattern: \"[A-Z]+\" } }
      tags: { type: \"list<enum>\", values: [a, b], default: [a] }
      note: { type: text, optional: true, default: ~ }
      owner: { type: \"ref<Product>\", optional: true }
";
    let schema = check(text)
        .unwrap_or_else(|d| panic!("{}", render_diagnostics("ok.yaml", text, &d, false)));
    let m = &schema.models[0];
    assert_eq!(m.path, "/api/v1/products");
    assert_eq!(m.fields.len(), 6);
    assert_eq!(schema.roles[1].inherits, ["viewer"]);
}

#[test]
fn empty_file_is_reported() {
    let diags = check("").unwrap_err();
    let rendered = render_diagnostics("empty.yaml", "", &diags, false);
    assert!(
        rendered.starts_with("empty.yaml:1:1: error: the schema is empty\n"),
        "{rendered}"
    );
}
