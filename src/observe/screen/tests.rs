//! The live view rendered into a buffer at several sizes, and asserted on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::engine::snapshot::{PeerEncryption, PeerSnapshot, Snapshot, TorrentSnapshot, TrackerSnapshot};
use crate::engine::torrent::State;
use crate::engine::TorrentId;
use crate::metainfo::InfoHash;
use crate::observe::rates::RateHistory;
use crate::time::{millis, secs, Timestamp};
use crate::tracker::TrackerState;

const MIB: u64 = 1024 * 1024;

fn torrent(id: usize, name: &str) -> TorrentSnapshot {
    TorrentSnapshot {
        id: TorrentId(id),
        info_hash: InfoHash([id as u8; 20]),
        name: name.into(),
        state: State::Active,
        stopping: false,
        done: 512 * MIB,
        total: 1024 * MIB,
        downloaded: 520 * MIB,
        uploaded: 3 * MIB,
        down_rate: 0.0,
        up_rate: 0.0,
        peers: 3,
        half_open: 1,
        seeding: false,
        wasted: 16384,
        hash_failures: 1,
        check_progress: None,
        metadata_progress: None,
        error: None,
        dht: Some((87, 12)),
        unchoking_us: 2,
        we_unchoke: 1,
        trackers: vec![
            TrackerSnapshot {
                url: "http://127.0.0.1:6969/announce".into(),
                tier: 0,
                state: TrackerState::Working,
                seeders: Some(10),
                leechers: Some(3),
                last_announce_ago: Some(Duration::from_millis(130_400)),
                peers: 50,
                next_announce_in: Some(Duration::from_secs(1670)),
                last_error: None,
            },
            TrackerSnapshot {
                url: "udp://127.0.0.1:6970".into(),
                tier: 1,
                state: TrackerState::Failing,
                seeders: None,
                leechers: None,
                last_announce_ago: None,
                peers: 0,
                next_announce_in: None,
                last_error: Some("connection refused".into()),
            },
        ],
    }
}

fn peer_id(prefix: &[u8]) -> Option<[u8; 20]> {
    let mut id = [b'x'; 20];
    id[..prefix.len()].copy_from_slice(prefix);
    Some(id)
}

fn peer(torrent: usize, addr: &str, id: &[u8], down: f64, up: f64) -> PeerSnapshot {
    PeerSnapshot {
        torrent: Some(TorrentId(torrent)),
        addr: Some(addr.parse::<SocketAddr>().unwrap()),
        peer_id: peer_id(id),
        download_rate: down,
        upload_rate: up,
        downloaded: 100 * MIB,
        am_interested: true,
        peer_choking: false,
        peer_interested: true,
        am_choking: false,
        requests_active: 12,
        depth: 48,
        rtt: Some(millis(45)),
        last_block_ago: Some(millis(1400)),
        share: 0.42,
        ..PeerSnapshot::default()
    }
}

fn snapshot() -> Snapshot {
    let mut lt = peer(0, "127.0.0.1:6881", b"-LT2080-", 3.0 * MIB as f64, 1000.0);
    lt.utp = true;
    lt.encryption = PeerEncryption::Rc4;
    let mut tr = peer(0, "127.0.0.2:51413", b"-TR3000-", 1.0 * MIB as f64, 0.0);
    tr.peer_choking = true;
    tr.am_choking = true;
    tr.rtt = None;
    tr.share = 0.1;
    let qb = peer(0, "[::1]:8999", b"-qB4520-", 2.0 * MIB as f64, 0.0);
    // Still handshaking: no peer id, not in the table.
    let connecting =
        PeerSnapshot { torrent: Some(TorrentId(0)), addr: "127.0.0.9:1".parse().ok(), ..Default::default() };
    let other = peer(1, "127.0.0.3:6881", b"A2-1-36-0-", 5.0, 0.0);
    Snapshot {
        torrents: vec![
            torrent(0, "ubuntu-24.04.1-desktop-amd64-with-extra-language-packs.iso"),
            torrent(1, "debian.iso"),
        ],
        peers: vec![lt, tr, qb, connecting, other],
    }
}

fn rates() -> HashMap<TorrentId, RateHistory> {
    let mut h = RateHistory::default();
    let t0 = Timestamp::ZERO;
    let mut total = 0;
    h.record(t0, 0, 0);
    for s in 1..=40u64 {
        total += s * 100_000;
        h.record(t0 + secs(s), total, s * 1000);
    }
    HashMap::from([(TorrentId(0), h)])
}

fn draw(snap: &Snapshot, width: usize, height: usize, sort: SortColumn, log: &[String]) -> Vec<String> {
    let state = ViewState { selected: 0, sort, width, height };
    let rates = rates();
    let lines = render(&Frame { snapshot: snap, state: &state, rates: &rates, log });
    for line in &lines {
        assert!(line.chars().count() <= width, "over {width} columns: {line:?}");
    }
    assert!(lines.len() <= height, "{} lines for {height} rows", lines.len());
    lines
}

fn find<'a>(lines: &'a [String], needle: &str) -> Option<&'a String> {
    lines.iter().find(|l| l.contains(needle))
}

fn header_of(lines: &[String]) -> &String {
    find(lines, "address").expect("the peers table header")
}

#[test]
fn every_width_shows_progress_rates_and_the_busiest_peers() {
    let snap = snapshot();
    for width in [60, 80, 120, 200] {
        let lines = draw(&snap, width, 30, SortColumn::Busiest, &[]);
        let text = lines.join("\n");
        assert!(lines[0].starts_with("rill  down"), "{width}: {}", lines[0]);
        let bar = find(&lines, "[#").unwrap_or_else(|| panic!("{width}: no progress bar in\n{text}"));
        assert!(bar.contains(" 50.0%"), "{width}: {bar}");
        let inside = &bar[bar.find('[').unwrap()..=bar.find(']').unwrap()];
        let (full, empty) = (inside.matches('#').count(), inside.matches('.').count());
        assert!(full >= 4 && (empty == full || empty == full + 1), "{width}: half full: {bar}");
        assert!(find(&lines, "downloading").is_some(), "{width}:\n{text}");
        // The busiest first: libtorrent (3 MiB/s), then qBittorrent, then Transmission; the connecting
        // peer (no handshake yet) and the other torrent's peer are not in the table.
        let rows: Vec<&String> = lines.iter().filter(|l| l.starts_with("127.") || l.starts_with("[::1]")).collect();
        assert_eq!(rows.len(), 3, "{width}:\n{text}");
        assert!(rows[0].starts_with("127.0.0.1:6881"), "{width}: {}", rows[0]);
        assert!(rows[1].starts_with("[::1]:8999"), "{width}: {}", rows[1]);
        assert!(rows[0].contains("3.00 MiB/s"), "{width}: {}", rows[0]);
        assert!(rows[0].contains("DU"), "{width}: flags: {}", rows[0]);
        assert!(rows[2].contains("du"), "{width}: choked both ways: {}", rows[2]);
    }
}

#[test]
fn narrow_screens_drop_columns_by_priority_and_truncate_names() {
    let snap = snapshot();
    let at = |w| draw(&snap, w, 30, SortColumn::Busiest, &[]);
    let (w60, w80, w120, w200) = (at(60), at(80), at(120), at(200));
    for title in ["via", "client", "req/depth", "rtt", "flags", "share", "last"] {
        assert!(header_of(&w120).contains(title), "120 columns show {title}: {}", header_of(&w120));
        assert!(header_of(&w200).contains(title), "200 columns show {title}");
    }
    let row120 = find(&w120, "127.0.0.1:6881").unwrap();
    for cell in ["uTP rc4", "libtorrent 2.0.8.0", "12/48", "45ms", "42%", "1s"] {
        assert!(row120.contains(cell), "{cell} in {row120}");
    }
    assert!(find(&w120, "Transmission 3.00").is_some_and(|r| r.contains(" - ")), "no rtt yet shows -");
    let h80 = header_of(&w80);
    for title in ["client", "down", "up", "flags"] {
        assert!(h80.contains(title), "80 columns keep {title}: {h80}");
    }
    for title in ["share", "last", "via"] {
        assert!(!h80.contains(title), "80 columns drop {title}: {h80}");
    }
    let h60 = header_of(&w60);
    assert!(h60.contains("down") && h60.contains("up") && h60.contains("flags"), "{h60}");
    assert!(!h60.contains("client") && !h60.contains("rtt"), "60 columns drop client and rtt: {h60}");
    // The name is cut (with an ellipsis) before the state word at 60 columns, whole at 200.
    assert!(find(&w200, "ubuntu-24.04.1-desktop-amd64-with-extra-language-packs.iso  downloading").is_some());
    assert!(w60.iter().any(|l| l.contains('…') && l.ends_with("downloading")), "{}", w60.join("\n"));
    // Wider screens give the address and client more room, and the bar grows.
    let bar = |lines: &[String]| find(lines, "[#").map(|l| l.matches(['#', '.']).count()).unwrap_or(0);
    assert!(bar(&w200) > bar(&w60), "the bar grows with the width");
}

#[test]
fn torrent_block_has_peers_dht_waste_trackers_and_sparkline() {
    let lines = draw(&snapshot(), 120, 40, SortColumn::Busiest, &[]);
    let text = lines.join("\n");
    assert!(text.contains("peers 3 (2 unchoking us, 1 we unchoke, 1 half-open)"), "{text}");
    assert!(text.contains("dht 87 nodes 12 peers"), "{text}");
    assert!(text.contains("waste 16.0 KiB (1 hash failures)"), "{text}");
    let ok = find(&lines, "tracker http://127.0.0.1:6969/announce").expect("first tracker");
    assert!(ok.contains("ok  50 peers 2m10s ago  next 27m50s"), "{ok}");
    let failing = find(&lines, "tracker udp://").expect("second tracker");
    assert!(failing.contains("failing  connection refused"), "{failing}");
    let spark = find(&lines, "last minute").expect("sparkline");
    assert!(spark.contains('█'), "the peak sample is a full block: {spark}");
    assert_eq!(spark.matches(['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█']).count(), 40, "one per sample: {spark}");
    // The unselected torrent: name and bar, no detail.
    assert!(find(&lines, "  debian.iso  downloading").is_some(), "{text}");
    assert!(find(&lines, "> ubuntu").is_some(), "the selection is marked: {text}");
    assert!(lines[0].contains("q quit  p pause  j/k select  s sort: busiest"), "{}", lines[0]);
}

#[test]
fn sort_column_orders_the_table() {
    let snap = snapshot();
    let rows = |sort| {
        draw(&snap, 200, 30, sort, &[])
            .into_iter()
            .filter(|l| l.starts_with("127.") || l.starts_with("[::1]"))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(SortColumn::Address), ["127.0.0.1:6881", "127.0.0.2:51413", "[::1]:8999"]);
    assert_eq!(rows(SortColumn::Share)[2], "127.0.0.2:51413");
    assert_eq!(rows(SortColumn::Rtt)[2], "127.0.0.2:51413", "never measured goes last");
    let mut s = SortColumn::Busiest;
    for _ in 0..6 {
        s = s.next();
    }
    assert_eq!(s, SortColumn::Busiest, "s cycles through every column");
}

#[test]
fn short_screens_keep_the_selected_torrent_and_cut_the_table() {
    let snap = snapshot();
    let lines = draw(&snap, 80, 8, SortColumn::Busiest, &[]);
    assert!(lines[0].starts_with("rill"));
    assert!(find(&lines, "debian.iso").is_none(), "the other torrent gives way: {lines:#?}");
    assert!(find(&lines, "ubuntu").is_some());
    let one = draw(&snap, 80, 1, SortColumn::Busiest, &[]);
    assert_eq!(one.len(), 1);
    // Tiny terminals: nothing over the edge, nothing panics.
    for (w, h) in [(1, 1), (5, 3), (12, 6), (30, 10)] {
        let log = vec!["a log line".to_string()];
        let lines = draw(&snap, w, h, SortColumn::Busiest, &log);
        assert!(!lines.is_empty());
    }
    // A table with more peers than rows ends with a count of the rest.
    let mut many = snapshot();
    for i in 0..40 {
        many.peers.push(peer(0, &format!("127.0.1.{i}:6881"), b"-LT2080-", 10.0, 0.0));
    }
    let lines = draw(&many, 100, 24, SortColumn::Busiest, &[]);
    assert_eq!(lines.len(), 24);
    assert!(lines.last().is_some_and(|l| l.contains("… and ") && l.ends_with(" more")), "{lines:#?}");
}

#[test]
fn state_words_and_hostile_names() {
    let mut snap = snapshot();
    snap.torrents.truncate(1);
    let word = |snap: &Snapshot| draw(snap, 100, 20, SortColumn::Busiest, &[])[1].clone();
    snap.torrents[0].state = State::Paused;
    snap.torrents[0].stopping = true;
    assert!(word(&snap).ends_with("  paused"), "paused while its trackers are told: {}", word(&snap));
    snap.torrents[0].stopping = false;
    snap.torrents[0].state = State::AwaitingMetadata;
    assert!(word(&snap).ends_with("fetching metadata"));
    snap.torrents[0].metadata_progress = Some((3, Some((2, 5))));
    assert!(word(&snap).ends_with("fetching metadata: 2 of 5 pieces, 3 peers asked"), "{}", word(&snap));
    snap.torrents[0].state = State::Checking;
    snap.torrents[0].check_progress = Some((25, 100));
    assert!(word(&snap).ends_with("checking 25%"));
    snap.torrents[0].state = State::Active;
    assert!(word(&snap).ends_with("checking 25%"), "a check while active: {}", word(&snap));
    snap.torrents[0].check_progress = None;
    snap.torrents[0].done = snap.torrents[0].total;
    snap.torrents[0].seeding = true;
    assert!(word(&snap).ends_with("seeding"));
    assert!(!word(&snap).starts_with("> "), "one torrent: no selection mark");
    snap.torrents[0].name = "evil\x1b[2J\x07name".into();
    assert!(word(&snap).starts_with("evil?[2J?name"), "escapes are neutralised: {}", word(&snap));
    snap.torrents[0].trackers.clear();
    snap.peers.clear();
    let lines = draw(&snap, 60, 20, SortColumn::Busiest, &[]);
    assert!(find(&lines, "peers of").is_some_and(|l| l.contains("(0, sorted by busiest)")));
    assert!(find(&lines, "up   ").is_some_and(|l| l.contains("last minute")), "seeding shows the up rate");
    let none = Snapshot::default();
    assert!(draw(&none, 60, 10, SortColumn::Busiest, &[]).iter().any(|l| l == "no torrents"));
}

#[test]
fn log_panel_shows_the_newest_lines_at_the_bottom() {
    let log: Vec<String> = (0..10).map(|i| format!("[WARN rill] line {i}")).collect();
    let lines = draw(&snapshot(), 80, 30, SortColumn::Busiest, &log);
    assert_eq!(lines.len(), 30);
    assert_eq!(&lines[27..], &["[WARN rill] line 7", "[WARN rill] line 8", "[WARN rill] line 9"]);
    assert!(lines[26].starts_with("───"));
    let tiny = draw(&snapshot(), 80, 4, SortColumn::Busiest, &log);
    assert!(tiny.iter().all(|l| !l.contains("line 9")), "no room: no panel");
}
