//! The engine on its own: randomness wiring, datagram demultiplexing, routing incoming connections by
//! info-hash, commands. Whole transfers are in `sim.rs`.

use super::*;
use crate::sim::{make_torrent, TempDir};
use crate::time::Timestamp;
use crate::wire::handshake::Handshake;

fn config() -> EngineConfig {
    EngineConfig::for_tests()
}

/// An engine with one torrent (64 KiB, nothing on disk) that listens nowhere, with the same xoshiro seed
/// every time; only `entropy` differs.
fn engine(dir: &TempDir, mut entropy: Entropy) -> (Engine, TorrentId) {
    let (mut meta, _) = make_torrent(64 * 1024, 16 * 1024, 1);
    meta.trackers = vec![vec!["udp://127.0.0.1:9/announce".into()]];
    let peer_id = crate::peer::our_peer_id(&mut entropy);
    let mut e = Engine::new(config(), peer_id, Rng::seeded(1), entropy, Timestamp::ZERO);
    let opts = TorrentOptions {
        dir: dir.path().to_path_buf(),
        mode: torrent::Mode::Download { wanted_files: None, sequential: false, keep_seeding: false },
        recheck: false,
        seed_ratio: None,
        uploaded_before: 0,
        extra_peers: vec![],
        save_torrent: None,
        dht: true,
    };
    let id = e.add_torrent(meta, opts, Timestamp::ZERO).expect("added");
    (e, id)
}

/// Peer id, tracker key and an MSE responder's public key (Yb, from its private key) of one engine.
fn secrets(e: &mut Engine, id: TorrentId) -> ([u8; 20], u32, Vec<u8>) {
    let mut responder = mse::Responder::new(&mut e.entropy, mse::Methods::BOTH);
    let mut ya = vec![7u8; 96];
    let mse::Step::Reply { reply: yb, .. } = responder.on_bytes(&mut ya, |_| None) else { panic!("no Yb") };
    (e.peer_id, e.torrents[id.0].trackers.identity().key, yb)
}

#[test]
fn two_engines_with_the_same_rng_seed_share_no_secret_under_os_entropy() {
    let (d1, d2) = (TempDir::new("engine-a"), TempDir::new("engine-b"));
    let os = || Entropy::os().expect("the OS generator");
    let ((mut a, ia), (mut b, ib)) = (engine(&d1, os()), engine(&d2, os()));
    assert!(a.entropy.is_os());
    let (id_a, key_a, yb_a) = secrets(&mut a, ia);
    let (id_b, key_b, yb_b) = secrets(&mut b, ib);
    assert_eq!(id_a[..8], *b"-RL0001-");
    assert_ne!(id_a[8..], id_b[8..], "peer ids");
    assert_ne!(key_a, key_b, "tracker keys (odds of a collision: 2^-32)");
    assert_ne!(yb_a, yb_b, "MSE private keys");
}

#[test]
fn with_seeded_entropy_the_same_secrets_repeat_so_the_test_above_can_fail() {
    let (d1, d2) = (TempDir::new("engine-c"), TempDir::new("engine-d"));
    let ((mut a, ia), (mut b, ib)) = (engine(&d1, Entropy::seeded(5)), engine(&d2, Entropy::seeded(5)));
    assert_eq!(secrets(&mut a, ia), secrets(&mut b, ib));
}

#[test]
fn datagrams_are_told_apart_by_their_first_bytes() {
    // BEP 15 connect reply: action 0, transaction id, connection id.
    let mut connect = vec![0, 0, 0, 0, 1, 2, 3, 4];
    connect.extend_from_slice(&[9; 8]);
    assert_eq!(classify_datagram(&connect), DatagramKind::Tracker);
    // Announce reply (action 1), error (action 3).
    assert_eq!(classify_datagram(&[0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0]), DatagramKind::Tracker);
    assert_eq!(classify_datagram(&[0, 0, 0, 3, 1, 2, 3, 4, b'x']), DatagramKind::Tracker);
    assert_eq!(classify_datagram(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"), DatagramKind::Dht);
    // uTP ST_SYN (type 4, version 1) and ST_DATA (type 0): 20-byte header at least.
    let mut syn = vec![0x41, 0];
    syn.resize(20, 0);
    assert_eq!(classify_datagram(&syn), DatagramKind::Utp);
    let mut data = vec![0x01, 0];
    data.resize(20, 0);
    assert_eq!(classify_datagram(&data), DatagramKind::Utp);
    // Too short, unknown action, uTP version 2, type 5.
    assert_eq!(classify_datagram(&[0, 0, 0, 0, 1]), DatagramKind::Unknown);
    assert_eq!(classify_datagram(&[0, 0, 0, 7, 1, 2, 3, 4]), DatagramKind::Unknown);
    let mut v2 = vec![0x42, 0];
    v2.resize(20, 0);
    assert_eq!(classify_datagram(&v2), DatagramKind::Unknown);
    let mut t5 = vec![0x51, 0];
    t5.resize(20, 0);
    assert_eq!(classify_datagram(&t5), DatagramKind::Unknown);
    assert_eq!(classify_datagram(&[]), DatagramKind::Unknown);
}

/// Two torrents seeded by one engine: an incoming connection goes to the torrent its handshake names,
/// and one for a torrent the engine does not have is dropped.
#[test]
fn incoming_handshakes_are_routed_by_info_hash() {
    let dir = TempDir::new("engine-route");
    let (meta_a, content_a) = make_torrent(64 * 1024, 16 * 1024, 11);
    let (mut meta_b, content_b) = make_torrent(96 * 1024, 16 * 1024, 12);
    meta_b.info_hash = InfoHash([0xbb; 20]);
    meta_b.name = "other".into();
    let mut e = Engine::new(config(), *b"-RL0001-aaaaaaaaaaaa", Rng::seeded(2), Entropy::seeded(2), Timestamp::ZERO);
    let mut ids = vec![];
    for (meta, content, sub) in [(meta_a, content_a, "a"), (meta_b, content_b, "b")] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).expect("mkdir");
        let mut storage = crate::storage::Storage::open(&d, &meta, |_| true).expect("storage");
        storage.write(0, &content).expect("write");
        drop(storage);
        let opts = TorrentOptions {
            dir: d,
            mode: torrent::Mode::Seed { partial: false },
            recheck: false,
            seed_ratio: None,
            uploaded_before: 0,
            extra_peers: vec![],
            save_torrent: None,
            dht: true,
        };
        ids.push((e.add_torrent(meta.clone(), opts, Timestamp::ZERO).expect("added"), meta.info_hash));
    }
    // The same info-hash again is refused.
    let (again, _) = make_torrent(64 * 1024, 16 * 1024, 11);
    let opts = e.torrents[ids[0].0 .0].opts.clone();
    assert_eq!(e.add_torrent(again, opts, Timestamp::ZERO), Err(AddError::Duplicate(ids[0].0)));
    // Both checks run (one at a time) and the torrents become active seeds.
    let now = Timestamp::from_millis(1);
    e.finish_checks(now);
    for (id, _) in &ids {
        assert_eq!(e.torrent(*id).map(|t| t.state), Some(State::Active));
        assert!(e.torrent(*id).is_some_and(TorrentCore::is_seed));
    }
    let checked: Vec<_> =
        std::iter::from_fn(|| e.poll_event()).filter(|ev| matches!(ev, Event::Checked { .. })).collect();
    assert_eq!(checked.len(), 2, "{checked:?}");
    let handshake = |ih: InfoHash| {
        let mut b = vec![];
        Handshake { reserved: [0; 8], info_hash: ih, peer_id: *b"-XX0001-bbbbbbbbbbbb" }.encode(&mut b);
        b
    };
    // Each handshake lands on its torrent, from two peers on the same address (one per torrent is fine).
    let peer = SocketAddr::from(([10, 1, 1, 1], 5000));
    for (i, (id, ih)) in ids.iter().enumerate() {
        let addr = SocketAddr::new(peer.ip(), 5000 + i as u16);
        let conn = e.handle_incoming(addr, now).expect("admitted");
        let mut bytes = std::io::Cursor::new(handshake(*ih)).chain(WouldBlock);
        e.handle_peer_input(conn, &mut bytes, now);
        assert_eq!(e.peer(conn).and_then(|p| p.torrent), Some(*id));
        assert!(e.poll_transmit(Timestamp::ZERO).is_some(), "our handshake and bitfield are queued");
    }
    // A third torrent's handshake: dropped.
    let stranger = e.handle_incoming(SocketAddr::from(([10, 1, 1, 2], 5000)), now).expect("admitted");
    let mut bytes = std::io::Cursor::new(handshake(InfoHash([0xcc; 20]))).chain(WouldBlock);
    e.handle_peer_input(stranger, &mut bytes, now);
    e.end_turn(now);
    let closed = std::iter::from_fn(|| e.poll_event()).find_map(|ev| match ev {
        Event::PeerClosed { conn, reason, .. } if conn == stranger => Some(reason),
        _ => None,
    });
    assert_eq!(closed, Some(DropReason::Misbehaved(PeerMisbehaved::WrongInfoHash)));
    // A second connection from the same address for the same torrent: not needed.
    let dup = e.handle_incoming(SocketAddr::from(([10, 1, 1, 1], 6000)), now).expect("admitted");
    let mut bytes = std::io::Cursor::new(handshake(ids[0].1)).chain(WouldBlock);
    e.handle_peer_input(dup, &mut bytes, now);
    e.end_turn(now);
    let closed = std::iter::from_fn(|| e.poll_event()).find_map(|ev| match ev {
        Event::PeerClosed { conn, reason, .. } if conn == dup => Some(reason),
        _ => None,
    });
    assert_eq!(closed, Some(DropReason::NotNeeded));
}

/// A reader that has nothing more for now (a socket without data).
struct WouldBlock;

impl std::io::Read for WouldBlock {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

use std::io::Read as _;

#[test]
fn a_paused_torrent_keeps_the_run_going_until_resumed_or_shut_down() {
    let dir = TempDir::new("engine-pause");
    let (mut e, id) = engine(&dir, Entropy::seeded(5));
    let t0 = Timestamp::ZERO;
    e.finish_checks(t0);
    e.handle_command(Command::Pause(id), t0);
    assert_eq!(e.torrent(id).map(|t| t.state), Some(State::Paused));
    let later = t0 + STOP_GRACE + crate::time::secs(1);
    assert!(!e.is_finished(later), "paused is not finished: the person may resume");
    assert!(e.snapshot_at(later).torrents[0].state == State::Paused, "the view shows it paused");
    e.handle_command(Command::Resume(id), later);
    assert_eq!(e.torrent(id).map(|t| t.state), Some(State::Active));
    e.handle_command(Command::Pause(id), later);
    e.handle_command(Command::Shutdown, later);
    assert_eq!(e.torrent(id).map(|t| t.state), Some(State::Stopped), "a shutdown stops a paused torrent");
    assert!(e.is_finished(later + STOP_GRACE), "and then the run ends");
}

#[test]
fn listener_flood_holds_at_most_the_handshake_cap_and_the_oldest_gives_way_once_stale() {
    use crate::swarm::slots::{HANDSHAKE_STALE, MAX_HANDSHAKING};
    use crate::time::millis;
    let dir = TempDir::new("engine-flood");
    let (mut e, _) = engine(&dir, Entropy::seeded(5));
    e.config.max_peers = 4 * MAX_HANDSHAKING;
    let t0 = Timestamp::from_secs(1);
    e.finish_checks(t0);
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let waiting: Vec<ConnId> = (0..MAX_HANDSHAKING as u16)
        .map(|i| e.handle_incoming(addr(10_000 + i), t0 + millis(u64::from(i))).expect("admitted"))
        .collect();
    // Nothing sent yet: no read buffer, no send buffer.
    assert!(waiting.iter().all(|c| e.conns.get(c.0).is_some_and(|p| p.buffer_bytes() == 0)));
    // A burst: every waiting connection is fresh, so the newcomer is refused.
    assert_eq!(e.handle_incoming(addr(20_000), t0 + HANDSHAKE_STALE - millis(1)), None);
    // The oldest has waited long enough: it gives way.
    let newcomer = e.handle_incoming(addr(20_001), t0 + HANDSHAKE_STALE).expect("admitted in place of the oldest");
    e.end_turn(t0 + HANDSHAKE_STALE);
    let closed: Vec<_> = std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            Event::PeerClosed { conn, reason, .. } => Some((conn, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, [(waiting[0], DropReason::HandshakeTimedOut)]);
    assert!(e.peer(newcomer).is_some());
    // A connection that has handshaken no longer counts against the cap.
    let mut bytes = vec![];
    let info_hash = e.torrents.iter().next().map(|(_, t)| t.info_hash).expect("a torrent");
    Handshake { reserved: [0; 8], info_hash, peer_id: *b"-XX0001-cccccccccccc" }.encode(&mut bytes);
    let mut src = std::io::Cursor::new(bytes).chain(WouldBlock);
    e.handle_peer_input(waiting[1], &mut src, t0 + HANDSHAKE_STALE);
    assert!(e.conns.get(waiting[1].0).is_some_and(PeerConn::is_handshaken));
    assert!(e.handle_incoming(addr(20_002), t0 + HANDSHAKE_STALE).is_some(), "a place came free");
}

/// Peers unchoked in a burst between two rate samples get the send-ahead their number allows at once, not
/// what the last sample (with few peers) allowed: each has one block on its way, not five.
#[test]
fn a_burst_of_unchoked_peers_shares_the_serving_budget_before_the_next_sample() {
    use crate::storage::disk::{SERVE_AHEAD_MAX, SERVE_AHEAD_MIN, SERVE_BUDGET};
    use crate::wire::{encode, Frame};
    const PEERS: usize = 40;
    let dir = TempDir::new("engine-serve-burst");
    let (meta, content) = make_torrent(512 * 1024, 16 * 1024, 13);
    let mut storage = crate::storage::Storage::open(dir.path(), &meta, |_| true).expect("storage");
    storage.write(0, &content).expect("write");
    drop(storage);
    let mut cfg = config();
    (cfg.max_peers, cfg.upload_slots) = (2 * PEERS, 2 * PEERS);
    let mut e = Engine::new(cfg, *b"-RL0001-aaaaaaaaaaaa", Rng::seeded(3), Entropy::seeded(3), Timestamp::ZERO);
    let opts = TorrentOptions {
        dir: dir.path().to_path_buf(),
        mode: torrent::Mode::Seed { partial: false },
        recheck: false,
        seed_ratio: None,
        uploaded_before: 0,
        extra_peers: vec![],
        save_torrent: None,
        dht: true,
    };
    e.add_torrent(meta.clone(), opts, Timestamp::ZERO).expect("added");
    let t0 = Timestamp::from_secs(1);
    e.finish_checks(t0);
    // A sample with no peer: the most a few peers may have.
    e.on_rate_sample(t0);
    assert_eq!(e.disk.serve_ahead, SERVE_AHEAD_MAX);
    // Then, within the same second, PEERS peers come, are unchoked and ask for 8 blocks each.
    let now = t0 + crate::time::millis(500);
    let conns: Vec<ConnId> = (0..PEERS as u16)
        .map(|i| {
            let conn = e.handle_incoming(SocketAddr::from(([127, 0, 0, 1], 10_000 + i)), now).expect("admitted");
            let mut peer_id = *b"-XX0001-000000000000";
            peer_id[18..].copy_from_slice(&i.to_be_bytes());
            let mut bytes = vec![];
            Handshake { reserved: [0; 8], info_hash: meta.info_hash, peer_id }.encode(&mut bytes);
            encode(&Frame::Interested, &mut bytes);
            e.handle_peer_input(conn, &mut std::io::Cursor::new(bytes).chain(WouldBlock), now);
            conn
        })
        .collect();
    for (i, &conn) in conns.iter().enumerate() {
        assert!(e.conns[conn.0].session.as_ref().is_some_and(|s| !s.is_am_choking()), "peer {i} unchoked");
        let mut bytes = vec![];
        for piece in 0..8 {
            encode(&Frame::Request { piece, offset: 0, len: 16 * 1024 }, &mut bytes);
        }
        e.handle_peer_input(conn, &mut std::io::Cursor::new(bytes).chain(WouldBlock), now);
        e.handle_peer_output(conn, &mut Vec::new(), now);
    }
    assert_eq!(e.disk.serve_ahead, (SERVE_BUDGET / PEERS).clamp(SERVE_AHEAD_MIN, SERVE_AHEAD_MAX));
    let reading: Vec<u32> = conns.iter().map(|c| e.conns[c.0].session.as_ref().map_or(0, |s| s.reading())).collect();
    assert!(reading.iter().all(|&n| n <= 1), "blocks being read per peer: {reading:?}");
    assert!(reading.iter().filter(|&&n| n == 1).count() >= 16, "the peers are served: {reading:?}");
}

#[test]
fn peers_used_counts_each_address_once_and_stops_remembering_at_its_bound() {
    use super::torrent::PeersUsed;
    let addr = |n: u32| std::net::SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + n), 6881));
    let mut used = PeersUsed::default();
    used.note(addr(1));
    used.note(addr(1));
    used.note(addr(2));
    assert_eq!(used.count(), 2);
    for n in 3..=(PeersUsed::MAX_KEPT as u32 + 10) {
        used.note(addr(n));
    }
    // Past the bound every connection counts (an address seen before the bound still counts once).
    assert_eq!(used.count(), PeersUsed::MAX_KEPT + 10);
    used.note(addr(1));
    assert_eq!(used.count(), PeersUsed::MAX_KEPT + 10);
}
