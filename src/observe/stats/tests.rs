use std::time::Duration;

use super::*;
use crate::engine::snapshot::Snapshot;
use crate::geometry::BlockRef;
use crate::peer::DropReason;
use crate::swarm::PeerNo;

// ---- histogram ------------------------------------------------------------------------------------

#[test]
fn histogram_small_values_are_exact() {
    let mut h = Histogram::default();
    for v in [5, 5, 5, 1, 7] {
        h.record(v);
    }
    assert_eq!(h.percentile(0.5), Some(5));
    assert_eq!(h.percentile(0.0), Some(1));
    assert_eq!(h.percentile(1.0), Some(7));
}

#[test]
fn histogram_percentiles_are_within_the_bucket_precision() {
    let mut h = Histogram::default();
    for v in 1..=100_000u64 {
        h.record(v);
    }
    for (p, want) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
        let got = h.percentile(p).unwrap() as f64;
        assert!((got - want).abs() / want <= 0.0625, "p{p}: {got} vs {want}");
    }
    assert_eq!(h.count(), 100_000);
    assert_eq!(h.percentile(1.0), Some(100_000), "never above the largest sample");
}

#[test]
fn histogram_of_two_clusters_puts_p50_and_p99_in_each() {
    let mut h = Histogram::default();
    for _ in 0..90 {
        h.record(2_000); // 2 ms
    }
    for _ in 0..10 {
        h.record(400_000); // 400 ms
    }
    let p50 = h.percentile(0.5).unwrap();
    let p99 = h.percentile(0.99).unwrap();
    assert!((1_875..=2_125).contains(&p50), "{p50}");
    assert!((375_000..=425_000).contains(&p99), "{p99}");
}

#[test]
fn histogram_huge_values_land_in_the_last_bucket_and_merge_adds() {
    let mut a = Histogram::default();
    a.record(u64::MAX);
    let mut b = Histogram::default();
    b.record(10);
    b.merge(&a);
    assert_eq!(b.count(), 2);
    assert_eq!(b.percentile(1.0), Some(bucket_value(HISTOGRAM_BUCKETS - 1)));
    for i in 0..HISTOGRAM_BUCKETS {
        assert_eq!(bucket_of(bucket_value(i)), i, "bucket {i}'s value falls in it");
    }
}

// ---- aggregator -----------------------------------------------------------------------------------

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn feed(s: &mut Stats, ms: u64, kind: TraceKind) {
    s.on_event(&TraceEvent { at: at(ms), kind });
}

fn block(piece: u32) -> BlockRef {
    BlockRef { piece, offset: 0, len: 16384 }
}

fn doc(s: &Stats, ms: u64) -> serde_json::Value {
    serde_json::from_slice(&s.document(at(ms), &Snapshot::default(), 0)).unwrap()
}

fn connect(s: &mut Stats, no: u64, ms: u64) {
    let addr = SocketAddr::from(([127, 0, 0, 1], 6000 + no as u16));
    let kind = TraceKind::ConnectAttempt {
        peer: PeerNo(no),
        torrent: TorrentId(0),
        addr,
        transport: Transport::Tcp,
        encrypted: false,
    };
    feed(s, ms, kind);
    feed(s, ms + 1, TraceKind::Connected { peer: PeerNo(no) });
}

fn session(s: &mut Stats, no: u64, ms: u64, event: SessionEvent) {
    feed(s, ms, TraceKind::Session { peer: PeerNo(no), torrent: TorrentId(0), event });
}

#[test]
fn aggregator_counts_bytes_latency_chokes_and_reasons_per_peer() {
    let mut s = Stats::new(&[(TorrentId(0), "t".into())]);
    connect(&mut s, 1, 0);
    connect(&mut s, 2, 0);
    feed(
        &mut s,
        5,
        TraceKind::ConnectAttempt {
            peer: PeerNo(3),
            torrent: TorrentId(0),
            addr: "[::1]:1".parse().unwrap(),
            transport: Transport::Utp,
            encrypted: true,
        },
    );
    feed(
        &mut s,
        6,
        TraceKind::ConnectFailed {
            peer: PeerNo(3),
            reason: DropReason::ConnectFailed(std::io::ErrorKind::ConnectionRefused),
        },
    );
    session(&mut s, 1, 10, SessionEvent::PeerChoke(false));
    for i in 0..10 {
        session(&mut s, 1, 20, SessionEvent::Request(block(i)));
        let latency = Duration::from_millis(if i < 9 { 10 } else { 200 });
        session(&mut s, 1, 30, SessionEvent::Block { block: block(i), latency, fresh: true });
    }
    session(&mut s, 2, 40, SessionEvent::Block { block: block(0), latency: Duration::from_millis(50), fresh: false });
    session(&mut s, 2, 41, SessionEvent::PeerChoke(true));
    feed(&mut s, 1000, TraceKind::RateSample { peer: PeerNo(2), down: 0, up: 1000, in_flight: 0, target: 4 });
    feed(
        &mut s,
        1500,
        TraceKind::PeerDropped { peer: PeerNo(2), reason: DropReason::ClosedByPeer, downloaded: 16384, uploaded: 1500 },
    );
    let v = doc(&s, 2000);
    assert_eq!(v["connects"]["attempts"], 3);
    assert_eq!(v["connects"]["attempts_utp"], 1);
    assert_eq!(v["connects"]["connected"], 2);
    assert_eq!(v["connects"]["failed"]["connect_failed"], 1);
    assert_eq!(v["connects"]["dropped"]["closed_by_peer"], 1);
    assert_eq!(v["chokes"]["choked_us"], 1);
    assert_eq!(v["chokes"]["unchoked_us"], 1);
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "a peer that never connected is only counted");
    let p1 = &peers[0];
    assert_eq!((p1["peer"].as_u64(), p1["downloaded"].as_u64()), (Some(1), Some(163_840)));
    assert_eq!((p1["requests"].as_u64(), p1["blocks"].as_u64()), (Some(10), Some(10)));
    assert_eq!(p1["latency"]["count"], 10);
    let p50 = p1["latency"]["p50_us"].as_u64().unwrap();
    let p99 = p1["latency"]["p99_us"].as_u64().unwrap();
    assert!((9_375..=10_625).contains(&p50), "{p50}");
    assert!((187_500..=212_500).contains(&p99), "{p99}");
    let p2 = &peers[1];
    assert_eq!((p2["wasted"].as_u64(), p2["uploaded"].as_u64()), (Some(16384), Some(1500)));
    assert_eq!(p2["reason"], "closed_by_peer");
    assert_eq!(p2["closed_at_s"], 1.5);
    assert_eq!(v["latency"]["count"], 11);
    assert_eq!(v["others"], serde_json::Value::Null);
}

#[test]
fn aggregator_keeps_the_busiest_closed_peers_and_sums_the_rest() {
    let mut s = Stats::new(&[]);
    let n = MAX_CLOSED_PEERS as u64 + 50;
    for no in 1..=n {
        connect(&mut s, no, no);
        // Peer `no` sends `no` blocks' worth, so the first 50 are the least busy.
        for b in 0..no.min(3) {
            session(
                &mut s,
                no,
                no,
                SessionEvent::Block { block: block(b as u32), latency: Duration::from_millis(1), fresh: true },
            );
        }
        let kind =
            TraceKind::PeerDropped { peer: PeerNo(no), reason: DropReason::Shutdown, downloaded: 0, uploaded: no };
        feed(&mut s, no + 1, kind);
    }
    assert!(s.peers.len() <= MAX_CLOSED_PEERS);
    let v = doc(&s, 5000);
    assert_eq!(v["peers"].as_array().unwrap().len(), MAX_CLOSED_PEERS);
    assert_eq!(v["others"]["count"], 50);
    assert_eq!(v["totals"]["peers_seen"], n);
    let kept: u64 = v["peers"].as_array().unwrap().iter().map(|p| p["uploaded"].as_u64().unwrap()).sum();
    let others = v["others"]["uploaded"].as_u64().unwrap();
    assert_eq!(kept + others, n * (n + 1) / 2, "no byte is lost by summing");
    assert!(v["peers"].as_array().unwrap().iter().all(|p| p["peer"].as_u64().unwrap() > 50), "the busiest stay");
}

#[test]
fn aggregator_rates_keep_seconds_then_minutes_bounded() {
    let mut s = Stats::new(&[(TorrentId(0), "t".into())]);
    let seconds = RECENT_SECONDS as u64 + 3 * 60;
    for sec in 1..=seconds {
        // Two torrents' samples in one turn make one second.
        feed(&mut s, sec * 1000, TraceKind::TorrentRate { torrent: TorrentId(0), down: 100, up: 1, peers: 1 });
        feed(&mut s, sec * 1000, TraceKind::TorrentRate { torrent: TorrentId(1), down: 50, up: 1, peers: 1 });
        s.end_turn();
    }
    let v = doc(&s, seconds * 1000);
    let recent = v["rates"]["recent"].as_array().unwrap();
    assert_eq!(recent.len(), RECENT_SECONDS);
    assert_eq!((recent[0]["down"].as_u64(), recent[0]["up"].as_u64()), (Some(150), Some(2)));
    assert_eq!(recent.last().unwrap()["t"], seconds);
    let minutes = v["rates"]["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 4, "{minutes:?}");
    assert!(minutes.iter().all(|m| m["down"] == 150), "a minute is the average of its seconds");
    // A day and more of minutes stays bounded.
    for sec in seconds + 1..=seconds + (MINUTES_KEPT as u64 + 10) * 60 {
        feed(&mut s, sec * 1000, TraceKind::TorrentRate { torrent: TorrentId(0), down: 1, up: 0, peers: 1 });
        s.end_turn();
    }
    assert!(s.minutes.len() <= MINUTES_KEPT);
    assert_eq!(s.recent.len(), RECENT_SECONDS);
}

#[test]
fn aggregator_counts_trackers_dht_and_failed_pieces() {
    let mut s = Stats::new(&[(TorrentId(0), "t".into())]);
    let url = "http://127.0.0.1:1/announce".to_string();
    let t = TorrentId(0);
    feed(&mut s, 0, TraceKind::TrackerRequest { torrent: t, url: url.clone(), event: crate::tracker::Event::Started });
    feed(
        &mut s,
        1,
        TraceKind::TrackerResponse { torrent: t, url: url.clone(), peers: 3, seeders: None, leechers: None },
    );
    feed(&mut s, 2, TraceKind::TrackerRequest { torrent: t, url: url.clone(), event: crate::tracker::Event::None });
    feed(
        &mut s,
        3,
        TraceKind::TrackerError { torrent: t, url: url.clone(), message: "refused".into(), warning: false },
    );
    feed(&mut s, 4, TraceKind::DhtLookup { torrent: t });
    feed(&mut s, 5, TraceKind::DhtPeers { torrent: t, count: 7 });
    feed(&mut s, 6, TraceKind::DhtLookupDone { torrent: t, announced: 8 });
    feed(&mut s, 7, TraceKind::PieceFailed { torrent: t, piece: 3 });
    feed(&mut s, 8, TraceKind::PieceVerified { torrent: t, piece: 3 });
    let v = doc(&s, 10);
    let tr = &v["trackers"][&url];
    assert_eq!((tr["requests"].as_u64(), tr["responses"].as_u64(), tr["errors"].as_u64()), (Some(2), Some(1), Some(1)));
    assert_eq!((tr["peers"].as_u64(), tr["last_error"].as_str()), (Some(3), Some("refused")));
    assert_eq!((v["dht"]["lookups"].as_u64(), v["dht"]["peers_found"].as_u64()), (Some(1), Some(7)));
    assert_eq!(v["totals"]["hash_failures"], 1);
}
