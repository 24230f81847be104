//! A hostile peer against the whole engine: an incoming connection's bytes go through the encryption
//! stage, the handshake that names the torrent, and every message a seeding torrent handles (requests are
//! served from real files), with output drained and turns run between chunks.
//!
//! Input: one byte of flags (bit 0: start with a valid handshake for the torrent, so the bytes after it are
//! messages; bits 1-2: chunk size), then the stream. One engine lives across runs, so state left behind by
//! one connection (closing, reaping, timers) meets the next.
//!
//! Invariants: never a panic; connections are reaped (the engine never holds more than a handful); the
//! engine's snapshot stays consistent.
#![no_main]

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use rill::engine::torrent::{Mode, State, TorrentOptions};
use rill::engine::{Action, Engine, EngineConfig};
use rill::metainfo::{FileEntry, InfoHash, Metainfo};
use rill::rng::{Entropy, Rng};
use rill::storage::disk::Executor;
use rill::time::{millis, Timestamp};
use rill::wire::handshake::Handshake;
use sha1::{Digest, Sha1};

const PIECE: u32 = 16 * 1024;
const LEN: usize = 8 * PIECE as usize + 1000;

struct Fixture {
    engine: Engine,
    info_hash: InfoHash,
    now: Timestamp,
    port: u16,
    disk: Executor,
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fn setup() -> Fixture {
    let dir = std::env::temp_dir().join(format!("rill-fuzz-engine-{}", std::process::id()));
    let content: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::create_dir_all(dir.join("fz")).expect("dir");
    std::fs::write(dir.join("fz/data.bin"), &content).expect("content");
    let meta = Metainfo {
        info_hash: InfoHash([0x5a; 20]),
        name: "fz".into(),
        piece_length: PIECE,
        piece_hashes: content.chunks(PIECE as usize).map(|c| Sha1::digest(c).into()).collect(),
        total_length: LEN as u64,
        files: vec![FileEntry {
            path: PathBuf::from("fz/data.bin"),
            length: LEN as u64,
            offset: 0,
            padding: false,
            symlink_target: None,
        }],
        trackers: vec![],
        private: false,
        comment: None,
        created_by: None,
        web_seeds: Vec::new(),
        mapped: Default::default(),
    };
    let config =
        EngineConfig { max_peers: 8, max_half_open: 2, upload_slots: 4, up_limit: None, down_limit: None, listen_port: None, trace: false, dht: None, encryption: rill::peer::encryption::EncryptionPolicy::Prefer, utp: false };
    let mut engine = Engine::new(config, *b"-RL0001-fuzzfuzzfuzz", Rng::seeded(1), Entropy::seeded(1), Timestamp::ZERO);
    let opts = TorrentOptions { dir, mode: Mode::Seed { partial: true }, recheck: false, seed_ratio: None, uploaded_before: 0, extra_peers: vec![], save_torrent: None, dht: false };
    let info_hash = meta.info_hash;
    let id = engine.add_torrent(meta, opts, Timestamp::ZERO).expect("added");
    let now = Timestamp::from_millis(1);
    let mut fixture = Fixture { engine, info_hash, now, port: 1, disk: Executor::default() };
    for _ in 0..1000 {
        if !fixture.engine.torrent(id).is_some_and(|t| t.state == State::Checking) {
            break;
        }
        fixture.engine.end_turn(now);
        run_disk(&mut fixture);
    }
    fixture
}

/// What a socket with nothing more to read says.
struct Chunk<'a>(&'a [u8]);

impl Read for Chunk<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.0.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// A socket that takes everything.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs the engine's disk jobs in place, as the event loop's disk threads would.
fn run_disk(f: &mut Fixture) -> bool {
    let mut jobs: Vec<_> = std::iter::from_fn(|| f.engine.poll_disk_job()).collect();
    let any = !jobs.is_empty();
    let mut done = Vec::new();
    f.disk.run(&mut jobs, &mut done);
    for d in done {
        f.engine.handle_disk_done(d, f.now);
    }
    any
}

fn drain(f: &mut Fixture) {
    loop {
        let mut any = run_disk(f);
        while let Some(action) = f.engine.poll_action() {
            any = true;
            assert!(!matches!(action, Action::Connect { .. }), "a seed with no candidates dials nobody");
        }
        while let Some(conn) = f.engine.poll_transmit(f.now) {
            any = true;
            f.engine.handle_peer_output(conn, &mut Sink, f.now);
        }
        while f.engine.poll_event().is_some() {}
        if !any {
            return;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else { return };
    FIXTURE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let f = cell.get_or_insert_with(setup);
        f.port = f.port.wrapping_add(1).max(1);
        let addr = SocketAddr::from(([10, 9, (f.port >> 8) as u8, f.port as u8], f.port));
        let Some(conn) = f.engine.handle_incoming(addr, f.now) else {
            // Full: let the reaping catch up.
            f.engine.end_turn(f.now);
            drain(f);
            return;
        };
        let mut bytes = Vec::with_capacity(stream.len() + 68);
        if flags & 1 != 0 {
            Handshake { reserved: [0, 0, 0, 0, 0, 0x10, 0, 0x04], info_hash: f.info_hash, peer_id: *b"-FZ0001-aaaaaaaaaaaa" }
                .encode(&mut bytes);
        }
        bytes.extend_from_slice(stream);
        let chunk = [usize::MAX, 1, 7, 300][usize::from(flags >> 1 & 3)];
        for piece in bytes.chunks(chunk.min(bytes.len().max(1))) {
            f.engine.handle_peer_input(conn, &mut Chunk(piece), f.now);
            for id in f.engine.take_backlog(f.now) {
                f.engine.handle_peer_input(id, &mut Chunk(&[]), f.now);
            }
            drain(f);
            f.now = f.now + millis(1);
            f.engine.handle_timeout(f.now);
            f.engine.end_turn(f.now);
            drain(f);
        }
        f.engine.handle_peer_error(conn, rill::peer::DropReason::ClosedByPeer);
        f.engine.end_turn(f.now);
        drain(f);
        let snapshot = f.engine.snapshot();
        assert!(snapshot.peers.len() <= 8, "connections are reaped: {}", snapshot.peers.len());
        assert_eq!(snapshot.torrents.len(), 1);
    });
});
