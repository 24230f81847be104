//! KRPC, the DHT's message format (BEP 5): queries `ping`, `find_node`, `get_peers`, `announce_peer`,
//! responses and errors; decoding from a datagram and encoding into a caller's buffer.
//!
//! Owns: the byte format of every DHT message, its size caps and its decode errors.
//! Must not: keep state, know which transaction a response answers, or decide what to answer.
//!
//! Decoding goes through the crate's iterative, depth-bounded scanner (`crate::bencode`), never through
//! recursion on peer bytes; the decoded message borrows from the datagram (compact node lists and the
//! `values` list stay as validated byte spans, read by iterators), so decoding allocates nothing.
//!
//! References: BEP 5 <https://www.bittorrent.org/beps/bep_0005.html>, BEP 32 (`nodes6`, `want`)
//! <https://www.bittorrent.org/beps/bep_0032.html>, BEP 42 (`ip`) <https://www.bittorrent.org/beps/bep_0042.html>,
//! BEP 43 (`ro`) <https://www.bittorrent.org/beps/bep_0043.html>.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use super::node_id::NodeId;
use crate::bencode::{self, BencodeError, DictEntries};

/// The largest datagram decoded; real KRPC messages stay under one Ethernet MTU.
pub const MAX_DATAGRAM: usize = 1500;
/// The most `values` entries accepted in one response (and the most we put in one).
pub const MAX_VALUES: usize = 100;
/// The longest transaction id accepted from others (we make 4-byte ones).
pub const MAX_TX_LEN: usize = 16;
/// The longest token accepted from others (ours are 8 bytes; libtorrent's 4; some use 20).
pub const MAX_TOKEN_LEN: usize = 32;
/// Compact node info: 20-byte id + 4-byte IPv4 + 2-byte port, and the IPv6 form (BEP 32).
pub const NODE4_LEN: usize = 26;
pub const NODE6_LEN: usize = 38;

/// A short byte string kept inline (transaction ids, tokens).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inline<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// `None` if `b` is longer than `N`.
    pub fn new(b: &[u8]) -> Option<Self> {
        if b.len() > N {
            return None;
        }
        let mut bytes = [0u8; N];
        bytes[..b.len()].copy_from_slice(b);
        Some(Inline { len: b.len() as u8, bytes })
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl<const N: usize> fmt::Debug for Inline<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A transaction id: opaque bytes, echoed back in the reply.
pub type TxId = Inline<MAX_TX_LEN>;
/// An announce token as another node gave it.
pub type Token = Inline<MAX_TOKEN_LEN>;

/// BEP 32 `want`: which address families' nodes the asker wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub n4: bool,
    pub n6: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    Ping,
    FindNode {
        target: NodeId,
    },
    GetPeers {
        info_hash: NodeId,
    },
    /// `port` is ignored when `implied_port` is set: the peer's port is the datagram's source port.
    AnnouncePeer {
        info_hash: NodeId,
        port: u16,
        implied_port: bool,
        token: Token,
    },
    /// A method we do not know; answered with error 204.
    Unknown,
}

/// A response's fields; which are present depends on the query it answers, which the decoder does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub id: NodeId,
    /// Compact IPv4 node infos, a whole number of 26-byte entries.
    pub nodes: &'a [u8],
    /// Compact IPv6 node infos, a whole number of 38-byte entries.
    pub nodes6: &'a [u8],
    pub values: Values<'a>,
    pub token: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Query { id: NodeId, query: Query, want: Want, read_only: bool },
    Response(Response<'a>),
    Error { code: i64, message: &'a [u8] },
}

/// One decoded datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub tx: TxId,
    pub body: Body<'a>,
    /// BEP 42: the address the sender saw us at (top-level `ip`).
    pub ip: Option<SocketAddr>,
    /// The sender's client version (`v`), if any.
    pub version: Option<&'a [u8]>,
}

/// The validated `values` list of a `get_peers` response: each entry a 6- or 18-byte compact peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Values<'a> {
    /// The bencoded list, `l...e`; empty when absent.
    list: &'a [u8],
}

impl<'a> Values<'a> {
    pub fn is_empty(&self) -> bool {
        self.list.len() <= 2
    }
    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter { list: self.list, pos: 1 }
    }
}

pub struct ValuesIter<'a> {
    list: &'a [u8],
    pos: usize,
}

impl Iterator for ValuesIter<'_> {
    type Item = SocketAddr;
    fn next(&mut self) -> Option<SocketAddr> {
        // The list was validated at decode: only strings of 6 or 18 bytes, so this cannot fail midway.
        if self.pos >= self.list.len() || self.list[self.pos] == b'e' {
            return None;
        }
        let span = bencode::value_span(self.list, self.pos).ok()?;
        let body = string_body(self.list, span.clone())?;
        self.pos = span.end;
        compact_peer(body)
    }
}

/// Decodes a compact peer (BEP 5 / BEP 32): 4 or 16 address bytes and a big-endian port.
pub fn compact_peer(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])), u16::from_be_bytes([b[4], b[5]]))),
        18 => {
            let ip: [u8; 16] = b[..16].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), u16::from_be_bytes([b[16], b[17]])))
        }
        _ => None,
    }
}

/// Appends the compact form of `addr` (6 or 18 bytes).
pub fn put_compact_peer(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// The node infos of a `nodes` or `nodes6` string (already checked to be whole entries).
pub fn compact_nodes(b: &[u8], entry: usize) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
    b.chunks_exact(entry).filter_map(|c| Some((NodeId::from_slice(&c[..20])?, compact_peer(&c[20..])?)))
}

/// Why a datagram is not a KRPC message we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge { len: usize },
    Bencode(BencodeError),
    MissingKey(&'static str),
    WrongType(&'static str),
    DuplicateKey(&'static str),
    BadTxId { len: usize },
    UnknownKind,
    BadId,
    BadNodes { len: usize },
    BadValue,
    TooManyValues,
    BadPort,
    BadIp { len: usize },
    BadToken { len: usize },
    BadErrorList,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::TooLarge { len } => write!(f, "KRPC datagram of {len} bytes, over {MAX_DATAGRAM}"),
            DecodeError::Bencode(e) => write!(f, "KRPC datagram is not bencode: {e}"),
            DecodeError::MissingKey(k) => write!(f, "KRPC message without `{k}`"),
            DecodeError::WrongType(k) => write!(f, "KRPC `{k}` has the wrong type"),
            DecodeError::DuplicateKey(k) => write!(f, "KRPC `{k}` appears twice"),
            DecodeError::BadTxId { len } => write!(f, "KRPC transaction id of {len} bytes (1 to {MAX_TX_LEN})"),
            DecodeError::UnknownKind => write!(f, "KRPC `y` is not q, r or e"),
            DecodeError::BadId => write!(f, "KRPC node id or info-hash is not 20 bytes"),
            DecodeError::BadNodes { len } => write!(f, "KRPC compact node list of {len} bytes is not whole entries"),
            DecodeError::BadValue => write!(f, "KRPC `values` entry is not a 6- or 18-byte peer"),
            DecodeError::TooManyValues => write!(f, "KRPC `values` has more than {MAX_VALUES} peers"),
            DecodeError::BadPort => write!(f, "KRPC port is not 1 to 65535"),
            DecodeError::BadIp { len } => write!(f, "KRPC `ip` of {len} bytes (6 or 18)"),
            DecodeError::BadToken { len } => write!(f, "KRPC token of {len} bytes (1 to {MAX_TOKEN_LEN})"),
            DecodeError::BadErrorList => write!(f, "KRPC error is not [code, message]"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<BencodeError> for DecodeError {
    fn from(e: BencodeError) -> Self {
        DecodeError::Bencode(e)
    }
}

/// The contents of the byte string spanning `span` (length prefix included); `None` if it is not a string.
fn string_body(input: &[u8], span: Range<usize>) -> Option<&[u8]> {
    let s = input.get(span)?;
    if !s.first()?.is_ascii_digit() {
        return None;
    }
    let colon = s.iter().position(|&b| b == b':')?;
    Some(&s[colon + 1..])
}

fn string<'a>(input: &'a [u8], span: Range<usize>, key: &'static str) -> Result<&'a [u8], DecodeError> {
    string_body(input, span).ok_or(DecodeError::WrongType(key))
}

/// The integer spanning `span` (the scanner has validated its form).
fn integer(input: &[u8], span: Range<usize>, key: &'static str) -> Result<i64, DecodeError> {
    let s = input.get(span).ok_or(DecodeError::WrongType(key))?;
    if s.len() < 3 || s[0] != b'i' {
        return Err(DecodeError::WrongType(key));
    }
    std::str::from_utf8(&s[1..s.len() - 1]).ok().and_then(|t| t.parse().ok()).ok_or(DecodeError::WrongType(key))
}

fn id(input: &[u8], span: Range<usize>, key: &'static str) -> Result<NodeId, DecodeError> {
    NodeId::from_slice(string(input, span, key)?).ok_or(DecodeError::BadId)
}

/// Sets `slot` once; a second occurrence of the key is an error.
fn once<T>(slot: &mut Option<T>, value: T, key: &'static str) -> Result<(), DecodeError> {
    if slot.replace(value).is_some() {
        return Err(DecodeError::DuplicateKey(key));
    }
    Ok(())
}

/// The spans of a list's elements, one per call (the list was validated by the scanner).
fn list_items<'a>(input: &'a [u8], list: Range<usize>, key: &'static str) -> Result<ListItems<'a>, DecodeError> {
    if input.get(list.start) != Some(&b'l') {
        return Err(DecodeError::WrongType(key));
    }
    Ok(ListItems { input, pos: list.start + 1, end: list.end })
}

struct ListItems<'a> {
    input: &'a [u8],
    pos: usize,
    end: usize,
}

impl Iterator for ListItems<'_> {
    type Item = Range<usize>;
    fn next(&mut self) -> Option<Range<usize>> {
        if self.pos + 1 >= self.end {
            return None;
        }
        let span = bencode::value_span(self.input, self.pos).ok()?;
        self.pos = span.end;
        Some(span)
    }
}

/// Decodes one datagram. Unknown keys are ignored (BEP 5 asks for that); every field we read is checked.
pub fn decode(input: &[u8]) -> Result<Message<'_>, DecodeError> {
    if input.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLarge { len: input.len() });
    }
    bencode::whole_value_span(input)?;
    let (mut t, mut y, mut q, mut a, mut r, mut e, mut v, mut ip) = (None, None, None, None, None, None, None, None);
    for entry in DictEntries::new(input, 0)? {
        let entry = entry?;
        let span = entry.value;
        match &input[entry.key] {
            b"t" => once(&mut t, string(input, span, "t")?, "t")?,
            b"y" => once(&mut y, string(input, span, "y")?, "y")?,
            b"q" => once(&mut q, string(input, span, "q")?, "q")?,
            b"a" => once(&mut a, span, "a")?,
            b"r" => once(&mut r, span, "r")?,
            b"e" => once(&mut e, span, "e")?,
            b"v" => once(&mut v, string(input, span, "v")?, "v")?,
            b"ip" => once(&mut ip, string(input, span, "ip")?, "ip")?,
            _ => {}
        }
    }
    let t = t.ok_or(DecodeError::MissingKey("t"))?;
    if t.is_empty() || t.len() > MAX_TX_LEN {
        return Err(DecodeError::BadTxId { len: t.len() });
    }
    let tx = TxId::new(t).ok_or(DecodeError::BadTxId { len: t.len() })?;
    let ip = match ip {
        Some(b) => Some(compact_peer(b).ok_or(DecodeError::BadIp { len: b.len() })?),
        None => None,
    };
    let body = match y.ok_or(DecodeError::MissingKey("y"))? {
        b"q" => decode_query(input, q.ok_or(DecodeError::MissingKey("q"))?, a.ok_or(DecodeError::MissingKey("a"))?)?,
        b"r" => Body::Response(decode_response(input, r.ok_or(DecodeError::MissingKey("r"))?)?),
        b"e" => decode_error(input, e.ok_or(DecodeError::MissingKey("e"))?)?,
        _ => return Err(DecodeError::UnknownKind),
    };
    Ok(Message { tx, body, ip, version: v })
}

fn decode_query<'a>(input: &'a [u8], method: &[u8], args: Range<usize>) -> Result<Body<'a>, DecodeError> {
    let (mut node, mut target, mut info_hash, mut port, mut implied, mut token, mut want, mut ro) =
        (None, None, None, None, None, None, None, None);
    let entries = DictEntries::new(input, args.start).map_err(|_| DecodeError::WrongType("a"))?;
    for entry in entries {
        let entry = entry?;
        let span = entry.value;
        match &input[entry.key] {
            b"id" => once(&mut node, id(input, span, "id")?, "id")?,
            b"target" => once(&mut target, id(input, span, "target")?, "target")?,
            b"info_hash" => once(&mut info_hash, id(input, span, "info_hash")?, "info_hash")?,
            b"port" => once(&mut port, integer(input, span, "port")?, "port")?,
            b"implied_port" => once(&mut implied, integer(input, span, "implied_port")?, "implied_port")?,
            b"token" => once(&mut token, string(input, span, "token")?, "token")?,
            b"ro" => once(&mut ro, integer(input, span, "ro")?, "ro")?,
            b"want" => {
                let mut w = Want::default();
                for item in list_items(input, span, "want")? {
                    match string_body(input, item) {
                        Some(b"n4") => w.n4 = true,
                        Some(b"n6") => w.n6 = true,
                        _ => {}
                    }
                }
                once(&mut want, w, "want")?
            }
            _ => {}
        }
    }
    let id = node.ok_or(DecodeError::MissingKey("id"))?;
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode { target: target.ok_or(DecodeError::MissingKey("target"))? },
        b"get_peers" => Query::GetPeers { info_hash: info_hash.ok_or(DecodeError::MissingKey("info_hash"))? },
        b"announce_peer" => {
            let implied_port = implied.unwrap_or(0) != 0;
            // With `implied_port` the `port` value is ignored (any integer, or none, will do).
            let port = match port {
                Some(p) if implied_port => u16::try_from(p).unwrap_or(0),
                None if implied_port => 0,
                Some(p) => u16::try_from(p).ok().filter(|&p| p != 0).ok_or(DecodeError::BadPort)?,
                None => return Err(DecodeError::MissingKey("port")),
            };
            let token = token.ok_or(DecodeError::MissingKey("token"))?;
            let token =
                Token::new(token).filter(|_| !token.is_empty()).ok_or(DecodeError::BadToken { len: token.len() })?;
            Query::AnnouncePeer {
                info_hash: info_hash.ok_or(DecodeError::MissingKey("info_hash"))?,
                port,
                implied_port,
                token,
            }
        }
        _ => Query::Unknown,
    };
    Ok(Body::Query { id, query, want: want.unwrap_or_default(), read_only: ro.unwrap_or(0) != 0 })
}

fn decode_response(input: &[u8], r: Range<usize>) -> Result<Response<'_>, DecodeError> {
    let (mut node, mut nodes, mut nodes6, mut values, mut token) = (None, None, None, None, None);
    let entries = DictEntries::new(input, r.start).map_err(|_| DecodeError::WrongType("r"))?;
    for entry in entries {
        let entry = entry?;
        let span = entry.value;
        match &input[entry.key] {
            b"id" => once(&mut node, id(input, span, "id")?, "id")?,
            b"nodes" => once(&mut nodes, string(input, span, "nodes")?, "nodes")?,
            b"nodes6" => once(&mut nodes6, string(input, span, "nodes6")?, "nodes6")?,
            b"token" => once(&mut token, string(input, span, "token")?, "token")?,
            b"values" => {
                let mut count = 0;
                for item in list_items(input, span.clone(), "values")? {
                    let peer = string_body(input, item).ok_or(DecodeError::BadValue)?;
                    if peer.len() != 6 && peer.len() != 18 {
                        return Err(DecodeError::BadValue);
                    }
                    count += 1;
                    if count > MAX_VALUES {
                        return Err(DecodeError::TooManyValues);
                    }
                }
                once(&mut values, Values { list: &input[span] }, "values")?
            }
            _ => {}
        }
    }
    let nodes = nodes.unwrap_or(&[]);
    if nodes.len() % NODE4_LEN != 0 {
        return Err(DecodeError::BadNodes { len: nodes.len() });
    }
    let nodes6 = nodes6.unwrap_or(&[]);
    if nodes6.len() % NODE6_LEN != 0 {
        return Err(DecodeError::BadNodes { len: nodes6.len() });
    }
    if let Some(t) = token {
        if t.is_empty() || t.len() > MAX_TOKEN_LEN {
            return Err(DecodeError::BadToken { len: t.len() });
        }
    }
    Ok(Response {
        id: node.ok_or(DecodeError::MissingKey("id"))?,
        nodes,
        nodes6,
        values: values.unwrap_or_default(),
        token,
    })
}

fn decode_error(input: &[u8], e: Range<usize>) -> Result<Body<'_>, DecodeError> {
    let mut items = list_items(input, e, "e").map_err(|_| DecodeError::BadErrorList)?;
    let code = items.next().ok_or(DecodeError::BadErrorList)?;
    let code = integer(input, code, "e").map_err(|_| DecodeError::BadErrorList)?;
    let message = match items.next() {
        Some(span) => string_body(input, span).ok_or(DecodeError::BadErrorList)?,
        None => return Err(DecodeError::BadErrorList),
    };
    Ok(Body::Error { code, message })
}

// ---- encoding ----

/// Appends `n` in decimal without allocating.
fn put_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn put_str(out: &mut Vec<u8>, b: &[u8]) {
    put_decimal(out, b.len() as u64);
    out.push(b':');
    out.extend_from_slice(b);
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    out.push(b'i');
    if v < 0 {
        out.push(b'-');
    }
    put_decimal(out, v.unsigned_abs());
    out.push(b'e');
}

/// The top-level keys after the body: `ip` (only in responses), `t`, `v`, `y`; keys in bencode order.
fn put_tail(out: &mut Vec<u8>, tx: &[u8], version: Option<&[u8]>, kind: &[u8]) {
    put_str(out, b"t");
    put_str(out, tx);
    if let Some(v) = version {
        put_str(out, b"v");
        put_str(out, v);
    }
    put_str(out, b"y");
    put_str(out, kind);
    out.push(b'e');
}

/// Appends a query. `want` is sent only when it names a family.
pub fn encode_query(tx: &[u8], id: &NodeId, query: &Query, want: Want, version: Option<&[u8]>, out: &mut Vec<u8>) {
    let method: &[u8] = match query {
        Query::Ping => b"ping",
        Query::FindNode { .. } => b"find_node",
        Query::GetPeers { .. } => b"get_peers",
        Query::AnnouncePeer { .. } => b"announce_peer",
        Query::Unknown => b"unknown",
    };
    out.extend_from_slice(b"d1:ad");
    put_str(out, b"id");
    put_str(out, &id.0);
    match query {
        Query::AnnouncePeer { info_hash, port, implied_port, token } => {
            if *implied_port {
                put_str(out, b"implied_port");
                put_int(out, 1);
            }
            put_str(out, b"info_hash");
            put_str(out, &info_hash.0);
            put_str(out, b"port");
            put_int(out, i64::from(*port));
            put_str(out, b"token");
            put_str(out, token.as_bytes());
        }
        Query::GetPeers { info_hash } => {
            put_str(out, b"info_hash");
            put_str(out, &info_hash.0);
        }
        Query::FindNode { target } => {
            put_str(out, b"target");
            put_str(out, &target.0);
        }
        Query::Ping | Query::Unknown => {}
    }
    if want.n4 || want.n6 {
        put_str(out, b"want");
        out.push(b'l');
        if want.n4 {
            put_str(out, b"n4");
        }
        if want.n6 {
            put_str(out, b"n6");
        }
        out.push(b'e');
    }
    out.extend_from_slice(b"e1:q");
    put_str(out, method);
    put_tail(out, tx, version, b"q");
}

/// What we put in a response. `nodes`/`nodes6` are compact node infos; `values` compact peers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reply<'a> {
    pub nodes: Option<&'a [u8]>,
    pub nodes6: Option<&'a [u8]>,
    pub token: Option<&'a [u8]>,
    pub values: &'a [SocketAddr],
}

/// Appends a response; `ip` is the asker's address as we see it (BEP 42).
pub fn encode_response(
    tx: &[u8],
    id: &NodeId,
    reply: &Reply<'_>,
    ip: Option<SocketAddr>,
    version: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"d");
    if let Some(ip) = ip {
        put_str(out, b"ip");
        out.extend_from_slice(if ip.is_ipv4() { b"6:" } else { b"18:" });
        put_compact_peer(ip, out);
    }
    out.extend_from_slice(b"1:rd");
    put_str(out, b"id");
    put_str(out, &id.0);
    if let Some(n) = reply.nodes {
        put_str(out, b"nodes");
        put_str(out, n);
    }
    if let Some(n) = reply.nodes6 {
        put_str(out, b"nodes6");
        put_str(out, n);
    }
    if let Some(t) = reply.token {
        put_str(out, b"token");
        put_str(out, t);
    }
    if !reply.values.is_empty() {
        put_str(out, b"values");
        out.push(b'l');
        for v in reply.values.iter().take(MAX_VALUES) {
            out.extend_from_slice(if v.is_ipv4() { b"6:" } else { b"18:" });
            put_compact_peer(*v, out);
        }
        out.push(b'e');
    }
    out.push(b'e');
    put_tail(out, tx, version, b"r");
}

/// Appends an error message (BEP 5 codes: 201 generic, 202 server, 203 protocol, 204 method unknown).
pub fn encode_error(tx: &[u8], code: i64, message: &str, version: Option<&[u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"d1:el");
    put_int(out, code);
    put_str(out, message.as_bytes());
    out.push(b'e');
    put_tail(out, tx, version, b"e");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn nid(s: &[u8; 20]) -> NodeId {
        NodeId(*s)
    }

    // BEP 5's examples, byte for byte.
    const PING_Q: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    const PING_R: &[u8] = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
    const FIND_Q: &[u8] =
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe";
    const GETP_Q: &[u8] =
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe";
    const GETP_R_VALUES: &[u8] =
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re";
    const ANNOUNCE_Q: &[u8] = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
    const ERROR: &[u8] = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";

    fn tx() -> TxId {
        TxId::new(b"aa").unwrap()
    }

    #[test]
    fn bep5_examples_decode_and_encode_byte_exact() {
        let a = nid(b"abcdefghij0123456789");
        let m = nid(b"mnopqrstuvwxyz123456");
        let mut out = Vec::new();

        let q = decode(PING_Q).unwrap();
        assert_eq!(q.tx, tx());
        assert_eq!(q.body, Body::Query { id: a, query: Query::Ping, want: Want::default(), read_only: false });
        encode_query(b"aa", &a, &Query::Ping, Want::default(), None, &mut out);
        assert_eq!(out, PING_Q);

        let Body::Response(r) = decode(PING_R).unwrap().body else { panic!("not a response") };
        assert_eq!((r.id, r.nodes, r.token), (m, &[][..], None));
        out.clear();
        encode_response(b"aa", &m, &Reply::default(), None, None, &mut out);
        assert_eq!(out, PING_R);

        assert_eq!(
            decode(FIND_Q).unwrap().body,
            Body::Query { id: a, query: Query::FindNode { target: m }, want: Want::default(), read_only: false }
        );
        out.clear();
        encode_query(b"aa", &a, &Query::FindNode { target: m }, Want::default(), None, &mut out);
        assert_eq!(out, FIND_Q);

        out.clear();
        encode_query(b"aa", &a, &Query::GetPeers { info_hash: m }, Want::default(), None, &mut out);
        assert_eq!(out, GETP_Q);
        assert!(
            matches!(decode(GETP_Q).unwrap().body, Body::Query { query: Query::GetPeers { info_hash }, .. } if info_hash == m)
        );

        let Body::Response(r) = decode(GETP_R_VALUES).unwrap().body else { panic!("not a response") };
        assert_eq!(r.token, Some(&b"aoeusnth"[..]));
        let peers: Vec<SocketAddr> = r.values.iter().collect();
        assert_eq!(peers, vec![compact_peer(b"axje.u").unwrap(), compact_peer(b"idhtnm").unwrap()]);
        out.clear();
        encode_response(
            b"aa",
            &a,
            &Reply { token: Some(b"aoeusnth"), values: &peers, ..Reply::default() },
            None,
            None,
            &mut out,
        );
        assert_eq!(out, GETP_R_VALUES);

        let token = Token::new(b"aoeusnth").unwrap();
        let announce = Query::AnnouncePeer { info_hash: m, port: 6881, implied_port: true, token };
        assert_eq!(
            decode(ANNOUNCE_Q).unwrap().body,
            Body::Query { id: a, query: announce, want: Want::default(), read_only: false }
        );
        out.clear();
        encode_query(b"aa", &a, &announce, Want::default(), None, &mut out);
        assert_eq!(out, ANNOUNCE_Q);

        assert_eq!(decode(ERROR).unwrap().body, Body::Error { code: 201, message: b"A Generic Error Ocurred" });
        out.clear();
        encode_error(b"aa", 201, "A Generic Error Ocurred", None, &mut out);
        assert_eq!(out, ERROR);
    }

    #[test]
    fn integers_encode_without_allocating_and_exactly() {
        let mut out = Vec::new();
        for v in [0i64, 7, -7, 10, 6881, i64::MAX, i64::MIN] {
            out.clear();
            put_int(&mut out, v);
            assert_eq!(out, format!("i{v}e").into_bytes());
        }
    }

    #[test]
    fn nodes_nodes6_ip_want_and_version_round_trip() {
        let a = nid(b"abcdefghij0123456789");
        let mut nodes = a.0.to_vec();
        put_compact_peer("1.2.3.4:5".parse().unwrap(), &mut nodes);
        let mut nodes6 = a.0.to_vec();
        put_compact_peer("[2001:db8::1]:6881".parse().unwrap(), &mut nodes6);
        let mut out = Vec::new();
        let me: SocketAddr = "[2001:db8::9]:7".parse().unwrap();
        encode_response(
            b"tx01",
            &a,
            &Reply { nodes: Some(&nodes), nodes6: Some(&nodes6), ..Reply::default() },
            Some(me),
            Some(b"RL01"),
            &mut out,
        );
        let msg = decode(&out).unwrap();
        assert_eq!(msg.ip, Some(me));
        assert_eq!(msg.version, Some(&b"RL01"[..]));
        let Body::Response(r) = msg.body else { panic!() };
        assert_eq!(compact_nodes(r.nodes, NODE4_LEN).collect::<Vec<_>>(), vec![(a, "1.2.3.4:5".parse().unwrap())]);
        assert_eq!(compact_nodes(r.nodes6, NODE6_LEN).count(), 1);
        out.clear();
        encode_query(b"t", &a, &Query::Ping, Want { n4: true, n6: true }, None, &mut out);
        assert!(matches!(decode(&out).unwrap().body, Body::Query { want: Want { n4: true, n6: true }, .. }));
    }

    fn err(input: &[u8]) -> DecodeError {
        decode(input).expect_err(&String::from_utf8_lossy(input))
    }

    #[test]
    fn each_malformed_case_has_its_error() {
        assert_eq!(err(&vec![b'x'; MAX_DATAGRAM + 1]), DecodeError::TooLarge { len: MAX_DATAGRAM + 1 });
        assert!(matches!(err(b"d1:t2:aa"), DecodeError::Bencode(_)));
        assert!(matches!(err(b"le"), DecodeError::Bencode(BencodeError::NotADictionary { .. })));
        assert_eq!(err(b"d1:y1:qe"), DecodeError::MissingKey("t"));
        assert_eq!(err(b"d1:t0:1:y1:re"), DecodeError::BadTxId { len: 0 });
        assert_eq!(err(b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:re"), DecodeError::BadTxId { len: 17 });
        assert_eq!(err(b"d1:t2:aae"), DecodeError::MissingKey("y"));
        assert_eq!(err(b"d1:t2:aa1:y1:xe"), DecodeError::UnknownKind);
        assert_eq!(err(b"d1:t2:aa1:yi1ee"), DecodeError::WrongType("y"));
        assert_eq!(err(b"d1:t2:aa1:t2:bb1:y1:re"), DecodeError::DuplicateKey("t"));
        assert_eq!(err(b"d1:t2:aa1:y1:qe"), DecodeError::MissingKey("q"));
        assert_eq!(err(b"d1:q4:ping1:t2:aa1:y1:qe"), DecodeError::MissingKey("a"));
        assert_eq!(err(b"d1:ade1:q4:ping1:t2:aa1:y1:qe"), DecodeError::MissingKey("id"));
        assert_eq!(err(b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe"), DecodeError::BadId);
        assert_eq!(err(b"d1:ali1ee1:q4:ping1:t2:aa1:y1:qe"), DecodeError::WrongType("a"));
        assert_eq!(
            err(b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe"),
            DecodeError::MissingKey("target")
        );
        assert_eq!(
            err(b"d1:ad2:id20:abcdefghij0123456789e1:q9:get_peers1:t2:aa1:y1:qe"),
            DecodeError::MissingKey("info_hash")
        );
        let announce = |args: &str| {
            let mut m = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456".to_vec();
            m.extend_from_slice(args.as_bytes());
            m.extend_from_slice(b"e1:q13:announce_peer1:t2:aa1:y1:qe");
            m
        };
        assert_eq!(err(&announce("4:porti0e5:token1:x")), DecodeError::BadPort);
        assert_eq!(err(&announce("4:porti70000e5:token1:x")), DecodeError::BadPort);
        assert_eq!(err(&announce("5:token1:x")), DecodeError::MissingKey("port"));
        assert_eq!(err(&announce("4:porti1e")), DecodeError::MissingKey("token"));
        assert_eq!(err(&announce("4:porti1e5:token0:")), DecodeError::BadToken { len: 0 });
        assert_eq!(
            err(&announce(&format!("4:porti1e5:token33:{}", "x".repeat(33)))),
            DecodeError::BadToken { len: 33 }
        );
        assert_eq!(err(&announce("4:port1:x5:token1:x")), DecodeError::WrongType("port"));
        assert!(decode(&announce("12:implied_porti1e5:token1:x")).is_ok(), "implied_port needs no port");
        assert!(decode(&announce("12:implied_porti1e4:porti0e5:token1:x")).is_ok(), "nor a valid one");
        assert_eq!(err(b"d1:t2:aa1:y1:re"), DecodeError::MissingKey("r"));
        assert_eq!(err(b"d1:rde1:t2:aa1:y1:re"), DecodeError::MissingKey("id"));
        assert_eq!(
            err(b"d1:rd2:id20:abcdefghij01234567895:nodes3:abce1:t2:aa1:y1:re"),
            DecodeError::BadNodes { len: 3 }
        );
        assert_eq!(
            err(b"d1:rd2:id20:abcdefghij01234567896:nodes626:abcdefghij0123456789abcdefe1:t2:aa1:y1:re"),
            DecodeError::BadNodes { len: 26 }
        );
        assert_eq!(err(b"d1:rd2:id20:abcdefghij01234567896:valuesl5:abcdeee1:t2:aa1:y1:re"), DecodeError::BadValue);
        assert_eq!(err(b"d1:rd2:id20:abcdefghij01234567896:valuesli1eee1:t2:aa1:y1:re"), DecodeError::BadValue);
        assert_eq!(
            err(b"d1:rd2:id20:abcdefghij01234567896:values3:abce1:t2:aa1:y1:re"),
            DecodeError::WrongType("values")
        );
        let mut many = b"d1:rd2:id20:abcdefghij01234567896:valuesl".to_vec();
        for _ in 0..=MAX_VALUES {
            many.extend_from_slice(b"6:abcdef");
        }
        many.extend_from_slice(b"ee1:t2:aa1:y1:re");
        assert_eq!(err(&many), DecodeError::TooManyValues);
        assert_eq!(err(b"d1:rd2:id20:abcdefghij01234567895:token0:e1:t2:aa1:y1:re"), DecodeError::BadToken { len: 0 });
        assert_eq!(err(b"d2:ip3:abc1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re"), DecodeError::BadIp { len: 3 });
        assert_eq!(err(b"d1:t2:aa1:y1:ee"), DecodeError::MissingKey("e"));
        assert_eq!(err(b"d1:eli201ee1:t2:aa1:y1:ee"), DecodeError::BadErrorList);
        assert_eq!(err(b"d1:el3:abci1ee1:t2:aa1:y1:ee"), DecodeError::BadErrorList);
        assert_eq!(err(b"d1:e3:abc1:t2:aa1:y1:ee"), DecodeError::BadErrorList);
        // Deep nesting is refused by the scanner, without recursion.
        let mut deep = b"d1:t2:aa1:y1:r1:rd2:id20:abcdefghij01234567891:x".to_vec();
        deep.extend(std::iter::repeat(b'l').take(200));
        deep.extend(std::iter::repeat(b'e').take(200));
        deep.extend_from_slice(b"ee");
        assert!(matches!(err(&deep), DecodeError::Bencode(BencodeError::TooDeep { .. })));
        // An unknown method still decodes, to be answered with error 204.
        assert!(matches!(
            decode(b"d1:ad2:id20:abcdefghij0123456789e1:q3:foo1:t2:aa1:y1:qe").unwrap().body,
            Body::Query { query: Query::Unknown, .. }
        ));
        for e in [DecodeError::TooManyValues, DecodeError::BadNodes { len: 3 }, DecodeError::MissingKey("t")] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn mutated_messages_never_panic() {
        let mut nodes = b"d1:rd2:id20:abcdefghij01234567895:nodes52:".to_vec();
        nodes.extend_from_slice(&[7u8; 52]);
        nodes.extend_from_slice(b"5:token4:abcde2:ip6:abcdef1:t4:abcd1:v4:RL011:y1:re");
        let corpus: Vec<&[u8]> = vec![PING_Q, PING_R, FIND_Q, GETP_Q, GETP_R_VALUES, ANNOUNCE_Q, ERROR, &nodes];
        for c in &corpus {
            decode(c).unwrap();
        }
        let mut rng = Rng::seeded(0x6b72_7063);
        let alphabet = b"deil0123456789:-xqrtyav";
        for round in 0..20_000u32 {
            let input = rng.mutate(&corpus, alphabet);
            if let Ok(msg) = decode(&input) {
                assert!(msg.tx.as_bytes().len() <= MAX_TX_LEN, "seed round {round}");
                if let Body::Response(r) = msg.body {
                    assert!(r.values.iter().count() <= MAX_VALUES);
                    assert_eq!(r.nodes.len() % NODE4_LEN, 0);
                    let _ = compact_nodes(r.nodes, NODE4_LEN).count() + compact_nodes(r.nodes6, NODE6_LEN).count();
                }
            }
        }
    }

    /// Every message we send, in each form it takes, decodes to what was encoded.
    #[test]
    fn every_message_round_trips() {
        let a = nid(b"abcdefghij0123456789");
        let m = nid(b"mnopqrstuvwxyz123456");
        let token = Token::new(b"tk").unwrap();
        let queries = [
            Query::Ping,
            Query::FindNode { target: m },
            Query::GetPeers { info_hash: m },
            Query::AnnouncePeer { info_hash: m, port: 51413, implied_port: false, token },
            Query::AnnouncePeer { info_hash: m, port: 1, implied_port: true, token },
            Query::Unknown,
        ];
        let wants =
            [Want::default(), Want { n4: true, n6: false }, Want { n4: false, n6: true }, Want { n4: true, n6: true }];
        let mut out = Vec::new();
        for q in queries {
            for want in wants {
                out.clear();
                encode_query(b"tx", &a, &q, want, Some(b"RL01"), &mut out);
                let msg = decode(&out).unwrap();
                assert_eq!((msg.tx, msg.version, msg.ip), (TxId::new(b"tx").unwrap(), Some(&b"RL01"[..]), None));
                assert_eq!(msg.body, Body::Query { id: a, query: q, want, read_only: false }, "{q:?} {want:?}");
            }
        }
        // BEP 43 `ro`, and `want` items we do not know, as others send them.
        let ro = b"d1:ad2:id20:abcdefghij01234567892:roi1e4:wantl2:n52:n6ee1:q4:ping1:t2:aa1:y1:qe";
        assert_eq!(
            decode(ro).unwrap().body,
            Body::Query { id: a, query: Query::Ping, want: Want { n4: false, n6: true }, read_only: true }
        );

        let mut nodes = Vec::new();
        let mut nodes6 = Vec::new();
        for i in 0..K_NODES {
            nodes.extend_from_slice(&[i; 20]);
            put_compact_peer(SocketAddr::from(([10, 0, 0, i], 6881)), &mut nodes);
            nodes6.extend_from_slice(&[i + 100; 20]);
            put_compact_peer(
                SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i)]), 1),
                &mut nodes6,
            );
        }
        let values: Vec<SocketAddr> =
            vec!["1.2.3.4:5".parse().unwrap(), "[2001:db8::7]:6881".parse().unwrap(), "9.9.9.9:65535".parse().unwrap()];
        let me: SocketAddr = "124.31.75.21:6881".parse().unwrap();
        // ping / announce_peer answers (id only), find_node (nodes, nodes6), get_peers (token and nodes, or
        // token and values).
        let replies = [
            Reply::default(),
            Reply { nodes: Some(&nodes), ..Reply::default() },
            Reply { nodes: Some(&nodes), nodes6: Some(&nodes6), ..Reply::default() },
            Reply { nodes: Some(&nodes), token: Some(b"aoeusnth"), ..Reply::default() },
            Reply { token: Some(b"aoeusnth"), values: &values, ..Reply::default() },
        ];
        for reply in replies {
            out.clear();
            encode_response(b"tx", &m, &reply, Some(me), Some(b"RL01"), &mut out);
            let msg = decode(&out).unwrap();
            assert_eq!(msg.ip, Some(me));
            let Body::Response(r) = msg.body else { panic!("not a response") };
            assert_eq!(r.id, m);
            assert_eq!(r.nodes, reply.nodes.unwrap_or_default());
            assert_eq!(r.nodes6, reply.nodes6.unwrap_or_default());
            assert_eq!(r.token, reply.token);
            assert_eq!(r.values.iter().collect::<Vec<_>>(), reply.values);
            let found: Vec<_> = compact_nodes(r.nodes, NODE4_LEN).collect();
            assert_eq!(found.len(), reply.nodes.map_or(0, |n| n.len() / NODE4_LEN));
            assert_eq!(compact_nodes(r.nodes6, NODE6_LEN).count(), reply.nodes6.map_or(0, |n| n.len() / NODE6_LEN));
        }
        for (code, text) in
            [(201, "A Generic Error"), (202, "Server Error"), (203, "bad token"), (204, "method unknown")]
        {
            out.clear();
            encode_error(b"tx", code, text, None, &mut out);
            assert_eq!(decode(&out).unwrap().body, Body::Error { code, message: text.as_bytes() });
        }
    }

    const K_NODES: u8 = 8;
}
