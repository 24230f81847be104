//! Requests in flight to one peer, and how many to keep in flight.
//!
//! Owns: the in-flight list (oldest first) with send times, round-trip and rate measurement, and the target
//! depth: enough requests to cover the bandwidth-delay product (rate × round trip, with margin), clamped by
//! the peer's `reqq`. A new peer starts in slow start, as TCP does: every block that answers a request
//! adds one to the depth (it doubles each round trip) until a once-a-second rate sample shows the rate no
//! longer growing; from then on the depth follows the measured bandwidth-delay product.
//! Must not: pick blocks (the swarm does) or send anything (the session does).
//!
//! With the fast extension (BEP 6) a `reject` answers a request: its entry goes, open or released.
//! A request that times out or is discarded by a `choke` is *released*: its block goes back to the pool at
//! once, but the entry stays a while so the block, if it still arrives, is accepted rather than taken for
//! an unrequested one (PROTOCOL-NOTES: blocks in flight may cross a choke or a cancel).

use std::collections::VecDeque;
use std::time::Duration;

use crate::geometry::{BlockRef, BLOCK_LEN};
use crate::time::{millis, secs, Timestamp};

/// Depth before anything is measured: 512 KiB in flight.
pub const INITIAL_DEPTH: u32 = 32;
/// Never fewer than this in flight to an unchoked peer.
pub const MIN_DEPTH: u32 = 4;
/// Never more, whatever the peer's `reqq`.
pub const MAX_DEPTH: u32 = 2000;
/// Assumed queue limit of a peer that advertises no `reqq` (PROTOCOL-NOTES: a conservative default).
pub const DEFAULT_PEER_REQQ: u32 = 250;
/// Margin over two round trips the pipeline covers, for scheduling jitter at either end.
const DEPTH_MARGIN: Duration = millis(100);
/// The least time's worth of the peer's rate kept requested.
const QUEUE_TIME: Duration = millis(1000);
/// A request unanswered this long goes back to the pool for other peers.
pub const REQUEST_TIMEOUT: Duration = secs(30);
/// Released requests are remembered this long, so their late blocks are accepted. As long as an open
/// request is awaited: every entry is then due `REQUEST_TIMEOUT` after its `sent_at`, and the list, kept in
/// `sent_at` order, is in deadline order (`next_deadline` reads its front).
const LATE_GRACE: Duration = REQUEST_TIMEOUT;
/// The minimum round trip is forgotten after this long, so a changed path is noticed.
const RTT_WINDOW: Duration = secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub block: BlockRef,
    pub sent_at: Timestamp,
    /// Returned to the pool (time-out, choke, cancel) but still accepted if it arrives.
    pub released: bool,
}

impl InFlight {
    /// When an open request times out, or a released one is forgotten.
    fn due_at(&self) -> Timestamp {
        self.sent_at + if self.released { LATE_GRACE } else { REQUEST_TIMEOUT }
    }
}

#[derive(Debug)]
pub struct Pipeline {
    /// Oldest `sent_at` first (`now` never goes back, and a timed-out entry moves to the back with its
    /// `sent_at` reset), so the front is the next to time out.
    in_flight: VecDeque<InFlight>,
    active: u32,
    target: u32,
    /// min(peer's reqq, MAX_DEPTH).
    limit: u32,
    min_rtt: Option<Duration>,
    rtt_window_start: Timestamp,
    /// Smoothed round trip of answered requests (RFC 6298's 7/8 average), for views: the depth uses
    /// `min_rtt`.
    srtt: Option<Duration>,
    /// Payload bytes since the last rate sample.
    sample_bytes: u64,
    last_sample: Timestamp,
    /// Smoothed download rate from this peer, bytes per second.
    rate: f64,
    /// Requests that ever timed out.
    timed_out_total: u64,
    /// A request timed out and no block has arrived since: keep one request in flight, no more, so a
    /// stalled peer holds on to almost nothing (libtorrent treats snubbed peers the same way).
    snubbed: bool,
    /// Growing the depth by one per answered request, until the rate stops growing.
    slow_start: bool,
    /// The rate at the previous sample, to see whether slow start still pays.
    previous_rate: f64,
}

impl Pipeline {
    pub fn new(now: Timestamp) -> Self {
        Pipeline {
            in_flight: VecDeque::new(),
            active: 0,
            target: INITIAL_DEPTH.min(DEFAULT_PEER_REQQ),
            limit: DEFAULT_PEER_REQQ,
            min_rtt: None,
            rtt_window_start: now,
            srtt: None,
            sample_bytes: 0,
            last_sample: now,
            rate: 0.0,
            timed_out_total: 0,
            snubbed: false,
            slow_start: true,
            previous_rate: 0.0,
        }
    }

    /// The peer told us its queue limit (BEP 10 `reqq`).
    pub fn set_peer_limit(&mut self, reqq: u32) {
        self.limit = reqq.clamp(1, MAX_DEPTH);
        self.target = self.target.min(self.limit);
    }

    pub fn target(&self) -> u32 {
        self.target
    }
    /// Requests still expected (not released).
    pub fn active(&self) -> u32 {
        self.active
    }
    pub fn has_room(&self) -> bool {
        self.active < self.target
    }
    pub fn rate(&self) -> f64 {
        self.rate
    }
    /// A request timed out and nothing has arrived since.
    pub fn is_snubbed(&self) -> bool {
        self.snubbed
    }
    pub fn timed_out_total(&self) -> u64 {
        self.timed_out_total
    }
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }
    /// The smoothed request round trip, once a request was answered.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    pub fn push(&mut self, block: BlockRef, now: Timestamp) {
        self.in_flight.push_back(InFlight { block, sent_at: now, released: false });
        self.active += 1;
    }

    /// Whether `block` is in flight and not released (endgame: do not request it twice).
    pub fn is_requested(&self, block: &BlockRef) -> bool {
        self.in_flight.iter().any(|f| !f.released && f.block == *block)
    }

    /// A block arrived: its entry, if we asked for it. Blocks mostly arrive in request order, so the
    /// search usually stops at the front.
    pub fn on_block(&mut self, block: &BlockRef, now: Timestamp) -> Option<InFlight> {
        // An open request answers before a released one for the same block (it may have been re-requested
        // after a time-out).
        let i = self
            .in_flight
            .iter()
            .position(|f| f.block == *block && !f.released)
            .or_else(|| self.in_flight.iter().position(|f| f.block == *block))?;
        let entry = self.in_flight.remove(i)?;
        self.snubbed = false;
        if !entry.released {
            self.active -= 1;
            if self.slow_start && self.target < self.limit {
                self.target += 1;
            }
            let rtt = now - entry.sent_at;
            if now - self.rtt_window_start > RTT_WINDOW {
                self.min_rtt = None;
                self.rtt_window_start = now;
            }
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
            self.srtt = Some(self.srtt.map_or(rtt, |s| (s * 7 + rtt) / 8));
        }
        self.sample_bytes += u64::from(block.len);
        Some(entry)
    }

    /// Marks `block` released (we cancelled it); returns whether it was active.
    pub fn release(&mut self, block: &BlockRef) -> bool {
        match self.in_flight.iter_mut().find(|f| !f.released && f.block == *block) {
            Some(f) => {
                f.released = true;
                self.active -= 1;
                true
            }
            None => false,
        }
    }

    /// BEP 6: the peer rejected `block`. Its entry, open or released, is answered and goes; returns
    /// whether it was open (the caller gives the block back to the pool), `None` if there was none.
    pub fn on_reject(&mut self, block: &BlockRef) -> Option<bool> {
        let i = self
            .in_flight
            .iter()
            .position(|f| f.block == *block && !f.released)
            .or_else(|| self.in_flight.iter().position(|f| f.block == *block))?;
        let entry = self.in_flight.remove(i)?;
        if !entry.released {
            self.active -= 1;
        }
        Some(!entry.released)
    }

    /// Releases every active request (a `choke` discarded them); `give_back` returns each to the pool.
    pub fn release_all(&mut self, mut give_back: impl FnMut(&BlockRef)) {
        for f in self.in_flight.iter_mut().filter(|f| !f.released) {
            f.released = true;
            give_back(&f.block);
        }
        self.active = 0;
    }

    /// Drops every entry (the peer is gone); `give_back` gets each active block.
    pub fn clear(&mut self, mut give_back: impl FnMut(&BlockRef)) {
        for f in self.in_flight.drain(..) {
            if !f.released {
                give_back(&f.block);
            }
        }
        self.active = 0;
    }

    /// Releases active requests older than `REQUEST_TIMEOUT` and forgets released ones past their grace.
    /// Returns how many timed out.
    pub fn expire(&mut self, now: Timestamp, mut give_back: impl FnMut(&BlockRef)) -> u32 {
        let mut timed_out = 0;
        // The list is in deadline order: the due entries are a prefix. A released one is forgotten; an open
        // one is released, and its grace counts from now, so it goes to the back (the order holds).
        let due = self.in_flight.iter().take_while(|f| f.due_at() <= now).count();
        for _ in 0..due {
            let Some(f) = self.in_flight.pop_front() else {
                break;
            };
            if !f.released {
                give_back(&f.block);
                timed_out += 1;
                self.in_flight.push_back(InFlight { sent_at: now, released: true, ..f });
            }
        }
        self.active -= timed_out;
        self.timed_out_total += u64::from(timed_out);
        if timed_out > 0 {
            self.snubbed = true;
            self.slow_start = false;
            self.target = 1;
        }
        timed_out
    }

    /// When `expire` next has work: the front's deadline (the list is in deadline order).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.in_flight.front().map(InFlight::due_at)
    }

    /// Once a second: fold the bytes since the last sample into the rate and resize the pipeline to the
    /// bandwidth-delay product.
    pub fn on_rate_sample(&mut self, now: Timestamp) {
        let dt = (now - self.last_sample).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let sample = self.sample_bytes as f64 / dt;
        self.sample_bytes = 0;
        self.last_sample = now;
        // Rising rates are taken at once (slow start must not lag); falling ones smoothed.
        self.rate = if sample > self.rate { sample } else { 0.7 * self.rate + 0.3 * sample };
        if self.snubbed {
            return;
        }
        let rtt = self.min_rtt.unwrap_or(millis(50));
        // At least a second of the peer's rate: a rate-limited seeder sends in bursts when its limiter
        // grants quota, and a pipeline of one round trip runs dry between them (libtorrent keeps 3 s).
        let covered = (rtt * 2 + DEPTH_MARGIN).max(QUEUE_TIME).as_secs_f64();
        let bdp_blocks = (self.rate * covered / f64::from(BLOCK_LEN)).ceil() as u32;
        let bdp_target = (bdp_blocks + MIN_DEPTH).clamp(MIN_DEPTH.min(self.limit), self.limit);
        if self.slow_start {
            // Stop growing once a second of it no longer raised the rate by a quarter: the link, not
            // the pipeline, is the limit now.
            if self.rate < self.previous_rate * 1.25 {
                self.slow_start = false;
            }
            self.previous_rate = self.rate;
            self.target = self.target.max(bdp_target);
        } else {
            self.target = bdp_target;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(piece: u32, i: u32) -> BlockRef {
        BlockRef { piece, offset: i * BLOCK_LEN, len: BLOCK_LEN }
    }

    #[test]
    fn depth_grows_to_cover_rate_times_round_trip() {
        let t0 = Timestamp::ZERO;
        let mut p = Pipeline::new(t0);
        p.set_peer_limit(500);
        // 50 ms round trip, 32 blocks in flight: 32 × 16 KiB per 50 ms ≈ 10 MiB/s.
        let mut now = t0;
        let mut next = 0;
        for _ in 0..20 {
            while p.has_room() {
                p.push(block(next / 16, next % 16), now);
                next += 1;
            }
            now = now + millis(50);
            let arrived: Vec<_> = (next - p.active()..next).collect();
            for b in arrived {
                assert!(p.on_block(&block(b / 16, b % 16), now).is_some());
            }
            if (now - t0).as_millis() % 1000 == 0 {
                p.on_rate_sample(now);
            }
        }
        // After one second at 32 blocks per 50 ms, the pipeline covers 2 × 50 ms + 100 ms of that rate.
        assert!(p.target() > 100, "target {} did not grow", p.target());
        assert!(p.target() <= 500);
    }

    #[test]
    fn smoothed_round_trip_follows_answers_slowly() {
        let t0 = Timestamp::ZERO;
        let mut p = Pipeline::new(t0);
        assert_eq!(p.srtt(), None);
        p.push(block(0, 0), t0);
        p.on_block(&block(0, 0), t0 + millis(80));
        assert_eq!(p.srtt(), Some(millis(80)), "the first answer sets it");
        p.push(block(0, 1), t0 + millis(100));
        p.on_block(&block(0, 1), t0 + millis(100) + millis(160));
        assert_eq!(p.srtt(), Some(millis(90)), "7/8 of 80 ms plus 1/8 of 160 ms");
        p.push(block(0, 2), t0);
        assert!(p.release(&block(0, 2)));
        p.on_block(&block(0, 2), t0 + secs(20));
        assert_eq!(p.srtt(), Some(millis(90)), "a released request's late block is no sample");
    }

    #[test]
    fn time_out_releases_and_late_block_is_still_accepted() {
        let t0 = Timestamp::ZERO;
        let mut p = Pipeline::new(t0);
        p.push(block(0, 0), t0);
        p.push(block(0, 1), t0 + secs(5));
        assert_eq!(p.next_deadline(), Some(t0 + REQUEST_TIMEOUT));
        let mut returned = vec![];
        assert_eq!(p.expire(t0 + REQUEST_TIMEOUT, |b| returned.push(*b)), 1);
        assert_eq!(returned, vec![block(0, 0)]);
        assert_eq!(p.active(), 1);
        let late = p.on_block(&block(0, 0), t0 + secs(31)).unwrap();
        assert!(late.released);
        assert_eq!(p.on_block(&block(0, 0), t0 + secs(31)), None, "a second copy was never asked for");
    }

    #[test]
    fn deadlines_stay_in_order_through_time_outs() {
        // A timed-out request's grace counts from its time-out, after requests sent later: it moves to the
        // back, and the front stays the next deadline.
        let t0 = Timestamp::ZERO;
        let mut p = Pipeline::new(t0);
        p.push(block(0, 0), t0);
        p.push(block(0, 1), t0 + secs(10));
        assert_eq!(p.expire(t0 + secs(30), |_| {}), 1);
        assert_eq!(p.next_deadline(), Some(t0 + secs(40)), "block 1 times out next");
        assert_eq!(p.expire(t0 + secs(40), |_| {}), 1);
        assert_eq!(p.next_deadline(), Some(t0 + secs(30) + LATE_GRACE), "block 0 is forgotten next");
        assert_eq!(p.expire(t0 + secs(30) + LATE_GRACE, |_| {}), 0);
        assert!(p.on_block(&block(0, 0), t0 + secs(61)).is_none(), "block 0 was forgotten");
        assert_eq!(p.next_deadline(), Some(t0 + secs(40) + LATE_GRACE));
        assert_eq!(p.expire(t0 + secs(40) + LATE_GRACE, |_| {}), 0);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn reject_answers_an_open_or_released_request_once() {
        let t0 = Timestamp::ZERO;
        let mut p = Pipeline::new(t0);
        p.push(block(2, 0), t0);
        p.push(block(2, 1), t0);
        assert_eq!(p.on_reject(&block(2, 0)), Some(true));
        assert_eq!(p.active(), 1);
        assert_eq!(p.on_reject(&block(2, 0)), None, "answered already");
        assert!(p.release(&block(2, 1)));
        assert_eq!(p.on_reject(&block(2, 1)), Some(false), "a cancelled request is answered by a reject");
        assert_eq!((p.active(), p.next_deadline()), (0, None));
    }

    #[test]
    fn release_all_on_choke_keeps_entries_for_late_blocks() {
        let t0 = Timestamp::ZERO;
        let mut p = Pipeline::new(t0);
        for i in 0..3 {
            p.push(block(1, i), t0);
        }
        let mut n = 0;
        p.release_all(|_| n += 1);
        assert_eq!((n, p.active()), (3, 0));
        assert!(!p.is_requested(&block(1, 0)));
        assert!(p.on_block(&block(1, 2), t0 + millis(1)).is_some());
        let mut m = 0;
        p.clear(|_| m += 1);
        assert_eq!(m, 0, "released entries are not given back twice");
    }
}
