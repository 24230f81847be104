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
//!
//! Files: `mod.rs` (the turn, timers, start and stop), `peers.rs` (connections, choking, rate limits),
//! `trackers.rs` (tracker sockets and DNS), `view.rs` (what is printed), `token.rs`, `scrape.rs`.

pub mod peers;
pub mod scrape;
#[cfg(test)]
mod tests;
pub mod token;
pub mod trackers;
mod view;

use std::fmt;
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::metainfo::Metainfo;
use crate::peer::session::{Phase, TorrentContext};
use crate::peer::DropReason;
use crate::rng::{Entropy, Rng};
use crate::storage::{Storage, StorageError};
use crate::swarm::candidates::Candidates;
use crate::swarm::choker::{Choker, CHOKE_ROUND};
use crate::swarm::throttle::{TokenBucket, REFILL_EVERY};
use crate::swarm::{PeerNo, Swarm};
use crate::time::{millis, secs, Clock, Timestamp};
use crate::timer_wheel::{TimerId, TimerWheel};
use crate::torrent::Torrent;
use crate::tracker::{ClientIdentity, Trackers, Transfer};
use peers::Connection;
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
    /// Set by a SIGINT/SIGTERM handler that `main` registered before the data check. A signal that
    /// arrived before the loop registered its own (between the check and `run`) is seen here, at the
    /// start of `run`; later ones reach the loop through its `Signals` source as well.
    pub stop_requested: Option<Arc<AtomicBool>>,
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
    /// Fair, reproducible choices (choker, dialling order).
    rng: Rng,
    /// Values peers must not guess (MSE private keys): the OS source.
    entropy: Entropy,
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
    /// A write to stdout failed: print nothing more (see `view.rs`).
    stdout_lost: bool,
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
        mut entropy: Entropy,
    ) -> Result<Self, LoopError> {
        let poll = Poll::new().map_err(LoopError::Poll)?;
        let clock = Clock::start();
        let now = clock.now();
        let waker = Arc::new(Waker::new(poll.registry(), token::encode(Source::Waker)).map_err(LoopError::Poll)?);
        let mut listener = None;
        let mut listen_port = None;
        if let Some(addr) = config.listen {
            let mut l =
                bind_listener(addr, config.listen_fallback).map_err(|error| LoopError::Listen { addr, error })?;
            let local = l.local_addr().map_err(|error| LoopError::Listen { addr, error })?;
            poll.registry()
                .register(&mut l, token::encode(Source::Listener), Interest::READABLE)
                .map_err(LoopError::Poll)?;
            log::info!("listening on {local}");
            listen_port = Some(local.port());
            listener = Some(l);
        }
        let geometry = *swarm.geometry();
        // Complete at start (a seed, or a download whose pieces were all hashed at start): nothing will
        // complete in this run, so there is no completion to announce.
        let completed_at_start = swarm.is_complete();
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
            key: entropy.next_u32(),
            numwant: 80,
        };
        let trackers = Trackers::new(&meta.trackers, identity, entropy.fork(), &mut rng, now);
        let tracker_driver = TrackerDriver::new(poll.registry(), waker).map_err(LoopError::Poll)?;
        let mut candidates = Candidates::new();
        if let Some(port) = listen_port {
            candidates.set_own_addresses(vec![
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from(([0, 0, 0, 0], port)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
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
            entropy,
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
            completed_announced: completed_at_start,
            last_line_len: 0,
            stdout_lost: false,
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
    /// Starts a resume save on storage's helper thread (the loop never waits on `fdatasync`); if one is
    /// still running, the next timer tick tries again. Reports the error of a save that finished.
    fn save_resume_in_background(&mut self) -> Result<(), LoopError> {
        let info_hash = self.torrent.ctx.info_hash.0;
        let storage = &mut self.torrent.storage;
        storage.poll_background_save().map_err(LoopError::Storage)?;
        if self.unsaved_bytes > 0
            && storage.start_background_save(&info_hash, &self.torrent.swarm.recorded()).map_err(LoopError::Storage)?
        {
            self.unsaved_bytes = 0;
        }
        Ok(())
    }

    fn save_resume(&mut self) -> Result<(), LoopError> {
        let info_hash = self.torrent.ctx.info_hash.0;
        self.torrent.storage.save_resume(&info_hash, &self.torrent.swarm.recorded()).map_err(LoopError::Storage)?;
        self.unsaved_bytes = 0;
        Ok(())
    }

    fn run_turns(&mut self) -> Result<(), LoopError> {
        let mut events = Events::with_capacity(256);
        let now = self.clock.now();
        if self.config.stop_requested.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            // A signal came between the data check and the loop's own handler: stop before announcing.
            log::info!("signal received: stopping");
            self.interrupted = true;
            self.begin_stop(now);
        }
        let transfer = self.transfer();
        self.trackers.on_timeout(now, transfer, &mut self.rng);
        self.pump_trackers(now);
        self.dial_more(now, false);
        if self.torrent.swarm.is_complete() && !self.config.keep_seeding {
            self.begin_stop(now);
        }
        loop {
            let confirming = !self.stopping && self.torrent.swarm.has_unconfirmed();
            let wait = if self.backlog.is_empty() && !confirming {
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
            if confirming {
                self.confirm_some(now)?;
            }
            self.after_turn(now)?;
            if self.stopping && (self.stop_deadline_passed || self.trackers.is_stopped()) {
                break;
            }
        }
        Ok(())
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
                self.save_resume_in_background()?;
                self.timers.schedule(now + SAVE_RESUME_EVERY, Wake::SaveResume);
            }
            Wake::Refill => {
                self.refill(now)?;
                self.timers.schedule(now + REFILL_EVERY, Wake::Refill);
            }
        }
        Ok(())
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
        // A data file deleted or replaced under rill is an error within seconds (storage looks every 2 s).
        self.torrent.storage.check_files(now).map_err(LoopError::Storage)?;
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
            if conn.closing.is_some() || conn.session.phase() == Phase::AwaitingConnect {
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
        self.dial_more(now, true);
        Ok(())
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
            self.save_resume_in_background()?;
        }
        for no in std::mem::take(&mut self.torrent.to_ban) {
            self.ban(no);
        }
        self.reap_closed(now);
        self.dial_more(now, false);
        Ok(())
    }

    /// Hashes a bounded amount of the pieces trusted from the resume file (the torrent decides which and
    /// how much); confirmed ones are announced in `after_turn`, failed ones get one line each.
    fn confirm_some(&mut self, now: Timestamp) -> Result<(), LoopError> {
        self.torrent.confirm_some(crate::torrent::CONFIRM_PER_TURN_BYTES).map_err(LoopError::Storage)?;
        let confirmed = std::mem::take(&mut self.torrent.confirmed);
        let failed = std::mem::take(&mut self.torrent.confirm_failed);
        for &piece in &failed {
            let what = if self.torrent.swarm.wants(piece) { "fetching it again" } else { "not serving it" };
            log::info!("piece {piece}: data changed on disk since the resume file recorded it; {what}");
            self.say(now, &format!("piece {piece}: data changed on disk since it was checked; {what}"));
        }
        let slots: Vec<usize> = self.peers.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let conn = &mut self.peers[slot];
            if conn.closing.is_some() {
                continue;
            }
            for &piece in &confirmed {
                conn.session.on_we_confirmed(piece);
            }
            for &piece in &failed {
                conn.session.on_piece_wanted(piece, &mut self.torrent.swarm, now);
            }
            self.flush_peer(slot, now)?;
        }
        if !confirmed.is_empty() && self.torrent.swarm.is_complete() && !self.completed_announced {
            self.on_complete(now);
        }
        Ok(())
    }

    fn on_complete(&mut self, now: Timestamp) {
        self.completed_announced = true;
        // BEP 3's `completed` is for a download that finished in this run: not for data that was all
        // on disk and only confirmed (`rill seed`, or a download restarted after it finished).
        if self.torrent.swarm.totals.downloaded > 0 {
            let transfer = self.transfer();
            self.trackers.on_completed(now, transfer);
            self.pump_trackers(now);
        }
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
}

/// Binds the listening socket: `addr` (usually `[::]`, which on Linux also takes IPv4), IPv4 alone where
/// the host has no IPv6, and any free port when `fallback` allows and the port is taken.
fn bind_listener(addr: SocketAddr, fallback: bool) -> io::Result<TcpListener> {
    let bind = |addr: SocketAddr| match TcpListener::bind(addr) {
        Err(e) if addr.is_ipv6() && e.kind() != io::ErrorKind::AddrInUse => {
            log::debug!("no IPv6 listener ({e}); IPv4 only");
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    };
    match bind(addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && fallback => {
            log::info!("port {} is taken; listening on a free port instead", addr.port());
            bind(SocketAddr::new(addr.ip(), 0))
        }
        other => other,
    }
}
