//! In-memory swarm simulation (test only): real `PeerSession`s and `Torrent` cores wired back to back
//! through byte queues with latency and rate caps, under simulated time, with a seeded RNG.
//!
//! Owns: the simulated links and clock, and the scenarios. It is a second driver of the same core the
//! event loop drives (`Torrent::process_input`, `Torrent::serve`), so it checks what production runs.
//! Data goes through real `Storage` in a temporary directory (the page cache makes that cheap).
//! Must not: open sockets or read the clock.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::metainfo::{FileEntry, InfoHash, Metainfo};
use crate::peer::buffers::ReadBuf;
use crate::peer::session::{PeerSession, TorrentContext};
use crate::peer::DropReason;
use crate::rng::Rng;
use crate::storage::{verify, Storage};
use crate::swarm::{PeerNo, Swarm};
use crate::time::{millis, secs, Timestamp};
use crate::torrent::{InputError, Torrent};
use crate::wire::FrameLimits;

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("rill-sim-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// `self/rel`, creating nothing.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A two-file torrent of `len` deterministic pseudo-random bytes.
pub fn make_torrent(len: u64, piece_length: u32, seed: u64) -> (Metainfo, Vec<u8>) {
    let mut rng = Rng::seeded(seed);
    let mut content = vec![0u8; len as usize];
    rng.fill(&mut content);
    let first = len / 3;
    let files = vec![
        FileEntry { path: PathBuf::from("sim/a.bin"), length: first, offset: 0, padding: false, symlink_target: None },
        FileEntry {
            path: PathBuf::from("sim/dir/b.bin"),
            length: len - first,
            offset: first,
            padding: false,
            symlink_target: None,
        },
    ];
    (metainfo_for("sim", files, piece_length, &content), content)
}

/// A `Metainfo` for `files` laid over `content`, with the piece hashes of `content` (test torrents built in
/// code, without a `.torrent` file).
pub fn metainfo_for(name: &str, files: Vec<FileEntry>, piece_length: u32, content: &[u8]) -> Metainfo {
    Metainfo {
        info_hash: InfoHash(Sha1::digest(name.as_bytes()).into()),
        name: name.into(),
        piece_length,
        piece_hashes: content.chunks(piece_length as usize).map(|c| Sha1::digest(c).into()).collect(),
        total_length: content.len() as u64,
        files,
        trackers: vec![],
        private: false,
        comment: None,
        created_by: None,
        mapped: Default::default(),
    }
}

struct Node {
    torrent: Torrent,
    _dir: TempDir,
}

struct End {
    node: usize,
    session: PeerSession,
    read: ReadBuf,
}

/// One direction of a link: bytes leave at most at `rate` and arrive `latency` later.
struct Pipe {
    rate: f64,
    latency: Duration,
    busy_until: Timestamp,
    queue: VecDeque<(Timestamp, Vec<u8>)>,
    /// From this moment on, everything sent is lost (a peer that stops answering).
    black_hole_from: Option<Timestamp>,
}

impl Pipe {
    fn new(rate: f64, latency: Duration) -> Self {
        Pipe { rate, latency, busy_until: Timestamp::ZERO, queue: VecDeque::new(), black_hole_from: None }
    }

    fn send(&mut self, bytes: &[u8], now: Timestamp) {
        if self.black_hole_from.is_some_and(|t| now >= t) {
            return;
        }
        for chunk in bytes.chunks(16 * 1024) {
            let start = self.busy_until.max(now);
            let wire_time = Duration::from_secs_f64(chunk.len() as f64 / self.rate);
            self.busy_until = start + wire_time;
            self.queue.push_back((self.busy_until + self.latency, chunk.to_vec()));
        }
    }
}

struct Link {
    a: End,
    b: End,
    a_to_b: Pipe,
    b_to_a: Pipe,
    closed: Option<DropReason>,
}

pub struct Sim {
    pub now: Timestamp,
    nodes: Vec<Node>,
    links: Vec<Link>,
    next_peer_no: u64,
    next_rate_sample: Timestamp,
    pub steps: u64,
    /// Per node: the pieces whose confirmation failed, in order.
    failed_confirmations: Vec<Vec<u32>>,
}

/// How many chunks to a reader at once (`ReadBuf::fill_from` takes any `io::Read`).
struct Chunk<'a>(&'a [u8]);

impl std::io::Read for Chunk<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = out.len().min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        Sim {
            now: Timestamp::ZERO,
            nodes: Vec::new(),
            links: Vec::new(),
            next_peer_no: 0,
            next_rate_sample: Timestamp::ZERO + secs(1),
            steps: 0,
            failed_confirmations: Vec::new(),
        }
    }

    /// Adds a peer that claims every piece but serves `garbage` in place of the content.
    pub fn add_liar(&mut self, meta: &Metainfo, garbage: &[u8], rng: &mut Rng) -> usize {
        let node = self.add_node(meta, None, rng);
        let t = &mut self.nodes[node].torrent;
        t.storage.write(0, garbage).expect("write garbage");
        let n = t.ctx.geometry.piece_count();
        t.swarm = Swarm::new(t.ctx.geometry, Bitfield::full(n), Bitfield::full(n), false);
        node
    }

    /// Adds a node holding `content` in full (a seed) or nothing (a leecher).
    pub fn add_node(&mut self, meta: &Metainfo, content: Option<&[u8]>, rng: &mut Rng) -> usize {
        let dir = TempDir::new("node");
        let geometry = Geometry::new(meta.piece_length, meta.total_length);
        let n = geometry.piece_count();
        let mut storage = Storage::open(dir.path(), meta, |_| true).expect("storage");
        let mut have = Bitfield::new(n);
        if let Some(content) = content {
            storage.write(0, content).expect("write seed data");
            for p in 0..n {
                let v = verify::check_piece(&mut storage, &geometry, p, &meta.piece_hashes[p as usize])
                    .expect("read")
                    .expect("seed data verifies");
                have.set(v.piece());
            }
        }
        let swarm = Swarm::new(geometry, have, Bitfield::full(n), false);
        let mut peer_id = *b"-RL0001-............";
        rng.fill(&mut peer_id[8..]);
        let ctx = TorrentContext {
            info_hash: meta.info_hash,
            our_peer_id: peer_id,
            geometry,
            limits: FrameLimits::for_torrent(n),
            listen_port: None,
        };
        self.nodes.push(Node { torrent: Torrent::new(ctx, swarm, storage, meta.piece_hashes.clone()), _dir: dir });
        self.failed_confirmations.push(Vec::new());
        self.nodes.len() - 1
    }

    /// Adds a node whose disk holds `on_disk` and whose resume file vouches for every piece: all are
    /// unconfirmed at start. `download`: it wants every piece (as `rill download`), else only what it
    /// hashed (as `rill seed`, which hashed nothing here).
    pub fn add_trusting_node(&mut self, meta: &Metainfo, on_disk: &[u8], download: bool, rng: &mut Rng) -> usize {
        let node = self.add_node(meta, None, rng);
        let t = &mut self.nodes[node].torrent;
        t.storage.write(0, on_disk).expect("write the data on disk");
        let n = t.ctx.geometry.piece_count();
        let wanted = if download { Bitfield::full(n) } else { Bitfield::new(n) };
        t.swarm = Swarm::new(t.ctx.geometry, Bitfield::new(n), wanted, false).with_unconfirmed(&Bitfield::full(n));
        node
    }

    /// Pieces a node found changed when it confirmed them (`Torrent::confirm_failed`, as drained).
    pub fn confirm_failed(&self, node: usize) -> &[u32] {
        &self.failed_confirmations[node]
    }

    /// Connects `from` (dialling) to `to` with a rate cap in bytes/s and a one-way latency each way.
    pub fn connect(&mut self, from: usize, to: usize, rate: f64, latency: Duration) -> usize {
        self.next_peer_no += 2;
        let now = self.now;
        let ctx_a = &self.nodes[from].torrent.ctx;
        let ctx_b = &self.nodes[to].torrent.ctx;
        let mut a = PeerSession::outgoing(PeerNo(self.next_peer_no), ctx_a, now);
        a.on_connected(ctx_a, now);
        let b = PeerSession::incoming(PeerNo(self.next_peer_no + 1), ctx_b, now);
        self.links.push(Link {
            a: End { node: from, session: a, read: ReadBuf::new(&ctx_a.limits) },
            b: End { node: to, session: b, read: ReadBuf::new(&ctx_b.limits) },
            a_to_b: Pipe::new(rate, latency),
            b_to_a: Pipe::new(rate, latency),
            closed: None,
        });
        self.links.len() - 1
    }

    /// From `at` on, everything `link`'s dialled side (`b`) sends is lost.
    pub fn black_hole_responder(&mut self, link: usize, at: Timestamp) {
        self.links[link].b_to_a.black_hole_from = Some(at);
    }

    pub fn swarm(&self, node: usize) -> &Swarm {
        &self.nodes[node].torrent.swarm
    }
    pub fn dialler_session(&self, link: usize) -> &PeerSession {
        &self.links[link].a.session
    }
    pub fn responder_session(&self, link: usize) -> &PeerSession {
        &self.links[link].b.session
    }
    pub fn link_closed(&self, link: usize) -> Option<DropReason> {
        self.links[link].closed
    }

    /// Reads back a node's whole content through its storage.
    pub fn content(&mut self, node: usize) -> Vec<u8> {
        let t = &mut self.nodes[node].torrent;
        let mut out = vec![0; t.ctx.geometry.total_length() as usize];
        t.storage.read(0, &mut out).expect("read back");
        out
    }

    fn next_event_time(&self) -> Timestamp {
        let mut next = self.next_rate_sample;
        for l in self.links.iter().filter(|l| l.closed.is_none()) {
            for pipe in [&l.a_to_b, &l.b_to_a] {
                if let Some((t, _)) = pipe.queue.front() {
                    next = next.min(*t);
                }
            }
            for end in [&l.a, &l.b] {
                if !end.session.pending_output().is_empty() {
                    return self.now;
                }
                if let Some(t) = end.session.next_deadline() {
                    next = next.min(t);
                }
            }
        }
        next.max(self.now)
    }

    /// Advances to the next event and handles everything due then; invariants are checked after.
    pub fn step(&mut self) {
        self.steps += 1;
        self.now = self.next_event_time();
        let now = self.now;
        // 1. Deliver due bytes.
        for li in 0..self.links.len() {
            for dir in [true, false] {
                loop {
                    let link = &mut self.links[li];
                    if link.closed.is_some() {
                        break;
                    }
                    let pipe = if dir { &mut link.a_to_b } else { &mut link.b_to_a };
                    if !pipe.queue.front().is_some_and(|(t, _)| *t <= now) {
                        break;
                    }
                    let (_, bytes) = pipe.queue.pop_front().expect("front checked");
                    let end = if dir { &mut link.b } else { &mut link.a };
                    let torrent = &mut self.nodes[end.node].torrent;
                    let mut src = Chunk(&bytes);
                    let mut result = Ok(());
                    while !src.0.is_empty() && result.is_ok() {
                        end.read.fill_from(&mut src).expect("memory read");
                        result = torrent.process_input(&mut end.read, &mut end.session, now);
                    }
                    match result {
                        Ok(()) => {}
                        Err(InputError::Drop(reason)) => self.close(li, reason),
                        Err(InputError::Fatal(e)) => panic!("storage failed in simulation: {e}"),
                    }
                    self.apply_bans();
                }
            }
        }
        // 2. Time-outs.
        for li in 0..self.links.len() {
            for side in [true, false] {
                let link = &mut self.links[li];
                if link.closed.is_some() {
                    continue;
                }
                let end = if side { &mut link.a } else { &mut link.b };
                if end.session.next_deadline().is_some_and(|t| t <= now) {
                    let swarm = &mut self.nodes[end.node].torrent.swarm;
                    if let Err(reason) = end.session.on_timeout(swarm, now) {
                        self.close(li, reason);
                    }
                }
            }
        }
        // 3. Rate samples, once a simulated second.
        if now >= self.next_rate_sample {
            for link in self.links.iter_mut().filter(|l| l.closed.is_none()) {
                for end in [&mut link.a, &mut link.b] {
                    let swarm = &mut self.nodes[end.node].torrent.swarm;
                    end.session.on_rate_sample(swarm, now, secs(1));
                }
            }
            self.next_rate_sample = now + secs(1);
        }
        // 4. Choking: every node serves every interested peer (the choker is tested on its own).
        for link in self.links.iter_mut().filter(|l| l.closed.is_none()) {
            for end in [&mut link.a, &mut link.b] {
                if end.session.is_peer_interested() && end.session.is_am_choking() {
                    end.session.set_choking(false);
                }
            }
        }
        // 5. Confirm a bounded amount of each node's unconfirmed pieces, as the loop does once a turn, and
        //    tell the node's sessions which passed and which are wanted again.
        for ni in 0..self.nodes.len() {
            let torrent = &mut self.nodes[ni].torrent;
            if !torrent.swarm.has_unconfirmed() {
                continue;
            }
            torrent.confirm_some(crate::torrent::CONFIRM_PER_TURN_BYTES).expect("confirm from storage");
            let confirmed = std::mem::take(&mut torrent.confirmed);
            let failed = std::mem::take(&mut torrent.confirm_failed);
            self.failed_confirmations[ni].extend_from_slice(&failed);
            for link in self.links.iter_mut().filter(|l| l.closed.is_none()) {
                for end in [&mut link.a, &mut link.b] {
                    if end.node != ni {
                        continue;
                    }
                    for &p in &confirmed {
                        end.session.on_we_confirmed(p);
                    }
                    for &p in &failed {
                        end.session.on_piece_wanted(p, &mut self.nodes[ni].torrent.swarm, now);
                    }
                }
            }
        }
        // 6. Announce verified pieces and endgame cancels on every connection of the node.
        for ni in 0..self.nodes.len() {
            let verified = std::mem::take(&mut self.nodes[ni].torrent.verified);
            let taken: Vec<_> = self.nodes[ni].torrent.swarm.drain_endgame_taken().collect();
            if verified.is_empty() && taken.is_empty() {
                continue;
            }
            for link in self.links.iter_mut().filter(|l| l.closed.is_none()) {
                for end in [&mut link.a, &mut link.b] {
                    if end.node != ni {
                        continue;
                    }
                    for b in &taken {
                        end.session.on_block_taken(b);
                    }
                    for &p in &verified {
                        end.session.on_we_have(p, &mut self.nodes[ni].torrent.swarm, now);
                    }
                }
            }
        }
        // 7. Serve requests and put every session's output on the wire.
        for link in self.links.iter_mut().filter(|l| l.closed.is_none()) {
            for (end, pipe) in [(&mut link.a, &mut link.a_to_b), (&mut link.b, &mut link.b_to_a)] {
                let torrent = &mut self.nodes[end.node].torrent;
                let mut unlimited = u64::MAX;
                torrent.serve(&mut end.session, &mut unlimited).expect("serve from storage");
                let out = end.session.pending_output();
                if !out.is_empty() {
                    let n = out.len();
                    pipe.send(out, now);
                    end.session.output_written(n, now);
                }
            }
        }
        self.check_invariants();
    }

    /// Disconnects every peer a node decided to ban, as the loop does.
    fn apply_bans(&mut self) {
        for ni in 0..self.nodes.len() {
            for no in std::mem::take(&mut self.nodes[ni].torrent.to_ban) {
                let found = self
                    .links
                    .iter()
                    .position(|l| (l.a.node == ni && l.a.session.no == no) || (l.b.node == ni && l.b.session.no == no));
                if let Some(li) = found {
                    self.close(li, DropReason::Banned);
                }
            }
        }
    }

    fn close(&mut self, li: usize, reason: DropReason) {
        let link = &mut self.links[li];
        if link.closed.is_some() {
            return;
        }
        link.closed = Some(reason);
        for end in [&mut link.a, &mut link.b] {
            end.session.on_closed(&mut self.nodes[end.node].torrent.swarm);
        }
    }

    fn check_invariants(&self) {
        for node in &self.nodes {
            node.torrent.swarm.check_invariants();
        }
        for link in self.links.iter().filter(|l| l.closed.is_none()) {
            for end in [&link.a, &link.b] {
                let p = end.session.pipeline();
                assert!(p.active() <= crate::peer::pipeline::MAX_DEPTH, "pipeline over its cap");
            }
        }
    }

    /// Steps until `done` holds; panics with the simulated time if `limit` of simulated time passes.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) {
        let deadline = Timestamp::ZERO + limit;
        while !done(self) {
            assert!(self.now < deadline, "simulation did not finish within {limit:?} (at {})", self.now);
            self.step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1_000_000.0;

    struct Outcome {
        finished_at: Timestamp,
        uploads: Vec<u64>,
        steps: u64,
    }

    fn three_seeds(seed: u64) -> Outcome {
        let mut rng = Rng::seeded(seed);
        // 3 MiB + a bit: 49 pieces of 64 KiB, the last one short, over two files.
        let (meta, content) = make_torrent(3 * 1024 * 1024 + 1234, 64 * 1024, seed);
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        let speeds = [(2.0 * MB, millis(10)), (0.5 * MB, millis(40)), (8.0 * MB, millis(2))];
        let mut links = vec![];
        for (rate, latency) in speeds {
            let s = sim.add_node(&meta, Some(&content), &mut rng);
            links.push(sim.connect(leecher, s, rate, latency));
        }
        sim.run_until(secs(60), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content, "byte-identical");
        Outcome {
            finished_at: sim.now,
            uploads: links.iter().map(|&l| sim.responder_session(l).uploaded).collect(),
            steps: sim.steps,
        }
    }

    #[test]
    fn full_download_from_three_seeds_of_different_speeds() {
        let out = three_seeds(1);
        assert!(out.uploads.iter().all(|&u| u > 0), "every seed sent payload: {:?}", out.uploads);
        assert!(out.uploads[2] > out.uploads[1], "the fast seed sent more than the slow one: {:?}", out.uploads);
        // 3 MiB over 10.5 MB/s of seeds: about 0.3 s at full use of every link.
        assert!(out.finished_at < Timestamp::from_millis(800), "finished at {}", out.finished_at);
        // Deterministic: the same seed gives the same run.
        let again = three_seeds(1);
        assert_eq!((again.finished_at, again.uploads, again.steps), (out.finished_at, out.uploads, out.steps));
    }

    #[test]
    fn request_time_out_returns_blocks_to_the_pool() {
        let mut rng = Rng::seeded(2);
        // Large enough that the slow seed is nowhere near endgame when the time-out comes.
        let (meta, content) = make_torrent(12 * 1024 * 1024, 64 * 1024, 2);
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        let dead = sim.add_node(&meta, Some(&content), &mut rng);
        let slow = sim.add_node(&meta, Some(&content), &mut rng);
        let to_dead = sim.connect(leecher, dead, 4.0 * MB, millis(5));
        let _to_slow = sim.connect(leecher, slow, 0.2 * MB, millis(20));
        // The fast seed stops answering after 300 ms with requests outstanding.
        sim.black_hole_responder(to_dead, Timestamp::from_millis(300));
        let before = Timestamp::from_millis(300) + crate::peer::pipeline::REQUEST_TIMEOUT;
        sim.run_until(secs(40), |s| s.now >= before - millis(100));
        let stuck = sim.dialler_session(to_dead).pipeline();
        assert_eq!(stuck.timed_out_total(), 0, "nothing times out early");
        let outstanding = stuck.active();
        assert!(outstanding > crate::peer::pipeline::MIN_DEPTH, "requests were outstanding: {outstanding}");
        // Requests sent while the last pre-silence blocks were arriving time out a little later.
        sim.run_until(secs(45), |s| s.now >= before + secs(10));
        let stuck = sim.dialler_session(to_dead).pipeline();
        assert!(stuck.timed_out_total() >= u64::from(outstanding), "every stuck request timed out");
        assert!(stuck.is_snubbed() && stuck.active() <= 1, "the silent peer is left one request at most");
        assert!(!sim.swarm(leecher).is_complete(), "the time-out, not endgame, returned the blocks");
        sim.run_until(secs(120), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content);
    }

    #[test]
    fn liar_peer_is_banned_and_the_download_completes_from_the_honest_seed() {
        let mut rng = Rng::seeded(4);
        let (meta, content) = make_torrent(2 * 1024 * 1024, 64 * 1024, 4);
        let (_, garbage) = make_torrent(2 * 1024 * 1024, 64 * 1024, 99);
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        let honest = sim.add_node(&meta, Some(&content), &mut rng);
        let liar = sim.add_liar(&meta, &garbage, &mut rng);
        sim.connect(leecher, honest, 1.0 * MB, millis(20));
        let to_liar = sim.connect(leecher, liar, 8.0 * MB, millis(5));
        sim.run_until(secs(60), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content);
        assert_eq!(sim.link_closed(to_liar), Some(DropReason::Banned));
        let totals = sim.swarm(leecher).totals;
        assert!(totals.hash_failures >= 1, "{totals:?}");
        assert!(totals.wasted >= 64 * 1024, "a failed piece counts as waste: {totals:?}");
    }

    #[test]
    fn endgame_does_not_wait_on_the_slow_seed() {
        let mut rng = Rng::seeded(5);
        let (meta, content) = make_torrent(4 * 1024 * 1024, 64 * 1024, 5);
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        let fast = sim.add_node(&meta, Some(&content), &mut rng);
        let slow = sim.add_node(&meta, Some(&content), &mut rng);
        sim.connect(leecher, fast, 8.0 * MB, millis(5));
        let to_slow = sim.connect(leecher, slow, 0.05 * MB, millis(40));
        sim.run_until(secs(60), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content);
        // 4 MiB at 8 MB/s is about 0.5 s; the slow seed alone would need 80 s. Without endgame its last
        // requests (a 16 KiB block takes 0.3 s on its link) would hold the end.
        assert!(sim.now < Timestamp::from_millis(900), "finished at {}", sim.now);
        let cancels = sim.dialler_session(to_slow).cancels_sent;
        assert!(cancels > 0, "blocks the fast seed delivered first were cancelled at the slow one");
        let wasted = sim.swarm(leecher).totals.wasted;
        assert!(wasted <= 256 * 1024, "endgame waste stays small: {wasted} bytes");
    }

    #[test]
    fn a_leecher_uploads_to_another_leecher() {
        let mut rng = Rng::seeded(3);
        let (meta, content) = make_torrent(1024 * 1024 + 77, 16 * 1024, 3);
        let mut sim = Sim::new();
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        let first = sim.add_node(&meta, None, &mut rng);
        let second = sim.add_node(&meta, None, &mut rng);
        let _s_to_first = sim.connect(first, seed, 4.0 * MB, millis(10));
        let first_to_second = sim.connect(second, first, 4.0 * MB, millis(10));
        sim.run_until(secs(60), |s| s.swarm(second).is_complete());
        assert_eq!(sim.content(second), content);
        assert_eq!(
            sim.responder_session(first_to_second).uploaded,
            meta.total_length,
            "the second leecher's only source was the first"
        );
    }

    // ---- unconfirmed pieces (trusted from a resume file) ----------------------------------------

    /// 1 MiB in 16 pieces of 64 KiB; piece 5 changed on disk after the resume file recorded it.
    fn changed_on_disk() -> (Metainfo, Vec<u8>, Vec<u8>, u32) {
        let (meta, content) = make_torrent(1024 * 1024, 64 * 1024, 9);
        let mut on_disk = content.clone();
        let changed = 5;
        on_disk[changed as usize * 64 * 1024 + 777] ^= 0x40;
        (meta, content, on_disk, changed)
    }

    #[test]
    fn unconfirmed_seed_never_serves_a_changed_piece() {
        let mut rng = Rng::seeded(21);
        let (meta, content, on_disk, changed) = changed_on_disk();
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        let seed = sim.add_trusting_node(&meta, &on_disk, false, &mut rng);
        let link = sim.connect(leecher, seed, 4.0 * MB, millis(5));
        // Before any confirmation, the seed advertises nothing.
        assert_eq!(sim.swarm(seed).have().count_ones(), 0);
        sim.run_until(secs(30), |s| s.swarm(leecher).have().count_ones() == 15);
        sim.run_until(secs(40), |s| s.now >= Timestamp::from_secs(35));
        assert_eq!(sim.confirm_failed(seed), [changed], "one line names the changed piece");
        assert!(!sim.swarm(seed).have().get(changed) && !sim.swarm(seed).is_unconfirmed(changed));
        assert!(!sim.swarm(leecher).have().get(changed), "the leecher never got the changed piece");
        assert_eq!(sim.swarm(leecher).totals.hash_failures, 0, "no changed byte was ever sent");
        assert_eq!(sim.link_closed(link), None, "the leecher never asked for what was not advertised");
        assert_eq!(sim.swarm(seed).totals.uploaded, 15 * 64 * 1024);
        assert!(!sim.swarm(seed).wants(changed), "a seed does not fetch the changed piece");
        let got = sim.content(leecher);
        for p in (0..16).filter(|&p| p != changed as usize) {
            assert_eq!(got[p * 65536..(p + 1) * 65536], content[p * 65536..(p + 1) * 65536], "piece {p}");
        }
    }

    #[test]
    fn unconfirmed_download_is_not_complete_until_confirmed_and_fetches_a_changed_piece_again() {
        let mut rng = Rng::seeded(22);
        let (meta, content, on_disk, changed) = changed_on_disk();
        let mut sim = Sim::new();
        let node = sim.add_trusting_node(&meta, &on_disk, true, &mut rng);
        assert!(!sim.swarm(node).is_complete(), "unconfirmed pieces are not complete");
        assert_eq!(sim.swarm(node).left(), content.len() as u64);
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        sim.connect(node, seed, 4.0 * MB, millis(5));
        sim.run_until(secs(30), |s| s.swarm(node).is_complete());
        assert_eq!(sim.confirm_failed(node), [changed]);
        assert_eq!(sim.content(node), content, "byte-identical after fetching the changed piece");
        assert_eq!(sim.swarm(node).totals.downloaded, 64 * 1024, "only the changed piece was fetched");
        assert_eq!(sim.swarm(node).totals.hash_failures, 0);
    }

    #[test]
    fn confirmation_is_bounded_per_turn() {
        let mut rng = Rng::seeded(23);
        let (meta, _, on_disk, changed) = changed_on_disk();
        let mut sim = Sim::new();
        let node = sim.add_trusting_node(&meta, &on_disk, true, &mut rng);
        let t = &mut sim.nodes[node].torrent;
        // 3 pieces of 64 KiB: a budget of 150 KiB stops after the third.
        assert!(t.confirm_some(150 * 1024).expect("confirm"));
        assert_eq!(t.swarm.have().count_ones(), 3);
        assert_eq!(t.confirmed, [0, 1, 2]);
        // A zero budget still makes progress: one piece.
        assert!(t.confirm_some(0).expect("confirm"));
        assert_eq!(t.swarm.have().count_ones(), 4);
        assert!(!t.confirm_some(u64::MAX).expect("confirm"), "nothing left");
        assert_eq!(t.swarm.have().count_ones(), 15);
        assert_eq!(t.confirm_failed, [changed]);
        assert!(t.swarm.wants(changed), "a download fetches it again");
    }

    #[test]
    fn unconfirmed_pieces_confirmed_while_connected_keep_interest_in_the_changed_one() {
        // 32 MiB in 512 pieces: confirming takes 8 steps (64 pieces each), so the seed's bitfield arrives
        // while most pieces are unconfirmed, the changed piece becomes wanted in step 5, and the pieces
        // confirmed after it must not use up the interest it brought.
        let mut rng = Rng::seeded(24);
        let (meta, content) = make_torrent(32 * 1024 * 1024, 64 * 1024, 24);
        let changed = 300;
        let mut on_disk = content.clone();
        on_disk[changed as usize * 64 * 1024 + 9] ^= 1;
        let mut sim = Sim::new();
        let node = sim.add_trusting_node(&meta, &on_disk, true, &mut rng);
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        let link = sim.connect(node, seed, 8.0 * MB, millis(1));
        sim.run_until(secs(5), |s| !s.confirm_failed(node).is_empty());
        assert!(sim.dialler_session(link).is_am_interested(), "the changed piece made the seed interesting");
        assert!(sim.swarm(node).has_unconfirmed(), "pieces are still to confirm after the changed one");
        sim.run_until(secs(30), |s| s.swarm(node).is_complete());
        assert_eq!(sim.confirm_failed(node), [changed]);
        assert_eq!(sim.content(node), content);
        assert_eq!(sim.swarm(node).totals.downloaded, 64 * 1024, "only the changed piece was fetched");
    }
}
