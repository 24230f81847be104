//! `--trace FILE` and `--stats-json FILE`: the engine's trace events as JSON Lines, and the statistics
//! document, written by one helper thread so the loop never waits on the disk.
//!
//! Owns: the JSON form of every `TraceEvent` (one object per line, `t` and `ev` first; docs/trace.md is the
//! reference, and a test checks every event against it), the header line with the schema version, the
//! `Recorder` the loop feeds each turn, and the `rill-trace` helper thread. The helper appends trace bytes
//! with positioned writes (`FileExt::write_all_at`) and replaces the stats document atomically (a
//! temporary beside it, then a rename). The loop serialises events into a chunk buffer; a full chunk (or
//! one a second old) goes to the helper through a bounded channel of `JOBS_QUEUED` jobs. If the helper
//! falls behind and the channel is full, the chunk's events are dropped and counted, and the next chunk
//! starts with a `dropped` event saying how many: memory never grows. Emptied chunks come back for reuse.
//! Must not: open files (`main` hands in an open file and a path), decide anything, or block the loop: the
//! only wait is at `finish`, at the end of the run.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::chunks::Chunks;
use super::stats::Stats;
use crate::engine::snapshot::Snapshot;
use crate::engine::trace::{TraceEvent, TraceKind, Transport};
use crate::engine::TorrentId;
use crate::peer::trace::SessionEvent;
use crate::peer::DropReason;
use crate::time::Timestamp;
use crate::tracker::Event as AnnounceEvent;

/// The trace's schema version, in its header line (and the stats document's). Bumped when an event or
/// field changes meaning or goes; new events and new fields do not bump it (readers skip what they do not
/// know).
pub const SCHEMA_VERSION: u32 = 1;
/// A chunk is handed to the helper once it holds this much.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Jobs waiting for the helper at most: with `CHUNK_BYTES`, the trace holds about 1 MiB of memory.
pub const JOBS_QUEUED: usize = 16;
/// A chunk that is not full is handed over after this long anyway, so the file follows the run.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// The stats document is rewritten this often (and at exit).
pub const STATS_EVERY: Duration = Duration::from_secs(5);

/// Work for the helper thread.
enum Job {
    /// Trace bytes to append.
    Append(Vec<u8>),
    /// A new stats document to put in place.
    Document(Chunks),
}

/// Why the recorder's helper reported failure at the end.
#[derive(Debug)]
pub struct RecordError {
    pub what: &'static str,
    pub error: io::Error,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot write the {}: {}", self.what, self.error)
    }
}

/// What the loop holds while recording: feed it every trace event, then `end_turn` once a turn.
pub struct Recorder {
    /// `--trace`: the chunk being filled, when tracing to a file.
    chunk: Option<Vec<u8>>,
    /// Events in `chunk`, and the count its `dropped` line reports (if it starts with one).
    chunk_events: u64,
    chunk_reported: u64,
    chunk_started: Option<Timestamp>,
    /// `--stats-json`: the aggregator.
    stats: Option<Box<Stats>>,
    next_stats_at: Timestamp,
    queue: Option<SyncSender<Job>>,
    spare: Receiver<Vec<u8>>,
    /// The stats document's buffer, back from the helper once written.
    doc_spare: Receiver<Chunks>,
    helper: Option<JoinHandle<Result<(), RecordError>>>,
    /// Events dropped because the helper was behind, not yet reported in the file.
    unreported: u64,
    /// Trace events dropped in all by the writer (the engine's own drops arrive as events).
    pub dropped: u64,
    /// Trace events handed to the helper.
    pub written: u64,
}

impl Recorder {
    /// Starts the `rill-trace` helper: trace lines go to `trace` (empty, open for writing), the stats
    /// document to `stats_path`. `torrents` names the torrents in the header and the document.
    pub fn start<F: FileExt + Send + 'static>(
        trace: Option<F>,
        stats_path: Option<PathBuf>,
        torrents: &[(TorrentId, String)],
    ) -> io::Result<Self> {
        let (queue, rx) = mpsc::sync_channel::<Job>(JOBS_QUEUED);
        let (spare_tx, spare) = mpsc::sync_channel::<Vec<u8>>(JOBS_QUEUED);
        let (doc_spare_tx, doc_spare) = mpsc::sync_channel::<Chunks>(1);
        let tracing = trace.is_some();
        let stats = stats_path.is_some().then(|| Box::new(Stats::new(torrents)));
        let helper = thread::Builder::new()
            .name("rill-trace".into())
            .spawn(move || run_helper(trace.as_ref(), stats_path, &rx, &spare_tx, &doc_spare_tx))?;
        let mut r = Recorder {
            chunk: tracing.then(|| Vec::with_capacity(CHUNK_BYTES + 1024)),
            chunk_events: 0,
            chunk_reported: 0,
            chunk_started: None,
            stats,
            next_stats_at: Timestamp::ZERO + STATS_EVERY,
            queue: Some(queue),
            spare,
            doc_spare,
            helper: Some(helper),
            unreported: 0,
            dropped: 0,
            written: 0,
        };
        r.header(torrents);
        Ok(r)
    }

    fn header(&mut self, torrents: &[(TorrentId, String)]) {
        #[derive(Serialize)]
        struct Torrent<'a> {
            torrent: usize,
            name: &'a str,
        }
        #[derive(Serialize)]
        struct Header<'a> {
            t: u64,
            ev: &'static str,
            schema: u32,
            rill: &'static str,
            clock: &'static str,
            torrents: Vec<Torrent<'a>>,
        }
        let Some(chunk) = self.chunk.as_mut() else {
            return;
        };
        let header = Header {
            t: 0,
            ev: "header",
            schema: SCHEMA_VERSION,
            rill: env!("CARGO_PKG_VERSION"),
            clock: "microseconds since rill started (monotonic)",
            torrents: torrents.iter().map(|(id, name)| Torrent { torrent: id.0, name }).collect(),
        };
        // Serialising plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *chunk, &header);
        chunk.push(b'\n');
    }

    /// One event from the engine.
    pub fn on_event(&mut self, event: &TraceEvent) {
        if let Some(stats) = self.stats.as_mut() {
            stats.on_event(event);
        }
        let Some(chunk) = self.chunk.as_mut() else {
            return;
        };
        if self.unreported > 0 {
            let count = std::mem::take(&mut self.unreported);
            let lost = TraceEvent { at: event.at, kind: TraceKind::Lost { count } };
            write_line(&Line { event: &lost, by_writer: true }, chunk);
            self.chunk_reported += count;
        }
        write_line(&Line { event, by_writer: false }, chunk);
        self.chunk_events += 1;
        let started = *self.chunk_started.get_or_insert(event.at);
        if chunk.len() >= CHUNK_BYTES || event.at - started >= FLUSH_EVERY {
            self.hand_over();
        }
    }

    /// Once a turn, after the turn's events: hands over a chunk a second old, closes the stats' rate
    /// sample, and rewrites the stats document when it is due (`snapshot` is called only then).
    pub fn end_turn(&mut self, now: Timestamp, snapshot: impl FnOnce() -> Snapshot) {
        if self.chunk_started.is_some_and(|s| now - s >= FLUSH_EVERY) {
            self.hand_over();
        }
        if let Some(stats) = self.stats.as_mut() {
            stats.end_turn();
            if now >= self.next_stats_at {
                self.next_stats_at = now + STATS_EVERY;
                let mut doc = self.doc_spare.try_recv().unwrap_or_default();
                stats.document_into(now, &snapshot(), self.dropped, &mut doc);
                if let Some(queue) = &self.queue {
                    // A full queue: this document is skipped; the next one comes in `STATS_EVERY`.
                    let _ = queue.try_send(Job::Document(doc));
                }
            }
        }
    }

    fn hand_over(&mut self) {
        self.chunk_started = None;
        let (Some(chunk), Some(queue)) = (self.chunk.as_mut(), &self.queue) else {
            return;
        };
        if chunk.is_empty() {
            return;
        }
        let next = self.spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK_BYTES + 1024));
        let full = std::mem::replace(chunk, next);
        match queue.try_send(Job::Append(full)) {
            Ok(()) => self.written += self.chunk_events,
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                // The disk is behind: these events are lost, and the next chunk says how many (with
                // those this chunk was to report).
                self.dropped += self.chunk_events;
                self.unreported += self.chunk_events + self.chunk_reported;
                if let Job::Append(mut v) = job {
                    v.clear();
                    *chunk = v;
                }
            }
        }
        self.chunk_events = 0;
        self.chunk_reported = 0;
    }

    /// The end of the run: writes what is left of the trace and the final stats document, and waits for
    /// the helper.
    pub fn finish(mut self, now: Timestamp, snapshot: &Snapshot) -> Result<(), RecordError> {
        if let Some(chunk) = self.chunk.as_mut() {
            if self.unreported > 0 {
                let count = std::mem::take(&mut self.unreported);
                let lost = TraceEvent { at: now, kind: TraceKind::Lost { count } };
                write_line(&Line { event: &lost, by_writer: true }, chunk);
            }
        }
        let chunk = self.chunk.take().filter(|c| !c.is_empty());
        let doc = self.stats.as_mut().map(|s| {
            s.end_turn();
            let mut doc = self.doc_spare.try_recv().unwrap_or_default();
            s.document_into(now, snapshot, self.dropped, &mut doc);
            doc
        });
        if let Some(queue) = self.queue.take() {
            if let Some(chunk) = chunk {
                if queue.send(Job::Append(chunk)).is_ok() {
                    self.written += self.chunk_events;
                }
            }
            if let Some(doc) = doc {
                let _ = queue.send(Job::Document(doc));
            }
        }
        match self.helper.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(RecordError { what: "trace", error: io::Error::other("the writer thread failed") }),
            None => Ok(()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

/// The helper: appends every trace chunk at the end of what it wrote (the offset is its own) and hands the
/// emptied chunk back; writes each stats document atomically. After a failed write it keeps draining and
/// reports the first error at the end.
fn run_helper<F: FileExt>(
    trace: Option<&F>,
    stats_path: Option<PathBuf>,
    rx: &Receiver<Job>,
    spare: &SyncSender<Vec<u8>>,
    doc_spare: &SyncSender<Chunks>,
) -> Result<(), RecordError> {
    let mut offset = 0u64;
    let mut failed: Option<RecordError> = None;
    for job in rx {
        match job {
            Job::Append(mut chunk) => {
                if let (Some(file), true) = (trace, failed.is_none()) {
                    match file.write_all_at(&chunk, offset) {
                        Ok(()) => offset += chunk.len() as u64,
                        Err(error) => failed = Some(RecordError { what: "trace", error }),
                    }
                }
                chunk.clear();
                let _ = spare.try_send(chunk);
            }
            Job::Document(mut doc) => {
                if let (Some(path), true) = (&stats_path, failed.is_none()) {
                    if let Err(error) = crate::storage::files::write_parts_atomically(path, doc.parts()) {
                        failed = Some(RecordError { what: "stats document", error });
                    }
                }
                doc.clear();
                let _ = doc_spare.try_send(doc);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Serialises one event as a JSON object and a newline.
pub fn write_line(line: &Line<'_>, out: &mut Vec<u8>) {
    // Serialising plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, line);
    out.push(b'\n');
}

/// One event as the trace writes it (`by_writer`: a `dropped` event of the writer's own, not the engine's).
pub struct Line<'a> {
    pub event: &'a TraceEvent,
    pub by_writer: bool,
}

/// The short, stable name of a drop reason (its `Display` text goes in `detail`).
pub fn reason_code(reason: &DropReason) -> &'static str {
    match reason {
        DropReason::ConnectTimedOut => "connect_timed_out",
        DropReason::ConnectFailed(_) => "connect_failed",
        DropReason::HandshakeTimedOut => "handshake_timed_out",
        DropReason::ClosedByPeer => "closed_by_peer",
        DropReason::Silent => "silent",
        DropReason::Io(_) => "io",
        DropReason::Misbehaved(_) => "misbehaved",
        DropReason::Banned => "banned",
        DropReason::NotNeeded => "not_needed",
        DropReason::Shutdown => "shutdown",
        DropReason::EncryptionPolicy => "encryption_policy",
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Utp => "utp",
    }
}

fn announce_event_name(e: AnnounceEvent) -> &'static str {
    match e {
        AnnounceEvent::None => "none",
        AnnounceEvent::Started => "started",
        AnnounceEvent::Completed => "completed",
        AnnounceEvent::Stopped => "stopped",
    }
}

/// The `ev` name of an event (the stats aggregator and tests use it too).
pub fn event_name(kind: &TraceKind) -> &'static str {
    match kind {
        TraceKind::Lost { .. } => "dropped",
        TraceKind::ConnectAttempt { .. } => "connect_attempt",
        TraceKind::Accepted { .. } => "accepted",
        TraceKind::Connected { .. } => "connected",
        TraceKind::ConnectFailed { .. } => "connect_failed",
        TraceKind::Session { event, .. } => match event {
            SessionEvent::Handshake { .. } => "handshake",
            SessionEvent::Extended { .. } => "extended",
            SessionEvent::Bitfield { .. } => "bitfield",
            SessionEvent::Have { .. } => "have",
            SessionEvent::PeerChoke(true) | SessionEvent::AmChoke(true) => "choke",
            SessionEvent::PeerChoke(false) | SessionEvent::AmChoke(false) => "unchoke",
            SessionEvent::PeerInterested(true) | SessionEvent::AmInterested(true) => "interested",
            SessionEvent::PeerInterested(false) | SessionEvent::AmInterested(false) => "not_interested",
            SessionEvent::Request(_) => "request",
            SessionEvent::Block { .. } => "block",
            SessionEvent::CancelSent(_) | SessionEvent::CancelReceived(_) => "cancel",
            SessionEvent::RejectSent(_) | SessionEvent::RejectReceived(_) => "reject",
            SessionEvent::RequestsTimedOut { .. } => "requests_timed_out",
        },
        TraceKind::RateSample { .. } => "rate",
        TraceKind::PeerDropped { .. } => "peer_dropped",
        TraceKind::TorrentRate { .. } => "torrent_rate",
        TraceKind::Loop { .. } => "loop",
        TraceKind::PieceVerified { .. } => "piece_verified",
        TraceKind::PieceFailed { .. } => "piece_failed",
        TraceKind::Completed { .. } => "completed",
        TraceKind::TrackerRequest { .. } => "tracker_request",
        TraceKind::TrackerResponse { .. } => "tracker_response",
        TraceKind::TrackerError { .. } => "tracker_error",
        TraceKind::MetadataReceived { .. } => "metadata",
        TraceKind::DhtLookup { .. } => "dht_lookup",
        TraceKind::DhtPeers { .. } => "dht_peers",
        TraceKind::DhtLookupDone { .. } => "dht_lookup_done",
        TraceKind::WebSeedData { .. } => "webseed_data",
        TraceKind::WebSeedGaveUp { .. } => "webseed_gave_up",
    }
}

/// Lower-case hex of a peer id (it is binary).
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("t", &e.at.as_micros())?;
        m.serialize_entry("ev", event_name(&e.kind))?;
        match &e.kind {
            TraceKind::Lost { count } => {
                m.serialize_entry("count", count)?;
                m.serialize_entry("by", if self.by_writer { "writer" } else { "engine" })?;
            }
            TraceKind::ConnectAttempt { peer, torrent, addr, transport, encrypted } => {
                m.serialize_entry("peer", &peer.0)?;
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("addr", addr)?;
                m.serialize_entry("transport", transport_name(*transport))?;
                m.serialize_entry("encrypted", encrypted)?;
            }
            TraceKind::Accepted { peer, addr, transport } => {
                m.serialize_entry("peer", &peer.0)?;
                m.serialize_entry("addr", addr)?;
                m.serialize_entry("transport", transport_name(*transport))?;
            }
            TraceKind::Connected { peer } => m.serialize_entry("peer", &peer.0)?,
            TraceKind::ConnectFailed { peer, reason } | TraceKind::PeerDropped { peer, reason, .. } => {
                m.serialize_entry("peer", &peer.0)?;
                m.serialize_entry("reason", reason_code(reason))?;
                m.serialize_entry("detail", &Shown(reason))?;
                if let TraceKind::PeerDropped { downloaded, uploaded, .. } = &e.kind {
                    m.serialize_entry("downloaded", downloaded)?;
                    m.serialize_entry("uploaded", uploaded)?;
                }
            }
            TraceKind::Session { peer, torrent, event } => {
                m.serialize_entry("peer", &peer.0)?;
                m.serialize_entry("torrent", &torrent.0)?;
                session_fields(&mut m, event)?;
            }
            TraceKind::RateSample { peer, down, up, in_flight, target } => {
                m.serialize_entry("peer", &peer.0)?;
                m.serialize_entry("down", down)?;
                m.serialize_entry("up", up)?;
                m.serialize_entry("in_flight", in_flight)?;
                m.serialize_entry("target", target)?;
            }
            TraceKind::TorrentRate { torrent, down, up, peers } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("down", down)?;
                m.serialize_entry("up", up)?;
                m.serialize_entry("peers", peers)?;
            }
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
                m.serialize_entry("turns", turns)?;
                m.serialize_entry("longest_turn_us", longest_turn_us)?;
                m.serialize_entry("disk_pending", disk_pending)?;
                m.serialize_entry("write_calls", write_calls)?;
                m.serialize_entry("bytes_written", bytes_written)?;
                m.serialize_entry("read_calls", read_calls)?;
                m.serialize_entry("pieces_hashed", pieces_hashed)?;
                m.serialize_entry("bytes_read_back", bytes_read_back)?;
            }
            TraceKind::PieceVerified { torrent, piece } | TraceKind::PieceFailed { torrent, piece } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("piece", piece)?;
            }
            TraceKind::Completed { torrent } | TraceKind::DhtLookup { torrent } => {
                m.serialize_entry("torrent", &torrent.0)?
            }
            TraceKind::TrackerRequest { torrent, url, event } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("url", url)?;
                m.serialize_entry("event", announce_event_name(*event))?;
            }
            TraceKind::TrackerResponse { torrent, url, peers, seeders, leechers } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("url", url)?;
                m.serialize_entry("peers", peers)?;
                m.serialize_entry("seeders", seeders)?;
                m.serialize_entry("leechers", leechers)?;
            }
            TraceKind::TrackerError { torrent, url, message, warning } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("url", url)?;
                m.serialize_entry("message", message)?;
                m.serialize_entry("warning", warning)?;
            }
            TraceKind::MetadataReceived { torrent, size, files, peers } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("size", size)?;
                m.serialize_entry("files", files)?;
                m.serialize_entry("peers", peers)?;
            }
            TraceKind::DhtPeers { torrent, count } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("count", count)?;
            }
            TraceKind::DhtLookupDone { torrent, announced } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("announced", announced)?;
            }
            TraceKind::WebSeedData { torrent, bytes } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("bytes", bytes)?;
            }
            TraceKind::WebSeedGaveUp { torrent, url, why } => {
                m.serialize_entry("torrent", &torrent.0)?;
                m.serialize_entry("url", url)?;
                m.serialize_entry("why", why)?;
            }
        }
        m.end()
    }
}

/// A `Display` value written as a JSON string without an intermediate `String`.
struct Shown<'a, T: std::fmt::Display>(&'a T);

impl<T: std::fmt::Display> Serialize for Shown<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

fn block_fields<M: SerializeMap>(m: &mut M, b: &crate::geometry::BlockRef) -> Result<(), M::Error> {
    m.serialize_entry("piece", &b.piece)?;
    m.serialize_entry("offset", &b.offset)?;
    m.serialize_entry("len", &b.len)
}

fn session_fields<M: SerializeMap>(m: &mut M, event: &SessionEvent) -> Result<(), M::Error> {
    use crate::wire::handshake::{RESERVED_DHT, RESERVED_EXTENSION_PROTOCOL, RESERVED_FAST};
    let by = |peer: bool| if peer { "peer" } else { "us" };
    match event {
        SessionEvent::Handshake { peer_id, reserved } => {
            let bit = |(byte, mask): (usize, u8)| reserved[byte] & mask != 0;
            m.serialize_entry("peer_id", &Shown(&Hex(peer_id)))?;
            m.serialize_entry("client", &super::client::client_name(peer_id))?;
            m.serialize_entry("fast", &bit(RESERVED_FAST))?;
            m.serialize_entry("extension_protocol", &bit(RESERVED_EXTENSION_PROTOCOL))?;
            m.serialize_entry("dht", &bit(RESERVED_DHT))
        }
        SessionEvent::Extended { reqq, ut_metadata, ut_pex, upload_only } => {
            m.serialize_entry("reqq", reqq)?;
            m.serialize_entry("ut_metadata", ut_metadata)?;
            m.serialize_entry("ut_pex", ut_pex)?;
            m.serialize_entry("upload_only", upload_only)
        }
        SessionEvent::Bitfield { pieces } => m.serialize_entry("pieces", pieces),
        SessionEvent::Have { piece } => m.serialize_entry("piece", piece),
        SessionEvent::PeerChoke(_) | SessionEvent::PeerInterested(_) => m.serialize_entry("by", "peer"),
        SessionEvent::AmChoke(_) | SessionEvent::AmInterested(_) => m.serialize_entry("by", "us"),
        SessionEvent::Request(b) => block_fields(m, b),
        SessionEvent::Block { block, latency, fresh } => {
            block_fields(m, block)?;
            m.serialize_entry("latency_us", &u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))?;
            m.serialize_entry("fresh", fresh)
        }
        SessionEvent::CancelSent(b) | SessionEvent::CancelReceived(b) => {
            block_fields(m, b)?;
            m.serialize_entry("by", by(matches!(event, SessionEvent::CancelReceived(_))))
        }
        SessionEvent::RejectSent(b) | SessionEvent::RejectReceived(b) => {
            block_fields(m, b)?;
            m.serialize_entry("by", by(matches!(event, SessionEvent::RejectReceived(_))))
        }
        SessionEvent::RequestsTimedOut { count } => m.serialize_entry("count", count),
    }
}

#[cfg(test)]
mod tests;
