//! Tracker codecs: announce URLs, byte-wise percent-encoding, compact peer lists and bencode field access.
//!
//! Owns: splitting `http://` and `udp://` tracker URLs (IP literals, `[v6]` literals, names, an existing
//! query), the BEP 48 scrape-URL rule, percent-encoding of binary query values, BEP 23 / BEP 7 compact peer
//! entries, typed reads of scalars inside bencode spans found by `crate::bencode`, and the sanitising of
//! remote text before anyone logs it.
//! Must not: hold state, touch sockets or decide what to announce.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::ops::Range;

use crate::bencode::{self, BencodeError};

/// Longest host name accepted (RFC 1035: 253 characters in text form).
const MAX_HOST_LEN: usize = 253;
/// Longest path-and-query accepted; a passkey URL is well under this.
const MAX_PATH_LEN: usize = 2048;
/// Remote text (failure reasons, warnings) is cut to this many characters before it reaches a log line.
pub const MAX_REMOTE_TEXT: usize = 200;

/// BEP 23 compact IPv4 peer entry: 4 address bytes and a big-endian port.
pub const COMPACT_V4_LEN: usize = 6;
/// BEP 7 compact IPv6 peer entry: 16 address bytes and a big-endian port.
pub const COMPACT_V6_LEN: usize = 18;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An address literal: no lookup needed.
    Ip(IpAddr),
    /// A name, lower-cased; the loop resolves it.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A tracker URL split into what the request needs.
///
/// Invariant: `path` starts with `/` and holds only printable ASCII without spaces, so it can go into a
/// request line as it is (no header injection from a hostile `.torrent` or `Location`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerUrl {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
    /// Path and query, without the fragment (`/announce?passkey=abc`).
    pub path: String,
}

/// Why a tracker URL cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    MissingScheme,
    /// `https://` and anything else we cannot speak.
    UnsupportedScheme(String),
    UserInfo,
    MissingHost,
    BadHost,
    /// A `udp://` URL needs an explicit port.
    MissingPort,
    BadPort,
    BadPath,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::MissingScheme => f.write_str("url has no scheme"),
            UrlError::UnsupportedScheme(s) => write!(f, "unsupported url scheme {s:?}"),
            UrlError::UserInfo => f.write_str("url with user info is not supported"),
            UrlError::MissingHost => f.write_str("url has no host"),
            UrlError::BadHost => f.write_str("url host is malformed"),
            UrlError::MissingPort => f.write_str("udp tracker url has no port"),
            UrlError::BadPort => f.write_str("url port is malformed"),
            UrlError::BadPath => f.write_str("url path holds spaces, control or non-ascii bytes"),
        }
    }
}

impl TrackerUrl {
    pub fn parse(text: &str) -> Result<TrackerUrl, UrlError> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or(UrlError::MissingScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "udp" => Scheme::Udp,
            other => return Err(UrlError::UnsupportedScheme(other.chars().take(16).collect())),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let tail = tail.split('#').next().unwrap_or("");
        let path = match tail.as_bytes().first() {
            None => "/".to_string(),
            Some(b'?') => format!("/{tail}"),
            Some(_) => tail.to_string(),
        };
        if path.len() > MAX_PATH_LEN || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UrlError::BadPath);
        }
        let (host, port) = split_host_port(authority)?;
        let port = match (port, scheme) {
            (Some(p), _) => p,
            (None, Scheme::Http) => 80,
            (None, Scheme::Udp) => return Err(UrlError::MissingPort),
        };
        Ok(TrackerUrl { scheme, host, port, path })
    }

    /// The `Host` header value: the port only when it is not 80.
    pub fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request target with `query` appended: with `?`, or with `&` after an existing query.
    pub fn target_with_query(&self, query: &str) -> String {
        let mut target = self.path.clone();
        match self.path.find('?') {
            None => target.push('?'),
            Some(i) if i + 1 == self.path.len() || self.path.ends_with('&') => {}
            Some(_) => target.push('&'),
        }
        target.push_str(query);
        target
    }

    /// BEP 48: the scrape URL replaces `announce` right after the last `/` of the path with `scrape`
    /// (`/x/announce.php?k=1` → `/x/scrape.php?k=1`). `None` when the tracker has no scrape convention.
    /// A `udp://` tracker scrapes at its own address (BEP 15 action 2).
    pub fn scrape_url(&self) -> Option<TrackerUrl> {
        if self.scheme == Scheme::Udp {
            return Some(self.clone());
        }
        let path_end = self.path.find('?').unwrap_or(self.path.len());
        let slash = self.path[..path_end].rfind('/')?;
        let rest = &self.path[slash + 1..];
        let after = rest.strip_prefix("announce")?;
        let mut url = self.clone();
        url.path = format!("{}scrape{after}", &self.path[..=slash]);
        Some(url)
    }
}

fn split_host_port(authority: &str) -> Result<(Host, Option<u16>), UrlError> {
    if authority.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(UrlError::BadHost)?;
        let ip: Ipv6Addr = literal.parse().map_err(|_| UrlError::BadHost)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::BadHost)?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (name, port) = match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        };
        if name.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let host = match name.parse::<Ipv4Addr>() {
            Ok(ip) => Host::Ip(IpAddr::V4(ip)),
            Err(_) => {
                let valid = name.len() <= MAX_HOST_LEN
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
                if !valid {
                    return Err(UrlError::BadHost);
                }
                Host::Name(name.to_ascii_lowercase())
            }
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(UrlError::BadPort),
            Ok(p) => Some(p),
        },
    };
    Ok((host, port))
}

/// Appends `bytes` percent-encoded byte by byte: unreserved bytes (`A-Z a-z 0-9 - . _ ~`) stay literal,
/// everything else becomes `%XX` (upper-case hex). This is how `info_hash` and `peer_id` travel.
pub fn percent_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// BEP 23 compact IPv4 peers; a trailing partial entry is ignored.
pub fn compact_v4(bytes: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    bytes.chunks_exact(COMPACT_V4_LEN).map(|e| {
        let ip = Ipv4Addr::new(e[0], e[1], e[2], e[3]);
        SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([e[4], e[5]]))
    })
}

/// BEP 7 compact IPv6 peers; a trailing partial entry is ignored.
pub fn compact_v6(bytes: &[u8]) -> impl Iterator<Item = SocketAddr> + '_ {
    bytes.chunks_exact(COMPACT_V6_LEN).map(|e| {
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&e[..16]);
        let port = u16::from_be_bytes([e[16], e[17]]);
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0))
    })
}

/// Encodes one peer compactly (6 bytes for IPv4, 18 for IPv6); for tests and fixtures.
pub fn encode_compact(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Remote text made safe for one log line: lossy UTF-8, control characters replaced, at most
/// [`MAX_REMOTE_TEXT`] characters.
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String =
        text.trim().chars().take(MAX_REMOTE_TEXT).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.trim().chars().count() > MAX_REMOTE_TEXT {
        out.push('…');
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Typed reads inside bencode spans that `crate::bencode` has already checked.

/// One value inside a checked bencode buffer.
#[derive(Clone, Copy, Debug)]
pub struct Value<'a> {
    input: &'a [u8],
    span: (usize, usize),
}

impl<'a> Value<'a> {
    /// The top-level value of `input`; bytes after it are tolerated (some trackers add a newline).
    pub fn parse(input: &'a [u8]) -> Result<Value<'a>, BencodeError> {
        let span = bencode::value_span(input, 0)?;
        Ok(Value::at(input, span))
    }

    fn at(input: &'a [u8], span: Range<usize>) -> Value<'a> {
        Value { input, span: (span.start, span.end) }
    }

    fn bytes_raw(&self) -> &'a [u8] {
        self.input.get(self.span.0..self.span.1).unwrap_or(&[])
    }

    /// The integer, if this is one (the scanner has checked its digits and range).
    pub fn as_int(&self) -> Option<i64> {
        let raw = self.bytes_raw();
        let digits = raw.strip_prefix(b"i")?.strip_suffix(b"e")?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// The contents of a byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        let raw = self.bytes_raw();
        if !raw.first()?.is_ascii_digit() {
            return None;
        }
        let colon = raw.iter().position(|&b| b == b':')?;
        raw.get(colon + 1..)
    }

    /// A non-negative integer that fits `u32` (counts, intervals); anything else is `None`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_int().and_then(|n| u32::try_from(n).ok())
    }

    pub fn is_dict(&self) -> bool {
        self.bytes_raw().first() == Some(&b'd')
    }

    /// The dictionary's entries in order; empty when this is not a dictionary. A later duplicate key is
    /// visible to iteration; [`Value::get`] takes the first.
    pub fn entries(&self) -> impl Iterator<Item = (&'a [u8], Value<'a>)> + 'a {
        let input = self.input;
        let entries = if self.is_dict() { bencode::DictEntries::new(input, self.span.0).ok() } else { None };
        entries.into_iter().flatten().map_while(move |entry| {
            let entry = entry.ok()?;
            let key = input.get(entry.key)?;
            Some((key, Value::at(input, entry.value)))
        })
    }

    pub fn get(&self, key: &[u8]) -> Option<Value<'a>> {
        self.entries().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The list's items in order; empty when this is not a list.
    pub fn items(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let input = self.input;
        let (start, end) = self.span;
        let mut pos = if input.get(start) == Some(&b'l') { start + 1 } else { end };
        std::iter::from_fn(move || {
            if pos + 1 >= end {
                return None;
            }
            let span = bencode::value_span(input, pos).ok()?;
            pos = span.end;
            Some(Value::at(input, span))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> TrackerUrl {
        TrackerUrl::parse(s).unwrap()
    }

    #[test]
    fn url_http_name_default_port_and_path() {
        let u = url("http://Tracker.Example.org/announce");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.host, Host::Name("tracker.example.org".into()));
        assert_eq!(u.port, 80);
        assert_eq!(u.path, "/announce");
        assert_eq!(u.host_header(), "tracker.example.org");
    }

    #[test]
    fn url_ip_literals_v4_and_v6_with_ports() {
        let u = url("http://127.0.0.1:6969/announce");
        assert_eq!(u.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(u.host_header(), "127.0.0.1:6969");
        let u = url("udp://[::1]:6969/announce");
        assert_eq!(u.scheme, Scheme::Udp);
        assert_eq!(u.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(u.port, 6969);
        assert_eq!(u.host_header(), "[::1]:6969");
        assert_eq!(url("http://[::1]/a").port, 80);
    }

    #[test]
    fn url_without_path_gets_slash_and_fragment_is_dropped() {
        assert_eq!(url("udp://t.example:1337").path, "/");
        assert_eq!(url("http://t.example/a?x=1#frag").path, "/a?x=1");
        assert_eq!(url("http://t.example?x=1").path, "/?x=1");
    }

    #[test]
    fn url_rejects_what_we_cannot_speak_or_trust() {
        let err = |s: &str| TrackerUrl::parse(s).unwrap_err();
        assert_eq!(err("https://t.example/announce"), UrlError::UnsupportedScheme("https".into()));
        assert_eq!(err("wss://t.example/announce"), UrlError::UnsupportedScheme("wss".into()));
        assert_eq!(err("t.example/announce"), UrlError::MissingScheme);
        assert_eq!(err("udp://t.example/announce"), UrlError::MissingPort);
        assert_eq!(err("http://t.example:0/"), UrlError::BadPort);
        assert_eq!(err("http://t.example:99999/"), UrlError::BadPort);
        assert_eq!(err("http://t.example:x/"), UrlError::BadPort);
        assert_eq!(err("http:///announce"), UrlError::MissingHost);
        assert_eq!(err("http://u:p@t.example/"), UrlError::UserInfo);
        assert_eq!(err("http://[::1/"), UrlError::BadHost);
        assert_eq!(err("http://[zz::1]/"), UrlError::BadHost);
        assert_eq!(err("http://t example/"), UrlError::BadHost);
        assert_eq!(err("http://t.example/a\r\nX-Evil: 1"), UrlError::BadPath);
        assert_eq!(err("http://t.example/a b"), UrlError::BadPath);
        assert_eq!(err("http://t.example/é"), UrlError::BadPath);
    }

    #[test]
    fn query_is_appended_with_question_mark_or_ampersand() {
        assert_eq!(url("http://t/announce").target_with_query("a=1"), "/announce?a=1");
        assert_eq!(url("http://t/announce?passkey=abc").target_with_query("a=1"), "/announce?passkey=abc&a=1");
        assert_eq!(url("http://t/announce?").target_with_query("a=1"), "/announce?a=1");
        assert_eq!(url("http://t/announce?k=1&").target_with_query("a=1"), "/announce?k=1&a=1");
    }

    #[test]
    fn scrape_url_replaces_announce_after_last_slash_only() {
        let s = |u: &str| url(u).scrape_url().map(|u| u.path);
        assert_eq!(s("http://t/announce").as_deref(), Some("/scrape"));
        assert_eq!(s("http://t/x/announce.php?k=1").as_deref(), Some("/x/scrape.php?k=1"));
        assert_eq!(s("http://t/announce/x"), None);
        assert_eq!(s("http://t/a"), None);
        assert_eq!(s("http://t/x/announce?url=/announce").as_deref(), Some("/x/scrape?url=/announce"));
        assert_eq!(s("udp://t:1/announce").as_deref(), Some("/announce"));
    }

    #[test]
    fn percent_encoding_is_byte_wise_with_unreserved_literal() {
        let mut out = String::new();
        percent_encode(&[0x00, 0x12, b'a', b'Z', b'0', b'-', b'.', b'_', b'~', b' ', 0xff, b'%', b'/'], &mut out);
        assert_eq!(out, "%00%12aZ0-._~%20%FF%25%2F");
        let mut id = String::new();
        percent_encode(b"-RL0001-\x01\x02abcdefghij", &mut id);
        assert_eq!(id, "-RL0001-%01%02abcdefghij");
    }

    #[test]
    fn compact_peers_v4_and_v6_ignore_partial_tail() {
        let v4: Vec<_> = compact_v4(&[127, 0, 0, 1, 0x1a, 0xe1, 10, 0, 0, 2, 0, 80, 9]).collect();
        assert_eq!(v4, ["127.0.0.1:6881".parse().unwrap(), "10.0.0.2:80".parse().unwrap()]);
        let mut raw = Vec::new();
        encode_compact("[2001:db8::1]:51413".parse().unwrap(), &mut raw);
        assert_eq!(raw.len(), COMPACT_V6_LEN);
        raw.push(1);
        let v6: Vec<SocketAddr> = compact_v6(&raw).collect();
        assert_eq!(v6, ["[2001:db8::1]:51413".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn sanitize_makes_one_short_line() {
        assert_eq!(sanitize(b" bad\r\nthing\x1b[31m "), "bad  thing [31m");
        let long = vec![b'a'; 500];
        assert_eq!(sanitize(&long).chars().count(), MAX_REMOTE_TEXT + 1);
        assert_eq!(sanitize(&[0xff, b'x']), "\u{fffd}x");
    }

    #[test]
    fn bencode_values_read_through_checked_spans() {
        let doc = b"d8:intervali1800e5:peersld2:ip9:127.0.0.14:porti6881eee4:negai-5ee\n";
        let v = Value::parse(doc).unwrap();
        assert_eq!(v.get(b"interval").and_then(|v| v.as_u32()), Some(1800));
        assert_eq!(v.get(b"nega").and_then(|v| v.as_int()), Some(-5));
        assert_eq!(v.get(b"nega").and_then(|v| v.as_u32()), None);
        let peers: Vec<_> = v.get(b"peers").unwrap().items().collect();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].get(b"ip").and_then(|v| v.as_bytes()), Some(&b"127.0.0.1"[..]));
        assert_eq!(v.get(b"interval").unwrap().items().count(), 0);
        assert_eq!(Value::parse(b"le").unwrap().items().count(), 0);
        assert!(Value::parse(b"d3:abc").is_err());
    }
}
