//! What one announce or scrape says and hears, shared by the HTTP and UDP codecs.
//!
//! Owns: `Event`, `AnnounceParams`, `AnnounceReply`, `ScrapeCounts`, `Answer`, and the per-reply peer cap.
//! Must not: encode or decode bytes (that is `http` and `udp`), or hold state.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::Transfer;
use crate::metainfo::InfoHash;

/// At most this many peers are taken from one reply; a 512 KiB compact list could hold 87,000.
pub const MAX_PEERS_PER_REPLY: usize = 4096;

/// The announce `event` (BEP 3); the discriminants are BEP 15's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    None = 0,
    Completed = 1,
    Started = 2,
    Stopped = 3,
}

impl Event {
    /// The HTTP `event=` value; `None` sends no parameter.
    pub fn as_query(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Completed => Some("completed"),
            Event::Started => Some("started"),
            Event::Stopped => Some("stopped"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_query().unwrap_or("update"))
    }
}

/// Everything one announce sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceParams {
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
    pub port: u16,
    pub transfer: Transfer,
    pub event: Event,
    pub numwant: u32,
    pub key: u32,
    /// The `tracker id` this tracker gave us earlier, echoed as `trackerid` (HTTP only).
    pub tracker_id: Option<Vec<u8>>,
}

/// A successful announce reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceReply {
    pub interval: Option<Duration>,
    pub min_interval: Option<Duration>,
    pub tracker_id: Option<Vec<u8>>,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// Peers in reply order, at most [`MAX_PEERS_PER_REPLY`].
    pub peers: Vec<SocketAddr>,
    /// The tracker's `warning message`, sanitised.
    pub warning: Option<String>,
}

/// One torrent's scrape counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeCounts {
    pub seeders: u32,
    pub leechers: u32,
    pub completed: u32,
}

impl fmt::Display for ScrapeCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} seeders, {} leechers, {} completed", self.seeders, self.leechers, self.completed)
    }
}

/// What a finished request hands back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Announce(AnnounceReply),
    Scrape(ScrapeCounts),
}
