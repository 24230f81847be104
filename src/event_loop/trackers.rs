//! Tracker I/O driver: sockets, DNS helper thread and the waker bridge for `tracker::Trackers`.
//!
//! Owns: every tracker socket (one non-blocking `TcpStream` per HTTP request in a slab), the shared UDP
//! socket (bound to the listen port beside the TCP listener, `[::]` taking IPv4 too, so trackers, the DHT
//! and uTP share it as in libtorrent; or one per address family bound lazily when rill does not listen),
//! the loop-owned 64 KiB receive buffer, and the DNS helper thread. It performs `TrackerIo` and feeds what
//! happens back into a `TrackerIoSink` (one `Trackers`, or the engine, which also gets the datagrams that
//! are not tracker replies).
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
use crate::tracker::{IoId, TrackerIo, TrackerIoSink};

/// The receive buffer: the largest UDP payload, and big reads for HTTP.
const RECV_BUFFER: usize = 64 * 1024;

/// SO_RCVBUF asked for on the shared UDP socket. uTP peers send a window's worth of datagrams back to back
/// (our receive window is 256 KiB per connection: ~180 datagrams of 1,471 bytes, each taking ~2.3 KB of
/// socket memory), and the kernel's default (`net.core.rmem_default`, often 208 KiB) drops the tail of such
/// a burst: the sender sees losses that are not congestion, halves its window, and a loopback transfer ran
/// at 4 MB/s. The kernel caps it at `net.core.rmem_max` (and doubles what it grants, for its overhead); it
/// is memory the kernel uses only while datagrams wait, never rill's RSS.
const UDP_RECV_BUFFER: usize = 2 << 20;
/// SO_SNDBUF asked for: a window of uTP data we send goes out in one turn (a full send buffer drops
/// the datagram, which then costs a retransmission).
const UDP_SEND_BUFFER: usize = 1 << 20;

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
    /// `udp6` is bound to `[::]` and takes IPv4 too (as IPv4-mapped addresses).
    dual_stack: bool,
    /// Invariant: `RECV_BUFFER` bytes long.
    buf: Vec<u8>,
    resolver: Option<Resolver>,
    /// A second helper for lookups that must not hold the trackers' up (the DHT's routers: on a machine
    /// without DNS each can take the resolver's whole time-out).
    background_resolver: Option<Resolver>,
    waker: Arc<Waker>,
    /// HTTP exchanges left unread because the sink allowed no bytes (a web seed under a rate limit).
    held: Vec<IoId>,
}

impl TrackerDriver {
    pub fn new(_registry: &Registry, waker: Arc<Waker>) -> io::Result<Self> {
        Ok(TrackerDriver {
            http: Slab::new(),
            by_id: HashMap::new(),
            udp4: None,
            udp6: None,
            dual_stack: false,
            buf: vec![0; RECV_BUFFER],
            resolver: None,
            background_resolver: None,
            waker,
            held: Vec::new(),
        })
    }

    /// Performs every I/O request the trackers have queued (including the ones performing them adds).
    pub fn pump(&mut self, registry: &Registry, sink: &mut impl TrackerIoSink, now: Timestamp) {
        while let Some(io) = sink.poll_io() {
            self.perform(io, registry, sink, now);
        }
    }

    /// Performs one I/O request. Failures that happen at once are reported back at once.
    pub fn perform(&mut self, io: TrackerIo, registry: &Registry, sink: &mut impl TrackerIoSink, now: Timestamp) {
        match io {
            TrackerIo::Resolve { id, host, port } => {
                if let Err(e) = self.resolve(id, host, port) {
                    sink.on_resolved(id, Err(format!("cannot start resolver: {e}")), now);
                }
            }
            TrackerIo::HttpRequest { id, addr, request } => {
                if let Err(e) = self.connect(id, addr, request, registry) {
                    debug!("tracker http {addr}: connect: {e}");
                    sink.on_http_closed(id, Err(e.kind()), now);
                }
            }
            TrackerIo::HttpClose { id } => self.close(id, registry),
            TrackerIo::UdpSend { addr, datagram } => {
                if let Err(e) = self.send_datagram(addr, &datagram, registry) {
                    debug!("tracker udp {addr}: send: {e}");
                    sink.on_udp_send_failed(addr, e.kind(), now);
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
        sink: &mut impl TrackerIoSink,
        now: Timestamp,
    ) {
        match source {
            Source::TrackerHttp(slot) => self.on_http_ready(slot, registry, sink, now),
            Source::TrackerUdp4 => self.receive_datagrams(false, sink, now),
            Source::TrackerUdp6 => self.receive_datagrams(true, sink, now),
            _ => {}
        }
    }

    /// The waker fired: hands every finished lookup to the sink. The caller pumps afterwards.
    pub fn on_wake(&mut self, sink: &mut impl TrackerIoSink, now: Timestamp) {
        for resolver in [&self.resolver, &self.background_resolver].into_iter().flatten() {
            while let Ok((id, result)) = resolver.answers.try_recv() {
                sink.on_resolved(id, result, now);
            }
        }
    }

    /// Resolves `host` on the background helper (`rill-dns-bg`), answering with `sink.on_resolved(id, ..)`
    /// as tracker lookups do, but never queued behind or ahead of them.
    pub fn resolve_in_background(
        &mut self,
        id: IoId,
        host: String,
        port: u16,
        sink: &mut impl TrackerIoSink,
        now: Timestamp,
    ) {
        if let Err(e) = Self::send_lookup(&mut self.background_resolver, "rill-dns-bg", &self.waker, (id, host, port)) {
            sink.on_resolved(id, Err(format!("cannot start resolver: {e}")), now);
        }
    }

    /// Binds the shared UDP socket to `addr` (the listen address and port): `[::]` serves both families
    /// where the host has IPv6; otherwise IPv4 alone. Returns the bound address.
    pub fn bind_shared(&mut self, addr: SocketAddr, registry: &Registry) -> io::Result<SocketAddr> {
        let v6_any = matches!(addr.ip(), std::net::IpAddr::V6(ip) if ip.is_unspecified());
        let mut socket = match UdpSocket::bind(addr) {
            Err(e) if v6_any && e.kind() != io::ErrorKind::AddrInUse => {
                debug!("no IPv6 UDP socket ({e}); IPv4 only");
                UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())))?
            }
            other => other?,
        };
        size_buffers(&socket);
        let local = socket.local_addr()?;
        if local.is_ipv6() {
            registry.register(&mut socket, token::encode(Source::TrackerUdp6), Interest::READABLE)?;
            self.dual_stack = v6_any;
            self.udp6 = Some(socket);
        } else {
            registry.register(&mut socket, token::encode(Source::TrackerUdp4), Interest::READABLE)?;
            self.udp4 = Some(socket);
        }
        Ok(local)
    }

    /// Open HTTP connections (for tests and the UI's footprint figures).
    pub fn open_connections(&self) -> usize {
        self.http.len()
    }

    // -----------------------------------------------------------------------------------------------------
    // DNS.

    fn resolve(&mut self, id: IoId, host: String, port: u16) -> io::Result<()> {
        Self::send_lookup(&mut self.resolver, "rill-dns", &self.waker, (id, host, port))
    }

    fn send_lookup(resolver: &mut Option<Resolver>, name: &str, waker: &Arc<Waker>, lookup: Lookup) -> io::Result<()> {
        if resolver.is_none() {
            *resolver = Some(spawn_resolver(Arc::clone(waker), name)?);
        }
        let sent = resolver.as_ref().map(|r| r.lookups.send(lookup).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The thread is gone (it cannot panic on its own, but be safe): start a new one next time.
        *resolver = None;
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

    fn on_http_ready(&mut self, slot: usize, registry: &Registry, sink: &mut impl TrackerIoSink, now: Timestamp) {
        let Some(conn) = self.http.get_mut(slot) else {
            return; // closed earlier: a stale event
        };
        let id = conn.id;
        // 1. Connect procedure: an error, or not connected yet (spurious), or now connected.
        if !conn.connected {
            match conn.stream.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(id, e.kind(), registry, sink, now),
                Ok(None) => {}
            }
            match conn.stream.peer_addr() {
                Ok(_) => conn.connected = true,
                // Still connecting (a spurious or stale event): a failed connect shows up in `take_error`.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.fail(id, e.kind(), registry, sink, now),
            }
        }
        // 2. Write what is left of the request.
        while conn.written < conn.request.len() {
            match conn.stream.write(&conn.request[conn.written..]) {
                Ok(0) => return self.fail(id, io::ErrorKind::WriteZero, registry, sink, now),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(id, e.kind(), registry, sink, now),
            }
        }
        // 3. Read until WouldBlock; the trackers may close the request after any chunk.
        loop {
            let Some(conn) = self.http.get_mut(slot).filter(|c| c.id == id) else {
                return;
            };
            let allowance = sink.http_read_allowance(id).min(self.buf.len());
            if allowance == 0 {
                // Readiness is edge-triggered: the bytes stay in the socket until `retry_held`.
                if !self.held.contains(&id) {
                    self.held.push(id);
                }
                return;
            }
            match conn.stream.read(&mut self.buf[..allowance]) {
                Ok(0) => {
                    self.close(id, registry);
                    sink.on_http_closed(id, Ok(()), now);
                    return;
                }
                Ok(n) => {
                    trace!("tracker http {id:?}: {n} bytes");
                    sink.on_http_data(id, &self.buf[..n], now);
                    self.pump(registry, sink, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(id, e.kind(), registry, sink, now),
            }
        }
    }

    /// Reads the HTTP exchanges held for want of an allowance whose sink allows bytes again (call once a
    /// turn; nothing to do while none is held).
    pub fn retry_held(&mut self, registry: &Registry, sink: &mut impl TrackerIoSink, now: Timestamp) {
        if self.held.is_empty() {
            return;
        }
        for id in std::mem::take(&mut self.held) {
            let Some(&slot) = self.by_id.get(&id) else {
                continue; // closed meanwhile
            };
            if sink.http_read_allowance(id) == 0 {
                self.held.push(id);
            } else {
                self.on_http_ready(slot, registry, sink, now);
            }
        }
    }

    fn fail(
        &mut self,
        id: IoId,
        kind: io::ErrorKind,
        registry: &Registry,
        sink: &mut impl TrackerIoSink,
        now: Timestamp,
    ) {
        debug!("tracker http {id:?}: {kind}");
        self.close(id, registry);
        sink.on_http_closed(id, Err(kind), now);
    }

    // -----------------------------------------------------------------------------------------------------
    // UDP.

    /// The shared socket is an IPv6 one (dual-stack: it takes IPv4 too).
    pub fn has_ipv6(&self) -> bool {
        self.udp6.is_some()
    }

    /// Sends one datagram from the shared socket of `addr`'s family (trackers' and the DHT's).
    pub fn send_datagram(&mut self, addr: SocketAddr, datagram: &[u8], registry: &Registry) -> io::Result<()> {
        // IPv4 through the dual-stack socket, as an IPv4-mapped address, when there is no IPv4 one.
        let (addr, v6) = match addr {
            SocketAddr::V4(a) if self.udp4.is_none() && self.dual_stack => {
                (SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()), true)
            }
            other => (other, other.is_ipv6()),
        };
        let socket = self.udp_socket(v6, registry)?;
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
            size_buffers(&new);
            registry.register(&mut new, token::encode(source), Interest::READABLE)?;
            *socket = Some(new);
        }
        socket.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "udp socket missing"))
    }

    /// Receives until `WouldBlock`; the caller pumps afterwards (replies only queue sends).
    fn receive_datagrams(&mut self, v6: bool, sink: &mut impl TrackerIoSink, now: Timestamp) {
        let socket = if v6 { &self.udp6 } else { &self.udp4 };
        let Some(socket) = socket else {
            return;
        };
        let mut errors = 0;
        loop {
            match socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    errors = 0;
                    // IPv4 senders reach the dual-stack socket as ::ffff:a.b.c.d.
                    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                    sink.on_datagram(from, &self.buf[..n], now);
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

/// Asks for [`UDP_RECV_BUFFER`] and [`UDP_SEND_BUFFER`] on a UDP socket; what the kernel grants (it caps
/// them at `net.core.rmem_max` / `wmem_max`) is logged. A refusal only costs speed: the socket works anyway.
fn size_buffers(socket: &UdpSocket) {
    use rustix::net::sockopt;
    if let Err(e) = sockopt::set_socket_recv_buffer_size(socket, UDP_RECV_BUFFER) {
        debug!("udp socket: cannot set SO_RCVBUF: {e}");
    }
    if let Err(e) = sockopt::set_socket_send_buffer_size(socket, UDP_SEND_BUFFER) {
        debug!("udp socket: cannot set SO_SNDBUF: {e}");
    }
    debug!(
        "udp socket buffers: receive {} bytes, send {} bytes",
        sockopt::socket_recv_buffer_size(socket).unwrap_or(0),
        sockopt::socket_send_buffer_size(socket).unwrap_or(0)
    );
}

fn spawn_resolver(waker: Arc<Waker>, name: &str) -> io::Result<Resolver> {
    let (lookups, lookup_rx) = mpsc::channel::<Lookup>();
    let (answer_tx, answers) = mpsc::channel::<Answer>();
    thread::Builder::new().name(name.into()).spawn(move || {
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
