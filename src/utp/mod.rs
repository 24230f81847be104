//! uTP (BEP 29) as one sans-I/O machine for the whole process: every connection over the shared UDP socket.
//!
//! Owns: the connections (a slab addressed by [`UtpId`], found by `(peer address, receive id)`), accepting
//! SYNs within bounds, the RESETs answering packets for unknown connections, the events waiting for the
//! owner, and the order in which connections get to send. Each connection (`conn.rs`) owns its buffers,
//! sequence numbers, congestion control (`ledbat.rs`: LEDBAT, 100 ms target) and timers; `packet.rs`
//! decodes and encodes datagrams.
//! Must not: touch a socket or the clock, read OS entropy itself (connection ids and first sequence
//! numbers come from the `Entropy` it is handed: a guessable id lets an off-path host inject a RESET),
//! or know what the bytes it carries mean (the peer wire above it does).
//!
//! Driving it (STYLE §7.3, as `dht::Dht`): feed `handle_datagram(now, from, bytes)` with every datagram
//! classified as uTP, and `handle_timeout(now)` when `poll_timeout()` is due (spurious calls do nothing);
//! open with `connect(now, to)`; move bytes with `read`/`write` (or `stream(id)`, an `io::Read + io::Write`
//! view); end with `close` (FIN after queued data) or `reset`. After any of these, drain `poll_event()`
//! and `poll_transmit(buf)` (datagrams are written into the caller's buffer, which must hold
//! [`Config::max_datagram`] bytes) and re-arm the timer from `poll_timeout()`.
//!
//! Life of an id: it belongs to the owner from `connect` or [`UtpEvent::Incoming`] until the owner calls
//! `close` or `reset`, or the mux reports [`UtpEvent::Closed`] (after which the id is unknown). After
//! `close` the connection lingers on its own until its FIN is acknowledged or it times out, with no more
//! events. `read` returns `Ok(0)` once the peer's FIN arrived and every byte before it was read.
//!
//! Bounds: at most [`Config::max_connections`] connections, of which at most [`Config::max_half_open`]
//! accepted SYNs not yet followed by a packet (a SYN flood beyond it is dropped, and costs no buffer: the
//! rings grow only as data moves); at most [`MAX_CONTROL`] RESETs queued; at most one each of
//! `Connected`, `Readable`, `Writable` queued per connection.
//!
//! Memory per connection (measured by `memory_bytes`, bounded by `Conn::memory_bound`, both asserted by
//! the tests): 488 bytes of state (boxed), the send ring (≤ `send_buffer`, default 256 KiB), the receive
//! ring (≤ `recv_buffer`, default 1 MiB), ≤ 1,024 in-flight records of 40 bytes, and ≤ 128
//! out-of-order slots of one payload each (≈ 175 KB) allocated on the first reordering: 1,522,408 bytes
//! at the very most with the defaults; a connection that moved 3 KB holds about 6 KB (the rings grow with
//! the data in them, and the engine reads the receive ring as each datagram arrives, so it stays near one
//! payload unless the peer session is paused).
//!
//! Packet size: [`Config::max_datagram`] bytes of UDP payload (1,400 on IPv4, 1,232 on IPv6: below any
//! usual path MTU, so nothing is fragmented); there is no path-MTU probing yet.
//!
//! BEP 29: <https://www.bittorrent.org/beps/bep_0029.html>.

pub mod conn;
pub mod ledbat;
pub mod packet;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;

pub use conn::CloseReason;
use conn::{micros32, Conn, Limits, State};
use packet::{Header, PacketType};

use crate::rng::Entropy;
use crate::time::Timestamp;

/// Most RESETs waiting to be sent (answers to packets for unknown connections beyond it are dropped).
pub const MAX_CONTROL: usize = 64;
/// The largest datagram a `poll_transmit` buffer must hold with any configuration.
pub const MAX_DATAGRAM: usize = 1500;

/// A connection, as the owner names it: a slab slot and the generation that filled it, so a stale id
/// never reaches a newcomer in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UtpId {
    slot: u32,
    generation: u32,
}

impl std::fmt::Display for UtpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "utp#{}.{}", self.slot, self.generation)
    }
}

/// What the mux tells its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UtpEvent {
    /// A new SYN was accepted; the owner may refuse it with `close` or `reset`.
    Incoming(UtpId, SocketAddr),
    /// Our SYN was answered.
    Connected(UtpId),
    /// New bytes (or the end of the stream) can be read.
    Readable(UtpId),
    /// A `write` that hit a full buffer can write again.
    Writable(UtpId),
    /// The connection ended on its own; the id is now unknown.
    Closed(UtpId, CloseReason),
}

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub max_connections: usize,
    /// Most accepted SYNs not yet followed by another packet.
    pub max_half_open: usize,
    /// Send ring per connection, bytes (also the congestion window's cap).
    pub send_buffer: usize,
    /// Receive ring per connection, bytes (the most we advertise). The window bounds the rate at a
    /// round trip: 1 MiB (libtorrent advertises the same) carries ~19 MB/s at 50 ms; 256 KiB held a
    /// 50 ms download to 4.6 MiB/s where libtorrent's uTP got 18 MB/s (scripts/bench utp).
    pub recv_buffer: usize,
    /// UDP payload bytes per datagram, IPv4 (IPv6 uses [`Config::max_datagram_v6`]); at most
    /// [`MAX_DATAGRAM`].
    pub max_datagram: usize,
    pub max_datagram_v6: usize,
    /// Accept incoming SYNs at all.
    pub accept: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 256,
            max_half_open: 32,
            send_buffer: 256 * 1024,
            recv_buffer: 1024 * 1024,
            max_datagram: 1400,
            max_datagram_v6: 1232,
            accept: true,
        }
    }
}

/// Counters for the status line and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub malformed: u64,
    /// SYNs dropped because the connection or half-open budget was spent (or accepting is off).
    pub syn_refused: u64,
    /// Packets for no known connection (answered with a RESET while the queue has room).
    pub unknown: u64,
    pub resets_sent: u64,
}

struct Entry {
    generation: u32,
    conn: Box<Conn>,
    /// In `ready` (may have something to send).
    queued: bool,
    /// `Connected`, `Readable` and `Writable` events of this connection waiting in `events` (bits
    /// [`PENDING_CONNECTED`], ...): each is queued at most once, so the queue holds at most three events
    /// per live connection plus the `Incoming` and `Closed` ones.
    pending: u8,
}

const PENDING_CONNECTED: u8 = 1;
const PENDING_READABLE: u8 = 2;
const PENDING_WRITABLE: u8 = 4;

/// The pending bit of an event, if it has one.
fn pending_bit(event: &UtpEvent) -> Option<(UtpId, u8)> {
    match *event {
        UtpEvent::Connected(id) => Some((id, PENDING_CONNECTED)),
        UtpEvent::Readable(id) => Some((id, PENDING_READABLE)),
        UtpEvent::Writable(id) => Some((id, PENDING_WRITABLE)),
        UtpEvent::Incoming(..) | UtpEvent::Closed(..) => None,
    }
}

/// A RESET to send, for a connection we do not know (or one the owner reset).
#[derive(Clone, Copy, Debug)]
struct Control {
    to: SocketAddr,
    connection_id: u16,
    seq_nr: u16,
    ack_nr: u16,
}

pub struct UtpMux {
    config: Config,
    entropy: Entropy,
    /// The latest `now` handed in: packets are stamped with it.
    now: Timestamp,
    slots: Vec<Option<Entry>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    by_key: HashMap<(SocketAddr, u16), u32>,
    live: usize,
    half_open: usize,
    /// Connections that may have a packet to send, in turn order.
    ready: VecDeque<u32>,
    control: VecDeque<Control>,
    events: VecDeque<UtpEvent>,
    stats: Stats,
}

impl UtpMux {
    pub fn new(now: Timestamp, config: Config, entropy: Entropy) -> Self {
        let mut config = config;
        config.max_datagram = config.max_datagram.min(MAX_DATAGRAM);
        config.max_datagram_v6 = config.max_datagram_v6.min(MAX_DATAGRAM);
        UtpMux {
            config,
            entropy,
            now,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            live: 0,
            half_open: 0,
            ready: VecDeque::new(),
            control: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Connections held (owned or lingering after `close`).
    pub fn connection_count(&self) -> usize {
        self.live
    }
    pub fn half_open_count(&self) -> usize {
        self.half_open
    }

    fn limits(&self, peer: SocketAddr) -> Limits {
        Limits {
            max_datagram: if peer.is_ipv4() { self.config.max_datagram } else { self.config.max_datagram_v6 },
            send_buffer: self.config.send_buffer,
            recv_buffer: self.config.recv_buffer,
        }
    }

    /// Every connection's memory now, bytes (the bound is stated in the module doc).
    pub fn memory_bytes(&self) -> usize {
        self.slots.iter().flatten().map(|e| e.conn.memory_bytes()).sum::<usize>()
            + self.slots.capacity() * std::mem::size_of::<Option<Entry>>()
            + self.by_key.capacity() * (std::mem::size_of::<(SocketAddr, u16)>() + 4)
    }

    /// The bound on one connection's memory with this configuration.
    pub fn connection_memory_bound(&self) -> usize {
        Conn::memory_bound(self.limits(SocketAddr::from(([0, 0, 0, 0], 0))))
    }

    fn entry(&self, id: UtpId) -> Option<&Entry> {
        self.slots.get(id.slot as usize)?.as_ref().filter(|e| e.generation == id.generation)
    }

    fn entry_mut(&mut self, id: UtpId) -> Option<&mut Entry> {
        self.slots.get_mut(id.slot as usize)?.as_mut().filter(|e| e.generation == id.generation)
    }

    fn id_of(&self, slot: u32) -> UtpId {
        UtpId { slot, generation: self.generations[slot as usize] }
    }

    fn insert(&mut self, conn: Conn) -> UtpId {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                (self.slots.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize].wrapping_add(1);
        self.generations[slot as usize] = generation;
        self.by_key.insert((conn.peer, conn.recv_id), slot);
        if conn.state() == State::AwaitingFirstPacket {
            self.half_open += 1;
        }
        self.slots[slot as usize] = Some(Entry { generation, conn: Box::new(conn), queued: false, pending: 0 });
        self.live += 1;
        self.enqueue(slot);
        UtpId { slot, generation }
    }

    fn remove(&mut self, slot: u32) {
        if let Some(e) = self.slots[slot as usize].take() {
            self.by_key.remove(&(e.conn.peer, e.conn.recv_id));
            if e.conn.state() == State::AwaitingFirstPacket {
                self.half_open -= 1;
            }
            self.live -= 1;
            self.free.push(slot);
        }
    }

    fn enqueue(&mut self, slot: u32) {
        if let Some(Some(e)) = self.slots.get_mut(slot as usize) {
            if !e.queued && e.conn.wants_transmit() {
                e.queued = true;
                self.ready.push_back(slot);
            }
        }
    }

    /// After any input to a connection: report its events, keep the half-open count, free it when dead,
    /// and queue it to send.
    fn after(&mut self, slot: u32, was_half_open: bool) {
        self.after_with(slot, was_half_open, true);
    }

    /// `after`, queueing the connection to send only if `requeue` (not when it just said it has nothing:
    /// a connection with unsent data and a full window waits for an ACK, not for another turn).
    fn after_with(&mut self, slot: u32, was_half_open: bool, requeue: bool) {
        let id = self.id_of(slot);
        let Some(Some(e)) = self.slots.get_mut(slot as usize) else { return };
        let ev = e.conn.take_events();
        let state = e.conn.state();
        // Leaving `AwaitingFirstPacket` (to connected or dead) ends the half-open count; `remove` then
        // sees a state other than half-open and does not count it again.
        if was_half_open && state != State::AwaitingFirstPacket {
            self.half_open -= 1;
        }
        if !e.conn.is_closing() {
            for (happened, bit, event) in [
                (ev.connected, PENDING_CONNECTED, UtpEvent::Connected(id)),
                (ev.writable, PENDING_WRITABLE, UtpEvent::Writable(id)),
                (ev.readable, PENDING_READABLE, UtpEvent::Readable(id)),
            ] {
                if happened && e.pending & bit == 0 {
                    e.pending |= bit;
                    self.events.push_back(event);
                }
            }
            if let Some(reason) = ev.closed {
                self.events.push_back(UtpEvent::Closed(id, reason));
            }
        }
        if state == State::Dead {
            self.remove(slot);
        } else if requeue {
            self.enqueue(slot);
        }
    }

    fn with_conn<R>(&mut self, id: UtpId, f: impl FnOnce(&mut Conn) -> R) -> Option<R> {
        let e = self.entry_mut(id)?;
        let was_half_open = e.conn.state() == State::AwaitingFirstPacket;
        let r = f(&mut e.conn);
        self.after(id.slot, was_half_open);
        Some(r)
    }

    // ------------------------------------------------------------------ inputs

    /// Opens a connection to `to`; [`UtpEvent::Connected`] or [`UtpEvent::Closed`] follows. `None` when
    /// the connection budget is spent.
    pub fn connect(&mut self, now: Timestamp, to: SocketAddr) -> Option<UtpId> {
        self.now = self.now.max(now);
        if self.live >= self.config.max_connections {
            return None;
        }
        // A receive id not in use with this peer (nor its successor, our send id).
        let recv_id = loop {
            let id = self.entropy.next_u32() as u16;
            if !self.by_key.contains_key(&(to, id)) && !self.by_key.contains_key(&(to, id.wrapping_add(1))) {
                break id;
            }
        };
        let seq = self.entropy.next_u32() as u16;
        let limits = self.limits(to);
        Some(self.insert(Conn::connect(self.now, to, recv_id, seq, limits)))
    }

    /// One datagram from `from` that the caller classified as uTP.
    pub fn handle_datagram(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        self.now = self.now.max(now);
        let now = self.now;
        let p = match packet::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                log::trace!("{from}: {e}");
                return;
            }
        };
        let h = p.header;
        // Every packet but a SYN carries our receive id (a SYN carries the initiator's: see below).
        let known = if h.kind == PacketType::Syn { None } else { self.by_key.get(&(from, h.connection_id)) };
        if let Some(&slot) = known {
            let Some(Some(e)) = self.slots.get_mut(slot as usize) else { return };
            let was_half_open = e.conn.state() == State::AwaitingFirstPacket;
            e.conn.handle_packet(now, &p);
            self.after(slot, was_half_open);
            return;
        }
        match h.kind {
            PacketType::Syn => {
                // A repeated SYN finds its connection under the id + 1.
                if let Some(&slot) = self.by_key.get(&(from, h.connection_id.wrapping_add(1))) {
                    let Some(Some(e)) = self.slots.get_mut(slot as usize) else { return };
                    if e.conn.send_id == h.connection_id {
                        let was_half_open = e.conn.state() == State::AwaitingFirstPacket;
                        e.conn.handle_packet(now, &p);
                        self.after(slot, was_half_open);
                    }
                    return;
                }
                if !self.config.accept
                    || self.live >= self.config.max_connections
                    || self.half_open >= self.config.max_half_open
                {
                    self.stats.syn_refused += 1;
                    return;
                }
                let seq = self.entropy.next_u32() as u16;
                let limits = self.limits(from);
                let id = self.insert(Conn::accept(now, from, &h, seq, limits));
                self.events.push_back(UtpEvent::Incoming(id, from));
            }
            PacketType::Reset => {
                // A RESET may carry our send id (the peer's receive id, ±1 from ours).
                for recv in [h.connection_id.wrapping_sub(1), h.connection_id.wrapping_add(1)] {
                    let Some(&slot) = self.by_key.get(&(from, recv)) else { continue };
                    let Some(Some(e)) = self.slots.get_mut(slot as usize) else { continue };
                    if e.conn.send_id == h.connection_id {
                        let was_half_open = e.conn.state() == State::AwaitingFirstPacket;
                        e.conn.handle_packet(now, &p);
                        self.after(slot, was_half_open);
                        return;
                    }
                }
                self.stats.unknown += 1;
            }
            _ => {
                // BEP 29: a packet for no connection is answered with a RESET (never a RESET to a RESET).
                self.stats.unknown += 1;
                if self.control.len() < MAX_CONTROL {
                    self.control.push_back(Control {
                        to: from,
                        connection_id: h.connection_id,
                        seq_nr: self.entropy.next_u32() as u16,
                        ack_nr: h.seq_nr,
                    });
                }
            }
        }
    }

    /// Runs every connection's due timers; spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let now = self.now;
        for slot in 0..self.slots.len() as u32 {
            let Some(Some(e)) = self.slots.get_mut(slot as usize) else { continue };
            if e.conn.next_deadline().map_or(true, |at| at > now) {
                continue;
            }
            let was_half_open = e.conn.state() == State::AwaitingFirstPacket;
            e.conn.handle_timeout(now);
            self.after(slot, was_half_open);
        }
    }

    // ------------------------------------------------------------------ the owner's calls

    /// Reads in-order bytes: `Ok(0)` after the peer's FIN once all is read, `WouldBlock` when nothing is
    /// there, `NotConnected` for an unknown id.
    pub fn read(&mut self, id: UtpId, out: &mut [u8]) -> io::Result<usize> {
        self.with_conn(id, |c| c.read(out)).unwrap_or_else(|| Err(io::ErrorKind::NotConnected.into()))
    }

    /// Queues bytes to send: as many as fit, `WouldBlock` when the send buffer is full (then
    /// [`UtpEvent::Writable`] follows), `BrokenPipe` after `close`, `NotConnected` for an unknown id.
    pub fn write(&mut self, id: UtpId, data: &[u8]) -> io::Result<usize> {
        self.with_conn(id, |c| c.write(data)).unwrap_or_else(|| Err(io::ErrorKind::NotConnected.into()))
    }

    /// Ends the owner's use of `id`: FIN after the queued data; the connection lingers on its own.
    pub fn close(&mut self, id: UtpId) {
        self.with_conn(id, Conn::close);
    }

    /// Ends `id` at once with a RESET.
    pub fn reset(&mut self, id: UtpId) {
        let Some(e) = self.entry(id) else { return };
        let c = &e.conn;
        if c.state() != State::AwaitingSynAck && self.control.len() < MAX_CONTROL {
            let (seq_nr, ack_nr) = c.seq_ack();
            self.control.push_back(Control { to: c.peer, connection_id: c.send_id, seq_nr, ack_nr });
        }
        self.remove(id.slot);
    }

    /// The peer's address, for a known id.
    pub fn peer_addr(&self, id: UtpId) -> Option<SocketAddr> {
        self.entry(id).map(|e| e.conn.peer)
    }

    /// Bytes ready for `read` on `id`.
    pub fn readable_bytes(&self, id: UtpId) -> usize {
        self.entry(id).map_or(0, |e| e.conn.readable_bytes())
    }

    /// Bytes `write` would take now on `id`.
    pub fn send_room(&self, id: UtpId) -> usize {
        self.entry(id).map_or(0, |e| e.conn.send_room())
    }

    /// `id` as a byte stream, to hand where a TCP socket goes (`Read` and `Write` with the same results
    /// as [`UtpMux::read`] and [`UtpMux::write`]; `flush` does nothing: bytes go at the next
    /// `poll_transmit`).
    pub fn stream(&mut self, id: UtpId) -> UtpStream<'_> {
        UtpStream { mux: self, id }
    }

    /// Congestion window, queueing delay and smoothed RTT of `id`, for stats and tests.
    pub fn congestion(&self, id: UtpId) -> Option<(u32, u32, Option<std::time::Duration>)> {
        self.entry(id).map(|e| (e.conn.cwnd(), e.conn.queueing_delay_us(), e.conn.srtt()))
    }

    // ------------------------------------------------------------------ outputs

    pub fn poll_event(&mut self) -> Option<UtpEvent> {
        let event = self.events.pop_front()?;
        if let Some((id, bit)) = pending_bit(&event) {
            if let Some(e) = self.entry_mut(id) {
                e.pending &= !bit;
            }
        }
        Some(event)
    }

    /// The next datagram: written into `buf` (which must hold the configured datagram size; a smaller
    /// buffer gets nothing), with its destination and length. Connections take turns.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let now = self.now;
        if let Some(c) = self.control.pop_front() {
            let header = Header {
                kind: PacketType::Reset,
                connection_id: c.connection_id,
                timestamp_us: micros32(now),
                timestamp_difference_us: 0,
                wnd_size: 0,
                seq_nr: c.seq_nr,
                ack_nr: c.ack_nr,
            };
            if let Some(n) = packet::encode_into(&header, &[], &[], buf) {
                self.stats.resets_sent += 1;
                return Some((c.to, n));
            }
        }
        while let Some(slot) = self.ready.pop_front() {
            let Some(Some(e)) = self.slots.get_mut(slot as usize) else { continue };
            match e.conn.poll_packet(now, buf) {
                Some(n) => {
                    let to = e.conn.peer;
                    self.ready.push_back(slot);
                    return Some((to, n));
                }
                None => {
                    e.queued = false;
                    let was_half_open = e.conn.state() == State::AwaitingFirstPacket;
                    self.after_with(slot, was_half_open, false);
                }
            }
        }
        None
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.live, self.slots.iter().flatten().count());
        assert_eq!(self.by_key.len(), self.live);
        let half_open = self.slots.iter().flatten().filter(|e| e.conn.state() == State::AwaitingFirstPacket).count();
        assert_eq!(self.half_open, half_open);
        for e in self.slots.iter().flatten() {
            e.conn.check_invariants();
        }
    }

    /// When `handle_timeout` is next due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.slots.iter().flatten().filter_map(|e| e.conn.next_deadline()).min()
    }
}

/// One connection as `io::Read + io::Write` (see [`UtpMux::stream`]).
pub struct UtpStream<'a> {
    mux: &'a mut UtpMux,
    id: UtpId,
}

impl io::Read for UtpStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.mux.read(self.id, buf)
    }
}

impl io::Write for UtpStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.mux.write(self.id, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
