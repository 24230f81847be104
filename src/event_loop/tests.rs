//! The engine's wiring of randomness: what peers and trackers must not guess comes from the `Entropy`
//! it is given (the OS source in production), not from its reproducible xoshiro `Rng`.

use super::*;
use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::sim::{make_torrent, TempDir};
use crate::wire::mse;

/// An engine that listens nowhere, with the same xoshiro seed every time; only `entropy` differs.
fn engine(dir: &TempDir, entropy: Entropy) -> EventLoop {
    let (mut meta, _) = make_torrent(64 * 1024, 16 * 1024, 1);
    meta.trackers = vec![vec!["udp://127.0.0.1:9/announce".into()]];
    let geometry = Geometry::new(meta.piece_length, meta.total_length);
    let n = geometry.piece_count();
    let storage = Storage::open(dir.path(), &meta, |_| true).expect("storage");
    let swarm = Swarm::new(geometry, Bitfield::new(n), Bitfield::full(n), false);
    let config = RunConfig {
        max_peers: 4,
        max_half_open: 2,
        listen: None,
        listen_fallback: false,
        ui: UiMode::Plain,
        extra_peers: vec![],
        keep_seeding: false,
        seed_ratio: None,
        up_limit: None,
        down_limit: None,
        upload_slots: 4,
        columns: 80,
        stop_requested: None,
    };
    let mut entropy = entropy;
    let peer_id = crate::peer::our_peer_id(&mut entropy);
    EventLoop::new(&meta, swarm, storage, config, peer_id, Rng::seeded(1), entropy).expect("engine")
}

/// Peer id, tracker key and an MSE responder's public key (Yb, from its private key) of one engine.
fn secrets(e: &mut EventLoop) -> ([u8; 20], u32, Vec<u8>) {
    let mut responder = mse::Responder::new(e.torrent.ctx.info_hash, &mut e.entropy);
    let mut ya = vec![7u8; 96];
    let mse::Step::Reply { reply: yb, .. } = responder.on_bytes(&mut ya) else { panic!("no Yb") };
    (e.torrent.ctx.our_peer_id, e.trackers.identity().key, yb)
}

#[test]
fn two_engines_with_the_same_rng_seed_share_no_secret_under_os_entropy() {
    let (d1, d2) = (TempDir::new("engine-a"), TempDir::new("engine-b"));
    let os = || Entropy::os().expect("the OS generator");
    let (mut a, mut b) = (engine(&d1, os()), engine(&d2, os()));
    assert!(a.entropy.is_os());
    let (id_a, key_a, yb_a) = secrets(&mut a);
    let (id_b, key_b, yb_b) = secrets(&mut b);
    assert_eq!(id_a[..8], *b"-RL0001-");
    assert_ne!(id_a[8..], id_b[8..], "peer ids");
    assert_ne!(key_a, key_b, "tracker keys (odds of a collision: 2^-32)");
    assert_ne!(yb_a, yb_b, "MSE private keys");
}

#[test]
fn with_seeded_entropy_the_same_secrets_repeat_so_the_test_above_can_fail() {
    let (d1, d2) = (TempDir::new("engine-c"), TempDir::new("engine-d"));
    let (mut a, mut b) = (engine(&d1, Entropy::seeded(5)), engine(&d2, Entropy::seeded(5)));
    assert_eq!(secrets(&mut a), secrets(&mut b));
}
