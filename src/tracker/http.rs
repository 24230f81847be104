//! HTTP tracker protocol (BEP 3, BEP 23, BEP 48): request bytes out, response bytes in.
//!
//! Owns: the GET request for announce and scrape, an incremental response parser (status and headers
//! through httparse; Content-Length, chunked and close-delimited bodies; caps on head and body), and the
//! decoding of announce and scrape bodies.
//! Must not: touch sockets or DNS, follow redirects itself (the tracker machine decides), or log above debug.

use std::fmt;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::codec::{self, percent_encode, TrackerUrl, Value};
use super::error::TrackerError;
use super::message::{AnnounceParams, AnnounceReply, ScrapeCounts, MAX_PEERS_PER_REPLY};
use crate::metainfo::InfoHash;

/// Largest status line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted; a compact reply with 200 peers is about 1.3 KB.
pub const MAX_BODY: usize = 512 * 1024;
/// Headers parsed per response; more is an error.
const MAX_HEADERS: usize = 48;
/// Longest chunk-size line (size, extensions) or trailer line.
const MAX_CHUNK_LINE: usize = 1024;

const USER_AGENT: &str = concat!("rill/", env!("CARGO_PKG_VERSION"));

/// The announce request: GET with every BEP 3 parameter, `compact=1`, `numwant`, `key` and `trackerid`.
pub fn announce_request(url: &TrackerUrl, p: &AnnounceParams) -> Vec<u8> {
    let mut q = String::with_capacity(320);
    q.push_str("info_hash=");
    percent_encode(&p.info_hash.0, &mut q);
    q.push_str("&peer_id=");
    percent_encode(&p.peer_id, &mut q);
    let t = p.transfer;
    // Writing to a String cannot fail.
    let _ = write!(
        q,
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        p.port, t.uploaded, t.downloaded, t.left, p.numwant, p.key
    );
    if let Some(event) = p.event.as_query() {
        q.push_str("&event=");
        q.push_str(event);
    }
    if let Some(id) = &p.tracker_id {
        q.push_str("&trackerid=");
        percent_encode(id, &mut q);
    }
    get_request(url, &url.target_with_query(&q))
}

/// The BEP 48 scrape request for one info-hash; `url` is already the scrape URL.
pub fn scrape_request(url: &TrackerUrl, info_hash: &InfoHash) -> Vec<u8> {
    let mut q = String::from("info_hash=");
    percent_encode(&info_hash.0, &mut q);
    get_request(url, &url.target_with_query(&q))
}

/// A GET of `target` (path and query, already safe for a request line: see `TrackerUrl`). No
/// `Accept-Encoding`, so nothing comes back compressed; `Connection: close`, so the server may end a body
/// by closing.
pub fn get_request(url: &TrackerUrl, target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n",
        url.host_header()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------------------
// Response parsing.

/// Why an HTTP response could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The connection closed before a single byte arrived.
    Empty,
    HeadTooLarge,
    MalformedHead,
    TooManyHeaders,
    BadContentLength,
    BadChunk,
    BodyTooLarge,
    /// The connection closed before the body's declared end.
    Truncated,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpError::Empty => "connection closed without a response",
            HttpError::HeadTooLarge => "headers too large",
            HttpError::MalformedHead => "malformed status line or headers",
            HttpError::TooManyHeaders => "too many headers",
            HttpError::BadContentLength => "bad content-length",
            HttpError::BadChunk => "bad chunked encoding",
            HttpError::BodyTooLarge => "body too large",
            HttpError::Truncated => "body truncated",
        })
    }
}

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    /// The `Location` header, when printable ASCII.
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// How the body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `remaining` more bytes.
    Length {
        remaining: usize,
    },
    Chunked(Chunk),
    /// Until the server closes.
    Close,
}

/// Where the chunked decoder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a size line (kept in `line`).
    Size,
    /// `remaining` data bytes of the current chunk.
    Data { remaining: usize },
    /// The CRLF after a chunk's data (kept in `line` until a newline).
    DataEnd,
    /// Trailer lines after the last chunk, until an empty line.
    Trailer,
}

#[derive(Debug)]
enum State {
    /// Collecting the status line and headers in `head`.
    AwaitingHead,
    Body(Framing),
    /// The response was handed out; further bytes are ignored.
    Done,
}

/// Incremental response parser: bytes in as they arrive, one `HttpResponse` out.
///
/// Invariants: `head.len() <= MAX_HEAD`, `body.len() <= MAX_BODY`, `line.len() <= MAX_CHUNK_LINE`, so the
/// memory one tracker connection can make us hold is bounded whatever it sends.
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    head: Vec<u8>,
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
    line: Vec<u8>,
    received_any: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        ResponseParser {
            state: State::AwaitingHead,
            head: Vec::new(),
            status: 0,
            location: None,
            body: Vec::new(),
            line: Vec::new(),
            received_any: false,
        }
    }

    /// True once any byte of a response arrived.
    pub fn received_any(&self) -> bool {
        self.received_any
    }

    /// Feeds bytes; returns the response once it is complete (once only).
    pub fn feed(&mut self, mut data: &[u8]) -> Result<Option<HttpResponse>, HttpError> {
        if !data.is_empty() {
            self.received_any = true;
        }
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::AwaitingHead => {
                    let room = MAX_HEAD - self.head.len();
                    let take = data.len().min(room);
                    let before = self.head.len();
                    self.head.extend_from_slice(&data[..take]);
                    match self.parse_head()? {
                        None if take < data.len() => return Err(HttpError::HeadTooLarge),
                        None => return Ok(None),
                        Some(head_len) => {
                            // Bytes of `data` after the head are the body's start.
                            let used = head_len.saturating_sub(before).min(data.len());
                            data = &data[used..];
                            self.head.clear();
                        }
                    }
                }
                State::Body(framing) => {
                    if let Some(response) = self.feed_body(framing, &mut data)? {
                        return Ok(Some(response));
                    }
                    if data.is_empty() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The server closed its side: a close-delimited body ends here; anything else is cut short.
    pub fn on_eof(&mut self) -> Result<HttpResponse, HttpError> {
        match self.state {
            State::Body(Framing::Close) => Ok(self.finish()),
            State::Body(Framing::Length { remaining: 0 }) => Ok(self.finish()),
            _ if !self.received_any => Err(HttpError::Empty),
            _ => Err(HttpError::Truncated),
        }
    }

    /// Parses the head if it is complete; returns its length and sets up body framing.
    fn parse_head(&mut self) -> Result<Option<usize>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&self.head) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
            Err(_) => return Err(HttpError::MalformedHead),
        };
        let status = response.code.ok_or(HttpError::MalformedHead)?;
        if (100..200).contains(&status) {
            // An interim response (100 Continue): the real head follows; drop this one.
            let rest = self.head.split_off(len);
            self.head = rest;
            return self.parse_head().map(|r| r.map(|n| n + len));
        }
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(h.value).map_err(|_| HttpError::BadContentLength)?;
                let n: usize = value.trim().parse().map_err(|_| HttpError::BadContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::BadContentLength);
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h.value.split(|&b| b == b',').any(|v| trim(v).eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("location") {
                let value = std::str::from_utf8(h.value).ok().map(str::trim);
                self.location =
                    value.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic())).map(str::to_string);
            }
        }
        self.status = status;
        let framing = if status == 204 || status == 304 {
            Framing::Length { remaining: 0 }
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else if let Some(n) = length {
            if n > MAX_BODY {
                return Err(HttpError::BodyTooLarge);
            }
            Framing::Length { remaining: n }
        } else {
            Framing::Close
        };
        self.state = State::Body(framing);
        Ok(Some(len))
    }

    /// Consumes body bytes from the front of `data`; the response when the body ended.
    fn feed_body(&mut self, framing: Framing, data: &mut &[u8]) -> Result<Option<HttpResponse>, HttpError> {
        match framing {
            Framing::Length { remaining } => {
                let take = remaining.min(data.len());
                self.push_body(&data[..take])?;
                *data = &data[take..];
                let remaining = remaining - take;
                if remaining == 0 {
                    return Ok(Some(self.finish()));
                }
                self.state = State::Body(Framing::Length { remaining });
                Ok(None)
            }
            Framing::Close => {
                self.push_body(data)?;
                *data = &[];
                Ok(None)
            }
            Framing::Chunked(chunk) => self.feed_chunked(chunk, data),
        }
    }

    fn feed_chunked(&mut self, mut chunk: Chunk, data: &mut &[u8]) -> Result<Option<HttpResponse>, HttpError> {
        while !data.is_empty() {
            chunk = match chunk {
                Chunk::Data { remaining } => {
                    let take = remaining.min(data.len());
                    self.push_body(&data[..take])?;
                    *data = &data[take..];
                    match remaining - take {
                        0 => Chunk::DataEnd,
                        remaining => Chunk::Data { remaining },
                    }
                }
                Chunk::Size | Chunk::DataEnd | Chunk::Trailer => {
                    let Some(line) = self.take_line(data)? else {
                        break;
                    };
                    match chunk {
                        Chunk::DataEnd if line.is_empty() => Chunk::Size,
                        Chunk::DataEnd => return Err(HttpError::BadChunk),
                        Chunk::Size => match parse_chunk_size(&line)? {
                            0 => Chunk::Trailer,
                            n if n > MAX_BODY - self.body.len() => return Err(HttpError::BodyTooLarge),
                            n => Chunk::Data { remaining: n },
                        },
                        _ if line.is_empty() => return Ok(Some(self.finish())),
                        _ => Chunk::Trailer,
                    }
                }
            };
        }
        self.state = State::Body(Framing::Chunked(chunk));
        Ok(None)
    }

    /// Takes one line (without CRLF or LF) from `data` into `self.line`; `None` until its newline arrives.
    fn take_line(&mut self, data: &mut &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
        match data.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if self.line.len() + i > MAX_CHUNK_LINE {
                    return Err(HttpError::BadChunk);
                }
                self.line.extend_from_slice(&data[..i]);
                *data = &data[i + 1..];
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Ok(Some(line))
            }
            None => {
                if self.line.len() + data.len() > MAX_CHUNK_LINE {
                    return Err(HttpError::BadChunk);
                }
                self.line.extend_from_slice(data);
                *data = &[];
                Ok(None)
            }
        }
    }

    fn push_body(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        if self.body.len() + bytes.len() > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
        self.body.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(&mut self) -> HttpResponse {
        self.state = State::Done;
        HttpResponse { status: self.status, location: self.location.take(), body: std::mem::take(&mut self.body) }
    }
}

/// A chunk-size line: hex digits, then optional `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let digits = trim(line.split(|&b| b == b';').next().unwrap_or(&[]));
    if digits.is_empty() || digits.len() > 8 {
        return Err(HttpError::BadChunk);
    }
    let text = std::str::from_utf8(digits).map_err(|_| HttpError::BadChunk)?;
    usize::from_str_radix(text, 16).map_err(|_| HttpError::BadChunk)
}

/// `bytes` without leading and trailing ASCII whitespace.
fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

// ---------------------------------------------------------------------------------------------------------
// Bodies.

/// The top-level dictionary of a tracker reply; a `failure reason` is `TrackerError::Failure`, whatever else
/// the body holds.
fn parse_reply(body: &[u8]) -> Result<Value<'_>, TrackerError> {
    let root = Value::parse(body)?;
    if !root.is_dict() {
        return Err(TrackerError::BadReply("not a dictionary"));
    }
    if let Some(reason) = root.get(b"failure reason") {
        let text = reason.as_bytes().map(codec::sanitize);
        return Err(TrackerError::Failure(text.unwrap_or_else(|| "(not a string)".into())));
    }
    Ok(root)
}

/// Decodes an announce body. A `failure reason` is `TrackerError::Failure`, whatever else the body holds.
pub fn decode_announce(body: &[u8]) -> Result<AnnounceReply, TrackerError> {
    let root = parse_reply(body)?;
    let secs = |key: &[u8]| root.get(key).and_then(|v| v.as_u32()).map(|s| Duration::from_secs(u64::from(s)));
    let mut reply = AnnounceReply {
        interval: secs(b"interval"),
        min_interval: secs(b"min interval"),
        tracker_id: root.get(b"tracker id").and_then(|v| v.as_bytes()).map(<[u8]>::to_vec),
        seeders: root.get(b"complete").and_then(|v| v.as_u32()),
        leechers: root.get(b"incomplete").and_then(|v| v.as_u32()),
        peers: Vec::new(),
        warning: root.get(b"warning message").and_then(|v| v.as_bytes()).map(codec::sanitize),
    };
    let peers = root.get(b"peers");
    let peers6 = root.get(b"peers6");
    if reply.interval.is_none() && peers.is_none() && peers6.is_none() {
        return Err(TrackerError::BadReply("neither peers nor interval"));
    }
    let cap = |reply: &AnnounceReply| MAX_PEERS_PER_REPLY - reply.peers.len();
    if let Some(peers) = peers {
        if let Some(compact) = peers.as_bytes() {
            let take = cap(&reply);
            reply.peers.extend(codec::compact_v4(compact).take(take));
        } else {
            let take = cap(&reply);
            reply.peers.extend(peers.items().filter_map(|p| dict_peer(&p)).take(take));
        }
    }
    if let Some(compact) = peers6.and_then(|v| v.as_bytes()) {
        let take = cap(&reply);
        reply.peers.extend(codec::compact_v6(compact).take(take));
    }
    Ok(reply)
}

/// One entry of a dictionary peer list: `ip` (an address literal) and `port`; names are skipped.
fn dict_peer(peer: &Value<'_>) -> Option<SocketAddr> {
    let ip = std::str::from_utf8(peer.get(b"ip")?.as_bytes()?).ok()?;
    let ip: IpAddr = ip.trim().parse().ok()?;
    let port = u16::try_from(peer.get(b"port")?.as_int()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Decodes a BEP 48 scrape body and picks our torrent out of `files` (keyed by the raw info-hash).
pub fn decode_scrape(body: &[u8], info_hash: &InfoHash) -> Result<ScrapeCounts, TrackerError> {
    let root = parse_reply(body)?;
    let files = root.get(b"files").ok_or(TrackerError::BadReply("no files dictionary"))?;
    let entry = files.get(&info_hash.0).ok_or(TrackerError::NotInScrape)?;
    let count = |key: &[u8]| entry.get(key).and_then(|v| v.as_u32()).unwrap_or(0);
    Ok(ScrapeCounts { seeders: count(b"complete"), leechers: count(b"incomplete"), completed: count(b"downloaded") })
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
