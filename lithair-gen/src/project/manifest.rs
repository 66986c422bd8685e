//! `.lithair/manifest.json`: which files lithair-gen wrote, who owns them, and their hashes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::render::Owner;

/// Where the manifest lives, relative to the project.
pub const PATH: &str = ".lithair/manifest.json";
/// Where the schema of the last generate is kept, relative to the project.
pub const PREVIOUS_SCHEMA: &str = ".lithair/schema.prev.yaml";

/// The manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `lithair-gen <version>` that wrote it.
    pub generator: String,
    /// sha256 of the `lithair.yaml` it was generated from.
    pub schema_sha256: String,
    /// Every written file, sorted by path.
    pub files: Vec<Entry>,
}

/// One written file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path relative to the project, with `/`.
    pub path: String,
    /// Who owns it.
    pub owner: Owner,
    /// sha256 of the contents as written.
    pub sha256: String,
    /// For Rust files written by an earlier lithair-gen: sha256 of the token stream
    /// (which ignores comments; superseded by `layout_sha256`, read only to judge those
    /// files until they are written again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_sha256: Option<String>,
    /// For Rust files: sha256 of the text without its layout (`layout.rs`), so a
    /// reformat (`cargo fmt`) is not mistaken for a hand edit, and any other change —
    /// a comment too — is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_sha256: Option<String>,
    /// For handler files: the model they serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Manifest {
    /// Reads the manifest of a project; `None` when there is none yet.
    pub fn load(project: &Path) -> Result<Option<Manifest>, String> {
        let path = project.join(PATH);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                format!(
                    "{} is damaged: {e}; delete it and run `lithair-gen generate --force`",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The entry of `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.files.iter().find(|e| e.path == path)
    }

    /// The manifest as written to disk.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// sha256 in hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 of a Rust file's tokens (comments other than docs and layout ignored): how
/// earlier versions told a reformat from an edit.
pub fn tokens_sha256(text: &str) -> Option<String> {
    use quote::ToTokens;
    let file = syn::parse_file(text).ok()?;
    Some(sha256(file.to_token_stream().to_string().as_bytes()))
}

/// The manifest entry for freshly written contents.
pub fn entry(path: &str, owner: Owner, contents: &str, model: Option<String>) -> Entry {
    Entry {
        path: path.to_string(),
        owner,
        sha256: sha256(contents.as_bytes()),
        tokens_sha256: None,
        layout_sha256: path
            .ends_with(".rs")
            .then(|| super::layout::layout_sha256(contents)),
        model,
    }
}
