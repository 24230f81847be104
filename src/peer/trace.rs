//! What one peer session records for `--trace`: plain, `Copy` facts, no time and no peer number (the
//! engine stamps both when it takes them).
//!
//! Owns: `SessionEvent` and the session's bounded recording of them (`SessionTrace`).
//! Must not: format or write anything (that is `observe::trace`), or allocate per event: the buffer is
//! reused, and a session that records more than `MAX_PENDING` events between two drains counts the rest
//! as lost instead of growing.

use std::time::Duration;

use crate::geometry::BlockRef;

/// Events a session keeps between two drains by the engine (which drains after every read pass and at
/// the end of every turn, so this bounds one read budget's worth of blocks and requests).
pub const MAX_PENDING: usize = 4096;

/// One fact about a peer's conversation, in the order it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The peer's BEP 3 handshake: its raw peer id (the client is decoded when written) and reserved bits.
    Handshake {
        peer_id: [u8; 20],
        reserved: [u8; 8],
    },
    /// The peer's BEP 10 handshake: its request queue limit and the extensions we use with it.
    Extended {
        reqq: Option<u32>,
        ut_metadata: bool,
        ut_pex: bool,
        upload_only: bool,
    },
    /// A bitfield, `have all` or `have none`: how many pieces the peer has now.
    Bitfield {
        pieces: u32,
    },
    Have {
        piece: u32,
    },
    /// The peer chokes (`true`) or unchokes us.
    PeerChoke(bool),
    /// The peer is interested in us or not.
    PeerInterested(bool),
    /// We choke (`true`) or unchoke the peer.
    AmChoke(bool),
    /// We are interested in the peer or not.
    AmInterested(bool),
    /// We requested a block.
    Request(BlockRef),
    /// A block arrived, `latency` after its request; `fresh` is false for a duplicate (waste).
    Block {
        block: BlockRef,
        latency: Duration,
        fresh: bool,
    },
    /// We cancelled a request (endgame: another peer delivered the block).
    CancelSent(BlockRef),
    /// The peer cancelled one of its requests.
    CancelReceived(BlockRef),
    /// We rejected one of the peer's requests (BEP 6).
    RejectSent(BlockRef),
    /// The peer rejected one of our requests (BEP 6).
    RejectReceived(BlockRef),
    /// Requests of ours that went unanswered for `pipeline::REQUEST_TIMEOUT` went back to the pool.
    RequestsTimedOut {
        count: u32,
    },
}

/// A session's pending events: `None` inside `PeerSession` when tracing is off (one branch per site).
#[derive(Debug, Default)]
pub struct SessionTrace {
    events: Vec<SessionEvent>,
    /// Events not kept because `events` was full.
    lost: u64,
}

impl SessionTrace {
    pub fn record(&mut self, event: SessionEvent) {
        if self.events.len() < MAX_PENDING {
            self.events.push(event);
        } else {
            self.lost += 1;
        }
    }

    /// Hands every pending event to `f` in order, then how many were lost since the last drain.
    pub fn drain(&mut self, mut f: impl FnMut(SessionEvent)) -> u64 {
        for event in self.events.drain(..) {
            f(event);
        }
        std::mem::take(&mut self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_trace_full_counts_lost_and_drain_empties() {
        let mut t = SessionTrace::default();
        for piece in 0..MAX_PENDING as u32 + 3 {
            t.record(SessionEvent::Have { piece });
        }
        let mut seen = 0;
        assert_eq!(t.drain(|_| seen += 1), 3);
        assert_eq!(seen, MAX_PENDING);
        assert_eq!(t.drain(|_| seen += 1), 0);
        assert_eq!(seen, MAX_PENDING);
    }
}
