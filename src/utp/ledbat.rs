//! LEDBAT congestion control and the RTT estimator of one uTP connection (BEP 29, "congestion control";
//! RFC 6817), tuned as libutp does.
//!
//! Owns: the congestion window (bytes), slow start, the one-way delay history (base delay over a few
//! minutes, the last few samples), the smoothed RTT, its variance and the retransmission time-out.
//! Must not: send, buffer or know sequence numbers: `conn.rs` tells it what was acked, lost or timed out.

use std::time::Duration;

use crate::time::{millis, secs, Timestamp};

/// LEDBAT's target queueing delay (BEP 29: 100 ms).
pub const TARGET_DELAY_US: u32 = 100_000;
/// Most the window grows per RTT when the delay is zero (libutp's `MAX_CWND_INCREASE_BYTES_PER_RTT`).
const MAX_CWND_INCREASE_PER_RTT: f64 = 3000.0;
/// Leave slow start once the queueing delay reaches this fraction of the target (as libtorrent).
const SLOW_START_EXIT_US: u32 = TARGET_DELAY_US * 9 / 10;
/// The base delay is the minimum over this many buckets of [`BASE_BUCKET`] each (about 3-4 minutes).
const BASE_BUCKETS: usize = 4;
const BASE_BUCKET: Duration = secs(60);
/// The current delay is the minimum of the last this many samples (libutp's `CUR_DELAY_SIZE`).
const RECENT_SAMPLES: usize = 3;
/// The RTO floor (BEP 29: `max(rtt + rtt_var * 4, 500 ms)`).
pub const MIN_RTO: Duration = millis(500);
/// The RTO before any RTT sample (and for the SYN), as libutp.
pub const INITIAL_RTO: Duration = secs(1);
/// The back-off cap.
pub const MAX_RTO: Duration = secs(60);

/// Wrapping-clock "a < b" for the µs timestamps of two unsynchronised clocks.
fn wrapping_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Clone, Debug)]
pub struct Ledbat {
    /// The congestion window in bytes; `min_cwnd..=max_cwnd`.
    cwnd: u32,
    min_cwnd: u32,
    max_cwnd: u32,
    slow_start: bool,
    /// Minimum delay sample per bucket, newest at `bucket`; `None` until a sample lands in it.
    base: [Option<u32>; BASE_BUCKETS],
    bucket: usize,
    bucket_until: Timestamp,
    recent: [Option<u32>; RECENT_SAMPLES],
    recent_at: usize,
    /// The last queueing delay computed (µs), for tests and stats.
    last_queueing_us: u32,
}

impl Ledbat {
    /// `packet` is the largest payload: the window never shrinks below it.
    pub fn new(now: Timestamp, packet: u32, max_cwnd: u32) -> Self {
        Ledbat {
            cwnd: packet * 2,
            min_cwnd: packet,
            max_cwnd: max_cwnd.max(packet * 2),
            slow_start: true,
            base: [None; BASE_BUCKETS],
            bucket: 0,
            bucket_until: now + BASE_BUCKET,
            recent: [None; RECENT_SAMPLES],
            recent_at: 0,
            last_queueing_us: 0,
        }
    }

    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    pub fn queueing_delay_us(&self) -> u32 {
        self.last_queueing_us
    }

    fn base_delay(&self) -> Option<u32> {
        self.base.iter().flatten().copied().reduce(|a, b| if wrapping_lt(b, a) { b } else { a })
    }

    /// One one-way delay sample (the peer's `timestamp_difference`, a difference of two clocks: only
    /// differences between samples mean anything).
    pub fn on_delay_sample(&mut self, now: Timestamp, sample: u32) {
        while now >= self.bucket_until {
            self.bucket = (self.bucket + 1) % BASE_BUCKETS;
            self.base[self.bucket] = None;
            self.bucket_until = self.bucket_until + BASE_BUCKET;
            if now >= self.bucket_until + BASE_BUCKET * BASE_BUCKETS as u32 {
                // Long silence: start the history afresh rather than spinning through it.
                self.base = [None; BASE_BUCKETS];
                self.bucket_until = now + BASE_BUCKET;
            }
        }
        let slot = &mut self.base[self.bucket];
        if slot.map_or(true, |b| wrapping_lt(sample, b)) {
            *slot = Some(sample);
        }
        self.recent[self.recent_at] = Some(sample);
        self.recent_at = (self.recent_at + 1) % RECENT_SAMPLES;
    }

    /// The queueing delay now: the least recent sample above the base delay.
    fn queueing_delay(&self) -> Option<u32> {
        let base = self.base_delay()?;
        let current = self.recent.iter().flatten().copied().reduce(|a, b| if wrapping_lt(b, a) { b } else { a })?;
        let q = current.wrapping_sub(base) as i32;
        Some(q.max(0) as u32)
    }

    /// `acked` bytes newly acknowledged; `window_limited` when the sender had filled the window (the
    /// window only grows when it was the limit, as libtorrent's `cwnd_full`).
    pub fn on_ack(&mut self, acked: u32, window_limited: bool) {
        if acked == 0 {
            return;
        }
        let Some(queueing) = self.queueing_delay() else {
            return;
        };
        self.last_queueing_us = queueing;
        let cwnd = f64::from(self.cwnd);
        let acked_f = f64::from(acked);
        // libutp's gain: the window moves by at most MAX_CWND_INCREASE_PER_RTT per RTT, scaled by how far
        // the delay is off target (negative above it) and by the share of the window this ACK covers.
        let delay_factor = (f64::from(TARGET_DELAY_US) - f64::from(queueing)) / f64::from(TARGET_DELAY_US);
        let window_factor = acked_f.min(cwnd) / acked_f.max(cwnd);
        let mut gain = MAX_CWND_INCREASE_PER_RTT * window_factor * delay_factor.max(-1.0);
        if self.slow_start {
            if queueing > SLOW_START_EXIT_US {
                self.slow_start = false;
            } else {
                gain = gain.max(acked_f);
            }
        }
        if gain > 0.0 && !window_limited {
            return;
        }
        let next = (cwnd + gain).clamp(f64::from(self.min_cwnd), f64::from(self.max_cwnd));
        self.cwnd = next as u32;
    }

    /// A packet was lost (3 duplicate ACKs or a SACK hole): halve, once per window (the caller checks).
    pub fn on_loss(&mut self) {
        self.slow_start = false;
        self.cwnd = (self.cwnd / 2).max(self.min_cwnd);
    }

    /// A retransmission time-out: back to one packet.
    pub fn on_timeout(&mut self) {
        self.slow_start = false;
        self.cwnd = self.min_cwnd;
    }
}

/// Smoothed RTT and variance (RFC 6298 gains, as BEP 29), and the back-off.
#[derive(Clone, Debug, Default)]
pub struct Rtt {
    srtt_us: Option<u64>,
    var_us: u64,
    /// Doublings since the last ACK that advanced.
    backoff: u32,
}

impl Rtt {
    pub fn sample(&mut self, rtt: Duration) {
        let s = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
        match self.srtt_us {
            None => {
                self.srtt_us = Some(s);
                self.var_us = s / 2;
            }
            Some(srtt) => {
                self.var_us = (self.var_us * 3 + srtt.abs_diff(s)) / 4;
                self.srtt_us = Some((srtt * 7 + s) / 8);
            }
        }
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt_us.map(Duration::from_micros)
    }

    /// `max(rtt + 4·rtt_var, 500 ms)` doubled per back-off, at most [`MAX_RTO`].
    pub fn rto(&self) -> Duration {
        let base = match self.srtt_us {
            None => INITIAL_RTO,
            Some(srtt) => Duration::from_micros(srtt + 4 * self.var_us).max(MIN_RTO),
        };
        base.saturating_mul(1 << self.backoff.min(16)).min(MAX_RTO)
    }

    pub fn back_off(&mut self) {
        self.backoff = (self.backoff + 1).min(16);
    }

    pub fn reset_backoff(&mut self) {
        self.backoff = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rto_has_a_500ms_floor_and_doubles_on_back_off() {
        let mut rtt = Rtt::default();
        assert_eq!(rtt.rto(), INITIAL_RTO);
        rtt.sample(millis(20));
        assert_eq!(rtt.rto(), MIN_RTO);
        for _ in 0..20 {
            rtt.sample(millis(400));
        }
        let rto = rtt.rto();
        assert!(rto > millis(400) && rto < millis(700), "{rto:?}");
        rtt.back_off();
        assert_eq!(rtt.rto(), rto * 2);
        rtt.reset_backoff();
        assert_eq!(rtt.rto(), rto);
    }

    #[test]
    fn window_grows_below_target_and_shrinks_above_it() {
        let t = Timestamp::ZERO;
        let mut cc = Ledbat::new(t, 1000, 1 << 20);
        cc.on_delay_sample(t, 5_000);
        cc.on_ack(1000, true);
        assert!(cc.cwnd() > 2000, "slow start grows by the bytes acked");
        let grown = cc.cwnd();
        // 200 ms queueing delay: leaves slow start and backs off.
        for _ in 0..3 {
            cc.on_delay_sample(t, 205_000);
        }
        cc.on_ack(1000, true);
        assert!(cc.cwnd() < grown, "{} !< {grown}", cc.cwnd());
        assert_eq!(cc.queueing_delay_us(), 200_000);
        cc.on_loss();
        cc.on_timeout();
        assert_eq!(cc.cwnd(), 1000);
    }

    #[test]
    fn base_delay_survives_clock_wrap() {
        let t = Timestamp::ZERO;
        let mut cc = Ledbat::new(t, 1000, 1 << 20);
        cc.on_delay_sample(t, u32::MAX - 10);
        for _ in 0..3 {
            cc.on_delay_sample(t, 50_000 - 11);
        }
        cc.on_ack(1000, true);
        assert_eq!(cc.queueing_delay_us(), 50_000);
    }

    #[test]
    fn base_delay_forgets_after_the_history() {
        let t = Timestamp::ZERO;
        let mut cc = Ledbat::new(t, 1000, 1 << 20);
        cc.on_delay_sample(t, 1_000);
        // A route change: every sample is now 150 ms higher; after the history the base follows.
        let later = t + secs(60 * (BASE_BUCKETS as u64 + 1));
        for _ in 0..3 {
            cc.on_delay_sample(later, 151_000);
        }
        cc.on_ack(1000, true);
        assert_eq!(cc.queueing_delay_us(), 0);
    }
}
