use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

use super::*;
use crate::geometry::BlockRef;
use crate::swarm::PeerNo;

/// Events and their fields as docs/trace.md lists them (each `### \`name\`` under `## Events`, each table
/// row's first cell), with the `t` and `ev` every line has.
pub(crate) fn documented_events(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut events = BTreeMap::new();
    let mut in_events = false;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            in_events = h.trim() == "Events";
            current = None;
            continue;
        }
        if !in_events {
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            let name = h.trim().trim_matches('`').to_string();
            events.insert(name.clone(), ["t", "ev"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
            current = Some(name);
        } else if let (Some(name), Some(row)) = (&current, line.strip_prefix("| `")) {
            let field = row.split('`').next().unwrap_or("").to_string();
            events.get_mut(name).unwrap().insert(field);
        }
    }
    events
}

const DOC: &str = include_str!("../../../docs/trace.md");

fn block() -> BlockRef {
    BlockRef { piece: 3, offset: 16384, len: 16384 }
}

/// One of every event the engine can record.
fn every_event() -> Vec<TraceKind> {
    let (peer, torrent) = (PeerNo(7), TorrentId(0));
    let addr: SocketAddr = "[::1]:6881".parse().unwrap();
    let session = |event| TraceKind::Session { peer, torrent, event };
    let mut peer_id = *b"-LT2080-abcdefghijkl";
    peer_id[19] = 0xff;
    vec![
        TraceKind::Lost { count: 3 },
        TraceKind::ConnectAttempt { peer, torrent, addr, transport: Transport::Utp, encrypted: true },
        TraceKind::Accepted { peer, addr, transport: Transport::Tcp },
        TraceKind::Connected { peer },
        TraceKind::ConnectFailed { peer, reason: DropReason::ConnectFailed(io::ErrorKind::ConnectionRefused) },
        session(SessionEvent::Handshake { peer_id, reserved: [0, 0, 0, 0, 0, 0x10, 0, 0x05] }),
        session(SessionEvent::Extended { reqq: Some(500), ut_metadata: true, ut_pex: false, upload_only: false }),
        session(SessionEvent::Bitfield { pieces: 12 }),
        session(SessionEvent::Have { piece: 4 }),
        session(SessionEvent::PeerChoke(true)),
        session(SessionEvent::AmChoke(false)),
        session(SessionEvent::PeerInterested(true)),
        session(SessionEvent::AmInterested(false)),
        session(SessionEvent::Request(block())),
        session(SessionEvent::Block { block: block(), latency: Duration::from_micros(1234), fresh: false }),
        session(SessionEvent::CancelSent(block())),
        session(SessionEvent::CancelReceived(block())),
        session(SessionEvent::RejectSent(block())),
        session(SessionEvent::RejectReceived(block())),
        session(SessionEvent::RequestsTimedOut { count: 2 }),
        TraceKind::RateSample { peer, down: 100, up: 50, in_flight: 8, target: 32 },
        TraceKind::PeerDropped { peer, reason: DropReason::ClosedByPeer, downloaded: 10, uploaded: 20 },
        TraceKind::TorrentRate { torrent, down: 1, up: 2, peers: 3 },
        TraceKind::Loop {
            turns: 900,
            longest_turn_us: 1500,
            disk_pending: 3,
            write_calls: 10,
            bytes_written: 1 << 20,
            read_calls: 4,
            pieces_hashed: 2,
            bytes_read_back: 16384,
        },
        TraceKind::PieceVerified { torrent, piece: 1 },
        TraceKind::PieceFailed { torrent, piece: 2 },
        TraceKind::Completed { torrent },
        TraceKind::TrackerRequest { torrent, url: "http://t/announce".into(), event: AnnounceEvent::Started },
        TraceKind::TrackerResponse {
            torrent,
            url: "http://t/announce".into(),
            peers: 5,
            seeders: Some(1),
            leechers: None,
        },
        TraceKind::TrackerError { torrent, url: "udp://t:1".into(), message: "timed out \"x\"".into(), warning: false },
        TraceKind::MetadataReceived { torrent, size: 1 << 20, files: 2, peers: 3 },
        TraceKind::DhtLookup { torrent },
        TraceKind::DhtPeers { torrent, count: 9 },
        TraceKind::DhtLookupDone { torrent, announced: 8 },
        TraceKind::WebSeedData { torrent, bytes: 4096 },
        TraceKind::WebSeedGaveUp { torrent, url: "http://w/f".into(), why: "404".into() },
    ]
}

fn json_line(kind: TraceKind) -> serde_json::Value {
    let event = TraceEvent { at: Timestamp::from_micros(42), kind };
    let mut out = Vec::new();
    write_line(&Line { event: &event, by_writer: false }, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line per event");
    serde_json::from_slice(&out).expect("each line is JSON")
}

#[test]
fn every_event_has_exactly_the_fields_docs_trace_md_lists() {
    let documented = documented_events(DOC);
    assert!(documented.len() > 30, "the doc lists the events: {documented:?}");
    let mut produced = BTreeSet::new();
    for kind in every_event() {
        let v = json_line(kind);
        let obj = v.as_object().unwrap();
        let name = obj["ev"].as_str().unwrap().to_string();
        assert_eq!(obj["t"], 42);
        let fields: BTreeSet<String> = obj.keys().cloned().collect();
        let doc = documented.get(&name).unwrap_or_else(|| panic!("event `{name}` is not in docs/trace.md"));
        assert_eq!(&fields, doc, "fields of `{name}` differ from docs/trace.md");
        produced.insert(name);
    }
    produced.insert("header".into());
    let listed: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(produced, listed, "docs/trace.md lists an event rill never writes, or the reverse");
}

#[test]
fn handshake_line_decodes_the_client_and_reserved_bits() {
    let v = json_line(every_event().swap_remove(5));
    assert_eq!(v["ev"], "handshake");
    assert_eq!(v["client"], "libtorrent 2.0.8.0");
    assert_eq!(v["peer_id"], "2d4c54323038302d6162636465666768696a6bff");
    assert_eq!(
        (v["fast"].as_bool(), v["extension_protocol"].as_bool(), v["dht"].as_bool()),
        (Some(true), Some(true), Some(true))
    );
}

#[test]
fn drop_reasons_have_a_code_and_words() {
    let v = json_line(every_event().swap_remove(4));
    assert_eq!(
        (v["reason"].as_str(), v["detail"].as_str()),
        (Some("connect_failed"), Some("connect failed: connection refused"))
    );
}

/// (gate open, bytes written), and the condition the writes wait on.
type Gate = (Mutex<(bool, Vec<u8>)>, Condvar);

/// A file whose writes wait until the test opens the gate, then land in memory.
#[derive(Clone, Default)]
struct GatedFile {
    state: Arc<Gate>,
}

impl GatedFile {
    fn open(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().unwrap().0 = true;
        cv.notify_all();
    }
    fn contents(&self) -> Vec<u8> {
        self.state.0.lock().unwrap().1.clone()
    }
}

impl FileExt for GatedFile {
    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
        Ok(0)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let (lock, cv) = &*self.state;
        let mut g = cv.wait_while(lock.lock().unwrap(), |(open, _)| !*open).unwrap();
        let end = offset as usize + buf.len();
        if g.1.len() < end {
            g.1.resize(end, 0);
        }
        g.1[offset as usize..end].copy_from_slice(buf);
        Ok(buf.len())
    }
}

fn parse_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn recorder_writes_a_header_then_events_in_order() {
    let file = GatedFile::default();
    file.open();
    let mut r = Recorder::start(Some(file.clone()), None, &[(TorrentId(0), "a \"name\"".into())]).unwrap();
    for piece in 0..1000 {
        r.on_event(&TraceEvent {
            at: Timestamp::from_micros(piece),
            kind: TraceKind::PieceVerified { torrent: TorrentId(0), piece: piece as u32 },
        });
    }
    r.finish(Timestamp::from_secs(1), &Snapshot::default()).unwrap();
    let lines = parse_lines(&file.contents());
    assert_eq!(lines.len(), 1001);
    assert_eq!(
        (lines[0]["ev"].as_str(), lines[0]["schema"].as_u64()),
        (Some("header"), Some(u64::from(SCHEMA_VERSION)))
    );
    assert_eq!(lines[0]["torrents"][0]["name"], "a \"name\"");
    for (i, line) in lines[1..].iter().enumerate() {
        assert_eq!((line["ev"].as_str(), line["piece"].as_u64()), (Some("piece_verified"), Some(i as u64)));
    }
}

#[test]
fn recorder_drops_and_counts_when_the_disk_is_behind_and_never_blocks() {
    let file = GatedFile::default();
    let mut r = Recorder::start(Some(file.clone()), None, &[]).unwrap();
    // The helper is stuck on its first write: the queue fills, and later chunks are dropped, not waited for.
    let per_chunk_guess = CHUNK_BYTES / 60;
    let total = (JOBS_QUEUED + 6) * per_chunk_guess * 2;
    for i in 0..total {
        let kind = TraceKind::RateSample { peer: PeerNo(i as u64), down: 1, up: 2, in_flight: 3, target: 4 };
        r.on_event(&TraceEvent { at: Timestamp::from_micros(i as u64), kind });
    }
    let dropped = r.dropped;
    assert!(dropped > 0, "a full queue drops events");
    assert!(r.written + dropped <= total as u64);
    // The disk catches up: later events are written again, after a `dropped` line with the count.
    file.open();
    // Once the helper has written every chunk it took, its queue is empty again (bounded wait: 10 s).
    let rates = |f: &GatedFile| parse_lines(&f.contents()).iter().filter(|l| l["ev"] == "rate").count() as u64;
    for _ in 0..10_000 {
        if rates(&file) >= r.written {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let after = TraceEvent { at: Timestamp::from_secs(10), kind: TraceKind::Completed { torrent: TorrentId(0) } };
    r.on_event(&after);
    let (written_before_finish, dropped_total) = (r.written, r.dropped);
    assert_eq!(dropped_total, dropped, "nothing more is dropped once the disk keeps up");
    r.finish(Timestamp::from_secs(11), &Snapshot::default()).unwrap();
    let lines = parse_lines(&file.contents());
    let reported: u64 = lines
        .iter()
        .filter(|l| l["ev"] == "dropped")
        .inspect(|l| assert_eq!(l["by"], "writer"))
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, dropped, "the file says how many were dropped");
    let rates = lines.iter().filter(|l| l["ev"] == "rate").count() as u64;
    assert_eq!(rates + dropped, total as u64, "every event is either in the file or counted as dropped");
    assert_eq!(lines.last().unwrap()["ev"], "completed");
    assert!(written_before_finish <= total as u64 + 2);
}

#[test]
fn recorder_replaces_the_stats_document_atomically() {
    let dir = crate::sim::TempDir::new("stats-doc");
    let path = dir.join("stats.json");
    let mut r = Recorder::start::<GatedFile>(None, Some(path.clone()), &[(TorrentId(0), "x".into())]).unwrap();
    r.on_event(&TraceEvent {
        at: Timestamp::from_secs(1),
        kind: TraceKind::PieceFailed { torrent: TorrentId(0), piece: 1 },
    });
    r.end_turn(Timestamp::from_secs(6), Snapshot::default);
    r.finish(Timestamp::from_secs(7), &Snapshot::default()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(v["schema"], SCHEMA_VERSION);
    assert_eq!(v["totals"]["hash_failures"], 1);
    assert_eq!(v["duration_s"], 7.0);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("stats.json")], "no temporary file is left behind");
}
