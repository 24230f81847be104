//! The uTP packet codec (BEP 29): the 20-byte header, the extension chain and the selective-ACK bitmask.
//!
//! Owns: the byte layout of a uTP datagram, decoding any outside bytes into a borrowed [`Packet`] with
//! bounded work (the extension chain is walked once, each link at least 2 bytes), and encoding a header,
//! an optional SACK and a payload into a caller's buffer.
//! Must not: keep state, allocate, or decide what a packet means for a connection (that is `conn.rs`).
//!
//! Layout (<https://www.bittorrent.org/beps/bep_0029.html>, "Header format"), big-endian:
//!
//! ```text
//!  0       4       8               16              24              32
//! +-------+-------+---------------+---------------+---------------+
//! | type  | ver   | extension     | connection_id                 |
//! +-------+-------+---------------+---------------+---------------+
//! | timestamp_microseconds                                        |
//! +---------------+---------------+---------------+---------------+
//! | timestamp_difference_microseconds                             |
//! +---------------+---------------+---------------+---------------+
//! | wnd_size                                                      |
//! +---------------+---------------+---------------+---------------+
//! | seq_nr                        | ack_nr                        |
//! +---------------+---------------+---------------+---------------+
//! ```
//!
//! Then, while the previous `extension` byte is non-zero, one extension: `[next extension][len][len bytes]`,
//! then the payload.

use std::fmt;

/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 20;
/// The only protocol version (BEP 29).
pub const VERSION: u8 = 1;
/// Extension 1: selective ACK.
pub const EXT_SACK: u8 = 1;
/// Most SACK bitmask bytes we read or write (256 packets past `ack_nr + 1`, as libtorrent's cap of 32
/// bytes); longer masks are accepted and their tail ignored.
pub const MAX_SACK_BYTES: usize = 32;

/// BEP 29 packet types (the high nibble of byte 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    /// `ST_DATA` (0): a payload, consuming one sequence number.
    Data,
    /// `ST_FIN` (1): the sender's last packet, consuming one sequence number.
    Fin,
    /// `ST_STATE` (2): an ACK without payload; does not consume a sequence number.
    State,
    /// `ST_RESET` (3): terminate the connection now.
    Reset,
    /// `ST_SYN` (4): open a connection, consuming one sequence number.
    Syn,
}

impl PacketType {
    fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }
    fn nibble(self) -> u8 {
        match self {
            PacketType::Data => 0,
            PacketType::Fin => 1,
            PacketType::State => 2,
            PacketType::Reset => 3,
            PacketType::Syn => 4,
        }
    }
}

/// The fixed header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: PacketType,
    pub connection_id: u16,
    /// The sender's clock when it sent this, in µs (wrapping).
    pub timestamp_us: u32,
    /// The sender's last measured one-way delay of our packets to it, in µs (wrapping clock difference).
    pub timestamp_difference_us: u32,
    /// The sender's free receive-buffer space, in bytes.
    pub wnd_size: u32,
    pub seq_nr: u16,
    pub ack_nr: u16,
}

/// One decoded datagram, borrowing the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The selective-ACK bitmask, at most [`MAX_SACK_BYTES`] (bit `i` of byte `j` = `ack_nr + 2 + 8j + i`).
    pub sack: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Why a datagram is not a uTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    Short { len: usize },
    /// Version nibble other than 1.
    Version(u8),
    /// Type nibble other than 0..=4.
    Type(u8),
    /// An extension's length runs past the end of the datagram.
    ExtensionTruncated,
    /// A SACK extension of length zero.
    EmptySack,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { len } => write!(f, "utp: datagram of {len} bytes is shorter than the header"),
            DecodeError::Version(v) => write!(f, "utp: unknown version {v}"),
            DecodeError::Type(t) => write!(f, "utp: unknown packet type {t}"),
            DecodeError::ExtensionTruncated => write!(f, "utp: extension runs past the end of the datagram"),
            DecodeError::EmptySack => write!(f, "utp: empty selective ACK"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes one datagram. Work is linear in its length; nothing is allocated.
pub fn decode(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    let version = bytes[0] & 0x0f;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = PacketType::from_nibble(bytes[0] >> 4).ok_or(DecodeError::Type(bytes[0] >> 4))?;
    let header = Header {
        kind,
        connection_id: be16(bytes, 2),
        timestamp_us: be32(bytes, 4),
        timestamp_difference_us: be32(bytes, 8),
        wnd_size: be32(bytes, 12),
        seq_nr: be16(bytes, 16),
        ack_nr: be16(bytes, 18),
    };
    // The extension chain: each link names the type of the next one (BEP 29, "extension").
    let mut next = bytes[1];
    let mut at = HEADER_LEN;
    let mut sack = None;
    while next != 0 {
        if bytes.len() - at < 2 {
            return Err(DecodeError::ExtensionTruncated);
        }
        let (this, len) = (next, usize::from(bytes[at + 1]));
        next = bytes[at];
        at += 2;
        if bytes.len() - at < len {
            return Err(DecodeError::ExtensionTruncated);
        }
        if this == EXT_SACK {
            if len == 0 {
                return Err(DecodeError::EmptySack);
            }
            // A second SACK is ignored; the first one wins.
            sack.get_or_insert(&bytes[at..at + len.min(MAX_SACK_BYTES)]);
        }
        // Unknown extensions (libtorrent's close reason, 2, among them) are skipped.
        at += len;
    }
    Ok(Packet { header, sack, payload: &bytes[at..] })
}

/// Bytes an encoded packet takes: header, the SACK extension if any, payload.
pub fn encoded_len(sack_len: usize, payload_len: usize) -> usize {
    HEADER_LEN + if sack_len > 0 { 2 + sack_len } else { 0 } + payload_len
}

/// Writes `header`, the SACK extension when `sack` is non-empty (its length a multiple of 4 and at most
/// [`MAX_SACK_BYTES`], which the caller guarantees), and `payload` into `out`; returns the bytes written,
/// or `None` when `out` is too small (nothing useful is written then).
pub fn encode_into(header: &Header, sack: &[u8], payload: &[u8], out: &mut [u8]) -> Option<usize> {
    debug_assert!(sack.len() <= MAX_SACK_BYTES && sack.len() % 4 == 0);
    let len = encoded_len(sack.len(), payload.len());
    if out.len() < len {
        return None;
    }
    out[0] = header.kind.nibble() << 4 | VERSION;
    out[1] = if sack.is_empty() { 0 } else { EXT_SACK };
    out[2..4].copy_from_slice(&header.connection_id.to_be_bytes());
    out[4..8].copy_from_slice(&header.timestamp_us.to_be_bytes());
    out[8..12].copy_from_slice(&header.timestamp_difference_us.to_be_bytes());
    out[12..16].copy_from_slice(&header.wnd_size.to_be_bytes());
    out[16..18].copy_from_slice(&header.seq_nr.to_be_bytes());
    out[18..20].copy_from_slice(&header.ack_nr.to_be_bytes());
    let mut at = HEADER_LEN;
    if !sack.is_empty() {
        out[at] = 0;
        out[at + 1] = sack.len() as u8;
        out[at + 2..at + 2 + sack.len()].copy_from_slice(sack);
        at += 2 + sack.len();
    }
    out[at..at + payload.len()].copy_from_slice(payload);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn header(kind: PacketType) -> Header {
        Header {
            kind,
            connection_id: 0x1234,
            timestamp_us: 0xdead_beef,
            timestamp_difference_us: 0x0102_0304,
            wnd_size: 0x0010_0000,
            seq_nr: 0xfffe,
            ack_nr: 7,
        }
    }

    const STATE_WITH_SACK: [u8; 26] = [
        0x21,
        0x01,
        0x12,
        0x34,
        0xde,
        0xad,
        0xbe,
        0xef,
        0x01,
        0x02,
        0x03,
        0x04,
        0x00,
        0x10,
        0x00,
        0x00,
        0xff,
        0xfe,
        0x00,
        0x07, // header
        0x00,
        0x04,
        0b0000_0101,
        0,
        0,
        0x80, // SACK: ack_nr+2, ack_nr+4, ack_nr+33
    ];

    #[test]
    fn state_with_sack_decodes_and_encodes_byte_exact() {
        let p = decode(&STATE_WITH_SACK).unwrap();
        assert_eq!(p.header, header(PacketType::State));
        assert_eq!(p.sack, Some(&STATE_WITH_SACK[22..]));
        assert!(p.payload.is_empty());
        let mut out = [0xa5u8; 40];
        let n = encode_into(&p.header, p.sack.unwrap(), p.payload, &mut out).unwrap();
        assert_eq!(&out[..n], &STATE_WITH_SACK);
        assert_eq!(out[n], 0xa5);
    }

    #[test]
    fn every_type_round_trips_with_payload() {
        for kind in [PacketType::Data, PacketType::Fin, PacketType::State, PacketType::Reset, PacketType::Syn] {
            let mut out = [0xa5u8; 64];
            let n = encode_into(&header(kind), &[], b"hello", &mut out).unwrap();
            assert_eq!(n, 25);
            assert_eq!(out[0] >> 4, kind.nibble());
            assert_eq!(out[0] & 15, 1);
            let p = decode(&out[..n]).unwrap();
            assert_eq!((p.header, p.sack, p.payload), (header(kind), None, &b"hello"[..]));
        }
    }

    #[test]
    fn unknown_extension_is_skipped_and_sack_found_after_it() {
        // header says extension 2 (close reason, 4 bytes), which chains to a SACK.
        let mut d = STATE_WITH_SACK[..20].to_vec();
        d[1] = 2;
        d.extend_from_slice(&[1, 4, 0, 0, 0, 9]);
        d.extend_from_slice(&[0, 4, 1, 0, 0, 0]);
        d.extend_from_slice(b"xy");
        let p = decode(&d).unwrap();
        assert_eq!(p.sack, Some(&[1u8, 0, 0, 0][..]));
        assert_eq!(p.payload, b"xy");
    }

    #[test]
    fn long_sack_is_cut_to_the_cap() {
        let mut d = STATE_WITH_SACK[..20].to_vec();
        d.extend_from_slice(&[0, 40]);
        d.extend_from_slice(&[0xffu8; 40]);
        let p = decode(&d).unwrap();
        assert_eq!(p.sack.unwrap().len(), MAX_SACK_BYTES);
        assert!(p.payload.is_empty());
    }

    #[test]
    fn malformed_datagrams_are_named() {
        assert_eq!(decode(&STATE_WITH_SACK[..19]), Err(DecodeError::Short { len: 19 }));
        let mut d = STATE_WITH_SACK;
        d[0] = 0x22;
        assert_eq!(decode(&d), Err(DecodeError::Version(2)));
        d[0] = 0x51;
        assert_eq!(decode(&d), Err(DecodeError::Type(5)));
        assert_eq!(decode(&STATE_WITH_SACK[..25]), Err(DecodeError::ExtensionTruncated));
        assert_eq!(decode(&STATE_WITH_SACK[..21]), Err(DecodeError::ExtensionTruncated));
        let mut d = STATE_WITH_SACK[..22].to_vec();
        d[21] = 0;
        assert_eq!(decode(&d), Err(DecodeError::EmptySack));
        for e in [DecodeError::Short { len: 3 }, DecodeError::ExtensionTruncated] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn encode_refuses_a_small_buffer() {
        let mut out = [0u8; 24];
        assert_eq!(encode_into(&header(PacketType::Data), &[], b"hello", &mut out), None);
    }

    #[test]
    fn seeded_mutations_never_panic_and_stay_in_bounds() {
        let mut rng = Rng::seeded(29);
        let mut data = [0u8; 64];
        let n = encode_into(&header(PacketType::Data), &[0, 0, 0, 1], b"payload!", &mut data).unwrap();
        let corpus: [&[u8]; 3] = [&STATE_WITH_SACK, &data[..n], &STATE_WITH_SACK[..20]];
        for _ in 0..20_000 {
            let input = rng.mutate(&corpus, &[0, 1, 2, 4, 0x01, 0x41, 0xff]);
            if let Ok(p) = decode(&input) {
                assert!(p.payload.len() + HEADER_LEN <= input.len());
                assert!(p.sack.map_or(0, <[u8]>::len) <= MAX_SACK_BYTES);
                // Re-encoding (without unknown extensions) gives a packet that decodes the same.
                let sack: Vec<u8> = p.sack.map(|s| s[..s.len() / 4 * 4].to_vec()).unwrap_or_default();
                let mut out = vec![0u8; input.len() + 4];
                let m = encode_into(&p.header, &sack, p.payload, &mut out).unwrap();
                let q = decode(&out[..m]).unwrap();
                assert_eq!((q.header, q.payload), (p.header, p.payload));
            }
        }
    }
}
