//! Web seeds (BEP 19, `url-list`): HTTP servers that hold the torrent's files, fetched with `Range`
//! requests beside the peers.
//!
//! Owns: each web seed of a torrent — its URL, state (resolving, idle, fetching, waiting after a failure,
//! abandoned), failures and back-off — the span it fetches (one piece's free blocks, reserved in the swarm
//! exactly as a peer's requests are, so a piece may be assembled from a web seed and peers), the per-file
//! requests that span needs (one connection each, `Connection: close`), and the streaming of each response
//! body into whole blocks through one block buffer per seed.
//! Must not: touch sockets, DNS or files. Requests go out as `TrackerIo` (the driver's HTTP and DNS
//! helpers, ids in the [`WEB_IO`] namespace); blocks go to storage through `Torrent::store_block`, which
//! verifies a piece like any other. HTTPS seeds are listed and skipped (rill has no TLS stack).
//!
//! Bounds: at most [`MAX_SEEDS`] seeds per torrent, one connection each at a time, 16 KiB of block buffer
//! and the response head (≤ 16 KiB) while fetching; a seed that fails [`MAX_FAILURES`] times in a row, sends
//! data that fails a piece's hash, or loops through redirects is abandoned with one line saying why.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::bitfield::Bitfield;
use crate::geometry::{BlockRef, BLOCK_LEN};
use crate::http::{HeadReader, StreamHead};
use crate::metainfo::Metainfo;
use crate::storage::StorageError;
use crate::swarm::PeerNo;
use crate::time::{secs, Timestamp};
use crate::torrent::TorrentIo as Torrent;
use crate::tracker::{IoId, TrackerIo};

/// `IoId`s of web seed requests carry this bit; below it: torrent (bits 32..), seed (24..32), serial.
pub const WEB_IO: u64 = 1 << 62;
pub const MAX_SEEDS: usize = 4;
pub const MAX_FAILURES: u32 = 5;
const RETRY_FIRST: Duration = secs(15);
const RETRY_MAX: Duration = secs(600);
/// A fetch that receives nothing for this long is given up (the seed counts a failure).
const STALL: Duration = secs(30);
const MAX_REDIRECTS: u32 = 5;
/// Most bytes one request span covers: whole pieces in a row up to this (one piece at least), so a
/// torrent of small pieces is not fetched 16 KiB per request.
const SPAN_MAX: u64 = 1024 * 1024;

/// One `Range` request: `len` bytes at `start` of the file at URL path `path` (zeros for a BEP 47 padding
/// file, which is never requested).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    file: usize,
    start: u64,
    len: u64,
}

/// A file of the torrent as a URL path below the seed's base: `name` (single file) or `name/dir/file`.
#[derive(Clone, Debug)]
struct WebFile {
    path: String,
    offset: u64,
    length: u64,
    padding: bool,
}

/// `http://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HttpUrl {
    host: String,
    port: u16,
    path: String,
}

fn parse_http_url(url: &str) -> Option<HttpUrl> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) if p != 0 => (h, p),
            _ if h.starts_with('[') && authority.ends_with(']') => (authority, 80),
            _ => return None,
        },
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let path = path.split('#').next().unwrap_or("/");
    (!host.is_empty() && path.bytes().all(|b| b.is_ascii_graphic())).then(|| HttpUrl {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

/// Percent-encodes one path component (RFC 3986 unreserved characters stay).
fn escape_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[derive(Debug)]
enum SeedState {
    /// Its host name is being resolved (`IoId`).
    Resolving(IoId),
    Idle,
    Fetching(Box<Fetch>),
    /// After a failure: not before `until`.
    Waiting {
        until: Timestamp,
    },
    /// Given up for this run; the reason was said once.
    Abandoned,
}

/// One span of contiguous blocks (of one piece or several in a row), fetched segment by segment.
#[derive(Debug)]
struct Fetch {
    /// The blocks reserved, in byte order, contiguous.
    blocks: Vec<BlockRef>,
    /// Blocks delivered so far.
    done: usize,
    segments: VecDeque<Segment>,
    /// The request in flight (for the current segment), and what arrives for it.
    io: Option<IoId>,
    target: HttpUrl,
    addr: SocketAddr,
    head: Option<HeadReader>,
    /// Body bytes still expected for the current segment.
    expect: u64,
    block: Vec<u8>,
    redirects: u32,
    last_progress: Timestamp,
}

#[derive(Debug)]
struct WebSeed {
    url: String,
    target: Option<HttpUrl>,
    addr: Option<SocketAddr>,
    no: PeerNo,
    state: SeedState,
    failures: u32,
    downloaded: u64,
}

/// What the engine must do for the web seeds of one torrent.
#[derive(Debug, PartialEq, Eq)]
pub enum WebSeedNews {
    /// Said once per seed: it is not used from now on.
    GaveUp { url: String, why: String },
}

/// The web seeds of one torrent.
#[derive(Debug, Default)]
pub struct WebSeeds {
    seeds: Vec<WebSeed>,
    files: Vec<WebFile>,
    io: VecDeque<TrackerIo>,
    news: VecDeque<WebSeedNews>,
    serial: u32,
    torrent: u64,
}

impl WebSeeds {
    /// The seeds of `urls` for torrent number `torrent` (its id), with peer numbers from `next_no`. HTTPS
    /// and malformed URLs are noted and skipped.
    pub fn new(torrent: usize, urls: &[String], mut next_no: impl FnMut() -> PeerNo) -> WebSeeds {
        let mut w = WebSeeds { torrent: torrent as u64, ..WebSeeds::default() };
        for url in urls.iter().take(MAX_SEEDS) {
            if url.starts_with("https://") {
                log::info!("web seed {url}: skipped: rill has no TLS (HTTPS) support");
                continue;
            }
            let Some(target) = parse_http_url(url) else {
                log::info!("web seed {url}: skipped: not an http:// URL rill can use");
                continue;
            };
            let addr = target.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, target.port));
            let state = if addr.is_some() { SeedState::Idle } else { SeedState::Waiting { until: Timestamp::ZERO } };
            w.seeds.push(WebSeed {
                url: url.clone(),
                target: Some(target),
                addr,
                no: next_no(),
                state,
                failures: 0,
                downloaded: 0,
            });
        }
        w
    }

    /// The torrent's files, once its metainfo is known (the URL of a file is the seed's base URL, then
    /// the name, then the path, percent-encoded).
    pub fn set_layout(&mut self, meta: &Metainfo) {
        let single = meta.files.len() == 1 && meta.files[0].path.components().count() == 1;
        self.files = meta
            .files
            .iter()
            .map(|f| {
                let mut path = String::new();
                for (i, c) in f.path.components().enumerate() {
                    if i > 0 {
                        path.push('/');
                    }
                    escape_component(&c.as_os_str().to_string_lossy(), &mut path);
                }
                WebFile { path, offset: f.offset, length: f.length, padding: f.padding || f.symlink_target.is_some() }
            })
            .collect();
        if single {
            self.files.truncate(1);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// Whether `no` is one of these seeds' peer numbers.
    pub fn owns(&self, no: PeerNo) -> bool {
        self.seeds.iter().any(|s| s.no == no)
    }

    pub fn poll_io(&mut self) -> Option<TrackerIo> {
        self.io.pop_front()
    }

    pub fn poll_news(&mut self) -> Option<WebSeedNews> {
        self.news.pop_front()
    }

    /// Payload bytes every seed delivered.
    pub fn downloaded(&self) -> u64 {
        self.seeds.iter().map(|s| s.downloaded).sum()
    }

    /// Seeds fetching right now.
    pub fn active(&self) -> usize {
        self.seeds.iter().filter(|s| matches!(s.state, SeedState::Fetching(_))).count()
    }

    fn io_id(&mut self, seed: usize) -> IoId {
        self.serial = (self.serial + 1) & 0xFF_FFFF;
        IoId(WEB_IO | (self.torrent << 32) | ((seed as u64) << 24) | u64::from(self.serial))
    }

    fn seed_of(&self, id: IoId) -> Option<usize> {
        let seed = ((id.0 >> 24) & 0xFF) as usize;
        let matches = |s: &WebSeed| match &s.state {
            SeedState::Resolving(io) => *io == id,
            SeedState::Fetching(f) => f.io == Some(id),
            _ => false,
        };
        self.seeds.get(seed).filter(|s| matches(s)).map(|_| seed)
    }

    /// Starts fetches for idle seeds (and resolutions for unresolved ones) while the torrent wants data.
    pub fn start_fetches(&mut self, data: &mut Torrent<'_>, now: Timestamp) {
        if self.files.is_empty() || data.swarm.is_complete() {
            return;
        }
        for i in 0..self.seeds.len() {
            match self.seeds[i].state {
                SeedState::Waiting { until } if now >= until => {
                    self.seeds[i].state = if self.seeds[i].addr.is_some() { SeedState::Idle } else { self.resolve(i) };
                }
                _ => {}
            }
            if matches!(self.seeds[i].state, SeedState::Idle) {
                if let Some(fetch) = self.plan(i, data, now) {
                    self.seeds[i].state = SeedState::Fetching(Box::new(fetch));
                    self.request_next(i, data, now);
                }
            }
        }
    }

    fn resolve(&mut self, i: usize) -> SeedState {
        let Some(target) = self.seeds[i].target.clone() else {
            return SeedState::Abandoned;
        };
        let id = self.io_id(i);
        self.io.push_back(TrackerIo::Resolve { id, host: target.host, port: target.port });
        SeedState::Resolving(id)
    }

    /// Reserves a span of contiguous free blocks for this seed: the picker's choice first, then the blocks
    /// after it, on into the following pieces while they are free from their start, up to [`SPAN_MAX`].
    fn plan(&mut self, i: usize, data: &mut Torrent<'_>, now: Timestamp) -> Option<Fetch> {
        let geometry = data.ctx.geometry;
        let all = Bitfield::full(geometry.piece_count());
        let mut hint = None;
        let first = data.swarm.reserve_block(&all, &mut hint, true, None)?;
        let mut blocks = vec![first];
        let mut bytes = u64::from(first.len);
        loop {
            let last = *blocks.last().expect("one block at least");
            let next = if last.index() + 1 < geometry.blocks_in_piece(last.piece) {
                (last.piece, last.index() + 1)
            } else if last.piece + 1 < geometry.piece_count() && bytes + u64::from(BLOCK_LEN) <= SPAN_MAX {
                (last.piece + 1, 0)
            } else {
                break;
            };
            if next.1 == 0 && bytes + u64::from(geometry.piece_len(next.0)) > SPAN_MAX {
                break;
            }
            let mut hint = Some(next.0);
            match data.swarm.reserve_block(&all, &mut hint, true, None) {
                Some(b) if (b.piece, b.index()) == next => {
                    bytes += u64::from(b.len);
                    blocks.push(b);
                }
                Some(other) => {
                    data.swarm.release_block(&other);
                    break;
                }
                None => break,
            }
        }
        let start = geometry.piece_offset(first.piece) + u64::from(first.offset);
        let segments = self.segments(start, start + bytes);
        let seed = &self.seeds[i];
        Some(Fetch {
            blocks,
            done: 0,
            segments,
            io: None,
            target: seed.target.clone()?,
            addr: seed.addr?,
            head: None,
            expect: 0,
            block: Vec::with_capacity(BLOCK_LEN as usize),
            redirects: 0,
            last_progress: now,
        })
    }

    /// The per-file pieces of the torrent's bytes `start..end`.
    fn segments(&self, start: u64, end: u64) -> VecDeque<Segment> {
        let mut out = VecDeque::new();
        for (i, f) in self.files.iter().enumerate() {
            let (a, b) = (f.offset.max(start), (f.offset + f.length).min(end));
            if a < b {
                out.push_back(Segment { file: i, start: a - f.offset, len: b - a });
            }
        }
        out
    }

    /// Sends the request for the next segment (padding segments are filled with zeros at once), or ends
    /// the fetch when none is left.
    fn request_next(&mut self, i: usize, data: &mut Torrent<'_>, now: Timestamp) {
        loop {
            let SeedState::Fetching(fetch) = &mut self.seeds[i].state else {
                return;
            };
            let Some(seg) = fetch.segments.front().cloned() else {
                self.seeds[i].state = SeedState::Idle;
                self.seeds[i].failures = 0;
                return;
            };
            if self.files[seg.file].padding {
                fetch.segments.pop_front();
                let zeros = [0u8; 4096];
                let mut left = seg.len;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    if let Err(e) = self.body_bytes(i, &zeros[..n], data) {
                        log::warn!("web seed: storage: {e}");
                        return;
                    }
                    left -= n as u64;
                }
                continue;
            }
            let file = &self.files[seg.file];
            let mut path = fetch.target.path.clone();
            let single = self.files.len() == 1;
            if !single || path.ends_with('/') {
                if !path.ends_with('/') {
                    path.push('/');
                }
                path.push_str(&file.path);
            }
            self.send_range(i, path, now);
            return;
        }
    }

    /// A host name resolved (or not).
    pub fn on_resolved(&mut self, id: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp) {
        let Some(i) = self.seed_of(id) else {
            return;
        };
        match result.map(|a| a.into_iter().next()) {
            Ok(Some(addr)) => {
                self.seeds[i].addr = Some(addr);
                self.seeds[i].state = SeedState::Idle;
            }
            Ok(None) => self.fail(i, "its host name has no address".into(), None, now),
            Err(e) => self.fail(i, format!("cannot resolve its host: {e}"), None, now),
        }
    }

    /// Response bytes for a request.
    pub fn on_http_data(&mut self, id: IoId, bytes: &[u8], data: &mut Torrent<'_>, now: Timestamp) {
        let Some(i) = self.seed_of(id) else {
            return;
        };
        let mut rest = bytes;
        let SeedState::Fetching(fetch) = &mut self.seeds[i].state else {
            return;
        };
        fetch.last_progress = now;
        if let Some(head) = fetch.head.as_mut() {
            match head.feed(rest) {
                Ok(None) => return,
                Ok(Some((head, used))) => {
                    rest = &rest[used..];
                    fetch.head = None;
                    let Some(seg) = fetch.segments.front().cloned() else {
                        return;
                    };
                    if let Err(why) = self.on_head(i, &head, &seg, data, now) {
                        self.fail(i, why, Some(data), now);
                        return;
                    }
                    let SeedState::Fetching(f) = &self.seeds[i].state else {
                        return; // a redirect was followed
                    };
                    if f.head.is_some() {
                        return;
                    }
                }
                Err(e) => {
                    self.fail(i, format!("bad response: {e}"), Some(data), now);
                    return;
                }
            }
        }
        let SeedState::Fetching(fetch) = &mut self.seeds[i].state else {
            return;
        };
        let take = (rest.len() as u64).min(fetch.expect) as usize;
        fetch.expect -= take as u64;
        let segment_done = fetch.expect == 0;
        if let Err(e) = self.body_bytes(i, &rest[..take], data) {
            log::warn!("web seed: cannot store what it sent: {e}");
            self.fail(i, format!("storage: {e}"), Some(data), now);
            return;
        }
        if segment_done {
            if let SeedState::Fetching(fetch) = &mut self.seeds[i].state {
                if let Some(io) = fetch.io.take() {
                    self.io.push_back(TrackerIo::HttpClose { id: io });
                }
                fetch.segments.pop_front();
            }
            self.request_next(i, data, now);
        }
    }

    /// Checks a response head against the request; follows a redirect.
    fn on_head(
        &mut self,
        i: usize,
        head: &StreamHead,
        seg: &Segment,
        data: &mut Torrent<'_>,
        now: Timestamp,
    ) -> Result<(), String> {
        let SeedState::Fetching(fetch) = &mut self.seeds[i].state else {
            return Ok(());
        };
        match head.status {
            206 => {
                let want = (seg.start, seg.start + seg.len - 1);
                if head.content_range.is_some_and(|(a, b, _)| (a, b) != want) {
                    return Err(format!("answered another range than bytes={}-{}", want.0, want.1));
                }
                if head.content_range.is_none() && head.content_length != Some(seg.len) {
                    return Err("partial content without a matching range".into());
                }
            }
            // The whole file, when the range starts at 0: its first bytes are the segment.
            200 if seg.start == 0 => {}
            200 => {
                // Permanent: asking again gets the same whole file.
                self.abandon(i, "the server ignores Range requests".into(), data);
                return Ok(());
            }
            301 | 302 | 303 | 307 | 308 => {
                fetch.redirects += 1;
                let location = head.location.clone().unwrap_or_default();
                let Some(target) = parse_http_url(&location).filter(|_| fetch.redirects <= MAX_REDIRECTS) else {
                    self.abandon(i, format!("redirect to '{location}' not followed (loop, or not http://)"), data);
                    return Ok(());
                };
                let Some(addr) = target.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, target.port)) else {
                    self.abandon(i, format!("redirect to host name {} not followed", target.host), data);
                    return Ok(());
                };
                if let Some(io) = fetch.io.take() {
                    self.io.push_back(TrackerIo::HttpClose { id: io });
                }
                // The redirect names the file itself: request it as a single-file URL.
                fetch.target = target;
                fetch.addr = addr;
                self.request_redirected(i, now);
                return Ok(());
            }
            status => return Err(format!("HTTP {status}")),
        }
        if head.chunked {
            return Err("chunked response bodies are not supported for ranges".into());
        }
        Ok(())
    }

    /// The redirect named the file itself: its path as it is.
    fn request_redirected(&mut self, i: usize, now: Timestamp) {
        let SeedState::Fetching(fetch) = &self.seeds[i].state else {
            return;
        };
        let path = fetch.target.path.clone();
        self.send_range(i, path, now);
    }

    /// Queues the `Range` request for the fetch's current segment at `path` of its target.
    fn send_range(&mut self, i: usize, path: String, now: Timestamp) {
        let id = self.io_id(i);
        let SeedState::Fetching(fetch) = &mut self.seeds[i].state else {
            return;
        };
        let Some(seg) = fetch.segments.front().cloned() else {
            return;
        };
        let host = match fetch.target.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => fetch.target.host.clone(),
        };
        let host = if fetch.target.port == 80 { host } else { format!("{host}:{}", fetch.target.port) };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={}-{}\r\nUser-Agent: rill/{}\r\n\
             Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
            seg.start,
            seg.start + seg.len - 1,
            env!("CARGO_PKG_VERSION")
        );
        fetch.head = Some(HeadReader::default());
        fetch.expect = seg.len;
        fetch.last_progress = now;
        fetch.io = Some(id);
        let addr = fetch.addr;
        self.io.push_back(TrackerIo::HttpRequest { id, addr, request: request.into_bytes() });
    }

    /// Body bytes of the span, in order: whole blocks go to the torrent.
    fn body_bytes(&mut self, i: usize, mut bytes: &[u8], data: &mut Torrent<'_>) -> Result<(), StorageError> {
        let seed = &mut self.seeds[i];
        let SeedState::Fetching(fetch) = &mut seed.state else {
            return Ok(());
        };
        while !bytes.is_empty() && fetch.done < fetch.blocks.len() {
            let block = fetch.blocks[fetch.done];
            let room = block.len as usize - fetch.block.len();
            let n = room.min(bytes.len());
            fetch.block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if fetch.block.len() == block.len as usize {
                data.store_block(seed.no, &block, &fetch.block);
                seed.downloaded += u64::from(block.len);
                fetch.block.clear();
                fetch.done += 1;
            }
        }
        Ok(())
    }

    /// The connection ended. Before the whole segment arrived, that is a failure.
    pub fn on_http_closed(
        &mut self,
        id: IoId,
        result: Result<(), std::io::ErrorKind>,
        data: &mut Torrent<'_>,
        now: Timestamp,
    ) {
        let Some(i) = self.seed_of(id) else {
            return;
        };
        let why = match result {
            Err(kind) => format!("connection failed: {kind}"),
            Ok(()) => "connection closed before the whole range arrived".into(),
        };
        if let SeedState::Fetching(fetch) = &mut self.seeds[i].state {
            fetch.io = None;
        }
        self.fail(i, why, Some(data), now);
    }

    /// Once a second: fetches that stalled are given up.
    pub fn on_tick(&mut self, data: &mut Torrent<'_>, now: Timestamp) {
        for i in 0..self.seeds.len() {
            let stalled = matches!(&self.seeds[i].state, SeedState::Fetching(f) if now >= f.last_progress + STALL);
            if stalled {
                self.fail(i, format!("nothing received for {} s", STALL.as_secs()), Some(data), now);
            }
        }
        self.start_fetches(data, now);
    }

    /// Gives the blocks of a fetch back to the pool and closes its request.
    fn drop_fetch(&mut self, i: usize, data: Option<&mut Torrent<'_>>) {
        let state = std::mem::replace(&mut self.seeds[i].state, SeedState::Idle);
        if let SeedState::Fetching(fetch) = state {
            if let Some(io) = fetch.io {
                self.io.push_back(TrackerIo::HttpClose { id: io });
            }
            if let Some(data) = data {
                for block in &fetch.blocks[fetch.done..] {
                    data.swarm.release_block(block);
                }
            }
        }
    }

    fn fail(&mut self, i: usize, why: String, data: Option<&mut Torrent<'_>>, now: Timestamp) {
        self.drop_fetch(i, data);
        let seed = &mut self.seeds[i];
        seed.failures += 1;
        if seed.failures >= MAX_FAILURES {
            let why = format!("{why} ({MAX_FAILURES} failures in a row)");
            seed.state = SeedState::Abandoned;
            log::info!("web seed {}: given up: {why}", seed.url);
            self.news.push_back(WebSeedNews::GaveUp { url: seed.url.clone(), why });
            return;
        }
        let wait = (RETRY_FIRST * 2u32.pow(seed.failures - 1)).min(RETRY_MAX);
        log::info!("web seed {}: {why}; trying again in {} s", seed.url, wait.as_secs());
        seed.state = SeedState::Waiting { until: now + wait };
    }

    fn abandon(&mut self, i: usize, why: String, data: &mut Torrent<'_>) {
        self.drop_fetch(i, Some(data));
        let seed = &mut self.seeds[i];
        seed.state = SeedState::Abandoned;
        log::info!("web seed {}: given up: {why}", seed.url);
        self.news.push_back(WebSeedNews::GaveUp { url: seed.url.clone(), why });
    }

    /// A piece this seed alone delivered failed its hash check: it is not used again.
    pub fn on_banned(&mut self, no: PeerNo, data: &mut Torrent<'_>) -> bool {
        let Some(i) = self.seeds.iter().position(|s| s.no == no) else {
            return false;
        };
        if !matches!(self.seeds[i].state, SeedState::Abandoned) {
            self.abandon(i, "it sent data that failed the piece's hash check".into(), data);
        }
        true
    }

    /// Stops every fetch (the torrent stops or completes).
    pub fn stop_all(&mut self, mut data: Option<&mut Torrent<'_>>) {
        for i in 0..self.seeds.len() {
            if matches!(self.seeds[i].state, SeedState::Fetching(_)) {
                self.drop_fetch(i, data.as_deref_mut());
            }
        }
    }
}

impl super::Engine {
    /// The torrent a web seed `IoId` belongs to.
    pub(super) fn webseed_torrent(&self, id: IoId) -> Option<super::TorrentId> {
        let t = super::TorrentId(((id.0 & !WEB_IO) >> 32) as usize);
        self.torrents.contains(t.0).then_some(t)
    }

    /// Moves a torrent's web seed requests to the action queue and its news to the event queue.
    pub(super) fn pump_webseeds(&mut self, id: super::TorrentId, now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return;
        };
        while let Some(io) = t.webseeds.poll_io() {
            self.actions.push_back(super::Action::Tracker(io));
        }
        while let Some(WebSeedNews::GaveUp { url, why }) = t.webseeds.poll_news() {
            if let Some(q) = self.trace.as_deref_mut() {
                let (url, why) = (url.clone(), why.clone());
                q.push(now, super::trace::TraceKind::WebSeedGaveUp { torrent: id, url, why });
            }
            self.events.push_back(super::snapshot::Event::WebSeedGaveUp { torrent: id, url, why });
        }
    }

    pub(super) fn webseed_resolved(&mut self, io: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp) {
        if let Some(id) = self.webseed_torrent(io) {
            self.torrents[id.0].webseeds.on_resolved(io, result, now);
            self.webseeds_go(id, now);
        }
    }

    pub(super) fn webseed_data(&mut self, io: IoId, bytes: &[u8], now: Timestamp) {
        let Some(id) = self.webseed_torrent(io) else {
            return;
        };
        let t = &mut self.torrents[id.0];
        let got = bytes.len() as u64;
        for bucket in [self.down_bucket.as_mut(), t.down_bucket.as_mut()].into_iter().flatten() {
            bucket.spend(got);
        }
        if let Some(core) = t.data.as_mut() {
            t.webseeds.on_http_data(io, bytes, &mut crate::torrent::TorrentIo { core, disk: &mut self.disk }, now);
        }
        // A finished span is followed by the next at once.
        self.webseeds_go(id, now);
    }

    pub(super) fn webseed_closed(&mut self, io: IoId, result: Result<(), std::io::ErrorKind>, now: Timestamp) {
        let Some(id) = self.webseed_torrent(io) else {
            return;
        };
        let t = &mut self.torrents[id.0];
        if let Some(core) = t.data.as_mut() {
            t.webseeds.on_http_closed(io, result, &mut crate::torrent::TorrentIo { core, disk: &mut self.disk }, now);
        }
        self.pump_webseeds(id, now);
    }

    /// Starts what web seed fetches are due (once a second, and when a seed's address arrives); stops
    /// them when the torrent no longer downloads.
    pub(super) fn webseeds_go(&mut self, id: super::TorrentId, now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return;
        };
        if t.webseeds.is_empty() {
            return;
        }
        let downloading = t.is_active() && !t.is_complete();
        if let Some(core) = t.data.as_mut() {
            let data = &mut crate::torrent::TorrentIo { core, disk: &mut self.disk };
            if downloading {
                t.webseeds.on_tick(data, now);
            } else {
                t.webseeds.stop_all(Some(data));
            }
        }
        self.pump_webseeds(id, now);
    }

    /// A piece a web seed alone delivered failed its check: that seed is given up. True if `no` was one.
    pub(super) fn ban_webseed(&mut self, id: super::TorrentId, no: PeerNo, now: Timestamp) -> bool {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return false;
        };
        let Some(core) = t.data.as_mut() else {
            return false;
        };
        let was = t.webseeds.on_banned(no, &mut crate::torrent::TorrentIo { core, disk: &mut self.disk });
        self.pump_webseeds(id, now);
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_escape() {
        let u = parse_http_url("http://127.0.0.1:8080/seed/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 8080, "/seed/"));
        let u = parse_http_url("http://example.org").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("example.org", 80, "/"));
        let u = parse_http_url("http://[::1]:9000/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        for bad in ["https://x/", "ftp://x", "http://", "http://u@h/", "http://h:0/", "http://h:x/", "http://h/a b"] {
            assert_eq!(parse_http_url(bad), None, "{bad}");
        }
        let mut out = String::new();
        escape_component("a b/é%.txt", &mut out);
        assert_eq!(out, "a%20b%2F%C3%A9%25.txt");
    }
}
