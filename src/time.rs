//! Time as a value: `Timestamp` is microseconds since the loop started.
//!
//! Owns: the `Timestamp` type and its arithmetic, and `Clock`, the one place that reads the OS clock.
//! Must not: be read by protocol logic. Only `event_loop` holds a `Clock`; everything else is handed `now`.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A moment on the loop's monotonic timeline, in microseconds since the loop started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);
    /// Later than any time a run reaches (for minimum searches).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis * 1_000)
    }
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs * 1_000_000)
    }
    pub const fn as_micros(self) -> u64 {
        self.0
    }
    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    /// Saturating at `Timestamp::ZERO`.
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }
}

impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    /// Saturating: a later `rhs` gives zero.
    fn sub(self, rhs: Timestamp) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// `Duration` shorthands that keep protocol constants and tests readable.
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
pub const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The loop's clock. Reading it is the only way a `Timestamp` comes into being from the OS.
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock { origin: std::time::Instant::now() }
    }
    pub fn now(&self) -> Timestamp {
        let micros = self.origin.elapsed().as_micros();
        Timestamp(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_rounds_nothing() {
        let t = Timestamp::from_millis(1_500);
        assert_eq!(t + millis(500), Timestamp::from_secs(2));
        assert_eq!(Timestamp::from_secs(2) - t, millis(500));
        assert_eq!(t - Timestamp::from_secs(2), Duration::ZERO);
        assert_eq!(t.to_string(), "1.500000s");
    }
}
