//! The engine's trace (`--trace`, `--stats-json`): every recordable fact of a run, typed and stamped with
//! the turn's `now`, in a bounded queue the driver drains each turn with `Engine::poll_trace`.
//!
//! Owns: `TraceEvent` / `TraceKind` (plain data: addresses are `SocketAddr`, reasons are enums, the peer
//! is its `PeerNo`, never reused in a run, with its address in its connect or accept event), the queue
//! and its bound, and what the once-a-second samples need to remember (the last totals they counted).
//! Must not: format or write anything (that is `observe::trace` and `observe::stats`), decode a peer id
//! (the writer does, through `observe::client`), or cost anything when tracing is off: the engine holds
//! `None` then, and each site is one branch.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::peer::trace::SessionEvent;
use crate::peer::DropReason;
use crate::swarm::PeerNo;
use crate::time::Timestamp;
use crate::tracker::message::Event as AnnounceEvent;

use super::TorrentId;

/// Events queued at most between two drains. The driver drains every turn, and a turn reads at most
/// `READ_BUDGET` per connection, so this is reached only if the driver stops draining; then events are
/// dropped and counted (`TraceKind::Lost`), never memory grown. About 80 bytes each.
pub const MAX_QUEUED: usize = 65_536;

/// One fact and when it happened (the turn's `now`: µs since the engine's clock started).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceEvent {
    pub at: Timestamp,
    pub kind: TraceKind,
}

/// How a connection is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Utp,
}

/// Everything the trace records. Tracker and web seed texts are the only heap data, on rare events.
#[derive(Clone, Debug, PartialEq)]
pub enum TraceKind {
    /// Events were dropped because the queue was full (or a session's own buffer was).
    Lost {
        count: u64,
    },
    /// We dial a peer.
    ConnectAttempt {
        peer: PeerNo,
        torrent: TorrentId,
        addr: SocketAddr,
        transport: Transport,
        encrypted: bool,
    },
    /// A peer dialled us (its torrent is named by its handshake).
    Accepted {
        peer: PeerNo,
        addr: SocketAddr,
        transport: Transport,
    },
    /// Our connect completed.
    Connected {
        peer: PeerNo,
    },
    /// Our connect did not complete.
    ConnectFailed {
        peer: PeerNo,
        reason: DropReason,
    },
    /// Something in a peer's conversation (see `SessionEvent`).
    Session {
        peer: PeerNo,
        torrent: TorrentId,
        event: SessionEvent,
    },
    /// Once a second per connected peer: payload bytes that second, requests in flight and the target.
    RateSample {
        peer: PeerNo,
        down: u64,
        up: u64,
        in_flight: u32,
        target: u32,
    },
    /// A connection that was up ended: why, and its payload totals.
    PeerDropped {
        peer: PeerNo,
        reason: DropReason,
        downloaded: u64,
        uploaded: u64,
    },
    /// Once a second per active torrent: payload bytes that second (all peers and web seeds) and peers.
    TorrentRate {
        torrent: TorrentId,
        down: u64,
        up: u64,
        peers: u32,
    },
    /// Once a second: the driver's turns that second and the longest, the disk queue's jobs waiting or
    /// running, and the disk executor's totals so far.
    Loop {
        turns: u64,
        longest_turn_us: u64,
        disk_pending: u32,
        write_calls: u64,
        bytes_written: u64,
        read_calls: u64,
        pieces_hashed: u64,
        bytes_read_back: u64,
    },
    PieceVerified {
        torrent: TorrentId,
        piece: u32,
    },
    PieceFailed {
        torrent: TorrentId,
        piece: u32,
    },
    Completed {
        torrent: TorrentId,
    },
    TrackerRequest {
        torrent: TorrentId,
        url: String,
        event: AnnounceEvent,
    },
    TrackerResponse {
        torrent: TorrentId,
        url: String,
        peers: usize,
        seeders: Option<u32>,
        leechers: Option<u32>,
    },
    /// A tracker's error, or (`warning`) its warning message.
    TrackerError {
        torrent: TorrentId,
        url: String,
        message: String,
        warning: bool,
    },
    MetadataReceived {
        torrent: TorrentId,
        size: u64,
        files: usize,
        peers: u32,
    },
    DhtLookup {
        torrent: TorrentId,
    },
    DhtPeers {
        torrent: TorrentId,
        count: usize,
    },
    DhtLookupDone {
        torrent: TorrentId,
        announced: usize,
    },
    /// Once a second while a torrent's web seeds delivered: bytes that second.
    WebSeedData {
        torrent: TorrentId,
        bytes: u64,
    },
    WebSeedGaveUp {
        torrent: TorrentId,
        url: String,
        why: String,
    },
}

/// The queue and what the samples remember; the engine holds one only while tracing.
#[derive(Debug, Default)]
pub struct TraceQueue {
    events: VecDeque<TraceEvent>,
    /// Dropped since the last `Lost` event was handed out.
    lost: u64,
    /// Per torrent: swarm downloaded and uploaded at the last `TorrentRate`, web seed bytes at the last
    /// `WebSeedData`.
    pub(super) totals: HashMap<TorrentId, (u64, u64, u64)>,
}

impl TraceQueue {
    pub fn push(&mut self, at: Timestamp, kind: TraceKind) {
        if self.events.len() < MAX_QUEUED {
            self.events.push_back(TraceEvent { at, kind });
        } else {
            self.lost += 1;
        }
    }

    pub fn add_lost(&mut self, count: u64) {
        self.lost += count;
    }

    /// The next event; a `Lost` event first whenever some were dropped since the last one.
    pub fn pop(&mut self) -> Option<TraceEvent> {
        if self.lost > 0 {
            let at = self.events.front().map_or(Timestamp::ZERO, |e| e.at);
            return Some(TraceEvent { at, kind: TraceKind::Lost { count: std::mem::take(&mut self.lost) } });
        }
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_drops_and_reports_the_count_first() {
        let mut q = TraceQueue::default();
        let at = Timestamp::from_secs(1);
        for piece in 0..MAX_QUEUED as u32 + 5 {
            q.push(at, TraceKind::PieceVerified { torrent: TorrentId(0), piece });
        }
        assert_eq!(q.pop().map(|e| e.kind), Some(TraceKind::Lost { count: 5 }));
        assert_eq!(q.pop().map(|e| e.kind), Some(TraceKind::PieceVerified { torrent: TorrentId(0), piece: 0 }));
        let mut n = 1;
        while q.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_QUEUED);
    }
}
