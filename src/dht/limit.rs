//! A per-source rate limit for incoming DHT queries: a token bucket per address in a bounded table.
//!
//! Owns: the buckets and their bound. IPv6 sources are keyed by their /64 (one host usually owns one).
//! When the table is full, buckets that have refilled completely (and so carry no information) are swept;
//! if none can go, new addresses share one overflow bucket, so a flood from many addresses cannot grow
//! memory, and addresses already known keep their own share, so it cannot starve them either.
//! Must not: read the clock (time is handed in) or decide what a dropped datagram means.
//!
//! BEP 5 asks nothing here; libtorrent's `dht_block_ratelimit` is the same idea.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::time::Timestamp;

#[derive(Clone, Copy, Debug)]
pub struct LimitConfig {
    /// Sustained queries per second per address.
    pub per_second: u32,
    /// Burst allowance per address.
    pub burst: u32,
    /// Most addresses tracked.
    pub max_sources: usize,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig { per_second: 20, burst: 50, max_sources: 4096 }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Fill in micro-tokens (1,000,000 per query), so refill needs no floats.
    level: u64,
    updated: Timestamp,
}

pub struct RateLimit {
    config: LimitConfig,
    table: HashMap<[u8; 8], Bucket>,
    overflow: Bucket,
    last_sweep: Timestamp,
}

const UNIT: u64 = 1_000_000;

impl RateLimit {
    pub fn new(config: LimitConfig) -> Self {
        let full = Bucket { level: u64::from(config.burst) * UNIT, updated: Timestamp::ZERO };
        RateLimit { config, table: HashMap::new(), overflow: full, last_sweep: Timestamp::ZERO }
    }

    fn key(ip: IpAddr) -> [u8; 8] {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                [4, 0, 0, 0, o[0], o[1], o[2], o[3]]
            }
            IpAddr::V6(v6) => v6.octets()[..8].try_into().unwrap_or([6; 8]),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Timestamp) {
        let elapsed = now.saturating_since(b.updated).as_micros() as u64;
        let cap = u64::from(self.config.burst) * UNIT;
        b.level = cap.min(b.level.saturating_add(elapsed.saturating_mul(u64::from(self.config.per_second))));
        b.updated = now;
    }

    /// Whether one more datagram from `ip` may be handled now; spends a token if so.
    pub fn allow(&mut self, now: Timestamp, ip: IpAddr) -> bool {
        let key = Self::key(ip);
        if !self.table.contains_key(&key) && self.table.len() >= self.config.max_sources {
            self.sweep(now);
        }
        let cap = u64::from(self.config.burst) * UNIT;
        let mut bucket = match self.table.get(&key) {
            Some(b) => *b,
            None if self.table.len() < self.config.max_sources => Bucket { level: cap, updated: now },
            None => {
                let mut b = self.overflow;
                self.refill(&mut b, now);
                let ok = b.level >= UNIT;
                if ok {
                    b.level -= UNIT;
                }
                self.overflow = b;
                return ok;
            }
        };
        self.refill(&mut bucket, now);
        let ok = bucket.level >= UNIT;
        if ok {
            bucket.level -= UNIT;
        }
        self.table.insert(key, bucket);
        ok
    }

    /// Drops buckets that have refilled completely; at most once a second, so a flood of new addresses
    /// costs one pass per second, not one per datagram.
    fn sweep(&mut self, now: Timestamp) {
        if now.saturating_since(self.last_sweep).as_secs() < 1 && self.last_sweep != Timestamp::ZERO {
            return;
        }
        self.last_sweep = now;
        let cap = u64::from(self.config.burst) * UNIT;
        let rate = u64::from(self.config.per_second);
        self.table.retain(|_, b| {
            let elapsed = now.saturating_since(b.updated).as_micros() as u64;
            b.level.saturating_add(elapsed.saturating_mul(rate)) < cap
        });
    }

    pub fn tracked(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{millis, secs};

    #[test]
    fn one_flooder_is_limited_and_others_are_not() {
        let mut l = RateLimit::new(LimitConfig { per_second: 10, burst: 20, max_sources: 100 });
        let t = Timestamp::from_secs(1);
        let bad: IpAddr = "1.1.1.1".parse().unwrap();
        let good: IpAddr = "2.2.2.2".parse().unwrap();
        let allowed = (0..1000).filter(|_| l.allow(t, bad)).count();
        assert_eq!(allowed, 20, "the burst, then nothing");
        assert!(l.allow(t, good));
        assert!(!l.allow(t + millis(50), bad));
        assert!(l.allow(t + millis(100), bad), "one token per 100 ms at 10/s");
        assert!(l.allow(t + secs(10), bad));
    }

    #[test]
    fn many_sources_stay_bounded_and_known_ones_keep_their_share() {
        let mut l = RateLimit::new(LimitConfig { per_second: 10, burst: 5, max_sources: 64 });
        let t = Timestamp::from_secs(1);
        let known: IpAddr = "9.9.9.9".parse().unwrap();
        assert!(l.allow(t, known));
        let mut overflow_ok = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            if l.allow(t, ip) {
                overflow_ok += 1;
            }
        }
        assert!(l.tracked() <= 64);
        assert!(overflow_ok < 64 + 10, "new addresses beyond the table share one bucket: {overflow_ok}");
        assert!(l.allow(t, known), "an address already tracked keeps its own bucket");
        // IPv6 addresses in one /64 share a bucket.
        let mut l = RateLimit::new(LimitConfig { per_second: 1, burst: 2, max_sources: 8 });
        assert!(l.allow(t, "2001:db8::1".parse().unwrap()));
        assert!(l.allow(t, "2001:db8::2".parse().unwrap()));
        assert!(!l.allow(t, "2001:db8::3".parse().unwrap()));
        assert!(l.allow(t, "2001:db9::3".parse().unwrap()));
    }

    #[test]
    fn idle_sources_are_swept_when_the_table_fills() {
        let mut l = RateLimit::new(LimitConfig { per_second: 10, burst: 5, max_sources: 4 });
        let t = Timestamp::from_secs(1);
        for i in 0..4u8 {
            assert!(l.allow(t, IpAddr::from([1, 1, 1, i])));
        }
        assert_eq!(l.tracked(), 4);
        assert!(l.allow(t + secs(5), IpAddr::from([2, 2, 2, 2])));
        assert_eq!(l.tracked(), 1, "refilled buckets were dropped to make room");
    }
}
