//! One remote peer: its protocol state machine, its request pipeline, its buffers, and why we hang up.
//!
//! Owns: `PeerSession` (sans-I/O BEP 3 logic), `Pipeline` (requests in flight, depth from the
//! bandwidth-delay product), `ReadBuf`/`WriteBuf`, and the typed reasons to drop a peer.
//! Must not: touch sockets, files or the clock, or see another session (cross-peer effects go through
//! `Swarm` or come back to the loop as effects).

pub mod buffers;
pub mod encryption;
pub mod fast;
pub mod pipeline;
pub mod session;
mod timer;
pub mod trace;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

use crate::rng::Entropy;

/// Our peer id: Azureus-style client tag, then 12 characters from `entropy` (the OS CSPRNG in
/// production). Every peer sees it, so it must not reveal the state of any generator.
pub fn our_peer_id(entropy: &mut Entropy) -> [u8; 20] {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = *b"-RL0001-............";
    entropy.fill_from_alphabet(&mut id[8..], ALPHABET);
    id
}

/// Every reason to distrust a peer: one line in the log, assertable in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMisbehaved {
    WrongProtocolString,
    WrongInfoHash,
    /// The peer sent our own peer id: we connected to ourselves.
    OwnPeerId,
    FrameTooLong {
        len: u32,
        max: u32,
    },
    BadLength {
        id: u8,
        len: u32,
    },
    BitfieldNotFirst,
    BitfieldWrongLength {
        got: u32,
        want: u32,
    },
    BitfieldSpareBits,
    IndexOutOfRange {
        index: u32,
    },
    UnrequestedBlock {
        piece: u32,
        offset: u32,
    },
    OversizedRequest {
        len: u32,
    },
    BadRequest {
        piece: u32,
        offset: u32,
        len: u32,
    },
    RequestedMissingPiece {
        piece: u32,
    },
    RequestFlood,
    MessageBeforeHandshake,
    /// BEP 6: a reject that cannot answer any request of ours (off our block grid).
    UnrequestedReject {
        piece: u32,
        offset: u32,
        len: u32,
    },
}

impl fmt::Display for PeerMisbehaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PeerMisbehaved::WrongProtocolString => write!(f, "not a BitTorrent handshake"),
            PeerMisbehaved::WrongInfoHash => write!(f, "handshake for another torrent"),
            PeerMisbehaved::OwnPeerId => write!(f, "connected to ourselves"),
            PeerMisbehaved::FrameTooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            PeerMisbehaved::BadLength { id, len } => {
                write!(f, "message id {id} with illegal length {len}")
            }
            PeerMisbehaved::BitfieldNotFirst => write!(f, "bitfield after the first message"),
            PeerMisbehaved::BitfieldWrongLength { got, want } => {
                write!(f, "bitfield of {got} bytes, expected {want}")
            }
            PeerMisbehaved::BitfieldSpareBits => write!(f, "bitfield with spare bits set"),
            PeerMisbehaved::IndexOutOfRange { index } => {
                write!(f, "piece index {index} out of range")
            }
            PeerMisbehaved::UnrequestedBlock { piece, offset } => {
                write!(f, "sent block {piece}+{offset} that was never requested")
            }
            PeerMisbehaved::OversizedRequest { len } => {
                write!(f, "requested a block of {len} bytes")
            }
            PeerMisbehaved::BadRequest { piece, offset, len } => {
                write!(f, "requested {len} bytes at {piece}+{offset}, outside the piece")
            }
            PeerMisbehaved::RequestedMissingPiece { piece } => {
                write!(f, "requested piece {piece} which we do not have")
            }
            PeerMisbehaved::RequestFlood => write!(f, "too many outstanding requests"),
            PeerMisbehaved::MessageBeforeHandshake => write!(f, "message before the handshake"),
            PeerMisbehaved::UnrequestedReject { piece, offset, len } => {
                write!(f, "rejected {len} bytes at {piece}+{offset}, which we never requested")
            }
        }
    }
}

/// Why we hung up on a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    ConnectTimedOut,
    ConnectFailed(io::ErrorKind),
    HandshakeTimedOut,
    ClosedByPeer,
    /// Nothing received for `session::DROP_SILENT_AFTER`.
    Silent,
    Io(io::ErrorKind),
    Misbehaved(PeerMisbehaved),
    /// Took part in too many pieces that failed their hash check.
    Banned,
    /// Seed meets seed, a duplicate connection, or over `--max-peers`.
    NotNeeded,
    /// rill is shutting down.
    Shutdown,
    /// The peer's way of connecting is not one `--encryption` allows (plaintext under `require`, MSE under
    /// `off`).
    EncryptionPolicy,
}

/// The codec's reasons are misbehaviour when they come from a peer.
impl From<crate::wire::DecodeError> for PeerMisbehaved {
    fn from(e: crate::wire::DecodeError) -> Self {
        use crate::wire::DecodeError;
        match e {
            DecodeError::WrongProtocolString => PeerMisbehaved::WrongProtocolString,
            DecodeError::FrameTooLong { len, max } => PeerMisbehaved::FrameTooLong { len, max },
            DecodeError::BadLength { id, len } => PeerMisbehaved::BadLength { id, len },
        }
    }
}

impl From<PeerMisbehaved> for DropReason {
    fn from(m: PeerMisbehaved) -> Self {
        DropReason::Misbehaved(m)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::ConnectTimedOut => write!(f, "connect timed out"),
            DropReason::EncryptionPolicy => write!(f, "refused by --encryption"),
            DropReason::ConnectFailed(kind) => write!(f, "connect failed: {kind}"),
            DropReason::HandshakeTimedOut => write!(f, "handshake timed out"),
            DropReason::ClosedByPeer => write!(f, "closed by peer"),
            DropReason::Silent => write!(f, "silent for too long"),
            DropReason::Io(kind) => write!(f, "i/o error: {kind}"),
            DropReason::Misbehaved(m) => write!(f, "misbehaved: {m}"),
            DropReason::Banned => write!(f, "banned after failed pieces"),
            DropReason::NotNeeded => write!(f, "not needed"),
            DropReason::Shutdown => write!(f, "shutting down"),
        }
    }
}
