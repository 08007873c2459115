//! Waking from sleep. The monotonic clock stops while the machine sleeps (macOS's
//! `Instant` and Linux's `CLOCK_MONOTONIC` both do) but the wall clock does not, so a
//! wall-clock step much larger than the monotonic one between two ticks means the machine
//! slept. On wake the cooldowns that were our own caution (transient failures, 429s
//! without a hint) end at once, while the provider's own waits still in the future (a
//! Retry-After, a daily bench, a billing pause) stay; one info line says so.
//!
//! [`Detector`] is pure (both clocks are passed in); [`start`] is the thin task around it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::engine::Engine;

/// How often the clocks are compared.
pub const TICK: Duration = Duration::from_secs(15);

/// A wall-clock lead over the monotonic clock beyond this means the machine slept.
pub const JUMP: Duration = Duration::from_secs(60);

/// Compares successive readings of both clocks.
#[derive(Debug, Clone, Copy)]
pub struct Detector {
    mono: Instant,
    wall: DateTime<Utc>,
}

impl Detector {
    /// Starts from one reading of both clocks.
    pub fn new(mono: Instant, wall: DateTime<Utc>) -> Detector {
        Detector { mono, wall }
    }

    /// Takes a new reading; `Some(how long it slept)` when the wall clock moved more
    /// than [`JUMP`] further than the monotonic clock since the last one. A wall clock
    /// set back is not a sleep.
    pub fn observe(&mut self, mono: Instant, wall: DateTime<Utc>) -> Option<Duration> {
        let mono_step = mono.saturating_duration_since(self.mono);
        let wall_step = (wall - self.wall).to_std().unwrap_or(Duration::ZERO);
        self.mono = mono;
        self.wall = wall;
        let slept = wall_step.saturating_sub(mono_step);
        (slept > JUMP).then_some(slept)
    }
}

/// What a wake did, for the log line.
fn wake_line(slept: Duration, freed: usize) -> String {
    let mins = slept.as_secs().div_ceil(60);
    format!(
        "the machine slept for about {mins} min; {freed} key{} back from transient cooldowns (provider-set waits kept)",
        if freed == 1 { " is" } else { "s are" }
    )
}

/// Watches for wakes until the returned task is aborted (at shutdown).
pub fn start(engine: &Engine) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut detector = Detector::new(Instant::now(), Utc::now());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(slept) = detector.observe(Instant::now(), Utc::now()) {
                let freed = engine.pool.woke(Utc::now());
                tracing::info!("{}", wake_line(slept, freed));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_that_runs_ahead_of_the_monotonic_one_is_a_sleep() {
        let t0 = Instant::now();
        let w0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let mut d = Detector::new(t0, w0);
        // An ordinary tick: both clocks moved 15 s.
        let t1 = t0 + TICK;
        let w1 = w0 + chrono::Duration::seconds(15);
        assert_eq!(d.observe(t1, w1), None);
        // The lid was closed for an hour: 15 s of monotonic time, an hour of wall time.
        let t2 = t1 + TICK;
        let w2 = w1 + chrono::Duration::seconds(3600 + 15);
        assert_eq!(d.observe(t2, w2), Some(Duration::from_secs(3600)));
        // The next tick is ordinary again.
        assert_eq!(
            d.observe(t2 + TICK, w2 + chrono::Duration::seconds(15)),
            None
        );
    }

    #[test]
    fn small_drift_and_a_clock_set_back_are_not_sleeps() {
        let t0 = Instant::now();
        let w0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let mut d = Detector::new(t0, w0);
        // NTP nudging the wall clock by 30 s is no sleep.
        assert_eq!(
            d.observe(t0 + TICK, w0 + chrono::Duration::seconds(45)),
            None
        );
        // Nor is a wall clock set back an hour.
        assert_eq!(
            d.observe(
                t0 + TICK * 2,
                w0 + chrono::Duration::seconds(45) - chrono::Duration::hours(1)
            ),
            None
        );
    }

    #[test]
    fn the_wake_line_counts_the_keys_it_freed() {
        assert_eq!(
            wake_line(Duration::from_secs(3600), 2),
            "the machine slept for about 60 min; 2 keys are back from transient cooldowns (provider-set waits kept)"
        );
        assert!(wake_line(Duration::from_secs(61), 1).contains("2 min; 1 key is back"));
    }
}
