//! Peer wire codec (BEP 3, with the ids of BEP 6 and BEP 10 recognised): the byte layout of length-prefixed
//! messages.
//!
//! Owns: framing, each message id's exact length rule, the frame-length limit checked as soon as the
//! 4-byte prefix is present, and encoding into caller buffers.
//! Must not: read or write sockets, allocate, or know which pieces we want. Frames borrow the caller's
//! bytes; a `piece` payload is a slice of the read buffer, written to disk from there.
//!
//! <https://www.bittorrent.org/beps/bep_0003.html#peer-messages>

pub mod extension;
pub mod handshake;
pub mod mse;
pub mod pex;
pub mod ut_metadata;

use std::fmt;

/// Why bytes from a peer are not a well-formed handshake or frame. The peer layer maps each to a
/// `PeerMisbehaved` reason; the codec itself knows nothing about peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The first bytes are not `19` `BitTorrent protocol`.
    WrongProtocolString,
    /// A length prefix above the limit for this torrent, seen before the body arrives.
    FrameTooLong { len: u32, max: u32 },
    /// A message whose length is illegal for its id.
    BadLength { id: u8, len: u32 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::WrongProtocolString => write!(f, "not a BitTorrent handshake"),
            DecodeError::FrameTooLong { len, max } => write!(f, "frame of {len} bytes exceeds the {max}-byte limit"),
            DecodeError::BadLength { id, len } => write!(f, "message id {id} with illegal length {len}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Message ids. BEP 3: 0–8; BEP 5 (DHT): 9; BEP 6 (fast): 13–17; BEP 10 (extension protocol): 20.
pub mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST_PIECE: u8 = 13;
    pub const HAVE_ALL: u8 = 14;
    pub const HAVE_NONE: u8 = 15;
    pub const REJECT_REQUEST: u8 = 16;
    pub const ALLOWED_FAST: u8 = 17;
    pub const EXTENDED: u8 = 20;
}

/// Bytes of a `piece` message before its payload: length prefix, id, index, begin.
pub const PIECE_HEADER_LEN: usize = 4 + 1 + 4 + 4;
/// A whole `request` or `cancel` message on the wire.
pub const REQUEST_FRAME_LEN: usize = 4 + 1 + 12;

/// One decoded message. Borrowed payloads point into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have {
        piece: u32,
    },
    Bitfield(&'a [u8]),
    Request {
        piece: u32,
        offset: u32,
        len: u32,
    },
    Piece {
        piece: u32,
        offset: u32,
        data: &'a [u8],
    },
    Cancel {
        piece: u32,
        offset: u32,
        len: u32,
    },
    Port(u16),
    HaveAll,
    HaveNone,
    RejectRequest {
        piece: u32,
        offset: u32,
        len: u32,
    },
    SuggestPiece {
        piece: u32,
    },
    AllowedFast {
        piece: u32,
    },
    /// BEP 10: the extended message id and its payload.
    Extended {
        ext_id: u8,
        payload: &'a [u8],
    },
    /// An id we do not know: skipped, within the length limit (PROTOCOL-NOTES: do not treat as corrupt).
    Unknown {
        id: u8,
    },
}

/// The largest body (id + payload) this connection accepts; fixed when the connection opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    pub max_body: u32,
}

impl FrameLimits {
    /// Room for a 16 KiB piece block, a bitfield for `piece_count` pieces, and a BEP 9 metadata block
    /// with its bencoded header.
    pub fn for_torrent(piece_count: u32) -> Self {
        let piece = 1 + 8 + crate::geometry::BLOCK_LEN;
        let bitfield = 1 + piece_count.div_ceil(8);
        let extension = 2 + 16 * 1024 + 1024;
        FrameLimits { max_body: piece.max(bitfield).max(extension) }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame, and how many bytes of input it used.
    Frame { frame: Frame<'a>, len: usize },
    /// Not a whole frame yet.
    NeedMore,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes the first frame of `buf`, checking the length prefix against `limits` as soon as it is
/// present, before waiting for the body.
pub fn decode<'a>(buf: &'a [u8], limits: &FrameLimits) -> Result<Decoded<'a>, DecodeError> {
    if buf.len() < 4 {
        return Ok(Decoded::NeedMore);
    }
    let len = be32(buf);
    if len == 0 {
        return Ok(Decoded::Frame { frame: Frame::KeepAlive, len: 4 });
    }
    if len > limits.max_body {
        return Err(DecodeError::FrameTooLong { len, max: limits.max_body });
    }
    let total = 4 + len as usize;
    if buf.len() < total {
        return Ok(Decoded::NeedMore);
    }
    let msg_id = buf[4];
    let body = &buf[5..total];
    let exact = |want: usize| {
        if body.len() == want {
            Ok(())
        } else {
            Err(DecodeError::BadLength { id: msg_id, len })
        }
    };
    let frame = match msg_id {
        id::CHOKE => exact(0).map(|_| Frame::Choke)?,
        id::UNCHOKE => exact(0).map(|_| Frame::Unchoke)?,
        id::INTERESTED => exact(0).map(|_| Frame::Interested)?,
        id::NOT_INTERESTED => exact(0).map(|_| Frame::NotInterested)?,
        id::HAVE => exact(4).map(|_| Frame::Have { piece: be32(body) })?,
        id::BITFIELD => Frame::Bitfield(body),
        id::REQUEST => {
            exact(12)?;
            Frame::Request { piece: be32(body), offset: be32(&body[4..]), len: be32(&body[8..]) }
        }
        id::PIECE => {
            if body.len() < 8 {
                return Err(DecodeError::BadLength { id: msg_id, len });
            }
            Frame::Piece { piece: be32(body), offset: be32(&body[4..]), data: &body[8..] }
        }
        id::CANCEL => {
            exact(12)?;
            Frame::Cancel { piece: be32(body), offset: be32(&body[4..]), len: be32(&body[8..]) }
        }
        id::PORT => exact(2).map(|_| Frame::Port(u16::from_be_bytes([body[0], body[1]])))?,
        id::SUGGEST_PIECE => exact(4).map(|_| Frame::SuggestPiece { piece: be32(body) })?,
        id::HAVE_ALL => exact(0).map(|_| Frame::HaveAll)?,
        id::HAVE_NONE => exact(0).map(|_| Frame::HaveNone)?,
        id::REJECT_REQUEST => {
            exact(12)?;
            Frame::RejectRequest { piece: be32(body), offset: be32(&body[4..]), len: be32(&body[8..]) }
        }
        id::ALLOWED_FAST => exact(4).map(|_| Frame::AllowedFast { piece: be32(body) })?,
        id::EXTENDED => {
            if body.is_empty() {
                return Err(DecodeError::BadLength { id: msg_id, len });
            }
            Frame::Extended { ext_id: body[0], payload: &body[1..] }
        }
        other => Frame::Unknown { id: other },
    };
    Ok(Decoded::Frame { frame, len: total })
}

fn put_header(out: &mut Vec<u8>, body_len: usize, msg_id: u8) {
    out.extend_from_slice(&(body_len as u32 + 1).to_be_bytes());
    out.push(msg_id);
}

fn put_triple(out: &mut Vec<u8>, msg_id: u8, a: u32, b: u32, c: u32) {
    put_header(out, 12, msg_id);
    out.extend_from_slice(&a.to_be_bytes());
    out.extend_from_slice(&b.to_be_bytes());
    out.extend_from_slice(&c.to_be_bytes());
}

/// Appends `frame`'s wire form to `out`.
pub fn encode(frame: &Frame<'_>, out: &mut Vec<u8>) {
    match *frame {
        Frame::KeepAlive => out.extend_from_slice(&[0, 0, 0, 0]),
        Frame::Choke => put_header(out, 0, id::CHOKE),
        Frame::Unchoke => put_header(out, 0, id::UNCHOKE),
        Frame::Interested => put_header(out, 0, id::INTERESTED),
        Frame::NotInterested => put_header(out, 0, id::NOT_INTERESTED),
        Frame::Have { piece } => {
            put_header(out, 4, id::HAVE);
            out.extend_from_slice(&piece.to_be_bytes());
        }
        Frame::Bitfield(bits) => {
            put_header(out, bits.len(), id::BITFIELD);
            out.extend_from_slice(bits);
        }
        Frame::Request { piece, offset, len } => put_triple(out, id::REQUEST, piece, offset, len),
        Frame::Piece { piece, offset, data } => {
            encode_piece_header(piece, offset, data.len() as u32, out);
            out.extend_from_slice(data);
        }
        Frame::Cancel { piece, offset, len } => put_triple(out, id::CANCEL, piece, offset, len),
        Frame::Port(port) => {
            put_header(out, 2, id::PORT);
            out.extend_from_slice(&port.to_be_bytes());
        }
        Frame::HaveAll => put_header(out, 0, id::HAVE_ALL),
        Frame::HaveNone => put_header(out, 0, id::HAVE_NONE),
        Frame::RejectRequest { piece, offset, len } => put_triple(out, id::REJECT_REQUEST, piece, offset, len),
        Frame::SuggestPiece { piece } => {
            put_header(out, 4, id::SUGGEST_PIECE);
            out.extend_from_slice(&piece.to_be_bytes());
        }
        Frame::AllowedFast { piece } => {
            put_header(out, 4, id::ALLOWED_FAST);
            out.extend_from_slice(&piece.to_be_bytes());
        }
        Frame::Extended { ext_id, payload } => {
            put_header(out, 1 + payload.len(), id::EXTENDED);
            out.push(ext_id);
            out.extend_from_slice(payload);
        }
        Frame::Unknown { id } => put_header(out, 0, id),
    }
}

/// Appends the 13-byte header of a `piece` message whose `len` payload bytes the caller appends next
/// (read from disk straight into the write buffer).
pub fn encode_piece_header(piece: u32, offset: u32, len: u32, out: &mut Vec<u8>) {
    put_header(out, 8 + len as usize, id::PIECE);
    out.extend_from_slice(&piece.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
}

#[cfg(test)]
mod tests;
