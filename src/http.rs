//! HTTP/1.1 responses, read incrementally with bounded memory: shared by HTTP trackers (and web seeds next).
//!
//! Owns: the status line and headers (through httparse), Content-Length, chunked and close-delimited
//! bodies, and the caps on head and body size.
//! Must not: touch sockets, follow redirects (the caller decides), or log above debug.

use std::fmt;

/// Largest status line plus headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted; a compact reply with 200 peers is about 1.3 KB.
pub const MAX_BODY: usize = 512 * 1024;
/// Headers parsed per response; more is an error.
const MAX_HEADERS: usize = 48;
/// Longest chunk-size line (size, extensions) or trailer line.
const MAX_CHUNK_LINE: usize = 1024;

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
// A head whose body the caller streams (web seeds: a piece's bytes are not buffered whole).

/// The status line and the headers a streamed body needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHead {
    pub status: u16,
    pub content_length: Option<u64>,
    /// `Content-Range: bytes FIRST-LAST/TOTAL` (TOTAL `None` for `*`).
    pub content_range: Option<(u64, u64, Option<u64>)>,
    pub location: Option<String>,
    pub chunked: bool,
}

/// Collects a response head (at most [`MAX_HEAD`] bytes) from the bytes as they arrive.
#[derive(Debug, Default)]
pub struct HeadReader {
    head: Vec<u8>,
}

impl HeadReader {
    /// Feeds bytes; once the head is complete, returns it and how many bytes of `data` it used (the rest
    /// is the body's start). Interim (1xx) responses are skipped.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<(StreamHead, usize)>, HttpError> {
        let before = self.head.len();
        let take = data.len().min(MAX_HEAD - before);
        self.head.extend_from_slice(&data[..take]);
        let mut skipped = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            let len = match response.parse(&self.head[skipped..]) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if take < data.len() || self.head.len() == MAX_HEAD => {
                    return Err(HttpError::HeadTooLarge)
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
                Err(_) => return Err(HttpError::MalformedHead),
            };
            let status = response.code.ok_or(HttpError::MalformedHead)?;
            if (100..200).contains(&status) {
                skipped += len;
                continue;
            }
            let mut head = StreamHead { status, ..StreamHead::default() };
            for h in response.headers.iter() {
                let value = std::str::from_utf8(h.value).map(str::trim);
                if h.name.eq_ignore_ascii_case("content-length") {
                    let n = value.ok().and_then(|v| v.parse().ok()).ok_or(HttpError::BadContentLength)?;
                    if head.content_length.is_some_and(|l| l != n) {
                        return Err(HttpError::BadContentLength);
                    }
                    head.content_length = Some(n);
                } else if h.name.eq_ignore_ascii_case("content-range") {
                    head.content_range = value.ok().and_then(parse_content_range);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    head.chunked = h.value.split(|&b| b == b',').any(|v| trim(v).eq_ignore_ascii_case(b"chunked"));
                } else if h.name.eq_ignore_ascii_case("location") {
                    head.location = value
                        .ok()
                        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
                        .map(str::to_string);
                }
            }
            let end = skipped + len;
            self.head.clear();
            return Ok(Some((head, end.saturating_sub(before).min(data.len()))));
        }
    }
}

/// `bytes 0-99/1234` → (0, 99, Some(1234)); `bytes 0-99/*` → (0, 99, None).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (first <= last).then_some((first, last, total))
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn a_streamed_head_gives_its_range_and_where_the_body_starts() {
        let mut r = HeadReader::default();
        let wire: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\n\
                            Content-Range: bytes 10-14/100\r\n\r\nhello";
        assert_eq!(r.feed(&wire[..20]).unwrap(), None);
        let (head, used) = r.feed(&wire[20..]).unwrap().expect("complete");
        assert_eq!(head.status, 206);
        assert_eq!(head.content_length, Some(5));
        assert_eq!(head.content_range, Some((10, 14, Some(100))));
        assert_eq!(&wire[20 + used..], b"hello");
        let mut r = HeadReader::default();
        let redirect = b"HTTP/1.1 302 Found\r\nLocation: http://x/y\r\nContent-Range: bytes 9-1/*\r\n\r\n";
        let (head, _) = r.feed(redirect).unwrap().unwrap();
        assert_eq!((head.status, head.location.as_deref(), head.content_range), (302, Some("http://x/y"), None));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(HeadReader::default().feed(&[b'x'; MAX_HEAD + 1]), Err(HttpError::MalformedHead));
        // A head that never ends is cut at MAX_HEAD, however it is fed.
        let mut slow = HeadReader::default();
        assert_eq!(slow.feed(b"HTTP/1.1 200 OK\r\nX-Long: ").unwrap(), None);
        let mut result = Ok(None);
        for _ in 0..MAX_HEAD / 100 + 1 {
            result = slow.feed(&[b'a'; 100]);
            if result != Ok(None) {
                break;
            }
        }
        assert_eq!(result, Err(HttpError::HeadTooLarge));
        let bad_len = HeadReader::default().feed(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n");
        assert_eq!(bad_len, Err(HttpError::BadContentLength));
    }
}
