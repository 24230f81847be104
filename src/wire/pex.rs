//! BEP 11 peer exchange (`ut_pex`) payloads: the bencoded dictionary of added and dropped peers.
//!
//! Owns: decoding `added`/`added.f` (compact IPv4, 6 bytes each, one flag byte each), `added6`/`added6.f`
//! (18 bytes each), `dropped` and `dropped6`, through the depth-bounded scanner, keeping at most
//! [`MAX_PEERS_PER_MESSAGE`] of each list; and encoding ours with keys in byte order.
//! Must not: decide whom to connect to, keep per-peer state or rate-limit (the session and swarm do).
//!
//! <https://www.bittorrent.org/beps/bep_0011.html>

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::bencode::{self, BencodeError, DictEntries};

/// Most addresses taken from one list of one message; the rest are ignored (libtorrent sends at most 50
/// added and 50 dropped per message).
pub const MAX_PEERS_PER_MESSAGE: usize = 50;

/// `added.f` flag bits.
pub mod flags {
    pub const PREFERS_ENCRYPTION: u8 = 0x01;
    /// A seed, or upload-only.
    pub const SEED: u8 = 0x02;
    pub const SUPPORTS_UTP: u8 = 0x04;
    pub const SUPPORTS_HOLEPUNCH: u8 = 0x08;
    pub const REACHABLE: u8 = 0x10;
}

/// One PEX message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Added peers and their flags (0 where the message gave none).
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

/// Why a PEX payload is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PexError {
    Bencode(BencodeError),
    /// A compact list whose length is not a multiple of its entry size, or a value of the wrong type.
    BadList(&'static str),
}

impl fmt::Display for PexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PexError::Bencode(e) => write!(f, "pex message is not bencode: {e}"),
            PexError::BadList(key) => write!(f, "pex message has a malformed {key}"),
        }
    }
}

impl std::error::Error for PexError {}

/// Decodes a `ut_pex` payload. Entries with port 0 are skipped.
pub fn decode(payload: &[u8]) -> Result<PexMessage, PexError> {
    let span = bencode::whole_value_span(payload).map_err(PexError::Bencode)?;
    let mut lists: [&[u8]; 6] = [&[]; 6];
    const KEYS: [&str; 6] = ["added", "added.f", "added6", "added6.f", "dropped", "dropped6"];
    for entry in DictEntries::new(payload, span.start).map_err(PexError::Bencode)? {
        let entry = entry.map_err(PexError::Bencode)?;
        let key = &payload[entry.key];
        let Some(i) = KEYS.iter().position(|k| k.as_bytes() == key) else { continue };
        lists[i] = string_value(&payload[entry.value]).ok_or(PexError::BadList(KEYS[i]))?;
    }
    let [added, added_f, added6, added6_f, dropped, dropped6] = lists;
    let mut msg = PexMessage::default();
    for (i, addr) in compact(added, 6, "added")?.enumerate() {
        msg.added.push((addr, added_f.get(i).copied().unwrap_or(0)));
    }
    for (i, addr) in compact(added6, 18, "added6")?.enumerate() {
        msg.added.push((addr, added6_f.get(i).copied().unwrap_or(0)));
    }
    msg.dropped.extend(compact(dropped, 6, "dropped")?);
    msg.dropped.extend(compact(dropped6, 18, "dropped6")?);
    Ok(msg)
}

/// The contents of a bencoded byte string, `None` if `value` is another type.
fn string_value(value: &[u8]) -> Option<&[u8]> {
    let colon = value.iter().position(|&b| b == b':')?;
    value[0].is_ascii_digit().then(|| &value[colon + 1..])
}

/// The first [`MAX_PEERS_PER_MESSAGE`] addresses of a compact list (6-byte IPv4 or 18-byte IPv6 entries).
fn compact<'a>(
    list: &'a [u8],
    size: usize,
    key: &'static str,
) -> Result<impl Iterator<Item = SocketAddr> + 'a, PexError> {
    if list.len() % size != 0 {
        return Err(PexError::BadList(key));
    }
    Ok(list.chunks_exact(size).take(MAX_PEERS_PER_MESSAGE).filter_map(move |e| {
        let port = u16::from_be_bytes([e[size - 2], e[size - 1]]);
        let addr = if size == 6 {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(e[0], e[1], e[2], e[3]), port))
        } else {
            let ip: [u8; 16] = e[..16].try_into().ok()?;
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
        };
        (port != 0).then_some(addr)
    }))
}

/// Our PEX message: at most [`MAX_PEERS_PER_MESSAGE`] of each family's added and dropped peers.
pub fn encode(added: &[(SocketAddr, u8)], dropped: &[SocketAddr], out: &mut Vec<u8>) {
    let v4 = |a: &&(SocketAddr, u8)| a.0.is_ipv4();
    let added4: Vec<&(SocketAddr, u8)> = added.iter().filter(v4).take(MAX_PEERS_PER_MESSAGE).collect();
    let added6: Vec<&(SocketAddr, u8)> = added.iter().filter(|a| !v4(a)).take(MAX_PEERS_PER_MESSAGE).collect();
    let dropped4: Vec<&SocketAddr> = dropped.iter().filter(|a| a.is_ipv4()).take(MAX_PEERS_PER_MESSAGE).collect();
    let dropped6: Vec<&SocketAddr> = dropped.iter().filter(|a| a.is_ipv6()).take(MAX_PEERS_PER_MESSAGE).collect();
    out.push(b'd');
    put_compact(out, "added", added4.iter().map(|a| a.0));
    put_flags(out, "added.f", added4.iter().map(|a| a.1));
    put_compact(out, "added6", added6.iter().map(|a| a.0));
    put_flags(out, "added6.f", added6.iter().map(|a| a.1));
    put_compact(out, "dropped", dropped4.iter().map(|a| **a));
    put_compact(out, "dropped6", dropped6.iter().map(|a| **a));
    out.push(b'e');
}

fn put_key_and_len(out: &mut Vec<u8>, key: &str, len: usize) {
    out.extend_from_slice(format!("{}:{key}{len}:", key.len()).as_bytes());
}

fn put_compact(out: &mut Vec<u8>, key: &str, addrs: impl ExactSizeIterator<Item = SocketAddr>) {
    let size = if key.ends_with('6') { 18 } else { 6 };
    put_key_and_len(out, key, addrs.len() * size);
    for addr in addrs {
        match addr {
            SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
        }
        out.extend_from_slice(&addr.port().to_be_bytes());
    }
}

fn put_flags(out: &mut Vec<u8>, key: &str, flags: impl ExactSizeIterator<Item = u8>) {
    put_key_and_len(out, key, flags.len());
    out.extend(flags);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn both_families_round_trip_with_flags() {
        let added = vec![
            (v4("10.0.0.1:6881"), flags::SEED | flags::SUPPORTS_UTP),
            (v4("[2001:db8::1]:51413"), flags::PREFERS_ENCRYPTION),
            (v4("192.168.1.2:1"), 0),
        ];
        let dropped = vec![v4("1.2.3.4:5"), v4("[::1]:6")];
        let mut out = vec![];
        encode(&added, &dropped, &mut out);
        let msg = decode(&out).unwrap();
        assert_eq!(msg.added, [added[0], added[2], added[1]]);
        assert_eq!(msg.dropped, dropped);
    }

    #[test]
    fn libtorrent_style_payload_decodes() {
        // added: 127.0.0.1:6881; added.f: 0x12; dropped empty; extra keys ignored.
        let payload = b"d5:added6:\x7f\x00\x00\x01\x1a\xe17:added.f1:\x124:misci3e7:dropped0:e";
        let msg = decode(payload).unwrap();
        assert_eq!(msg.added, [(v4("127.0.0.1:6881"), 0x12)]);
        assert!(msg.dropped.is_empty());
    }

    #[test]
    fn bad_payloads_are_errors_and_lists_are_capped() {
        assert!(matches!(decode(b"d5:added5:12345e"), Err(PexError::BadList("added"))));
        assert!(matches!(decode(b"d5:addedi3ee"), Err(PexError::BadList("added"))));
        assert!(matches!(decode(b"l5:addede"), Err(PexError::Bencode(_))));
        assert!(matches!(decode(b"d5:added"), Err(PexError::Bencode(_))));
        let deep = format!("d1:x{}{}e", "l".repeat(10_000), "e".repeat(10_000));
        assert!(matches!(decode(deep.as_bytes()), Err(PexError::Bencode(_))));
        let many: Vec<u8> = (0..200u32).flat_map(|i| [10, 0, (i >> 8) as u8, i as u8, 0, 80]).collect();
        let mut payload = format!("d5:added{}:", many.len()).into_bytes();
        payload.extend(&many);
        payload.push(b'e');
        assert_eq!(decode(&payload).unwrap().added.len(), MAX_PEERS_PER_MESSAGE);
        // Port 0 is skipped.
        assert!(decode(b"d5:added6:\x01\x02\x03\x04\x00\x00e").unwrap().added.is_empty());
    }

    #[test]
    fn encoding_caps_each_list() {
        let added: Vec<(SocketAddr, u8)> = (0..120u16).map(|p| (v4(&format!("10.0.0.1:{}", p + 1)), 0)).collect();
        let mut out = vec![];
        encode(&added, &[], &mut out);
        assert_eq!(decode(&out).unwrap().added.len(), MAX_PEERS_PER_MESSAGE);
    }
}
