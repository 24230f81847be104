//! `mio::Token` ⇄ (source kind, slab slot) packing.
//!
//! Owns: the token layout. Every registered source's token names what it is and which slab slot holds it,
//! so dispatch decodes it into a closed enum and ignores anything unknown (no guessing, STYLE §8.10).
//! Must not: hold state.

use mio::Token;

const KIND_BITS: usize = 4;
const KIND_MASK: usize = (1 << KIND_BITS) - 1;

/// What a readiness event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The listening socket for incoming peers.
    Listener,
    /// A peer connection in the peers slab.
    Peer(usize),
    /// A tracker HTTP connection in the tracker driver's slab.
    TrackerHttp(usize),
    /// The shared IPv4 UDP socket for BEP 15 trackers.
    TrackerUdp4,
    /// The shared IPv6 UDP socket for BEP 15 trackers.
    TrackerUdp6,
    /// The loop's `mio::Waker`: DNS answers.
    Waker,
    /// SIGINT / SIGTERM, and SIGWINCH under the full-screen view (signal-hook's self-pipe).
    Signals,
    /// The RPC server's listening socket (`rill daemon`).
    RpcListener,
    /// An RPC connection, by the RPC server's connection id.
    Rpc(usize),
    /// Keys on stdin (the full-screen view's terminal).
    Stdin,
}

const LISTENER: usize = 0;
const PEER: usize = 1;
const TRACKER_HTTP: usize = 2;
const TRACKER_UDP4: usize = 3;
const TRACKER_UDP6: usize = 4;
const WAKER: usize = 5;
const SIGNALS: usize = 6;
const RPC_LISTENER: usize = 7;
const RPC: usize = 8;
const STDIN: usize = 9;

pub fn encode(source: Source) -> Token {
    let (kind, slot) = match source {
        Source::Listener => (LISTENER, 0),
        Source::Peer(slot) => (PEER, slot),
        Source::TrackerHttp(slot) => (TRACKER_HTTP, slot),
        Source::TrackerUdp4 => (TRACKER_UDP4, 0),
        Source::TrackerUdp6 => (TRACKER_UDP6, 0),
        Source::Waker => (WAKER, 0),
        Source::Signals => (SIGNALS, 0),
        Source::RpcListener => (RPC_LISTENER, 0),
        Source::Rpc(slot) => (RPC, slot),
        Source::Stdin => (STDIN, 0),
    };
    Token((slot << KIND_BITS) | kind)
}

/// `None` for a token no source of ours carries (ignored by the loop).
pub fn decode(token: Token) -> Option<Source> {
    let slot = token.0 >> KIND_BITS;
    match token.0 & KIND_MASK {
        LISTENER if slot == 0 => Some(Source::Listener),
        PEER => Some(Source::Peer(slot)),
        TRACKER_HTTP => Some(Source::TrackerHttp(slot)),
        TRACKER_UDP4 if slot == 0 => Some(Source::TrackerUdp4),
        TRACKER_UDP6 if slot == 0 => Some(Source::TrackerUdp6),
        WAKER if slot == 0 => Some(Source::Waker),
        SIGNALS if slot == 0 => Some(Source::Signals),
        RPC_LISTENER if slot == 0 => Some(Source::RpcListener),
        RPC => Some(Source::Rpc(slot)),
        STDIN if slot == 0 => Some(Source::Stdin),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_round_trips_and_unknown_tokens_decode_to_none() {
        for s in [
            Source::Listener,
            Source::Peer(0),
            Source::Peer(12345),
            Source::TrackerHttp(7),
            Source::TrackerUdp4,
            Source::TrackerUdp6,
            Source::Waker,
            Source::Signals,
            Source::RpcListener,
            Source::Rpc(0),
            Source::Rpc(31),
            Source::Stdin,
        ] {
            assert_eq!(decode(encode(s)), Some(s));
        }
        assert_eq!(decode(Token(15)), None);
        assert_eq!(decode(Token((1 << KIND_BITS) | STDIN)), None);
        assert_eq!(decode(Token((3 << KIND_BITS) | LISTENER)), None);
    }
}
