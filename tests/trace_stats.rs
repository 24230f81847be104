//! `--trace` and `--stats-json` on a real download (issue 14): rill downloads from a python3-libtorrent, a
//! transmission-daemon and a qbittorrent-nox seeder behind opentracker, each throttled so the run lasts a few
//! seconds, with both options. The trace parses line by line; every line is an event docs/trace.md lists, with
//! exactly the fields it lists (the field list is read from the document, so the two cannot drift); the
//! per-peer received bytes add up to the torrent's size plus its waste, in the trace and in the statistics;
//! and every event such a run must produce is there; `scripts/plot-trace` draws its four charts from the trace.
//! Every process is bounded in time and killed by PID.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use common::content::{self, assert_same_tree};
use common::json::{self, Json};
use common::leecher::spawn_rill_download;
use common::peers::{wait_with_peers, LibtorrentPeer, Peer, Qbittorrent, TransmissionDaemon};
use common::torrent;
use common::tracker::Opentracker;
use common::{deadline_in, TempDir};

/// Each seeder's upload cap (kB/s): three of them need a few seconds for the torrent, so rate samples come.
const THROTTLE_KB: u32 = 1500;

/// Events docs/trace.md lists (`### \`name\`` under `## Events`) with their fields (each table row's first
/// cell) plus `t` and `ev`.
fn documented_events(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut events = BTreeMap::new();
    let mut in_events = false;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            in_events = h.trim() == "Events";
            current = None;
        } else if !in_events {
        } else if let Some(h) = line.strip_prefix("### ") {
            let name = h.trim().trim_matches('`').to_string();
            events.insert(name.clone(), BTreeSet::from(["t".to_string(), "ev".to_string()]));
            current = Some(name);
        } else if let (Some(name), Some(row)) = (&current, line.strip_prefix("| `")) {
            let field = row.split('`').next().unwrap_or("").to_string();
            events.get_mut(name).unwrap().insert(field);
        }
    }
    events
}

fn num(j: &Json, key: &str) -> u64 {
    j.get(key).and_then(Json::as_u64).unwrap_or_else(|| panic!("no number `{key}` in {j:?}"))
}

fn text<'a>(j: &'a Json, key: &str) -> &'a str {
    j.get(key).and_then(Json::as_str).unwrap_or_else(|| panic!("no string `{key}` in {j:?}"))
}

fn read_lines(path: &Path) -> Vec<Json> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(text.ends_with('\n'), "the trace ends with a whole line");
    text.lines().map(|l| json::parse(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

#[test]
fn download_from_three_real_seeders_with_trace_and_stats() {
    let deadline = deadline_in(150);
    let dir = TempDir::new("trace-stats");
    let content = content::write_single(&dir.mkdir("content"), "traced.bin", 12 * content::MIB + 4321, 0x7ACE);
    let (t, tracker) = Opentracker::with_torrent(dir.path(), deadline, |announce| {
        torrent::transmission_create(&content, announce, 256, &dir.join("traced.torrent"), deadline)
    });
    let lt = LibtorrentPeer::seed(
        dir.path(),
        "libtorrent",
        &t,
        &content.copy_to(&dir.mkdir("lt-data")),
        u64::from(THROTTLE_KB) * 1000,
        deadline,
    );
    let tr = TransmissionDaemon::seed(
        dir.path(),
        "transmission",
        &t,
        &content.copy_to(&dir.mkdir("tr-data")),
        Some(THROTTLE_KB),
        deadline,
    );
    let qb = Qbittorrent::seed(
        dir.path(),
        "qbittorrent",
        &t,
        &content.copy_to(&dir.mkdir("qb-data")),
        Some(u64::from(THROTTLE_KB) * 1000),
        deadline,
    );
    tracker.wait_seeders(&t.info_hash, 3, deadline);

    let out = dir.mkdir("out");
    let (trace_path, stats_path) = (dir.join("run.jsonl"), dir.join("stats.json"));
    let extra = ["--trace", trace_path.to_str().unwrap(), "--stats-json", stats_path.to_str().unwrap()];
    let seeders: [&dyn Peer; 3] = [&lt, &tr, &qb];
    let rill = spawn_rill_download(dir.path(), &t, &out, &[], &extra, deadline);
    let status = wait_with_peers(&seeders, deadline, "rill download to exit", || rill.exited());
    assert!(status.success(), "rill download failed: {status:?}");
    assert_same_tree(&content.path(), &out.join(&t.name));

    // ---- the trace -----------------------------------------------------------------------------------
    let documented = documented_events(&std::fs::read_to_string("docs/trace.md").expect("docs/trace.md"));
    let lines = read_lines(&trace_path);
    let header = &lines[0];
    assert_eq!((text(header, "ev"), num(header, "schema")), ("header", 1), "the first line is the header");
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last_t = 0;
    let mut received_by_peer: HashMap<u64, u64> = HashMap::new();
    let mut dropped_totals: HashMap<u64, u64> = HashMap::new();
    let mut clients = Vec::new();
    let mut latencies = 0u64;
    for line in &lines {
        let ev = text(line, "ev");
        let fields: BTreeSet<String> = line.as_object().unwrap().iter().map(|(k, _)| k.clone()).collect();
        let want = documented.get(ev).unwrap_or_else(|| panic!("`{ev}` is not in docs/trace.md: {line:?}"));
        assert_eq!(&fields, want, "the fields of `{ev}` are the documented ones");
        let t_us = num(line, "t");
        assert!(t_us >= last_t, "time goes forward: {line:?}");
        last_t = t_us;
        match ev {
            "block" => {
                *received_by_peer.entry(num(line, "peer")).or_default() += num(line, "len");
                latencies += u64::from(num(line, "latency_us") > 0);
            }
            "peer_dropped" => {
                dropped_totals.insert(num(line, "peer"), num(line, "downloaded"));
            }
            "handshake" => clients.push(text(line, "client").to_string()),
            "dropped" => panic!("nothing is dropped on a run this small: {line:?}"),
            _ => {}
        }
        seen.insert(ev.to_string());
    }
    let must = [
        "header",
        "tracker_request",
        "tracker_response",
        "connect_attempt",
        "connected",
        "handshake",
        "extended",
        "bitfield",
        "interested",
        "unchoke",
        "request",
        "block",
        "rate",
        "torrent_rate",
        "piece_verified",
        "completed",
        "peer_dropped",
    ];
    for ev in must {
        assert!(seen.contains(ev), "no `{ev}` event in the trace; seen: {seen:?}");
    }
    // Each seeder is dialled; at least two of them (whichever answer first: Transmission 3.00 may refuse a
    // connection while it settles) are named by their handshake, decoded from their peer ids.
    let named = ["libtorrent", "Transmission", "qBittorrent"]
        .iter()
        .filter(|client| clients.iter().any(|c| c.starts_with(*client)))
        .count();
    assert!(named >= 2, "the seeders' clients are named by their handshakes: {clients:?}");
    assert!(clients.iter().all(|c| c != "unknown"), "{clients:?}");
    assert!(latencies > 0, "blocks carry their request's latency");
    let pieces = lines.iter().filter(|l| text(l, "ev") == "piece_verified").count() as u64;
    assert_eq!(pieces, t.num_pieces, "every piece verified once");
    for (peer, total) in &dropped_totals {
        assert_eq!(received_by_peer.get(peer).copied().unwrap_or(0), *total, "peer {peer}: blocks add up to its total");
    }

    // ---- the statistics ------------------------------------------------------------------------------
    let stats = json::parse(&std::fs::read_to_string(&stats_path).unwrap()).expect("the stats document parses");
    assert_eq!(num(&stats, "schema"), 1);
    let torrent = &stats.get("torrents").and_then(Json::as_array).unwrap()[0];
    assert_eq!((num(torrent, "size"), num(torrent, "done")), (t.total_length, t.total_length));
    let wasted = num(torrent, "wasted");
    let traced: u64 = received_by_peer.values().sum();
    assert_eq!(traced, t.total_length + wasted, "blocks in the trace = size + waste");
    let peers = stats.get("peers").and_then(Json::as_array).unwrap();
    let per_peer: u64 = peers.iter().map(|p| num(p, "downloaded")).sum();
    assert_eq!(per_peer, t.total_length + wasted, "per-peer bytes in the statistics = size + waste");
    let givers = peers.iter().filter(|p| num(p, "downloaded") > 0).count();
    assert!(givers >= 2, "several seeders delivered: {peers:?}");
    let latency = stats.get("latency").unwrap();
    let (p50, p90, p99) = (num(latency, "p50_us"), num(latency, "p90_us"), num(latency, "p99_us"));
    assert!(0 < p50 && p50 <= p90 && p90 <= p99, "latency percentiles {p50} {p90} {p99}");
    assert!(num(stats.get("connects").unwrap(), "attempts") >= 3);
    let trackers = stats.get("trackers").and_then(Json::as_object).unwrap();
    assert!(trackers.iter().any(|(_, tr)| num(tr, "responses") >= 1), "the tracker answered: {trackers:?}");
    assert!(!stats.at(&["rates", "recent"]).and_then(Json::as_array).unwrap().is_empty(), "one-second rates");

    // ---- the charts ----------------------------------------------------------------------------------
    let charts = dir.join("charts");
    let mut cmd = std::process::Command::new("scripts/plot-trace");
    cmd.arg(&trace_path).arg("-o").arg(&charts);
    let plot = common::Proc::spawn("plot-trace", &cmd, &dir.join("logs"), std::time::Duration::from_secs(120));
    let status = plot.wait_exit(deadline);
    assert!(status.success(), "scripts/plot-trace failed: {status:?}\n{}", plot.stderr());
    for chart in ["throughput", "latency", "chokes", "pipeline"] {
        let png = std::fs::read(charts.join(format!("{chart}.png"))).unwrap_or_else(|e| panic!("{chart}.png: {e}"));
        assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"), "{chart}.png is not a chart ({} bytes)", png.len());
    }
    println!(
        "traced download: {} bytes, {} trace lines ({} bytes), {} peers; latency p50 {p50} µs p99 {p99} µs",
        t.total_length,
        lines.len(),
        std::fs::metadata(&trace_path).unwrap().len(),
        peers.len()
    );
}
