//! Where log lines go: a buffer shared by every thread, written to stderr by a thread of
//! its own, so a request never waits for a `write(2)`.
//!
//! A thread that logs appends its line to the buffer under a short lock; the log thread
//! takes the whole buffer at once and writes it with one call. It is woken only when a
//! line lands in an empty buffer while it waits, and after each write it lingers a few
//! milliseconds so that, under load, lines gather into large writes instead of waking it
//! once per line. A thread that logs never waits for the log thread (it may be a worker
//! of the async runtime): when [`MAX_PENDING`] bytes are already waiting, because stderr
//! does not keep up, the line is dropped and counted, and once the log thread has caught
//! up it logs a warning that says how many were lost. Dropping the [`Flusher`] writes
//! what is left.
//!
//! Lines of one thread keep their order; lines of different threads are written in the
//! order they took the lock.
//!
//! (`tracing-appender`'s non-blocking writer sends each line through a channel whose
//! receiver spins and yields while it waits; at tens of thousands of lines a second that
//! took several per cent of the process's CPU, measured in `bench/README.md`.)

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of lines waiting to be written beyond which new lines are dropped.
pub const MAX_PENDING: usize = 8 << 20;

/// How long the log thread waits after a write for more lines to gather.
const LINGER: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// The log thread waits for lines (a line into an empty buffer wakes it).
    idle: bool,
    /// The flusher was dropped: write what is left and stop.
    closing: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when lines arrive for an idle log thread, or at closing.
    arrived: Condvar,
    /// Lines dropped since the last warning about them.
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a thread logs into: cheap to clone, one per subscriber.
#[derive(Clone)]
pub struct Lines {
    shared: Arc<Shared>,
}

/// Keeps the log thread running; dropping it writes the lines still waiting and stops it.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer into a new log thread that writes to `out`, and warns through the process's
/// subscriber of the lines it dropped.
pub fn spawn<W: Write + Send + 'static>(out: W) -> std::io::Result<(Lines, Flusher)> {
    spawn_with(out, |dropped| {
        // Through the subscriber, so the warning has the log's format; it lands in the
        // buffer the log thread writes next.
        tracing::warn!(
            lines = dropped,
            "log lines dropped: stderr did not keep up ({MAX_PENDING} bytes were waiting)"
        );
    })
}

/// [`spawn`], telling `dropped` how many lines were dropped each time the log thread
/// catches up after dropping some.
fn spawn_with<W: Write + Send + 'static>(
    out: W,
    dropped: impl Fn(u64) + Send + 'static,
) -> std::io::Result<(Lines, Flusher)> {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("lithair-logs".into())
        .spawn({
            let shared = shared.clone();
            move || write_lines(&shared, out, dropped)
        })?;
    Ok((
        Lines {
            shared: shared.clone(),
        },
        Flusher {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The log thread: takes every waiting line at once, writes them, lingers, again.
fn write_lines<W: Write>(shared: &Shared, mut out: W, warn: impl Fn(u64)) {
    let mut spare = Vec::new();
    loop {
        let closing = {
            let mut p = shared.lock();
            while p.lines.is_empty() && !p.closing {
                p.idle = true;
                p = shared.arrived.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.idle = false;
            std::mem::swap(&mut p.lines, &mut spare);
            p.closing
        };
        // A log that cannot be written has nowhere to say so; the lines are dropped.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            warn(dropped);
        }
        if spare.capacity() > MAX_PENDING {
            spare = Vec::new();
        } else {
            spare.clear();
        }
        if closing && shared.lock().lines.is_empty() {
            return;
        }
        if !closing {
            std::thread::sleep(LINGER);
        }
    }
}

impl Lines {
    /// Appends `line` (whole lines, each ending in a newline).
    pub fn append(&self, line: &[u8]) {
        let mut p = self.shared.lock();
        if p.lines.len() >= MAX_PENDING {
            drop(p);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.lines.extend_from_slice(line);
        let wake = p.idle && p.lines.len() == line.len();
        drop(p);
        if wake {
            self.shared.arrived.notify_one();
        }
    }
}

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Flusher {
    /// A writer into its log thread.
    pub fn lines(&self) -> Lines {
        Lines {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.arrived.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::captured::Captured;

    #[test]
    fn every_line_of_every_thread_is_written_in_its_threads_order() {
        let out = Captured::default();
        let (lines, flusher) = spawn(out.clone()).expect("log thread");
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let mut lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let pad = if i % 1000 == 0 { 4096 } else { 0 };
                        let line = format!("{t} {i} {}\n", "x".repeat(pad));
                        lines.write_all(line.as_bytes()).expect("write");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        drop(flusher);
        let text = out.text();
        let mut next = [0u32; 4];
        for line in text.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().and_then(|p| p.parse().ok()).expect("thread");
            let i: u32 = parts.next().and_then(|p| p.parse().ok()).expect("index");
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    /// A destination that takes nothing until the test lets it, and says when a write
    /// first reached it.
    #[derive(Clone, Default)]
    struct Stuck {
        gate: Arc<(Mutex<Gate>, Condvar)>,
        out: Captured,
    }

    #[derive(Default)]
    struct Gate {
        open: bool,
        reached: bool,
    }

    impl Stuck {
        fn gate(&self) -> MutexGuard<'_, Gate> {
            self.gate.0.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Waits until a write reached the destination; false if none did within `limit`.
        fn reached(&self, limit: Duration) -> bool {
            let (gate, changed) = &*self.gate;
            let g = gate.lock().unwrap_or_else(|p| p.into_inner());
            let (g, _) = changed
                .wait_timeout_while(g, limit, |g| !g.reached)
                .unwrap_or_else(|p| p.into_inner());
            g.reached
        }

        fn open(&self) {
            self.gate().open = true;
            self.gate.1.notify_all();
        }
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (gate, changed) = &*self.gate;
            let mut g = gate.lock().unwrap_or_else(|p| p.into_inner());
            g.reached = true;
            changed.notify_all();
            while !g.open {
                g = changed.wait(g).unwrap_or_else(|p| p.into_inner());
            }
            drop(g);
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Opens the destination when dropped, so that a failed assertion unwinds into a
    /// flusher that can finish instead of waiting for the stuck write forever.
    struct OpenAtEnd(Stuck);

    impl Drop for OpenAtEnd {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    #[test]
    fn a_log_that_does_not_keep_up_drops_lines_instead_of_making_threads_wait() {
        let stuck = Stuck::default();
        let warned = Arc::new(AtomicU64::new(0));
        let (mut lines, flusher) = spawn_with(stuck.clone(), {
            let warned = warned.clone();
            move |n| {
                warned.fetch_add(n, Ordering::Relaxed);
            }
        })
        .expect("log thread");
        // Declared after the flusher: dropped (opened) first, also when a check fails.
        let _open_at_end = OpenAtEnd(stuck.clone());
        let line = [b'x'; 1023]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        // The log thread takes the first line and stays in its write.
        lines.write_all(&line).expect("write");
        assert!(
            stuck.reached(Duration::from_secs(30)),
            "the log thread never wrote"
        );
        // Then exactly MAX_PENDING bytes gather and the rest are dropped, without the
        // writing thread ever waiting (it runs apart so that a wait fails the test instead
        // of hanging it).
        let fill = MAX_PENDING / line.len() + 2000;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn({
            let mut lines = lines.clone();
            let line = line.clone();
            move || {
                for _ in 0..fill {
                    lines.write_all(&line).expect("write");
                }
                let _ = done.send(());
            }
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(60)).is_ok(),
            "a thread that logs waited for the stuck log"
        );
        let dropped = lines.shared.dropped.load(Ordering::Relaxed);
        assert_eq!(dropped, 2000, "lines dropped beyond {MAX_PENDING} bytes");
        stuck.open();
        drop(flusher);
        let written = stuck.out.text().lines().count() as u64;
        assert_eq!(written + dropped, 1 + fill as u64);
        assert_eq!(
            warned.load(Ordering::Relaxed),
            dropped,
            "the warning's count"
        );
    }

    #[test]
    fn a_line_into_an_idle_writer_is_written_without_waiting_for_more() {
        let out = Captured::default();
        let (mut lines, _flusher) = spawn(out.clone()).expect("log thread");
        for n in 1..=3 {
            // Let the log thread go idle first.
            std::thread::sleep(LINGER * 4);
            lines.write_all(b"one line\n").expect("write");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while out.text().len() < 9 * n {
                assert!(std::time::Instant::now() < deadline, "line {n} not written");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
