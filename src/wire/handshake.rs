//! The 68-byte BEP 3 handshake and its reserved bits.
//!
//! Owns: handshake layout, parse and encode. Must not: decide whether the info-hash is acceptable
//! (the session does) or touch sockets.

use super::DecodeError;
use crate::metainfo::InfoHash;

pub const HANDSHAKE_LEN: usize = 68;
const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Reserved byte 5, bit 0x10: BEP 10 extension protocol.
pub const RESERVED_EXTENSION_PROTOCOL: (usize, u8) = (5, 0x10);
/// Reserved byte 7, bit 0x04: BEP 6 fast extension.
pub const RESERVED_FAST: (usize, u8) = (7, 0x04);
/// BEP 5: the sender runs a DHT node and may send a `port` message.
pub const RESERVED_DHT: (usize, u8) = (7, 0x01);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: [u8; 20],
}

impl Handshake {
    pub fn supports(&self, bit: (usize, u8)) -> bool {
        self.reserved[bit.0] & bit.1 != 0
    }

    /// Parses the first 68 bytes of `buf`; `None` until that many are present.
    pub fn parse(buf: &[u8]) -> Result<Option<Handshake>, DecodeError> {
        if !buf.is_empty() && buf[0] != 19 {
            return Err(DecodeError::WrongProtocolString);
        }
        // Reject a wrong protocol string as soon as its bytes are present.
        let seen = buf.len().min(20);
        if seen > 1 && buf[1..seen] != PROTOCOL[..seen - 1] {
            return Err(DecodeError::WrongProtocolString);
        }
        if buf.len() < HANDSHAKE_LEN {
            return Ok(None);
        }
        let mut reserved = [0; 8];
        reserved.copy_from_slice(&buf[20..28]);
        let mut info_hash = [0; 20];
        info_hash.copy_from_slice(&buf[28..48]);
        let mut peer_id = [0; 20];
        peer_id.copy_from_slice(&buf[48..68]);
        Ok(Some(Handshake { reserved, info_hash: InfoHash(info_hash), peer_id }))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(19);
        out.extend_from_slice(PROTOCOL);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.info_hash.0);
        out.extend_from_slice(&self.peer_id);
    }
}

/// A peer id as a short client name for logs: Azureus style `-TR3000-` → `TR3000`, else printable bytes.
pub fn client_name(peer_id: &[u8; 20]) -> String {
    if peer_id[0] == b'-' && peer_id[7] == b'-' && peer_id[1..7].iter().all(u8::is_ascii_alphanumeric) {
        return String::from_utf8_lossy(&peer_id[1..7]).into_owned();
    }
    peer_id[..8].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Handshake {
        let mut reserved = [0; 8];
        reserved[5] = 0x10;
        Handshake { reserved, info_hash: InfoHash([0xAB; 20]), peer_id: *b"-TR3000-abcdefghijkl" }
    }

    #[test]
    fn round_trip_and_reserved_bits() {
        let mut out = vec![];
        sample().encode(&mut out);
        assert_eq!(out.len(), HANDSHAKE_LEN);
        assert_eq!(&out[..20], b"\x13BitTorrent protocol");
        let parsed = Handshake::parse(&out).unwrap().unwrap();
        assert_eq!(parsed, sample());
        assert!(parsed.supports(RESERVED_EXTENSION_PROTOCOL));
        assert!(!parsed.supports(RESERVED_FAST));
        assert_eq!(Handshake::parse(&out[..67]).unwrap(), None);
        assert_eq!(client_name(&parsed.peer_id), "TR3000");
        assert_eq!(client_name(b"A2-1-36-0-\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"), "A2-1-36-");
    }

    #[test]
    fn wrong_protocol_string_is_rejected_early() {
        assert_eq!(Handshake::parse(b"\x12"), Err(DecodeError::WrongProtocolString));
        assert_eq!(Handshake::parse(b"\x13BitTorrent prot0"), Err(DecodeError::WrongProtocolString));
        assert_eq!(Handshake::parse(b"\x13BitTorrent"), Ok(None));
        assert_eq!(Handshake::parse(b"GET / HTTP/1.1\r\n"), Err(DecodeError::WrongProtocolString));
    }
}
