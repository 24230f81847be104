//! Token buckets for `--up-limit` and `--down-limit`, applied across all peers, and for one torrent's own
//! limits (the daemon's `torrent-set`), applied across its peers.
//!
//! Owns: the bucket arithmetic. Refilled from the loop's timer with `now`; spending may run a bucket
//! into debt (a read or a served block is not split), which the next refills pay back, so the average
//! rate holds over any window of a second or more.
//! Must not: read the clock or know about sockets.

use std::time::Duration;

use crate::time::Timestamp;

/// How often the loop refills buckets while a limit is set.
pub const REFILL_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Most tokens saved up while idle: a quarter second of rate, at least one 16 KiB block.
    capacity: i64,
    tokens: i64,
    last_refill: Timestamp,
}

impl TokenBucket {
    pub fn new(rate: u64, now: Timestamp) -> Self {
        let capacity = (rate / 4).max(16 * 1024) as i64;
        TokenBucket { rate, capacity, tokens: capacity, last_refill: now }
    }

    pub fn refill(&mut self, now: Timestamp) {
        let dt = now - self.last_refill;
        self.last_refill = now;
        let add = (self.rate as u128 * dt.as_micros() / 1_000_000) as i64;
        self.tokens = (self.tokens + add).min(self.capacity);
    }

    /// Bytes that may be spent now (zero while in debt).
    pub fn available(&self) -> u64 {
        self.tokens.max(0) as u64
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn is_exhausted(&self) -> bool {
        self.tokens <= 0
    }

    pub fn spend(&mut self, bytes: u64) {
        self.tokens -= bytes.min(i64::MAX as u64) as i64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::millis;

    #[test]
    fn average_rate_holds_over_a_window_despite_debt() {
        let mut now = Timestamp::ZERO;
        let mut b = TokenBucket::new(100_000, now);
        let mut sent = 0u64;
        // A sender that always spends whole 16 KiB blocks when anything is available.
        for _ in 0..(20_000 / 50) {
            now = now + millis(50);
            b.refill(now);
            while !b.is_exhausted() {
                b.spend(16 * 1024);
                sent += 16 * 1024;
            }
        }
        let rate = sent as f64 / 20.0;
        assert!((rate - 100_000.0).abs() / 100_000.0 < 0.05, "rate {rate}");
    }
}
