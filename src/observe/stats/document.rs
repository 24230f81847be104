//! The `--stats-json` document: what `Stats` holds, as the JSON object docs/trace.md describes.
//!
//! Owns: the document's shape (plain `Serialize` structs) and building it from the aggregator and a snapshot.
//! Must not: aggregate (that is `Stats::on_event`) or write files.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

use serde::Serialize;

use super::{Chokes, Connects, Dht, Histogram, Latency, LoopStats, PeerStats, RateSample, Stats, TrackerStats, Utp};
use crate::engine::snapshot::Snapshot;
use crate::engine::torrent::State;
use crate::engine::trace::Transport;
use crate::observe::chunks::Chunks;
use crate::time::Timestamp;

use super::super::trace::SCHEMA_VERSION;

impl Stats {
    /// The JSON document at `now` (pretty-printed: people read it too).
    pub fn document(&self, now: Timestamp, snapshot: &Snapshot, writer_dropped: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_document(now, snapshot, writer_dropped, &mut out);
        out
    }

    /// The same, into `out` (cleared first): the recorder reuses one set of fixed-size chunks, so a long run's
    /// document, which grows to hundreds of KiB with the closed peers it keeps, neither is allocated afresh every
    /// `STATS_EVERY` nor grows one buffer by doubling. The peers are serialised one by one from the aggregator
    /// (no list of them is built).
    pub fn document_into(&self, now: Timestamp, snapshot: &Snapshot, writer_dropped: u64, out: &mut Chunks) {
        out.clear();
        if !self.write_document(now, snapshot, writer_dropped, &mut *out) {
            out.clear();
        }
    }

    /// Serialises the document into `out`; false if that failed (it cannot, into memory).
    fn write_document(&self, now: Timestamp, snapshot: &Snapshot, writer_dropped: u64, out: impl io::Write) -> bool {
        let doc = self.build(now, snapshot, writer_dropped);
        serde_json::to_writer_pretty(out, &doc).is_ok()
    }

    fn build<'a>(&'a self, now: Timestamp, snapshot: &'a Snapshot, writer_dropped: u64) -> Document<'a> {
        let secs = |t: Option<Timestamp>| t.map(|t| t.as_micros() as f64 / 1e6);
        let torrents = snapshot
            .torrents
            .iter()
            .map(|s| {
                let c = self.torrents.get(&s.id.0);
                TorrentDoc {
                    torrent: s.id.0,
                    name: &s.name,
                    info_hash: s.info_hash.to_string(),
                    state: match s.state {
                        State::AwaitingMetadata => "awaiting_metadata",
                        State::Checking => "checking",
                        State::Active => "active",
                        State::Paused => "paused",
                        State::Stopped => "stopped",
                    },
                    size: s.total,
                    done: s.done,
                    downloaded: s.downloaded,
                    uploaded: s.uploaded,
                    wasted: s.wasted,
                    hash_failures: s.hash_failures,
                    pieces_verified: c.map_or(0, |c| c.pieces_verified),
                    pieces_failed: c.map_or(0, |c| c.pieces_failed),
                    peers: s.peers,
                    completed_at_s: secs(c.and_then(|c| c.completed_at)),
                    metadata_at_s: secs(c.and_then(|c| c.metadata_at)),
                    webseed_bytes: c.map_or(0, |c| c.webseed_bytes),
                    webseeds_given_up: c.map_or(0, |c| c.webseeds_given_up),
                    dht_nodes: s.dht.map(|(nodes, _)| nodes),
                }
            })
            .collect();
        let mut peers: Vec<(&u64, &PeerStats)> = self.peers.iter().collect();
        peers.sort_by_key(|(no, p)| (std::cmp::Reverse(p.bytes()), **no));
        let peers = PeerDocs(peers);
        let mut minutes: Vec<RateSample> = self.minutes.iter().copied().collect();
        if let Some((end, d, u, n)) = self.minute {
            minutes.push(RateSample { t: end, down: d / n.max(1), up: u / n.max(1) });
        }
        Document {
            schema: SCHEMA_VERSION,
            rill: env!("CARGO_PKG_VERSION"),
            duration_s: now.as_micros() as f64 / 1e6,
            totals: Totals {
                downloaded: snapshot.torrents.iter().map(|t| t.downloaded).sum(),
                uploaded: snapshot.torrents.iter().map(|t| t.uploaded).sum(),
                wasted: snapshot.torrents.iter().map(|t| t.wasted).sum(),
                hash_failures: self.hash_failures,
                peers_seen: self.peers.len() as u64 + self.others_count,
                events: self.events,
                events_dropped: self.engine_dropped + writer_dropped,
            },
            torrents,
            rates: Rates { recent: self.recent.iter().copied().collect(), minutes },
            connects: &self.connects,
            chokes: &self.chokes,
            latency: self.latency.summary(),
            trackers: &self.trackers,
            dht: &self.dht,
            utp: &self.utp,
            event_loop: &self.event_loop,
            peers,
            others: (self.others_count > 0).then(|| {
                let mut doc = peer_doc(None, &self.others, secs);
                doc.count = Some(self.others_count);
                doc
            }),
        }
    }
}

fn peer_doc(no: Option<u64>, p: &PeerStats, secs: impl Fn(Option<Timestamp>) -> Option<f64>) -> PeerDoc<'_> {
    PeerDoc {
        peer: no,
        count: None,
        addr: p.addr,
        torrent: p.torrent,
        transport: p.transport.map(|t| match t {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
        }),
        outgoing: p.outgoing,
        encrypted: p.encrypted,
        client: p.client.as_deref(),
        connected_at_s: secs(p.connected_at),
        closed_at_s: secs(p.closed_at),
        reason: p.reason,
        downloaded: p.downloaded,
        wasted: p.wasted,
        uploaded: p.uploaded,
        requests: p.requests,
        blocks: p.blocks,
        cancels_sent: p.cancels_sent,
        cancels_received: p.cancels_received,
        rejects_sent: p.rejects_sent,
        rejects_received: p.rejects_received,
        requests_timed_out: p.requests_timed_out,
        choked_us: p.choked_us,
        unchoked_us: p.unchoked_us,
        we_choked: p.we_choked,
        we_unchoked: p.we_unchoked,
        latency: p.latency.as_ref().and_then(Histogram::summary),
    }
}

#[derive(Serialize)]
struct Document<'a> {
    schema: u32,
    rill: &'static str,
    duration_s: f64,
    totals: Totals,
    torrents: Vec<TorrentDoc<'a>>,
    rates: Rates,
    connects: &'a Connects,
    chokes: &'a Chokes,
    latency: Option<Latency>,
    trackers: &'a BTreeMap<String, TrackerStats>,
    dht: &'a Dht,
    utp: &'a Utp,
    #[serde(rename = "loop")]
    event_loop: &'a LoopStats,
    peers: PeerDocs<'a>,
    others: Option<PeerDoc<'a>>,
}

/// The peers, busiest first, each made into a `PeerDoc` only as it is written.
struct PeerDocs<'a>(Vec<(&'a u64, &'a PeerStats)>);

impl Serialize for PeerDocs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let secs = |t: Option<Timestamp>| t.map(|t| t.as_micros() as f64 / 1e6);
        serializer.collect_seq(self.0.iter().map(|(no, p)| peer_doc(Some(**no), p, secs)))
    }
}

#[derive(Serialize)]
struct Totals {
    downloaded: u64,
    uploaded: u64,
    wasted: u64,
    hash_failures: u64,
    peers_seen: u64,
    events: u64,
    events_dropped: u64,
}

#[derive(Serialize)]
struct TorrentDoc<'a> {
    torrent: usize,
    name: &'a str,
    info_hash: String,
    state: &'static str,
    size: u64,
    done: u64,
    downloaded: u64,
    uploaded: u64,
    wasted: u64,
    hash_failures: u32,
    pieces_verified: u64,
    pieces_failed: u64,
    peers: usize,
    completed_at_s: Option<f64>,
    metadata_at_s: Option<f64>,
    webseed_bytes: u64,
    webseeds_given_up: u64,
    dht_nodes: Option<usize>,
}

#[derive(Serialize)]
struct Rates {
    recent: Vec<RateSample>,
    minutes: Vec<RateSample>,
}

#[derive(Serialize)]
struct PeerDoc<'a> {
    peer: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    addr: Option<SocketAddr>,
    torrent: Option<usize>,
    transport: Option<&'static str>,
    outgoing: bool,
    encrypted: bool,
    client: Option<&'a str>,
    connected_at_s: Option<f64>,
    closed_at_s: Option<f64>,
    reason: Option<&'static str>,
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
    latency: Option<Latency>,
}
