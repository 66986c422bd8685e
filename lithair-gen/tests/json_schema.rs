//! The checked-in JSON Schema of the language stays in step with the generator:
//! it equals what `lithair-gen schema` prints, its objects accept exactly the keys the
//! checker accepts, and every example points at it and passes the checks.

use std::path::{Path, PathBuf};

use lithair_gen::schema::{check, keys, language, render_diagnostics};
use serde_json::Value;

const SCHEMA_FILE: &str = "schemas/lithair-model.schema.json";
const MODELINE: &str = "# yaml-language-server: $schema=../schemas/lithair-model.schema.json";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn schema_json() -> Value {
    serde_json::from_str(&language::json_schema()).expect("json_schema() is valid JSON")
}

#[test]
fn checked_in_schema_is_up_to_date() {
    let path = workspace().join(SCHEMA_FILE);
    let current = language::json_schema();
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == current,
        "{SCHEMA_FILE} is stale (or missing). Regenerate it with:\n\n    \
         cargo run -p lithair-gen -- schema > {SCHEMA_FILE}\n\nand commit the result."
    );
}

#[test]
fn schema_is_a_draft_07_document_that_rejects_unknown_top_keys() {
    let s = schema_json();
    assert!(
        s["$schema"]
            .as_str()
            .is_some_and(|u| u.contains("json-schema.org")),
        "{s:#}"
    );
    assert_eq!(s["type"], "object");
    assert_eq!(s["additionalProperties"], false);
    let required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        required.contains(&"service") && required.contains(&"models"),
        "{required:?}"
    );
}

/// Follows `$ref`, and through `allOf` / `anyOf` / `oneOf` to the object schema with
/// `properties` (an `Option<T>`, or the mapping form of an untagged enum).
fn object<'a>(root: &'a Value, node: &'a Value, at: &str) -> &'a Value {
    find_object(root, node).unwrap_or_else(|| panic!("{at}: no object schema in {node:#}"))
}

fn find_object<'a>(root: &'a Value, node: &'a Value) -> Option<&'a Value> {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/definitions/")?;
        return find_object(root, &root["definitions"][name]);
    }
    if node.get("properties").is_some() {
        return Some(node);
    }
    ["allOf", "anyOf", "oneOf"]
        .iter()
        .filter_map(|c| node.get(*c).and_then(Value::as_array))
        .flatten()
        .find_map(|v| find_object(root, v))
}

fn property<'a>(object: &'a Value, key: &str) -> &'a Value {
    object["properties"]
        .get(key)
        .unwrap_or_else(|| panic!("no property {key:?} in {object:#}"))
}

fn sorted(keys: impl IntoIterator<Item = impl Into<String>>) -> Vec<String> {
    let mut v: Vec<String> = keys.into_iter().map(Into::into).collect();
    v.sort();
    v
}

#[test]
fn schema_objects_accept_exactly_the_checker_keys() {
    let root = schema_json();
    let r = &root;
    let top = object(r, r, "top");
    let service = object(r, property(top, "service"), "service");
    let role = object(r, &property(top, "roles")["items"], "roles[]");
    let model = object(
        r,
        &property(top, "models")["additionalProperties"],
        "models.*",
    );
    let permissions = object(r, property(model, "permissions"), "permissions");
    let persistence = object(r, property(model, "persistence"), "persistence");
    let cache = object(r, property(model, "cache"), "cache");
    let lifecycle = object(r, property(model, "lifecycle"), "lifecycle");
    let audit = object(r, property(top, "audit"), "audit");
    let field = object(
        r,
        &property(model, "fields")["additionalProperties"],
        "fields.*",
    );
    let validate = object(r, property(field, "validate"), "validate");
    let field_permissions = object(r, property(field, "permissions"), "field permissions");
    let action = object(
        r,
        &property(model, "actions")["additionalProperties"],
        "actions.*",
    );

    let projection = object(
        r,
        &property(top, "projections")["additionalProperties"],
        "projections.*",
    );
    let group_by = object(r, property(projection, "group_by"), "group_by");
    let projection_permissions = object(
        r,
        property(projection, "permissions"),
        "projection permissions",
    );
    let aggregate = object(
        r,
        &property(projection, "aggregates")["additionalProperties"],
        "aggregates.*",
    );
    let ops: Vec<&str> = lithair_gen::schema::model::AggregateOp::ALL
        .iter()
        .map(|o| o.as_str())
        .collect();

    let objects: [(&str, &Value, &[&str]); 17] = [
        ("PROJECTION", projection, keys::PROJECTION),
        ("GROUP_BY", group_by, keys::GROUP_BY),
        (
            "PROJECTION_PERMISSIONS",
            projection_permissions,
            keys::PROJECTION_PERMISSIONS,
        ),
        ("AGGREGATE", aggregate, &ops),
        ("TOP", top, keys::TOP),
        ("SERVICE", service, keys::SERVICE),
        ("ROLE", role, keys::ROLE),
        ("MODEL", model, keys::MODEL),
        ("PERMISSIONS", permissions, keys::PERMISSIONS),
        ("PERSISTENCE", persistence, keys::PERSISTENCE),
        ("CACHE", cache, keys::CACHE),
        ("LIFECYCLE", lifecycle, keys::LIFECYCLE),
        ("AUDIT", audit, keys::AUDIT),
        ("FIELD", field, keys::FIELD),
        ("VALIDATE", validate, keys::VALIDATE),
        (
            "FIELD_PERMISSIONS",
            field_permissions,
            keys::FIELD_PERMISSIONS,
        ),
        ("ACTION", action, keys::ACTION),
    ];
    for (name, obj, checker_keys) in objects {
        let in_schema = sorted(obj["properties"].as_object().unwrap().keys().cloned());
        let in_checker = sorted(checker_keys.iter().copied());
        assert_eq!(
            in_schema, in_checker,
            "keys::{name} and the JSON Schema disagree: update src/schema/language.rs or src/schema/keys.rs"
        );
        assert_eq!(
            obj["additionalProperties"], false,
            "the JSON Schema of {name} must reject unknown keys, as the checker does"
        );
    }

    // Keys the checker knows but refuses for now are not offered to editors either.
    for (name, obj, unsupported) in [
        ("TOP", top, keys::TOP_UNSUPPORTED),
        ("MODEL", model, keys::MODEL_UNSUPPORTED),
    ] {
        for (key, _) in unsupported {
            assert!(
                obj["properties"].get(*key).is_none(),
                "{name}: unsupported key {key:?} is in the JSON Schema"
            );
        }
    }
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn examples_point_at_the_schema_and_pass_the_checks() {
    let examples = examples();
    assert!(
        examples.len() >= 2,
        "expected at least two examples, found {examples:?}"
    );
    for path in examples {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(MODELINE),
            "examples/{name} must begin with `{MODELINE}` so editors complete and check it"
        );
        if let Err(d) = check(&text) {
            panic!(
                "examples/{name} does not pass the checks:\n{}",
                render_diagnostics(&name, &text, &d, false)
            );
        }
    }
}

#[test]
fn modeline_points_at_the_checked_in_file() {
    let target = MODELINE.split("$schema=").nth(1).unwrap();
    assert!(
        workspace().join("examples").join(target).is_file(),
        "{target} (relative to examples/) does not exist"
    );
}
