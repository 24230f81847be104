//! `--stats-json FILE`: statistics of a run, aggregated from the trace events and the engine's snapshot,
//! as one JSON document (docs/trace.md describes it).
//!
//! Owns: the aggregator (totals, connects and drops by reason, choke and interest counts, tracker, DHT,
//! uTP and web seed counters, per-peer bytes, request latency histograms, rates over time) and the JSON
//! document it makes. Memory is bounded whatever the run's length: latencies go into a fixed log-bucket
//! `Histogram` (not a list of samples); rates keep `RECENT_SECONDS` one-second samples, then
//! `MINUTES_KEPT` one-minute ones; peers that never connected are only counted; closed peers are kept
//! (they are the point) up to `MAX_CLOSED_PEERS`, the least busy beyond that summed into `others`.
//! Must not: write files (the recorder's helper does) or decide anything.
//! Files: `stats.rs` (aggregation), `stats/document.rs` (the JSON document), `stats/tests.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use serde::Serialize;

use crate::engine::trace::{TraceEvent, TraceKind, Transport};
use crate::engine::TorrentId;
use crate::peer::trace::SessionEvent;
use crate::time::Timestamp;

use super::trace::reason_code;

/// One-second rate samples kept (five minutes); older ones are folded into minutes.
pub const RECENT_SECONDS: usize = 300;
/// One-minute rate samples kept (a day); older ones are dropped (the totals keep counting).
pub const MINUTES_KEPT: usize = 1440;
/// Closed peers kept one by one; beyond this the one with the fewest bytes goes into `others`.
pub const MAX_CLOSED_PEERS: usize = 1000;
/// Tracker URLs counted one by one (a torrent's list is bounded; this bounds many torrents' lists).
pub const MAX_TRACKERS: usize = 1000;

// ---- histogram ------------------------------------------------------------------------------------

/// Sub-buckets per power of two: a value is placed within 1/8 of itself (a percentile is off by at most
/// 6.25 % of its value, reporting the bucket's middle).
const SUB_BUCKETS: u64 = 8;
/// Values from 0 to 2^31 µs (36 minutes); larger ones count in the last bucket.
const MAX_EXPONENT: u32 = 31;
pub const HISTOGRAM_BUCKETS: usize = (SUB_BUCKETS + (MAX_EXPONENT as u64 - 2) * SUB_BUCKETS) as usize;

/// Request latencies in microseconds, in fixed logarithmic buckets: values below 8 exactly, then 8 buckets
/// per power of two.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u32; HISTOGRAM_BUCKETS]>,
    total: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: Box::new([0; HISTOGRAM_BUCKETS]), total: 0, sum: 0, max: 0 }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // ≥ 3
    if e > MAX_EXPONENT {
        return HISTOGRAM_BUCKETS - 1;
    }
    let sub = (v >> (e - 3)) - SUB_BUCKETS;
    (SUB_BUCKETS + u64::from(e - 3) * SUB_BUCKETS + sub) as usize
}

/// The value a bucket stands for: itself below 8, else the middle of its range.
fn bucket_value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB_BUCKETS {
        return i;
    }
    let e = (i - SUB_BUCKETS) / SUB_BUCKETS + 3;
    let sub = (i - SUB_BUCKETS) % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << (e - 3);
    let width = 1u64 << (e - 3);
    low + width / 2
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        let c = &mut self.counts[bucket_of(micros)];
        *c = c.saturating_add(1);
        self.total += 1;
        self.sum = self.sum.saturating_add(micros);
        self.max = self.max.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which a fraction `p` (0..=1) of the samples lie, to the bucket's precision.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(bucket_value(i).min(self.max));
            }
        }
        Some(self.max)
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    fn summary(&self) -> Option<Latency> {
        (self.total > 0).then(|| Latency {
            count: self.total,
            mean_us: self.sum / self.total,
            p50_us: self.percentile(0.5).unwrap_or(0),
            p90_us: self.percentile(0.9).unwrap_or(0),
            p99_us: self.percentile(0.99).unwrap_or(0),
            max_us: self.max,
        })
    }
}

#[derive(Serialize)]
struct Latency {
    count: u64,
    mean_us: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
}

// ---- per peer -------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct PeerStats {
    addr: Option<SocketAddr>,
    torrent: Option<usize>,
    transport: Option<Transport>,
    outgoing: bool,
    encrypted: bool,
    client: Option<String>,
    connected_at: Option<Timestamp>,
    closed_at: Option<Timestamp>,
    reason: Option<&'static str>,
    /// Payload received (every block, duplicates included) and of it duplicates.
    downloaded: u64,
    wasted: u64,
    uploaded: u64,
    requests: u64,
    blocks: u64,
    cancels_sent: u64,
    cancels_received: u64,
    rejects_sent: u64,
    rejects_received: u64,
    requests_timed_out: u64,
    choked_us: u64,
    unchoked_us: u64,
    we_choked: u64,
    we_unchoked: u64,
    latency: Option<Histogram>,
}

impl PeerStats {
    fn bytes(&self) -> u64 {
        self.downloaded + self.uploaded
    }

    /// Adds `other`'s counters (for `others`).
    fn absorb(&mut self, other: &PeerStats) {
        self.downloaded += other.downloaded;
        self.wasted += other.wasted;
        self.uploaded += other.uploaded;
        self.requests += other.requests;
        self.blocks += other.blocks;
        self.cancels_sent += other.cancels_sent;
        self.cancels_received += other.cancels_received;
        self.rejects_sent += other.rejects_sent;
        self.rejects_received += other.rejects_received;
        self.requests_timed_out += other.requests_timed_out;
        self.choked_us += other.choked_us;
        self.unchoked_us += other.unchoked_us;
        self.we_choked += other.we_choked;
        self.we_unchoked += other.we_unchoked;
        if let Some(h) = &other.latency {
            self.latency.get_or_insert_with(Histogram::default).merge(h);
        }
    }
}

// ---- the aggregator -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct RateSample {
    /// Seconds since the start (the sample's end).
    t: u64,
    /// Payload bytes per second over the sample.
    down: u64,
    up: u64,
}

#[derive(Debug, Default, Serialize)]
struct Connects {
    attempts: u64,
    attempts_utp: u64,
    attempts_encrypted: u64,
    connected: u64,
    accepted: u64,
    accepted_utp: u64,
    failed: BTreeMap<&'static str, u64>,
    dropped: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default, Serialize)]
struct Chokes {
    choked_us: u64,
    unchoked_us: u64,
    we_choked: u64,
    we_unchoked: u64,
    interested_in_us: u64,
    not_interested_in_us: u64,
    we_interested: u64,
    we_not_interested: u64,
}

#[derive(Debug, Default, Serialize)]
struct TrackerStats {
    requests: u64,
    responses: u64,
    errors: u64,
    warnings: u64,
    peers: u64,
    last_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct Dht {
    lookups: u64,
    lookups_done: u64,
    peers_found: u64,
    announced_to: u64,
}

/// The event loop and the disk thread: how long the loop's turns took (the longest over the run and in
/// the last second seen), and what the disk thread did (totals).
#[derive(Debug, Default, Serialize)]
struct LoopStats {
    turns: u64,
    longest_turn_ms: f64,
    last_second_longest_turn_ms: f64,
    disk_pending: u32,
    disk_write_calls: u64,
    disk_bytes_written: u64,
    /// Average bytes per write call (coalesced blocks).
    disk_average_write: u64,
    disk_read_calls: u64,
    disk_pieces_hashed: u64,
    /// Bytes of downloaded pieces read back from the disk to hash them.
    disk_bytes_read_back: u64,
}

#[derive(Debug, Default, Serialize)]
struct Utp {
    attempts: u64,
    connected: u64,
    accepted: u64,
    downloaded: u64,
    uploaded: u64,
}

#[derive(Debug, Default)]
struct TorrentCounts {
    pieces_verified: u64,
    pieces_failed: u64,
    completed_at: Option<Timestamp>,
    metadata_at: Option<Timestamp>,
    webseed_bytes: u64,
    webseeds_given_up: u64,
}

/// Everything `--stats-json` reports, fed event by event.
pub struct Stats {
    events: u64,
    /// Events the engine dropped (its `dropped` events).
    engine_dropped: u64,
    torrents: BTreeMap<usize, TorrentCounts>,
    /// Peers connected or being dialled, and closed ones kept.
    peers: HashMap<u64, PeerStats>,
    closed: usize,
    /// Closed peers summed once more than `MAX_CLOSED_PEERS` were kept.
    others: PeerStats,
    others_count: u64,
    connects: Connects,
    chokes: Chokes,
    latency: Histogram,
    trackers: BTreeMap<String, TrackerStats>,
    dht: Dht,
    utp: Utp,
    event_loop: LoopStats,
    hash_failures: u64,
    /// The second being summed (its `at`) and its bytes.
    current: Option<(Timestamp, u64, u64)>,
    recent: VecDeque<RateSample>,
    minutes: VecDeque<RateSample>,
    /// The minute being folded from samples leaving `recent`: (its end, down, up, seconds).
    minute: Option<(u64, u64, u64, u64)>,
}

impl Stats {
    pub fn new(torrents: &[(TorrentId, String)]) -> Self {
        Stats {
            events: 0,
            engine_dropped: 0,
            torrents: torrents.iter().map(|(id, _)| (id.0, TorrentCounts::default())).collect(),
            peers: HashMap::new(),
            closed: 0,
            others: PeerStats::default(),
            others_count: 0,
            connects: Connects::default(),
            chokes: Chokes::default(),
            latency: Histogram::default(),
            trackers: BTreeMap::new(),
            dht: Dht::default(),
            utp: Utp::default(),
            event_loop: LoopStats::default(),
            hash_failures: 0,
            current: None,
            recent: VecDeque::new(),
            minutes: VecDeque::new(),
            minute: None,
        }
    }

    fn torrent(&mut self, id: TorrentId) -> &mut TorrentCounts {
        self.torrents.entry(id.0).or_default()
    }

    fn tracker(&mut self, url: &str) -> Option<&mut TrackerStats> {
        if !self.trackers.contains_key(url) && self.trackers.len() >= MAX_TRACKERS {
            return None;
        }
        Some(self.trackers.entry(url.to_string()).or_default())
    }

    pub fn on_event(&mut self, e: &TraceEvent) {
        self.events += 1;
        match &e.kind {
            TraceKind::Lost { count } => self.engine_dropped += count,
            TraceKind::ConnectAttempt { peer, torrent, addr, transport, encrypted } => {
                self.connects.attempts += 1;
                self.connects.attempts_encrypted += u64::from(*encrypted);
                if *transport == Transport::Utp {
                    self.connects.attempts_utp += 1;
                    self.utp.attempts += 1;
                }
                self.peers.insert(
                    peer.0,
                    PeerStats {
                        addr: Some(*addr),
                        torrent: Some(torrent.0),
                        transport: Some(*transport),
                        outgoing: true,
                        encrypted: *encrypted,
                        ..Default::default()
                    },
                );
            }
            TraceKind::Accepted { peer, addr, transport } => {
                self.connects.accepted += 1;
                if *transport == Transport::Utp {
                    self.connects.accepted_utp += 1;
                    self.utp.accepted += 1;
                }
                self.peers.insert(
                    peer.0,
                    PeerStats {
                        addr: Some(*addr),
                        transport: Some(*transport),
                        connected_at: Some(e.at),
                        ..Default::default()
                    },
                );
            }
            TraceKind::Connected { peer } => {
                self.connects.connected += 1;
                if let Some(p) = self.peers.get_mut(&peer.0) {
                    p.connected_at = Some(e.at);
                    if p.transport == Some(Transport::Utp) {
                        self.utp.connected += 1;
                    }
                }
            }
            TraceKind::ConnectFailed { peer, reason } => {
                *self.connects.failed.entry(reason_code(reason)).or_default() += 1;
                // Peers that never connected are only counted.
                self.peers.remove(&peer.0);
            }
            TraceKind::Session { peer, torrent, event } => self.on_session(e.at, peer.0, *torrent, event),
            TraceKind::RateSample { peer, up, .. } => {
                if let Some(p) = self.peers.get_mut(&peer.0) {
                    p.uploaded += up;
                    if p.transport == Some(Transport::Utp) {
                        self.utp.uploaded += up;
                    }
                }
            }
            TraceKind::PeerDropped { peer, reason, uploaded, .. } => {
                *self.connects.dropped.entry(reason_code(reason)).or_default() += 1;
                if let Some(p) = self.peers.get_mut(&peer.0) {
                    // The last partial second's upload is in the total.
                    if *uploaded > p.uploaded {
                        if p.transport == Some(Transport::Utp) {
                            self.utp.uploaded += uploaded - p.uploaded;
                        }
                        p.uploaded = *uploaded;
                    }
                    p.closed_at = Some(e.at);
                    p.reason = Some(reason_code(reason));
                    self.closed += 1;
                    self.bound_closed();
                }
            }
            TraceKind::TorrentRate { down, up, .. } => match &mut self.current {
                Some((at, d, u)) if *at == e.at => {
                    *d += down;
                    *u += up;
                }
                _ => {
                    self.end_turn();
                    self.current = Some((e.at, *down, *up));
                }
            },
            TraceKind::Loop {
                turns,
                longest_turn_us,
                disk_pending,
                write_calls,
                bytes_written,
                read_calls,
                pieces_hashed,
                bytes_read_back,
            } => {
                let l = &mut self.event_loop;
                let longest = *longest_turn_us as f64 / 1000.0;
                l.turns += turns;
                l.longest_turn_ms = l.longest_turn_ms.max(longest);
                l.last_second_longest_turn_ms = longest;
                l.disk_pending = *disk_pending;
                l.disk_write_calls = *write_calls;
                l.disk_bytes_written = *bytes_written;
                l.disk_average_write = bytes_written / write_calls.max(&1);
                l.disk_read_calls = *read_calls;
                l.disk_pieces_hashed = *pieces_hashed;
                l.disk_bytes_read_back = *bytes_read_back;
            }
            TraceKind::PieceVerified { torrent, .. } => self.torrent(*torrent).pieces_verified += 1,
            TraceKind::PieceFailed { torrent, .. } => {
                self.hash_failures += 1;
                self.torrent(*torrent).pieces_failed += 1;
            }
            TraceKind::Completed { torrent } => self.torrent(*torrent).completed_at = Some(e.at),
            TraceKind::TrackerRequest { url, .. } => {
                if let Some(t) = self.tracker(url) {
                    t.requests += 1;
                }
            }
            TraceKind::TrackerResponse { url, peers, .. } => {
                if let Some(t) = self.tracker(url) {
                    t.responses += 1;
                    t.peers += *peers as u64;
                }
            }
            TraceKind::TrackerError { url, message, warning, .. } => {
                if let Some(t) = self.tracker(url) {
                    if *warning {
                        t.warnings += 1;
                    } else {
                        t.errors += 1;
                        t.last_error = Some(message.clone());
                    }
                }
            }
            TraceKind::MetadataReceived { torrent, .. } => self.torrent(*torrent).metadata_at = Some(e.at),
            TraceKind::DhtLookup { .. } => self.dht.lookups += 1,
            TraceKind::DhtPeers { count, .. } => self.dht.peers_found += *count as u64,
            TraceKind::DhtLookupDone { announced, .. } => {
                self.dht.lookups_done += 1;
                self.dht.announced_to += *announced as u64;
            }
            TraceKind::WebSeedData { torrent, bytes } => self.torrent(*torrent).webseed_bytes += bytes,
            TraceKind::WebSeedGaveUp { torrent, .. } => self.torrent(*torrent).webseeds_given_up += 1,
        }
    }

    fn on_session(&mut self, at: Timestamp, peer: u64, torrent: TorrentId, event: &SessionEvent) {
        let c = &mut self.chokes;
        match event {
            SessionEvent::PeerChoke(true) => c.choked_us += 1,
            SessionEvent::PeerChoke(false) => c.unchoked_us += 1,
            SessionEvent::AmChoke(true) => c.we_choked += 1,
            SessionEvent::AmChoke(false) => c.we_unchoked += 1,
            SessionEvent::PeerInterested(true) => c.interested_in_us += 1,
            SessionEvent::PeerInterested(false) => c.not_interested_in_us += 1,
            SessionEvent::AmInterested(true) => c.we_interested += 1,
            SessionEvent::AmInterested(false) => c.we_not_interested += 1,
            _ => {}
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.torrent.get_or_insert(torrent.0);
        match event {
            SessionEvent::Handshake { peer_id, .. } => {
                p.client = Some(super::client::client_name(peer_id));
                p.connected_at.get_or_insert(at);
            }
            SessionEvent::PeerChoke(true) => p.choked_us += 1,
            SessionEvent::PeerChoke(false) => p.unchoked_us += 1,
            SessionEvent::AmChoke(true) => p.we_choked += 1,
            SessionEvent::AmChoke(false) => p.we_unchoked += 1,
            SessionEvent::Request(_) => p.requests += 1,
            SessionEvent::Block { block, latency, fresh } => {
                let len = u64::from(block.len);
                p.blocks += 1;
                p.downloaded += len;
                if !fresh {
                    p.wasted += len;
                }
                if p.transport == Some(Transport::Utp) {
                    self.utp.downloaded += len;
                }
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                p.latency.get_or_insert_with(Histogram::default).record(us);
                self.latency.record(us);
            }
            SessionEvent::CancelSent(_) => p.cancels_sent += 1,
            SessionEvent::CancelReceived(_) => p.cancels_received += 1,
            SessionEvent::RejectSent(_) => p.rejects_sent += 1,
            SessionEvent::RejectReceived(_) => p.rejects_received += 1,
            SessionEvent::RequestsTimedOut { count } => p.requests_timed_out += u64::from(*count),
            _ => {}
        }
    }

    /// Keeps at most `MAX_CLOSED_PEERS` closed peers: the least busy one goes into `others`.
    fn bound_closed(&mut self) {
        while self.closed > MAX_CLOSED_PEERS {
            let victim = self
                .peers
                .iter()
                .filter(|(_, p)| p.closed_at.is_some())
                .min_by_key(|(no, p)| (p.bytes(), **no))
                .map(|(no, _)| *no);
            let Some(gone) = victim.and_then(|no| self.peers.remove(&no)) else {
                return;
            };
            self.others.absorb(&gone);
            self.others_count += 1;
            self.closed -= 1;
        }
    }

    /// Closes the second being summed (the engine samples every torrent at once, so a turn's rates are
    /// one second).
    pub fn end_turn(&mut self) {
        let Some((at, down, up)) = self.current.take() else {
            return;
        };
        let t = at.as_micros() / 1_000_000;
        self.recent.push_back(RateSample { t, down, up });
        while self.recent.len() > RECENT_SECONDS {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            let minute_end = (old.t / 60 + 1) * 60;
            match &mut self.minute {
                Some((end, d, u, n)) if *end == minute_end => {
                    *d += old.down;
                    *u += old.up;
                    *n += 1;
                }
                _ => {
                    self.close_minute();
                    self.minute = Some((minute_end, old.down, old.up, 1));
                }
            }
        }
    }

    fn close_minute(&mut self) {
        if let Some((end, d, u, n)) = self.minute.take() {
            self.minutes.push_back(RateSample { t: end, down: d / n.max(1), up: u / n.max(1) });
            while self.minutes.len() > MINUTES_KEPT {
                self.minutes.pop_front();
            }
        }
    }
}

mod document;

#[cfg(test)]
mod tests;
