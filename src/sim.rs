//! In-memory swarm simulation (test only): real engines, one per simulated host, wired back to back
//! through byte queues with latency and rate caps, under simulated time, with seeded randomness.
//!
//! Owns: the simulated links, hosts and clock, and the scenarios. It is a second driver of the very engine
//! the event loop drives (`Engine::handle_*` / `poll_*`, the same turn: input, backlog, timers, end of
//! turn, actions and output), so what it checks is what production runs: the data check, the choker,
//! bans, endgame fan-out, confirmation of trusted pieces, several torrents per engine.
//! Data goes through real `Storage` in a temporary directory (the page cache makes that cheap).
//! Must not: open sockets or read the clock.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha1::{Digest, Sha1};

use std::net::SocketAddr;

use crate::bitfield::Bitfield;
use crate::engine::snapshot::{Event, PeerSnapshot};
use crate::engine::torrent::{Mode, TorrentOptions};
use crate::engine::{Action, ConnId, Engine, EngineConfig, TorrentId};
use crate::metainfo::{FileEntry, InfoHash, Metainfo};
use crate::peer::DropReason;
use crate::rng::{Entropy, Rng};
use crate::storage::Storage;
use crate::swarm::Swarm;
use crate::time::{millis, secs, Timestamp};

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
        web_seeds: Vec::new(),
        mapped: Default::default(),
    }
}

/// Links the engines open by themselves (to peers learned by peer exchange): bytes/s and one-way latency.
const DEFAULT_RATE: f64 = 8_000_000.0;
const DEFAULT_LATENCY: Duration = millis(5);

/// One simulated host: an engine with its torrents.
struct Host {
    engine: Engine,
    addr: SocketAddr,
    torrents: Vec<TorrentId>,
    /// Pieces whose confirmation failed, in order (from `Event::ConfirmFailed`).
    failed_confirmations: Vec<u32>,
    /// Trace events, when the host traces (`Sim::trace`).
    trace: Vec<crate::engine::trace::TraceEvent>,
    _dirs: Vec<TempDir>,
    /// Runs the host's disk jobs in place.
    disk: crate::storage::disk::Executor,
    disk_jobs: Vec<crate::storage::disk::Job>,
    disk_done: Vec<crate::storage::disk::Done>,
    /// When the jobs in `disk_jobs` are done (`DISK_LATENCY` after they were queued).
    disk_due: Option<Timestamp>,
}

/// How long the simulated disk takes for a batch of jobs: results come back in a later step, as they
/// come back from the `rill-disk` thread in a later turn of the event loop.
const DISK_LATENCY: Duration = Duration::from_micros(500);

/// One side of a link.
struct End {
    host: usize,
    conn: Option<ConnId>,
    /// Bytes delivered but not yet read by the engine (a socket's receive queue).
    inbox: VecDeque<u8>,
    /// The session as last seen (kept after the connection closes).
    last: PeerSnapshot,
}

/// What travels on a pipe: bytes, or the sender closing.
enum Segment {
    Bytes(Vec<u8>),
    Close,
}

/// One direction of a link: bytes leave at most at `rate` and arrive `latency` later.
struct Pipe {
    rate: f64,
    latency: Duration,
    busy_until: Timestamp,
    queue: VecDeque<(Timestamp, Segment)>,
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
            self.queue.push_back((self.busy_until + self.latency, Segment::Bytes(chunk.to_vec())));
        }
    }

    fn close(&mut self, now: Timestamp) {
        let at = self.busy_until.max(now) + self.latency;
        self.queue.push_back((at, Segment::Close));
    }
}

/// A connection `a` dials to `b`, for one of `a`'s torrents.
struct Link {
    a: End,
    b: End,
    a_to_b: Pipe,
    b_to_a: Pipe,
    closed: Option<DropReason>,
}

/// The engine's output side of one connection, as a writer into its pipe.
struct PipeWriter<'a> {
    pipe: &'a mut Pipe,
    now: Timestamp,
}

impl std::io::Write for PipeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pipe.send(buf, self.now);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection's receive queue, as a reader: `WouldBlock` when empty (the peer has not closed).
struct Inbox<'a>(&'a mut VecDeque<u8>);

impl std::io::Read for Inbox<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let (front, back) = self.0.as_slices();
        let mut n = out.len().min(front.len());
        out[..n].copy_from_slice(&front[..n]);
        if n < out.len() {
            let m = (out.len() - n).min(back.len());
            out[n..n + m].copy_from_slice(&back[..m]);
            n += m;
        }
        self.0.drain(..n);
        Ok(n)
    }
}

pub struct Sim {
    pub now: Timestamp,
    hosts: Vec<Host>,
    links: Vec<Link>,
    /// Datagrams in flight, by (due, sequence): (from, to, bytes).
    datagrams: std::collections::BTreeMap<(Timestamp, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    datagram_seq: u64,
    /// `--encryption` of the hosts added from now on.
    pub encryption: crate::peer::encryption::EncryptionPolicy,
    /// uTP on for the hosts added from now on.
    pub utp: bool,
    /// Hosts added from now on record trace events (see `trace_of`).
    pub trace: bool,
    /// Hosts that refuse TCP connections (as a peer with TCP off: it is reached over uTP).
    pub tcp_refused: Vec<usize>,
    /// Datagrams lost (0..1) and extra random delay (up to this, so they may arrive out of order), seeded.
    pub datagram_loss: f64,
    pub datagram_jitter: Duration,
    /// Datagrams delivered twice (0..1).
    pub datagram_duplicate: f64,
    pub steps: u64,
    rng: Rng,
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
            hosts: Vec::new(),
            links: Vec::new(),
            datagrams: std::collections::BTreeMap::new(),
            datagram_seq: 0,
            encryption: crate::peer::encryption::EncryptionPolicy::Prefer,
            utp: false,
            trace: false,
            tcp_refused: Vec::new(),
            datagram_loss: 0.0,
            datagram_jitter: Duration::ZERO,
            datagram_duplicate: 0.0,
            steps: 0,
            rng: Rng::seeded(0),
        }
    }

    fn new_host(&mut self, rng: &mut Rng) -> usize {
        self.new_host_with(rng, None)
    }

    /// A host; with `dht`, it listens (on 6881, as every simulated host's address says) and runs a DHT
    /// node started from the hosts in `dht` (by index; none for the first node of a DHT).
    fn new_host_with(&mut self, rng: &mut Rng, dht: Option<&[usize]>) -> usize {
        let n = self.hosts.len();
        let addr = SocketAddr::from(([10, 0, (n / 256) as u8, (n % 256) as u8], 6881));
        let mut entropy = Entropy::seeded(rng.next_u64());
        let peer_id = crate::peer::our_peer_id(&mut entropy);
        let config = EngineConfig {
            max_peers: 50,
            max_half_open: 8,
            upload_slots: 4,
            up_limit: None,
            down_limit: None,
            listen_port: dht.map(|_| 6881),
            encryption: self.encryption,
            utp: self.utp,
            trace: self.trace,
            dht: dht.map(|from| crate::engine::dht::DhtConfig {
                bootstrap: from.iter().map(|&h| crate::engine::dht::Bootstrap::Addr(self.hosts[h].addr)).collect(),
                node_file: None,
                ipv6: false,
            }),
        };
        let engine = Engine::new(config, peer_id, Rng::seeded(rng.next_u64()), entropy, self.now);
        self.rng = Rng::seeded(rng.next_u64());
        self.hosts.push(Host {
            engine,
            addr,
            torrents: Vec::new(),
            failed_confirmations: Vec::new(),
            trace: Vec::new(),
            _dirs: Vec::new(),
            disk: crate::storage::disk::Executor::default(),
            disk_jobs: Vec::new(),
            disk_done: Vec::new(),
            disk_due: None,
        });
        n
    }

    /// Adds `meta` to `host` in `mode`, with its data directory holding `on_disk` (if any) and, with
    /// `trusted`, a resume file vouching for every piece.
    fn add_torrent(&mut self, host: usize, meta: &Metainfo, on_disk: Option<&[u8]>, trusted: bool, mode: Mode) {
        let dir = TempDir::new("node");
        if let Some(bytes) = on_disk {
            let mut storage = Storage::open(dir.path(), meta, |_| true).expect("storage");
            storage.write(0, bytes).expect("write the data on disk");
            if trusted {
                let n = meta.piece_hashes.len() as u32;
                storage.save_resume(&meta.info_hash.0, &Bitfield::full(n)).expect("resume file");
            }
        }
        let opts = TorrentOptions {
            dir: dir.path().to_path_buf(),
            mode,
            recheck: false,
            seed_ratio: None,
            uploaded_before: 0,
            extra_peers: vec![],
            save_torrent: None,
            dht: true,
        };
        let h = &mut self.hosts[host];
        let id = h.engine.add_torrent(meta.clone(), opts, self.now).expect("a new torrent");
        h.torrents.push(id);
        h._dirs.push(dir);
    }

    fn leech_mode() -> Mode {
        // Leechers keep seeding: another leecher may depend on them.
        Mode::Download { wanted_files: None, sequential: false, keep_seeding: true }
    }

    /// Adds a host holding `content` in full (a seed, which hashes it at start) or nothing (a leecher).
    pub fn add_node(&mut self, meta: &Metainfo, content: Option<&[u8]>, rng: &mut Rng) -> usize {
        let host = self.new_host(rng);
        match content {
            Some(bytes) => self.add_torrent(host, meta, Some(bytes), false, Mode::Seed { partial: false }),
            None => self.add_torrent(host, meta, None, false, Self::leech_mode()),
        }
        self.activate(host);
        host
    }

    /// Adds a host seeding several torrents, or leeching them (`contents[i]` `None`).
    pub fn add_multi_node(&mut self, torrents: &[(&Metainfo, Option<&[u8]>)], rng: &mut Rng) -> usize {
        let host = self.new_host(rng);
        for (meta, content) in torrents {
            match content {
                Some(bytes) => self.add_torrent(host, meta, Some(bytes), false, Mode::Seed { partial: false }),
                None => self.add_torrent(host, meta, None, false, Self::leech_mode()),
            }
        }
        self.activate(host);
        host
    }

    /// Adds a host that is only a DHT node (no torrent), started from `bootstrap`.
    pub fn add_dht_node(&mut self, bootstrap: &[usize], rng: &mut Rng) -> usize {
        self.new_host_with(rng, Some(bootstrap))
    }

    /// Adds a host with the DHT on (started from `bootstrap`), seeding `meta` (with `content`) or leeching
    /// it; no peer is given to it: it finds them through the DHT.
    pub fn add_dht_torrent_node(
        &mut self,
        meta: &Metainfo,
        content: Option<&[u8]>,
        bootstrap: &[usize],
        rng: &mut Rng,
    ) -> usize {
        let host = self.new_host_with(rng, Some(bootstrap));
        match content {
            Some(bytes) => self.add_torrent(host, meta, Some(bytes), false, Mode::Seed { partial: false }),
            None => self.add_torrent(host, meta, None, false, Self::leech_mode()),
        }
        self.activate(host);
        host
    }

    /// The DHT nodes host `h` knows, and the peers the DHT gave its first torrent.
    pub fn dht_status(&self, h: usize) -> Option<(usize, u64)> {
        let host = &self.hosts[h];
        let id = host.torrents.first().copied().unwrap_or(TorrentId(0));
        host.engine.dht_status(id).or_else(|| host.engine.dht_node_count().map(|n| (n, 0)))
    }

    /// Adds a peer that claims every piece but serves `garbage` in place of the content.
    pub fn add_liar(&mut self, meta: &Metainfo, garbage: &[u8], rng: &mut Rng) -> usize {
        let host = self.new_host(rng);
        self.add_torrent(host, meta, Some(garbage), false, Mode::Seed { partial: true });
        self.activate(host);
        let id = self.hosts[host].torrents[0];
        let t = self.hosts[host].engine.torrent_mut(id).expect("the torrent");
        let data = t.data.as_mut().expect("checked");
        let n = data.ctx.geometry.piece_count();
        data.swarm = Swarm::new(data.ctx.geometry, Bitfield::full(n), Bitfield::full(n), false);
        host
    }

    /// Adds a host whose disk holds `on_disk` and whose resume file vouches for every piece: all are
    /// unconfirmed at start. `download`: it wants every piece (as `rill download`), else only what it
    /// hashed (as `rill seed`, which hashed nothing here).
    pub fn add_trusting_node(&mut self, meta: &Metainfo, on_disk: &[u8], download: bool, rng: &mut Rng) -> usize {
        let host = self.new_host(rng);
        let mode = if download { Self::leech_mode() } else { Mode::Seed { partial: false } };
        self.add_torrent(host, meta, Some(on_disk), true, mode);
        self.activate(host);
        host
    }

    /// Runs a host's start-up checks alone, before it meets anyone.
    fn activate(&mut self, host: usize) {
        self.hosts[host].engine.finish_checks(self.now);
    }

    /// Pieces a host found changed when it confirmed them.
    pub fn confirm_failed(&self, node: usize) -> &[u32] {
        &self.hosts[node].failed_confirmations
    }

    /// Connects `from` (dialling) to `to` for `from`'s first torrent, with a rate cap in bytes/s and a
    /// one-way latency each way. The dial happens when `from`'s engine decides it (at once, here).
    pub fn connect(&mut self, from: usize, to: usize, rate: f64, latency: Duration) -> usize {
        self.connect_torrent(from, to, 0, rate, latency)
    }

    /// `connect` for `from`'s torrent number `torrent` (in the order added).
    pub fn connect_torrent(&mut self, from: usize, to: usize, torrent: usize, rate: f64, latency: Duration) -> usize {
        let end = |host| End { host, conn: None, inbox: VecDeque::new(), last: PeerSnapshot::default() };
        self.links.push(Link {
            a: end(from),
            b: end(to),
            a_to_b: Pipe::new(rate, latency),
            b_to_a: Pipe::new(rate, latency),
            closed: None,
        });
        let addr = self.hosts[to].addr;
        let id = self.hosts[from].torrents[torrent];
        self.hosts[from].engine.handle_peer_hint(id, addr, self.now);
        self.perform_all();
        self.links.len() - 1
    }

    /// Tells `from` of `to`'s address for its first torrent, without preparing a link (a dial over TCP to
    /// a host in `tcp_refused` fails; over uTP it goes through the datagram network).
    pub fn hint(&mut self, from: usize, to: usize) {
        let addr = self.hosts[to].addr;
        let id = self.hosts[from].torrents[0];
        self.hosts[from].engine.handle_peer_hint(id, addr, self.now);
        self.perform_all();
    }

    /// Every connection of host `h` now.
    /// The trace events host `h` recorded so far.
    pub fn trace_of(&self, h: usize) -> &[crate::engine::trace::TraceEvent] {
        &self.hosts[h].trace
    }

    pub fn peers(&self, h: usize) -> Vec<PeerSnapshot> {
        self.hosts[h].engine.snapshot().peers
    }

    /// A command to a host's engine (pause, resume, remove a torrent).
    pub fn command(&mut self, host: usize, command: crate::engine::snapshot::Command) {
        self.hosts[host].engine.handle_command(command, self.now);
        self.perform_all();
    }

    /// The id of a host's torrent number `torrent`.
    pub fn torrent_id(&self, host: usize, torrent: usize) -> TorrentId {
        self.hosts[host].torrents[torrent]
    }

    /// The links from `from` to `to`, in the order opened.
    pub fn links_between(&self, from: usize, to: usize) -> Vec<usize> {
        (0..self.links.len()).filter(|&l| self.links[l].a.host == from && self.links[l].b.host == to).collect()
    }

    /// Links opened so far (a dial again after a close adds one).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// From `at` on, everything `link`'s dialled side (`b`) sends is lost.
    pub fn black_hole_responder(&mut self, link: usize, at: Timestamp) {
        self.links[link].b_to_a.black_hole_from = Some(at);
    }

    /// The first torrent's swarm of a host.
    pub fn swarm(&self, node: usize) -> &Swarm {
        self.swarm_of(node, 0)
    }

    pub fn swarm_of(&self, node: usize, torrent: usize) -> &Swarm {
        let h = &self.hosts[node];
        h.engine.swarm(h.torrents[torrent]).expect("an active torrent")
    }

    /// The dialling side's session as last seen (kept after the link closed).
    pub fn dialler_session(&self, link: usize) -> &PeerSnapshot {
        &self.links[link].a.last
    }

    pub fn responder_session(&self, link: usize) -> &PeerSnapshot {
        &self.links[link].b.last
    }

    pub fn link_closed(&self, link: usize) -> Option<DropReason> {
        self.links[link].closed
    }

    /// Reads back a host's first torrent's content through its storage.
    pub fn content(&mut self, node: usize) -> Vec<u8> {
        self.content_of(node, 0)
    }

    pub fn content_of(&mut self, node: usize, torrent: usize) -> Vec<u8> {
        let h = &mut self.hosts[node];
        let t = h.engine.torrent_mut(h.torrents[torrent]).expect("the torrent");
        let data = t.data.as_mut().expect("checked");
        let mut out = vec![0; data.ctx.geometry.total_length() as usize];
        data.disk.lock().read(0, &mut out).expect("read back");
        out
    }

    /// A host's first torrent's data plane (tests that drive a part of it directly).
    pub fn torrent_core(&mut self, node: usize) -> &mut crate::torrent::Torrent {
        let h = &mut self.hosts[node];
        h.engine.torrent_mut(h.torrents[0]).and_then(|t| t.data.as_mut()).expect("checked")
    }

    fn next_event_time(&self) -> Timestamp {
        let mut next = Timestamp::MAX;
        for h in &self.hosts {
            if h.engine.has_work() {
                // A turn with work (hashing 4 MiB of trusted data, a backlog) takes about a millisecond
                // of real time: the network goes on meanwhile.
                next = next.min(self.now + millis(1));
            }
            if let Some(t) = h.engine.poll_timeout() {
                next = next.min(t);
            }
        }
        if let Some(((t, _), _)) = self.datagrams.first_key_value() {
            next = next.min(*t);
        }
        for h in &self.hosts {
            if let Some(due) = h.disk_due {
                next = next.min(due);
            }
        }
        for l in &self.links {
            for pipe in [&l.a_to_b, &l.b_to_a] {
                if let Some((t, _)) = pipe.queue.front() {
                    next = next.min(*t);
                }
            }
        }
        next.max(self.now)
    }

    /// Advances to the next event and runs one turn of every engine; invariants are checked after.
    pub fn step(&mut self) {
        self.steps += 1;
        self.now = self.next_event_time();
        let now = self.now;
        // 1. Deliver due segments into the receiving side's inbox (or close it), and let its engine read.
        for li in 0..self.links.len() {
            for a_to_b in [true, false] {
                loop {
                    let link = &mut self.links[li];
                    let pipe = if a_to_b { &mut link.a_to_b } else { &mut link.b_to_a };
                    if !pipe.queue.front().is_some_and(|(t, _)| *t <= now) {
                        break;
                    }
                    let (_, segment) = pipe.queue.pop_front().expect("front checked");
                    let end = if a_to_b { &mut link.b } else { &mut link.a };
                    let Some(conn) = end.conn else {
                        continue;
                    };
                    let engine = &mut self.hosts[end.host].engine;
                    match segment {
                        Segment::Bytes(bytes) => {
                            end.inbox.extend(bytes);
                            engine.handle_peer_input(conn, &mut Inbox(&mut end.inbox), now);
                        }
                        Segment::Close => {
                            // Bytes sent before the close are read first, as from a socket.
                            engine.handle_peer_input(conn, &mut Inbox(&mut end.inbox), now);
                            engine.handle_peer_error(conn, DropReason::ClosedByPeer);
                        }
                    }
                }
            }
        }
        // Datagrams due reach their host's engine (none there: lost, as on a network).
        while self.datagrams.first_key_value().is_some_and(|((t, _), _)| *t <= now) {
            let (_, (from, to, data)) = self.datagrams.pop_first().expect("first checked");
            if let Some(h) = self.hosts.iter().position(|x| x.addr == to) {
                self.hosts[h].engine.handle_datagram(from, &data, now);
            }
        }
        // 2. The engines' turns: backlog, timers, end of turn; actions and output after each.
        for h in 0..self.hosts.len() {
            for conn in self.hosts[h].engine.take_backlog(now) {
                if let Some(end) = self.end_of(h, conn) {
                    let (li, a) = end;
                    let link = &mut self.links[li];
                    let end = if a { &mut link.a } else { &mut link.b };
                    self.hosts[h].engine.handle_peer_input(conn, &mut Inbox(&mut end.inbox), now);
                }
            }
            self.hosts[h].engine.handle_timeout(now);
            self.perform_all();
            self.hosts[h].engine.end_turn(now);
            self.perform_all();
        }
        self.observe();
        for h in &self.hosts {
            h.engine.check_invariants();
        }
    }

    /// The link end that is `conn` on host `h`: (link, is the dialling side).
    fn end_of(&self, h: usize, conn: ConnId) -> Option<(usize, bool)> {
        self.links.iter().enumerate().find_map(|(li, l)| {
            if l.a.host == h && l.a.conn == Some(conn) {
                Some((li, true))
            } else if l.b.host == h && l.b.conn == Some(conn) {
                Some((li, false))
            } else {
                None
            }
        })
    }

    /// Performs every host's actions and output until none has any.
    fn perform_all(&mut self) {
        let now = self.now;
        loop {
            let mut any = false;
            for h in 0..self.hosts.len() {
                while let Some(event) = self.hosts[h].engine.poll_trace() {
                    self.hosts[h].trace.push(event);
                }
                while let Some(event) = self.hosts[h].engine.poll_event() {
                    match event {
                        Event::ConfirmFailed { piece, .. } => self.hosts[h].failed_confirmations.push(piece),
                        Event::PeerClosed { conn, reason, peer, .. } => {
                            if let Some(li) = self.links.iter().position(|l| {
                                (l.a.host == h && l.a.conn == Some(conn)) || (l.b.host == h && l.b.conn == Some(conn))
                            }) {
                                let link = &mut self.links[li];
                                let end = if link.a.host == h && link.a.conn == Some(conn) {
                                    &mut link.a
                                } else {
                                    &mut link.b
                                };
                                end.last = peer;
                                link.closed.get_or_insert(reason);
                            }
                        }
                        _ => {}
                    }
                }
                while let Some(action) = self.hosts[h].engine.poll_action() {
                    any = true;
                    match action {
                        Action::Connect { conn, addr } => self.open_link(h, conn, addr),
                        Action::Close { conn } => {
                            if let Some((li, a)) = self.end_of(h, conn) {
                                let link = &mut self.links[li];
                                let (end, pipe) =
                                    if a { (&mut link.a, &mut link.a_to_b) } else { (&mut link.b, &mut link.b_to_a) };
                                end.conn = None;
                                pipe.close(now);
                            }
                        }
                        // The simulation has no trackers and no DNS.
                        Action::Tracker(_) | Action::ResolveInBackground { .. } => {}
                        Action::Datagram { to, data } => {
                            let from = self.hosts[h].addr;
                            self.send_datagram(from, to, data);
                        }
                    }
                }
                let mut buf = [0u8; crate::utp::MAX_DATAGRAM];
                while let Some((to, len)) = self.hosts[h].engine.poll_datagram(&mut buf) {
                    any = true;
                    let from = self.hosts[h].addr;
                    self.send_datagram(from, to, buf[..len].to_vec());
                }
                // Disk jobs run in place, `DISK_LATENCY` after they were queued (the event loop runs them on
                // its `rill-disk` thread).
                let host = &mut self.hosts[h];
                if host.disk_due.is_some_and(|due| due <= now) {
                    any = true;
                    host.disk_due = None;
                    host.disk.run(&mut host.disk_jobs, &mut host.disk_done);
                    for done in host.disk_done.drain(..) {
                        host.engine.handle_disk_done(done, now);
                    }
                }
                let before = host.disk_jobs.len();
                host.disk_jobs.extend(std::iter::from_fn(|| host.engine.poll_disk_job()));
                if host.disk_jobs.len() > before && host.disk_due.is_none() {
                    host.disk_due = Some(now + DISK_LATENCY);
                }
                while let Some(conn) = self.hosts[h].engine.poll_transmit(now) {
                    any = true;
                    if let Some((li, a)) = self.end_of(h, conn) {
                        let link = &mut self.links[li];
                        let pipe = if a { &mut link.a_to_b } else { &mut link.b_to_a };
                        self.hosts[h].engine.handle_peer_output(conn, &mut PipeWriter { pipe, now }, now);
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    /// A datagram into the simulated network: lost, delayed (and so reordered) and duplicated as the sim's
    /// settings say, with the sim's seeded generator.
    fn send_datagram(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let copies = if self.datagram_loss > 0.0 && (self.rng.below(1_000_000) as f64) < self.datagram_loss * 1e6 {
            0
        } else if self.datagram_duplicate > 0.0 && (self.rng.below(1_000_000) as f64) < self.datagram_duplicate * 1e6 {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter_us = self.datagram_jitter.as_micros() as u64;
            let extra = if jitter_us > 0 { Duration::from_micros(self.rng.below(jitter_us)) } else { Duration::ZERO };
            self.datagram_seq += 1;
            self.datagrams.insert((self.now + DEFAULT_LATENCY + extra, self.datagram_seq), (from, to, data.clone()));
        }
    }

    /// Host `h`'s engine dials `addr`: the link `connect` prepared for it comes up at once.
    fn open_link(&mut self, h: usize, conn: ConnId, addr: SocketAddr) {
        let now = self.now;
        let refused = |x: usize| self.tcp_refused.contains(&x);
        let Some(to) = self.hosts.iter().position(|x| x.addr == addr).filter(|&to| !refused(to)) else {
            self.hosts[h]
                .engine
                .handle_peer_error(conn, DropReason::ConnectFailed(std::io::ErrorKind::ConnectionRefused));
            return;
        };
        let pending =
            self.links.iter().position(|l| l.a.host == h && l.b.host == to && l.a.conn.is_none() && l.closed.is_none());
        // A dial again (after a pause, say) gets a new link like the last one between the two.
        let again = self.links.iter().rposition(|l| l.a.host == h && l.b.host == to);
        let li = match (pending, again) {
            (Some(li), _) => li,
            (None, Some(last)) => {
                let (rate, latency) = (self.links[last].a_to_b.rate, self.links[last].a_to_b.latency);
                let end = |host| End { host, conn: None, inbox: VecDeque::new(), last: PeerSnapshot::default() };
                self.links.push(Link {
                    a: end(h),
                    b: end(to),
                    a_to_b: Pipe::new(rate, latency),
                    b_to_a: Pipe::new(rate, latency),
                    closed: None,
                });
                self.links.len() - 1
            }
            // A peer the engine learned of by itself (peer exchange): a link of the default kind.
            (None, None) => {
                let end = |host| End { host, conn: None, inbox: VecDeque::new(), last: PeerSnapshot::default() };
                self.links.push(Link {
                    a: end(h),
                    b: end(to),
                    a_to_b: Pipe::new(DEFAULT_RATE, DEFAULT_LATENCY),
                    b_to_a: Pipe::new(DEFAULT_RATE, DEFAULT_LATENCY),
                    closed: None,
                });
                self.links.len() - 1
            }
        };
        let from_addr = self.hosts[h].addr;
        let Some(incoming) = self.hosts[to].engine.handle_incoming(from_addr, now) else {
            self.hosts[h]
                .engine
                .handle_peer_error(conn, DropReason::ConnectFailed(std::io::ErrorKind::ConnectionRefused));
            self.links[li].closed = Some(DropReason::NotNeeded);
            return;
        };
        self.links[li].a.conn = Some(conn);
        self.links[li].b.conn = Some(incoming);
        self.hosts[h].engine.handle_connected(conn, now);
    }

    /// Records every live session's state (tests read it after the link closed, too).
    fn observe(&mut self) {
        for l in &mut self.links {
            for end in [&mut l.a, &mut l.b] {
                if let Some(conn) = end.conn {
                    if let Some(p) = self.hosts[end.host].engine.peer(conn) {
                        end.last = p;
                    }
                }
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
        let stuck = sim.dialler_session(to_dead);
        assert_eq!(stuck.requests_timed_out, 0, "nothing times out early");
        let outstanding = stuck.requests_active;
        assert!(outstanding > crate::peer::pipeline::MIN_DEPTH, "requests were outstanding: {outstanding}");
        // Requests sent while the last pre-silence blocks were arriving time out a little later.
        sim.run_until(secs(45), |s| s.now >= before + secs(10));
        let stuck = sim.dialler_session(to_dead);
        assert!(stuck.requests_timed_out >= u64::from(outstanding), "every stuck request timed out");
        assert!(stuck.snubbed && stuck.requests_active <= 1, "the silent peer is left one request at most");
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
    fn the_trace_accounts_for_every_byte_piece_and_peer_of_a_download() {
        use crate::engine::trace::TraceKind;
        use crate::peer::trace::SessionEvent;
        let mut rng = Rng::seeded(6);
        let (meta, content) = make_torrent(2 * 1024 * 1024 + 777, 64 * 1024, 6);
        let (_, garbage) = make_torrent(2 * 1024 * 1024 + 777, 64 * 1024, 98);
        let mut sim = Sim::new();
        sim.trace = true;
        let leecher = sim.add_node(&meta, None, &mut rng);
        sim.trace = false;
        let fast = sim.add_node(&meta, Some(&content), &mut rng);
        let liar = sim.add_liar(&meta, &garbage, &mut rng);
        sim.connect(leecher, fast, 1.0 * MB, millis(20));
        sim.connect(leecher, liar, 8.0 * MB, millis(5));
        sim.run_until(secs(60), |s| s.swarm(leecher).is_complete());
        sim.run_until(secs(70), |s| s.now >= Timestamp::from_secs(3));
        assert_eq!(sim.content(leecher), content);
        let totals = sim.swarm(leecher).totals;
        let trace = sim.trace_of(leecher);
        assert!(trace.windows(2).all(|w| w[0].at <= w[1].at), "events are in time order");
        let mut known = std::collections::HashSet::new();
        let (mut received, mut verified, mut failed, mut completed, mut rates, mut cancels) =
            (0u64, 0usize, 0u32, 0, 0, 0);
        for e in trace {
            match &e.kind {
                TraceKind::ConnectAttempt { peer, .. } | TraceKind::Accepted { peer, .. } => {
                    assert!(known.insert(*peer), "a peer number is never reused");
                }
                TraceKind::Session { peer, event, .. } => {
                    assert!(known.contains(peer), "{peer:?} had a connect event first");
                    match event {
                        SessionEvent::Block { block, latency, .. } => {
                            assert!(*latency >= millis(10), "a round trip takes two link latencies");
                            received += u64::from(block.len);
                        }
                        SessionEvent::CancelSent(_) => cancels += 1,
                        _ => {}
                    }
                }
                TraceKind::RateSample { peer, .. } => {
                    assert!(known.contains(peer));
                    rates += 1;
                }
                TraceKind::PieceVerified { .. } => verified += 1,
                TraceKind::PieceFailed { .. } => failed += 1,
                TraceKind::Completed { .. } => completed += 1,
                TraceKind::Lost { .. } => panic!("nothing is lost while the driver drains every turn"),
                _ => {}
            }
        }
        assert_eq!(received, content.len() as u64 + totals.wasted, "received = size + waste");
        assert_eq!(verified, meta.piece_hashes.len(), "every piece verified once");
        assert_eq!(failed, totals.hash_failures);
        assert!(failed >= 1, "the liar's piece failed");
        assert_eq!(completed, 1);
        assert!(rates > 0, "rate samples");
        let cancels_sent: u64 = sim.peers(leecher).iter().map(|p| p.cancels_sent).sum();
        assert!(cancels >= cancels_sent, "every cancel of the live peers is traced: {cancels} {cancels_sent}");
        let dropped_banned =
            trace.iter().any(|e| matches!(e.kind, TraceKind::PeerDropped { reason: DropReason::Banned, .. }));
        assert!(dropped_banned, "the liar's drop is traced with its reason");
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

    #[test]
    fn a_have_with_nothing_else_to_send_reaches_the_peer_within_the_second() {
        // The first leecher has nothing to ask of the second: its haves to it go alone, at the loop's
        // once-a-second flush (`PeerSession::has_urgent_output`), and make the second interested. (Private:
        // no PEX message goes along.)
        let mut rng = Rng::seeded(4);
        let (mut meta, content) = make_torrent(4 * 1024 * 1024, 64 * 1024, 4);
        meta.private = true;
        let mut sim = Sim::new();
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        let first = sim.add_node(&meta, None, &mut rng);
        let second = sim.add_node(&meta, None, &mut rng);
        sim.connect(first, seed, 0.5 * MB, millis(10));
        let second_to_first = sim.connect(second, first, 4.0 * MB, millis(10));
        sim.run_until(secs(30), |s| s.swarm(first).have().count_ones() > 0);
        let verified_at = sim.now;
        assert!(!sim.dialler_session(second_to_first).am_interested);
        sim.run_until(secs(30), |s| s.dialler_session(second_to_first).am_interested);
        let waited = sim.now - verified_at;
        assert!(waited <= millis(1100), "the have took {waited:?}");
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
    fn confirmation_is_queued_on_the_disk_and_decided_by_its_verdicts() {
        use crate::storage::disk::{DiskQueue, Done, Executor};
        let mut rng = Rng::seeded(23);
        let (meta, _, on_disk, changed) = changed_on_disk();
        let mut sim = Sim::new();
        let node = sim.add_trusting_node(&meta, &on_disk, true, &mut rng);
        let t = sim.torrent_core(node);
        let mut disk = DiskQueue::default();
        t.confirm_some(&mut disk);
        let mut jobs: Vec<_> = std::iter::from_fn(|| disk.poll_job()).collect();
        // 16 pieces of 64 KiB: all fit under the bound on bytes in flight.
        assert_eq!(jobs.len(), 16, "every unconfirmed piece is queued");
        assert_eq!(t.swarm.have().count_ones(), 0, "nothing is had before its verdict");
        t.confirm_some(&mut disk);
        assert!(disk.poll_job().is_none(), "a piece is queued once");
        let mut done = Vec::new();
        Executor::default().run(&mut jobs, &mut done);
        for d in done {
            if let Done::Verified { piece, result, .. } = d {
                t.on_confirm_verdict(piece, result.expect("read"));
            }
        }
        assert_eq!(t.swarm.have().count_ones(), 15);
        assert_eq!(t.confirm_failed, [changed]);
        assert!(t.swarm.wants(changed), "a download fetches it again");
        assert!(!t.swarm.has_unconfirmed(), "nothing left");
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
        assert!(sim.dialler_session(link).am_interested, "the changed piece made the seed interesting");
        assert!(sim.swarm(node).has_unconfirmed(), "pieces are still to confirm after the changed one");
        sim.run_until(secs(30), |s| s.swarm(node).is_complete());
        assert_eq!(sim.confirm_failed(node), [changed]);
        assert_eq!(sim.content(node), content);
        assert_eq!(sim.swarm(node).totals.downloaded, 64 * 1024, "only the changed piece was fetched");
    }

    // ---- several torrents in one engine -------------------------------------------------------------

    /// A second test torrent with its own name and info-hash.
    fn other_torrent(len: u64, piece_length: u32, seed: u64) -> (Metainfo, Vec<u8>) {
        let (mut meta, content) = make_torrent(len, piece_length, seed);
        meta.name = "other".into();
        meta.info_hash = InfoHash(Sha1::digest(b"other").into());
        (meta, content)
    }

    #[test]
    fn two_torrents_share_peers_in_one_engine() {
        let mut rng = Rng::seeded(31);
        let (meta_a, content_a) = make_torrent(2 * 1024 * 1024, 64 * 1024, 31);
        let (meta_b, content_b) = other_torrent(3 * 1024 * 1024 + 5, 32 * 1024, 32);
        let mut sim = Sim::new();
        // One host seeds both; one leeches both from it; a third leeches B from the second only.
        let seed = sim.add_multi_node(&[(&meta_a, Some(&content_a)), (&meta_b, Some(&content_b))], &mut rng);
        let both = sim.add_multi_node(&[(&meta_a, None), (&meta_b, None)], &mut rng);
        let only_b = sim.add_node(&meta_b, None, &mut rng);
        let to_a = sim.connect_torrent(both, seed, 0, 2.0 * MB, millis(10));
        let to_b = sim.connect_torrent(both, seed, 1, 2.0 * MB, millis(10));
        let from_third = sim.connect(only_b, both, 4.0 * MB, millis(5));
        sim.run_until(secs(60), |s| {
            s.swarm_of(both, 0).is_complete() && s.swarm_of(both, 1).is_complete() && s.swarm(only_b).is_complete()
        });
        assert_eq!(sim.content_of(both, 0), content_a, "A byte-identical");
        assert_eq!(sim.content_of(both, 1), content_b, "B byte-identical");
        assert_eq!(sim.content(only_b), content_b, "B byte-identical at the third host");
        // Two connections between the same two addresses, one per torrent, each routed to its torrent.
        assert_eq!(sim.responder_session(to_a).torrent, Some(sim.torrent_id(seed, 0)));
        assert_eq!(sim.responder_session(to_b).torrent, Some(sim.torrent_id(seed, 1)));
        assert_eq!(sim.responder_session(from_third).torrent, Some(sim.torrent_id(both, 1)));
        assert_eq!(sim.responder_session(to_a).uploaded, meta_a.total_length, "A came from the seed");
        assert!(sim.responder_session(from_third).uploaded > 0, "the host leeching both served B onwards");
    }

    /// One host seeds A (2 MiB) and B (3 MiB), another fetches both over 4 MB/s links, with `limit` applied
    /// to torrent A at the host `limited` (0: the seed, its upload; 1: the leecher, its download). Returns
    /// the seconds B and A took.
    fn one_torrent_limited(limited: usize, seed: u64) -> (f64, f64) {
        const RATE: u64 = 256 * 1024;
        let mut rng = Rng::seeded(seed);
        let (meta_a, content_a) = make_torrent(2 * 1024 * 1024, 64 * 1024, seed);
        let (meta_b, content_b) = other_torrent(3 * 1024 * 1024, 64 * 1024, seed + 1);
        let mut sim = Sim::new();
        let hosts = [
            sim.add_multi_node(&[(&meta_a, Some(&content_a)), (&meta_b, Some(&content_b))], &mut rng),
            sim.add_multi_node(&[(&meta_a, None), (&meta_b, None)], &mut rng),
        ];
        let (up, down) = if limited == 0 { (Some(RATE), None) } else { (None, Some(RATE)) };
        let id = sim.torrent_id(hosts[limited], 0);
        sim.hosts[hosts[limited]].engine.set_torrent_rate_limits(id, up, down, sim.now);
        assert_eq!(sim.hosts[hosts[limited]].engine.torrent_rate_limits(id), (up, down));
        sim.connect_torrent(hosts[1], hosts[0], 0, 4.0 * MB, millis(10));
        sim.connect_torrent(hosts[1], hosts[0], 1, 4.0 * MB, millis(10));
        let leecher = hosts[1];
        sim.run_until(secs(60), |s| s.swarm_of(leecher, 1).is_complete());
        let b_done = sim.now.as_micros() as f64 / 1e6;
        let a_by_then = sim.swarm_of(leecher, 0).totals.downloaded;
        // The bucket starts full (a quarter second of rate) and a read or a served block may run it into debt.
        let allowed = RATE as f64 * b_done + (RATE / 4) as f64 + 64.0 * 1024.0;
        assert!((a_by_then as f64) <= allowed, "A got {a_by_then} B in {b_done:.2} s, limit {RATE} B/s");
        sim.run_until(secs(60), |s| s.swarm_of(leecher, 0).is_complete());
        assert_eq!(sim.content_of(leecher, 0), content_a);
        assert_eq!(sim.content_of(leecher, 1), content_b);
        (b_done, sim.now.as_micros() as f64 / 1e6)
    }

    #[test]
    fn a_torrent_download_limit_holds_its_rate_while_the_other_torrent_runs_free() {
        let (b, a) = one_torrent_limited(1, 41);
        assert!(b < 3.0, "B is not limited: {b:.2} s");
        // 2 MiB at 256 KiB/s, less the bucket's first quarter second: 7.75 s at the limit.
        assert!((7.0..10.0).contains(&a), "A kept to its limit, and not below it: {a:.2} s");
    }

    #[test]
    fn a_torrent_upload_limit_holds_its_rate_while_the_other_torrent_is_served_freely() {
        let (b, a) = one_torrent_limited(0, 43);
        assert!(b < 3.0, "B is not limited: {b:.2} s");
        assert!((7.0..10.0).contains(&a), "A served at its limit, and not below it: {a:.2} s");
    }

    #[test]
    fn a_paused_torrent_closes_its_peers_and_resumes_where_it_was() {
        use crate::engine::snapshot::Command;
        let mut rng = Rng::seeded(33);
        let (meta, content) = make_torrent(8 * 1024 * 1024, 64 * 1024, 33);
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        let link = sim.connect(leecher, seed, 2.0 * MB, millis(10));
        sim.run_until(secs(30), |s| s.swarm(leecher).have().count_ones() >= 32);
        let id = sim.torrent_id(leecher, 0);
        sim.command(leecher, Command::Pause(id));
        sim.run_until(secs(30), |s| s.link_closed(link).is_some());
        let had = sim.swarm(leecher).have().count_ones();
        let until = sim.now + secs(5);
        sim.run_until(secs(40), |s| s.now >= until);
        assert_eq!(sim.swarm(leecher).have().count_ones(), had, "nothing arrives while paused");
        assert!(!sim.swarm(leecher).is_complete());
        sim.command(leecher, Command::Resume(id));
        sim.run_until(secs(120), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content);
        assert!(sim.link_count() > 1, "the seed was dialled again after the pause");
        let downloaded = sim.swarm(leecher).totals.downloaded;
        assert!(downloaded < meta.total_length + 512 * 1024, "what was had before the pause was kept: {downloaded}");
    }

    #[test]
    fn peer_exchange_leads_a_leecher_to_a_seed_nobody_else_named() {
        let mut rng = Rng::seeded(35);
        let (meta, content) = make_torrent(4 * 1024 * 1024, 64 * 1024, 35);
        let mut sim = Sim::new();
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        let middle = sim.add_node(&meta, None, &mut rng);
        let late = sim.add_node(&meta, None, &mut rng);
        // The middle leecher is still fetching (so still connected to the seed) when the first exchange goes.
        sim.connect(middle, seed, 1.0 * MB, millis(5));
        // The late leecher knows only the middle one, which is slow to share.
        sim.connect(late, middle, 0.2 * MB, millis(20));
        sim.run_until(secs(60), |s| s.swarm(late).is_complete());
        assert_eq!(sim.content(late), content);
        let found = sim.links_between(late, seed);
        assert!(!found.is_empty(), "the late leecher dialled the seed it learned of by peer exchange");
        let from_seed: u64 = found.iter().map(|&l| sim.responder_session(l).uploaded).sum();
        assert!(from_seed >= meta.total_length / 2, "most of the data came from the seed: {from_seed}");
    }

    #[test]
    fn the_dht_leads_a_leecher_to_a_seed_with_no_tracker_and_no_peer_given() {
        let mut rng = Rng::seeded(42);
        let (meta, content) = make_torrent(2 * 1024 * 1024, 64 * 1024, 42);
        let mut sim = Sim::new();
        // A small DHT: one first node, a few that know only it.
        let first = sim.add_dht_node(&[], &mut rng);
        for _ in 0..6 {
            sim.add_dht_node(&[first], &mut rng);
        }
        let seed = sim.add_dht_torrent_node(&meta, Some(&content), &[first], &mut rng);
        let leecher = sim.add_dht_torrent_node(&meta, None, &[first], &mut rng);
        sim.run_until(secs(120), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content);
        assert!(!sim.links_between(leecher, seed).is_empty() || !sim.links_between(seed, leecher).is_empty());
        let (nodes, found) = sim.dht_status(leecher).expect("the DHT is on");
        assert!(found >= 1, "the DHT gave the leecher the seed");
        assert!(nodes >= 7, "the leecher's table filled from the first node: {nodes}");
    }

    #[test]
    fn a_private_torrent_never_asks_the_dht() {
        let mut rng = Rng::seeded(43);
        let (mut meta, content) = make_torrent(256 * 1024, 64 * 1024, 43);
        meta.private = true;
        let mut sim = Sim::new();
        let first = sim.add_dht_node(&[], &mut rng);
        let seed = sim.add_dht_torrent_node(&meta, Some(&content), &[first], &mut rng);
        let leecher = sim.add_dht_torrent_node(&meta, None, &[first], &mut rng);
        sim.run_until(secs(60), |s| s.now >= Timestamp::ZERO + secs(50));
        assert!(sim.swarm(leecher).have().count_ones() == 0, "nothing came without a tracker or the DHT");
        assert!(sim.links_between(leecher, seed).is_empty() && sim.links_between(seed, leecher).is_empty());
        assert_eq!(sim.dht_status(leecher).map(|(_, found)| found), Some(0));
        // The DHT itself runs (the hosts know each other), it is only never asked for this torrent.
        assert!(sim.dht_status(leecher).is_some_and(|(nodes, _)| nodes >= 2));
    }

    #[test]
    fn rc4_both_ways_when_every_host_requires_it() {
        use crate::peer::encryption::EncryptionPolicy;
        let mut rng = Rng::seeded(51);
        let (meta, content) = make_torrent(3 * 1024 * 1024 + 77, 64 * 1024, 51);
        let mut sim = Sim::new();
        sim.encryption = EncryptionPolicy::Require;
        let leecher = sim.add_node(&meta, None, &mut rng);
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        let link = sim.connect(leecher, seed, 4.0 * MB, millis(5));
        sim.run_until(secs(60), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content, "byte-identical through RC4");
        assert!(sim.responder_session(link).uploaded >= meta.total_length);
        assert_eq!(sim.responder_session(link).encryption, crate::engine::snapshot::PeerEncryption::Rc4);
        assert_eq!(sim.link_count(), 1, "one connection: MSE at once, no retry");
    }

    #[test]
    fn a_seed_that_requires_rc4_is_reached_after_one_refused_plaintext_handshake() {
        use crate::peer::encryption::EncryptionPolicy;
        let mut rng = Rng::seeded(52);
        let (meta, content) = make_torrent(1024 * 1024, 64 * 1024, 52);
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        sim.encryption = EncryptionPolicy::Require;
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        sim.connect(leecher, seed, 4.0 * MB, millis(5));
        sim.run_until(secs(60), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.content(leecher), content);
        let links = sim.links_between(leecher, seed);
        assert_eq!(links.len(), 2, "a plaintext attempt, then MSE: {links:?}");
        assert_eq!(sim.responder_session(links[1]).encryption, crate::engine::snapshot::PeerEncryption::Rc4);
        // A seed with encryption off is reached in plaintext by a leecher that requires nothing.
        let mut sim = Sim::new();
        let leecher = sim.add_node(&meta, None, &mut rng);
        sim.encryption = EncryptionPolicy::Off;
        let seed = sim.add_node(&meta, Some(&content), &mut rng);
        sim.connect(leecher, seed, 4.0 * MB, millis(5));
        sim.run_until(secs(60), |s| s.swarm(leecher).is_complete());
        assert_eq!(sim.links_between(leecher, seed).len(), 1);
    }

    /// uTP over a lossy, reordering, duplicating network, through the whole engine: a seed that refuses TCP
    /// (as a libtorrent peer with TCP off) is reached over uTP after one failed TCP connect.
    fn utp_download(seed: u64, loss: f64, jitter: Duration, duplicate: f64) -> (Sim, usize, Vec<u8>) {
        let mut rng = Rng::seeded(seed);
        let (meta, content) = make_torrent(2 * 1024 * 1024 + 333, 64 * 1024, seed);
        let mut sim = Sim::new();
        sim.utp = true;
        (sim.datagram_loss, sim.datagram_jitter, sim.datagram_duplicate) = (loss, jitter, duplicate);
        let leecher = sim.add_node(&meta, None, &mut rng);
        let seeder = sim.add_node(&meta, Some(&content), &mut rng);
        sim.tcp_refused.push(seeder);
        sim.hint(leecher, seeder);
        let mut seen_utp = false;
        sim.run_until(secs(300), |s| {
            seen_utp |= s.peers(leecher).iter().any(|p| p.utp && p.downloaded > 0);
            s.swarm(leecher).is_complete()
        });
        assert!(seen_utp, "the data came over uTP");
        assert_eq!(sim.content(leecher), content, "byte-identical over uTP");
        (sim, leecher, content)
    }

    #[test]
    fn utp_carries_a_download_over_a_clean_network() {
        let (sim, _, _) = utp_download(61, 0.0, Duration::ZERO, 0.0);
        assert!(sim.now < Timestamp::ZERO + secs(30), "finished at {}", sim.now);
    }

    #[test]
    fn utp_carries_a_download_through_loss_reordering_and_duplicates() {
        for (seed, loss) in [(62, 0.01), (63, 0.03), (64, 0.05)] {
            utp_download(seed, loss, millis(20), 0.01);
        }
    }
}
