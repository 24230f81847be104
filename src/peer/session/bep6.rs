//! The BEP 6 (fast extension) side of `PeerSession`: explicit rejects of what we will not serve, the
//! allowed-fast set we offer, and the one the peer offers us.
//!
//! Owns: nothing of its own; these are `PeerSession` methods over its fields, kept apart so that the state
//! machine's file stays readable. Must not: touch sockets, files or the clock (as the session).
//!
//! <https://www.bittorrent.org/beps/bep_0006.html>

use std::net::IpAddr;

use super::{PeerSession, TorrentContext, MAX_ALLOWED_FAST_IN};
use crate::bitfield::Bitfield;
use crate::geometry::BlockRef;
use crate::peer::fast::{allowed_fast_set, ALLOWED_FAST_COUNT};
use crate::swarm::Swarm;
use crate::time::Timestamp;
use crate::wire::Frame;

impl PeerSession {
    /// BEP 6: tells the peer we will not serve `block`.
    pub(super) fn reject(&mut self, block: BlockRef) {
        self.rejects_sent += 1;
        self.record(crate::peer::trace::SessionEvent::RejectSent(block));
        self.send(Frame::RejectRequest { piece: block.piece, offset: block.offset, len: block.len });
    }

    /// Drops the peer's queued requests that match `which`, rejecting each one with the fast extension.
    pub(super) fn reject_queued(&mut self, mut which: impl FnMut(&BlockRef) -> bool) {
        if !self.fast {
            self.requests.retain(|b| !which(b));
            return;
        }
        let mut i = 0;
        while i < self.requests.len() {
            if which(&self.requests[i]) {
                if let Some(block) = self.requests.remove(i) {
                    self.reject(block);
                }
            } else {
                i += 1;
            }
        }
    }

    /// BEP 6: offers the peer its allowed-fast set (k = 10 as libtorrent, IPv4 only), once, when it first
    /// says it is interested (as libtorrent does): by then its pieces are known, and those are left out.
    pub(super) fn send_allowed_fast_set(&mut self, ctx: &TorrentContext) {
        self.allowed_out_sent = true;
        let Some(IpAddr::V4(ip)) = self.peer_ip else {
            return;
        };
        let set = allowed_fast_set(ip, &ctx.info_hash, ctx.geometry.piece_count(), ALLOWED_FAST_COUNT);
        for piece in set {
            if !self.peer_has.get(piece) {
                self.allowed_out.push(piece);
                self.send(Frame::AllowedFast { piece });
            }
        }
    }

    /// The peer lets us request `piece` while it chokes us.
    pub(super) fn on_allowed_fast(&mut self, piece: u32, swarm: &mut Swarm, now: Timestamp) {
        if self.allowed_in.contains(&piece) || self.allowed_in.len() >= MAX_ALLOWED_FAST_IN {
            return;
        }
        self.allowed_in.push(piece);
        if self.peer_has.get(piece) {
            self.mark_fast_pickable(piece);
            self.fill_requests(swarm, now);
        }
    }

    /// `piece` is both allowed fast and had by the peer: we may ask for it while choked.
    pub(super) fn mark_fast_pickable(&mut self, piece: u32) {
        let n = self.peer_has.len();
        self.fast_pickable.get_or_insert_with(|| Bitfield::new(n)).set(piece);
    }
}
