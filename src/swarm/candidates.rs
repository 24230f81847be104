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
    /// Dial with MSE next time (`--encryption prefer` switches after a refused handshake).
    encrypt: bool,
    /// The other way was tried after a refused handshake: a second refusal is a failure.
    switched: bool,
    /// Dial over uTP (a TCP connect to it failed before).
    utp: bool,
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
        self.known
            .insert(addr, Candidate { state: State::Ready, failures: 0, encrypt: false, switched: false, utp: false });
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

    /// Whether the next connection to `addr` goes over uTP (else TCP).
    pub fn wants_utp(&self, addr: &SocketAddr) -> bool {
        self.known.get(addr).is_some_and(|c| c.utp)
    }

    /// Our TCP connect to `addr` failed (refused or timed out): the next dial goes over uTP at once, and
    /// stays uTP for this address. A uTP connect that fails too is a failure like any other. True when it
    /// will be tried over uTP.
    pub fn on_tcp_connect_failed(&mut self, addr: SocketAddr, now: Timestamp) -> bool {
        let Some(c) = self.known.get_mut(&addr) else {
            return false;
        };
        if c.utp {
            self.on_closed(addr, false, now);
            return false;
        }
        c.utp = true;
        c.state = State::Ready;
        self.ready.push_front(addr);
        true
    }

    /// Whether the next connection to `addr` opens with MSE (else plaintext).
    pub fn wants_encryption(&self, addr: &SocketAddr) -> bool {
        self.known.get(addr).is_some_and(|c| c.encrypt)
    }

    /// Our connection to `addr` was closed by the peer right after our handshake (plaintext or MSE):
    /// it may accept only the other kind, as peers that require encryption do. The first time, the next
    /// dial goes at once the other way, and that choice is remembered; the second time it is a failure like
    /// any other. True when it will be tried the other way.
    pub fn on_handshake_refused(&mut self, addr: SocketAddr, now: Timestamp) -> bool {
        let Some(c) = self.known.get_mut(&addr) else {
            return false;
        };
        if c.switched {
            self.on_closed(addr, false, now);
            return false;
        }
        c.switched = true;
        c.encrypt = !c.encrypt;
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
            c.switched = false;
        } else {
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
    fn a_refused_handshake_is_tried_the_other_way_once_and_remembered() {
        let mut c = Candidates::new();
        let t0 = Timestamp::ZERO;
        c.add(a(1));
        assert_eq!(c.next_to_dial(t0), Some(a(1)));
        assert!(!c.wants_encryption(&a(1)), "plaintext first");
        assert!(c.on_handshake_refused(a(1), t0), "switched");
        assert_eq!(c.next_to_dial(t0), Some(a(1)), "dialled again at once");
        assert!(c.wants_encryption(&a(1)));
        c.on_closed(a(1), true, t0);
        assert!(c.wants_encryption(&a(1)), "remembered after a good connection");
        assert_eq!(c.next_to_dial(t0 + secs(10)), Some(a(1)));
        assert!(c.on_handshake_refused(a(1), t0), "a good connection in between: may switch again");
        assert!(!c.wants_encryption(&a(1)));
        assert_eq!(c.next_to_dial(t0), Some(a(1)));
        assert!(!c.on_handshake_refused(a(1), t0), "refused both ways: a failure");
        assert_eq!(c.next_to_dial(t0 + secs(1)), None, "backing off");
    }
}
