//! BEP 9 `ut_metadata` messages: request, data (a bencoded dictionary followed by the raw piece bytes in the
//! same payload) and reject.
//!
//! Owns: decoding a payload through the depth-bounded scanner (the dictionary's end is where a data
//! message's bytes start) and encoding ours.
//! Must not: assemble metadata or judge peers (`metadata` does).
//!
//! <https://www.bittorrent.org/beps/bep_0009.html>

use std::fmt;

use crate::bencode::{self, BencodeError, DictEntries};

/// Metadata travels in pieces of this size; only the last may be shorter.
pub const METADATA_PIECE_LEN: u32 = 16 * 1024;

/// One `ut_metadata` message. `Data` borrows its bytes from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataMessage<'a> {
    Request { piece: u32 },
    Data { piece: u32, total_size: u32, data: &'a [u8] },
    Reject { piece: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataDecodeError {
    Bencode(BencodeError),
    /// `msg_type` or `piece` missing or out of range, or a data message without `total_size`.
    BadField(&'static str),
    /// A `msg_type` this BEP does not define; ignore the message.
    UnknownType(i64),
}

impl fmt::Display for MetadataDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataDecodeError::Bencode(e) => write!(f, "ut_metadata message is not bencode: {e}"),
            MetadataDecodeError::BadField(name) => write!(f, "ut_metadata message with a bad {name}"),
            MetadataDecodeError::UnknownType(t) => write!(f, "ut_metadata message of unknown type {t}"),
        }
    }
}

impl std::error::Error for MetadataDecodeError {}

/// Decodes one payload (the bytes after the extended message id).
pub fn decode(payload: &[u8]) -> Result<MetadataMessage<'_>, MetadataDecodeError> {
    let dict = bencode::value_span(payload, 0).map_err(MetadataDecodeError::Bencode)?;
    let (mut msg_type, mut piece, mut total_size) = (None, None, None);
    for entry in DictEntries::new(payload, 0).map_err(MetadataDecodeError::Bencode)? {
        let entry = entry.map_err(MetadataDecodeError::Bencode)?;
        let value = int_value(&payload[entry.value]);
        match &payload[entry.key] {
            b"msg_type" => msg_type = value,
            b"piece" => piece = value,
            b"total_size" => total_size = value,
            _ => {}
        }
    }
    let msg_type = msg_type.ok_or(MetadataDecodeError::BadField("msg_type"))?;
    let piece = piece.and_then(|p| u32::try_from(p).ok()).ok_or(MetadataDecodeError::BadField("piece"))?;
    match msg_type {
        0 => Ok(MetadataMessage::Request { piece }),
        1 => {
            let total_size =
                total_size.and_then(|t| u32::try_from(t).ok()).ok_or(MetadataDecodeError::BadField("total_size"))?;
            Ok(MetadataMessage::Data { piece, total_size, data: &payload[dict.end..] })
        }
        2 => Ok(MetadataMessage::Reject { piece }),
        other => Err(MetadataDecodeError::UnknownType(other)),
    }
}

/// `i<n>e` → n; anything else → `None`.
fn int_value(value: &[u8]) -> Option<i64> {
    let body = value.strip_prefix(b"i")?.strip_suffix(b"e")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// Appends a request for `piece`.
pub fn encode_request(piece: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("d8:msg_typei0e5:piecei{piece}ee").as_bytes());
}

/// Appends a reject of `piece`.
pub fn encode_reject(piece: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("d8:msg_typei2e5:piecei{piece}ee").as_bytes());
}

/// Appends a data message carrying `piece` of `info` (the raw info dictionary); `None` if there is no such
/// piece.
pub fn encode_data(piece: u32, info: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let start = (piece as usize).checked_mul(METADATA_PIECE_LEN as usize)?;
    if start >= info.len() {
        return None;
    }
    let end = (start + METADATA_PIECE_LEN as usize).min(info.len());
    out.extend_from_slice(format!("d8:msg_typei1e5:piecei{piece}e10:total_sizei{}ee", info.len()).as_bytes());
    out.extend_from_slice(&info[start..end]);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let mut out = vec![];
        encode_request(3, &mut out);
        assert_eq!(out, b"d8:msg_typei0e5:piecei3ee");
        assert_eq!(decode(&out), Ok(MetadataMessage::Request { piece: 3 }));
        out.clear();
        encode_reject(7, &mut out);
        assert_eq!(decode(&out), Ok(MetadataMessage::Reject { piece: 7 }));
        let info: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        out.clear();
        encode_data(2, &info, &mut out).unwrap();
        assert_eq!(decode(&out), Ok(MetadataMessage::Data { piece: 2, total_size: 40_000, data: &info[32_768..] }));
        out.clear();
        assert_eq!(encode_data(3, &info, &mut out), None);
        assert!(out.is_empty());
    }

    #[test]
    fn libtorrent_data_message_keeps_the_bytes_after_the_dictionary() {
        let payload = b"d8:msg_typei1e5:piecei0e10:total_sizei5eeHELLO";
        assert_eq!(decode(payload), Ok(MetadataMessage::Data { piece: 0, total_size: 5, data: b"HELLO" }));
    }

    #[test]
    fn bad_messages_are_errors() {
        assert_eq!(decode(b"d5:piecei0ee"), Err(MetadataDecodeError::BadField("msg_type")));
        assert_eq!(decode(b"d8:msg_typei0ee"), Err(MetadataDecodeError::BadField("piece")));
        assert_eq!(decode(b"d8:msg_typei0e5:piecei-1ee"), Err(MetadataDecodeError::BadField("piece")));
        assert_eq!(decode(b"d8:msg_typei1e5:piecei0ee"), Err(MetadataDecodeError::BadField("total_size")));
        assert_eq!(decode(b"d8:msg_typei9e5:piecei0ee"), Err(MetadataDecodeError::UnknownType(9)));
        assert!(matches!(decode(b"d8:msg_type"), Err(MetadataDecodeError::Bencode(_))));
        assert!(matches!(decode(b"i3e"), Err(MetadataDecodeError::Bencode(_))));
        let deep = format!("d1:x{}{}e", "l".repeat(100_000), "e".repeat(100_000));
        assert!(matches!(decode(deep.as_bytes()), Err(MetadataDecodeError::Bencode(_))));
    }
}
