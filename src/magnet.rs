//! Magnet URIs (BEP 9, "magnet URI format"): `magnet:?xt=urn:btih:…&dn=…&tr=…&x.pe=…&ws=…` → [`Magnet`].
//!
//! Owns: splitting and percent-decoding the query, the info-hash in hex (40 characters) or base32
//! (32 characters), the display name, trackers (each `tr` its own tier, in the order given, as libtorrent
//! does), peer addresses (`x.pe`: `host:port`, `ip:port`, `[ipv6]:port`) and web seeds (`ws`).
//! Unknown keys are ignored. Bounded: the URI's length and the number of each kind of value are capped,
//! so a hostile link cannot make us hold much.
//! Must not: resolve host names, touch the network, or fetch anything.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::metainfo::InfoHash;

/// Longest magnet URI accepted (real ones with dozens of trackers are a few KiB).
pub const MAX_URI_LEN: usize = 64 * 1024;
/// Most trackers, peers or web seeds kept from one link; more are ignored.
pub const MAX_VALUES: usize = 200;

/// A peer named by `x.pe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerHint {
    Addr(SocketAddr),
    /// A host name to resolve, and a port.
    Host(String, u16),
}

impl fmt::Display for PeerHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerHint::Addr(a) => write!(f, "{a}"),
            PeerHint::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// What a magnet link holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    /// `dn`, if given.
    pub name: Option<String>,
    /// Tiers of announce URLs: one tracker per tier, in the link's order.
    pub trackers: Vec<Vec<String>>,
    pub peers: Vec<PeerHint>,
    pub web_seeds: Vec<String>,
}

/// Why a string is not a usable magnet link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MagnetError {
    NotAMagnet,
    TooLong {
        len: usize,
    },
    /// No `xt=urn:btih:` (nor a v2 one).
    NoInfoHash,
    /// `xt=urn:btmh:` only: a v2 torrent.
    V2Only,
    /// A `btih` that is neither 40 hex digits nor 32 base32 characters.
    BadInfoHash(String),
    /// Two different `btih` values.
    ConflictingInfoHashes,
    /// A `%` not followed by two hex digits, in the value of this key.
    BadPercentEncoding(String),
    /// An `x.pe` that is not `host:port`.
    BadPeer(String),
}

impl fmt::Display for MagnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MagnetError::NotAMagnet => write!(f, "not a magnet link (it must start with magnet:?)"),
            MagnetError::TooLong { len } => write!(f, "magnet link of {len} bytes is longer than {MAX_URI_LEN}"),
            MagnetError::NoInfoHash => write!(f, "magnet link has no xt=urn:btih: info-hash"),
            MagnetError::V2Only => write!(f, "v2-only magnet links are not supported"),
            MagnetError::BadInfoHash(v) => {
                write!(f, "bad info-hash '{v}' in the magnet link: need 40 hex or 32 base32 characters")
            }
            MagnetError::ConflictingInfoHashes => write!(f, "magnet link has two different btih info-hashes"),
            MagnetError::BadPercentEncoding(key) => write!(f, "bad percent-encoding in the magnet link's {key}"),
            MagnetError::BadPeer(v) => write!(f, "bad peer address '{v}' in the magnet link: need host:port"),
        }
    }
}

impl std::error::Error for MagnetError {}

/// True if `s` looks like a magnet link (so the caller parses it rather than opening a file).
pub fn is_magnet(s: &str) -> bool {
    s.len() >= 7 && s.as_bytes()[..7].eq_ignore_ascii_case(b"magnet:")
}

impl Magnet {
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        if uri.len() > MAX_URI_LEN {
            return Err(MagnetError::TooLong { len: uri.len() });
        }
        if !is_magnet(uri) {
            return Err(MagnetError::NotAMagnet);
        }
        let query = uri[7..].strip_prefix('?').ok_or(MagnetError::NotAMagnet)?;
        let mut info_hash: Option<InfoHash> = None;
        let mut saw_v2 = false;
        let mut magnet =
            Magnet { info_hash: InfoHash([0; 20]), name: None, trackers: vec![], peers: vec![], web_seeds: vec![] };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = base_key(raw_key);
            let decode = |plus_is_space| {
                percent_decode(raw_value, plus_is_space).ok_or_else(|| MagnetError::BadPercentEncoding(key.to_string()))
            };
            match key {
                "xt" => {
                    let value = decode(false)?;
                    let lower = value.to_ascii_lowercase();
                    if let Some(hash) = lower.strip_prefix("urn:btih:") {
                        let parsed = parse_btih(&value["urn:btih:".len()..])
                            .ok_or_else(|| MagnetError::BadInfoHash(hash.to_string()))?;
                        match info_hash {
                            Some(h) if h != parsed => return Err(MagnetError::ConflictingInfoHashes),
                            _ => info_hash = Some(parsed),
                        }
                    } else if lower.starts_with("urn:btmh:") {
                        saw_v2 = true;
                    }
                }
                "dn" => magnet.name = Some(decode(true)?).filter(|n| !n.is_empty()),
                "tr" => {
                    let url = decode(false)?;
                    let known = magnet.trackers.iter().any(|t| t[0] == url);
                    if !url.is_empty() && !known && magnet.trackers.len() < MAX_VALUES {
                        magnet.trackers.push(vec![url]);
                    }
                }
                "x.pe" => {
                    let value = decode(false)?;
                    let peer = parse_peer(&value).ok_or(MagnetError::BadPeer(value))?;
                    if !magnet.peers.contains(&peer) && magnet.peers.len() < MAX_VALUES {
                        magnet.peers.push(peer);
                    }
                }
                "ws" => {
                    let url = decode(false)?;
                    if !url.is_empty() && !magnet.web_seeds.contains(&url) && magnet.web_seeds.len() < MAX_VALUES {
                        magnet.web_seeds.push(url);
                    }
                }
                _ => {}
            }
        }
        magnet.info_hash = match (info_hash, saw_v2) {
            (Some(h), _) => h,
            (None, true) => return Err(MagnetError::V2Only),
            (None, false) => return Err(MagnetError::NoInfoHash),
        };
        Ok(magnet)
    }
}

/// `tr.1` and `tr` are the same key (some links number their trackers).
fn base_key(key: &str) -> &str {
    match key.split_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => key,
    }
}

/// `%XX` → byte; `+` → space where asked (form encoding, common in `dn`). `None` on a bad escape; bytes that
/// are not UTF-8 are replaced.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// 40 hex digits or 32 base32 (RFC 4648, no padding) characters.
fn parse_btih(s: &str) -> Option<InfoHash> {
    let mut hash = [0u8; 20];
    match s.len() {
        40 => {
            for (i, pair) in s.as_bytes().chunks(2).enumerate() {
                let hi = (pair[0] as char).to_digit(16)?;
                let lo = (pair[1] as char).to_digit(16)?;
                hash[i] = (hi * 16 + lo) as u8;
            }
        }
        32 => {
            let mut acc: u64 = 0;
            let mut bits = 0;
            let mut at = 0;
            for c in s.bytes() {
                let v = match c.to_ascii_uppercase() {
                    c @ b'A'..=b'Z' => c - b'A',
                    c @ b'2'..=b'7' => c - b'2' + 26,
                    _ => return None,
                };
                acc = (acc << 5) | u64::from(v);
                bits += 5;
                if bits >= 8 {
                    bits -= 8;
                    hash[at] = (acc >> bits) as u8;
                    at += 1;
                }
            }
        }
        _ => return None,
    }
    Some(InfoHash(hash))
}

/// `1.2.3.4:5`, `[::1]:5`, `host.name:5`; port 1–65535.
fn parse_peer(s: &str) -> Option<PeerHint> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return (addr.port() != 0).then_some(PeerHint::Addr(addr));
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    if host.parse::<IpAddr>().is_ok() || host.contains(':') || host.is_empty() || host.len() > 253 {
        return None; // an IPv6 literal without brackets, or no host at all
    }
    let valid = host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| PeerHint::Host(host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn hash() -> InfoHash {
        let mut h = [0u8; 20];
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::from_str_radix(&HEX[2 * i..2 * i + 2], 16).unwrap();
        }
        InfoHash(h)
    }

    #[test]
    fn hex_link_with_name_trackers_peers_and_web_seeds() {
        let uri = format!(
            "magnet:?xt=urn:btih:{}&dn=Some+Name%20%C3%A9&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce\
             &tr=udp://127.0.0.1:6970&tr.3=udp%3A%2F%2Ft%3A1&x.pe=127.0.0.1:6881&x.pe=[::1]:6882\
             &x.pe=Peer.Example:7000&ws=http%3A%2F%2F127.0.0.1%3A8000%2F&so=0-3&foo=bar",
            HEX.to_uppercase()
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.info_hash, hash());
        assert_eq!(m.name.as_deref(), Some("Some Name é"));
        assert_eq!(
            m.trackers,
            [
                vec!["http://127.0.0.1:6969/announce".to_string()],
                vec!["udp://127.0.0.1:6970".into()],
                vec!["udp://t:1".into()]
            ]
        );
        assert_eq!(
            m.peers,
            [
                PeerHint::Addr("127.0.0.1:6881".parse().unwrap()),
                PeerHint::Addr("[::1]:6882".parse().unwrap()),
                PeerHint::Host("peer.example".into(), 7000)
            ]
        );
        assert_eq!(m.web_seeds, ["http://127.0.0.1:8000/"]);
    }

    #[test]
    fn base32_info_hash_equals_the_hex_one() {
        // RFC 4648 base32 of the 20 bytes above.
        let m = Magnet::parse("magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK").unwrap();
        assert_eq!(m.info_hash, hash());
        let lower = Magnet::parse("MAGNET:?xt=urn:btih:yex6dqdlxisuvhoj6um3gnnkpqjwpkek").unwrap();
        assert_eq!(lower.info_hash, hash());
        assert_eq!(lower.name, None);
        assert!(lower.trackers.is_empty() && lower.peers.is_empty());
    }

    #[test]
    fn hybrid_links_use_btih_and_v2_only_links_are_refused() {
        let hybrid = format!("magnet:?xt=urn:btmh:1220{}&xt=urn:btih:{HEX}", "ab".repeat(32));
        assert_eq!(Magnet::parse(&hybrid).unwrap().info_hash, hash());
        let v2 = format!("magnet:?xt=urn:btmh:1220{}&dn=x", "ab".repeat(32));
        assert_eq!(Magnet::parse(&v2), Err(MagnetError::V2Only));
    }

    #[test]
    fn duplicates_are_kept_once_and_counts_are_capped() {
        let mut uri = format!("magnet:?xt=urn:btih:{HEX}&tr=udp://a:1&tr=udp://a:1");
        for i in 0..500 {
            uri.push_str(&format!("&tr=udp://t{i}:1&x.pe=127.0.0.1:{}", 1000 + i));
        }
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.trackers.len(), MAX_VALUES);
        assert_eq!(m.trackers[0], ["udp://a:1"]);
        assert_eq!(m.peers.len(), MAX_VALUES);
    }

    #[test]
    fn bad_links_get_their_own_error() {
        let bad = |s: &str| Magnet::parse(s).unwrap_err();
        assert_eq!(bad("http://example/x.torrent"), MagnetError::NotAMagnet);
        assert_eq!(bad("magnet:xt=urn:btih:abc"), MagnetError::NotAMagnet);
        assert_eq!(bad("magnet:?dn=name"), MagnetError::NoInfoHash);
        assert_eq!(bad("magnet:?xt=urn:sha1:abcdef"), MagnetError::NoInfoHash);
        assert_eq!(bad("magnet:?xt=urn:btih:1234"), MagnetError::BadInfoHash("1234".into()));
        assert!(matches!(bad(&format!("magnet:?xt=urn:btih:{}", "g".repeat(40))), MagnetError::BadInfoHash(_)));
        assert!(matches!(bad(&format!("magnet:?xt=urn:btih:{}", "1".repeat(32))), MagnetError::BadInfoHash(_)));
        let two = format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{}", "0".repeat(40));
        assert_eq!(bad(&two), MagnetError::ConflictingInfoHashes);
        assert_eq!(bad(&format!("magnet:?xt=urn:btih:{HEX}&tr=%zz")), MagnetError::BadPercentEncoding("tr".into()));
        assert_eq!(bad(&format!("magnet:?xt=urn:btih:{HEX}&dn=%4")), MagnetError::BadPercentEncoding("dn".into()));
        for peer in ["1.2.3.4", "1.2.3.4:0", "::1:80", "host:99999", ":80", "bad_host!:1"] {
            assert!(
                matches!(bad(&format!("magnet:?xt=urn:btih:{HEX}&x.pe={peer}")), MagnetError::BadPeer(_)),
                "{peer}"
            );
        }
        assert!(matches!(bad(&"magnet:?".repeat(20_000)), MagnetError::TooLong { .. }));
    }

    #[test]
    fn is_magnet_is_case_insensitive_and_safe_on_short_input() {
        assert!(is_magnet("Magnet:?xt"));
        assert!(!is_magnet("magne"));
        assert!(!is_magnet("é"));
        assert!(!is_magnet("./magnet.torrent"));
    }

    #[test]
    fn mutated_links_never_panic() {
        let base = format!("magnet:?xt=urn:btih:{HEX}&dn=a%20b&tr=udp://x:1&x.pe=[::1]:5&ws=http://w/");
        let mut rng = crate::rng::Rng::seeded(7);
        for _ in 0..20_000 {
            let mut bytes = base.clone().into_bytes();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() as u64) as usize;
                match rng.below(3) {
                    0 => bytes[at] = b"%:[]&=+.0aZ"[rng.below(11) as usize],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = Magnet::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
