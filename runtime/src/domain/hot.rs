//! The answers of the records a thread rendered last: a repeated GET of an unchanged
//! record is served from them instead of rendering its JSON again.
//!
//! Each thread keeps its own small table ([`SLOTS`] entries, direct-mapped by the
//! record's address), so a lookup takes no lock and touches no line another core writes.
//! A record's answer is kept at its second rendering in a row in its slot: reads spread
//! over more records than the table holds render each one, as they would without it, and
//! pay one comparison and one store more.
//! An entry holds the stored record it was rendered from: a record is immutable (a change
//! stores a new one), so the same record means the same JSON and version, and holding it
//! keeps its address from being reused by another while the entry lives. Only answers of
//! at most [`MAX_BYTES`] are kept, so a thread's table holds at most
//! `SLOTS * MAX_BYTES` of text (1 MiB) and `SLOTS` records; a table goes with its thread.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use super::row::Stored;

/// Entries per thread.
pub const SLOTS: usize = 256;

/// The longest answer kept (bytes of JSON); longer ones are rendered every time.
pub const MAX_BYTES: usize = 4096;

/// One rendered answer.
struct Entry {
    /// The record it was rendered from.
    record: Arc<Stored>,
    /// The fields it leaves out.
    hidden: Vec<String>,
    json: Bytes,
    version: u64,
}

/// One slot of a thread's table.
#[derive(Default)]
struct Slot {
    /// The answer kept.
    entry: Option<Entry>,
    /// The address of the record last rendered here and not kept. A record is kept at its
    /// second rendering in a row in its slot, so reads spread over many records (which
    /// would only push each other out) cost no more than a store.
    seen: usize,
}

thread_local! {
    static TABLE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// The slot of `record`'s address.
fn slot(record: &Arc<Stored>) -> usize {
    let address = Arc::as_ptr(record) as usize as u64;
    // Fibonacci hashing: the top bits of the product spread neighbouring addresses.
    (address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
}

/// The JSON text of `record` without the fields in `hidden`, and its version
/// ([`Stored::json_and_version`]), from this thread's table when it holds them.
pub fn json_and_version(record: &Arc<Stored>, hidden: &[String]) -> (Bytes, u64) {
    let at = slot(record);
    let address = Arc::as_ptr(record) as usize;
    let kept = TABLE
        .try_with(|t| {
            let t = t.borrow();
            let e = t.get(at)?.entry.as_ref()?;
            (Arc::ptr_eq(&e.record, record) && e.hidden == hidden)
                .then(|| (e.json.clone(), e.version))
        })
        .ok()
        .flatten();
    if let Some(answer) = kept {
        return answer;
    }
    let (json, version) = record.json_and_version(hidden);
    if json.len() <= MAX_BYTES {
        let _ = TABLE.try_with(|t| {
            let mut t = t.borrow_mut();
            if t.is_empty() {
                t.resize_with(SLOTS, Slot::default);
            }
            let slot = &mut t[at];
            if slot.seen != address {
                slot.seen = address;
                return;
            }
            slot.seen = 0;
            slot.entry = Some(Entry {
                record: record.clone(),
                hidden: hidden.to_vec(),
                json: json.clone(),
                version,
            });
        });
    }
    (json, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(name: &str, version: u64) -> Arc<Stored> {
        let spec = crate::spec::fixtures::item(
            r#"{"name": "name", "type": {"kind": "string"}},
               {"name": "secret", "type": {"kind": "string"}, "optional": true}"#,
        );
        let layout = super::super::row::Layout::of(spec.model("Item").expect("model"));
        let record = json!({"id": "00000000-0000-0000-0000-000000000001", "name": name,
            "secret": "s", "version": version});
        let record = record.as_object().expect("an object");
        Arc::new(Stored::encode(&layout, record))
    }

    #[test]
    fn a_kept_answer_is_the_rendered_one_and_a_changed_record_is_rendered_again() {
        let first = stored("a", 1);
        let hidden = vec!["secret".to_string()];
        let rendered = first.json_and_version(&[]);
        // Rendered twice (the second time kept), then answered from the table: the same
        // text, in the kept buffer.
        let once = json_and_version(&first, &[]);
        let twice = json_and_version(&first, &[]);
        let kept = json_and_version(&first, &[]);
        assert_eq!((&once, &twice, &kept), (&rendered, &rendered, &rendered));
        assert_ne!(once.0.as_ptr(), twice.0.as_ptr());
        assert_eq!(twice.0.as_ptr(), kept.0.as_ptr());
        // Another caller who may not see a field gets its own answer.
        let masked = json_and_version(&first, &hidden);
        assert_eq!(masked, first.json_and_version(&hidden));
        assert_eq!(json_and_version(&first, &hidden), masked);
        assert!(!String::from_utf8_lossy(&masked.0).contains("secret"));
        assert_eq!(json_and_version(&first, &[]), rendered);
        // A changed record is another stored record: rendered again.
        let second = stored("b", 2);
        let (json, version) = json_and_version(&second, &[]);
        assert_eq!(version, 2);
        assert!(String::from_utf8_lossy(&json).contains("\"name\":\"b\""));
    }

    #[test]
    fn an_answer_longer_than_the_limit_is_rendered_every_time() {
        let long = stored(&"x".repeat(MAX_BYTES), 1);
        let answers: Vec<_> = (0..3).map(|_| json_and_version(&long, &[])).collect();
        assert!(answers[0].0.len() > MAX_BYTES);
        assert!(answers.iter().all(|a| *a == answers[0]));
        // Never kept: each is a buffer of its own.
        assert_ne!(answers[1].0.as_ptr(), answers[2].0.as_ptr());
    }

    #[test]
    fn many_records_each_get_their_own_answer() {
        let records: Vec<_> = (0..SLOTS as u64 * 3)
            .map(|n| stored(&format!("r{n}"), n + 1))
            .collect();
        for _ in 0..2 {
            for r in &records {
                assert_eq!(json_and_version(r, &[]), r.json_and_version(&[]));
            }
        }
    }
}
