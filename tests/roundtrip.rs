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

use crate::generated::post::{Post, PostActions, PostStatus};

/// Handlers of `Post`.
#[derive(Debug, Default)]
pub struct PostHandlers;

impl Hooks<Post> for PostHandlers {
    // Titles are stored without surrounding spaces; one title is refused outright.
    fn before_create(&self, _ctx: &HookContext, record: &mut Post) -> HookResult {
        record.title = record.title.trim().to_string();
        if record.title == "forbidden" {
            return Err(ApiError::unprocessable("title", "forbidden", "this title is not allowed"));
        }
        Ok(())
    }

    // Titles stay trimmed; a published post keeps its slug (409 otherwise).
    fn before_update(&self, _ctx: &HookContext, old: &Post, new: &mut Post) -> HookResult {
        new.title = new.title.trim().to_string();
        if old.status == PostStatus::Published && new.slug != old.slug {
            return Err(ApiError::new(409, "Conflict", "a published post keeps its slug"));
        }
        Ok(())
    }

    // Published posts cannot be deleted (403).
    fn before_delete(&self, _ctx: &HookContext, record: &Post) -> HookResult {
        if record.status == PostStatus::Published {
            return Err(ApiError::forbidden("a published post cannot be deleted"));
        }
        Ok(())
    }
}

impl PostActions for PostHandlers {
    async fn publish(&self, ctx: ActionContext, id: Uuid, _body: Value) -> Result<Post, ApiError> {
        // Staged, then committed: the answer is the post as the write left it.
        ctx.patch::<Post>(id, json!({"status": "published"}))?;
        ctx.commit().await?.get(id)
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
    assert_clippy_clean(&dir);
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
    let post_url = server.url(&format!("/api/posts/{id}"));
    let slug_change = call(
        "PATCH",
        &post_url,
        Some(&token),
        Some(&json!({"slug": "other"})),
        &[],
    );
    assert_eq!(
        slug_change.status, 409,
        "before_update refuses: {}",
        slug_change.text
    );
    let retitled = call(
        "PATCH",
        &post_url,
        Some(&token),
        Some(&json!({"title": "  New  "})),
        &[],
    );
    assert_eq!(retitled.status, 200, "{}", retitled.text);
    assert_eq!(
        retitled.json["title"], "New",
        "before_update trimmed the title"
    );
    assert_eq!(
        call("DELETE", &post_url, Some(&token), None, &[]).status,
        403,
        "before_delete refuses"
    );
    let draft = call(
        "POST",
        &server.url("/api/posts"),
        Some(&token),
        Some(&json!({"author": author_id, "title": "Draft", "slug": "draft", "body": "x"})),
        &[],
    );
    let draft_id = draft.json["id"].as_str().unwrap();
    assert_eq!(
        call(
            "DELETE",
            &server.url(&format!("/api/posts/{draft_id}")),
            Some(&token),
            None,
            &[]
        )
        .status,
        204
    );
    // Comments cannot be edited: the schema leaves out update and patch.
    let comment = call(
        "POST",
        &server.url("/api/comments"),
        Some(&token),
        Some(&json!({"post": id, "author_name": "Bo", "body": "Nice."})),
        &[],
    );
    assert_eq!(
        comment.status, 403,
        "create needs the reader role: {}",
        comment.text
    );
    let reader = mint_token(&bin, &dir, "reader", &["reader"]);
    drop(server);
    let server = Server::start(&bin, &dir, &data, &[]);
    let comment = call(
        "POST",
        &server.url("/api/comments"),
        Some(&reader),
        Some(&json!({"post": id, "author_name": "Bo", "body": "Nice."})),
        &[],
    );
    assert_eq!(comment.status, 201, "{}", comment.text);
    let comment_url = server.url(&format!(
        "/api/comments/{}",
        comment.json["id"].as_str().unwrap()
    ));
    let put = call(
        "PUT",
        &comment_url,
        Some(&reader),
        Some(&json!({"body": "Edited."})),
        &[],
    );
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, DELETE"));
    drop(server);

    // `lithair-gen run` builds (nothing to do here) and starts the service.
    run_verb_starts_the_service(&dir, &tmp.path().join("run-data"));

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

fn run_verb_starts_the_service(dir: &std::path::Path, data: &std::path::Path) {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(GEN);
    let mut child = generated_cargo_env(&mut child)
        .args(["run", "--project"])
        .arg(dir)
        .args(["--", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(data)
        .env("LITHAIR_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let lines = ChildLines::of(vec![Box::new(child.stdout.take().unwrap())]);
    let group = Group(child);
    // `run` builds the crate first (its dependencies are built already by then).
    let listening = lines
        .next_matching(
            |l| l.starts_with("listening on http://"),
            std::time::Duration::from_secs(900),
        )
        .expect("`lithair-gen run` did not start the service");
    let addr = listening.trim_start_matches("listening on http://").trim();
    let health = call("GET", &format!("http://{addr}/health"), None, None, &[]);
    drop(group);
    assert_eq!(health.status, 200);
}

/// A child that leads its own process group (`lithair-gen run` and the service it
/// starts): dropped, also when a check failed, the group is asked to stop (SIGTERM),
/// then killed if it has not stopped within 30 s.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        // SAFETY: signals our own child's process group.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// The commented example in a new handler file is code, not prose: uncommented, it
/// compiles warning-free (clippy), in a model with actions (Post) and in one without (Author).
#[test]
fn the_commented_example_of_a_new_handler_file_compiles_when_uncommented() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("blog");
    new_project(GEN, "blog", &dir);
    for model in ["author", "post"] {
        let path = dir.join(format!("src/handlers/{model}.rs"));
        let text = std::fs::read_to_string(&path).unwrap();
        let mut out = Vec::new();
        let mut in_example = false;
        let mut uncommented = 0;
        for line in text.lines() {
            if line.contains("compiles as it is once uncommented") {
                in_example = true;
                out.push(line.to_string());
                continue;
            }
            if in_example {
                match line.strip_prefix("    // ") {
                    Some(code) => {
                        out.push(format!("    {code}"));
                        uncommented += 1;
                        continue;
                    }
                    None if line == "    //" => continue,
                    None => in_example = false,
                }
            }
            out.push(line.to_string());
        }
        assert!(uncommented >= 5, "{model}: no example found in\n{text}");
        std::fs::write(&path, out.join("\n") + "\n").unwrap();
    }
    // Checked, not built: a build would put a `blog` binary where the other test of this
    // file, running at the same time, starts its own.
    assert_clippy_clean(&dir);
}

/// A new project `name` in `tmp` from the schema text `schema`; answers its folder.
fn project_of(tmp: &std::path::Path, name: &str, schema: &str) -> std::path::PathBuf {
    let file = tmp.join(format!("{name}.yaml"));
    std::fs::write(&file, schema).unwrap();
    let dir = tmp.join(name);
    let (code, out, err) = gen(
        GEN,
        &[
            "new",
            dir.to_str().unwrap(),
            "--schema",
            file.to_str().unwrap(),
        ],
        &workspace(),
    );
    assert_eq!(code, 0, "{out}{err}");
    dir
}

const STATEFUL_SCHEMA: &str = r#"service: { name: stateful }
roles: [writer]
models:
  Note:
    permissions: { read: [public], create: [writer] }
    operations: [list, get, create]
    fields:
      text: string
    actions:
      stamp: { method: GET, path: "stamp", permission: [public] }
"#;

const STATEFUL_HANDLERS: &str = r#"//! Notes get the prefix that main.rs gives their handlers.

use lithair_runtime::prelude::*;

use crate::generated::note::*;

/// Handlers with state, and without `Default`: `main.rs` builds them.
#[derive(Debug)]
pub struct NoteHandlers {
    /// Put before every note's text.
    pub prefix: String,
}

impl Hooks<Note> for NoteHandlers {
    fn before_create(&self, _ctx: &HookContext, record: &mut Note) -> HookResult {
        record.text = format!("{}{}", self.prefix, record.text);
        Ok(())
    }
}

impl NoteActions for NoteHandlers {
    async fn stamp(&self, _ctx: ActionContext, _body: Value) -> ActionResult {
        Ok(ActionResponse::ok(json!({ "prefix": self.prefix })))
    }
}
"#;

const STATEFUL_MAIN: &str = r#"//! The service, with its handlers built here.

mod generated;

fn main() -> std::process::ExitCode {
    let prefix = std::env::var("NOTE_PREFIX").unwrap_or_else(|_| "> ".to_string());
    let notes = generated::handlers::note::NoteHandlers { prefix };
    lithair_runtime::main(generated::service().with_note(notes))
}
"#;

/// Handlers with state, built in `main.rs` and given to the service, need no `Default`;
/// their hooks and actions see the state.
#[test]
fn handlers_with_state_are_built_in_main_and_given_to_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project_of(tmp.path(), "stateful", STATEFUL_SCHEMA);
    std::fs::write(dir.join("src/handlers/note.rs"), STATEFUL_HANDLERS).unwrap();
    std::fs::write(dir.join("src/main.rs"), STATEFUL_MAIN).unwrap();
    let bin = build(&dir);
    assert_clippy_clean(&dir);
    let token = mint_token(&bin, &dir, "w", &["writer"]);
    let server = Server::start(
        &bin,
        &dir,
        &tmp.path().join("data"),
        &[("NOTE_PREFIX", "[n] ")],
    );
    let note = call(
        "POST",
        &server.url("/api/notes"),
        Some(&token),
        Some(&json!({"text": "hello"})),
        &[],
    );
    assert_eq!(note.status, 201, "{}", note.text);
    assert_eq!(note.json["text"], "[n] hello");
    let stamp = call("GET", &server.url("/api/notes/stamp"), None, None, &[]);
    assert_eq!(stamp.status, 200, "{}", stamp.text);
    assert_eq!(stamp.json["prefix"], "[n] ");
}

/// The blog example's code (`examples/blog/`, through `lithair-gen new --handlers`):
/// `publish` changes the post and its author in one transaction.
#[test]
fn the_blog_example_publishes_a_post_and_counts_it_for_its_author() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("blog");
    new_project_with(GEN, "blog", &dir, true);
    let ours = std::fs::read_to_string(workspace().join("examples/blog/post.rs")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("src/handlers/post.rs")).unwrap(),
        ours
    );
    let bin = build(&dir);
    assert_clippy_clean(&dir);
    let writer = mint_token(&bin, &dir, "ada", &["author"]);
    let other = mint_token(&bin, &dir, "bob", &["author"]);
    let moderator = mint_token(&bin, &dir, "mod", &["moderator"]);
    let server = Server::start(&bin, &dir, &tmp.path().join("data"), &[]);
    let author = call(
        "POST",
        &server.url("/api/authors"),
        Some(&moderator),
        Some(&json!({"handle": "ada", "display_name": "Ada"})),
        &[],
    );
    assert_eq!(author.status, 201, "{}", author.text);
    assert_eq!(author.json["posts_published"], 0);
    let post = call(
        "POST",
        &server.url("/api/posts"),
        Some(&writer),
        Some(
            &json!({"author": author.json["id"], "title": " Hi ", "slug": "hi", "body": "Hello."}),
        ),
        &[],
    );
    assert_eq!(post.status, 201, "{}", post.text);
    let publish = server.url(&format!(
        "/api/posts/{}/publish",
        post.json["id"].as_str().unwrap()
    ));
    // Only the post's writer publishes it.
    let refused = call("POST", &publish, Some(&other), None, &[]);
    assert_eq!(refused.status, 403, "{}", refused.text);
    let published = call("POST", &publish, Some(&writer), None, &[]);
    assert_eq!(published.status, 200, "{}", published.text);
    assert_eq!(published.json["status"], "published");
    assert!(
        published.json["published_at"].is_string(),
        "{}",
        published.text
    );
    let author_url = server.url(&format!(
        "/api/authors/{}",
        author.json["id"].as_str().unwrap()
    ));
    let counted = call("GET", &author_url, None, None, &[]);
    assert_eq!(counted.json["posts_published"], 1, "{}", counted.text);
    let again = call("POST", &publish, Some(&writer), None, &[]);
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(
        call("GET", &author_url, None, None, &[]).json["posts_published"],
        1
    );
}

const EVOLVING_BEFORE: &str = r#"service: { name: evolving }
roles: [writer]
models:
  Item:
    permissions: { read: [public], create: [writer], update: [writer] }
    operations: [list, get, create, update, patch]
    fields:
      name: string
      qty: int
      kind: { type: enum, values: [small, large] }
"#;

/// A model and a field renamed, a required field with a backfill and lossless type
/// changes, through the real loop: data written by the old binary, `generate` (not breaking, and it says what
/// happens to stored data), a rebuild, a restart on the same data dir.
#[test]
fn renamed_backfilled_and_converted_fields_carry_stored_data_across_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project_of(tmp.path(), "evolving", EVOLVING_BEFORE);
    let bin = build(&dir);
    let token = mint_token(&bin, &dir, "w", &["writer"]);
    let data = tmp.path().join("data");
    let mut server = Server::start(&bin, &dir, &data, &[]);
    let a = call(
        "POST",
        &server.url("/api/items"),
        Some(&token),
        Some(&json!({"name": "bolt", "qty": 3, "kind": "small"})),
        &[],
    );
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.json["id"].as_str().unwrap().to_string();
    let p = call(
        "PATCH",
        &server.url(&format!("/api/items/{id}")),
        Some(&token),
        Some(&json!({"name": "big bolt"})),
        &[],
    );
    assert_eq!(p.status, 200, "{}", p.text);
    server.stop();

    let after = EVOLVING_BEFORE
        .replace("  Item:\n", "  Part:\n    renamed_from: Item\n")
        .replace("      name: string\n", "      title: { type: text, renamed_from: name }\n      sku: { type: string, backfill: NONE }\n")
        .replace("qty: int", "qty: float")
        .replace("kind: { type: enum, values: [small, large] }", "kind: string");
    std::fs::write(dir.join("lithair.yaml"), after).unwrap();
    let (code, out, err) = gen(GEN, &["generate", "--project", dir.to_str().unwrap()], &dir);
    assert_eq!(code, 0, "not breaking:\n{out}{err}");
    for said in [
        "stored data: model Item is renamed Part",
        "stored data: field Part.name is renamed title",
        "stored data: new field Part.sku: records stored before read \"NONE\" (backfill)",
    ] {
        assert!(out.contains(said), "no {said:?} in\n{out}");
    }
    let bin = build(&dir);
    let server = Server::start(&bin, &dir, &data, &[("LITHAIR_LOG", "info")]);
    // The renamed model serves the records stored under its former name, at its path.
    let got = call(
        "GET",
        &server.url(&format!("/api/parts/{id}")),
        None,
        None,
        &[],
    );
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["title"], "big bolt", "{}", got.text);
    assert!(got.json.get("name").is_none(), "{}", got.text);
    assert_eq!(
        (got.json["sku"].clone(), got.json["kind"].clone()),
        (json!("NONE"), json!("small"))
    );
    assert_eq!(got.json["qty"].as_f64(), Some(3.0));
    let p = call(
        "PATCH",
        &server.url(&format!("/api/parts/{id}")),
        Some(&token),
        Some(&json!({"title": "bolt, renamed", "qty": 2.5})),
        &[],
    );
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(
        (p.json["title"].clone(), p.json["sku"].clone()),
        (json!("bolt, renamed"), json!("NONE"))
    );
    assert!(
        server.log().contains("upgraded as they were read"),
        "{}",
        server.log()
    );
}

const WATCHED_SCHEMA: &str = r#"service: { name: watched }
models:
  Note:
    permissions: { read: [public] }
    operations: [list, get]
    fields:
      text: string
"#;

/// `run --watch`: a schema change regenerates, rebuilds and restarts the service; a
/// broken schema prints its diagnostics and keeps the last good service running. Every
/// wait is bounded.
#[test]
fn run_watch_follows_schema_changes_and_keeps_the_last_good_service() {
    use std::os::unix::process::CommandExt;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let dir = project_of(tmp.path(), "watched", WATCHED_SCHEMA);
    let mut child = std::process::Command::new(GEN);
    let mut child = generated_cargo_env(&mut child)
        .args(["run", "--watch", "--project"])
        .arg(&dir)
        .args(["--", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("LITHAIR_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let lines = ChildLines::of(vec![
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ]);
    let group = Group(child);
    // The next line that satisfies `want`, within `secs`.
    let wait_for = |want: &dyn Fn(&str) -> bool, secs: u64| -> String {
        lines
            .next_matching(want, Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("`run --watch` did not get there in {secs} s"))
    };
    let listening = |l: &str| l.starts_with("listening on http://");
    let addr = |line: String| {
        line.trim_start_matches("listening on http://")
            .trim()
            .to_string()
    };
    let first = addr(wait_for(&listening, 300));
    assert_eq!(
        call("GET", &format!("http://{first}/api/notes"), None, None, &[]).status,
        200
    );

    // A new model: regenerated, rebuilt, restarted.
    let with_tags = format!("{WATCHED_SCHEMA}  Tag:\n    permissions: {{ read: [public] }}\n    operations: [list]\n    fields:\n      label: string\n");
    std::fs::write(dir.join("lithair.yaml"), &with_tags).unwrap();
    let second = addr(wait_for(&listening, 300));
    let tags = call("GET", &format!("http://{second}/api/tags"), None, None, &[]);
    assert_eq!(tags.status, 200, "{}", tags.text);

    // A broken schema: its diagnostics, and the running service stays.
    std::fs::write(
        dir.join("lithair.yaml"),
        with_tags.replace("label: string", "label: strng"),
    )
    .unwrap();
    wait_for(&|l: &str| l.contains("unknown type \"strng\""), 60);
    wait_for(
        &|l: &str| l.contains("the last good service keeps running"),
        60,
    );
    assert_eq!(
        call("GET", &format!("http://{second}/api/tags"), None, None, &[]).status,
        200
    );
    drop(group);
}
