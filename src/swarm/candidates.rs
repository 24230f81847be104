//! Known peer addresses and which to dial next.
//!
//! Owns: the address book (trackers, `--peer`, incoming), deduplication, back-off after failures so a
//! dead address is not retried in a tight loop, and the order of dialling.
//! Must not: connect anything; the loop asks `next_to_dial` and reports back.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use crate::time::{secs, Timestamp};

/// First retry delay after a failed connect (a seeder may not be listening yet); doubles per failure.
const RETRY_BASE: Duration = secs(5);
/// Longest retry delay.
const RETRY_MAX: Duration = secs(600);
/// After this many consecutive failures an address is forgotten.
const MAX_FAILURES: u32 = 6;
/// At most this many addresses are remembered (a tracker may send thousands).
const MAX_KNOWN: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting in `ready` to be dialled.
    Ready,
    /// Being dialled or connected.
    InUse,
    /// Not to be dialled before `retry_at`.
    Waiting { retry_at: Timestamp },
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    state: State,
    failures: u32,
    /// Which way of connecting (an index into the caller's list of [`Way`]s) the next dial uses: the first
    /// at first; the next after a refused handshake; kept after a connection that worked.
    step: u8,
}

/// One way of opening a connection: transport and whether the handshake starts with MSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Way {
    pub utp: bool,
    pub encrypt: bool,
}

#[derive(Default)]
pub struct Candidates {
    known: HashMap<SocketAddr, Candidate>,
    ready: VecDeque<SocketAddr>,
    /// Our own listening addresses: never dial ourselves.
    own: Vec<SocketAddr>,
}

impl Candidates {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_own_addresses(&mut self, own: Vec<SocketAddr>) {
        self.own = own;
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Adds an address; duplicates and our own address are ignored. Returns whether it was new.
    pub fn add(&mut self, addr: SocketAddr) -> bool {
        if addr.port() == 0 || self.own.contains(&addr) || self.known.len() >= MAX_KNOWN {
            return false;
        }
        if self.known.contains_key(&addr) {
            return false;
        }
        self.known.insert(addr, Candidate { state: State::Ready, failures: 0, step: 0 });
        self.ready.push_back(addr);
        true
    }

    /// Marks an address in use without dialling it (an incoming connection from a known address).
    pub fn mark_in_use(&mut self, addr: SocketAddr) {
        if let Some(c) = self.known.get_mut(&addr) {
            c.state = State::InUse;
        }
    }

    pub fn is_in_use(&self, addr: &SocketAddr) -> bool {
        self.known.get(addr).is_some_and(|c| c.state == State::InUse)
    }

    /// The next address to dial at `now`, marked in use.
    pub fn next_to_dial(&mut self, now: Timestamp) -> Option<SocketAddr> {
        if self.ready.is_empty() {
            // Move addresses whose back-off has passed to the queue.
            for (addr, c) in self.known.iter_mut() {
                if let State::Waiting { retry_at } = c.state {
                    if retry_at <= now {
                        c.state = State::Ready;
                        self.ready.push_back(*addr);
                    }
                }
            }
        }
        while let Some(addr) = self.ready.pop_front() {
            if let Some(c) = self.known.get_mut(&addr) {
                if c.state == State::Ready {
                    c.state = State::InUse;
                    return Some(addr);
                }
            }
        }
        None
    }

    /// An address `next_to_dial` gave out is not dialled after all (no slot): first in line next time.
    pub fn put_back(&mut self, addr: SocketAddr) {
        if let Some(c) = self.known.get_mut(&addr) {
            c.state = State::Ready;
            self.ready.push_front(addr);
        }
    }

    /// The earliest time a waiting address becomes dialable.
    pub fn next_retry(&self) -> Option<Timestamp> {
        self.known
            .values()
            .filter_map(|c| match c.state {
                State::Waiting { retry_at } => Some(retry_at),
                _ => None,
            })
            .min()
    }

    /// How to open the next connection to `addr`, from the caller's `ways` (tried in order).
    pub fn way(&self, addr: &SocketAddr, ways: &[Way]) -> Way {
        let step = self.known.get(addr).map_or(0, |c| usize::from(c.step));
        ways[step.min(ways.len() - 1)]
    }

    /// Our connection to `addr` ended before the peer's handshake, the peer having closed it (right after
    /// our handshake, as peers that refuse plaintext — or encryption — do, or at once, as a peer that
    /// takes no TCP does): the next of `ways` is tried at once. When none is left it is a failure like any
    /// other and the next dial starts from the first way again. `tcp_connect_failed`: the TCP connect
    /// itself failed, so the ways over TCP are skipped. True when another way will be tried.
    pub fn on_refused(&mut self, addr: SocketAddr, ways: &[Way], tcp_connect_failed: bool, now: Timestamp) -> bool {
        let Some(c) = self.known.get_mut(&addr) else {
            return false;
        };
        let mut next = usize::from(c.step) + 1;
        if tcp_connect_failed {
            while next < ways.len() && !ways[next].utp {
                next += 1;
            }
        }
        if next >= ways.len() {
            c.step = 0;
            self.on_closed(addr, false, now);
            return false;
        }
        c.step = next as u8;
        c.state = State::Ready;
        self.ready.push_front(addr);
        true
    }

    /// A connection to `addr` ended. `useful` means it got as far as a handshake: the failure count is
    /// reset and it may be retried after the base delay.
    pub fn on_closed(&mut self, addr: SocketAddr, useful: bool, now: Timestamp) {
        let Some(c) = self.known.get_mut(&addr) else {
            return;
        };
        if useful {
            c.failures = 0;
        } else {
            // A failure (not a refusal): the next dial starts again from the first way (a peer down now may
            // be back on TCP later).
            c.step = 0;
            c.failures += 1;
            if c.failures >= MAX_FAILURES {
                self.known.remove(&addr);
                return;
            }
        }
        let delay = RETRY_BASE.saturating_mul(1 << c.failures.saturating_sub(1).min(8)).min(RETRY_MAX);
        c.state = State::Waiting { retry_at: now + delay };
    }

    /// Never dial this address again (banned, or it is ourselves).
    pub fn forget(&mut self, addr: SocketAddr) {
        self.known.remove(&addr);
        self.own.push(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn dedups_skips_self_and_backs_off_after_failure() {
        let t0 = Timestamp::ZERO;
        let mut c = Candidates::new();
        c.set_own_addresses(vec![a(6881)]);
        assert!(c.add(a(1)));
        assert!(!c.add(a(1)));
        assert!(!c.add(a(6881)));
        assert_eq!(c.next_to_dial(t0), Some(a(1)));
        assert_eq!(c.next_to_dial(t0), None, "in use");
        c.on_closed(a(1), false, t0);
        assert_eq!(c.next_to_dial(t0 + secs(4)), None, "backing off");
        assert_eq!(c.next_retry(), Some(t0 + secs(5)));
        assert_eq!(c.next_to_dial(t0 + secs(5)), Some(a(1)));
        c.on_closed(a(1), false, t0);
        assert_eq!(c.next_retry(), Some(t0 + secs(10)), "doubles");
        for _ in 0..MAX_FAILURES {
            c.on_closed(a(1), false, t0);
        }
        assert!(c.is_empty(), "forgotten after repeated failures");
    }

    #[test]
    fn put_back_is_dialled_first_next_time() {
        let t0 = Timestamp::ZERO;
        let mut c = Candidates::new();
        c.add(a(1));
        c.add(a(2));
        assert_eq!(c.next_to_dial(t0), Some(a(1)));
        c.put_back(a(1));
        assert!(!c.is_in_use(&a(1)));
        assert_eq!(c.next_to_dial(t0), Some(a(1)));
        assert_eq!(c.next_to_dial(t0), Some(a(2)));
    }

    #[test]
    fn refused_handshakes_walk_the_ways_in_order_and_the_one_that_worked_is_kept() {
        let plain = Way { utp: false, encrypt: false };
        let mse = Way { utp: false, encrypt: true };
        let utp = Way { utp: true, encrypt: false };
        let ways = [plain, mse, utp];
        let mut c = Candidates::new();
        let t0 = Timestamp::ZERO;
        c.add(a(1));
        assert_eq!(c.next_to_dial(t0), Some(a(1)));
        assert_eq!(c.way(&a(1), &ways), plain, "plaintext over TCP first");
        assert!(c.on_refused(a(1), &ways, false, t0));
        assert_eq!(c.next_to_dial(t0), Some(a(1)), "dialled again at once");
        assert_eq!(c.way(&a(1), &ways), mse);
        assert!(c.on_refused(a(1), &ways, false, t0));
        assert_eq!(c.next_to_dial(t0), Some(a(1)));
        assert_eq!(c.way(&a(1), &ways), utp);
        c.on_closed(a(1), true, t0);
        assert_eq!(c.way(&a(1), &ways), utp, "kept after a connection that worked");
        assert_eq!(c.next_to_dial(t0 + secs(10)), Some(a(1)));
        assert!(!c.on_refused(a(1), &ways, false, t0), "none left: a failure");
        assert_eq!(c.way(&a(1), &ways), plain, "and the next dial starts over");
        assert_eq!(c.next_to_dial(t0 + secs(1)), None, "backing off");
        // A TCP connect that fails goes straight to uTP; when that fails too (no answer), the next dial, after
        // the back-off, is TCP again: the peer may just not have been up yet.
        c.add(a(2));
        assert_eq!(c.next_to_dial(t0), Some(a(2)));
        assert!(c.on_refused(a(2), &ways, true, t0));
        assert_eq!(c.way(&a(2), &ways), utp);
        assert_eq!(c.next_to_dial(t0), Some(a(2)));
        c.on_closed(a(2), false, t0);
        assert_eq!(c.way(&a(2), &ways), plain);
    }
}
