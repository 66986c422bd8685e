//! The user's loop, through the real binary and a real `cargo build`: new → edit a handler
//! → change the schema → generate → the edit is intact, the crate builds, the hook runs;
//! a hand-edited generated file is refused, `--force` restores it.

#[path = "support/mod.rs"]
mod support;

use serde_json::json;
use support::*;

const GEN: &str = env!("CARGO_BIN_EXE_lithair-gen");

const POST_HANDLERS: &str = r#"//! My hooks for posts: written by hand, must survive every regeneration.

use lithair_runtime::prelude::*;

use crate::generated::post::{Post, PostHooks};

/// Handlers of `Post`.
#[derive(Debug, Default)]
pub struct PostHandlers;

impl PostHooks for PostHandlers {
    // Titles are stored without surrounding spaces; one title is refused outright.
    fn before_create(&self, _ctx: &HookContext, record: &mut Post) -> HookResult {
        record.title = record.title.trim().to_string();
        if record.title == "forbidden" {
            return Err(ApiError::unprocessable("title", "forbidden", "this title is not allowed"));
        }
        Ok(())
    }

    async fn publish(&self, ctx: ActionContext, id: Uuid, _body: Value) -> ActionResult {
        let record = ctx.patch(id, json!({"status": "published"})).await?;
        Ok(ActionResponse::ok(record))
    }
}
"#;

#[test]
fn edits_survive_schema_changes_and_the_crate_builds_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("blog");
    new_project(GEN, "blog", &dir);
    let p = dir.to_str().unwrap();
    assert_eq!(
        gen(GEN, &["check", "--project", p], &dir).0,
        0,
        "fresh project is up to date"
    );

    // The user writes hooks and the action body.
    let handler = dir.join("src/handlers/post.rs");
    std::fs::write(&handler, POST_HANDLERS).unwrap();

    // ... then adds a field to Post and a new model.
    let schema_path = dir.join("lithair.yaml");
    let schema = std::fs::read_to_string(&schema_path).unwrap();
    let schema = schema.replace(
        "      tags: { type: \"list<string>\", default: [] }\n",
        "      tags: { type: \"list<string>\", default: [] }\n      summary: { type: string, optional: true, validate: { max_length: 300 } }\n",
    ) + "\n  Tag:\n    permissions: { read: [public], create: [moderator] }\n    operations: [list, get, create]\n    fields:\n      label: { type: string, unique: true }\n";
    std::fs::write(&schema_path, &schema).unwrap();
    assert_eq!(
        gen(GEN, &["check", "--project", p], &dir).0,
        1,
        "check sees the schema change"
    );

    let (code, out, err) = gen(GEN, &["generate", "--project", p], &dir);
    assert_eq!(code, 0, "generate failed:\n{out}\n{err}");
    assert_eq!(
        std::fs::read_to_string(&handler).unwrap(),
        POST_HANDLERS,
        "the user's handler is untouched"
    );
    assert!(
        dir.join("src/handlers/tag.rs").exists(),
        "a new model gets a handler file"
    );
    assert!(std::fs::read_to_string(dir.join("src/generated/post.rs"))
        .unwrap()
        .contains("pub summary: Option<String>"));
    let (code, _, _) = gen(GEN, &["generate", "--project", p], &dir);
    assert_eq!(code, 0);
    assert_eq!(
        gen(GEN, &["check", "--project", p], &dir).0,
        0,
        "generate twice: up to date"
    );

    // The crate builds warning-free, and the user's hook and action run.
    let bin = build(&dir);
    let clippy =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", e2e_target())
            .output()
            .unwrap();
    assert!(
        clippy.status.success(),
        "clippy on the generated crate:\n{}",
        String::from_utf8_lossy(&clippy.stderr)
    );
    let token = mint_token(&bin, &dir, "writer", &["author", "moderator"]);
    let data = tmp.path().join("data");
    let server = Server::start(&bin, &dir, &data, &[]);
    let author = call(
        "POST",
        &server.url("/api/authors"),
        Some(&token),
        Some(&json!({"handle": "ada", "display_name": "Ada"})),
        &[],
    );
    assert_eq!(author.status, 201, "{}", author.text);
    let author_id = author.json["id"].as_str().unwrap().to_string();
    let post = call(
        "POST",
        &server.url("/api/posts"),
        Some(&token),
        Some(
            &json!({"author": author_id, "title": "  Hello  ", "slug": "hello", "body": "Hi.", "summary": "short"}),
        ),
        &[],
    );
    assert_eq!(post.status, 201, "{}", post.text);
    assert_eq!(
        post.json["title"], "Hello",
        "before_create trimmed the title"
    );
    assert_eq!(post.json["status"], "draft");
    let refused = call(
        "POST",
        &server.url("/api/posts"),
        Some(&token),
        Some(&json!({"author": author_id, "title": "forbidden", "slug": "nope", "body": "x"})),
        &[],
    );
    assert_eq!(refused.status, 422);
    assert_eq!(refused.json["errors"][0]["code"], "forbidden");
    let id = post.json["id"].as_str().unwrap();
    let published = call(
        "POST",
        &server.url(&format!("/api/posts/{id}/publish")),
        Some(&token),
        None,
        &[],
    );
    assert_eq!(published.status, 200, "{}", published.text);
    assert_eq!(published.json["status"], "published");
    assert_eq!(published.json["version"], 2);
    let tag = call(
        "POST",
        &server.url("/api/tags"),
        Some(&token),
        Some(&json!({"label": "rust"})),
        &[],
    );
    assert_eq!(tag.status, 201, "{}", tag.text);
    drop(server);

    // A hand edit of a generated file is refused, with the diff; --force restores it.
    let generated = dir.join("src/generated/post.rs");
    let pristine = std::fs::read_to_string(&generated).unwrap();
    std::fs::write(
        &generated,
        format!("{pristine}\n/// Added by hand.\npub fn sneaky() {{}}\n"),
    )
    .unwrap();
    assert_eq!(gen(GEN, &["check", "--project", p], &dir).0, 1);
    let (code, _, err) = gen(GEN, &["generate", "--project", p], &dir);
    assert_eq!(code, 1, "generate must refuse");
    assert!(
        err.contains("refusing to overwrite")
            && err.contains("src/generated/post.rs")
            && err.contains("-pub fn sneaky"),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(&generated)
            .unwrap()
            .contains("sneaky"),
        "nothing was written"
    );
    let (code, out, err) = gen(GEN, &["generate", "--force", "--project", p], &dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&generated).unwrap(), pristine);
    assert_eq!(gen(GEN, &["check", "--project", p], &dir).0, 0);
    assert_eq!(std::fs::read_to_string(&handler).unwrap(), POST_HANDLERS);
}
