//! A linearizability checker for histories of client operations on records, in the style
//! of Knossos and Porcupine: the Wing & Gong search with Lowe's memoisation (WGL).
//!
//! Each record is a register holding `(version, value)` or nothing; records are checked
//! one by one (linearizability is compositional). An operation has an invoke and a
//! completion time as the client saw them; one that got no definite answer (a timeout, a
//! 503 whose outcome is unknown, a broken connection) is *unknown*: it may have taken
//! effect at any point after its invoke, or never.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// A record's state: its version and the value the test writes.
pub type State = Option<(u64, String)>;

/// What an operation did, as the client saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Created the record with `value` (version 1).
    Create { value: String },
    /// A linearizable read saw `seen`.
    Read { seen: State },
    /// An update with `If-Match: expect` to `value`: `Some(true)` 2xx, `Some(false)` 412,
    /// `None` unknown.
    Update {
        expect: u64,
        value: String,
        ok: Option<bool>,
    },
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Event {
    /// The record.
    pub key: String,
    /// What it did.
    pub op: Op,
    /// When the client sent it.
    pub invoke: Instant,
    /// When the answer came (None: unknown outcome).
    pub complete: Option<Instant>,
}

/// A history being recorded by many client threads.
#[derive(Default)]
pub struct History {
    events: std::sync::Mutex<Vec<Event>>,
}

impl History {
    /// Records one operation.
    pub fn record(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    /// Everything recorded.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// Applies `op` to `state`: the new state, or None when `op` could not have seen `state`.
fn step(state: &State, op: &Op) -> Option<State> {
    match op {
        Op::Create { value } => state.is_none().then(|| Some((1, value.clone()))),
        Op::Read { seen } => (seen == state).then(|| state.clone()),
        Op::Update { expect, value, ok } => {
            let matches = matches!(state, Some((v, _)) if v == expect);
            match ok {
                Some(true) => matches.then(|| Some((expect + 1, value.clone()))),
                Some(false) => (state.is_some() && !matches).then(|| state.clone()),
                // Unknown: had it matched, it took effect; otherwise it changed nothing.
                None if matches => Some(Some((expect + 1, value.clone()))),
                None => Some(state.clone()),
            }
        }
    }
}

/// Checks every record's history; answers the first record that is not linearizable,
/// with its operations.
pub fn check(events: &[Event]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(&e.key).or_default().push(e);
    }
    for (key, ops) in by_key {
        if !linearizable(&ops) {
            let mut shown = String::new();
            let t0 = ops.iter().map(|o| o.invoke).min().unwrap();
            for o in &ops {
                shown.push_str(&format!(
                    "\n  {:>8.3} .. {:>8} {:?}",
                    (o.invoke - t0).as_secs_f64(),
                    o.complete
                        .map(|c| format!("{:.3}", (c - t0).as_secs_f64()))
                        .unwrap_or_else(|| "?".into()),
                    o.op
                ));
            }
            return Err(format!(
                "record {key}: no linearization of {} operations:{shown}",
                ops.len()
            ));
        }
    }
    Ok(())
}

/// Most states the search visits for one record before it gives up (a test bug, not a
/// verdict).
const SEARCH_LIMIT: usize = 2_000_000;

/// The WGL search over one record's operations.
fn linearizable(ops: &[&Event]) -> bool {
    let n = ops.len();
    // Completion as an order: unknown outcomes complete after everything.
    let done = |i: usize| ops[i].complete;
    let words = n.div_ceil(64).max(1);
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    // Depth-first: (linearized set, state).
    let mut stack: Vec<(Vec<u64>, State)> = vec![(vec![0; words], None)];
    let is_set = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    while let Some((set, state)) = stack.pop() {
        // Done once every operation with a definite answer is linearized (unknown ones
        // may never have happened).
        if (0..n).all(|i| is_set(&set, i) || done(i).is_none()) {
            return true;
        }
        if !seen.insert((set.clone(), state.clone())) {
            continue;
        }
        assert!(
            seen.len() < SEARCH_LIMIT,
            "the linearizability search passed {SEARCH_LIMIT} states; record fewer operations"
        );
        // An operation can go next if none still pending completed before it began.
        let horizon = (0..n).filter(|i| !is_set(&set, *i)).filter_map(done).min();
        for i in 0..n {
            if is_set(&set, i) || horizon.is_some_and(|h| h < ops[i].invoke) {
                continue;
            }
            if let Some(next) = step(&state, &ops[i].op) {
                // An unknown operation that would change nothing is the same as one that
                // never happened: it is left out, which keeps the search small.
                if done(i).is_none() && next == state {
                    continue;
                }
                let mut s = set.clone();
                s[i / 64] |= 1 << (i % 64);
                stack.push((s, next));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An event on record "r" from `a` to `b` (ms after a common start; None: unknown).
    fn ev(t0: Instant, a: u64, b: Option<u64>, op: Op) -> Event {
        Event {
            key: "r".into(),
            op,
            invoke: t0 + Duration::from_millis(a),
            complete: b.map(|b| t0 + Duration::from_millis(b)),
        }
    }

    fn read(v: u64, s: &str) -> Op {
        Op::Read {
            seen: Some((v, s.into())),
        }
    }

    fn update(expect: u64, value: &str, ok: Option<bool>) -> Op {
        Op::Update {
            expect,
            value: value.into(),
            ok,
        }
    }

    fn create(v: &str) -> Op {
        Op::Create { value: v.into() }
    }

    #[test]
    fn a_sequential_history_passes() {
        let t = Instant::now();
        let h = vec![
            ev(t, 0, Some(10), create("a")),
            ev(t, 20, Some(30), read(1, "a")),
            ev(t, 40, Some(50), update(1, "b", Some(true))),
            ev(t, 60, Some(70), update(1, "c", Some(false))),
            ev(t, 80, Some(90), read(2, "b")),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn overlapping_operations_may_take_either_order() {
        let t = Instant::now();
        let h = vec![
            ev(t, 0, Some(10), create("a")),
            // The read overlaps the update: it may see either version.
            ev(t, 20, Some(60), update(1, "b", Some(true))),
            ev(t, 30, Some(40), read(1, "a")),
            ev(t, 35, Some(50), read(2, "b")),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_stale_read_after_an_update_completed_is_rejected() {
        let t = Instant::now();
        let h = vec![
            ev(t, 0, Some(10), create("a")),
            ev(t, 20, Some(30), update(1, "b", Some(true))),
            ev(t, 40, Some(50), read(1, "a")),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn two_updates_from_the_same_version_cannot_both_succeed() {
        let t = Instant::now();
        let h = vec![
            ev(t, 0, Some(10), create("a")),
            ev(t, 20, Some(40), update(1, "b", Some(true))),
            ev(t, 25, Some(45), update(1, "c", Some(true))),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn an_unknown_update_may_or_may_not_have_happened() {
        let t = Instant::now();
        let took = vec![
            ev(t, 0, Some(10), create("a")),
            ev(t, 20, None, update(1, "b", None)),
            ev(t, 100, Some(110), read(2, "b")),
        ];
        assert_eq!(check(&took), Ok(()));
        let never = vec![
            ev(t, 0, Some(10), create("a")),
            ev(t, 20, None, update(1, "b", None)),
            ev(t, 100, Some(110), read(1, "a")),
        ];
        assert_eq!(check(&never), Ok(()));
        // But not both: once seen, it cannot be undone.
        let both = vec![
            ev(t, 0, Some(10), create("a")),
            ev(t, 20, None, update(1, "b", None)),
            ev(t, 100, Some(110), read(2, "b")),
            ev(t, 120, Some(130), read(1, "a")),
        ];
        assert!(check(&both).is_err());
    }

    #[test]
    fn a_long_concurrent_history_with_unknowns_is_checked_quickly() {
        // Four clients, 2,000 operations, every tenth update unknown.
        let t = Instant::now();
        let mut h = vec![ev(t, 0, Some(1), create("v0"))];
        let mut version = 1;
        for round in 0..500u64 {
            let at = 10 + round * 10;
            for c in 0..4u64 {
                let op = if c == 0 {
                    version += 1;
                    update(version - 1, &format!("r{round}"), Some(true))
                } else if c == 1 && round % 10 == 0 {
                    update(version - 1, "lost", None)
                } else if c == 1 {
                    update(version - 1, "late", Some(false))
                } else {
                    // Concurrent with the update: either version is fine.
                    let seen = if c == 2 { version - 1 } else { version };
                    let value = if seen == 1 {
                        "v0".to_string()
                    } else if seen == version {
                        format!("r{round}")
                    } else {
                        format!("r{}", round - 1)
                    };
                    Op::Read {
                        seen: Some((seen, value)),
                    }
                };
                let done = (op != update(version - 1, "lost", None)).then_some(at + 8);
                h.push(ev(t, at + c, done, op));
            }
        }
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_412_needs_another_version() {
        let t = Instant::now();
        let h = vec![
            ev(t, 0, Some(10), create("a")),
            ev(t, 20, Some(30), update(1, "b", Some(false))),
        ];
        assert!(check(&h).is_err());
    }
}
