//! A Prometheus histogram whose observations take no lock, and no atomic
//! read-modify-write on the hot path.
//!
//! `prometheus-client`'s histogram takes a write lock for every observation. A request
//! observes several (each timed stage, its own duration), from every worker thread at
//! once. Here the buckets, the count and the sum are kept in stripes, one per thread: a
//! thread takes a stripe at its first observation and gives it back when it ends. Nobody
//! else writes a thread's stripe, so an observation is three plain loads and stores on
//! cache lines no other core writes: no locked instruction, no line pulled between the
//! workers' cores (both were measured on a GET's profile). Threads beyond the stripes
//! (four per core) share the last one, with atomic additions. A scrape adds the stripes
//! up, one after the other, so it may see an observation in the count and not yet in its
//! bucket; the next scrape is whole again, which is what Prometheus's own clients give
//! too.
//!
//! It encodes itself through `prometheus-client` ([`EncodeMetric`]), so families and the
//! registry take it as they take theirs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

pub use prometheus_client::metrics::histogram::exponential_buckets;

/// A histogram; clones share their observations.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<Inner>,
}

/// Atomics per cache line (a line is taken as 128 bytes: two 64-byte lines, which the
/// adjacent-line prefetcher of x86 moves together).
const PER_LINE: usize = 16;

/// One cache line of atomics.
#[derive(Debug)]
#[repr(align(128))]
struct Line([AtomicU64; PER_LINE]);

#[derive(Debug)]
struct Inner {
    /// Each bucket's upper bound, ascending; the last is `f64::MAX` (+Inf).
    bounds: Box<[f64]>,
    /// The stripes, each `lines` lines long: observations per bucket (not cumulative),
    /// then the count, then the sum's `f64` bits.
    stripes: Box<[Line]>,
    /// Lines per stripe.
    lines: usize,
}

/// How many stripes a histogram has: four per core (at least 4, at most 64), the last
/// shared by the threads that found no stripe of their own.
fn stripes() -> usize {
    static STRIPES: OnceLock<usize> = OnceLock::new();
    *STRIPES.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 4).clamp(4, 64)
    })
}

/// The stripes no living thread holds (given back by threads that ended).
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The stripes never given yet start here.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A thread's own stripe, given back when the thread ends.
struct Own(usize);

impl Own {
    /// A stripe no other living thread holds, if one is left.
    fn take() -> Option<Own> {
        let shared = stripes() - 1;
        if let Some(s) = FREE.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Some(Own(s));
        }
        let s = NEXT
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < shared).then_some(n + 1)
            })
            .ok()?;
        Some(Own(s))
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        FREE.lock().unwrap_or_else(|p| p.into_inner()).push(self.0);
    }
}

thread_local! {
    /// The current thread's stripe (None: it found none of its own).
    static MINE: Option<Own> = Own::take();
}

/// Where the current thread adds its observations.
#[derive(Clone, Copy)]
enum Stripe {
    /// Its own: nobody else writes it, so an addition is a load and a store.
    Own(usize),
    /// The last stripe, shared: an addition is an atomic one.
    Shared,
}

/// The current thread's stripe.
fn my_stripe() -> Stripe {
    MINE.try_with(|m| m.as_ref().map_or(Stripe::Shared, |o| Stripe::Own(o.0)))
        .unwrap_or(Stripe::Shared)
}

impl Stripe {
    /// Its index.
    fn index(self) -> usize {
        match self {
            Stripe::Own(s) => s,
            Stripe::Shared => stripes() - 1,
        }
    }

    /// Adds to `slot` of this stripe with `add`.
    fn add(self, slot: &AtomicU64, add: impl Fn(u64) -> u64) {
        match self {
            // No other thread writes this stripe (a stripe changes hands through the
            // `FREE` lock, which orders the last owner's stores before the next one's
            // loads), and a scrape only reads it.
            Stripe::Own(_) => slot.store(add(slot.load(Ordering::Relaxed)), Ordering::Relaxed),
            Stripe::Shared => {
                let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(add(v)));
            }
        }
    }
}

impl Inner {
    /// Slot `i` of stripe `s`.
    fn slot(&self, s: usize, i: usize) -> &AtomicU64 {
        &self.stripes[s * self.lines + i / PER_LINE].0[i % PER_LINE]
    }

    /// The count's slot (the sum's is the next).
    fn count_at(&self) -> usize {
        self.bounds.len()
    }
}

impl Histogram {
    /// A histogram with the buckets' upper bounds `bounds` (ascending), and +Inf.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .collect();
        // The buckets, the count and the sum.
        let lines = (bounds.len() + 2).div_ceil(PER_LINE);
        let stripes = (0..lines * stripes())
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        // Every stripe's sum starts at 0.0, whose bits are 0.
        debug_assert_eq!(0f64.to_bits(), 0);
        Histogram {
            inner: Arc::new(Inner {
                bounds,
                stripes,
                lines,
            }),
        }
    }

    /// Observes `v`.
    pub fn observe(&self, v: f64) {
        let i = &self.inner;
        // The first bucket whose bound is at least `v` (a NaN goes to +Inf).
        let at = i
            .bounds
            .iter()
            .position(|b| *b >= v)
            .unwrap_or(i.bounds.len() - 1);
        let stripe = my_stripe();
        let s = stripe.index();
        stripe.add(i.slot(s, at), |n| n + 1);
        stripe.add(i.slot(s, i.count_at()), |n| n + 1);
        stripe.add(i.slot(s, i.count_at() + 1), |bits| {
            (f64::from_bits(bits) + v).to_bits()
        });
    }

    /// The sum, the count and each bucket's (upper bound, observations) now.
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let i = &self.inner;
        let mut buckets: Vec<(f64, u64)> = i.bounds.iter().map(|b| (*b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for s in 0..stripes() {
            for (at, bucket) in buckets.iter_mut().enumerate() {
                bucket.1 += i.slot(s, at).load(Ordering::Relaxed);
            }
            count += i.slot(s, i.count_at()).load(Ordering::Relaxed);
            sum += f64::from_bits(i.slot(s, i.count_at() + 1).load(Ordering::Relaxed));
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_from_many_threads_all_count() {
        let h = Histogram::new([1.0, 10.0, 100.0]);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for n in 0..10_000 {
                        h.observe(f64::from((n + t) % 200));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer");
        }
        let (sum, count, buckets) = h.get();
        assert_eq!(count, 40_000);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 40_000);
        let expected: f64 = (0..4)
            .flat_map(|t| (0..10_000).map(move |n| f64::from((n + t) % 200)))
            .sum();
        assert_eq!(sum, expected);
        // Values 0..=1, 2..=10, 11..=100, the rest: 2, 9, 90 and 99 of every 200.
        let per = |share: u64| share * 40_000 / 200;
        assert_eq!(
            buckets,
            vec![
                (1.0, per(2)),
                (10.0, per(9)),
                (100.0, per(90)),
                (f64::MAX, per(99))
            ]
        );
    }

    #[test]
    fn more_threads_than_stripes_and_ended_threads_count_every_observation() {
        let h = Histogram::new([1.0]);
        // More threads at once than there are stripes: some share the last one.
        let at_once = stripes() + 8;
        let barrier = Arc::new(std::sync::Barrier::new(at_once));
        let threads: Vec<_> = (0..at_once)
            .map(|_| {
                let (h, barrier) = (h.clone(), barrier.clone());
                std::thread::spawn(move || {
                    h.observe(0.5);
                    // Every thread holds its stripe (or the shared one) at once.
                    barrier.wait();
                    for _ in 0..1_000 {
                        h.observe(2.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("observer");
        }
        // Threads one after another: each takes a stripe an ended thread gave back.
        for _ in 0..stripes() * 2 {
            let h = h.clone();
            std::thread::spawn(move || h.observe(0.5))
                .join()
                .expect("observer");
        }
        let (sum, count, buckets) = h.get();
        let ones = (at_once + stripes() * 2) as u64;
        let twos = at_once as u64 * 1_000;
        assert_eq!(count, ones + twos);
        assert_eq!(buckets, vec![(1.0, ones), (f64::MAX, twos)]);
        assert_eq!(sum, ones as f64 * 0.5 + twos as f64 * 2.0);
    }

    #[test]
    fn it_encodes_as_prometheus_clients_own_histogram() {
        use prometheus_client::registry::Registry;
        let ours = Histogram::new([0.5, 2.0]);
        let theirs = prometheus_client::metrics::histogram::Histogram::new([0.5, 2.0]);
        for v in [0.1, 0.5, 0.7, 3.0, 2.0] {
            ours.observe(v);
            theirs.observe(v);
        }
        fn text(h: impl prometheus_client::registry::Metric) -> String {
            let mut registry = Registry::default();
            registry.register("lithair_test_seconds", "A test.", h);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
            out
        }
        assert_eq!(text(ours), text(theirs));
    }
}
