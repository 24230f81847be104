//! The event loop: the only code that touches sockets (through mio) and the clock.
//!
//! Owns: the `mio::Poll`, every registered source (listener, peer connections, tracker sockets, the
//! waker), the timer wheel and what its keys mean, and the order of work in a turn.
//! Must not: decide protocol. Sessions, the swarm, the choker and the tracker machines decide; the loop
//! moves bytes and time between them and the OS.
//!
//! One turn:
//! 1. wait in `poll` until the wheel's next deadline (no wait if the backlog holds peers cut short);
//! 2. read the clock once: that `now` is used for the whole turn;
//! 3. handle every event: accept, connect completions, reads (frames → session → effects), writes,
//!    tracker sockets, the waker (DNS answers);
//! 4. resume backlog peers (read budget spent, or un-paused after their send queue drained);
//! 5. fire due timers (peer time-outs, rate samples, choke rounds, tracker announces, redraws);
//! 6. announce verified pieces and endgame cancels to every peer, dial new peers;
//! 7. reap connections closed this turn (slots are freed only here, so a stale event in the same turn
//!    finds its connection marked closing, never a newcomer in the same slot).
//!
//! After any `on_*` call into a session the loop performs the returned effect, flushes the session's
//! output, and moves its wheel entry if `next_deadline()` moved earlier. Wheel entries are only moved
//! earlier eagerly; a later deadline is picked up when the entry fires (a spurious `on_timeout` is a
//! no-op), which keeps per-frame work O(1).

pub mod peers;
pub mod scrape;
pub mod token;
pub mod trackers;

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::metainfo::Metainfo;
use crate::observe::ui::{self, Snapshot};
use crate::observe::units;
use crate::peer::session::{PeerSession, TorrentContext};
use crate::peer::DropReason;
use crate::rng::Rng;
use crate::storage::{Storage, StorageError};
use crate::swarm::candidates::Candidates;
use crate::swarm::choker::{Choker, PeerStat, CHOKE_ROUND, SNUB_AFTER};
use crate::swarm::throttle::{TokenBucket, REFILL_EVERY};
use crate::swarm::{PeerNo, Swarm};
use crate::time::{millis, secs, Clock, Timestamp};
use crate::timer_wheel::{TimerId, TimerWheel};
use crate::torrent::{InputError, Torrent};
use crate::tracker::{ClientIdentity, TrackerEvent, Trackers, Transfer};
use peers::{Connection, ReadOutcome};
use token::Source;
use trackers::TrackerDriver;

/// Wheel resolution and size: 10 ms × 4096 ≈ 41 s a lap.
const WHEEL_TICK: Duration = millis(10);
const WHEEL_SLOTS: usize = 4096;
const RATE_SAMPLE_EVERY: Duration = secs(1);
const REDRAW_LIVE_EVERY: Duration = millis(250);
const REDRAW_PLAIN_EVERY: Duration = secs(5);
/// How long `stopped` announces may take on exit.
const STOP_GRACE: Duration = secs(3);
/// The resume file is rewritten this often while pieces arrive...
const SAVE_RESUME_EVERY: Duration = secs(5);
/// ...or sooner, once this much has been verified since the last save (each save flushes the data files,
/// so on an SD card it is kept to a few a minute).
const SAVE_RESUME_AFTER_BYTES: u64 = 256 * 1024 * 1024;

/// Everything that can wake the loop. A peer's own timers live inside its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    /// Connect, handshake, keep-alive, silence and request time-outs of the peer in this slot, if it is
    /// still the same peer.
    Peer(usize, PeerNo),
    /// Announces, retransmissions and time-outs of the tracker machines.
    Trackers,
    /// Once a second: rates, pipeline sizing, dialling.
    RateSample,
    /// Status line.
    Redraw,
    /// Give up waiting for `stopped` announces.
    StopDeadline,
    /// Every 10 s: who we upload to.
    ChokeRound,
    /// Every 50 ms while a rate limit is set: refill the token buckets.
    Refill,
    /// Every few seconds: record newly verified pieces in the resume file.
    SaveResume,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UiMode {
    /// One line redrawn in place on a terminal.
    Live,
    /// A plain line every few seconds (logs and pipes).
    Plain,
}

impl UiMode {
    pub fn detect(no_ui: bool) -> Self {
        if no_ui || !io::stdout().is_terminal() {
            UiMode::Plain
        } else {
            UiMode::Live
        }
    }
}

/// How one run behaves.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub max_peers: usize,
    pub max_half_open: usize,
    /// Port to accept peers on; `None`: do not listen.
    pub listen: Option<SocketAddr>,
    /// If `listen`'s port is taken, listen on any free port instead of failing.
    pub listen_fallback: bool,
    pub ui: UiMode,
    /// Peers to dial besides those the trackers give.
    pub extra_peers: Vec<SocketAddr>,
    /// Keep running once every wanted piece is verified.
    pub keep_seeding: bool,
    /// When seeding, stop once uploaded / total reaches this.
    pub seed_ratio: Option<f64>,
    /// Bytes per second across all peers.
    pub up_limit: Option<u64>,
    pub down_limit: Option<u64>,
        /// Regular upload slots (one optimistic slot comes on top).
    pub upload_slots: usize,
    /// Terminal width for the live line (a longer line would wrap and break the redraw).
    pub columns: usize,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub complete: bool,
    /// Stopped by SIGINT or SIGTERM.
    pub interrupted: bool,
    pub elapsed: Duration,
    /// Verified bytes of what was wanted, and all that was wanted.
    pub have_bytes: u64,
    pub wanted_bytes: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes received but not needed (endgame duplicates, failed pieces).
    pub wasted: u64,
    pub hash_failures: u32,
    pub peers_used: usize,
}

/// Why the loop could not go on.
#[derive(Debug)]
pub enum LoopError {
    Poll(io::Error),
    Listen { addr: SocketAddr, error: io::Error },
    Storage(StorageError),
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopError::Poll(e) => write!(f, "event loop failed: {e}"),
            LoopError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            LoopError::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoopError {}

pub struct EventLoop {
    poll: Poll,
    clock: Clock,
    timers: TimerWheel<Wake>,
    config: RunConfig,
    torrent: Torrent,
    rng: Rng,
    listener: Option<TcpListener>,
    peers: Slab<Connection>,
    next_peer_no: u64,
    candidates: Candidates,
    trackers: Trackers,
    tracker_driver: TrackerDriver,
    tracker_timer: Option<(TimerId, Timestamp)>,
    /// Peers cut short (read budget) or un-paused: handled again this turn, no waiting.
    backlog: Vec<usize>,
    /// Slots to reap at the end of the turn.
    closing: Vec<usize>,
    /// Peers that ever sent us payload.
    peers_used: std::collections::HashSet<SocketAddr>,
    last_sample: Timestamp,
    down_rate: f64,
    up_rate: f64,
    last_downloaded: u64,
    last_uploaded: u64,
    started_at: Timestamp,
    stopping: bool,
    stop_deadline_passed: bool,
    completed_announced: bool,
    last_line_len: usize,
    choker: Choker,
    up_bucket: Option<TokenBucket>,
    down_bucket: Option<TokenBucket>,
    /// Peers not read because the download bucket ran dry; resumed on refill.
    throttled: Vec<usize>,
    signals: Option<Signals>,
    interrupted: bool,
    /// Bytes verified since the resume file was last written.
    unsaved_bytes: u64,
    /// Peer ids never to talk to again (they sent data that failed verification).
    banned_ids: Vec<[u8; 20]>,
}

impl EventLoop {
    pub fn new(
        meta: &Metainfo,
        swarm: Swarm,
        storage: Storage,
        config: RunConfig,
        peer_id: [u8; 20],
        mut rng: Rng,
    ) -> Result<Self, LoopError> {
        let poll = Poll::new().map_err(LoopError::Poll)?;
        let clock = Clock::start();
        let now = clock.now();
        let waker = Arc::new(Waker::new(poll.registry(), token::encode(Source::Waker)).map_err(LoopError::Poll)?);
        let mut listener = None;
        let mut listen_port = None;
        if let Some(addr) = config.listen {
            let mut l = match TcpListener::bind(addr) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && config.listen_fallback => {
                    log::info!("port {} is taken; listening on a free port instead", addr.port());
                    TcpListener::bind(SocketAddr::new(addr.ip(), 0))
                }
                other => other,
            }
            .map_err(|error| LoopError::Listen { addr, error })?;
            let local = l.local_addr().map_err(|error| LoopError::Listen { addr, error })?;
            poll.registry()
                .register(&mut l, token::encode(Source::Listener), Interest::READABLE)
                .map_err(LoopError::Poll)?;
            log::info!("listening on {local}");
            listen_port = Some(local.port());
            listener = Some(l);
        }
        let geometry = *swarm.geometry();
        let ctx = TorrentContext {
            info_hash: meta.info_hash,
            our_peer_id: peer_id,
            geometry,
            limits: crate::wire::FrameLimits::for_torrent(geometry.piece_count()),
            listen_port,
        };
        let identity = ClientIdentity {
            info_hash: meta.info_hash,
            peer_id,
            port: listen_port.unwrap_or(0),
            key: rng.next_u32(),
            numwant: 80,
        };
        let trackers = Trackers::new(&meta.trackers, identity, &mut rng, now);
        let tracker_driver = TrackerDriver::new(poll.registry(), waker).map_err(LoopError::Poll)?;
        let mut candidates = Candidates::new();
        if let Some(port) = listen_port {
            candidates.set_own_addresses(vec![
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from(([0, 0, 0, 0], port)),
            ]);
        }
        for addr in &config.extra_peers {
            candidates.add(*addr);
        }
        let mut timers = TimerWheel::new(now, WHEEL_TICK, WHEEL_SLOTS);
        timers.schedule(now + RATE_SAMPLE_EVERY, Wake::RateSample);
        timers.schedule(now, Wake::Redraw);
        timers.schedule(now + CHOKE_ROUND, Wake::ChokeRound);
        timers.schedule(now + SAVE_RESUME_EVERY, Wake::SaveResume);
        if config.up_limit.is_some() || config.down_limit.is_some() {
            timers.schedule(now + REFILL_EVERY, Wake::Refill);
        }
        // Ctrl-C and SIGTERM become readiness events, so a stop is an ordinary turn of the loop.
        let signals = match Signals::new([SIGINT, SIGTERM]) {
            Ok(mut signals) => {
                poll.registry()
                    .register(&mut signals, token::encode(Source::Signals), Interest::READABLE)
                    .map_err(LoopError::Poll)?;
                Some(signals)
            }
            Err(e) => {
                log::warn!("cannot catch signals: {e}; Ctrl-C will stop rill without saving");
                None
            }
        };
        let up_bucket = config.up_limit.map(|r| TokenBucket::new(r, now));
        let down_bucket = config.down_limit.map(|r| TokenBucket::new(r, now));
        let choker = Choker::new(config.upload_slots);
        Ok(EventLoop {
            poll,
            clock,
            timers,
            config,
            torrent: Torrent::new(ctx, swarm, storage, meta.piece_hashes.clone()),
            rng,
            listener,
            peers: Slab::new(),
            next_peer_no: 0,
            candidates,
            trackers,
            tracker_driver,
            tracker_timer: None,
            backlog: Vec::new(),
            closing: Vec::new(),
            peers_used: Default::default(),
            last_sample: now,
            down_rate: 0.0,
            up_rate: 0.0,
            last_downloaded: 0,
            last_uploaded: 0,
            started_at: now,
            stopping: false,
            stop_deadline_passed: false,
            completed_announced: false,
            last_line_len: 0,
            choker,
            up_bucket,
            down_bucket,
            throttled: Vec::new(),
            signals,
            interrupted: false,
            unsaved_bytes: 0,
            banned_ids: Vec::new(),
        })
    }

    /// The port peers can reach us on, if listening.
    pub fn listen_port(&self) -> Option<u16> {
        self.torrent.ctx.listen_port
    }

    fn transfer(&self) -> Transfer {
        Transfer {
            uploaded: self.torrent.swarm.totals.uploaded,
            downloaded: self.torrent.swarm.totals.downloaded,
            left: self.torrent.swarm.left(),
        }
    }

    /// Runs until every wanted piece is verified (or forever when seeding), then says goodbye to trackers.
    /// Whatever the ending, verified pieces are recorded in the resume file first.
    pub fn run(mut self) -> Result<RunOutcome, LoopError> {
        let result = self.run_turns();
        let saved = self.save_resume();
        match (result, saved) {
            (Err(e), Err(save_error)) => {
                log::error!("cannot save the resume file either: {save_error}");
                Err(e)
            }
            (Err(e), Ok(())) => Err(e),
            (Ok(()), Err(save_error)) => Err(save_error),
            (Ok(()), Ok(())) => {
                let now = self.clock.now();
                self.redraw(now, true);
                Ok(RunOutcome {
                    complete: self.torrent.swarm.is_complete(),
                    interrupted: self.interrupted,
                    elapsed: now - self.started_at,
                    have_bytes: self.torrent.swarm.wanted_bytes() - self.torrent.swarm.left(),
                    wanted_bytes: self.torrent.swarm.wanted_bytes(),
                    downloaded: self.torrent.swarm.totals.downloaded,
                    uploaded: self.torrent.swarm.totals.uploaded,
                    wasted: self.torrent.swarm.totals.wasted,
                    hash_failures: self.torrent.swarm.totals.hash_failures,
                    peers_used: self.peers_used.len(),
                })
            }
        }
    }

    /// Flushes the data files, then records the verified pieces.
    fn save_resume(&mut self) -> Result<(), LoopError> {
        let info_hash = self.torrent.ctx.info_hash.0;
        self.torrent.storage.save_resume(&info_hash, self.torrent.swarm.have()).map_err(LoopError::Storage)?;
        self.unsaved_bytes = 0;
        Ok(())
    }

    fn run_turns(&mut self) -> Result<(), LoopError> {
        let mut events = Events::with_capacity(256);
        let now = self.clock.now();
        let transfer = self.transfer();
        self.trackers.on_timeout(now, transfer, &mut self.rng);
        self.pump_trackers(now);
        self.dial_more(now);
        if self.torrent.swarm.is_complete() && !self.config.keep_seeding {
            self.begin_stop(now);
        }
        loop {
            let wait = if self.backlog.is_empty() {
                let now = self.clock.now();
                self.timers.next_deadline().map(|at| at - now)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, wait) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LoopError::Poll(e));
            }
            let now = self.clock.now();
            for event in events.iter() {
                match token::decode(event.token()) {
                    Some(Source::Listener) => self.accept_all(now),
                    Some(Source::Peer(slot)) => self.on_peer_event(slot, event.is_writable(), now)?,
                    Some(source @ (Source::TrackerHttp(_) | Source::TrackerUdp4 | Source::TrackerUdp6)) => {
                        self.tracker_driver.on_ready(source, event, self.poll.registry(), &mut self.trackers, now);
                        self.pump_trackers(now);
                    }
                    Some(Source::Waker) => {
                        self.tracker_driver.on_wake(&mut self.trackers, now);
                        self.pump_trackers(now);
                    }
                    Some(Source::Signals) => self.on_signals(now),
                    None => log::trace!("event for unknown token {:?}", event.token()),
                }
            }
            for slot in std::mem::take(&mut self.backlog) {
                if let Some(conn) = self.peers.get_mut(slot) {
                    conn.in_backlog = false;
                    conn.paused = false;
                }
                self.read_peer(slot, now)?;
            }
            while let Some(wake) = self.timers.pop_expired(now) {
                self.on_timer(wake, now)?;
            }
            self.after_turn(now)?;
            if self.stopping && (self.stop_deadline_passed || self.trackers.is_stopped()) {
                break;
            }
        }
        Ok(())
    }

    // ---- peers --------------------------------------------------------------------------------

    fn half_open(&self) -> usize {
        self.peers.iter().filter(|(_, c)| c.session.phase() == crate::peer::session::Phase::AwaitingConnect).count()
    }

    fn dial_more(&mut self, now: Timestamp) {
        if self.stopping || (self.torrent.swarm.is_complete() && !self.config.keep_seeding) {
            return;
        }
        let mut half_open = self.half_open();
        while self.peers.len() < self.config.max_peers && half_open < self.config.max_half_open {
            let Some(addr) = self.candidates.next_to_dial(now) else {
                break;
            };
            match TcpStream::connect(addr) {
                Ok(socket) => {
                    let no = self.new_peer_no();
                    let session = PeerSession::outgoing(no, &self.torrent.ctx, now);
                    if self.insert_peer(socket, addr, session, now).is_some() {
                        half_open += 1;
                        log::debug!("{addr}: connecting");
                    }
                }
                Err(e) => {
                    log::debug!("{addr}: connect failed: {e}");
                    self.candidates.on_closed(addr, false, now);
                }
            }
        }
    }

    fn new_peer_no(&mut self) -> PeerNo {
        self.next_peer_no += 1;
        PeerNo(self.next_peer_no)
    }

    fn insert_peer(
        &mut self,
        mut socket: TcpStream,
        addr: SocketAddr,
        session: PeerSession,
        now: Timestamp,
    ) -> Option<usize> {
        let entry = self.peers.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            token::encode(Source::Peer(slot)),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::debug!("{addr}: cannot register: {e}");
            self.candidates.on_closed(addr, false, now);
            return None;
        }
        let conn = Connection::new(socket, addr, session, &self.torrent.ctx, now);
        entry.insert(conn);
        self.reschedule_peer(slot, now);
        Some(slot)
    }

    fn accept_all(&mut self, now: Timestamp) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((socket, addr)) => {
                    if self.stopping || self.peers.len() >= self.config.max_peers {
                        log::debug!("{addr}: incoming connection refused: peer limit");
                        drop(socket);
                        continue;
                    }
                    let no = self.new_peer_no();
                    let session = PeerSession::incoming(no, &self.torrent.ctx, now);
                    if let Some(slot) = self.insert_peer(socket, addr, session, now) {
                        log::debug!("{addr}: accepted");
                        // The handshake may already be waiting: edge-triggered readiness will not repeat it.
                        self.queue_backlog(slot);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: never spin, never die. Try again on the next rate sample.
                    log::warn!("accept failed: {e}; pausing incoming connections for a second");
                    return;
                }
            }
        }
    }

    fn queue_backlog(&mut self, slot: usize) {
        if let Some(conn) = self.peers.get_mut(slot) {
            if !conn.in_backlog {
                conn.in_backlog = true;
                self.backlog.push(slot);
            }
        }
    }

    fn on_peer_event(&mut self, slot: usize, writable: bool, now: Timestamp) -> Result<(), LoopError> {
        let Some(conn) = self.peers.get_mut(slot) else {
            return Ok(());
        };
        if conn.closing.is_some() {
            return Ok(());
        }
        if conn.session.phase() == crate::peer::session::Phase::AwaitingConnect {
            match conn.check_connected() {
                Ok(true) => {
                    log::debug!("{}: connected", conn.addr);
                    conn.session.on_connected(&self.torrent.ctx, now);
                }
                Ok(false) => return Ok(()),
                Err(reason) => {
                    self.close_peer(slot, reason);
                    return Ok(());
                }
            }
        }
        self.read_peer(slot, now)?;
        if writable {
            self.flush_peer(slot, now)?;
        }
        Ok(())
    }

    /// Reads and processes a peer's input, then flushes its output.
    fn read_peer(&mut self, slot: usize, now: Timestamp) -> Result<(), LoopError> {
        let Some(conn) = self.peers.get_mut(slot) else {
            return Ok(());
        };
        if conn.closing.is_some() || conn.session.phase() == crate::peer::session::Phase::AwaitingConnect {
            return Ok(());
        }
        let budget = match &self.down_bucket {
            Some(bucket) if bucket.is_exhausted() => {
                self.throttled.push(slot);
                return Ok(());
            }
            Some(bucket) => bucket.available() as usize,
            None => usize::MAX,
        };
        let downloaded_before = conn.session.downloaded;
        let result = conn.read_and_process(&mut self.torrent, budget, now);
        let got = conn.session.downloaded - downloaded_before;
        if got > 0 {
            self.peers_used.insert(conn.addr);
            if let Some(bucket) = &mut self.down_bucket {
                bucket.spend(got);
            }
        }
        match result {
            Ok(ReadOutcome::Drained) => {}
            Ok(ReadOutcome::MoreLater) => {
                if !conn.paused {
                    self.queue_backlog(slot);
                }
            }
            Err(InputError::Drop(reason)) => {
                self.close_peer(slot, reason);
                return Ok(());
            }
            Err(InputError::Fatal(e)) => return Err(LoopError::Storage(e)),
        }
        let conn = &mut self.peers[slot];
        if conn.session.peer_id.is_some_and(|id| self.banned_ids.contains(&id)) {
            self.close_peer(slot, DropReason::Banned);
            return Ok(());
        }
        if self.torrent.swarm.is_seed() && conn.session.is_peer_seed() {
            // Seed meets seed: neither has anything for the other.
            self.close_peer(slot, DropReason::NotNeeded);
            return Ok(());
        }
        if conn.session.is_peer_interested() && conn.session.is_am_choking() && !self.stopping {
            let unchoked = self.peers.iter().filter(|(_, c)| !c.session.is_am_choking()).count();
            if self.choker.has_free_slot(unchoked) {
                self.peers[slot].session.set_choking(false);
            }
        }
        self.flush_peer(slot, now)?;
        self.reschedule_peer(slot, now);
        Ok(())
    }

    fn flush_peer(&mut self, slot: usize, now: Timestamp) -> Result<(), LoopError> {
        let Some(conn) = self.peers.get_mut(slot) else {
            return Ok(());
        };
        if conn.closing.is_some() || conn.session.phase() == crate::peer::session::Phase::AwaitingConnect {
            return Ok(());
        }
        let mut allowance = self.up_bucket.as_ref().map_or(u64::MAX, TokenBucket::available);
        let uploaded_before = self.torrent.swarm.totals.uploaded;
        let result = conn.flush(&mut self.torrent, &mut allowance, now);
        if let Some(bucket) = &mut self.up_bucket {
            bucket.spend(self.torrent.swarm.totals.uploaded - uploaded_before);
        }
        match result {
            Ok(()) => {}
            Err(InputError::Drop(reason)) => {
                self.close_peer(slot, reason);
                return Ok(());
            }
            Err(InputError::Fatal(e)) => return Err(LoopError::Storage(e)),
        }
        let conn = &mut self.peers[slot];
        if conn.paused && conn.session.wants_input() {
            conn.paused = false;
            self.queue_backlog(slot);
        }
        Ok(())
    }

    /// Moves the peer's wheel entry earlier if its session's next deadline moved earlier. Never earlier
    /// than the next tick: a deadline in the past must not fire again in the same turn.
    fn reschedule_peer(&mut self, slot: usize, now: Timestamp) {
        let Some(conn) = self.peers.get_mut(slot) else {
            return;
        };
        let Some(next) = conn.session.next_deadline() else {
            return;
        };
        let next = next.max(now + WHEEL_TICK);
        if let Some((id, at)) = conn.timer {
            if at <= next {
                return;
            }
            self.timers.cancel(id);
        }
        let id = self.timers.schedule(next, Wake::Peer(slot, conn.session.no));
        conn.timer = Some((id, next));
    }

    fn close_peer(&mut self, slot: usize, reason: DropReason) {
        if let Some(conn) = self.peers.get_mut(slot) {
            if conn.closing.is_none() {
                log::debug!("{}: dropped: {reason}", conn.addr);
                conn.closing = Some(reason);
                self.closing.push(slot);
            }
        }
    }

    fn reap_closed(&mut self, now: Timestamp) {
        for slot in std::mem::take(&mut self.closing) {
            let mut conn = self.peers.remove(slot);
            let _ = self.poll.registry().deregister(&mut conn.socket);
            if let Some((id, _)) = conn.timer {
                self.timers.cancel(id);
            }
            conn.session.on_closed(&mut self.torrent.swarm);
                        // A seed we met while seeding is no use to us: back off from it like from a failure.
            let useful = conn.session.peer_id.is_some() && conn.closing != Some(DropReason::NotNeeded);
            match conn.closing {
                Some(DropReason::Misbehaved(crate::peer::PeerMisbehaved::OwnPeerId)) => {
                    self.candidates.forget(conn.addr)
                }
                _ => self.candidates.on_closed(conn.addr, useful, now),
            }
        }
    }

    // ---- timers -------------------------------------------------------------------------------

    fn on_timer(&mut self, wake: Wake, now: Timestamp) -> Result<(), LoopError> {
        match wake {
            Wake::Peer(slot, no) => {
                let Some(conn) = self.peers.get_mut(slot) else {
                    return Ok(());
                };
                if conn.session.no != no || conn.closing.is_some() {
                    return Ok(());
                }
                conn.timer = None;
                if let Err(reason) = conn.session.on_timeout(&mut self.torrent.swarm, now) {
                    self.close_peer(slot, reason);
                    return Ok(());
                }
                self.flush_peer(slot, now)?;
                self.reschedule_peer(slot, now);
            }
            Wake::Trackers => {
                self.tracker_timer = None;
                let transfer = self.transfer();
                self.trackers.on_timeout(now, transfer, &mut self.rng);
                self.pump_trackers(now);
            }
            Wake::RateSample => {
                self.on_rate_sample(now)?;
                self.timers.schedule(now + RATE_SAMPLE_EVERY, Wake::RateSample);
            }
            Wake::Redraw => {
                self.redraw(now, false);
                let every = match self.config.ui {
                    UiMode::Live => REDRAW_LIVE_EVERY,
                    UiMode::Plain => REDRAW_PLAIN_EVERY,
                };
                self.timers.schedule(now + every, Wake::Redraw);
            }
            Wake::StopDeadline => self.stop_deadline_passed = true,
            Wake::ChokeRound => {
                self.choke_round(now);
                self.timers.schedule(now + CHOKE_ROUND, Wake::ChokeRound);
            }
            Wake::SaveResume => {
                if self.unsaved_bytes > 0 {
                    self.save_resume()?;
                }
                self.timers.schedule(now + SAVE_RESUME_EVERY, Wake::SaveResume);
            }
            Wake::Refill => {
                self.refill(now)?;
                self.timers.schedule(now + REFILL_EVERY, Wake::Refill);
            }
        }
        Ok(())
    }

    fn choke_round(&mut self, now: Timestamp) {
        if self.stopping {
            return;
        }
        let stats: Vec<PeerStat<usize>> = self
            .peers
            .iter()
            .filter(|(_, c)| c.closing.is_none() && c.session.peer_id.is_some())
            .map(|(slot, c)| {
                let s = &c.session;
                let last_data = s.last_block_at.unwrap_or(c.connected_at);
                PeerStat {
                    key: slot,
                    no: s.no,
                    interested: s.is_peer_interested(),
                    am_choking: s.is_am_choking(),
                    download_rate: s.download_rate(),
                    upload_rate: s.upload_rate(),
                    snubbed: s.is_am_interested() && now - last_data >= SNUB_AFTER,
                    connected_at: c.connected_at,
                }
            })
            .collect();
        let seeding = self.torrent.swarm.is_complete();
        for change in self.choker.run_round(&stats, seeding, now, &mut self.rng) {
            self.peers[change.key].session.set_choking(change.choke);
            if let Err(e) = self.flush_peer(change.key, now) {
                log::debug!("flush after choke change failed: {e}");
            }
        }
    }

    /// Refills the rate-limit buckets and resumes the peers they held back.
    fn refill(&mut self, now: Timestamp) -> Result<(), LoopError> {
        if let Some(bucket) = &mut self.up_bucket {
            bucket.refill(now);
            if !bucket.is_exhausted() {
                let waiting: Vec<usize> = self
                    .peers
                    .iter()
                    .filter(|(_, c)| c.session.queued_requests() > 0 && c.closing.is_none())
                    .map(|(slot, _)| slot)
                    .collect();
                for slot in waiting {
                    self.flush_peer(slot, now)?;
                }
            }
        }
        if let Some(bucket) = &mut self.down_bucket {
            bucket.refill(now);
            if !bucket.is_exhausted() {
                for slot in std::mem::take(&mut self.throttled) {
                    self.queue_backlog(slot);
                }
            }
        }
        Ok(())
    }

    fn ban(&mut self, no: PeerNo) {
        let Some((slot, conn)) = self.peers.iter().find(|(_, c)| c.session.no == no) else {
            return;
        };
        log::info!("{}: banned: sent data that failed verification", conn.addr);
        if let Some(id) = conn.session.peer_id {
            self.banned_ids.push(id);
        }
        self.candidates.forget(conn.addr);
        self.close_peer(slot, DropReason::Banned);
    }

    fn on_signals(&mut self, now: Timestamp) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let count = signals.pending().count();
        if count == 0 {
            return;
        }
        if self.interrupted {
            // A second Ctrl-C: stop waiting for trackers.
            self.stop_deadline_passed = true;
        }
        log::info!("signal received: stopping");
        self.interrupted = true;
        self.begin_stop(now);
    }

    fn on_rate_sample(&mut self, now: Timestamp) -> Result<(), LoopError> {
        let dt = now - self.last_sample;
        self.last_sample = now;
        let secs = dt.as_secs_f64().max(1e-3);
        let down = self.torrent.swarm.totals.downloaded - self.last_downloaded;
        let up = self.torrent.swarm.totals.uploaded - self.last_uploaded;
        self.last_downloaded = self.torrent.swarm.totals.downloaded;
        self.last_uploaded = self.torrent.swarm.totals.uploaded;
        self.down_rate = 0.5 * self.down_rate + 0.5 * (down as f64 / secs);
        self.up_rate = 0.5 * self.up_rate + 0.5 * (up as f64 / secs);
        let slots: Vec<usize> = self.peers.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let conn = &mut self.peers[slot];
            if conn.closing.is_some() || conn.session.phase() == crate::peer::session::Phase::AwaitingConnect {
                continue;
            }
            conn.session.on_rate_sample(&mut self.torrent.swarm, now, dt);
            self.flush_peer(slot, now)?;
        }
        if let (true, Some(ratio)) = (self.torrent.swarm.is_complete(), self.config.seed_ratio) {
            let total = self.torrent.ctx.geometry.total_length().max(1);
            if self.torrent.swarm.totals.uploaded as f64 / total as f64 >= ratio {
                log::info!("seed ratio {ratio} reached");
                self.begin_stop(now);
            }
        }
        self.dial_more(now);
        Ok(())
    }

    // ---- trackers -----------------------------------------------------------------------------

    fn pump_trackers(&mut self, now: Timestamp) {
        self.tracker_driver.pump(self.poll.registry(), &mut self.trackers, now);
        let mut added = false;
        while let Some(event) = self.trackers.poll_event() {
            match event {
                TrackerEvent::Peers(addrs) => {
                    for addr in addrs {
                        added |= self.candidates.add(addr);
                    }
                }
                                // Shown to the user on stdout; the log keeps a copy for RUST_LOG=info.
                TrackerEvent::Warning { url, message } => {
                    log::info!("tracker {url}: warning: {message}");
                    self.say(now, &format!("tracker {url}: warning: {message}"));
                }
                                TrackerEvent::Error { url, message } => {
                    log::info!("tracker {url}: {message}");
                    self.say(now, &format!("tracker {url}: {message}"));
                }
                TrackerEvent::Announced { url, peers, seeders, leechers, .. } => {
                    log::info!("tracker {url}: {peers} peers");
                    let next = self
                        .trackers
                        .status()
                        .into_iter()
                        .find(|s| s.url == url)
                        .and_then(|s| s.next_announce)
                        .map(|at| format!(", next announce in {}", units::duration(at - now)))
                        .unwrap_or_default();
                    let counts = match (seeders, leechers) {
                        (Some(s), Some(l)) => format!(" ({s} seeders, {l} leechers)"),
                        _ => String::new(),
                    };
                    self.say(now, &format!("tracker {url}: {peers} peers{counts}{next}"));
                }
                TrackerEvent::Scraped { .. } => {}
            }
        }
        if added {
            self.dial_more(now);
        }
        let next = self.trackers.next_deadline();
        match (self.tracker_timer, next) {
            (Some((_, at)), Some(n)) if at <= n => {}
            (current, Some(n)) => {
                if let Some((id, _)) = current {
                    self.timers.cancel(id);
                }
                let id = self.timers.schedule(n, Wake::Trackers);
                self.tracker_timer = Some((id, n));
            }
            (_, None) => {}
        }
    }

    // ---- end of turn --------------------------------------------------------------------------

    fn after_turn(&mut self, now: Timestamp) -> Result<(), LoopError> {
        // Announce verified pieces and endgame cancels to every peer.
        if !self.torrent.verified.is_empty() || self.torrent.swarm.has_endgame_taken() {
            let verified = std::mem::take(&mut self.torrent.verified);
            for &piece in &verified {
                self.unsaved_bytes += u64::from(self.torrent.ctx.geometry.piece_len(piece));
            }
            let taken: Vec<_> = self.torrent.swarm.drain_endgame_taken().collect();
            let slots: Vec<usize> = self.peers.iter().map(|(slot, _)| slot).collect();
            for slot in slots {
                let conn = &mut self.peers[slot];
                if conn.closing.is_some() {
                    continue;
                }
                for b in &taken {
                    conn.session.on_block_taken(b);
                }
                for &piece in &verified {
                    conn.session.on_we_have(piece, &mut self.torrent.swarm, now);
                }
                self.flush_peer(slot, now)?;
            }
            if !verified.is_empty() && self.torrent.swarm.is_complete() && !self.completed_announced {
                self.on_complete(now);
            }
        }
        if self.unsaved_bytes >= SAVE_RESUME_AFTER_BYTES {
            self.save_resume()?;
        }
        for no in std::mem::take(&mut self.torrent.to_ban) {
            self.ban(no);
        }
        self.reap_closed(now);
        self.dial_more(now);
        Ok(())
    }

    fn on_complete(&mut self, now: Timestamp) {
        self.completed_announced = true;
        let transfer = self.transfer();
        self.trackers.on_completed(now, transfer);
        self.pump_trackers(now);
        log::info!("download complete");
        if !self.config.keep_seeding {
            self.begin_stop(now);
        } else if self.torrent.swarm.is_seed() {
            let seeds: Vec<usize> =
                self.peers.iter().filter(|(_, c)| c.session.is_peer_seed()).map(|(slot, _)| slot).collect();
            for slot in seeds {
                self.close_peer(slot, DropReason::NotNeeded);
            }
        }
    }

    /// Stop taking new work, close peers, send `stopped` to trackers, and exit once they answered or
    /// `STOP_GRACE` passed.
    fn begin_stop(&mut self, now: Timestamp) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let slots: Vec<usize> = self.peers.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close_peer(slot, DropReason::Shutdown);
        }
        let transfer = self.transfer();
        self.trackers.on_stop(now, transfer);
        self.pump_trackers(now);
        self.timers.schedule(now + STOP_GRACE, Wake::StopDeadline);
    }

    // ---- the view -----------------------------------------------------------------------------

    fn snapshot(&self) -> Snapshot {
        let total = self.torrent.swarm.wanted_bytes();
        Snapshot {
            done: total - self.torrent.swarm.left(),
            total,
            uploaded: self.torrent.swarm.totals.uploaded,
            down_rate: self.down_rate,
            up_rate: self.up_rate,
            peers: self.peers.len() - self.half_open(),
            half_open: self.half_open(),
            seeding: self.torrent.swarm.is_complete() && self.config.keep_seeding,
            state: self.stopping.then_some("stopping"),
            wasted: self.torrent.swarm.totals.wasted,
            hash_failures: self.torrent.swarm.totals.hash_failures,
        }
    }

    /// Prints one line of news (a tracker answered, failed...) above the live status line.
    fn say(&mut self, now: Timestamp, line: &str) {
        if self.stopping {
            return;
        }
        let mut out = io::stdout().lock();
        match self.config.ui {
            UiMode::Live => {
                let _ =
                    writeln!(out, "\r{line}{}", " ".repeat(self.last_line_len.saturating_sub(line.chars().count())));
                drop(out);
                self.last_line_len = 0;
                self.redraw(now, false);
            }
            UiMode::Plain => {
                let _ = writeln!(out, "{line}");
            }
        }
    }

    fn redraw(&mut self, _now: Timestamp, last: bool) {
        let snap = self.snapshot();
        match self.config.ui {
            UiMode::Live => {
                                let line = ui::render_status(&snap, self.config.columns.saturating_sub(1));
                let pad = self.last_line_len.saturating_sub(line.chars().count());
                let mut out = io::stdout().lock();
                let _ = write!(out, "\r{line}{}", " ".repeat(pad));
                if last {
                    let _ = writeln!(out);
                }
                let _ = out.flush();
                self.last_line_len = line.chars().count();
            }
            UiMode::Plain => {
                let line = ui::render_status(&snap, 200);
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }
}
