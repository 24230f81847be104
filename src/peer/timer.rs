//! A peer session's deadlines as one table, after quinn-proto's `connection/timer.rs`: one enum names every
//! timer, one fixed array holds its deadline. `PeerSession::next_deadline` is the table's minimum and
//! `PeerSession::on_timeout` handles exactly the entries that are due, so the two cannot disagree.
//!
//! Owns: the list of a session's timers and one `Option<Timestamp>` for each.
//! Must not: decide when a timer is set or what its expiry does (the session does), or read the clock.

use crate::time::Timestamp;

/// Every timer of one session. The session keeps each one set for as long as it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Our TCP connect must complete by then (only while `AwaitingConnect`).
    Connect = 0,
    /// The peer's handshake must arrive by then (only while `AwaitingHandshake`).
    Handshake = 1,
    /// Nothing received for `DROP_SILENT_AFTER`: drop the peer.
    Silence = 2,
    /// Nothing sent for `KEEPALIVE_AFTER`: send a keep-alive.
    KeepAlive = 3,
    /// The pipeline's next deadline: its oldest request times out, or a released one is forgotten.
    Requests = 4,
}

impl Timer {
    /// Every timer, in the order `on_timeout` handles the due ones: those that end the session first.
    pub const ALL: [Timer; 5] = [Timer::Connect, Timer::Handshake, Timer::Silence, Timer::KeepAlive, Timer::Requests];
}

/// One deadline per `Timer`; `None` is a stopped timer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerTable {
    at: [Option<Timestamp>; Timer::ALL.len()],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at: Timestamp) {
        self.at[timer as usize] = Some(at);
    }

    pub fn stop(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// Sets `timer` to `at`, or stops it when `at` is `None`.
    pub fn set_or_stop(&mut self, timer: Timer, at: Option<Timestamp>) {
        self.at[timer as usize] = at;
    }

    /// The earliest deadline of any running timer.
    pub fn next(&self) -> Option<Timestamp> {
        self.at.iter().flatten().min().copied()
    }

    /// Whether `timer` runs and is due at `now`.
    pub fn is_expired(&self, timer: Timer, now: Timestamp) -> bool {
        self.at[timer as usize].is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timer_has_its_own_slot_in_order() {
        for (i, timer) in Timer::ALL.iter().enumerate() {
            assert_eq!(*timer as usize, i, "{timer:?}");
        }
    }

    #[test]
    fn next_is_the_earliest_running_timer_and_expiry_is_inclusive() {
        let t = Timestamp::from_secs;
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::KeepAlive, t(120));
        table.set(Timer::Silence, t(180));
        table.set_or_stop(Timer::Requests, Some(t(30)));
        assert_eq!(table.next(), Some(t(30)));
        assert!(!table.is_expired(Timer::Requests, t(29)));
        assert!(table.is_expired(Timer::Requests, t(30)));
        assert!(!table.is_expired(Timer::Connect, t(1_000)), "a stopped timer never expires");
        table.set_or_stop(Timer::Requests, None);
        assert_eq!(table.next(), Some(t(120)));
        table.stop(Timer::KeepAlive);
        assert_eq!(table.next(), Some(t(180)));
    }
}
