//! HTTP/1.1 requests to the RPC server, framed with bounded memory, and the responses to them.
//!
//! Owns: request framing (request line and headers through httparse, a Content-Length body; no chunked
//! request bodies, which no Transmission client sends), the caps on head and body size, `Expect:
//! 100-continue` (libcurl, under `transmission-remote`, sends it before a large `torrent-add`), and the
//! bytes of a response.
//! Must not: touch sockets, decide what a request means (that is `rpc`), or log above debug.

use std::fmt;

/// Largest request line plus headers accepted.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Largest request body accepted: a `torrent-add` carries a base64 .torrent (4/3 of its size), and a
/// .torrent of a 100 GiB torrent with 1 MiB pieces is about 2 MiB.
pub const MAX_REQUEST_BODY: usize = 8 << 20;
/// Headers parsed per request; more is an error.
const MAX_REQUEST_HEADERS: usize = 40;
/// Longest header value we keep (Host, Authorization, the session id).
const MAX_KEPT_VALUE: usize = 1024;

/// Why a request could not be framed; each is answered with its status and the connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    HeadTooLarge,
    Malformed,
    TooManyHeaders,
    BadContentLength,
    BodyTooLarge,
    /// `Transfer-Encoding` on a request: not supported.
    Chunked,
}

impl RequestError {
    /// The HTTP status that answers it.
    pub fn status(self) -> u16 {
        match self {
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            RequestError::Malformed | RequestError::BadContentLength => 400,
            RequestError::BodyTooLarge => 413,
            RequestError::Chunked => 411,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestError::HeadTooLarge => "request headers too large",
            RequestError::Malformed => "malformed request",
            RequestError::TooManyHeaders => "too many request headers",
            RequestError::BadContentLength => "bad content-length",
            RequestError::BodyTooLarge => "request body too large",
            RequestError::Chunked => "chunked request bodies are not supported",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Options,
    Other,
}

/// One complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without the query string.
    pub path: String,
    pub host: Option<String>,
    pub session_id: Option<String>,
    pub authorization: Option<String>,
    /// The client asked to keep the connection (HTTP/1.1 without `Connection: close`).
    pub keep_alive: bool,
    pub body: Vec<u8>,
}

/// How far the bytes at the front of a connection's buffer go.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// More bytes are needed; `expects_continue` once a complete head asked for `100 Continue`.
    Incomplete { expects_continue: bool },
    /// A request, and how many bytes of the buffer it used.
    Complete(Request, usize),
}

/// Frames one request from the front of `buf`.
pub fn parse_request(buf: &[u8]) -> Result<Framing, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_REQUEST_HEAD {
                Err(RequestError::HeadTooLarge)
            } else {
                Ok(Framing::Incomplete { expects_continue: false })
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(_) => return Err(RequestError::Malformed),
    };
    if head_len > MAX_REQUEST_HEAD {
        return Err(RequestError::HeadTooLarge);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let path = req.path.unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/").to_string();
    let mut keep_alive = req.version == Some(1);
    let mut content_length: Option<usize> = None;
    let (mut host, mut session_id, mut authorization) = (None, None, None);
    let mut expects_continue = false;
    for h in req.headers.iter() {
        let value = || std::str::from_utf8(h.value).ok().map(str::trim).filter(|v| v.len() <= MAX_KEPT_VALUE);
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = value().and_then(|v| v.parse::<usize>().ok()).ok_or(RequestError::BadContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(RequestError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::Chunked);
        } else if name.eq_ignore_ascii_case("host") {
            host = value().map(str::to_string);
        } else if name.eq_ignore_ascii_case("x-transmission-session-id") {
            session_id = value().map(str::to_string);
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = value().map(str::to_string);
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value().unwrap_or("");
            if v.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if v.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expects_continue = value().is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > MAX_REQUEST_BODY {
        return Err(RequestError::BodyTooLarge);
    }
    let Some(end) = head_len.checked_add(body_len).filter(|&end| end <= buf.len()) else {
        return Ok(Framing::Incomplete { expects_continue });
    };
    let request =
        Request { method, path, host, session_id, authorization, keep_alive, body: buf[head_len..end].to_vec() };
    Ok(Framing::Complete(request, end))
}

/// The reason phrase of the statuses the server uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Response { status, content_type, headers: Vec::new(), body: body.into() }
    }

    /// A short text/html page for an error status.
    pub fn error(status: u16, detail: &str) -> Self {
        let body = format!("<h1>{status}: {}</h1><p>{}</p>", reason(status), escape_html(detail));
        Response::new(status, "text/html; charset=UTF-8", body)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The response's bytes, appended to `out`; `head_only` for a HEAD request.
    pub fn write_to(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        use std::io::Write as _;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nServer: rill/{}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            env!("CARGO_PKG_VERSION"),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Escapes text for an HTML page.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf) {
            Ok(Framing::Complete(r, n)) => (r, n),
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn a_post_with_a_body_and_the_headers_the_server_needs() {
        let buf = b"POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1:9091\r\nX-Transmission-Session-Id: abc\r\n\
Authorization: Basic dTpw\r\nContent-Length: 4\r\n\r\n{}{}extra";
        let (r, n) = complete(buf);
        assert_eq!(n, buf.len() - 5);
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path, "/transmission/rpc");
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:9091"));
        assert_eq!(r.session_id.as_deref(), Some("abc"));
        assert_eq!(r.authorization.as_deref(), Some("Basic dTpw"));
        assert!(r.keep_alive);
        assert_eq!(r.body, b"{}{}");
    }

    #[test]
    fn a_head_in_pieces_is_incomplete_until_its_body_is_there() {
        let buf = b"POST /x?y=1 HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nab";
        for cut in 0..buf.len() {
            let f = parse_request(&buf[..cut]).unwrap();
            assert!(matches!(f, Framing::Incomplete { .. }), "{cut}");
        }
        assert_eq!(parse_request(buf).unwrap(), Framing::Incomplete { expects_continue: true });
        let mut full = buf.to_vec();
        full.push(b'c');
        let (r, _) = complete(&full);
        assert_eq!(r.path, "/x");
        assert!(!r.keep_alive, "HTTP/1.0 closes by default");
    }

    #[test]
    fn oversized_malformed_and_chunked_requests_are_refused_with_their_status() {
        let big = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_REQUEST_BODY + 1);
        assert_eq!(parse_request(big.as_bytes()), Err(RequestError::BodyTooLarge));
        assert_eq!(RequestError::BodyTooLarge.status(), 413);
        let long = vec![b'a'; MAX_REQUEST_HEAD + 10];
        assert!(parse_request(&long).is_err());
        let mut long_header = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long_header.extend(std::iter::repeat(b'a').take(MAX_REQUEST_HEAD + 1));
        assert_eq!(parse_request(&long_header), Err(RequestError::HeadTooLarge));
        assert_eq!(parse_request(b"\x00\x01 garbage\r\n\r\n"), Err(RequestError::Malformed));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_request(chunked), Err(RequestError::Chunked));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse_request(two), Err(RequestError::BadContentLength));
        let neg = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(parse_request(neg), Err(RequestError::BadContentLength));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend(format!("X-{i}: 1\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(parse_request(&many), Err(RequestError::TooManyHeaders));
    }

    #[test]
    fn a_response_has_its_length_and_connection_headers() {
        let mut out = Vec::new();
        Response::new(409, "text/plain", "x")
            .with_header("X-Transmission-Session-Id", "s")
            .write_to(&mut out, true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 409 Conflict\r\n"), "{text}");
        assert!(text.contains("Content-Length: 1\r\n"));
        assert!(text.contains("X-Transmission-Session-Id: s\r\n"));
        assert!(text.ends_with("keep-alive\r\n\r\nx"));
        assert_eq!(escape_html("<a&\">"), "&lt;a&amp;&quot;&gt;");
    }
}
