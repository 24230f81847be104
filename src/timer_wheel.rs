//! Hashed timing wheel. Owns: which key wakes when. Must not: read the clock or know what keys mean.
//!
//! One flat wheel of `slots` buckets of `tick` each (rill uses 10 ms × 4096 ≈ 41 s a lap). Every frequent
//! timer (connect and request time-outs, rate samples, choke rounds, redraws) fits in one lap. A deadline
//! further out is stored with its absolute time and re-checked each time its bucket comes round, which
//! costs a handful of entries every lap and keeps the structure one level deep.
//!
//! Entries live in a slab; a `TimerId` carries a generation so cancelling a fired or reused entry is a safe
//! no-op. Buckets hold ids and skip stale ones lazily. An occupancy bitmap lets `next_deadline` and
//! `pop_expired` jump over empty buckets after a long sleep. Deadlines round *up* to a tick: nothing fires
//! early; a lapped entry may wake the loop early, which is harmless because every `on_timeout` tolerates a
//! spurious call.

use std::collections::VecDeque;
use std::time::Duration;

use slab::Slab;

use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId {
    slot: usize,
    generation: u64,
}

struct Entry<K> {
    key: K,
    /// Tick number (since the wheel's start) at or after which the entry fires.
    due_tick: u64,
    generation: u64,
}

pub struct TimerWheel<K> {
    start: Timestamp,
    tick_micros: u64,
    buckets: Vec<Vec<(usize, u64)>>,
    occupied: Vec<u64>,
    entries: Slab<Entry<K>>,
    /// Every tick before this one has been processed.
    current_tick: u64,
    next_generation: u64,
    /// Entries found due (by a sweep, or scheduled in the past), handed out one per `pop_expired` call.
    /// Checked again at hand-out, so cancelling a ready entry still works.
    ready: VecDeque<(usize, u64)>,
}

impl<K: Copy> TimerWheel<K> {
    /// One lap is `tick × slots`; `slots` must be a power of two.
    pub fn new(start: Timestamp, tick: Duration, slots: usize) -> Self {
        assert!(slots.is_power_of_two() && slots >= 64, "slots must be a power of two, at least 64");
        TimerWheel {
            start,
            tick_micros: (tick.as_micros() as u64).max(1),
            buckets: (0..slots).map(|_| Vec::new()).collect(),
            occupied: vec![0; slots / 64],
            entries: Slab::new(),
            current_tick: 0,
            next_generation: 0,
            ready: VecDeque::new(),
        }
    }

    fn tick_at_or_after(&self, at: Timestamp) -> u64 {
        at.as_micros().saturating_sub(self.start.as_micros()).div_ceil(self.tick_micros)
    }

    fn tick_time(&self, tick: u64) -> Timestamp {
        Timestamp::from_micros(self.start.as_micros() + tick * self.tick_micros)
    }

    fn mask(&self) -> u64 {
        self.buckets.len() as u64 - 1
    }

    fn put(&mut self, slot: usize, generation: u64, due_tick: u64) {
        if due_tick < self.current_tick {
            // Its bucket has been swept already: it is due now.
            self.ready.push_back((slot, generation));
            return;
        }
        let bucket = (due_tick & self.mask()) as usize;
        self.buckets[bucket].push((slot, generation));
        self.occupied[bucket / 64] |= 1 << (bucket % 64);
    }

    /// O(1). Fires at the first tick at or after `at`, never before.
    pub fn schedule(&mut self, at: Timestamp, key: K) -> TimerId {
        let due_tick = self.tick_at_or_after(at);
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = self.entries.insert(Entry { key, due_tick, generation });
        self.put(slot, generation, due_tick);
        TimerId { slot, generation }
    }

    /// O(1). Returns false if the timer already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        match self.entries.get(id.slot) {
            Some(e) if e.generation == id.generation => {
                self.entries.remove(id.slot);
                true
            }
            _ => false,
        }
    }

    /// When the timer `id` is due, if it is still pending.
    pub fn deadline(&self, id: TimerId) -> Option<Timestamp> {
        match self.entries.get(id.slot) {
            Some(e) if e.generation == id.generation => Some(self.tick_time(e.due_tick)),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The poll timeout: when the loop must wake next, `None` if nothing is scheduled. May be early for an
    /// entry more than a lap away (it wakes when its bucket comes round).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if !self.ready.is_empty() {
            return Some(self.tick_time(self.current_tick.saturating_sub(1)));
        }
        if self.entries.is_empty() {
            return None;
        }
        let slots = self.buckets.len() as u64;
        let first = self.current_tick & self.mask();
        let words = self.occupied.len();
        let (first_word, bit) = ((first / 64) as usize, first % 64);
        // Walk the occupancy bitmap from the current bucket, wrapping once.
        for step in 0..=words {
            let w = (first_word + step) % words;
            let mut word = self.occupied[w];
            if step == 0 {
                word &= !0u64 << bit;
            } else if step == words {
                word &= !(!0u64 << bit);
            }
            if word != 0 {
                let bucket = w as u64 * 64 + u64::from(word.trailing_zeros());
                let ahead = (bucket + slots - first) % slots;
                return Some(self.tick_time(self.current_tick + ahead));
            }
        }
        None
    }

    /// One due key per call, `None` once nothing is due at `now`.
    pub fn pop_expired(&mut self, now: Timestamp) -> Option<K> {
        if let Some(k) = self.take_ready() {
            return Some(k);
        }
        // Process every tick up to and including the one `now` falls in.
        let now_tick = now.as_micros().saturating_sub(self.start.as_micros()) / self.tick_micros;
        let slots = self.buckets.len() as u64;
        while self.current_tick <= now_tick {
            let bucket = (self.current_tick & self.mask()) as usize;
            if self.occupied[bucket / 64] & (1 << (bucket % 64)) != 0 {
                self.sweep(bucket, now_tick);
            }
            // After a long sleep, skip a whole lap at most: later ticks map onto buckets already swept.
            if now_tick - self.current_tick >= slots {
                self.current_tick = now_tick - slots + 1;
            }
            self.current_tick += 1;
            if !self.ready.is_empty() {
                break;
            }
        }
        self.take_ready()
    }

    fn take_ready(&mut self) -> Option<K> {
        while let Some((slot, generation)) = self.ready.pop_front() {
            if self.entries.get(slot).is_some_and(|e| e.generation == generation) {
                return Some(self.entries.remove(slot).key);
            }
        }
        None
    }

    fn sweep(&mut self, bucket: usize, now_tick: u64) {
        let mut list = std::mem::take(&mut self.buckets[bucket]);
        let Self { entries, ready, .. } = self;
        list.retain(|&(slot, generation)| match entries.get(slot) {
            Some(e) if e.generation == generation => {
                if e.due_tick <= now_tick {
                    ready.push_back((slot, generation));
                    false
                } else {
                    true
                }
            }
            _ => false, // cancelled or reused: dropped lazily
        });
        if list.is_empty() {
            self.occupied[bucket / 64] &= !(1 << (bucket % 64));
            // An empty bucket gives its memory back: kept, every bucket a periodic timer ever touched
            // would hold a small list for good (4,096 of them after an hour or two of drift), scattered
            // through the heap. A bucket only holds memory while it holds timers.
            list = Vec::new();
        }
        self.buckets[bucket] = list;
    }
}

#[cfg(test)]
impl<K> TimerWheel<K> {
    /// Buckets that hold an allocation.
    fn buckets_holding_memory(&self) -> usize {
        self.buckets.iter().filter(|b| b.capacity() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::millis;

    #[test]
    fn buckets_hold_memory_only_while_they_hold_timers() {
        let t0 = Timestamp::ZERO;
        let mut w: TimerWheel<u32> = TimerWheel::new(t0, ms(10), 4096);
        // A periodic timer drifting round the wheel, as the rate sample does, and a few one-offs.
        let mut now = t0;
        for i in 0..5000u32 {
            w.schedule(now + ms(1003), i);
            if i % 7 == 0 {
                w.schedule(now + ms(20 * u64::from(i % 50)), i);
            }
            now = now + ms(1003);
            while w.pop_expired(now).is_some() {}
            assert!(w.buckets_holding_memory() <= 60, "after {i} laps: {}", w.buckets_holding_memory());
        }
        now = now + ms(60_000);
        while w.pop_expired(now).is_some() {}
        assert_eq!(w.buckets_holding_memory(), 0);
    }

    fn ms(n: u64) -> Duration {
        millis(n)
    }

    #[test]
    fn fires_after_laps_never_early_and_not_after_cancel() {
        let t0 = Timestamp::ZERO;
        let mut wheel = TimerWheel::new(t0, ms(10), 64); // 640 ms per lap
        let soon = wheel.schedule(t0 + ms(25), 'a');
        wheel.schedule(t0 + ms(2_000), 'b'); // three laps out
        assert_eq!(wheel.next_deadline(), Some(t0 + ms(30))); // rounded up to a tick
        assert!(wheel.cancel(soon));
        assert!(!wheel.cancel(soon));
        assert_eq!(wheel.pop_expired(t0 + ms(1_999)), None);
        assert_eq!(wheel.pop_expired(t0 + ms(2_000)), Some('b'));
        assert_eq!(wheel.pop_expired(t0 + ms(9_999)), None);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn many_due_in_one_tick_all_fire_once_in_order() {
        let t0 = Timestamp::from_secs(5);
        let mut wheel = TimerWheel::new(t0, ms(10), 64);
        for k in 0..10u32 {
            wheel.schedule(t0 + ms(15), k);
        }
        let mut got = vec![];
        while let Some(k) = wheel.pop_expired(t0 + ms(20)) {
            got.push(k);
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_pop_and_long_sleeps_skip_empty_laps() {
        let t0 = Timestamp::ZERO;
        let mut wheel = TimerWheel::new(t0, ms(10), 64);
        assert_eq!(wheel.pop_expired(t0 + ms(5_000)), None);
        wheel.schedule(t0, 'x'); // already due
        assert_eq!(wheel.pop_expired(t0 + ms(5_000)), Some('x'));
        let id = wheel.schedule(t0 + ms(5_100), 'y');
        assert_eq!(wheel.deadline(id), Some(t0 + ms(5_100)));
        assert_eq!(wheel.next_deadline(), Some(t0 + ms(5_100)));
        assert_eq!(wheel.pop_expired(t0 + ms(1_000_000)), Some('y'));
    }

    #[test]
    fn next_deadline_wraps_around_the_wheel() {
        let t0 = Timestamp::ZERO;
        let mut wheel = TimerWheel::new(t0, ms(10), 64);
        assert_eq!(wheel.pop_expired(t0 + ms(600)), None); // current tick 61
        wheel.schedule(t0 + ms(650), 'w'); // tick 65 → bucket 1, behind the cursor
        assert_eq!(wheel.next_deadline(), Some(t0 + ms(650)));
        assert_eq!(wheel.pop_expired(t0 + ms(649)), None);
        assert_eq!(wheel.pop_expired(t0 + ms(650)), Some('w'));
    }

    #[test]
    fn randomized_against_a_sorted_model() {
        let mut rng = crate::rng::Rng::seeded(42);
        let t0 = Timestamp::ZERO;
        let mut wheel = TimerWheel::new(t0, ms(10), 64);
        let mut model: Vec<(u64, u32, TimerId)> = vec![];
        let mut now = 0u64;
        for k in 0..2_000u32 {
            match rng.below(3) {
                0 | 1 => {
                    let at = now + rng.below(3_000) * 1_000;
                    let id = wheel.schedule(Timestamp::from_micros(at), k);
                    model.push((at.div_ceil(10_000) * 10_000, k, id));
                }
                _ => {
                    if !model.is_empty() {
                        let i = rng.below(model.len() as u64) as usize;
                        let (_, _, id) = model.swap_remove(i);
                        assert!(wheel.cancel(id));
                    }
                }
            }
            now += rng.below(50) * 1_000;
            let mut fired = vec![];
            while let Some(k) = wheel.pop_expired(Timestamp::from_micros(now)) {
                fired.push(k);
            }
            let mut due: Vec<u32> = model.iter().filter(|(at, _, _)| *at <= now).map(|m| m.1).collect();
            model.retain(|(at, _, _)| *at > now);
            fired.sort_unstable();
            due.sort_unstable();
            assert_eq!(fired, due, "at {now}");
            if let Some(next) = wheel.next_deadline() {
                let earliest = model.iter().map(|m| m.0).min().unwrap();
                assert!(next.as_micros() <= earliest, "never later than the earliest deadline");
            } else {
                assert!(model.is_empty());
            }
        }
    }
}
