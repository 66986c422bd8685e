//! A Prometheus histogram whose observations take no lock.
//!
//! `prometheus-client`'s histogram takes a write lock for every observation. A request
//! observes several (each stage's time, its own duration), from every worker thread at
//! once, so the lock was one of the hottest symbols of a GET's profile. Here each bucket,
//! the count and the sum are atomics: an observation is three atomic additions (the sum a
//! compare-and-swap of its bits). A scrape reads them one after the other, so it may see
//! an observation in the count and not yet in its bucket; the next scrape is whole again,
//! which is what Prometheus's own clients give too.
//!
//! It encodes itself through `prometheus-client` ([`EncodeMetric`]), so families and the
//! registry take it as they take theirs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

pub use prometheus_client::metrics::histogram::exponential_buckets;

/// A histogram; clones share their observations.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Each bucket's upper bound, ascending; the last is `f64::MAX` (+Inf).
    bounds: Box<[f64]>,
    /// Observations per bucket (not cumulative).
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum's `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with the buckets' upper bounds `bounds` (ascending), and +Inf.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Histogram {
        let bounds: Box<[f64]> = bounds
            .into_iter()
            .chain(std::iter::once(f64::MAX))
            .collect();
        let counts = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Histogram {
            inner: Arc::new(Inner {
                bounds,
                counts,
                count: AtomicU64::new(0),
                sum: AtomicU64::new(0f64.to_bits()),
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
        i.counts[at].fetch_add(1, Ordering::Relaxed);
        i.count.fetch_add(1, Ordering::Relaxed);
        let _ = i
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// The sum, the count and each bucket's (upper bound, observations) now.
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let i = &self.inner;
        let buckets = i
            .bounds
            .iter()
            .zip(i.counts.iter())
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        (
            f64::from_bits(i.sum.load(Ordering::Relaxed)),
            i.count.load(Ordering::Relaxed),
            buckets,
        )
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
            vec![(1.0, per(2)), (10.0, per(9)), (100.0, per(90)), (f64::MAX, per(99))]
        );
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
