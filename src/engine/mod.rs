//! The engine: every decision of a running rill, for any number of torrents, without I/O.
//!
//! Owns: the torrents (by id and by info-hash), every peer connection's state (whatever transport carries
//! it), routing of incoming connections to a torrent by the info-hash their handshake (plain or MSE)
//! names, the global limits (connection slots, half-open connects, rate buckets), the timer wheel and what
//! its keys mean, the demultiplexing of datagrams on the shared UDP socket, and the command / event /
//! snapshot interface front-ends use.
//! Must not: touch a socket, a file descriptor or the clock. It is driven, in the style of quinn-proto,
//! through `handle_*` (bytes read from a connection, a connect that completed, a datagram, a tracker
//! answer, a command, time) and `poll_*` (actions: connect, close, tracker I/O; which connections have
//! bytes to write; the next deadline; events). The event loop drives it over mio sockets and the
//! simulation (`sim.rs`) over memory pipes: both run this same code.
//!
//! One turn, as a driver runs it:
//! 1. `handle_*` for every readiness event, then `take_backlog` (connections cut short by the read budget
//!    or un-paused) with `handle_peer_input` again;
//! 2. `handle_timeout(now)`: peer time-outs, rate samples, choke rounds, tracker announces, resume saves;
//! 3. `end_turn(now)`: a bounded slice of the data check and of confirming trusted pieces, `have` and
//!    endgame-cancel fan-out, bans, reaping closed connections, dialling;
//! 4. after any of these: perform every `poll_action`, and `handle_peer_output` for every
//!    `poll_transmit`. `has_work` says the driver must not sleep (a backlog, a check running);
//! 5. when made with `EngineConfig::trace`: drain `poll_trace` once a turn (its queue is bounded; what does
//!    not fit is counted and reported, see `engine::trace`).
//!
//! Connection ids are slab keys: a closed connection's key is reused only after its `Action::Close` was
//! queued, so a driver that performs actions in order never confuses the two.

pub mod conn;
pub mod control;
pub mod dht;
mod disk;
pub mod magnet;
pub mod snapshot;
#[cfg(test)]
mod tests;
pub mod torrent;
pub mod trace;
pub mod utp;
pub mod webseed;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use slab::Slab;

use crate::metainfo::{InfoHash, Metainfo};
use crate::peer::buffers::ReadBuf;
use crate::peer::encryption::{Encryption, EncryptionPolicy};
use crate::peer::session::{PeerSession, Phase};
use crate::peer::{DropReason, PeerMisbehaved};
use crate::rng::{Entropy, Rng};
use crate::storage::disk::DiskQueue;
use crate::swarm::candidates::Way;
use crate::swarm::choker::{PeerStat, CHOKE_ROUND, SNUB_AFTER};
use crate::swarm::slots::{Admission, PeerUse, SlotPolicy};
use crate::swarm::throttle::{TokenBucket, REFILL_EVERY};
use crate::swarm::PeerNo;
use crate::time::{millis, secs, Timestamp};
use crate::timer_wheel::TimerWheel;
use crate::torrent::InputError;
use crate::tracker::{IoId, TrackerEvent, TrackerIo, TrackerIoSink};
use crate::wire::mse;
use conn::PeerConn;
use snapshot::{Command, Event, Outcome, PeerSnapshot, Snapshot, TorrentSnapshot, TrackerNews};
use torrent::{State, TorrentCore, TorrentOptions};
use trace::{TraceEvent, TraceKind, TraceQueue};

/// A torrent in the engine (its slab key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TorrentId(pub usize);

/// A connection in the engine (its slab key; the driver keys its socket by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(pub usize);

/// Wheel resolution and size: 10 ms × 4096 ≈ 41 s a lap.
pub const WHEEL_TICK: Duration = millis(10);
const WHEEL_SLOTS: usize = 4096;
const RATE_SAMPLE_EVERY: Duration = secs(1);
/// How long `stopped` announces may take when a torrent stops.
const STOP_GRACE: Duration = secs(3);
/// The resume file is rewritten this often while pieces arrive...
const SAVE_RESUME_EVERY: Duration = secs(5);
/// ...or sooner, once this much has been verified since the last save (each save flushes the data files,
/// so on an SD card it is kept to a few a minute).
const SAVE_RESUME_AFTER_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes read from one connection per `handle_peer_input` before others get a turn.
pub const READ_BUDGET: usize = 1024 * 1024;
/// Tracker `IoId`s carry their torrent in the bits above these.
const IO_ID_TORRENT_SHIFT: u32 = 40;

/// Process-wide settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Connections across all torrents.
    pub max_peers: usize,
    /// Outgoing connects in progress across all torrents.
    pub max_half_open: usize,
    /// Regular upload slots per torrent (one optimistic slot comes on top), as Transmission's
    /// upload-slots-per-torrent.
    pub upload_slots: usize,
    /// Bytes per second across all peers of all torrents.
    pub up_limit: Option<u64>,
    pub down_limit: Option<u64>,
    /// The port peers reach us on, if listening (the driver has bound it).
    pub listen_port: Option<u16>,
    /// Run a DHT node (`None`: no DHT for any torrent).
    pub dht: Option<dht::DhtConfig>,
    /// `--encryption`: plaintext, MSE with RC4, or either.
    pub encryption: EncryptionPolicy,
    /// uTP as well as TCP (`--no-utp`: TCP only).
    pub utp: bool,
    /// Record trace events for `poll_trace` (`--trace`, `--stats-json`).
    pub trace: bool,
}

#[cfg(test)]
impl EngineConfig {
    /// For tests of one engine: no listening, no DHT, no limits, no uTP, no trace.
    pub(crate) fn for_tests() -> Self {
        EngineConfig {
            max_peers: 50,
            max_half_open: 2,
            upload_slots: 4,
            up_limit: None,
            down_limit: None,
            listen_port: None,
            dht: None,
            encryption: EncryptionPolicy::Prefer,
            utp: false,
            trace: false,
        }
    }
}

/// What the driver must do.
#[derive(Debug)]
pub enum Action {
    /// Open a connection to `addr` for `conn`; report `handle_connected` or `handle_peer_error`.
    Connect { conn: ConnId, addr: SocketAddr },
    /// Close `conn`'s transport; the engine has forgotten it.
    Close { conn: ConnId },
    /// Tracker I/O (ids are the engine's; report through `TrackerIoSink`).
    Tracker(TrackerIo),
    /// Resolve `host` without holding up tracker lookups (the DHT's routers); answer with
    /// `TrackerIoSink::on_resolved(id, ..)`.
    ResolveInBackground { id: IoId, host: String, port: u16 },
    /// Send one datagram from the shared UDP socket (the DHT's); a lost one is not reported.
    Datagram { to: SocketAddr, data: Vec<u8> },
}

/// Why a torrent was not added.
#[derive(Debug, PartialEq, Eq)]
pub enum AddError {
    /// The same info-hash is already loaded.
    Duplicate(TorrentId),
}

/// Everything that can wake the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// Connect, handshake, keep-alive, silence and request time-outs of the connection in this slot, if it
    /// is still the same one.
    Peer(usize, PeerNo),
    /// Announces, retransmissions and time-outs of a torrent's trackers.
    Trackers(TorrentId),
    /// Once a second: rates, pipeline sizing, dialling, vanished files, seed ratios.
    RateSample,
    /// Every 10 s: who we upload to.
    ChokeRound,
    /// Every 50 ms while a rate limit is set: refill the token buckets.
    Refill,
    /// Every few seconds: record newly verified pieces in the resume files.
    SaveResume,
    /// A stopping torrent's trackers had their time.
    StopDeadline,
    /// The DHT node's next deadline (queries time out, tokens rotate, buckets refresh, the node file).
    Dht,
    /// The uTP connections' next deadline (retransmissions, delayed ACKs, keep-alives, time-outs).
    Utp,
}

/// What a read pass ended with.
enum ReadOutcome {
    /// Drained to `WouldBlock`.
    Drained,
    /// Budget spent or paused with data possibly waiting: try again later.
    MoreLater,
}

pub struct Engine {
    config: EngineConfig,
    peer_id: [u8; 20],
    torrents: Slab<TorrentCore>,
    by_hash: HashMap<InfoHash, TorrentId>,
    /// MSE's HASH('req2', info-hash) of every torrent: how an encrypted connection names its torrent.
    by_req2: HashMap<[u8; 20], TorrentId>,
    conns: Slab<PeerConn>,
    next_peer_no: u64,
    timers: TimerWheel<Wake>,
    /// Fair, reproducible choices (choker, dialling order).
    rng: Rng,
    /// Values peers must not guess (MSE private keys, tracker keys and transaction ids).
    entropy: Entropy,
    up_bucket: Option<TokenBucket>,
    down_bucket: Option<TokenBucket>,
    /// `Wake::Refill` is scheduled: some bucket (the engine's or a torrent's) exists.
    refilling: bool,
    /// Connections not read because a download bucket (the engine's or their torrent's) ran dry; resumed on
    /// refill.
    throttled: Vec<usize>,
    /// Connections cut short (read budget) or un-paused: read again this turn, no waiting.
    backlog: Vec<usize>,
    /// Connections with bytes to write.
    transmit: VecDeque<usize>,
    /// Connections to reap at the end of the turn.
    closing: Vec<usize>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    last_sample: Timestamp,
    shutting_down: bool,
    /// A daemon: not finished while it has nothing to run, only after `Shutdown`.
    stay_up: bool,
    /// Torrents to forget once their trackers were told.
    removing: Vec<TorrentId>,
    /// The DHT node, shared by every torrent that uses it.
    dht: Option<dht::DhtNode>,
    /// uTP connections (the mux and which connection each carries).
    utp: Option<utp::UtpHost>,
    /// `Some` while tracing (`EngineConfig::trace`): events for `poll_trace`.
    trace: Option<Box<TraceQueue>>,
    /// Every data read and write of the transfer, as jobs for the driver's disk executor.
    disk: DiskQueue,
    /// Connections not read because the disk queue's pool was short; resumed as jobs finish.
    disk_waiting: Vec<usize>,
    /// Connections with requests to serve while the pool's share for reads was taken.
    read_waiting: Vec<usize>,
    /// A check verdict came in since the last `Event::Checking`.
    check_progressed: bool,
    /// The driver's turn times and the disk's counters.
    turns: disk::TurnStats,
}

impl Engine {
    pub fn new(config: EngineConfig, peer_id: [u8; 20], rng: Rng, entropy: Entropy, now: Timestamp) -> Self {
        let mut timers = TimerWheel::new(now, WHEEL_TICK, WHEEL_SLOTS);
        timers.schedule(now + RATE_SAMPLE_EVERY, Wake::RateSample);
        timers.schedule(now + CHOKE_ROUND, Wake::ChokeRound);
        timers.schedule(now + SAVE_RESUME_EVERY, Wake::SaveResume);
        let refilling = config.up_limit.is_some() || config.down_limit.is_some();
        if refilling {
            timers.schedule(now + REFILL_EVERY, Wake::Refill);
        }
        let mut entropy = entropy;
        let mut rng = rng;
        let dht_node =
            config.dht.as_ref().map(|c| dht::DhtNode::new(c, now, entropy.fork(), Rng::seeded(rng.next_u64())));
        let utp_host = config.utp.then(|| {
            let mux = crate::utp::UtpMux::new(now, crate::utp::Config::default(), entropy.fork());
            utp::UtpHost::new(mux)
        });
        let mut actions = VecDeque::new();
        if let Some(node) = &dht_node {
            actions.extend(node.resolve_requests());
        }
        let trace = config.trace.then(Box::default);
        let mut engine = Engine {
            trace,
            up_bucket: config.up_limit.map(|r| TokenBucket::new(r, now)),
            down_bucket: config.down_limit.map(|r| TokenBucket::new(r, now)),
            config,
            peer_id,
            torrents: Slab::new(),
            by_hash: HashMap::new(),
            by_req2: HashMap::new(),
            conns: Slab::new(),
            next_peer_no: 0,
            timers,
            rng,
            entropy,
            refilling,
            throttled: Vec::new(),
            backlog: Vec::new(),
            transmit: VecDeque::new(),
            closing: Vec::new(),
            actions,
            events: VecDeque::new(),
            last_sample: now,
            shutting_down: false,
            stay_up: false,
            removing: Vec::new(),
            dht: dht_node,
            utp: utp_host,
            disk: DiskQueue::default(),
            disk_waiting: Vec::new(),
            read_waiting: Vec::new(),
            check_progressed: false,
            turns: disk::TurnStats::default(),
        };
        engine.pump_dht(now);
        engine
    }

    pub fn listen_port(&self) -> Option<u16> {
        self.config.listen_port
    }

    // ---- torrents and commands -------------------------------------------------------------------

    /// Adds a torrent; it checks its data (one torrent at a time), then downloads or seeds.
    pub fn add_torrent(&mut self, meta: Metainfo, opts: TorrentOptions, now: Timestamp) -> Result<TorrentId, AddError> {
        self.add(torrent::Source::Metainfo { meta: Box::new(meta), info: None }, opts, now)
    }

    /// Adds a torrent from a `.torrent` file or a magnet link. A magnet's torrent announces and dials at
    /// once and fetches its metadata; then, as a `.torrent`'s, it checks its data and downloads or seeds.
    pub fn add(
        &mut self,
        source: torrent::Source,
        opts: TorrentOptions,
        now: Timestamp,
    ) -> Result<TorrentId, AddError> {
        let (info_hash, web_seeds) = match &source {
            torrent::Source::Metainfo { meta, .. } => (meta.info_hash, meta.web_seeds.clone()),
            torrent::Source::Magnet(m) => (m.info_hash, m.web_seeds.clone()),
        };
        if let Some(&id) = self.by_hash.get(&info_hash) {
            return Err(AddError::Duplicate(id));
        }
        let mut opts = opts;
        opts.dht &= self.dht.is_some();
        let entry = self.torrents.vacant_entry();
        let id = TorrentId(entry.key());
        let (port, peer_id) = (self.config.listen_port, self.peer_id);
        let (entropy, rng) = (&mut self.entropy, &mut self.rng);
        let magnet = matches!(source, torrent::Source::Magnet(_));
        let mut core = match source {
            torrent::Source::Metainfo { meta, info } => {
                let mut core = TorrentCore::new(id, *meta, opts, peer_id, port, entropy, rng, now);
                core.info_bytes = info;
                core
            }
            torrent::Source::Magnet(m) => TorrentCore::new_magnet(id, &m, opts, peer_id, port, entropy, rng, now),
        };
        core.set_upload_slots(self.config.upload_slots);
        let next_no = &mut self.next_peer_no;
        core.webseeds = webseed::WebSeeds::new(id.0, &web_seeds, || {
            *next_no += 1;
            PeerNo(*next_no)
        });
        entry.insert(core);
        self.by_hash.insert(info_hash, id);
        self.by_req2.insert(mse::req2_key(&info_hash), id);
        if magnet {
            let t = &mut self.torrents[id.0];
            let transfer = t.transfer();
            t.trackers.on_timeout(now, transfer, &mut self.rng);
            self.pump_trackers(id, now);
            self.dial_more(now, false);
        }
        self.dht_lookups(now);
        Ok(id)
    }

    pub fn torrent(&self, id: TorrentId) -> Option<&TorrentCore> {
        self.torrents.get(id.0)
    }

    pub fn torrent_ids(&self) -> Vec<TorrentId> {
        self.torrents.iter().map(|(k, _)| TorrentId(k)).collect()
    }

    /// The torrents in key order, without a list: the loop's turn goes over them several times, and the
    /// body may add or remove torrents (one removed is skipped, one added past the end is not visited).
    fn torrent_cursor(&self) -> TorrentCursor {
        TorrentCursor { next: 0, end: self.torrents.capacity() }
    }

    pub fn handle_command(&mut self, command: Command, now: Timestamp) {
        match command {
            Command::Pause(id) => {
                if self.torrents.get(id.0).is_some_and(|t| t.state == State::Active) {
                    self.stop_torrent(id, State::Paused, now);
                }
            }
            Command::Resume(id) => self.resume_torrent(id, now),
            Command::Reannounce(id) => {
                if let Some(t) = self.torrents.get_mut(id.0).filter(|t| t.state == State::Active) {
                    let transfer = t.transfer();
                    t.trackers.reannounce(now, transfer);
                    self.pump_trackers(id, now);
                }
            }
            Command::SetSeedRatio(id, ratio) => {
                if let Some(t) = self.torrents.get_mut(id.0) {
                    t.opts.seed_ratio = ratio; // the once-a-second tick stops it when reached
                }
            }
            Command::Remove(id) => {
                if self.torrents.contains(id.0) {
                    self.stop_torrent(id, State::Stopped, now);
                    self.removing.push(id);
                }
            }
            Command::Shutdown => {
                self.shutting_down = true;
                let mut ids = self.torrent_cursor();
                while let Some(id) = ids.next(&self.torrents) {
                    if let Some(t) = self.torrents.get_mut(id.0) {
                        if !matches!(t.state, State::Stopped | State::Paused) {
                            t.interrupted = true;
                        }
                    }
                    self.stop_torrent(id, State::Stopped, now);
                }
            }
            Command::ShutdownNow => {
                self.handle_command(Command::Shutdown, now);
                for (_, t) in self.torrents.iter_mut() {
                    t.stop_deadline = Some(now);
                }
            }
        }
    }

    /// Replaces a torrent's tracker list (a user's edit): trackers that stay keep their state, new ones are
    /// asked at once if the torrent runs, and removed ones are let go.
    pub fn set_trackers(&mut self, id: TorrentId, tiers: &[Vec<String>], now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return;
        };
        t.set_tracker_tiers(tiers, now);
        let running = matches!(t.state, State::Active | State::AwaitingMetadata);
        if running && !t.stopping {
            let transfer = t.transfer();
            t.trackers.on_timeout(now, transfer, &mut self.rng);
        }
        // A torrent still checking has no tracker I/O yet, and its trackers' timer would only wake for nothing
        // until it is active.
        if running || t.stopping {
            self.pump_trackers(id, now);
        }
    }

    /// Stops a torrent: closes its connections and tells its trackers `stopped` (within a grace period).
    /// During the check, what was checked goes to the resume file.
    fn stop_torrent(&mut self, id: TorrentId, to: State, now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return;
        };
        match t.state {
            State::Stopped => return,
            State::Paused => {
                // Its trackers were told when it paused.
                t.state = to;
                return;
            }
            State::Checking | State::AwaitingMetadata | State::Active => {}
        }
        // Trackers run from activation, or from the start for a magnet (which has its metadata phase until
        // it is active).
        let announced = t.state == State::Active || t.phase.is_some();
        if t.state == State::Checking && t.check.is_some() {
            match t.save_interrupted_check() {
                Ok((checked, known, pieces)) => {
                    self.events.push_back(Event::CheckInterrupted { torrent: id, checked, known, pieces })
                }
                Err(e) => t.error = Some(torrent::TorrentError::Storage(e)),
            }
        }
        t.state = to;
        t.finished_at = Some(now);
        if announced {
            t.stopping = true;
            t.stop_deadline = Some(now + STOP_GRACE);
            let transfer = t.transfer();
            t.trackers.on_stop(now, transfer);
            self.timers.schedule(now + STOP_GRACE, Wake::StopDeadline);
        }
        let slots: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.torrent == Some(id)).map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close_conn(slot, DropReason::Shutdown);
        }
        self.pump_trackers(id, now);
    }

    fn resume_torrent(&mut self, id: TorrentId, now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return;
        };
        if t.state != State::Paused || self.shutting_down {
            return;
        }
        t.state = State::Active;
        t.stopping = false;
        t.stop_deadline = None;
        t.finished_at = None;
        t.restart_trackers(&mut self.entropy, &mut self.rng, now);
        let transfer = t.transfer();
        t.trackers.on_timeout(now, transfer, &mut self.rng);
        self.pump_trackers(id, now);
    }

    fn fail_torrent(&mut self, id: TorrentId, error: torrent::TorrentError, now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return;
        };
        let line = error.to_string();
        log::info!("{}: stopped: {line}", t.name);
        t.error = Some(error);
        self.events.push_back(Event::Failed { torrent: id, error: line });
        self.stop_torrent(id, State::Stopped, now);
    }

    /// Every torrent is stopped and its trackers were told, or given up on. A paused torrent keeps the run
    /// going (a person paused it and may resume it); a shutdown stops paused torrents too.
    pub fn is_finished(&self, now: Timestamp) -> bool {
        (!self.stay_up || self.shutting_down)
            && self.torrents.iter().all(|(_, t)| t.state != State::Paused && t.is_finished(now))
    }

    /// The end of a run: records every torrent's verified pieces and says how each ended.
    pub fn finish(&mut self, now: Timestamp) -> Vec<Outcome> {
        if self.trace.is_some() {
            // The run's last loop and disk figures.
            let sample = self.take_loop_sample();
            self.trace(now, || sample);
        }
        if let Some(node) = self.dht.as_mut() {
            node.save_now(now);
        }
        let mut out = Vec::new();
        for (_, t) in self.torrents.iter_mut() {
            if let Err(e) = t.save_resume() {
                log::error!("{}: cannot save the resume file: {e}", t.name);
                if t.error.is_none() {
                    t.error = Some(torrent::TorrentError::Storage(e));
                }
            }
            let swarm = t.swarm();
            out.push(Outcome {
                id: t.id,
                name: t.name.clone(),
                complete: t.is_complete() && t.check.is_none(),
                interrupted: t.interrupted,
                elapsed: t.finished_at.unwrap_or(now) - t.started_at,
                have_bytes: swarm.map_or(0, |s| s.wanted_bytes() - s.left()),
                wanted_bytes: swarm.map_or(0, |s| s.wanted_bytes()),
                downloaded: swarm.map_or(0, |s| s.totals.downloaded),
                uploaded: swarm.map_or(0, |s| s.totals.uploaded),
                wasted: swarm.map_or(0, |s| s.totals.wasted),
                hash_failures: swarm.map_or(0, |s| s.totals.hash_failures),
                peers_used: t.peers_used.count(),
                checked_only: t.summary.is_none(),
                error: t.error.as_ref().map(ToString::to_string),
            });
        }
        out
    }

    // ---- driver interface: output -------------------------------------------------------------------

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next trace event (only while `EngineConfig::trace`); drain every turn.
    pub fn poll_trace(&mut self) -> Option<TraceEvent> {
        self.trace.as_deref_mut().and_then(TraceQueue::pop)
    }

    /// Records a trace event, built only while tracing.
    fn trace(&mut self, at: Timestamp, kind: impl FnOnce() -> TraceKind) {
        if let Some(q) = self.trace.as_deref_mut() {
            q.push(at, kind());
        }
    }

    /// Moves what a connection's session recorded into the trace queue.
    fn drain_session_trace(&mut self, slot: usize, now: Timestamp) {
        let Some(q) = self.trace.as_deref_mut() else {
            return;
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let (peer, Some(torrent), Some(session)) = (conn.no, conn.torrent, conn.session.as_mut()) else {
            return;
        };
        let lost = session.drain_trace(|event| q.push(now, TraceKind::Session { peer, torrent, event }));
        q.add_lost(lost);
    }

    /// A TCP connection with bytes to write: call `handle_peer_output` for it. (uTP connections are written
    /// here, into the mux: their datagrams come out of `poll_datagram`.)
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<ConnId> {
        while let Some(slot) = self.transmit.pop_front() {
            if let Some(c) = self.conns.get_mut(slot) {
                c.in_transmit = false;
                if c.closing.is_none() {
                    match c.transport {
                        utp::Transport::Tcp => return Some(ConnId(slot)),
                        utp::Transport::Utp(id) => self.utp_output(slot, id, now),
                    }
                }
            }
        }
        None
    }

    /// TCP connections to read again this turn (read budget spent, or un-paused); uTP ones are read here.
    pub fn take_backlog(&mut self, now: Timestamp) -> Vec<ConnId> {
        let slots = std::mem::take(&mut self.backlog);
        let mut tcp = Vec::with_capacity(slots.len());
        for slot in slots {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            c.in_backlog = false;
            c.paused = false;
            match c.transport {
                utp::Transport::Tcp => tcp.push(ConnId(slot)),
                utp::Transport::Utp(id) => self.utp_input(slot, id, now),
            }
        }
        tcp
    }

    /// The driver must not sleep: connections wait in the backlog. (Checks and confirmations run on the
    /// disk queue: their verdicts wake the driver.)
    pub fn has_work(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.next_deadline()
    }

    fn mark_transmit(&mut self, slot: usize) {
        self.mark_transmit_if(slot, false);
    }

    /// Queues the connection to write, if it has output that should go now, or (`all`) any output.
    fn mark_transmit_if(&mut self, slot: usize, all: bool) {
        if let Some(c) = self.conns.get_mut(slot) {
            let output = if all { !c.pending_output().is_empty() } else { c.has_urgent_output() };
            let has_output = output || c.session.as_ref().is_some_and(|s| s.queued_requests() > 0);
            if !c.in_transmit && c.closing.is_none() && has_output {
                c.in_transmit = true;
                self.transmit.push_back(slot);
            }
        }
    }

    fn queue_backlog(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if !conn.in_backlog {
                conn.in_backlog = true;
                self.backlog.push(slot);
            }
        }
    }

    // ---- driver interface: connections --------------------------------------------------------------

    /// Room for one more incoming connection awaiting its handshake (`swarm::slots::on_handshaking`): a
    /// stale one may give way; false: refuse the newcomer.
    fn admit_handshaking(&mut self, addr: SocketAddr, now: Timestamp) -> bool {
        let waiting = self
            .conns
            .iter()
            .filter(|(_, c)| !c.outgoing && c.closing.is_none() && !c.is_handshaken())
            .map(|(slot, c)| (slot, c.connected_at));
        match crate::swarm::slots::on_handshaking(waiting, now) {
            Admission::Admit => true,
            Admission::Replace(victim) => {
                log::debug!("{}: still no handshake: gives way to {addr}", self.conns[victim].addr);
                self.close_conn(victim, DropReason::HandshakeTimedOut);
                true
            }
            Admission::Full | Admission::SameAddress => {
                log::debug!("{addr}: incoming connection refused: too many handshakes in progress");
                false
            }
        }
    }

    /// A peer connected to us. `None`: refused (no free slot, already connected, too many handshakes in
    /// progress, shutting down); the driver closes it.
    pub fn handle_incoming(&mut self, addr: SocketAddr, now: Timestamp) -> Option<ConnId> {
        if self.shutting_down || !self.torrents.iter().any(|(_, t)| t.accepts_peers()) {
            return None;
        }
        if !self.admit_handshaking(addr, now) {
            return None;
        }
        // The torrent is not known until the handshake: count it as a seed's connection only when every
        // torrent is seeding.
        let we_seed = self.torrents.iter().filter(|(_, t)| t.is_active()).all(|(_, t)| t.is_seed());
        match self.slot_policy().on_incoming(addr.ip(), &self.slot_view(None), we_seed, now) {
            Admission::Admit => {}
            Admission::Replace(victim) => {
                log::debug!("{}: replaced by incoming {addr}", self.conns[victim].addr);
                self.close_conn(victim, DropReason::NotNeeded);
            }
            Admission::Full => {
                log::debug!("{addr}: incoming connection refused: no free slot");
                return None;
            }
            Admission::SameAddress => {
                log::debug!("{addr}: incoming connection refused: already connected to that address");
                return None;
            }
        }
        let no = self.new_peer_no();
        let encryption = Encryption::incoming(&mut self.entropy, self.config.encryption);
        let mut conn = PeerConn::new(no, addr, None, None, ReadBuf::for_handshake(), encryption, now);
        conn.handshake_deadline = now + crate::peer::session::HANDSHAKE_TIMEOUT;
        let slot = self.conns.insert(conn);
        log::debug!("{addr}: accepted");
        self.trace(now, || TraceKind::Accepted { peer: no, addr, transport: trace::Transport::Tcp });
        self.reschedule_conn(slot, now);
        // The handshake may already be waiting: edge-triggered readiness will not repeat it.
        self.queue_backlog(slot);
        Some(ConnId(slot))
    }

    /// A peer address for a torrent, from outside the trackers (the command line, the simulation; PEX and
    /// the DHT next): dialled when there is room.
    pub fn handle_peer_hint(&mut self, torrent: TorrentId, addr: SocketAddr, now: Timestamp) {
        if let Some(t) = self.torrents.get_mut(torrent.0) {
            if t.candidates.add(addr) {
                self.dial_more(now, false);
            }
        }
    }

    /// Our connect completed.
    pub fn handle_connected(&mut self, id: ConnId, now: Timestamp) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let Some(t) = conn.torrent.and_then(|t| self.torrents.get_mut(t.0)) else {
            return;
        };
        let (Some(session), Some((ctx, _))) = (conn.session.as_mut(), t.session_parts()) else {
            return;
        };
        if session.phase() != Phase::AwaitingConnect || conn.closing.is_some() {
            return;
        }
        log::debug!("{}: connected", conn.addr);
        let peer = conn.no;
        session.on_connected(ctx, now);
        conn.connected_at = now;
        self.trace(now, || TraceKind::Connected { peer });
        self.mark_transmit(id.0);
        self.reschedule_conn(id.0, now);
    }

    /// The transport failed or the connect did not complete.
    pub fn handle_peer_error(&mut self, id: ConnId, reason: DropReason) {
        self.close_conn(id.0, reason);
    }

    /// Reads what `src` has (until `WouldBlock`, the read budget, or backpressure) and handles every whole
    /// message. `src` is the connection's transport; an `Ok(0)` read is the peer closing.
    pub fn handle_peer_input(&mut self, id: ConnId, src: &mut impl io::Read, now: Timestamp) {
        let slot = id.0;
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.closing.is_some() || conn.is_connecting() {
            return;
        }
        let (torrent, downloaded_before) = (conn.torrent, conn.session.as_ref().map_or(0, |s| s.downloaded));
        let Some(budget) = self.download_allowance(torrent).map(|a| a.min(READ_BUDGET)) else {
            self.throttled.push(slot);
            return;
        };
        let result = self.read_and_process(slot, budget, src, now);
        self.drain_session_trace(slot, now);
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let got = conn.session.as_ref().map_or(0, |s| s.downloaded) - downloaded_before;
        if got > 0 {
            conn.last_payload = Some(now);
            let first = !std::mem::replace(&mut conn.sent_us_payload, true);
            if let Some(t) = conn.torrent.and_then(|t| self.torrents.get_mut(t.0)) {
                if first {
                    t.peers_used.note(conn.addr);
                }
                if let Some(bucket) = &mut t.down_bucket {
                    bucket.spend(got);
                }
            }
            if let Some(bucket) = &mut self.down_bucket {
                bucket.spend(got);
            }
        }
        let paused = conn.paused;
        match result {
            Ok(ReadOutcome::Drained) => {}
            Ok(ReadOutcome::MoreLater) => {
                if !paused {
                    self.queue_backlog(slot);
                }
            }
            Err(InputError::Drop(reason)) => {
                self.close_conn(slot, reason);
                return;
            }
            Err(InputError::Fatal(e)) => {
                if let Some(t) = self.conns[slot].torrent {
                    self.fail_torrent(t, torrent::TorrentError::Storage(e), now);
                }
                return;
            }
        }
        self.after_input(slot);
        self.dht_from_peer(slot, now);
        self.mark_transmit(slot);
        self.reschedule_conn(slot, now);
    }

    fn read_and_process(
        &mut self,
        slot: usize,
        mut budget: usize,
        src: &mut impl io::Read,
        now: Timestamp,
    ) -> Result<ReadOutcome, InputError> {
        loop {
            let conn = &mut self.conns[slot];
            if !conn.wants_input() {
                conn.paused = true;
                return Ok(ReadOutcome::MoreLater);
            }
            // Every block one read can bring must find a buffer in the disk queue's pool: if it cannot,
            // the peer waits (TCP pushes back) until writes finish. Memory never grows for a slow disk.
            // Only peers we await blocks from wait: one that only asks (or says `have`) is read, so its
            // requests are served while the disk is behind.
            let awaits_blocks = conn.session.as_ref().is_some_and(|s| s.pipeline().active() > 0);
            if awaits_blocks && self.disk.room() < disk::blocks_per_fill(conn) {
                if !conn.disk_waiting {
                    conn.disk_waiting = true;
                    self.disk_waiting.push(slot);
                }
                return Ok(ReadOutcome::Drained);
            }
            let Some(n) = conn::fill(conn, src)? else {
                return Ok(ReadOutcome::Drained);
            };
            self.process(slot, now)?;
            if self.conns[slot].closing.is_some() {
                return Ok(ReadOutcome::Drained);
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return Ok(ReadOutcome::MoreLater);
            }
        }
    }

    /// Handles the bytes in a connection's buffer: the encryption stage, the handshake of an incoming
    /// connection (which names its torrent), then messages.
    fn process(&mut self, slot: usize, now: Timestamp) -> Result<(), InputError> {
        let tracing = self.trace.is_some();
        let Engine { conns, torrents, by_req2, by_hash, disk, .. } = self;
        let conn = &mut conns[slot];
        let find = |key: &[u8; 20]| {
            by_req2.get(key).and_then(|t| torrents.get(t.0)).filter(|t| t.accepts_peers()).map(|t| t.info_hash)
        };
        if !conn.run_encryption_stage(find)? {
            return Ok(());
        }
        if conn.torrent.is_none() {
            let Some(hs) = conn.read.next_handshake().map_err(DropReason::from)? else {
                return Ok(());
            };
            if conn.mse_torrent.is_some_and(|ih| ih != hs.info_hash) {
                return Err(DropReason::Misbehaved(PeerMisbehaved::WrongInfoHash).into());
            }
            let Some(&tid) = by_hash.get(&hs.info_hash) else {
                return Err(DropReason::Misbehaved(PeerMisbehaved::WrongInfoHash).into());
            };
            let t = &mut torrents[tid.0];
            if !t.accepts_peers() {
                return Err(DropReason::NotNeeded.into());
            }
            // One connection per address and torrent (loopback exempt, as in the slot policy).
            let ip = conn.addr.ip().to_canonical();
            let duplicate = |(k, c): (usize, &PeerConn)| {
                k != slot && c.closing.is_none() && c.torrent == Some(tid) && c.addr.ip().to_canonical() == ip
            };
            if !ip.is_loopback() && conns.iter().any(duplicate) {
                return Err(DropReason::NotNeeded.into());
            }
            let conn = &mut conns[slot];
            let name = t.name.clone();
            let Some((ctx, swarm)) = t.session_parts() else {
                return Err(DropReason::NotNeeded.into());
            };
            let mut session = PeerSession::incoming(conn.no, ctx, now);
            if tracing {
                session.enable_trace();
            }
            session.set_peer_ip(conn.addr.ip());
            conn.read.fit(&ctx.limits);
            session.on_handshake(&hs, ctx, swarm, now)?;
            conn.session = Some(session);
            conn.torrent = Some(tid);
            log::debug!("{}: handshake for {name}", conn.addr);
        }
        let conn = &mut conns[slot];
        let (Some(tid), Some(session)) = (conn.torrent, conn.session.as_mut()) else {
            return Ok(());
        };
        let t = &mut torrents[tid.0];
        match (t.data.as_mut(), t.phase.as_deref_mut()) {
            (Some(data), _) => data.process_input(&mut conn.read, session, disk, now),
            (None, Some(phase)) => phase.process_input(&mut conn.read, session, now),
            (None, None) => Ok(()),
        }
    }

    /// The same peer over a second address (IPv4 and IPv6, say) or a second connection: the first is kept.
    /// Compared once per connection, when its peer id is known.
    fn drop_if_same_peer(&mut self, slot: usize) -> bool {
        let conn = &self.conns[slot];
        let (Some(tid), Some(peer_id), false) =
            (conn.torrent, conn.session.as_ref().and_then(|s| s.peer_id), conn.peer_id_checked)
        else {
            return false;
        };
        let same = |&(k, c): &(usize, &PeerConn)| {
            k != slot
                && c.torrent == Some(tid)
                && c.closing.is_none()
                && c.session.as_ref().is_some_and(|s| s.peer_id == Some(peer_id))
        };
        if let Some((_, other)) = self.conns.iter().find(same) {
            log::debug!("{}: the same peer as {}: dropped", conn.addr, other.addr);
            self.close_conn(slot, DropReason::NotNeeded);
            return true;
        }
        self.conns[slot].peer_id_checked = true;
        false
    }

    /// Policy after a connection's input: one connection per peer, bans by peer id, seed meets seed, a free
    /// upload slot.
    fn after_input(&mut self, slot: usize) {
        if self.drop_if_same_peer(slot) {
            return;
        }
        let conn = &self.conns[slot];
        let (Some(tid), Some(session)) = (conn.torrent, conn.session.as_ref()) else {
            return;
        };
        let t = &self.torrents[tid.0];
        if session.peer_id.is_some_and(|id| t.banned_ids.contains(&id)) {
            self.close_conn(slot, DropReason::Banned);
            return;
        }
        if t.is_seed() && session.is_peer_seed() {
            // Seed meets seed: neither has anything for the other.
            self.close_conn(slot, DropReason::NotNeeded);
            return;
        }
        if session.is_peer_interested() && session.is_am_choking() && t.is_active() {
            let unchoked = self
                .conns
                .iter()
                .filter(|(_, c)| c.torrent == Some(tid) && c.session.as_ref().is_some_and(|s| !s.is_am_choking()))
                .count();
            if t.choker.has_free_slot(unchoked) {
                if let Some(s) = self.conns[slot].session.as_mut() {
                    s.set_choking(false);
                }
                self.size_serve_ahead();
            }
        }
    }

    /// Writes what the connection has queued (serving requested blocks within the upload allowance) to
    /// `dst` until it would block or nothing is left.
    pub fn handle_peer_output(&mut self, id: ConnId, dst: &mut impl io::Write, now: Timestamp) {
        let slot = id.0;
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if conn.closing.is_some() || conn.is_connecting() {
            return;
        }
        let result: Result<(), DropReason> = loop {
            let pending = conn.next_output();
            if pending.is_empty() {
                break Ok(());
            }
            match dst.write(pending) {
                Ok(0) => break Err(DropReason::Io(io::ErrorKind::WriteZero)),
                Ok(n) => conn.output_written(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(DropReason::Io(e.kind())),
            }
        };
        if let Err(reason) = result {
            self.close_conn(slot, reason);
            return;
        }
        // With room in the send queue now, queued requests are read from disk (within the upload
        // allowance); each block goes out when its read is done (`handle_disk_done`).
        let conn = &mut self.conns[slot];
        if let (Some(tid), Some(session)) = (conn.torrent, conn.session.as_mut()) {
            if let Some(t) = self.torrents.get_mut(tid.0).filter(|t| t.data.is_some()) {
                let mut allowance = [self.up_bucket.as_ref(), t.up_bucket.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(TokenBucket::available)
                    .fold(u64::MAX, u64::min);
                let data = t.data.as_mut().expect("filtered");
                let taken = data.serve(session, &mut allowance, &mut self.disk, disk::read_tag(slot, conn.no));
                if taken > 0 {
                    for bucket in [self.up_bucket.as_mut(), t.up_bucket.as_mut()].into_iter().flatten() {
                        bucket.spend(taken);
                    }
                }
                if session.has_requests_to_serve() && !self.disk.read_room() && !conn.read_waiting {
                    conn.read_waiting = true;
                    self.read_waiting.push(slot);
                }
            }
        }
        if conn.paused && conn.wants_input() {
            conn.paused = false;
            self.queue_backlog(slot);
        }
    }

    // ---- datagrams -----------------------------------------------------------------------------------

    /// A datagram on the shared UDP socket: a tracker reply (BEP 15, action 0-3 in its first four bytes),
    /// a DHT message (BEP 5, a bencoded dictionary: `d`), or uTP (BEP 29: type in the high nibble, version 1
    /// in the low one).
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp) {
        match classify_datagram(data) {
            DatagramKind::Tracker => {
                let Some(ns) = crate::tracker::udp_reply_namespace(data) else {
                    return;
                };
                let span = 1usize << crate::tracker::TXN_NAMESPACE_BITS;
                let ids: Vec<TorrentId> = self
                    .torrents
                    .iter()
                    .filter(|(k, _)| k % span == usize::from(ns))
                    .map(|(k, _)| TorrentId(k))
                    .collect();
                for id in ids {
                    self.torrents[id.0].trackers.on_datagram(from, data, now);
                    self.pump_trackers(id, now);
                }
            }
            DatagramKind::Dht => self.dht_datagram(from, data, now),
            DatagramKind::Utp => self.utp_datagram(from, data, now),
            DatagramKind::Unknown => log::trace!("udp {from}: unknown datagram ({} bytes)", data.len()),
        }
    }

    // ---- time ----------------------------------------------------------------------------------------

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(wake) = self.timers.pop_expired(now) {
            self.on_timer(wake, now);
        }
    }

    fn on_timer(&mut self, wake: Wake, now: Timestamp) {
        match wake {
            Wake::Peer(slot, no) => {
                let Some(conn) = self.conns.get_mut(slot) else {
                    return;
                };
                if conn.no != no || conn.closing.is_some() {
                    return;
                }
                conn.timer = None;
                let result = match (conn.torrent, conn.session.as_mut()) {
                    (Some(tid), Some(session)) => {
                        match self.torrents.get_mut(tid.0).and_then(TorrentCore::session_parts) {
                            Some((_, swarm)) => session.on_timeout(swarm, now),
                            None => Err(DropReason::Shutdown),
                        }
                    }
                    _ if now >= conn.handshake_deadline => Err(DropReason::HandshakeTimedOut),
                    _ => Ok(()),
                };
                if let Err(reason) = result {
                    self.close_conn(slot, reason);
                    return;
                }
                self.mark_transmit(slot);
                self.reschedule_conn(slot, now);
            }
            Wake::Trackers(id) => {
                let Some(t) = self.torrents.get_mut(id.0) else {
                    return;
                };
                t.tracker_timer = None;
                if matches!(t.state, State::Active | State::AwaitingMetadata) || t.stopping {
                    let transfer = t.transfer();
                    t.trackers.on_timeout(now, transfer, &mut self.rng);
                }
                self.pump_trackers(id, now);
            }
            Wake::RateSample => {
                self.on_rate_sample(now);
                self.timers.schedule(now + RATE_SAMPLE_EVERY, Wake::RateSample);
            }
            Wake::ChokeRound => {
                let mut ids = self.torrent_cursor();
                while let Some(id) = ids.next(&self.torrents) {
                    self.choke_round(id, now);
                }
                self.timers.schedule(now + CHOKE_ROUND, Wake::ChokeRound);
            }
            Wake::SaveResume => {
                let mut ids = self.torrent_cursor();
                while let Some(id) = ids.next(&self.torrents) {
                    let t = &mut self.torrents[id.0];
                    if let Err(e) = t.save_resume_in_background() {
                        self.fail_torrent(id, torrent::TorrentError::Storage(e), now);
                    }
                }
                self.timers.schedule(now + SAVE_RESUME_EVERY, Wake::SaveResume);
            }
            Wake::Refill => {
                self.refill(now);
                let any = self.up_bucket.is_some()
                    || self.down_bucket.is_some()
                    || self.torrents.iter().any(|(_, t)| t.up_bucket.is_some() || t.down_bucket.is_some());
                if any {
                    self.timers.schedule(now + REFILL_EVERY, Wake::Refill);
                } else {
                    self.refilling = false;
                }
            }
            Wake::StopDeadline => {}
            Wake::Dht => self.dht_timeout(now),
            Wake::Utp => self.utp_timeout(now),
        }
    }

    /// Sizes the send-ahead per peer (see `next_to_serve`): the serving budget spread over the peers we
    /// unchoke now, within bounds. Done once a second, and at once whenever peers are unchoked: a burst of
    /// newcomers unchoked between two samples must not each get what the budget allows a few peers (200
    /// peers unchoked in the second after a sample with none each queued up to `SERVE_AHEAD_MAX` of blocks,
    /// and a send queue's memory doubles past each power of two: 13 MiB of send queues at once).
    fn size_serve_ahead(&mut self) {
        use crate::storage::disk::{SERVE_AHEAD_MAX, SERVE_AHEAD_MIN, SERVE_BUDGET};
        let unchoked =
            self.conns.iter().filter(|(_, c)| c.session.as_ref().is_some_and(|s| !s.is_am_choking())).count();
        self.disk.serve_ahead = (SERVE_BUDGET / unchoked.max(1)).clamp(SERVE_AHEAD_MIN, SERVE_AHEAD_MAX);
    }

    fn on_rate_sample(&mut self, now: Timestamp) {
        let dt = now - self.last_sample;
        self.last_sample = now;
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            let t = &mut self.torrents[id.0];
            if t.state != State::Active {
                continue;
            }
            // A data file deleted or replaced under rill is an error within seconds (storage looks every 2 s).
            // (Skipped while the disk thread holds the storage: the next second looks.)
            let checked = t.data.as_ref().and_then(|d| d.disk.try_lock().map(|mut s| s.check_files(now)));
            if let Some(Err(e)) = checked {
                self.fail_torrent(id, torrent::TorrentError::Storage(e), now);
                continue;
            }
            t.sample_rates(dt);
            if t.seed_ratio_reached() && !t.stopping {
                log::info!("{}: seed ratio reached", t.name);
                self.stop_torrent(id, State::Stopped, now);
            }
        }
        self.size_serve_ahead();
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let conn = &mut self.conns[slot];
            if conn.closing.is_some() || conn.is_connecting() {
                continue;
            }
            conn.on_buffer_tick(now);
            self.mark_transmit_if(slot, true); // `have` messages that waited for company go now
            let conn = &mut self.conns[slot];
            let (Some(tid), Some(session)) = (conn.torrent, conn.session.as_mut()) else {
                continue;
            };
            let Some(t) = self.torrents.get_mut(tid.0) else {
                continue;
            };
            if let Some((_, swarm)) = t.session_parts() {
                session.on_rate_sample(swarm, now, dt);
            }
            if let Some(q) = self.trace.as_deref_mut() {
                let (down, up) = (session.downloaded - conn.traced.0, session.uploaded - conn.traced.1);
                conn.traced = (session.downloaded, session.uploaded);
                let (in_flight, target) = (session.pipeline().active(), session.pipeline().target());
                q.push(now, TraceKind::RateSample { peer: conn.no, down, up, in_flight, target });
            }
            // Metadata requests that timed out go to other peers.
            if let (Some(phase), true) = (t.phase.as_deref_mut(), session.is_awaiting_metadata()) {
                phase.request_more(session, now);
            }
            self.mark_transmit(slot);
        }
        for (_, t) in self.torrents.iter_mut() {
            if let Some(phase) = t.phase.as_deref_mut() {
                phase.fetch.on_timeout(now);
            }
        }
        self.trace_torrent_rates(now);
        self.pex_out(now);
        self.dht_lookups(now);
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            self.webseeds_go(id, now);
        }
        self.dial_more(now, true);
    }

    /// Once a second while tracing: each active torrent's payload that second, and its web seeds'.
    fn trace_torrent_rates(&mut self, now: Timestamp) {
        if self.trace.is_none() {
            return;
        }
        let sample = self.take_loop_sample();
        let Some(q) = self.trace.as_deref_mut() else {
            return;
        };
        q.push(now, sample);
        for (k, t) in self.torrents.iter() {
            let (Some(swarm), true) = (t.swarm(), t.is_active()) else {
                continue;
            };
            let id = TorrentId(k);
            let (down, up, web) = (swarm.totals.downloaded, swarm.totals.uploaded, t.webseeds.downloaded());
            let last = q.totals.insert(id, (down, up, web)).unwrap_or_default();
            let peers = self.conns.iter().filter(|(_, c)| c.torrent == Some(id) && c.is_handshaken()).count();
            let peers = u32::try_from(peers).unwrap_or(u32::MAX);
            q.push(now, TraceKind::TorrentRate { torrent: id, down: down - last.0, up: up - last.1, peers });
            if web > last.2 {
                q.push(now, TraceKind::WebSeedData { torrent: id, bytes: web - last.2 });
            }
        }
    }

    // ---- end of turn ---------------------------------------------------------------------------------

    /// The work at the end of every turn: a slice of the data check, a slice of confirming trusted
    /// pieces, `have` and cancel fan-out, bans, reaping, dialling, forgetting removed torrents.
    pub fn end_turn(&mut self, now: Timestamp) {
        if let Some(q) = self.trace.as_deref_mut() {
            // What sessions recorded outside a read pass (timers, choke rounds, `have` fan-out).
            for (_, conn) in self.conns.iter_mut() {
                if let (peer, Some(torrent), Some(session)) = (conn.no, conn.torrent, conn.session.as_mut()) {
                    let lost = session.drain_trace(|event| q.push(now, TraceKind::Session { peer, torrent, event }));
                    q.add_lost(lost);
                }
            }
        }
        self.pex_in(now);
        self.metadata_some(now);
        self.check_some(now);
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            self.confirm_some(id, now);
            self.announce_verified(id, now);
            let bans = self.torrents[id.0].data.as_mut().map(|d| std::mem::take(&mut d.to_ban)).unwrap_or_default();
            for no in bans {
                self.ban(id, no, now);
            }
        }
        self.reap_closed(now);
        self.dial_more(now, false);
        self.forget_removed(now);
    }

    /// Addresses peers gave us by peer exchange become candidates (never for a private torrent: its
    /// sessions do not even pass the messages on).
    fn pex_in(&mut self, now: Timestamp) {
        // Runs every turn: no list is made for our own addresses.
        let own_pair;
        let own: &[SocketAddr] = match self.config.listen_port {
            Some(port) => {
                own_pair =
                    [SocketAddr::from(([0, 0, 0, 0], port)), SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))];
                &own_pair
            }
            None => &[],
        };
        let mut added = false;
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            let t = &mut self.torrents[id.0];
            let mut received = t.data.as_mut().map(|d| std::mem::take(&mut d.pex_in)).unwrap_or_default();
            if let Some(phase) = t.phase.as_deref_mut() {
                received.append(&mut phase.pex_in);
            }
            for (no, payload) in received {
                let Some(conn) =
                    self.conns.iter_mut().find(|(_, c)| c.torrent == Some(id) && c.no == no).map(|(_, c)| c)
                else {
                    continue;
                };
                match conn.pex.on_message(&payload, own) {
                    Ok(addrs) => {
                        log::debug!("{}: peer exchange: {} new peers", conn.addr, addrs.len());
                        for addr in addrs {
                            added |= t.candidates.add(addr);
                        }
                    }
                    Err(e) => log::debug!("{}: peer exchange: {e}", conn.addr),
                }
            }
        }
        if added {
            self.dial_more(now, false);
        }
    }

    /// Once a second: tells every peer that offers ut_pex which peers of its torrent we are connected to
    /// (each connection's machine sends at most once a minute, only what changed).
    fn pex_out(&mut self, now: Timestamp) {
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            let t = &self.torrents[id.0];
            let private = t.data.as_ref().is_some_and(|d| d.ctx.private);
            if private || !t.accepts_peers() {
                continue;
            }
            let members: Vec<(usize, Option<SocketAddr>)> = self
                .conns
                .iter()
                .filter(|(_, c)| c.torrent == Some(id) && c.closing.is_none() && c.is_handshaken())
                .map(|(k, c)| (k, c.listen_addr()))
                .collect();
            for &(slot, own) in &members {
                let conn = &mut self.conns[slot];
                if !conn.session.as_ref().and_then(|s| s.extended.as_ref()).is_some_and(|hs| hs.ut_pex.is_some()) {
                    continue;
                }
                let others: Vec<SocketAddr> =
                    members.iter().filter_map(|&(k, a)| a.filter(|_| k != slot && a != own)).collect();
                if let Some(payload) = conn.pex.poll_message(&others, now) {
                    if let Some(session) = conn.session.as_mut() {
                        session.send_extended(crate::peer::session::PeerExtension::Pex, &payload);
                    }
                    self.mark_transmit(slot);
                }
            }
        }
    }

    /// Magnets: peers that sent bad metadata are dropped; verified metadata makes the torrent.
    fn metadata_some(&mut self, now: Timestamp) {
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            let t = &mut self.torrents[id.0];
            let Some(phase) = t.phase.as_deref_mut() else {
                continue;
            };
            for (no, reason) in std::mem::take(&mut phase.to_drop) {
                if let Some(slot) = self.conns.iter().find(|(_, c)| c.torrent == Some(id) && c.no == no).map(|(k, _)| k)
                {
                    self.close_conn(slot, reason);
                }
            }
            let t = &mut self.torrents[id.0];
            if t.state != State::AwaitingMetadata || !t.phase.as_ref().is_some_and(|p| p.info.is_some()) {
                continue;
            }
            let (started, peers) = t.phase.as_ref().map_or((now, 0), |p| (p.started_at, p.fetch.peers_asked()));
            let completed = t.complete_metadata();
            if completed.is_ok() {
                if let Some(e) = self.overlap_with_others(id) {
                    self.fail_torrent(id, e, now);
                    continue;
                }
            }
            let t = &mut self.torrents[id.0];
            match completed {
                Ok((size, files)) => {
                    log::info!("{}: metadata complete", t.name);
                    if let Some(q) = self.trace.as_deref_mut() {
                        q.push(now, TraceKind::MetadataReceived { torrent: id, size, files, peers });
                    }
                    self.events.push_back(Event::MetadataReceived {
                        torrent: id,
                        name: t.name.clone(),
                        size,
                        files,
                        peers,
                        elapsed: now - started,
                    });
                }
                Err(e) => self.fail_torrent(id, e, now),
            }
        }
    }

    /// A magnet's files are known only now: they must not use a path another torrent in the same directory
    /// uses (the command line checks `.torrent` files before starting).
    fn overlap_with_others(&self, id: TorrentId) -> Option<torrent::TorrentError> {
        let t = &self.torrents[id.0];
        let mine = t.paths();
        self.torrents.iter().filter(|(k, o)| *k != id.0 && o.opts.dir == t.opts.dir).find_map(|(_, other)| {
            crate::metainfo::overlap(&mine, &other.paths())
                .map(|path| torrent::TorrentError::Overlap { path: t.opts.dir.join(path), other: other.name.clone() })
        })
    }

    /// One torrent checks at a time: the lowest id still in `Checking`.
    fn check_some(&mut self, now: Timestamp) {
        if self.shutting_down {
            return;
        }
        let Some(id) = self.torrents.iter().find(|(_, t)| t.state == State::Checking).map(|(k, _)| TorrentId(k)) else {
            return;
        };
        let t = &mut self.torrents[id.0];
        if t.check.is_none() {
            if let Err(e) = t.start_check(self.config.listen_port, self.peer_id) {
                self.fail_torrent(id, e, now);
                return;
            }
            if let Some(data) = t.data.as_mut() {
                data.owner = id.0;
            }
        }
        let t = &mut self.torrents[id.0];
        let done = t.check_some(&mut self.disk);
        if std::mem::take(&mut self.check_progressed) || done {
            if let Some((checked, total)) = t.check.as_ref().map(|c| c.progress()) {
                if total > 0 {
                    self.events.push_back(Event::Checking { torrent: id, done: checked, total });
                }
            }
        }
        if !done {
            return;
        }
        match t.finish_check() {
            Err(e) => self.fail_torrent(id, e, now),
            Ok(summary) => {
                let seeding = !matches!(t.opts.mode, torrent::Mode::Download { .. });
                self.events.push_back(Event::Checked { torrent: id, summary, seeding });
                self.activate(id, now);
                self.webseeds_go(id, now);
            }
        }
    }

    /// The check is done: announce, dial, and stop at once if there is nothing to do.
    fn activate(&mut self, id: TorrentId, now: Timestamp) {
        // Connections made while the metadata was fetched take part in the swarm from now on.
        let slots: Vec<usize> = self.conns.iter().filter(|(_, c)| c.torrent == Some(id)).map(|(k, _)| k).collect();
        for slot in &slots {
            let conn = &mut self.conns[*slot];
            let (Some(session), Some(data)) = (conn.session.as_mut(), self.torrents[id.0].data.as_mut()) else {
                continue;
            };
            if session.is_awaiting_metadata() {
                session.upgrade(&data.ctx, &mut data.swarm, now);
                conn.read.fit(&data.ctx.limits);
            }
        }
        for slot in slots {
            self.mark_transmit(slot);
        }
        let t = &mut self.torrents[id.0];
        t.phase = None;
        let transfer = t.transfer();
        t.trackers.on_timeout(now, transfer, &mut self.rng);
        self.pump_trackers(id, now);
        let t = &self.torrents[id.0];
        if t.is_complete() && !t.opts.keep_seeding() {
            self.stop_torrent(id, State::Stopped, now);
        }
    }

    /// Hashes a bounded amount of a torrent's pieces trusted from the resume file; confirmed ones are
    /// announced, failed ones reported.
    fn confirm_some(&mut self, id: TorrentId, now: Timestamp) {
        let t = &mut self.torrents[id.0];
        if !t.is_active() {
            return;
        }
        let Some(data) = t.data.as_mut() else {
            return;
        };
        if data.swarm.has_unconfirmed() {
            data.confirm_some(&mut self.disk);
        }
        if data.confirmed.is_empty() && data.confirm_failed.is_empty() {
            return;
        }
        let confirmed = std::mem::take(&mut data.confirmed);
        let failed = std::mem::take(&mut data.confirm_failed);
        for &piece in &failed {
            let refetch = data.swarm.wants(piece);
            log::info!("{}: piece {piece}: data changed on disk since the resume file recorded it", t.name);
            self.events.push_back(Event::ConfirmFailed { torrent: id, piece, refetch });
        }
        let complete = !confirmed.is_empty() && data.swarm.is_complete() && !t.completed_announced;
        self.each_session(id, |session, swarm| {
            for &piece in &confirmed {
                session.on_we_confirmed(piece);
            }
            for &piece in &failed {
                session.on_piece_wanted(piece, swarm, now);
            }
        });
        if complete {
            self.on_complete(id, now);
        }
    }

    /// Runs `f` on every live session of torrent `id`, with its swarm, then queues their output.
    fn each_session(&mut self, id: TorrentId, mut f: impl FnMut(&mut PeerSession, &mut crate::swarm::Swarm)) {
        let Some(data) = self.torrents.get_mut(id.0).and_then(|t| t.data.as_mut()) else {
            return;
        };
        let mut touched = Vec::new();
        for (slot, conn) in self.conns.iter_mut() {
            if conn.torrent != Some(id) || conn.closing.is_some() {
                continue;
            }
            if let Some(session) = conn.session.as_mut() {
                f(session, &mut data.swarm);
                touched.push(slot);
            }
        }
        for slot in touched {
            self.mark_transmit(slot);
        }
    }

    /// Tells every peer of the torrent about newly verified pieces and endgame cancels.
    fn announce_verified(&mut self, id: TorrentId, now: Timestamp) {
        let t = &mut self.torrents[id.0];
        let Some(data) = t.data.as_mut() else {
            return;
        };
        for piece in data.failed.drain(..) {
            if let Some(q) = self.trace.as_deref_mut() {
                q.push(now, TraceKind::PieceFailed { torrent: id, piece });
            }
        }
        if data.verified.is_empty() && !data.swarm.has_endgame_taken() {
            return;
        }
        let verified = std::mem::take(&mut data.verified);
        for &piece in &verified {
            t.unsaved_bytes += u64::from(data.ctx.geometry.piece_len(piece));
            if let Some(q) = self.trace.as_deref_mut() {
                q.push(now, TraceKind::PieceVerified { torrent: id, piece });
            }
        }
        let taken: Vec<_> = data.swarm.drain_endgame_taken().collect();
        let complete = !verified.is_empty() && data.swarm.is_complete() && !t.completed_announced;
        let save = t.unsaved_bytes >= SAVE_RESUME_AFTER_BYTES;
        self.each_session(id, |session, swarm| {
            for b in &taken {
                session.on_block_taken(b);
            }
            for &piece in &verified {
                session.on_we_have(piece, swarm, now);
            }
        });
        if complete {
            self.on_complete(id, now);
        }
        if save {
            if let Err(e) = self.torrents[id.0].save_resume_in_background() {
                self.fail_torrent(id, torrent::TorrentError::Storage(e), now);
            }
        }
    }

    fn on_complete(&mut self, id: TorrentId, now: Timestamp) {
        let t = &mut self.torrents[id.0];
        t.completed_announced = true;
        // BEP 3's `completed` is for a download that finished in this run: not for data that was all
        // on disk and only confirmed (`rill seed`, or a download restarted after it finished).
        if t.swarm().is_some_and(|s| s.totals.downloaded > 0) {
            let transfer = t.transfer();
            t.trackers.on_completed(now, transfer);
            self.pump_trackers(id, now);
        }
        log::info!("{}: download complete", self.torrents[id.0].name);
        self.trace(now, || TraceKind::Completed { torrent: id });
        self.events.push_back(Event::Completed { torrent: id });
        let t = &self.torrents[id.0];
        if !t.opts.keep_seeding() {
            self.stop_torrent(id, State::Stopped, now);
        } else if t.is_seed() {
            let seeds: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.torrent == Some(id) && c.session.as_ref().is_some_and(PeerSession::is_peer_seed))
                .map(|(k, _)| k)
                .collect();
            for slot in seeds {
                self.close_conn(slot, DropReason::NotNeeded);
            }
        }
    }

    fn forget_removed(&mut self, now: Timestamp) {
        let removing = std::mem::take(&mut self.removing);
        for id in removing {
            match self.torrents.get_mut(id.0) {
                Some(t) if t.is_finished(now) && !self.conns.iter().any(|(_, c)| c.torrent == Some(id)) => {
                    if let Err(e) = t.save_resume() {
                        log::error!("{}: cannot save the resume file: {e}", t.name);
                    }
                    let t = self.torrents.remove(id.0);
                    if let Some(data) = &t.data {
                        self.disk.cancel(data.disk.key);
                    }
                    self.by_hash.remove(&t.info_hash);
                    self.by_req2.remove(&mse::req2_key(&t.info_hash));
                }
                Some(_) => self.removing.push(id),
                None => {}
            }
        }
    }

    // ---- connections: dialling, closing, choking -----------------------------------------------------

    fn new_peer_no(&mut self) -> PeerNo {
        self.next_peer_no += 1;
        PeerNo(self.next_peer_no)
    }

    fn half_open(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.is_connecting()).count()
    }

    /// Connections not being closed.
    fn live_conns(&self) -> usize {
        self.conns.len() - self.closing.len()
    }

    fn slot_policy(&self) -> SlotPolicy {
        SlotPolicy::new(self.config.max_peers)
    }

    /// What the slot policy needs to know about every live connection; `torrent`: the one a newcomer is
    /// for, if known.
    fn slot_view(&self, torrent: Option<TorrentId>) -> Vec<PeerUse<usize>> {
        self.conns
            .iter()
            .filter(|(_, c)| c.closing.is_none())
            .map(|(slot, c)| {
                let s = c.session.as_ref();
                PeerUse {
                    key: slot,
                    ip: c.addr.ip(),
                    outgoing: c.outgoing,
                    connecting: c.is_connecting(),
                    handshaken: c.is_handshaken(),
                    connected_at: c.connected_at,
                    last_payload: c.last_payload,
                    am_interested: s.is_some_and(PeerSession::is_am_interested),
                    peer_interested: s.is_some_and(PeerSession::is_peer_interested),
                    peer_seed: s.is_some_and(PeerSession::is_peer_seed),
                    same_swarm: torrent.is_some() && c.torrent == torrent,
                }
            })
            .collect()
    }

    /// Dials known candidates of every active torrent while there is room. With `turnover` (once a
    /// second), a full house may also give the slot of its least useful peer to one candidate, as the slot
    /// policy decides.
    fn dial_ways(&self) -> &'static [Way] {
        dial_ways(self.config.encryption, self.utp.is_some())
    }

    fn dial_more(&mut self, now: Timestamp, turnover: bool) {
        if self.shutting_down {
            return;
        }
        let policy = self.slot_policy();
        let mut half_open = self.half_open();
        let mut replaced = false;
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            loop {
                let t = &mut self.torrents[id.0];
                if !t.accepts_peers() || (t.is_complete() && !t.opts.keep_seeding()) {
                    break;
                }
                if half_open >= self.config.max_half_open
                    || (!turnover && self.conns.len() - self.closing.len() >= self.config.max_peers)
                {
                    return;
                }
                let we_seed = t.is_seed();
                let Some(addr) = t.candidates.next_to_dial(now) else {
                    break;
                };
                match policy.on_dial(addr.ip(), &self.slot_view(Some(id)), we_seed, now) {
                    Admission::Admit => {}
                    Admission::Replace(victim) if turnover && !replaced => {
                        replaced = true;
                        log::debug!("{}: replaced by a dial to {addr}", self.conns[victim].addr);
                        self.close_conn(victim, DropReason::NotNeeded);
                    }
                    Admission::Replace(_) | Admission::Full => {
                        self.torrents[id.0].candidates.put_back(addr);
                        break;
                    }
                    Admission::SameAddress => {
                        log::debug!("{addr}: not dialled: already connected to that address");
                        self.torrents[id.0].candidates.on_closed(addr, true, now);
                        continue;
                    }
                }
                let no = self.new_peer_no();
                let Some((ctx, _)) = self.torrents[id.0].session_parts() else {
                    break;
                };
                let mut session = PeerSession::outgoing(no, ctx, now);
                if self.trace.is_some() {
                    session.enable_trace();
                }
                session.set_peer_ip(addr.ip());
                let read = ReadBuf::new(&ctx.limits);
                let info_hash = ctx.info_hash;
                let t = &self.torrents[id.0];
                let policy = self.config.encryption;
                let way = t.candidates.way(&addr, self.dial_ways());
                let encrypt = way.encrypt;
                let (encryption, first) = if encrypt {
                    let (e, first) = Encryption::initiate(&mut self.entropy, info_hash, policy.provide());
                    (e, first)
                } else {
                    (Encryption::Plain, Vec::new())
                };
                let over_utp = way.utp;
                let mut conn = PeerConn::new(no, addr, Some(id), Some(session), read, encryption, now);
                conn.pre_out = first;
                conn.mse = encrypt;
                let utp_id = if over_utp { self.utp_connect(addr, now) } else { None };
                if let Some(utp_id) = utp_id {
                    conn.transport = utp::Transport::Utp(utp_id);
                }
                let slot = self.conns.insert(conn);
                let transport = if utp_id.is_some() { trace::Transport::Utp } else { trace::Transport::Tcp };
                self.trace(now, || TraceKind::ConnectAttempt {
                    peer: no,
                    torrent: id,
                    addr,
                    transport,
                    encrypted: encrypt,
                });
                match utp_id {
                    Some(utp_id) => {
                        self.utp_bind(utp_id, slot);
                        self.pump_utp(now);
                        log::debug!("{addr}: connecting over uTP");
                    }
                    None => {
                        self.actions.push_back(Action::Connect { conn: ConnId(slot), addr });
                        log::debug!("{addr}: connecting");
                    }
                }
                self.reschedule_conn(slot, now);
                half_open += 1;
            }
        }
        let _ = self.live_conns();
    }

    /// Moves the connection's wheel entry earlier if its next deadline moved earlier. Never earlier than
    /// the next tick: a deadline in the past must not fire again in the same turn.
    fn reschedule_conn(&mut self, slot: usize, now: Timestamp) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let next = match &conn.session {
            Some(s) => s.next_deadline(),
            None => Some(conn.handshake_deadline),
        };
        let Some(next) = next else {
            return;
        };
        let next = next.max(now + WHEEL_TICK);
        if let Some((id, at)) = conn.timer {
            if at <= next {
                return;
            }
            self.timers.cancel(id);
        }
        let id = self.timers.schedule(next, Wake::Peer(slot, conn.no));
        conn.timer = Some((id, next));
    }

    fn close_conn(&mut self, slot: usize, reason: DropReason) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.closing.is_none() {
                log::debug!("{}: dropped: {reason}", conn.addr);
                conn.closing = Some(reason);
                self.closing.push(slot);
            }
        }
    }

    fn reap_closed(&mut self, now: Timestamp) {
        for slot in std::mem::take(&mut self.closing) {
            self.drain_session_trace(slot, now);
            let mut conn = self.conns.remove(slot);
            if let Some(q) = self.trace.as_deref_mut() {
                let reason = conn.closing.unwrap_or(DropReason::Shutdown);
                let peer = conn.no;
                q.push(
                    now,
                    match conn.session.as_ref() {
                        Some(s) if s.phase() == Phase::AwaitingConnect => TraceKind::ConnectFailed { peer, reason },
                        s => TraceKind::PeerDropped {
                            peer,
                            reason,
                            downloaded: s.map_or(0, |s| s.downloaded),
                            uploaded: s.map_or(0, |s| s.uploaded),
                        },
                    },
                );
            }
            if let Some((id, _)) = conn.timer {
                self.timers.cancel(id);
            }
            let reason = conn.closing.unwrap_or(DropReason::Shutdown);
            if let utp::Transport::Utp(id) = conn.transport {
                self.utp_release(id, &reason);
            }
            let peer = peer_snapshot(&conn, self.last_sample);
            if let (Some(tid), Some(session)) = (conn.torrent, conn.session.as_mut()) {
                if let Some(t) = self.torrents.get_mut(tid.0) {
                    if let Some((_, swarm)) = t.session_parts() {
                        session.on_closed(swarm);
                    }
                    if let Some(phase) = t.phase.as_deref_mut() {
                        phase.fetch.on_peer_gone(conn.no.0);
                    }
                    // A seed we met while seeding is no use to us: back off from it like from a failure.
                    let useful = session.peer_id.is_some() && reason != DropReason::NotNeeded;
                    // Closed by the peer after our handshake and before its own: it may take only another way
                    // (encrypted or not, TCP or uTP); a TCP connect that failed may mean uTP only.
                    let connect_failed = conn.transport == utp::Transport::Tcp
                        && matches!(reason, DropReason::ConnectFailed(_) | DropReason::ConnectTimedOut);
                    let refused = conn.outgoing
                        && session.peer_id.is_none()
                        && (connect_failed
                            || (session.phase() != Phase::AwaitingConnect
                                && matches!(
                                    reason,
                                    DropReason::ClosedByPeer
                                        | DropReason::Io(_)
                                        | DropReason::Misbehaved(PeerMisbehaved::WrongProtocolString)
                                )));
                    if conn.outgoing || session.peer_id.is_some() {
                        match reason {
                            DropReason::Misbehaved(PeerMisbehaved::OwnPeerId) => t.candidates.forget(conn.addr),
                            _ if refused => {
                                let ways = dial_ways(self.config.encryption, self.utp.is_some());
                                if t.candidates.on_refused(conn.addr, ways, connect_failed, now) {
                                    let way = t.candidates.way(&conn.addr, ways);
                                    let how = match (way.utp, way.encrypt) {
                                        (false, false) => "plaintext over TCP",
                                        (false, true) => "with encryption over TCP",
                                        (true, false) => "plaintext over uTP",
                                        (true, true) => "with encryption over uTP",
                                    };
                                    log::debug!("{}: handshake refused ({reason}); trying {how}", conn.addr);
                                }
                            }
                            _ if conn.outgoing => t.candidates.on_closed(conn.addr, useful, now),
                            _ => {}
                        }
                    }
                }
            }
            self.actions.push_back(Action::Close { conn: ConnId(slot) });
            self.events.push_back(Event::PeerClosed {
                conn: ConnId(slot),
                torrent: conn.torrent,
                addr: conn.addr,
                reason,
                peer,
            });
        }
    }

    fn choke_round(&mut self, id: TorrentId, now: Timestamp) {
        let t = &mut self.torrents[id.0];
        if !t.is_active() {
            return;
        }
        let stats: Vec<PeerStat<usize>> = self
            .conns
            .iter()
            .filter(|(_, c)| c.torrent == Some(id) && c.closing.is_none() && c.is_handshaken())
            .filter_map(|(slot, c)| {
                let s = c.session.as_ref()?;
                let last_data = s.last_block_at.unwrap_or(c.connected_at);
                Some(PeerStat {
                    key: slot,
                    no: s.no,
                    interested: s.is_peer_interested(),
                    am_choking: s.is_am_choking(),
                    download_rate: s.download_rate(),
                    upload_rate: s.upload_rate(),
                    snubbed: s.is_am_interested() && now - last_data >= SNUB_AFTER,
                    connected_at: c.connected_at,
                })
            })
            .collect();
        let seeding = t.is_complete();
        for change in t.choker.run_round(&stats, seeding, now, &mut self.rng) {
            if let Some(s) = self.conns[change.key].session.as_mut() {
                s.set_choking(change.choke);
            }
            self.mark_transmit(change.key);
        }
        self.size_serve_ahead();
    }

    /// Bytes that may be downloaded for `torrent` now, by the engine's download bucket and the torrent's own
    /// (`usize::MAX` with neither); `None` while either is dry.
    fn download_allowance(&self, torrent: Option<TorrentId>) -> Option<usize> {
        let own = torrent.and_then(|t| self.torrents.get(t.0)).and_then(|t| t.down_bucket.as_ref());
        [self.down_bucket.as_ref(), own].into_iter().flatten().try_fold(usize::MAX, |allowance, bucket| {
            (!bucket.is_exhausted()).then(|| allowance.min(bucket.available() as usize))
        })
    }

    /// Refills the rate-limit buckets (the engine's and each torrent's) and resumes the connections they
    /// held back: a connection goes on once both its buckets have tokens again.
    fn refill(&mut self, now: Timestamp) {
        for bucket in [self.up_bucket.as_mut(), self.down_bucket.as_mut()].into_iter().flatten() {
            bucket.refill(now);
        }
        let mut any_own_up = false;
        for (_, t) in self.torrents.iter_mut() {
            any_own_up |= t.up_bucket.is_some();
            for bucket in [t.up_bucket.as_mut(), t.down_bucket.as_mut()].into_iter().flatten() {
                bucket.refill(now);
            }
        }
        let dry = |b: Option<&TokenBucket>| b.is_some_and(TokenBucket::is_exhausted);
        if (self.up_bucket.is_some() || any_own_up) && !dry(self.up_bucket.as_ref()) {
            let torrents = &self.torrents;
            let waiting: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.closing.is_none() && c.session.as_ref().is_some_and(|s| s.queued_requests() > 0))
                .filter(|(_, c)| !dry(c.torrent.and_then(|t| torrents.get(t.0)).and_then(|t| t.up_bucket.as_ref())))
                .map(|(slot, _)| slot)
                .collect();
            for slot in waiting {
                if let Some(c) = self.conns.get_mut(slot) {
                    if !c.in_transmit {
                        c.in_transmit = true;
                        self.transmit.push_back(slot);
                    }
                }
            }
        }
        if !dry(self.down_bucket.as_ref()) && !self.throttled.is_empty() {
            for slot in std::mem::take(&mut self.throttled) {
                let own = self.conns.get(slot).and_then(|c| c.torrent).and_then(|t| self.torrents.get(t.0));
                if dry(own.and_then(|t| t.down_bucket.as_ref())) {
                    self.throttled.push(slot);
                } else {
                    self.queue_backlog(slot);
                }
            }
        }
    }

    fn ban(&mut self, id: TorrentId, no: PeerNo, now: Timestamp) {
        if self.ban_webseed(id, no, now) {
            return;
        }
        let Some((slot, conn)) = self.conns.iter().find(|(_, c)| c.torrent == Some(id) && c.no == no) else {
            return;
        };
        log::info!("{}: banned: sent data that failed verification", conn.addr);
        let addr = conn.addr;
        let peer_id = conn.session.as_ref().and_then(|s| s.peer_id);
        let t = &mut self.torrents[id.0];
        if let Some(pid) = peer_id {
            t.banned_ids.push(pid);
        }
        t.candidates.forget(addr);
        self.close_conn(slot, DropReason::Banned);
    }

    // ---- trackers ------------------------------------------------------------------------------------

    /// Moves a torrent's tracker requests to the action queue (with engine-wide ids) and its news to the
    /// event queue, and keeps its wheel entry.
    fn pump_trackers(&mut self, id: TorrentId, now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else {
            return;
        };
        while let Some(io) = t.trackers.poll_io() {
            self.actions.push_back(Action::Tracker(namespace_io(id, io)));
        }
        let mut added = false;
        while let Some(event) = t.trackers.poll_event() {
            if let Some(q) = self.trace.as_deref_mut() {
                let kind = match &event {
                    TrackerEvent::Requested { url, event } => {
                        Some(TraceKind::TrackerRequest { torrent: id, url: url.clone(), event: *event })
                    }
                    TrackerEvent::Announced { url, peers, seeders, leechers, .. } => Some(TraceKind::TrackerResponse {
                        torrent: id,
                        url: url.clone(),
                        peers: *peers,
                        seeders: *seeders,
                        leechers: *leechers,
                    }),
                    TrackerEvent::Error { url, message } | TrackerEvent::Warning { url, message } => {
                        Some(TraceKind::TrackerError {
                            torrent: id,
                            url: url.clone(),
                            message: message.clone(),
                            warning: matches!(event, TrackerEvent::Warning { .. }),
                        })
                    }
                    TrackerEvent::Peers(_) | TrackerEvent::Scraped { .. } => None,
                };
                if let Some(kind) = kind {
                    q.push(now, kind);
                }
            }
            match event {
                TrackerEvent::Requested { .. } => {}
                TrackerEvent::Peers(addrs) => {
                    for addr in addrs {
                        added |= t.candidates.add(addr);
                    }
                }
                TrackerEvent::Warning { url, message } => {
                    log::info!("tracker {url}: warning: {message}");
                    if !t.stopping {
                        self.events
                            .push_back(Event::Tracker { torrent: id, news: TrackerNews::Warning { url, message } });
                    }
                }
                TrackerEvent::Error { url, message } => {
                    log::info!("tracker {url}: {message}");
                    if !t.stopping {
                        self.events
                            .push_back(Event::Tracker { torrent: id, news: TrackerNews::Error { url, message } });
                    }
                }
                TrackerEvent::Announced { url, peers, seeders, leechers, .. } => {
                    log::info!("tracker {url}: {peers} peers");
                    let next = t
                        .trackers
                        .status()
                        .into_iter()
                        .find(|s| s.url == url)
                        .and_then(|s| s.next_announce)
                        .map(|at| at - now);
                    if !t.stopping {
                        self.events.push_back(Event::Tracker {
                            torrent: id,
                            news: TrackerNews::Announced { url, peers, seeders, leechers, next },
                        });
                    }
                }
                TrackerEvent::Scraped { .. } => {}
            }
        }
        // Never sooner than the next tick: a deadline at or before `now` would be popped again in this same
        // turn's timer drain, and a machine that kept reporting one would hold the driver in that drain.
        let next = t.trackers.next_deadline().map(|at| at.max(now + WHEEL_TICK));
        match (t.tracker_timer, next) {
            (Some((_, at)), Some(n)) if at <= n => {}
            (current, Some(n)) => {
                if let Some((timer, _)) = current {
                    self.timers.cancel(timer);
                }
                let timer = self.timers.schedule(n, Wake::Trackers(id));
                t.tracker_timer = Some((timer, n));
            }
            (_, None) => {}
        }
        if added {
            self.dial_more(now, false);
        }
    }

    fn tracker_of(&mut self, id: IoId) -> Option<(TorrentId, IoId)> {
        let tid = TorrentId((id.0 >> IO_ID_TORRENT_SHIFT) as usize);
        self.torrents.contains(tid.0).then_some((tid, IoId(id.0 & ((1 << IO_ID_TORRENT_SHIFT) - 1))))
    }

    // ---- snapshots -----------------------------------------------------------------------------------

    /// Every torrent and peer, with the times in it relative to the last rate sample (see `snapshot_at`).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(self.last_sample)
    }

    /// Every torrent and peer; "how long ago" and "how long until" are measured from `now`. Costs one pass
    /// over the connections per torrent and one over the trackers: for views, a few times a second.
    pub fn snapshot_at(&self, now: Timestamp) -> Snapshot {
        let mut torrents = Vec::with_capacity(self.torrents.len());
        for (_, t) in self.torrents.iter() {
            let swarm = t.swarm().filter(|_| t.check.is_none());
            let (mut peers, mut half_open, mut unchoking_us, mut we_unchoke) = (0, 0, 0, 0);
            for (_, c) in self.conns.iter().filter(|(_, c)| c.torrent == Some(t.id)) {
                if c.is_connecting() {
                    half_open += 1;
                    continue;
                }
                peers += 1;
                if let Some(s) = &c.session {
                    unchoking_us += usize::from(!s.is_peer_choking());
                    we_unchoke += usize::from(!s.is_am_choking());
                }
            }
            let mut statuses = t.trackers.status();
            // In the list's own order (tier by tier, as given), not each tier's order of trying: a front-end
            // numbers trackers by place, and a tracker that answers must not change its number.
            let place: HashMap<&str, usize> =
                t.tiers().iter().flatten().enumerate().map(|(i, u)| (u.as_str(), i)).collect();
            statuses.sort_by_key(|s| place.get(s.url.as_str()).copied().unwrap_or(usize::MAX));
            let trackers = statuses
                .into_iter()
                .map(|s| snapshot::TrackerSnapshot {
                    url: s.url,
                    tier: s.tier,
                    state: s.state,
                    seeders: s.seeders,
                    leechers: s.leechers,
                    last_announce_ago: s.last_announce.map(|at| now.saturating_since(at)),
                    peers: s.peers,
                    next_announce_in: s.next_announce.map(|at| at.saturating_since(now)),
                    last_error: s.last_error,
                })
                .collect();
            torrents.push(TorrentSnapshot {
                id: t.id,
                info_hash: t.info_hash,
                name: t.name.clone(),
                state: t.state,
                stopping: t.stopping,
                done: swarm.map_or(0, |s| s.wanted_bytes() - s.left()),
                total: swarm.map_or(0, |s| s.wanted_bytes()),
                downloaded: swarm.map_or(0, |s| s.totals.downloaded),
                uploaded: swarm.map_or(0, |s| s.totals.uploaded),
                down_rate: t.down_rate,
                up_rate: t.up_rate,
                peers,
                half_open,
                seeding: swarm.is_some_and(|s| s.is_complete()) && t.opts.keep_seeding(),
                wasted: swarm.map_or(0, |s| s.totals.wasted),
                hash_failures: swarm.map_or(0, |s| s.totals.hash_failures),
                check_progress: t.check.as_ref().map(|c| c.progress()),
                metadata_progress: t
                    .phase
                    .as_ref()
                    .filter(|_| t.state == State::AwaitingMetadata)
                    .map(|p| (p.fetch.peers_asked(), p.fetch.progress())),
                error: t.error.as_ref().map(ToString::to_string),
                dht: self
                    .dht
                    .as_ref()
                    .filter(|_| t.opts.dht && !t.is_private())
                    .map(|n| (n.dht.node_count(), t.dht.peers_found)),
                unchoking_us,
                we_unchoke,
                trackers,
            });
        }
        let peers = self
            .conns
            .iter()
            .map(|(_, c)| {
                let mut p = peer_snapshot(c, now);
                let downloaded = c.torrent.and_then(|id| self.torrents.get(id.0)).and_then(TorrentCore::swarm);
                let total = downloaded.map_or(0, |s| s.totals.downloaded);
                if total > 0 {
                    p.share = (p.downloaded as f64 / total as f64).min(1.0);
                }
                p
            })
            .collect();
        Snapshot { torrents, peers }
    }

    /// One connection's state (the simulation and tests look at sessions through this).
    pub fn peer(&self, id: ConnId) -> Option<PeerSnapshot> {
        self.conns.get(id.0).map(|c| peer_snapshot(c, self.last_sample))
    }

    pub fn conn_ids(&self) -> Vec<ConnId> {
        self.conns.iter().map(|(k, _)| ConnId(k)).collect()
    }

    /// A torrent's swarm (tests and the simulation).
    pub fn swarm(&self, id: TorrentId) -> Option<&crate::swarm::Swarm> {
        self.torrents.get(id.0).and_then(TorrentCore::swarm)
    }

    /// Runs the start-up checks alone (no confirmation, no dialling) until none is left: the simulation
    /// sets up hosts this way before they meet.
    #[cfg(test)]
    pub(crate) fn finish_checks(&mut self, now: Timestamp) {
        let mut executor = crate::storage::disk::Executor::default();
        let (mut jobs, mut done) = (Vec::new(), Vec::new());
        while self.torrents.iter().any(|(_, t)| t.state == State::Checking) {
            self.check_some(now);
            jobs.extend(std::iter::from_fn(|| self.poll_disk_job()));
            executor.run(&mut jobs, &mut done);
            for d in done.drain(..) {
                self.handle_disk_done(d, now);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn torrent_mut(&mut self, id: TorrentId) -> Option<&mut TorrentCore> {
        self.torrents.get_mut(id.0)
    }

    /// Sessions' pipelines stay within their caps; each torrent's swarm is consistent.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        for (_, t) in self.torrents.iter() {
            if let Some(s) = t.swarm() {
                s.check_invariants();
            }
        }
        for (_, c) in self.conns.iter() {
            if let Some(s) = &c.session {
                assert!(s.pipeline().active() <= crate::peer::pipeline::MAX_DEPTH, "pipeline over its cap");
            }
            assert!(c.session.is_some() == c.torrent.is_some(), "a session exists exactly when the torrent is known");
        }
    }
}

fn peer_snapshot(c: &PeerConn, now: Timestamp) -> PeerSnapshot {
    let encryption = match (&c.cipher, c.mse) {
        (Some(_), _) => snapshot::PeerEncryption::Rc4,
        (None, true) => snapshot::PeerEncryption::MsePlain,
        (None, false) => snapshot::PeerEncryption::Plain,
    };
    let mut p = PeerSnapshot {
        torrent: c.torrent,
        addr: Some(c.addr),
        outgoing: c.outgoing,
        encryption,
        utp: matches!(c.transport, utp::Transport::Utp(_)),
        ..Default::default()
    };
    if let Some(s) = &c.session {
        p.peer_id = s.peer_id;
        p.downloaded = s.downloaded;
        p.uploaded = s.uploaded;
        p.download_rate = s.download_rate();
        p.upload_rate = s.upload_rate();
        p.am_choking = s.is_am_choking();
        p.am_interested = s.is_am_interested();
        p.peer_choking = s.is_peer_choking();
        p.peer_interested = s.is_peer_interested();
        p.requests_active = s.pipeline().active();
        p.requests_timed_out = s.pipeline().timed_out_total();
        p.snubbed = s.pipeline().is_snubbed();
        p.cancels_sent = s.cancels_sent;
        p.rtt = s.pipeline().srtt();
        p.depth = s.pipeline().target();
        p.last_block_ago = s.last_block_at.map(|at| now.saturating_since(at));
        let has = s.peer_has();
        p.progress = if has.is_empty() { 0.0 } else { f64::from(has.count_ones()) / f64::from(has.len()) };
    }
    p
}

/// The ways a connection is tried, in order, under `--encryption` and `--no-utp`: TCP before uTP (the kernel
/// does TCP's work), and with `prefer` plaintext before MSE (no key exchange, no cipher) — each next one
/// only after the peer refused the one before.
fn dial_ways(policy: EncryptionPolicy, utp: bool) -> &'static [Way] {
    const fn w(utp: bool, encrypt: bool) -> Way {
        Way { utp, encrypt }
    }
    const PREFER: [Way; 4] = [w(false, false), w(false, true), w(true, false), w(true, true)];
    const REQUIRE: [Way; 2] = [w(false, true), w(true, true)];
    const OFF: [Way; 2] = [w(false, false), w(true, false)];
    match (policy, utp) {
        (EncryptionPolicy::Prefer, true) => &PREFER,
        (EncryptionPolicy::Prefer, false) => &PREFER[..2],
        (EncryptionPolicy::Require, true) => &REQUIRE,
        (EncryptionPolicy::Require, false) => &REQUIRE[..1],
        (EncryptionPolicy::Off, true) => &OFF,
        (EncryptionPolicy::Off, false) => &OFF[..1],
    }
}

/// Gives a torrent's tracker request an engine-wide id (the torrent in the high bits).
fn namespace_io(id: TorrentId, io: TrackerIo) -> TrackerIo {
    let wide = |local: IoId| IoId(((id.0 as u64) << IO_ID_TORRENT_SHIFT) | local.0);
    match io {
        TrackerIo::Resolve { id: local, host, port } => TrackerIo::Resolve { id: wide(local), host, port },
        TrackerIo::HttpRequest { id: local, addr, request } => {
            TrackerIo::HttpRequest { id: wide(local), addr, request }
        }
        TrackerIo::HttpClose { id: local } => TrackerIo::HttpClose { id: wide(local) },
        other @ TrackerIo::UdpSend { .. } => other,
    }
}

/// What a datagram on the shared socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    Tracker,
    Dht,
    Utp,
    Unknown,
}

/// Tells the protocols sharing the UDP socket apart by their first bytes, as libtorrent does: a BEP 15
/// reply starts with a big-endian action 0-3, a KRPC message with `d`, a uTP packet with its type (0-4)
/// in the high nibble and version 1 in the low one. The three never overlap.
pub fn classify_datagram(data: &[u8]) -> DatagramKind {
    match data {
        [0, 0, 0, 0..=3, ..] if data.len() >= 8 => DatagramKind::Tracker,
        [b'd', ..] => DatagramKind::Dht,
        [first, ..] if first & 0x0f == 1 && first >> 4 <= 4 && data.len() >= 20 => DatagramKind::Utp,
        _ => DatagramKind::Unknown,
    }
}

/// Tracker I/O results come back with engine-wide ids and go to the torrent that asked.
impl TrackerIoSink for Engine {
    /// A web seed's body counts against the download limits (the engine's and its torrent's), as a peer's
    /// blocks do.
    fn http_read_allowance(&self, id: IoId) -> usize {
        if id.0 & webseed::WEB_IO == 0 {
            return usize::MAX;
        }
        self.download_allowance(self.webseed_torrent(id)).unwrap_or(0)
    }
    fn poll_io(&mut self) -> Option<TrackerIo> {
        // The driver takes tracker requests from `poll_action`; nothing is queued here.
        None
    }
    fn on_resolved(&mut self, id: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp) {
        if id.0 & dht::DHT_IO != 0 {
            self.dht_resolved(id, result, now);
        } else if id.0 & webseed::WEB_IO != 0 {
            self.webseed_resolved(id, result, now);
        } else if let Some((tid, local)) = self.tracker_of(id) {
            self.torrents[tid.0].trackers.on_resolved(local, result, now);
            self.pump_trackers(tid, now);
        }
    }
    fn on_http_data(&mut self, id: IoId, data: &[u8], now: Timestamp) {
        if id.0 & webseed::WEB_IO != 0 {
            self.webseed_data(id, data, now);
        } else if let Some((tid, local)) = self.tracker_of(id) {
            self.torrents[tid.0].trackers.on_http_data(local, data, now);
            self.pump_trackers(tid, now);
        }
    }
    fn on_http_closed(&mut self, id: IoId, result: Result<(), io::ErrorKind>, now: Timestamp) {
        if id.0 & webseed::WEB_IO != 0 {
            self.webseed_closed(id, result, now);
        } else if let Some((tid, local)) = self.tracker_of(id) {
            self.torrents[tid.0].trackers.on_http_closed(local, result, now);
            self.pump_trackers(tid, now);
        }
    }
    fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp) {
        self.handle_datagram(from, data, now);
    }
    fn on_udp_send_failed(&mut self, addr: SocketAddr, kind: io::ErrorKind, now: Timestamp) {
        let mut ids = self.torrent_cursor();
        while let Some(id) = ids.next(&self.torrents) {
            self.torrents[id.0].trackers.on_udp_send_failed(addr, kind, now);
            self.pump_trackers(id, now);
        }
    }
}

/// A walk over the engine's torrent slots that holds no borrow (see `Engine::torrent_cursor`).
struct TorrentCursor {
    next: usize,
    end: usize,
}

impl TorrentCursor {
    fn next(&mut self, torrents: &Slab<TorrentCore>) -> Option<TorrentId> {
        while self.next < self.end {
            let key = self.next;
            self.next += 1;
            if torrents.contains(key) {
                return Some(TorrentId(key));
            }
        }
        None
    }
}
