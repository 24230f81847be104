//! HTTP tracker protocol (BEP 3, BEP 23, BEP 48): request bytes out, response bytes in.
//!
//! Owns: the GET request for announce and scrape, and the decoding of announce and scrape bodies. The
//! response itself is read by `crate::http::ResponseParser`.
//! Must not: touch sockets or DNS, follow redirects itself (the tracker machine decides), or log above debug.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use crate::http::{HttpError, HttpResponse, ResponseParser, MAX_BODY, MAX_HEAD};

use super::codec::{self, percent_encode, TrackerUrl, Value};
use super::error::TrackerError;
use super::message::{AnnounceParams, AnnounceReply, ScrapeCounts, MAX_PEERS_PER_REPLY};
use crate::metainfo::InfoHash;

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
