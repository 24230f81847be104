//! Tracker I/O driver: sockets, DNS helper thread and the waker bridge for `tracker::Trackers`.
//!
//! Owns: every tracker socket (one non-blocking `TcpStream` per HTTP request in a slab, one shared
//! `UdpSocket` per address family, bound lazily), the loop-owned 64 KiB receive buffer, and the DNS helper
//! thread. It performs `TrackerIo` and feeds what happens back into `Trackers`.
//! Must not: decide anything about announces; block the loop; hold the `mio::Waker` beyond a shared handle
//! (the engine owns the one Waker per `Poll` and forwards `Source::Waker` events to `on_wake`).
//!
//! Readiness rules (mio): every source is drained until `WouldBlock`; spurious events are harmless (a
//! not-yet-connected stream is recognised by `peer_addr() == NotConnected`, a read or receive with nothing
//! there returns `WouldBlock`). Slab slots are reused, so a stale event for a closed request can reach a
//! newer one in the same slot; it is then just one more spurious event.
//!
//! DNS: `std::net::ToSocketAddrs` blocks, so one helper thread does the lookups in turn, sends each answer
//! over a channel and wakes the loop. A slow lookup delays the others behind it, never the loop; each
//! request in `Trackers` has its own lookup time-out. The thread ends when the driver is dropped.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use log::{debug, trace};
use mio::event::Event;
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Waker};
use slab::Slab;

use super::token::{self, Source};
use crate::time::Timestamp;
use crate::tracker::{IoId, TrackerIo, Trackers};

/// The receive buffer: the largest UDP payload, and big reads for HTTP.
const RECV_BUFFER: usize = 64 * 1024;

/// Receive errors in a row before giving up on one readiness event.
const MAX_RECV_ERRORS_IN_A_ROW: u32 = 16;

type Lookup = (IoId, String, u16);
type Answer = (IoId, Result<Vec<SocketAddr>, String>);

/// One HTTP request's connection.
struct HttpConn {
    id: IoId,
    stream: TcpStream,
    request: Vec<u8>,
    /// Bytes of `request` written so far.
    written: usize,
    /// The TCP handshake completed.
    connected: bool,
}

struct Resolver {
    lookups: Sender<Lookup>,
    answers: Receiver<Answer>,
}

pub struct TrackerDriver {
    http: Slab<HttpConn>,
    /// `IoId` → slab slot of its connection.
    by_id: HashMap<IoId, usize>,
    udp4: Option<UdpSocket>,
    udp6: Option<UdpSocket>,
    /// Invariant: `RECV_BUFFER` bytes long.
    buf: Vec<u8>,
    resolver: Option<Resolver>,
    waker: Arc<Waker>,
}

impl TrackerDriver {
    pub fn new(_registry: &Registry, waker: Arc<Waker>) -> io::Result<Self> {
        Ok(TrackerDriver {
            http: Slab::new(),
            by_id: HashMap::new(),
            udp4: None,
            udp6: None,
            buf: vec![0; RECV_BUFFER],
            resolver: None,
            waker,
        })
    }

    /// Performs every I/O request the trackers have queued (including the ones performing them adds).
    pub fn pump(&mut self, registry: &Registry, trackers: &mut Trackers, now: Timestamp) {
        while let Some(io) = trackers.poll_io() {
            self.perform(io, registry, trackers, now);
        }
    }

    /// Performs one I/O request. Failures that happen at once are reported back at once.
    pub fn perform(&mut self, io: TrackerIo, registry: &Registry, trackers: &mut Trackers, now: Timestamp) {
        match io {
            TrackerIo::Resolve { id, host, port } => {
                if let Err(e) = self.resolve(id, host, port) {
                    trackers.on_resolved(id, Err(format!("cannot start resolver: {e}")), now);
                }
            }
            TrackerIo::HttpRequest { id, addr, request } => {
                if let Err(e) = self.connect(id, addr, request, registry) {
                    debug!("tracker http {addr}: connect: {e}");
                    trackers.on_http_closed(id, Err(e.kind()), now);
                }
            }
            TrackerIo::HttpClose { id } => self.close(id, registry),
            TrackerIo::UdpSend { addr, datagram } => {
                if let Err(e) = self.send_datagram(addr, &datagram, registry) {
                    debug!("tracker udp {addr}: send: {e}");
                    trackers.on_udp_send_failed(addr, e.kind(), now);
                }
            }
        }
    }

    /// A readiness event for a tracker source. Which readiness it reports does not matter: the source is
    /// driven as far as it goes (connect check, write, read or receive until `WouldBlock`).
    pub fn on_ready(
        &mut self,
        source: Source,
        _event: &Event,
        registry: &Registry,
        trackers: &mut Trackers,
        now: Timestamp,
    ) {
        match source {
            Source::TrackerHttp(slot) => self.on_http_ready(slot, registry, trackers, now),
            Source::TrackerUdp4 => self.receive_datagrams(false, trackers, now),
            Source::TrackerUdp6 => self.receive_datagrams(true, trackers, now),
            _ => {}
        }
    }

    /// The waker fired: hands every finished lookup to the trackers. The caller pumps afterwards.
    pub fn on_wake(&mut self, trackers: &mut Trackers, now: Timestamp) {
        let Some(resolver) = &self.resolver else {
            return;
        };
        while let Ok((id, result)) = resolver.answers.try_recv() {
            trackers.on_resolved(id, result, now);
        }
    }

    /// Open HTTP connections (for tests and the UI's footprint figures).
    pub fn open_connections(&self) -> usize {
        self.http.len()
    }

    // -----------------------------------------------------------------------------------------------------
    // DNS.

    fn resolve(&mut self, id: IoId, host: String, port: u16) -> io::Result<()> {
        if self.resolver.is_none() {
            self.resolver = Some(spawn_resolver(Arc::clone(&self.waker))?);
        }
        let sent = self.resolver.as_ref().map(|r| r.lookups.send((id, host, port)).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread is gone (it cannot panic on its own, but be safe): start a new one next time.
        self.resolver = None;
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "resolver thread ended"))
    }

    // -----------------------------------------------------------------------------------------------------
    // HTTP.

    fn connect(&mut self, id: IoId, addr: SocketAddr, request: Vec<u8>, registry: &Registry) -> io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let entry = self.http.vacant_entry();
        let slot = entry.key();
        registry.register(
            &mut stream,
            token::encode(Source::TrackerHttp(slot)),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(HttpConn { id, stream, request, written: 0, connected: false });
        self.by_id.insert(id, slot);
        trace!("tracker http {addr}: connecting ({id:?}, slot {slot})");
        Ok(())
    }

    fn close(&mut self, id: IoId, registry: &Registry) {
        if let Some(slot) = self.by_id.remove(&id) {
            if self.http.contains(slot) {
                let mut conn = self.http.remove(slot);
                let _ = registry.deregister(&mut conn.stream);
            }
        }
    }

    fn on_http_ready(&mut self, slot: usize, registry: &Registry, trackers: &mut Trackers, now: Timestamp) {
        let Some(conn) = self.http.get_mut(slot) else {
            return; // closed earlier: a stale event
        };
        let id = conn.id;
        // 1. Connect procedure: an error, or not connected yet (spurious), or now connected.
        if !conn.connected {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(id, e.kind(), registry, trackers, now),
                Ok(None) => {}
            }
            match conn.stream.peer_addr() {
                Ok(_) => conn.connected = true,
                // Still connecting (a spurious or stale event): a failed connect shows up in `take_error`.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(id, e.kind(), registry, trackers, now),
            }
        }
        // 2. Write what is left of the request.
        while conn.written < conn.request.len() {
            match conn.stream.write(&conn.request[conn.written..]) {
                Ok(0) => return self.fail(id, io::ErrorKind::WriteZero, registry, trackers, now),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(id, e.kind(), registry, trackers, now),
            }
        }
        // 3. Read until WouldBlock; the trackers may close the request after any chunk.
        loop {
            let Some(conn) = self.http.get_mut(slot).filter(|c| c.id == id) else {
                return;
            };
            match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    self.close(id, registry);
                    trackers.on_http_closed(id, Ok(()), now);
                    return;
                }
                Ok(n) => {
                    trace!("tracker http {id:?}: {n} bytes");
                    trackers.on_http_data(id, &self.buf[..n], now);
                    self.pump(registry, trackers, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(id, e.kind(), registry, trackers, now),
            }
        }
    }

    fn fail(&mut self, id: IoId, kind: io::ErrorKind, registry: &Registry, trackers: &mut Trackers, now: Timestamp) {
        debug!("tracker http {id:?}: {kind}");
        self.close(id, registry);
        trackers.on_http_closed(id, Err(kind), now);
    }

    // -----------------------------------------------------------------------------------------------------
    // UDP.

    fn send_datagram(&mut self, addr: SocketAddr, datagram: &[u8], registry: &Registry) -> io::Result<()> {
        let socket = self.udp_socket(addr.is_ipv6(), registry)?;
        match socket.send_to(datagram, addr) {
            Ok(_) => Ok(()),
            // A full send buffer loses this datagram like the network could; retransmission covers it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!("tracker udp {addr}: send buffer full, datagram dropped");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The shared socket of a family, bound to the unspecified address on first use.
    fn udp_socket(&mut self, v6: bool, registry: &Registry) -> io::Result<&UdpSocket> {
        let (socket, bind, source): (&mut Option<UdpSocket>, SocketAddr, Source) = if v6 {
            (&mut self.udp6, (Ipv6Addr::UNSPECIFIED, 0).into(), Source::TrackerUdp6)
        } else {
            (&mut self.udp4, (Ipv4Addr::UNSPECIFIED, 0).into(), Source::TrackerUdp4)
        };
        if socket.is_none() {
            let mut new = UdpSocket::bind(bind)?;
            registry.register(&mut new, token::encode(source), Interest::READABLE)?;
            *socket = Some(new);
        }
        socket.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "udp socket missing"))
    }

    /// Receives until `WouldBlock`; the caller pumps afterwards (replies only queue sends).
    fn receive_datagrams(&mut self, v6: bool, trackers: &mut Trackers, now: Timestamp) {
        let socket = if v6 { &self.udp6 } else { &self.udp4 };
        let Some(socket) = socket else {
            return;
        };
        let mut errors = 0;
        loop {
            match socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    errors = 0;
                    trackers.on_datagram(from, &self.buf[..n], now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // A queued ICMP error (port unreachable) is cleared by reading it; a socket that keeps
                    // failing must not spin the loop.
                    debug!("tracker udp socket: {e}");
                    errors += 1;
                    if errors >= MAX_RECV_ERRORS_IN_A_ROW {
                        return;
                    }
                }
            }
        }
    }
}

fn spawn_resolver(waker: Arc<Waker>) -> io::Result<Resolver> {
    let (lookups, lookup_rx) = mpsc::channel::<Lookup>();
    let (answer_tx, answers) = mpsc::channel::<Answer>();
    thread::Builder::new().name("rill-dns".into()).spawn(move || {
        for (id, host, port) in lookup_rx {
            let result = (host.as_str(), port).to_socket_addrs().map(Iterator::collect).map_err(|e| e.to_string());
            if answer_tx.send((id, result)).is_err() {
                return;
            }
            // A failed wake means the loop is gone; the next send will fail and end the thread.
            let _ = waker.wake();
        }
    })?;
    Ok(Resolver { lookups, answers })
}

/// The loop's side of the trackers: perform their I/O, feed what they learned to the peer list and the
/// person, and keep their one wheel entry.
impl super::EventLoop {
    pub(super) fn pump_trackers(&mut self, now: Timestamp) {
        self.tracker_driver.pump(self.poll.registry(), &mut self.trackers, now);
        let mut added = false;
        while let Some(event) = self.trackers.poll_event() {
            match event {
                crate::tracker::TrackerEvent::Peers(addrs) => {
                    for addr in addrs {
                        added |= self.candidates.add(addr);
                    }
                }
                // Shown to the user on stdout; the log keeps a copy for RUST_LOG=info.
                crate::tracker::TrackerEvent::Warning { url, message } => {
                    log::info!("tracker {url}: warning: {message}");
                    self.say(now, &format!("tracker {url}: warning: {message}"));
                }
                crate::tracker::TrackerEvent::Error { url, message } => {
                    log::info!("tracker {url}: {message}");
                    self.say(now, &format!("tracker {url}: {message}"));
                }
                crate::tracker::TrackerEvent::Announced { url, peers, seeders, leechers, .. } => {
                    log::info!("tracker {url}: {peers} peers");
                    let next = self
                        .trackers
                        .status()
                        .into_iter()
                        .find(|s| s.url == url)
                        .and_then(|s| s.next_announce)
                        .map(|at| format!(", next announce in {}", crate::observe::units::duration(at - now)))
                        .unwrap_or_default();
                    let counts = match (seeders, leechers) {
                        (Some(s), Some(l)) => format!(" ({s} seeders, {l} leechers)"),
                        _ => String::new(),
                    };
                    self.say(now, &format!("tracker {url}: {peers} peers{counts}{next}"));
                }
                crate::tracker::TrackerEvent::Scraped { .. } => {}
            }
        }
        if added {
            self.dial_more(now, false);
        }
        // Never sooner than the next tick: a deadline at or before `now` would be popped again in this same
        // turn's timer drain, and a machine that kept reporting one would hold the loop in that drain (signals
        // and sockets unserved). A tick later it is an ordinary wake-up.
        let next = self.trackers.next_deadline().map(|at| at.max(now + super::WHEEL_TICK));
        match (self.tracker_timer, next) {
            (Some((_, at)), Some(n)) if at <= n => {}
            (current, Some(n)) => {
                if let Some((id, _)) = current {
                    self.timers.cancel(id);
                }
                let id = self.timers.schedule(n, super::Wake::Trackers);
                self.tracker_timer = Some((id, n));
            }
            (_, None) => {}
        }
    }
}
