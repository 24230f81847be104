//! HTTP tracker codec tests: request bytes, response framing, body decoding.

use super::*;
use crate::tracker::message::Event;
use crate::tracker::Transfer;

fn params(event: Event) -> AnnounceParams {
    AnnounceParams {
        info_hash: InfoHash([0x12; 20]),
        peer_id: *b"-RL0001-\x00\xffabcdefghij",
        port: 6881,
        transfer: Transfer { uploaded: 1, downloaded: 22, left: 333 },
        event,
        numwant: 50,
        key: 0x0000_beef,
        tracker_id: None,
    }
}

fn feed_all(parser: &mut ResponseParser, data: &[u8]) -> Result<Option<HttpResponse>, HttpError> {
    parser.feed(data)
}

/// Feeds one byte at a time: the framing must not depend on how reads split the stream.
fn feed_bytewise(data: &[u8]) -> Result<Option<HttpResponse>, HttpError> {
    let mut parser = ResponseParser::new();
    let mut done = None;
    for b in data {
        if let Some(r) = parser.feed(std::slice::from_ref(b))? {
            assert!(done.is_none(), "a response is handed out once");
            done = Some(r);
        }
    }
    Ok(done)
}

// ---- requests ------------------------------------------------------------------------------------------

#[test]
fn announce_request_bytes_are_exact() {
    let url = TrackerUrl::parse("http://tracker.example:8080/announce").unwrap();
    let req = announce_request(&url, &params(Event::Started));
    let expected = "GET /announce?info_hash=%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12\
        &peer_id=-RL0001-%00%FFabcdefghij&port=6881&uploaded=1&downloaded=22&left=333&compact=1\
        &numwant=50&key=0000beef&event=started HTTP/1.1\r\n\
        Host: tracker.example:8080\r\n\
        User-Agent: rill/0.1.0\r\n\
        Connection: close\r\n\r\n";
    assert_eq!(String::from_utf8(req).unwrap(), expected);
}

#[test]
fn announce_request_appends_to_passkey_query_echoes_trackerid_and_omits_event_none() {
    let url = TrackerUrl::parse("http://t.example/a/announce?passkey=s3cr3t").unwrap();
    let mut p = params(Event::None);
    p.tracker_id = Some(b"id 1".to_vec());
    let req = String::from_utf8(announce_request(&url, &p)).unwrap();
    let line = req.lines().next().unwrap();
    assert!(line.starts_with("GET /a/announce?passkey=s3cr3t&info_hash=%12"), "{line}");
    assert!(line.ends_with("&key=0000beef&trackerid=id%201 HTTP/1.1"), "{line}");
    assert!(!line.contains("event="));
    assert!(req.contains("\r\nHost: t.example\r\n"));
    assert!(!req.to_ascii_lowercase().contains("accept-encoding"));
}

#[test]
fn scrape_request_targets_scrape_url() {
    let url = TrackerUrl::parse("http://[::1]:7000/announce").unwrap().scrape_url().unwrap();
    let req = String::from_utf8(scrape_request(&url, &InfoHash([b'a'; 20]))).unwrap();
    assert!(req.starts_with("GET /scrape?info_hash=aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: [::1]:7000\r\n"));
}

// ---- framing ------------------------------------------------------------------------------------------

#[test]
fn content_length_body_completes_without_close_even_bytewise() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello";
    let r = feed_bytewise(raw).unwrap().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    // Bytes after the body are ignored.
    let mut p = ResponseParser::new();
    let r = feed_all(&mut p, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA").unwrap().unwrap();
    assert_eq!(r.body, b"ok");
    assert_eq!(p.feed(b"more").unwrap(), None);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
        4;ext=1\r\nd8:i\r\n\
        A\r\nntervali1e\r\n\
        1\r\ne\r\n\
        0\r\nTrailer: x\r\n\r\n";
    let r = feed_bytewise(raw).unwrap().unwrap();
    assert_eq!(r.body, b"d8:intervali1ee");
    let mut p = ResponseParser::new();
    assert_eq!(feed_all(&mut p, raw).unwrap().unwrap().body, b"d8:intervali1ee");
}

#[test]
fn chunked_accepts_bare_lf_and_rejects_garbage() {
    let r = feed_bytewise(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n").unwrap().unwrap();
    assert_eq!(r.body, b"ok");
    let bad = |raw: &[u8]| ResponseParser::new().feed(raw).unwrap_err();
    assert_eq!(bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), HttpError::BadChunk);
    assert_eq!(bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n"), HttpError::BadChunk);
    assert_eq!(bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n"), HttpError::BadChunk);
    let endless_line = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice(), &[b'1'; 2000]].concat();
    assert_eq!(bad(&endless_line), HttpError::BadChunk);
}

#[test]
fn close_delimited_http10_body_ends_at_eof() {
    let mut p = ResponseParser::new();
    assert_eq!(p.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nd5:").unwrap(), None);
    assert_eq!(p.feed(b"peers0:e").unwrap(), None);
    let r = p.on_eof().unwrap();
    assert_eq!(r.body, b"d5:peers0:e");
}

#[test]
fn truncated_and_empty_responses_are_errors() {
    let mut p = ResponseParser::new();
    p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    assert_eq!(p.on_eof(), Err(HttpError::Truncated));
    let mut p = ResponseParser::new();
    p.feed(b"HTTP/1.1 200 OK\r\nContent-").unwrap();
    assert_eq!(p.on_eof(), Err(HttpError::Truncated));
    let mut p = ResponseParser::new();
    p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab").unwrap();
    assert_eq!(p.on_eof(), Err(HttpError::Truncated));
    assert_eq!(ResponseParser::new().on_eof(), Err(HttpError::Empty));
}

#[test]
fn size_caps_bound_head_and_body() {
    let big = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
    assert_eq!(ResponseParser::new().feed(big.as_bytes()), Err(HttpError::BodyTooLarge));
    let big = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", MAX_BODY + 1);
    assert_eq!(ResponseParser::new().feed(big.as_bytes()), Err(HttpError::BodyTooLarge));
    // An endless close-delimited body stops at the cap, whatever the read size.
    let mut p = ResponseParser::new();
    p.feed(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut fed = 0;
    let err = loop {
        match p.feed(&chunk) {
            Ok(None) => fed += chunk.len(),
            Err(e) => break e,
            Ok(Some(_)) => panic!("no end"),
        }
        assert!(fed <= MAX_BODY);
    };
    assert_eq!(err, HttpError::BodyTooLarge);
    // A head that never ends.
    let mut p = ResponseParser::new();
    p.feed(b"HTTP/1.1 200 OK\r\n").unwrap();
    let header = b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let err = (0..1000).find_map(|_| p.feed(header).err()).unwrap();
    assert!(matches!(err, HttpError::HeadTooLarge | HttpError::TooManyHeaders), "{err:?}");
}

#[test]
fn malformed_heads_and_lengths_are_errors() {
    let bad = |raw: &[u8]| ResponseParser::new().feed(raw).unwrap_err();
    assert_eq!(bad(b"SSH-2.0-OpenSSH\r\n\r\n"), HttpError::MalformedHead);
    assert_eq!(bad(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), HttpError::BadContentLength);
    assert_eq!(bad(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), HttpError::BadContentLength);
    let many: String = (0..60).map(|i| format!("H{i}: v\r\n")).collect();
    assert_eq!(bad(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()), HttpError::TooManyHeaders);
}

#[test]
fn interim_100_is_skipped_and_redirect_location_kept() {
    let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\nLocation: http://b.example/x?y=1\r\nContent-Length: 0\r\n\r\n";
    let r = feed_bytewise(raw).unwrap().unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.location.as_deref(), Some("http://b.example/x?y=1"));
    let r = ResponseParser::new().feed(raw).unwrap().unwrap();
    assert_eq!(r.status, 302);
    let r = ResponseParser::new().feed(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));
}

// ---- bodies -------------------------------------------------------------------------------------------

#[test]
fn announce_compact_with_every_field() {
    let mut body = b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali900e10:tracker id3:abc\
        15:warning message9:slow down5:peers12:"
        .to_vec();
    body.extend_from_slice(&[127, 0, 0, 1, 0x1a, 0xe1, 10, 1, 2, 3, 0, 80]);
    body.extend_from_slice(b"6:peers618:");
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1a, 0xe2]);
    body.push(b'e');
    let r = decode_announce(&body).unwrap();
    assert_eq!(r.interval, Some(Duration::from_secs(1800)));
    assert_eq!(r.min_interval, Some(Duration::from_secs(900)));
    assert_eq!(r.tracker_id.as_deref(), Some(&b"abc"[..]));
    assert_eq!((r.seeders, r.leechers), (Some(5), Some(3)));
    assert_eq!(r.warning.as_deref(), Some("slow down"));
    let expected: Vec<SocketAddr> =
        ["127.0.0.1:6881", "10.1.2.3:80", "[::1]:6882"].iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(r.peers, expected);
}

#[test]
fn announce_dictionary_peer_list_skips_names_and_bad_ports() {
    let body = b"d8:intervali60e5:peersl\
        d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee\
        d2:ip3:::14:porti7eed2:ip11:example.org4:porti1ee\
        d2:ip8:10.0.0.14:porti70000eed4:porti5eeee";
    let r = decode_announce(body).unwrap();
    let expected: Vec<SocketAddr> = ["127.0.0.1:6881", "[::1]:7"].iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(r.peers, expected);
}

#[test]
fn announce_failure_reason_wins_and_is_sanitised() {
    let body = b"d14:failure reason22:unregistered\r\ntorrent!8:intervali60ee";
    assert_eq!(decode_announce(body), Err(TrackerError::Failure("unregistered  torrent!".into())));
    assert_eq!(decode_announce(b"d14:failure reasoni1ee"), Err(TrackerError::Failure("(not a string)".into())));
}

#[test]
fn announce_rejects_non_bencode_non_dict_and_empty_dict() {
    assert!(matches!(decode_announce(b"<html>"), Err(TrackerError::Bencode(_))));
    assert_eq!(decode_announce(b"le"), Err(TrackerError::BadReply("not a dictionary")));
    assert_eq!(decode_announce(b"de"), Err(TrackerError::BadReply("neither peers nor interval")));
    // Trailing bytes after the dictionary (a newline from a PHP tracker) are tolerated.
    assert!(decode_announce(b"d8:intervali60ee\n").is_ok());
}

#[test]
fn announce_huge_peer_list_is_capped() {
    let n = MAX_PEERS_PER_REPLY + 100;
    let mut body = format!("d8:intervali60e5:peers{}:", n * 6).into_bytes();
    for i in 0..n {
        body.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
    }
    body.push(b'e');
    assert_eq!(decode_announce(&body).unwrap().peers.len(), MAX_PEERS_PER_REPLY);
}

#[test]
fn scrape_body_picks_our_info_hash() {
    let ours = InfoHash([b'x'; 20]);
    let body = b"d5:filesd20:xxxxxxxxxxxxxxxxxxxxd8:completei4e10:downloadedi9e10:incompletei2ee\
        20:yyyyyyyyyyyyyyyyyyyyd8:completei1eeee";
    assert_eq!(decode_scrape(body, &ours), Ok(ScrapeCounts { seeders: 4, leechers: 2, completed: 9 }));
    assert_eq!(decode_scrape(body, &InfoHash([b'z'; 20])), Err(TrackerError::NotInScrape));
    assert_eq!(decode_scrape(b"de", &ours), Err(TrackerError::BadReply("no files dictionary")));
    assert_eq!(decode_scrape(b"d14:failure reason4:nopee", &ours), Err(TrackerError::Failure("nope".into())));
}
