//! Conditional and cached reads.
//!
//! - Every get and list answer has an ETag: a record's is its version (`"3"`, the value
//!   `If-Match` takes); a list's derives from the model's last applied sequence number
//!   and what the page depends on (the query, the fields the caller does not see, the
//!   owner its rows are narrowed to), so any write to the model changes it.
//! - A projection's answers have an ETag too, from its source's last applied sequence
//!   number and the query (`http/projection.rs`).
//! - `If-None-Match` with the current ETag (or `*`) is answered 304, without a body and
//!   before a list page is computed.
//! - A model with `cache: { ttl }` gets `Cache-Control: max-age=<ttl>` on get and list
//!   answers: `public` when anonymous callers read it and every caller sees the same
//!   thing, `private` otherwise. Its list pages are also kept here, by ETag, so a repeated
//!   list is a lookup; a write to the model changes the ETag, so a stale page is never
//!   served, and the cache is emptied when it grows past its bounds.
//! - An answer whose content depends on the caller (field read permissions, `owner` in
//!   the read permission) says `Vary: Authorization`.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use hyper::header::{HeaderValue, CACHE_CONTROL, ETAG, VARY};
use sha2::{Digest, Sha256};

use super::respond::{self, Resp};
use crate::auth::Access;
use crate::error::ApiError;
use crate::spec::{ModelSpec, ProjectionSpec, OWNER};

/// Most list pages kept.
const PAGES: usize = 4096;
/// Most bytes of list pages kept.
const PAGE_BYTES: usize = 64 * 1024 * 1024;

/// The list pages of `cache` models, by ETag.
#[derive(Debug, Default)]
pub(crate) struct Pages {
    kept: Mutex<(HashMap<String, Bytes>, usize)>,
}

impl Pages {
    /// The page of `etag`, if kept.
    pub(crate) fn get(&self, etag: &str) -> Option<Bytes> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.0.get(etag).cloned()
    }

    /// Keeps `page` under `etag` (emptying the cache first when it is full: the pages
    /// in use come back one request each).
    pub(crate) fn put(&self, etag: String, page: Bytes) {
        if page.len() > PAGE_BYTES / 16 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.0.len() >= PAGES || kept.1 + page.len() > PAGE_BYTES {
            kept.0.clear();
            kept.1 = 0;
        }
        kept.1 += page.len();
        if let Some(old) = kept.0.insert(etag, page) {
            kept.1 -= old.len();
        }
    }
}

/// The ETag of a record at `version`, as text.
pub(crate) fn record_etag(version: u64) -> String {
    record_etag_value(version)
        .to_str()
        .unwrap_or_default()
        .to_string()
}

/// The ETag of a record at `version` as a header value (written on the stack: every get
/// of a record has one).
pub(crate) fn record_etag_value(version: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut etag = [b'"'; 22];
    etag[1..=digits.len()].copy_from_slice(digits);
    match HeaderValue::from_bytes(&etag[..digits.len() + 2]) {
        Ok(v) => v,
        // Digits between quotes are always a valid header value.
        Err(_) => HeaderValue::from_static("\"0\""),
    }
}

/// A digest of what a page depends on besides the state: its `path`, its `query`, the
/// fields the caller does not see, and the owner its rows are narrowed to.
fn page_digest(path: &str, query: Option<&str>, access: &Access) -> String {
    let mut h = Sha256::new();
    for part in [path, query.unwrap_or("")] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for hidden in access.hidden() {
        h.update(b"h");
        h.update((hidden.len() as u64).to_le_bytes());
        h.update(hidden.as_bytes());
    }
    if let Some(own) = access.own() {
        h.update(b"o");
        h.update(own.subject.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// The ETag of a list page of `m`: the model's last applied sequence number `changed`,
/// and a digest of what else the page depends on.
pub(crate) fn list_etag(
    m: &ModelSpec,
    changed: u64,
    query: Option<&str>,
    access: &Access,
) -> String {
    format!("\"l{changed}-{}\"", page_digest(&m.path, query, access))
}

/// The ETag of a page of projection `p`: its source's last applied sequence number
/// `changed`, and a digest of the query and of the aggregates the caller does not see.
pub(crate) fn projection_etag(
    p: &ProjectionSpec,
    changed: u64,
    query: Option<&str>,
    access: &Access,
) -> String {
    format!("\"p{changed}-{}\"", page_digest(&p.path, query, access))
}

/// The value of an `If-Match` or `If-None-Match` header (RFC 9110 §13.1).
#[derive(Debug, PartialEq)]
pub(crate) enum Condition<'a> {
    /// `*`: any current version.
    Any,
    /// The entity tags listed, each as (weak, opaque tag without its quotes).
    Tags(Vec<(bool, &'a str)>),
}

/// Reads header `name` as `*` or a list of entity tags: None when absent, a 400 when it is
/// empty, not text, or not an ETag list (`"3"`, `W/"3"`, `"1", "2"`; an unquoted `3` is
/// taken as `"3"`). The grammar is the one the OpenAPI document states for these headers:
/// a quoted tag holds any visible character but `"` (commas too), an unquoted one any but
/// `"` and `,`.
pub(crate) fn condition<'a>(
    headers: &'a hyper::HeaderMap,
    name: hyper::header::HeaderName,
    empty: &str,
) -> Result<Option<Condition<'a>>, ApiError> {
    let Some(v) = headers.get(&name) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::bad_request(format!("{name} is not valid text")))?
        .trim_matches([' ', '\t']);
    if text.is_empty() {
        return Err(ApiError::bad_request(format!("{name} is empty: {empty}")));
    }
    if text == "*" {
        return Ok(Some(Condition::Any));
    }
    etag_list(text)
        .map(|tags| Some(Condition::Tags(tags)))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} {text} is not a list of ETags (each quoted, such as \"3\" or W/\"3\")"
            ))
        })
}

/// The entity tags of `text` (no leading or trailing whitespace), each as (weak, opaque
/// tag without its quotes); None when it is not a comma-separated list of them.
fn etag_list(text: &str) -> Option<Vec<(bool, &str)>> {
    let is_ows = |b: u8| b == b' ' || b == b'\t';
    // etagc of RFC 9110: visible ASCII but `"`.
    let quoted_char = |b: u8| b == 0x21 || (0x23..=0x7e).contains(&b);
    let bytes = text.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    loop {
        let rest = &text[i..];
        let (weak, opaque, used) = if let Some(q) = rest
            .strip_prefix("W/\"")
            .map(|q| (true, q, 3))
            .or_else(|| rest.strip_prefix('"').map(|q| (false, q, 1)))
        {
            let (weak, inner, open) = q;
            let len = inner.bytes().take_while(|b| quoted_char(*b)).count();
            if inner.as_bytes().get(len) != Some(&b'"') {
                return None;
            }
            (weak, &inner[..len], open + len + 1)
        } else {
            let len = rest
                .bytes()
                .take_while(|b| quoted_char(*b) && *b != b',')
                .count();
            if len == 0 {
                return None;
            }
            let token = &rest[..len];
            // `W/3` is a weak `3`; a lone `W/` is a tag of its own.
            match token.strip_prefix("W/").filter(|t| !t.is_empty()) {
                Some(t) => (true, t, len),
                None => (false, token, len),
            }
        };
        tags.push((weak, opaque));
        i += used;
        while bytes.get(i).copied().is_some_and(is_ows) {
            i += 1;
        }
        match bytes.get(i) {
            None => return Some(tags),
            Some(b',') => {
                i += 1;
                while bytes.get(i).copied().is_some_and(is_ows) {
                    i += 1;
                }
            }
            Some(_) => return None,
        }
    }
}

/// Whether the request's `If-None-Match` names `etag` (or is `*`): the answer is then a
/// 304. An empty or unreadable header is a 400.
pub(crate) fn none_match(headers: &hyper::HeaderMap, etag: &str) -> Result<bool, ApiError> {
    let Some(c) = condition(
        headers,
        hyper::header::IF_NONE_MATCH,
        "send an ETag this service gave, or no header",
    )?
    else {
        return Ok(false);
    };
    // Weak comparison, as RFC 9110 asks of If-None-Match.
    let want = etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"');
    Ok(match c {
        Condition::Any => true,
        Condition::Tags(tags) => tags.iter().any(|(_, t)| *t == want),
    })
}

/// Whether callers may receive different content from `m` (field read permissions, or
/// rows narrowed to their owner).
fn depends_on_caller(m: &ModelSpec) -> bool {
    m.fields.iter().any(|f| f.read_roles().is_some())
        || m.permissions.read.iter().any(|r| r == OWNER)
}

/// The `Cache-Control` of `m`'s get and list answers (None: not a `cache` model).
fn cache_control(m: &ModelSpec) -> Option<String> {
    let ttl = m.cache.as_ref()?.ttl;
    let shared = m.permissions.read.iter().any(|r| r == "public") && !depends_on_caller(m);
    let scope = if shared { "public" } else { "private" };
    Some(format!("{scope}, max-age={ttl}"))
}

/// Adds `etag` and the caching headers of `m` to a get or list answer.
pub(crate) fn decorate(r: Resp, m: &ModelSpec, etag: &str) -> Resp {
    decorate_with(r, m, HeaderValue::from_str(etag).ok())
}

/// [`decorate`], with the ETag as a header value (None: no `ETag`).
pub(crate) fn decorate_with(mut r: Resp, m: &ModelSpec, etag: Option<HeaderValue>) -> Resp {
    let headers = r.headers_mut();
    if let Some(etag) = etag {
        headers.insert(ETAG, etag);
    }
    if let Some(cc) = cache_control(m).and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(CACHE_CONTROL, cc);
    }
    if depends_on_caller(m) {
        headers.insert(VARY, HeaderValue::from_static("authorization"));
    }
    r
}

/// The 304 of a get or list whose `If-None-Match` names `etag`.
pub(crate) fn not_modified(m: &ModelSpec, etag: &str) -> Resp {
    decorate(respond::empty(304), m, etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_etag_is_the_same_as_text_and_as_a_header_value() {
        for version in [0, 1, 9, 10, 12_345, u64::MAX] {
            let value = record_etag_value(version);
            assert_eq!(value.to_str().ok(), Some(record_etag(version).as_str()));
            assert_eq!(value, format!("\"{version}\"").as_str());
        }
    }
}
