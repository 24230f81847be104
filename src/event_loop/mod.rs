//! The event loop: a thin driver that moves bytes, datagrams and time between the OS and the engine.
//!
//! Owns: the `mio::Poll`, every registered source (the listener, peer connections keyed by the engine's
//! `ConnId`, tracker sockets and the shared UDP socket through `TrackerDriver`, the waker, signals), the
//! clock, the view's redraw deadline, and under the full-screen view stdin (keys) and SIGWINCH.
//! Must not: decide anything. The engine (`crate::engine`) decides; this loop performs its actions and
//! reports what the sockets did.
//!
//! One turn:
//! 1. wait in `poll` until the engine's next deadline or the next redraw (no wait while the engine has
//!    work: a backlog of connections cut short, a data check);
//! 2. read the clock once: that `now` is used for the whole turn;
//! 3. hand every event to the engine: accepts, connect completions, reads, writes, tracker sockets and
//!    datagrams, DNS answers (the waker), signals (a shutdown command);
//! 4. read the engine's backlog again, fire its timers, run its end of turn;
//! 5. after each step, perform the engine's actions (connect, close, tracker I/O) and write every
//!    connection it has output for;
//! 6. show the engine's events and, when due, the status; with `--trace` / `--stats-json`, hand the turn's
//!    trace events to the recorder (`observe::trace`, which writes on its own helper thread).
//!
//! Every peer connection is registered once for READABLE | WRITABLE (edge-triggered) and never
//! re-registered: with edge triggering an idle writable socket costs nothing, and backpressure is the
//! engine not reading (it puts a paused connection on its backlog when the send queue drains, because data
//! already waiting will not raise a new edge).
//!
//! Files: `mod.rs` (the turn, start and stop), `trackers.rs` (tracker sockets and DNS), `token.rs`,
//! `scrape.rs` (the one-shot scrape loop), `rpc.rs` (the daemon's RPC sockets).

pub mod rpc;
pub mod scrape;
pub mod token;
pub mod trackers;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Waker};
use signal_hook::consts::{SIGINT, SIGTERM, SIGWINCH};
use signal_hook_mio::v1_0::Signals;

use crate::engine::snapshot::{Command, Outcome};
use crate::engine::{Action, ConnId, Engine, WHEEL_TICK};
use crate::observe::trace::Recorder;
use crate::observe::view::View;
use crate::peer::DropReason;
use crate::storage::disk::Done;
use crate::storage::worker::DiskWorker;
use crate::time::{Clock, Timestamp};
use token::Source;
use trackers::TrackerDriver;

/// How the loop binds and stops.
pub struct LoopConfig {
    /// Port to accept peers on (TCP, and UDP for trackers beside it); `None`: do not listen.
    pub listen: Option<SocketAddr>,
    /// If `listen`'s port is taken, listen on any free port instead of failing.
    pub listen_fallback: bool,
    /// Set by a SIGINT/SIGTERM handler that `main` registered earlier. A signal that arrived before the
    /// loop registered its own is seen here, at the start of `run`; later ones reach the loop through its
    /// `Signals` source as well.
    pub stop_requested: Option<Arc<AtomicBool>>,
}

/// Why the loop could not go on.
#[derive(Debug)]
pub enum LoopError {
    Poll(io::Error),
    Listen { addr: SocketAddr, error: io::Error },
}

impl fmt::Display for LoopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoopError::Poll(e) => write!(f, "event loop failed: {e}"),
            LoopError::Listen { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
        }
    }
}

impl std::error::Error for LoopError {}

/// A peer connection's socket.
struct PeerSocket {
    stream: TcpStream,
    /// Our connect is in progress.
    connecting: bool,
}

/// The sockets the loop has bound before the engine exists (the engine needs the port).
pub struct Bound {
    poll: Poll,
    clock: Clock,
    listener: Option<TcpListener>,
    tracker_driver: TrackerDriver,
    port: Option<u16>,
    stop_requested: Option<Arc<AtomicBool>>,
    rpc: Option<rpc::RpcDriver>,
    /// The one waker of `poll`: DNS answers and disk results.
    waker: Arc<Waker>,
}

impl Bound {
    /// Binds the listener and the shared UDP socket on the same port.
    pub fn bind(config: LoopConfig) -> Result<Bound, LoopError> {
        let poll = Poll::new().map_err(LoopError::Poll)?;
        let waker = Arc::new(Waker::new(poll.registry(), token::encode(Source::Waker)).map_err(LoopError::Poll)?);
        let mut tracker_driver = TrackerDriver::new(poll.registry(), Arc::clone(&waker)).map_err(LoopError::Poll)?;
        let mut listener = None;
        let mut port = None;
        if let Some(addr) = config.listen {
            let mut l =
                bind_listener(addr, config.listen_fallback).map_err(|error| LoopError::Listen { addr, error })?;
            let local = l.local_addr().map_err(|error| LoopError::Listen { addr, error })?;
            poll.registry()
                .register(&mut l, token::encode(Source::Listener), Interest::READABLE)
                .map_err(LoopError::Poll)?;
            log::info!("listening on {local}");
            let udp_addr = SocketAddr::new(addr.ip(), local.port());
            match tracker_driver.bind_shared(udp_addr, poll.registry()) {
                Ok(bound) => log::info!("udp on {bound}"),
                // Trackers still work through sockets bound on first use.
                Err(e) => log::warn!("cannot bind UDP port {}: {e}; trackers use another port", local.port()),
            }
            port = Some(local.port());
            listener = Some(l);
        }
        Ok(Bound {
            poll,
            clock: Clock::start(),
            listener,
            tracker_driver,
            port,
            stop_requested: config.stop_requested,
            rpc: None,
            waker,
        })
    }

    /// Binds the daemon's RPC listener on `addr`; returns the address it listens on.
    pub fn bind_rpc(
        &mut self,
        addr: SocketAddr,
        server: crate::rpc::RpcServer,
        daemon: crate::daemon::Daemon,
    ) -> Result<SocketAddr, LoopError> {
        let driver = rpc::RpcDriver::bind(addr, server, daemon, self.poll.registry())
            .map_err(|error| LoopError::Listen { addr, error })?;
        let local = driver.local_addr().map_err(|error| LoopError::Listen { addr, error })?;
        self.rpc = Some(driver);
        Ok(local)
    }

    /// The port peers can reach us on, if listening.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The shared UDP socket reaches IPv6 addresses too.
    pub fn has_ipv6(&self) -> bool {
        self.tracker_driver.has_ipv6()
    }

    /// The time the engine starts at.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

pub struct EventLoop {
    poll: Poll,
    clock: Clock,
    engine: Engine,
    listener: Option<TcpListener>,
    /// Indexed by `ConnId`.
    sockets: Vec<Option<PeerSocket>>,
    tracker_driver: TrackerDriver,
    signals: Option<Signals>,
    stop_requested: Option<Arc<AtomicBool>>,
    shutdown_requested: bool,
    view: View,
    next_redraw: Timestamp,
    redraw_every: Duration,
    /// Where the engine writes each uTP datagram before it is sent.
    datagram: Vec<u8>,
    /// The daemon's RPC server, when running as one.
    rpc: Option<rpc::RpcDriver>,
    /// `--trace` / `--stats-json`: fed the engine's trace events every turn.
    recorder: Option<Recorder>,
    /// The `rill-disk` thread: runs the engine's disk jobs; its results wake the loop.
    disk: Option<DiskWorker>,
    disk_done: Vec<Done>,
}

impl EventLoop {
    pub fn new(bound: Bound, engine: Engine, view: View, redraw_every: Duration) -> Result<Self, LoopError> {
        let Bound { poll, clock, listener, tracker_driver, stop_requested, rpc, waker, .. } = bound;
        let disk = DiskWorker::start(Box::new(move || {
            if let Err(e) = waker.wake() {
                log::warn!("cannot wake the loop for disk results: {e}");
            }
        }))
        .map_err(LoopError::Poll)?;
        // Ctrl-C and SIGTERM become readiness events, so a stop is an ordinary turn of the loop; so do
        // resizes under the full-screen view.
        let caught: &[i32] = if view.wants_keys() { &[SIGINT, SIGTERM, SIGWINCH] } else { &[SIGINT, SIGTERM] };
        let signals = match Signals::new(caught) {
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
        if view.wants_keys() {
            // Keys as readiness events. The terminal is in raw mode with VMIN = 0: a read returns at once,
            // so stdin stays blocking (its file description is the shell's too).
            poll.registry()
                .register(&mut SourceFd(&STDIN_FD), token::encode(Source::Stdin), Interest::READABLE)
                .map_err(LoopError::Poll)?;
        }
        let now = clock.now();
        Ok(EventLoop {
            poll,
            clock,
            engine,
            listener,
            sockets: Vec::new(),
            tracker_driver,
            signals,
            stop_requested,
            shutdown_requested: false,
            view,
            next_redraw: now,
            redraw_every,
            datagram: vec![0; crate::utp::MAX_DATAGRAM],
            rpc,
            recorder: None,
            disk: Some(disk),
            disk_done: Vec::new(),
        })
    }

    /// Records the engine's trace events (the engine must have been made with `EngineConfig::trace`).
    pub fn set_recorder(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// Runs until the engine is finished (every torrent stopped and its trackers told), then records every
    /// torrent's verified pieces and says how each ended.
    pub fn run(mut self) -> Result<Vec<Outcome>, LoopError> {
        let result = self.run_turns();
        let now = self.clock.now();
        if let Some(rpc) = &mut self.rpc {
            rpc.finish(&self.engine);
        }
        // Writes and verdicts still on their way: done before the resume file is written.
        if let Some(disk) = self.disk.take() {
            let engine = &mut self.engine;
            disk.submit(std::iter::from_fn(|| engine.poll_disk_job()));
            let (results, stats) = disk.finish();
            for done in results {
                self.engine.handle_disk_done(done, now);
            }
            self.engine.handle_disk_stats(stats);
        }
        let outcomes = self.engine.finish(now);
        self.drain_events();
        self.record(now);
        let snapshot = self.engine.snapshot_at(now);
        if let Some(recorder) = self.recorder.take() {
            if let Err(e) = recorder.finish(now, &snapshot) {
                log::warn!("{e}");
            }
        }
        self.view.finish(&snapshot, now);
        result.map(|()| outcomes)
    }

    fn run_turns(&mut self) -> Result<(), LoopError> {
        let mut events = Events::with_capacity(256);
        if self.stop_requested.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            // A signal came before the loop's own handler: stop before announcing.
            log::info!("signal received: stopping");
            self.shutdown_requested = true;
            let now = self.clock.now();
            self.engine.handle_command(Command::Shutdown, now);
        }
        if self.view.wants_keys() {
            // Keys typed before the view was up.
            let now = self.clock.now();
            self.on_keys(now);
        }
        loop {
            let now = self.clock.now();
            if self.engine.is_finished(now) {
                return Ok(());
            }
            let wait = if self.engine.has_work() || self.rpc.as_ref().is_some_and(|r| r.has_work()) {
                Some(Duration::ZERO)
            } else {
                let mut next = self.engine.poll_timeout().map_or(self.next_redraw, |at| at.min(self.next_redraw));
                if let Some(rpc) = &self.rpc {
                    next = next.min(rpc.poll_timeout());
                }
                Some(next.max(now) - now)
            };
            if let Err(e) = self.poll.poll(&mut events, wait) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LoopError::Poll(e));
            }
            let now = self.clock.now();
            self.collect_disk(now);
            for event in events.iter() {
                match token::decode(event.token()) {
                    Some(Source::Listener) => self.accept_all(now),
                    Some(Source::Peer(slot)) => self.on_peer_event(ConnId(slot), event.is_writable(), now),
                    Some(source @ (Source::TrackerHttp(_) | Source::TrackerUdp4 | Source::TrackerUdp6)) => {
                        self.tracker_driver.on_ready(source, event, self.poll.registry(), &mut self.engine, now);
                    }
                    Some(Source::Waker) => {
                        self.tracker_driver.on_wake(&mut self.engine, now);
                        self.collect_disk(now);
                    }
                    Some(Source::Signals) => self.on_signals(now),
                    Some(Source::RpcListener) => {
                        if let Some(rpc) = &mut self.rpc {
                            rpc.accept_all(self.poll.registry(), now);
                        }
                    }
                    Some(Source::Rpc(slot)) => {
                        if let Some(rpc) = &mut self.rpc {
                            rpc.on_ready(slot, &mut self.engine, self.poll.registry(), now);
                        }
                    }
                    Some(Source::Stdin) => self.on_keys(now),
                    None => log::trace!("event for unknown token {:?}", event.token()),
                }
                self.perform(now);
            }
            for id in self.engine.take_backlog(now) {
                if let Some(Some(socket)) = self.sockets.get_mut(id.0) {
                    self.engine.handle_peer_input(id, &mut socket.stream, now);
                }
            }
            self.perform(now);
            self.engine.handle_timeout(now);
            self.perform(now);
            // Web seed bodies held by a rate limit: the refill above may allow them again.
            self.tracker_driver.retry_held(self.poll.registry(), &mut self.engine, now);
            self.perform(now);
            if let Some(rpc) = &mut self.rpc {
                rpc.turn(&mut self.engine, self.poll.registry(), now);
                self.perform(now);
            }
            self.engine.end_turn(now);
            self.perform(now);
            self.drain_events();
            self.record(now);
            self.engine.handle_turn_took(self.clock.now() - now);
            if now >= self.next_redraw {
                let snapshot = self.engine.snapshot_at(now);
                self.view.redraw(&snapshot, now);
                self.next_redraw = now + self.redraw_every.max(WHEEL_TICK);
            }
        }
    }

    /// Hands the disk thread's results to the engine.
    fn collect_disk(&mut self, now: Timestamp) {
        let Some(disk) = &self.disk else {
            return;
        };
        disk.collect(&mut self.disk_done);
        if let Some(stats) = (!self.disk_done.is_empty()).then(|| disk.stats()) {
            self.engine.handle_disk_stats(stats);
        }
        for done in self.disk_done.drain(..) {
            self.engine.handle_disk_done(done, now);
        }
        self.perform(now);
    }

    /// Hands the turn's trace events to the recorder.
    fn record(&mut self, now: Timestamp) {
        if let Some(recorder) = self.recorder.as_mut() {
            while let Some(event) = self.engine.poll_trace() {
                recorder.on_event(&event);
            }
            let engine = &self.engine;
            recorder.end_turn(now, || engine.snapshot());
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            if self.view.wants_name_for(&event) {
                let snapshot = self.engine.snapshot();
                self.view.learn_names(&snapshot);
            }
            self.view.on_event(&event);
        }
    }

    /// Performs the engine's actions and writes the output it has, until it has nothing more.
    fn perform(&mut self, now: Timestamp) {
        loop {
            let mut any = false;
            while let Some(action) = self.engine.poll_action() {
                any = true;
                match action {
                    Action::Connect { conn, addr } => self.connect(conn, addr),
                    Action::Close { conn } => {
                        if let Some(mut socket) = self.sockets.get_mut(conn.0).and_then(Option::take) {
                            let _ = self.poll.registry().deregister(&mut socket.stream);
                        }
                    }
                    Action::Tracker(io) => {
                        self.tracker_driver.perform(io, self.poll.registry(), &mut self.engine, now);
                    }
                    Action::ResolveInBackground { id, host, port } => {
                        self.tracker_driver.resolve_in_background(id, host, port, &mut self.engine, now);
                    }
                    Action::Datagram { to, data } => {
                        if let Err(e) = self.tracker_driver.send_datagram(to, &data, self.poll.registry()) {
                            log::debug!("udp {to}: send: {e}");
                        }
                    }
                }
            }
            while let Some(id) = self.engine.poll_transmit(now) {
                any = true;
                match self.sockets.get_mut(id.0) {
                    Some(Some(socket)) if !socket.connecting => {
                        self.engine.handle_peer_output(id, &mut socket.stream, now);
                    }
                    _ => {}
                }
            }
            // Disk jobs to the `rill-disk` thread.
            if let Some(disk) = &self.disk {
                let engine = &mut self.engine;
                disk.submit(std::iter::from_fn(|| engine.poll_disk_job()));
            }
            // uTP datagrams, written into one reused buffer.
            while let Some((to, len)) = self.engine.poll_datagram(&mut self.datagram) {
                if let Err(e) = self.tracker_driver.send_datagram(to, &self.datagram[..len], self.poll.registry()) {
                    log::debug!("udp {to}: send: {e}");
                }
            }
            if !any {
                return;
            }
        }
    }

    fn connect(&mut self, conn: ConnId, addr: SocketAddr) {
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("{addr}: connect failed: {e}");
                self.engine.handle_peer_error(conn, DropReason::ConnectFailed(e.kind()));
                return;
            }
        };
        if let Err(e) = self.insert_socket(conn, stream, true) {
            log::debug!("{addr}: cannot register: {e}");
            self.engine.handle_peer_error(conn, DropReason::ConnectFailed(e.kind()));
        }
    }

    fn insert_socket(&mut self, conn: ConnId, mut stream: TcpStream, connecting: bool) -> io::Result<()> {
        // Requests and `have`s are small writes that must not wait for an ACK (Nagle): the peer's
        // pipeline, and so the transfer rate, depends on them arriving at once.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("cannot set TCP_NODELAY: {e}");
        }
        self.poll.registry().register(
            &mut stream,
            token::encode(Source::Peer(conn.0)),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if self.sockets.len() <= conn.0 {
            self.sockets.resize_with(conn.0 + 1, || None);
        }
        self.sockets[conn.0] = Some(PeerSocket { stream, connecting });
        Ok(())
    }

    fn accept_all(&mut self, now: Timestamp) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => {
                    // IPv4 peers reach the dual-stack listener as ::ffff:a.b.c.d.
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    let Some(conn) = self.engine.handle_incoming(addr, now) else {
                        continue;
                    };
                    if let Err(e) = self.insert_socket(conn, stream, false) {
                        log::debug!("{addr}: cannot register: {e}");
                        self.engine.handle_peer_error(conn, DropReason::Io(e.kind()));
                    }
                    self.perform(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: never spin, never die. Edge-triggered: the next connection
                    // attempt raises a new event.
                    log::warn!("accept failed: {e}; trying again on the next connection");
                    return;
                }
            }
        }
    }

    fn on_peer_event(&mut self, id: ConnId, writable: bool, now: Timestamp) {
        let Some(Some(socket)) = self.sockets.get_mut(id.0) else {
            return;
        };
        if socket.connecting {
            // Our connect finished or failed (a writable or error event), or a spurious event.
            if let Ok(Some(e)) | Err(e) = socket.stream.take_error() {
                self.engine.handle_peer_error(id, DropReason::ConnectFailed(e.kind()));
                return;
            }
            match socket.stream.peer_addr() {
                Ok(_) => {
                    socket.connecting = false;
                    self.engine.handle_connected(id, now);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.engine.handle_peer_error(id, DropReason::ConnectFailed(e.kind()));
                    return;
                }
            }
        }
        self.engine.handle_peer_input(id, &mut socket.stream, now);
        if writable {
            self.engine.handle_peer_output(id, &mut socket.stream, now);
        }
    }

    fn on_signals(&mut self, now: Timestamp) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let (mut stop, mut resized) = (false, false);
        for signal in signals.pending() {
            match signal {
                SIGWINCH => resized = true,
                _ => stop = true,
            }
        }
        if resized {
            self.view.on_resize();
            self.next_redraw = now;
        }
        if stop {
            log::info!("signal received: stopping");
            self.stop(now);
        }
    }

    /// Ctrl-C, SIGTERM or `q`: stop gracefully; a second time, stop waiting for trackers.
    fn stop(&mut self, now: Timestamp) {
        let command = if self.shutdown_requested { Command::ShutdownNow } else { Command::Shutdown };
        self.shutdown_requested = true;
        self.engine.handle_command(command, now);
    }

    /// Keys on stdin: the view says what they ask for (a changed view is redrawn at once).
    fn on_keys(&mut self, now: Timestamp) {
        let (commands, redraw) = self.view.on_input();
        for command in commands {
            match command {
                Command::Shutdown => {
                    log::info!("quit key: stopping");
                    self.stop(now);
                }
                other => self.engine.handle_command(other, now),
            }
        }
        self.perform(now);
        if redraw {
            self.next_redraw = now;
        }
    }
}

/// Standard input's file descriptor.
const STDIN_FD: std::os::fd::RawFd = 0;

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
