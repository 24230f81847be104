//! BEP 10 extension-protocol payloads: the extended handshake (id 0), and the ids we give our extensions.
//!
//! Owns: parsing a peer's extended handshake (`m`, `reqq`, `v`, `p`, `metadata_size`) and encoding ours.
//! Must not: keep per-peer state or decide what to do with the values (the session does).
//!
//! <https://www.bittorrent.org/beps/bep_0010.html>

use serde_bencode::value::Value;

/// Extended message id 0 is the handshake, whatever a peer's `m` says.
pub const HANDSHAKE_ID: u8 = 0;
/// The ids a peer uses to send us each extension (our `m`; the same numbers libtorrent gives them).
pub const OUR_UT_PEX: u8 = 1;
pub const OUR_UT_METADATA: u8 = 2;

/// What we use from a peer's extended handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtendedHandshake {
    /// How many outstanding requests the peer keeps before dropping more (`reqq`).
    pub reqq: Option<u32>,
    /// Client name and version (`v`), for display.
    pub client: Option<String>,
    /// The peer's id for ut_metadata (BEP 9), 0 or absent when unsupported.
    pub ut_metadata: Option<u8>,
    /// The peer's id for ut_pex (BEP 11).
    pub ut_pex: Option<u8>,
    pub metadata_size: Option<u32>,
    /// The port the peer listens on (`p`): how to reach a peer that connected to us.
    pub listen_port: Option<u16>,
    /// The peer only uploads (`upload_only`, a seed or a partial seed that wants nothing).
    pub upload_only: bool,
    /// Our address as the peer sees it (`yourip`, 4 or 16 bytes).
    pub your_ip: Option<std::net::IpAddr>,
}

/// Parses a peer's extended handshake; `None` if it is not a bencoded dictionary.
pub fn parse_handshake(payload: &[u8]) -> Option<ExtendedHandshake> {
    // The bounded scanner first: serde_bencode recurses once per nesting level, so a peer's deeply nested
    // payload must never reach it (depth is capped at `bencode::MAX_DEPTH`, the length by the frame limit).
    crate::bencode::whole_value_span(payload).ok()?;
    let Ok(Value::Dict(dict)) = serde_bencode::from_bytes::<Value>(payload) else {
        return None;
    };
    let int = |key: &[u8]| match dict.get(key) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let id_of = |name: &[u8]| match dict.get(&b"m"[..]) {
        Some(Value::Dict(m)) => match m.get(name) {
            Some(Value::Int(n)) if (1..=255).contains(n) => Some(*n as u8),
            _ => None,
        },
        _ => None,
    };
    let client = match dict.get(&b"v"[..]) {
        Some(Value::Bytes(v)) => Some(String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned()),
        _ => None,
    };
    Some(ExtendedHandshake {
        reqq: int(b"reqq").and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0),
        client,
        ut_metadata: id_of(b"ut_metadata"),
        ut_pex: id_of(b"ut_pex"),
        metadata_size: int(b"metadata_size").and_then(|n| u32::try_from(n).ok()),
        listen_port: int(b"p").and_then(|n| u16::try_from(n).ok()).filter(|&p| p != 0),
        upload_only: int(b"upload_only").is_some_and(|n| n != 0),
        your_ip: match dict.get(&b"yourip"[..]) {
            Some(Value::Bytes(b)) => match b.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(&b[..]).ok()?)),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(&b[..]).ok()?)),
                _ => None,
            },
            _ => None,
        },
    })
}

/// Our extended handshake: the extensions we speak (`ut_metadata` always, `ut_pex` unless the torrent is
/// private), the metadata size when we have it, our queue depth, listen port and client name.
/// Our BEP 10 handshake. `your_ip` is the peer's address as we see it (`yourip`: it tells the peer its
/// external address, which BEP 42 DHT ids and NAT detection use).
pub fn encode_handshake(
    reqq: u32,
    listen_port: Option<u16>,
    metadata_size: Option<u32>,
    pex: bool,
    your_ip: Option<std::net::IpAddr>,
    out: &mut Vec<u8>,
) {
    // Keys in byte order, as bencode requires.
    out.extend_from_slice(format!("d1:md11:ut_metadatai{OUR_UT_METADATA}e").as_bytes());
    if pex {
        out.extend_from_slice(format!("6:ut_pexi{OUR_UT_PEX}e").as_bytes());
    }
    out.push(b'e');
    if let Some(size) = metadata_size {
        out.extend_from_slice(format!("13:metadata_sizei{size}e").as_bytes());
    }
    if let Some(port) = listen_port.filter(|&p| p != 0) {
        out.extend_from_slice(format!("1:pi{port}e").as_bytes());
    }
    out.extend_from_slice(format!("4:reqqi{reqq}e").as_bytes());
    let v = concat!("rill ", env!("CARGO_PKG_VERSION"));
    out.extend_from_slice(format!("1:v{}:{v}", v.len()).as_bytes());
    match your_ip.map(|ip| ip.to_canonical()) {
        Some(std::net::IpAddr::V4(ip)) => {
            out.extend_from_slice(b"6:yourip4:");
            out.extend_from_slice(&ip.octets());
        }
        Some(std::net::IpAddr::V6(ip)) => {
            out.extend_from_slice(b"6:yourip16:");
            out.extend_from_slice(&ip.octets());
        }
        None => {}
    }
    out.push(b'e');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtorrent_style_handshake() {
        let payload =
            b"d1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v16:libtorrent 2.0.8e";
        let hs = parse_handshake(payload).unwrap();
        assert_eq!(hs.reqq, Some(500));
        assert_eq!(hs.ut_metadata, Some(3));
        assert_eq!(hs.ut_pex, Some(1));
        assert_eq!(hs.metadata_size, Some(31235));
        assert_eq!(hs.listen_port, Some(6881));
        assert!(!hs.upload_only);
        let other = parse_handshake(b"d11:upload_onlyi1e6:yourip4:\x7f\x00\x00\x01e").unwrap();
        assert!(other.upload_only);
        assert_eq!(other.your_ip, Some(std::net::IpAddr::from([127, 0, 0, 1])));
        assert_eq!(hs.client.as_deref(), Some("libtorrent 2.0.8"));
    }

    #[test]
    fn deeply_nested_payload_is_refused_without_recursing() {
        let mut payload = b"d1:ml".to_vec();
        payload.extend(std::iter::repeat_n(b'l', 500_000));
        payload.extend(std::iter::repeat_n(b'e', 500_001));
        payload.push(b'e');
        assert_eq!(parse_handshake(&payload), None);
    }

    #[test]
    fn garbage_and_odd_values_are_tolerated() {
        assert_eq!(parse_handshake(b"not bencode"), None);
        assert_eq!(parse_handshake(b"li1ee"), None);
        let hs = parse_handshake(b"d4:reqqi-5ee").unwrap();
        assert_eq!(hs.reqq, None);
    }

    #[test]
    fn ours_round_trips() {
        let mut out = vec![];
        encode_handshake(250, Some(6881), Some(31_235), true, Some("10.1.2.3".parse().unwrap()), &mut out);
        crate::bencode::whole_value_span(&out).expect("valid bencode");
        let hs = parse_handshake(&out).unwrap();
        assert_eq!(hs.reqq, Some(250));
        assert_eq!((hs.ut_metadata, hs.ut_pex), (Some(OUR_UT_METADATA), Some(OUR_UT_PEX)));
        assert_eq!((hs.metadata_size, hs.listen_port), (Some(31_235), Some(6881)));
        assert!(hs.client.unwrap().starts_with("rill "));
        assert_eq!(hs.your_ip, Some("10.1.2.3".parse().unwrap()));
        let mut v6 = vec![];
        encode_handshake(250, None, None, true, Some("2001:db8::7".parse().unwrap()), &mut v6);
        assert_eq!(parse_handshake(&v6).unwrap().your_ip, Some("2001:db8::7".parse().unwrap()));
        // A private torrent offers no peer exchange; without metadata, no size.
        let mut out = vec![];
        encode_handshake(250, None, None, false, None, &mut out);
        let hs = parse_handshake(&out).unwrap();
        assert_eq!((hs.ut_metadata, hs.ut_pex, hs.metadata_size), (Some(OUR_UT_METADATA), None, None));
    }
}
