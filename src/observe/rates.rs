//! Rates for the live view: one-second samples of a torrent's byte totals, a smoothed rate for the
//! display and the ETA, and the last minute of samples for the sparkline.
//!
//! Owns: `RateHistory` (samples from byte totals and the times the driver gives), `eta`.
//! Must not: read the clock (every call takes `now`), or format anything.

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::{secs, Timestamp};

/// One sample per second is kept this long (the sparkline's width).
pub const HISTORY: usize = 60;
/// Samples closer together than this are not taken (the view redraws more often).
pub const SAMPLE_EVERY: Duration = secs(1);
/// The smoothed rate's time constant: a step in the real rate shows two-thirds of its size after this.
pub const SMOOTHING: Duration = secs(5);
/// An ETA longer than this says nothing: shown as unknown.
const MAX_ETA: Duration = secs(100 * 86_400);

/// A torrent's rates over time, from its downloaded and uploaded byte totals.
#[derive(Clone, Debug, Default)]
pub struct RateHistory {
    /// The time and totals of the last sample.
    last: Option<(Timestamp, u64, u64)>,
    down: f64,
    up: f64,
    /// Samples folded in so far (the first is taken as it is; the first few are averaged).
    taken: u32,
    /// (down, up) bytes per second, oldest first, at most `HISTORY`.
    samples: VecDeque<(f32, f32)>,
}

impl RateHistory {
    /// The totals at `now`: a sample once `SAMPLE_EVERY` has passed since the last one. Totals that go down
    /// (a torrent started again) count as nothing received.
    pub fn record(&mut self, now: Timestamp, downloaded: u64, uploaded: u64) {
        let Some((at, down0, up0)) = self.last else {
            self.last = Some((now, downloaded, uploaded));
            return;
        };
        let dt = now.saturating_since(at);
        if dt < SAMPLE_EVERY {
            return;
        }
        let secs = dt.as_secs_f64();
        let down = downloaded.saturating_sub(down0) as f64 / secs;
        let up = uploaded.saturating_sub(up0) as f64 / secs;
        self.last = Some((now, downloaded, uploaded));
        // Exponential smoothing over time, whatever the spacing of the samples; until there are enough samples
        // for that, the plain mean of those there are (a transfer that starts from nothing is not shown
        // creeping up for the first time constants).
        self.taken = self.taken.saturating_add(1);
        let alpha = (1.0 - (-secs / SMOOTHING.as_secs_f64()).exp()).max(1.0 / f64::from(self.taken));
        self.down += alpha * (down - self.down);
        self.up += alpha * (up - self.up);
        if self.samples.len() == HISTORY {
            self.samples.pop_front();
        }
        self.samples.push_back((down as f32, up as f32));
    }

    /// Smoothed bytes per second received and sent.
    pub fn down(&self) -> f64 {
        self.down
    }
    pub fn up(&self) -> f64 {
        self.up
    }

    /// The last minute of (down, up) samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = (f32, f32)> + '_ {
        self.samples.iter().copied()
    }
}

/// Time to receive `left` bytes at `rate` bytes per second; `None` when nothing is left, nothing is coming
/// in, or the answer would be meaningless (over 100 days).
pub fn eta(left: u64, rate: f64) -> Option<Duration> {
    if left == 0 || !rate.is_finite() || rate < 1.0 {
        return None;
    }
    let secs = left as f64 / rate;
    (secs < MAX_ETA.as_secs_f64()).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::millis;

    fn at(ms: u64) -> Timestamp {
        Timestamp::ZERO + millis(ms)
    }

    #[test]
    fn samples_come_once_a_second_from_byte_totals() {
        let mut h = RateHistory::default();
        h.record(at(0), 0, 0);
        h.record(at(500), 50_000, 0);
        assert_eq!(h.samples().len(), 0, "half a second is not a sample");
        h.record(at(1000), 100_000, 10_000);
        assert_eq!(h.samples().collect::<Vec<_>>(), vec![(100_000.0, 10_000.0)]);
        assert_eq!((h.down(), h.up()), (100_000.0, 10_000.0), "the first sample is taken as it is");
        // Two seconds later: the rate over those two seconds.
        h.record(at(3000), 300_000, 10_000);
        assert_eq!(h.samples().last(), Some((100_000.0, 0.0)));
    }

    #[test]
    fn smoothing_follows_a_step_with_its_time_constant_and_damps_a_spike() {
        let mut h = RateHistory::default();
        let mut total = 0;
        h.record(at(0), 0, 0);
        for s in 1..=30 {
            total += 1_000_000;
            h.record(at(s * 1000), total, 0);
        }
        assert!((h.down() - 1e6).abs() < 1.0, "a steady rate is shown as it is: {}", h.down());
        // A start from nothing: the mean of the first samples, not a slow climb.
        let mut start = RateHistory::default();
        start.record(at(0), 0, 0);
        start.record(at(1000), 0, 0);
        for s in 2..=4 {
            start.record(at(s * 1000), (s - 1) * 3_000_000, 0);
        }
        assert!((start.down() - 2.25e6).abs() < 1.0, "mean of 0, 3, 3, 3 MB/s: {}", start.down());
        // The rate steps to zero: after one time constant about a third is left.
        for s in 31..=35 {
            h.record(at(s * 1000), total, 0);
        }
        let left = h.down() / 1e6;
        assert!((left - (-1.0f64).exp()).abs() < 0.01, "after 5 s, {left} of the old rate");
        // A one-second spike of 100 MB/s moves the smoothed rate by under a fifth of it.
        let before = h.down();
        total += 100_000_000;
        h.record(at(36_000), total, 0);
        assert!(h.down() - before < 0.2 * 100e6, "{}", h.down());
        assert_eq!(h.samples().last(), Some((100e6, 0.0)), "the sparkline shows the spike itself");
    }

    #[test]
    fn history_keeps_the_last_minute_and_survives_totals_going_down() {
        let mut h = RateHistory::default();
        h.record(at(0), 0, 0);
        for s in 1..=100u64 {
            h.record(at(s * 1000), s * 10, 0);
        }
        assert_eq!(h.samples().len(), HISTORY);
        h.record(at(101_000), 0, 0);
        assert_eq!(h.samples().last(), Some((0.0, 0.0)), "a reset total is no negative rate");
    }

    #[test]
    fn eta_is_left_over_rate_and_unknown_when_meaningless() {
        assert_eq!(eta(10 << 20, 1024.0 * 1024.0), Some(secs(10)));
        assert_eq!(eta(0, 1e6), None, "nothing left");
        assert_eq!(eta(1000, 0.0), None, "nothing coming in");
        assert_eq!(eta(1000, 0.5), None, "under a byte a second");
        assert_eq!(eta(1000, f64::NAN), None);
        assert_eq!(eta(u64::MAX, 1.0), None, "longer than 100 days");
    }
}
