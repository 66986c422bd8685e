//! The clock of the pipeline's timings (each stage's time, a request's duration, the
//! spans of a trace): quanta's, which reads the CPU's time-stamp counter and scales it
//! (~9 ns a reading on this project's bench machine, against ~22 ns for
//! `std::time::Instant::now` through the vDSO; a GET by id takes over a dozen). Where the
//! counter cannot be trusted (not invariant across cores and sleep states) quanta reads
//! the operating system's monotonic clock instead. The first reading calibrates the
//! counter against that clock (at most 200 ms, typically 10–20 ms): [`calibrate`] takes
//! it at start-up rather than in the first request.

pub use quanta::Instant;

/// Reads the clock once, so that its calibration happens now.
pub fn calibrate() {
    let _ = Instant::now();
}
