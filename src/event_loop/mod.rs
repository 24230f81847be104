//! The event loop: the only code that touches sockets (through mio) and the clock.
//!
//! Owns: the `mio::Poll`, every registered source, the timer wheel's keys, and the order of work in a turn.
//! Must not: decide protocol; it delegates to sessions, the swarm and the tracker machines.

pub mod scrape;
pub mod token;
pub mod trackers;
