//! The clock of the pipeline's timings (each stage's time, a request's duration, the
//! spans of a trace): quanta's, which reads the CPU's time-stamp counter and scales it
//! (~9 ns a reading on this project's bench machine, against ~22 ns for
//! `std::time::Instant::now` through the vDSO; a GET by id takes over a dozen). Where the
//! counter cannot be trusted (not invariant across cores and sleep states) quanta reads
//! the operating system's monotonic clock instead. The first reading calibrates the
//! counter against that clock (at most 200 ms, typically 10–20 ms): [`calibrate`] takes
//! it at start-up rather than in the first request.
//!
//! The clock is one `quanta::Clock` of the process, read directly: `quanta::Instant::now`
//! first looks for a thread's mock clock (a thread-local cell) at every reading.

use std::sync::LazyLock;
use std::time::Duration;

/// The process's clock.
static CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// A point in time on the process's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(quanta::Instant);

impl Instant {
    /// Now.
    #[inline]
    pub fn now() -> Instant {
        Instant(CLOCK.now())
    }

    /// The time since `self` (zero if `self` is later).
    #[inline]
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(*self)
    }

    /// The time from `earlier` to `self` (zero if `earlier` is later).
    #[inline]
    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        self.0.saturating_duration_since(earlier.0)
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, d: Duration) -> Instant {
        Instant(self.0 + d)
    }
}

impl std::ops::Sub<Instant> for Instant {
    type Output = Duration;

    /// The time from `earlier` to `self` (zero if `earlier` is later).
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// Reads the clock once, so that its calibration happens now.
pub fn calibrate() {
    let _ = Instant::now();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_forward_with_the_systems() {
        let started = Instant::now();
        let system = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let ours = started.elapsed();
        let theirs = system.elapsed();
        assert!(ours >= Duration::from_millis(19), "{ours:?}");
        assert!(
            ours <= theirs + Duration::from_millis(5),
            "{ours:?} against {theirs:?}"
        );
        assert_eq!(
            started.saturating_duration_since(Instant::now()),
            Duration::ZERO
        );
        assert!(started + Duration::from_millis(1) > started);
    }
}
