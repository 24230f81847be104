//! HTTP tracker replies: `tracker::http::ResponseParser` (status line, headers, length / chunked /
//! close-delimited bodies) and the announce and scrape body decoders.
//!
//! Input: one flag byte, then the bytes. Bit 0 set: the bytes are a body, decoded directly, and (as text) a
//! tracker URL. Otherwise they are a whole HTTP response, fed once in one piece and once cut into reads of a
//! size picked by bits 1–3, and the body of a complete response is decoded and its `Location` parsed as the
//! URL of a redirect.
//!
//! Invariants: never a panic; the outcome does not depend on how the bytes were cut; a body is at most
//! `MAX_BODY`; no 1xx status is handed out; `Location` is printable ASCII; an announce reply holds at most
//! `MAX_PEERS_PER_REPLY` peers and its tracker text is one bounded line; errors are one line; a URL that
//! parses makes a request whose head is exactly its four lines (no header injection), and so does its scrape
//! URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::metainfo::InfoHash;
use rill::tracker::codec::MAX_REMOTE_TEXT;
use rill::tracker::http::{
    decode_announce, decode_scrape, scrape_request, HttpError, HttpResponse, ResponseParser, MAX_BODY,
};
use rill::tracker::message::MAX_PEERS_PER_REPLY;
use rill::tracker::TrackerUrl;
use rill::http::{HeadReader, StreamHead};

const OURS: InfoHash = InfoHash([b'x'; 20]);

fn one_line_text(text: &str) {
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.chars().count() <= MAX_REMOTE_TEXT + 1);
}

fn decode_bodies(body: &[u8]) {
    match decode_announce(body) {
        Ok(reply) => {
            assert!(reply.peers.len() <= MAX_PEERS_PER_REPLY);
            if let Some(w) = &reply.warning {
                one_line_text(w);
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
        }
    }
    if let Err(e) = decode_scrape(body, &OURS) {
        let text = e.to_string();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
    }
}

/// A URL from a `.torrent` or a `Location` header: what parses is safe to put in a request head.
fn check_url(text: &str) {
    let Ok(url) = TrackerUrl::parse(text) else { return };
    for url in std::iter::once(url.clone()).chain(url.scrape_url()) {
        assert!(url.path.starts_with('/'), "{:?}", url.path);
        assert!(url.path.bytes().all(|b| b.is_ascii_graphic()), "{:?}", url.path);
        let request = scrape_request(&url, &OURS);
        let lines: Vec<&[u8]> = request.split(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 6, "{:?}", String::from_utf8_lossy(&request));
        for line in &lines[..5] {
            assert_eq!(line.last(), Some(&b'\r'));
            let line = &line[..line.len() - 1];
            assert!(!line.contains(&b'\r') && line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()));
        }
        assert_eq!(lines[0].iter().filter(|&&b| b == b' ').count(), 2, "request line");
        assert_eq!(lines[1].iter().filter(|&&b| b == b' ').count(), 1, "Host line");
    }
}

/// Feeds `data` in reads of `chunk` bytes; the first response or error, else what the end of stream gives.
fn run(data: &[u8], chunk: usize) -> Result<HttpResponse, HttpError> {
    let mut parser = ResponseParser::new();
    for piece in data.chunks(chunk) {
        if let Some(response) = parser.feed(piece)? {
            // Anything after a complete response is ignored.
            assert_eq!(parser.feed(b"HTTP/1.1 200 OK\r\n\r\n"), Ok(None));
            return Ok(response);
        }
    }
    assert_eq!(parser.received_any(), !data.is_empty());
    parser.on_eof()
}

/// A web seed's streamed head (`http::HeadReader`): the head and where the body starts, read in one piece and
/// in `chunk`-byte reads, as `(head, body start offset)`.
fn stream_head(bytes: &[u8], chunk: usize) -> Result<Option<(StreamHead, usize)>, HttpError> {
    let mut reader = HeadReader::default();
    let mut at = 0;
    for piece in bytes.chunks(chunk) {
        if let Some((head, used)) = reader.feed(piece)? {
            return Ok(Some((head, at + used)));
        }
        at += piece.len();
    }
    Ok(None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else { return };
    if flags & 1 != 0 {
        decode_bodies(bytes);
        if let Ok(text) = std::str::from_utf8(bytes) {
            check_url(text);
        }
        return;
    }
    let chunk = [1, 2, 3, 7, 16, 64, 200, 1500][usize::from(flags >> 1 & 7)];
    let whole = run(bytes, bytes.len().max(1));
    let cut = run(bytes, chunk);
    assert_eq!(whole, cut, "the outcome depends on how the bytes were cut ({chunk}-byte reads)");
    let head_whole = stream_head(bytes, bytes.len().max(1));
    let head_cut = stream_head(bytes, chunk);
    // A head too large may be noticed at different points, but it is an error either way.
    match (&head_whole, &head_cut) {
        (Err(HttpError::HeadTooLarge), _) | (_, Err(HttpError::HeadTooLarge)) => {}
        _ => assert_eq!(head_whole, head_cut, "the streamed head depends on the cut ({chunk}-byte reads)"),
    }
    if let Ok(Some((head, start))) = &head_whole {
        assert!(*start <= bytes.len());
        assert!(!(100..200).contains(&head.status));
        if let Some((a, b, _)) = head.content_range {
            assert!(a <= b);
        }
        if let Some(location) = &head.location {
            assert!(!location.is_empty() && location.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
    match whole {
        Ok(response) => {
            assert!(response.body.len() <= MAX_BODY);
            assert!(!(100..200).contains(&response.status), "interim status {}", response.status);
            if let Some(location) = &response.location {
                assert!(!location.is_empty() && location.bytes().all(|b| b.is_ascii_graphic()));
                check_url(location);
            }
            decode_bodies(&response.body);
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
});
