//! One uTP connection as a sans-I/O machine (BEP 29): handshake, sequence numbers, acknowledgement with
//! selective ACK, reassembly, retransmission, FIN and RESET, and its timers.
//!
//! Owns: the connection's state, its send buffer (unacknowledged then unsent bytes, one byte ring), the
//! in-flight packet records (no payload copies: a packet is a range of the send ring), the in-order
//! receive ring and the out-of-order slots, congestion control (`ledbat.rs`) and its timer table.
//! Must not: touch a socket or the clock, know other connections, or allocate per packet (the rings grow
//! up to their caps; out-of-order slot buffers are allocated once and reused).
//!
//! Sequence numbers (BEP 29, "connection setup"): SYN, DATA and FIN each consume one; STATE carries the
//! next one without consuming it. `ack_nr` is the last packet received in order. The initiator's SYN
//! carries its receive id; the acceptor answers with a STATE whose `seq_nr` is its first (unused) number,
//! so the initiator sets `ack_nr = seq_nr - 1` (as libutp and libtorrent).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::ledbat::{Ledbat, Rtt};
use super::packet::{self, Header, Packet, PacketType, HEADER_LEN};
use crate::time::{millis, secs, Timestamp};

/// Out-of-order packets kept past `ack_nr + 1` (a power of two dividing 65,536, so `seq % OOO_SLOTS`
/// names a slot); the SACK bitmask we send covers them: `OOO_SLOTS / 8` bytes.
pub const OOO_SLOTS: usize = 128;
const SACK_BYTES: usize = OOO_SLOTS / 8;
/// Bytes reserved in every packet for our SACK extension, so a packet with one always fits.
pub const SACK_RESERVE: usize = 2 + SACK_BYTES;
/// Most packets in flight (far below the 32,768 at which wrapping sequence comparison breaks).
pub const MAX_OUTSTANDING: usize = 1024;
/// SYN sends before the connect fails (1 s, 2 s, 4 s apart: the connect times out after 7 s).
pub const MAX_SYN_SENDS: u32 = 3;
/// Consecutive retransmission time-outs without progress before the connection is declared dead
/// (≥ 0.5 + 1 + 2 + 4 + 8 + 16 s ≈ 31 s).
pub const MAX_TIMEOUTS: u32 = 6;
/// Duplicate ACKs that trigger a fast retransmit (BEP 29).
const DUP_ACKS: u8 = 3;
/// SACKed packets past an unacknowledged one that declare it lost (as libutp).
const SACK_HOLE: usize = 3;
/// An ACK is sent at the latest this long after an unacknowledged in-order packet.
pub const DELAYED_ACK: Duration = millis(20);
/// In-order packets that make an ACK due at once.
const ACK_EVERY: u32 = 2;
/// A STATE is sent when nothing was sent for this long (NAT bindings live about a minute; libutp: 29 s).
pub const KEEPALIVE: Duration = secs(29);
/// A connection that hears nothing for this long is dead (longer than BitTorrent's 2-minute keep-alive).
pub const IDLE_TIMEOUT: Duration = secs(180);
/// An accepted SYN that is not followed by any packet is dropped after this long (more than the
/// initiator's keep-alive, for an initiator that has nothing to say yet).
pub const HALF_OPEN_TIMEOUT: Duration = secs(40);

/// Wrapping sequence comparison: `a` before `b`.
fn seq_lt(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

/// The low 32 bits of `now` in µs: the header's `timestamp_microseconds`.
pub fn micros32(now: Timestamp) -> u32 {
    (now.as_micros() & 0xffff_ffff) as u32
}

/// Why a connection ended on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent a RESET.
    Reset,
    /// Our SYN was never answered.
    ConnectTimeout,
    /// Retransmissions went unanswered, or nothing was heard for [`IDLE_TIMEOUT`] (or, for an accepted
    /// connection, [`HALF_OPEN_TIMEOUT`]).
    TimedOut,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Reset => "reset by peer",
            CloseReason::ConnectTimeout => "connect timed out",
            CloseReason::TimedOut => "timed out",
        })
    }
}

/// What a connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Our SYN is out; waiting for the answer that acks it.
    AwaitingSynAck,
    /// We answered a SYN; waiting for the initiator's first packet after it.
    AwaitingFirstPacket,
    Connected,
    /// Finished (reset, timed out, or closed and done); the mux frees it.
    Dead,
}

/// The connection's timers (STYLE §7.13: one table, `next_deadline` is its minimum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Retransmission time-out (SYN, DATA, FIN), or the zero-window probe.
    Retransmit,
    DelayedAck,
    KeepAlive,
    /// Nothing heard for too long.
    Idle,
}

impl Timer {
    const COUNT: usize = 4;
    const ALL: [Timer; Timer::COUNT] = [Timer::Retransmit, Timer::DelayedAck, Timer::KeepAlive, Timer::Idle];
}

/// Events for the mux to report, set by any input and taken with [`Conn::take_events`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    pub connected: bool,
    pub readable: bool,
    pub writable: bool,
    pub closed: Option<CloseReason>,
}

/// A sent packet not yet acknowledged cumulatively. Its payload is `len` bytes at stream offset `offset`
/// of the send ring.
#[derive(Clone, Copy, Debug)]
struct OutPacket {
    seq: u16,
    kind: PacketType,
    offset: u64,
    len: u16,
    sent_at: Timestamp,
    transmissions: u8,
    /// Acknowledged by a SACK: never resent, not in flight.
    sacked: bool,
    /// Counted in `in_flight` (sent and neither acked nor declared lost).
    in_flight: bool,
    /// Declared lost: resend before any new data.
    need_resend: bool,
    /// Already fast-retransmitted once for a SACK hole or duplicate ACKs.
    fast_resent: bool,
}

/// One out-of-order packet kept for reassembly. `data` keeps its allocation between uses.
#[derive(Debug, Default)]
struct Slot {
    used: bool,
    seq: u16,
    fin: bool,
    data: Vec<u8>,
}

pub struct Conn {
    pub peer: SocketAddr,
    /// The id the peer puts in packets to us.
    pub recv_id: u16,
    /// The id we put in packets to the peer.
    pub send_id: u16,
    state: State,
    /// The owner called `close`: FIN after the queued data, then the mux frees it; no more events.
    closing: bool,
    /// Largest payload per packet: the datagram size less the header and our SACK reserve.
    max_payload: usize,

    // --- send side ---
    /// The next sequence number to use.
    seq_nr: u16,
    syn_sends: u32,
    /// Bytes from stream offset `send_base`: those of `outstanding` packets, then `unsent` bytes.
    /// Invariant: `send_buf.len() <= send_cap`.
    send_buf: VecDeque<u8>,
    send_base: u64,
    unsent: usize,
    send_cap: usize,
    /// Sent, not cumulatively acknowledged, in sequence order; at most [`MAX_OUTSTANDING`].
    outstanding: VecDeque<OutPacket>,
    /// Payload bytes of packets with `in_flight` set.
    in_flight: u32,
    /// Packets of `outstanding` with `need_resend` set (so the send path scans only when there are some).
    to_send: usize,
    peer_wnd: u32,
    cc: Ledbat,
    rtt: Rtt,
    dup_acks: u8,
    /// Losses of packets before this sequence number belong to a window already halved.
    recovery_seq: u16,
    timeouts: u32,
    /// A zero-window probe may go out (the peer advertised no room and nothing is in flight).
    probe: bool,
    fin_seq: Option<u16>,
    fin_acked: bool,
    /// A `write` found the buffer full: report `writable` when room frees.
    write_blocked: bool,
    last_send: Timestamp,

    // --- receive side ---
    /// The last sequence number received in order.
    ack_nr: u16,
    /// In-order bytes not read yet. Invariant: `recv_buf.len() + ooo_bytes <= recv_cap`.
    recv_buf: VecDeque<u8>,
    recv_cap: usize,
    /// `OOO_SLOTS` slots once the first out-of-order packet arrives; slot `seq % OOO_SLOTS`.
    ooo: Vec<Slot>,
    ooo_count: usize,
    ooo_bytes: usize,
    /// The FIN's sequence number, once seen.
    eof_seq: Option<u16>,
    /// Every packet up to the FIN arrived: `read` returns 0 once `recv_buf` is empty.
    eof_reached: bool,
    /// Our clock minus the peer's timestamp on its last packet: its `timestamp_difference`.
    reply_micro: u32,
    acks_owed: u32,
    ack_now: bool,
    last_adv_wnd: u32,

    timers: [Option<Timestamp>; Timer::COUNT],
    events: Events,
}

/// Limits of one connection, from the mux's `Config`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_datagram: usize,
    pub send_buffer: usize,
    pub recv_buffer: usize,
}

impl Conn {
    fn new(now: Timestamp, peer: SocketAddr, recv_id: u16, send_id: u16, seq_nr: u16, limits: Limits) -> Self {
        let max_payload = limits.max_datagram.saturating_sub(HEADER_LEN + SACK_RESERVE).max(64);
        let mut conn = Conn {
            peer,
            recv_id,
            send_id,
            state: State::AwaitingSynAck,
            closing: false,
            max_payload,
            seq_nr,
            syn_sends: 0,
            send_buf: VecDeque::new(),
            send_base: 0,
            unsent: 0,
            send_cap: limits.send_buffer,
            outstanding: VecDeque::new(),
            in_flight: 0,
            to_send: 0,
            peer_wnd: max_payload as u32,
            cc: Ledbat::new(now, max_payload as u32, limits.send_buffer as u32),
            rtt: Rtt::default(),
            dup_acks: 0,
            recovery_seq: seq_nr,
            timeouts: 0,
            probe: false,
            fin_seq: None,
            fin_acked: false,
            write_blocked: false,
            last_send: now,
            ack_nr: 0,
            recv_buf: VecDeque::new(),
            recv_cap: limits.recv_buffer,
            ooo: Vec::new(),
            ooo_count: 0,
            ooo_bytes: 0,
            eof_seq: None,
            eof_reached: false,
            reply_micro: 0,
            acks_owed: 0,
            ack_now: false,
            last_adv_wnd: 0,
            timers: [None; Timer::COUNT],
            events: Events::default(),
        };
        conn.set_timer(Timer::Idle, Some(now + IDLE_TIMEOUT));
        conn
    }

    /// An outgoing connection: the SYN goes out on the next `poll_packet`.
    pub fn connect(now: Timestamp, peer: SocketAddr, recv_id: u16, seq_nr: u16, limits: Limits) -> Self {
        let mut conn = Conn::new(now, peer, recv_id, recv_id.wrapping_add(1), seq_nr, limits);
        conn.push_outstanding(PacketType::Syn, 0);
        conn
    }

    /// An accepted SYN (BEP 29: our receive id is the SYN's id + 1, our send id the SYN's id); the STATE
    /// answering it goes out on the next `poll_packet`.
    pub fn accept(now: Timestamp, peer: SocketAddr, syn: &Header, seq_nr: u16, limits: Limits) -> Self {
        let mut conn = Conn::new(now, peer, syn.connection_id.wrapping_add(1), syn.connection_id, seq_nr, limits);
        conn.state = State::AwaitingFirstPacket;
        conn.ack_nr = syn.seq_nr;
        conn.peer_wnd = syn.wnd_size;
        conn.reply_micro = micros32(now).wrapping_sub(syn.timestamp_us);
        conn.ack_now = true;
        conn.set_timer(Timer::Idle, Some(now + HALF_OPEN_TIMEOUT));
        conn
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn is_closing(&self) -> bool {
        self.closing
    }
    pub fn take_events(&mut self) -> Events {
        std::mem::take(&mut self.events)
    }
    pub fn cwnd(&self) -> u32 {
        self.cc.cwnd()
    }
    pub fn queueing_delay_us(&self) -> u32 {
        self.cc.queueing_delay_us()
    }
    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }
    /// The next sequence number and the last one received in order (for a RESET).
    pub fn seq_ack(&self) -> (u16, u16) {
        (self.seq_nr, self.ack_nr)
    }
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Heap and inline bytes this connection holds now.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Conn>()
            + self.send_buf.capacity()
            + self.recv_buf.capacity()
            + self.outstanding.capacity() * std::mem::size_of::<OutPacket>()
            + self.ooo.capacity() * std::mem::size_of::<Slot>()
            + self.ooo.iter().map(|s| s.data.capacity()).sum::<usize>()
    }

    /// The most [`Conn::memory_bytes`] can reach with these limits.
    pub fn memory_bound(limits: Limits) -> usize {
        let payload = limits.max_datagram.saturating_sub(HEADER_LEN + SACK_RESERVE).max(64);
        std::mem::size_of::<Conn>()
            + limits.send_buffer.next_power_of_two()
            + limits.recv_buffer.next_power_of_two()
            + MAX_OUTSTANDING * std::mem::size_of::<OutPacket>()
            + OOO_SLOTS * (std::mem::size_of::<Slot>() + payload)
    }

    /// The counters agree with the records they summarise (for the simulation, after every step).
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let in_flight: u32 = self.outstanding.iter().filter(|o| o.in_flight).map(|o| u32::from(o.len)).sum();
        assert_eq!(self.in_flight, in_flight);
        assert_eq!(self.to_send, self.outstanding.iter().filter(|o| o.need_resend).count());
        assert!(self.outstanding.len() <= MAX_OUTSTANDING);
        assert!(self.send_buf.len() <= self.send_cap);
        assert_eq!(
            self.send_buf.len() - self.unsent,
            self.outstanding.iter().map(|o| usize::from(o.len)).sum::<usize>()
        );
        assert!(self.recv_buf.len() + self.ooo_bytes <= self.recv_cap);
        assert_eq!(self.ooo_count, self.ooo.iter().filter(|s| s.used).count());
        assert_eq!(self.ooo_bytes, self.ooo.iter().filter(|s| s.used).map(|s| s.data.len()).sum::<usize>());
    }

    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.state == State::Dead {
            return None;
        }
        self.timers.iter().flatten().copied().min()
    }

    fn set_timer(&mut self, timer: Timer, at: Option<Timestamp>) {
        self.timers[timer as usize] = at;
    }

    fn die(&mut self, reason: CloseReason) {
        if self.state != State::Dead {
            self.state = State::Dead;
            if !self.closing {
                self.events.closed = Some(reason);
            }
        }
    }

    /// The mux's `close`: FIN after queued data. A connection whose SYN is unanswered just ends.
    pub fn close(&mut self) {
        self.closing = true;
        // Nobody will read it: free it now (data still arriving is acknowledged and dropped).
        self.recv_buf = VecDeque::new();
        if self.state == State::AwaitingSynAck {
            self.state = State::Dead;
        }
        self.check_finished();
    }

    /// Closed by the owner and nothing left to do: our FIN is acknowledged.
    fn check_finished(&mut self) {
        if self.closing && self.fin_acked {
            self.state = State::Dead;
        }
    }

    // ------------------------------------------------------------------ owner's reads and writes

    /// Bytes a `write` would take now.
    pub fn send_room(&self) -> usize {
        self.send_cap - self.send_buf.len()
    }

    pub fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        if self.closing || self.fin_seq.is_some() {
            return Err(Error::new(ErrorKind::BrokenPipe, "utp: write after close"));
        }
        let n = data.len().min(self.send_room());
        if n == 0 && !data.is_empty() {
            self.write_blocked = true;
            return Err(ErrorKind::WouldBlock.into());
        }
        self.send_buf.extend(&data[..n]);
        self.unsent += n;
        Ok(n)
    }

    pub fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.recv_buf.is_empty() {
            return if self.eof_reached { Ok(0) } else { Err(std::io::ErrorKind::WouldBlock.into()) };
        }
        let n = out.len().min(self.recv_buf.len());
        let (a, b) = self.recv_buf.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.recv_buf.drain(..n);
        // A window that had closed to under half opened: tell the peer now rather than at the next ACK.
        if (self.last_adv_wnd as usize) < self.recv_cap / 2 && self.recv_window() as usize >= self.recv_cap / 2 {
            self.ack_now = true;
        }
        Ok(n)
    }

    /// Bytes ready for `read`.
    pub fn readable_bytes(&self) -> usize {
        self.recv_buf.len()
    }

    fn recv_window(&self) -> u32 {
        (self.recv_cap - self.recv_buf.len() - self.ooo_bytes) as u32
    }

    // ------------------------------------------------------------------ input

    /// One packet addressed to this connection (its id and source already matched by the mux).
    pub fn handle_packet(&mut self, now: Timestamp, p: &Packet<'_>) {
        let h = &p.header;
        if self.state == State::Dead {
            return;
        }
        if h.timestamp_us != 0 {
            self.reply_micro = micros32(now).wrapping_sub(h.timestamp_us);
        }
        match (self.state, h.kind) {
            // BEP 29: RESET ends the connection at once, whatever the state.
            (_, PacketType::Reset) => {
                self.die(CloseReason::Reset);
                return;
            }
            // Our SYN is answered when a packet acks its sequence number.
            (State::AwaitingSynAck, PacketType::State | PacketType::Data | PacketType::Fin)
                if h.ack_nr == self.seq_nr.wrapping_sub(1) =>
            {
                self.state = State::Connected;
                self.ack_nr = h.seq_nr.wrapping_sub(1);
                self.events.connected = true;
            }
            (State::AwaitingSynAck, _) => return,
            // A repeated SYN (our STATE was lost): answer it again.
            (_, PacketType::Syn) => {
                self.ack_now = true;
                self.last_recv(now);
                return;
            }
            (State::AwaitingFirstPacket, _) => self.state = State::Connected,
            (State::Connected, _) => {}
            (State::Dead, _) => return,
        }
        self.last_recv(now);
        self.peer_wnd = h.wnd_size;
        self.on_ack(now, p);
        if matches!(h.kind, PacketType::Data | PacketType::Fin) {
            self.on_data(now, h.seq_nr, p.payload, h.kind == PacketType::Fin);
        }
        self.check_finished();
    }

    fn last_recv(&mut self, now: Timestamp) {
        let limit = if self.state == State::AwaitingFirstPacket { HALF_OPEN_TIMEOUT } else { IDLE_TIMEOUT };
        self.set_timer(Timer::Idle, Some(now + limit));
    }

    fn window(&self) -> u32 {
        self.cc.cwnd().min(self.peer_wnd)
    }

    fn mark_lost(&mut self, index: usize) -> bool {
        let p = &mut self.outstanding[index];
        if p.sacked || p.need_resend {
            return false;
        }
        p.need_resend = true;
        self.to_send += 1;
        if p.in_flight {
            p.in_flight = false;
            self.in_flight -= u32::from(p.len);
        }
        true
    }

    /// A loss event: halve the window, once per window of data.
    fn on_loss(&mut self, seq: u16) {
        if !seq_lt(seq, self.recovery_seq) {
            self.cc.on_loss();
            self.recovery_seq = self.seq_nr;
        }
    }

    fn on_ack(&mut self, now: Timestamp, p: &Packet<'_>) {
        let h = &p.header;
        let window_limited = self.in_flight as usize + self.max_payload > self.window() as usize;
        let oldest = self.outstanding.front().map_or(self.seq_nr, |o| o.seq);
        // How many outstanding packets this ACK covers; more than we have sent means a bogus ACK.
        let covered = usize::from(h.ack_nr.wrapping_sub(oldest.wrapping_sub(1)));
        let mut acked_bytes = 0u32;
        if covered <= self.outstanding.len() {
            for _ in 0..covered {
                let Some(o) = self.outstanding.pop_front() else { break };
                if o.need_resend {
                    self.to_send -= 1;
                }
                if o.in_flight {
                    self.in_flight -= u32::from(o.len);
                }
                if !o.sacked {
                    acked_bytes += u32::from(o.len);
                    // Karn: only packets sent once give an RTT sample.
                    if o.transmissions == 1 {
                        self.rtt.sample(now - o.sent_at);
                    }
                }
                self.send_buf.drain(..usize::from(o.len));
                self.send_base += u64::from(o.len);
                if o.kind == PacketType::Fin {
                    self.fin_acked = true;
                }
            }
            if covered > 0 {
                self.dup_acks = 0;
                self.timeouts = 0;
                self.rtt.reset_backoff();
                let rto = self.outstanding.front().map(|_| now + self.rtt.rto());
                self.set_timer(Timer::Retransmit, rto);
            } else if h.kind == PacketType::State && !self.outstanding.is_empty() {
                // BEP 29: three duplicate ACKs mean the packet after ack_nr was lost.
                self.dup_acks = self.dup_acks.saturating_add(1);
                if self.dup_acks == DUP_ACKS && !self.outstanding[0].fast_resent && self.mark_lost(0) {
                    self.outstanding[0].fast_resent = true;
                    let seq = self.outstanding[0].seq;
                    self.on_loss(seq);
                }
            }
            if let Some(mask) = p.sack {
                acked_bytes += self.on_sack(h.ack_nr, mask);
            }
        }
        // The peer alive but full: not a reason to give up on it.
        if (h.wnd_size as usize) < self.max_payload {
            self.timeouts = 0;
        }
        if h.timestamp_difference_us != 0 {
            self.cc.on_delay_sample(now, h.timestamp_difference_us);
        }
        self.cc.on_ack(acked_bytes, window_limited);
        if self.write_blocked && self.send_room() > 0 {
            self.write_blocked = false;
            self.events.writable = true;
        }
    }

    /// Applies a SACK bitmask (bit `i` of byte `j` = `ack_nr + 2 + 8j + i`); returns newly acked bytes.
    /// Packets with [`SACK_HOLE`] SACKed packets after them are declared lost (once each).
    fn on_sack(&mut self, ack_nr: u16, mask: &[u8]) -> u32 {
        let Some(front) = self.outstanding.front() else { return 0 };
        // Index in `outstanding` of ack_nr + 2.
        let first = usize::from(ack_nr.wrapping_add(2).wrapping_sub(front.seq));
        if first > self.outstanding.len() {
            return 0;
        }
        let mut acked = 0;
        for (i, byte) in mask.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) == 0 {
                    continue;
                }
                let Some(o) = self.outstanding.get_mut(first + i * 8 + bit) else { continue };
                if !o.sacked {
                    o.sacked = true;
                    if o.need_resend {
                        o.need_resend = false;
                        self.to_send -= 1;
                    }
                    if o.in_flight {
                        o.in_flight = false;
                        self.in_flight -= u32::from(o.len);
                    }
                    acked += u32::from(o.len);
                }
            }
        }
        // Holes: walk from the newest, counting SACKed packets seen.
        let mut sacked_after = 0;
        let mut lost_seq = None;
        for i in (0..self.outstanding.len()).rev() {
            if self.outstanding[i].sacked {
                sacked_after += 1;
            } else if sacked_after >= SACK_HOLE && !self.outstanding[i].fast_resent && self.mark_lost(i) {
                self.outstanding[i].fast_resent = true;
                lost_seq = Some(self.outstanding[i].seq);
            }
        }
        if let Some(seq) = lost_seq {
            self.on_loss(seq);
        }
        acked
    }

    fn on_data(&mut self, now: Timestamp, seq: u16, payload: &[u8], fin: bool) {
        if fin && self.eof_seq.is_none() {
            self.eof_seq = Some(seq);
        }
        if self.eof_seq.is_some_and(|eof| seq_lt(eof, seq)) {
            return; // past the FIN: ignored
        }
        let offset = usize::from(seq.wrapping_sub(self.ack_nr.wrapping_add(1)));
        if offset >= 0x8000 {
            // Already received: the ACK was lost; repeat it.
            self.ack_now = true;
            return;
        }
        // A closing owner reads nothing more: accept and discard, so the peer's FIN can complete.
        let len = if self.closing { 0 } else { payload.len() };
        if len > self.recv_window() as usize {
            self.ack_now = true; // no room: dropped; the ACK repeats our window
            return;
        }
        if offset == 0 {
            self.recv_buf.extend(&payload[..len]);
            self.ack_nr = seq;
            self.acks_owed += 1;
            if len > 0 {
                self.events.readable = true;
            }
            self.drain_ooo();
            if self.eof_seq == Some(self.ack_nr) && !self.eof_reached {
                self.eof_reached = true;
                self.events.readable = true;
                self.ack_now = true;
            }
            if self.acks_owed >= ACK_EVERY {
                self.ack_now = true;
            } else if self.timers[Timer::DelayedAck as usize].is_none() {
                self.set_timer(Timer::DelayedAck, Some(now + DELAYED_ACK));
            }
        } else if offset < OOO_SLOTS {
            if self.ooo.is_empty() {
                self.ooo.resize_with(OOO_SLOTS, Slot::default);
            }
            let slot = &mut self.ooo[usize::from(seq) % OOO_SLOTS];
            if !slot.used {
                slot.used = true;
                slot.seq = seq;
                slot.fin = fin;
                slot.data.clear();
                slot.data.extend_from_slice(&payload[..len]);
                self.ooo_count += 1;
                self.ooo_bytes += len;
            }
            // Out of order: a duplicate ACK with the SACK at once, for the sender's fast retransmit.
            self.ack_now = true;
        } else {
            self.ack_now = true; // beyond what we keep
        }
    }

    /// Moves packets that became in order from the slots to the receive ring.
    fn drain_ooo(&mut self) {
        while self.ooo_count > 0 {
            let next = self.ack_nr.wrapping_add(1);
            let slot = &mut self.ooo[usize::from(next) % OOO_SLOTS];
            if !slot.used || slot.seq != next {
                break;
            }
            slot.used = false;
            self.recv_buf.extend(&slot.data);
            self.ooo_count -= 1;
            self.ooo_bytes -= slot.data.len();
            if !slot.data.is_empty() {
                self.events.readable = true;
            }
            if slot.fin {
                self.eof_seq.get_or_insert(next);
            }
            self.ack_nr = next;
            self.ack_now = true;
        }
    }

    // ------------------------------------------------------------------ time

    /// Handles the timers that are due; spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for timer in Timer::ALL {
            if self.state == State::Dead {
                return;
            }
            if self.timers[timer as usize].map_or(true, |at| at > now) {
                continue;
            }
            self.set_timer(timer, None);
            match timer {
                Timer::Idle => self.die(CloseReason::TimedOut),
                Timer::DelayedAck | Timer::KeepAlive => self.ack_now = true,
                Timer::Retransmit => self.on_retransmit_timeout(now),
            }
        }
    }

    fn on_retransmit_timeout(&mut self, now: Timestamp) {
        if self.state == State::AwaitingSynAck {
            if self.syn_sends >= MAX_SYN_SENDS {
                self.die(CloseReason::ConnectTimeout);
                return;
            }
            self.rtt.back_off();
            self.mark_lost(0);
            return;
        }
        if !self.outstanding.iter().any(|o| !o.sacked) {
            // Nothing in flight: the zero-window probe may go.
            self.probe = self.unsent > 0;
            return;
        }
        self.timeouts += 1;
        if self.timeouts > MAX_TIMEOUTS {
            self.die(CloseReason::TimedOut);
            return;
        }
        // Everything unacknowledged is presumed lost; start again from one packet (as libutp).
        for i in 0..self.outstanding.len() {
            self.mark_lost(i);
            self.outstanding[i].fast_resent = false;
        }
        self.cc.on_timeout();
        self.rtt.back_off();
        self.dup_acks = 0;
        self.recovery_seq = self.seq_nr;
        self.set_timer(Timer::Retransmit, Some(now + self.rtt.rto()));
    }

    // ------------------------------------------------------------------ output

    fn push_outstanding(&mut self, kind: PacketType, len: usize) {
        let offset = self.send_base + (self.send_buf.len() - self.unsent) as u64;
        self.outstanding.push_back(OutPacket {
            seq: self.seq_nr,
            kind,
            offset,
            len: len as u16,
            sent_at: Timestamp::ZERO,
            transmissions: 0,
            sacked: false,
            in_flight: false,
            need_resend: true,
            fast_resent: false,
        });
        self.to_send += 1;
        self.unsent -= len;
        self.seq_nr = self.seq_nr.wrapping_add(1);
    }

    /// Whether `poll_packet` would produce a packet now.
    pub fn wants_transmit(&self) -> bool {
        if self.state == State::Dead {
            return false;
        }
        self.ack_now || self.to_send > 0 || (self.state == State::Connected && (self.unsent > 0 || self.wants_fin()))
    }

    fn wants_fin(&self) -> bool {
        self.closing && self.unsent == 0 && self.fin_seq.is_none()
    }

    fn fits(&self, len: usize) -> bool {
        self.in_flight == 0 || self.in_flight as usize + len <= self.window() as usize
    }

    /// Writes the next packet to send into `out` (at least the connection's datagram size); `None` when
    /// nothing is due.
    pub fn poll_packet(&mut self, now: Timestamp, out: &mut [u8]) -> Option<usize> {
        if self.state == State::Dead {
            return None;
        }
        // 1. Retransmissions, oldest first.
        let resend = if self.to_send > 0 { self.outstanding.iter().position(|o| o.need_resend) } else { None };
        if let Some(i) = resend {
            let len = usize::from(self.outstanding[i].len);
            if self.fits(len) || self.outstanding[i].kind == PacketType::Syn {
                return self.send_outstanding(now, i, out);
            }
        }
        if self.state == State::Connected {
            // 2. New data, as much as a packet holds, within the window (or one probe into a closed one).
            if self.unsent > 0 && self.outstanding.len() < MAX_OUTSTANDING {
                let len = self.unsent.min(self.max_payload);
                let room = self.fits(len) && (self.in_flight > 0 || self.peer_wnd as usize >= len || self.probe);
                if room {
                    self.probe = false;
                    self.push_outstanding(PacketType::Data, len);
                    return self.send_outstanding(now, self.outstanding.len() - 1, out);
                }
                if self.in_flight == 0 && self.timers[Timer::Retransmit as usize].is_none() {
                    self.set_timer(Timer::Retransmit, Some(now + self.rtt.rto()));
                }
            }
            // 3. FIN once everything queued is sent.
            if self.wants_fin() && self.outstanding.len() < MAX_OUTSTANDING {
                self.fin_seq = Some(self.seq_nr);
                self.push_outstanding(PacketType::Fin, 0);
                return self.send_outstanding(now, self.outstanding.len() - 1, out);
            }
        }
        // 4. A bare ACK (also the keep-alive and the answer to a SYN).
        if self.ack_now {
            let header = self.header(now, PacketType::State, self.seq_nr);
            return self.encode(now, &header, None, out);
        }
        None
    }

    fn header(&mut self, now: Timestamp, kind: PacketType, seq_nr: u16) -> Header {
        let wnd = self.recv_window();
        self.last_adv_wnd = wnd;
        Header {
            kind,
            connection_id: if kind == PacketType::Syn { self.recv_id } else { self.send_id },
            timestamp_us: micros32(now),
            timestamp_difference_us: self.reply_micro,
            wnd_size: wnd,
            seq_nr,
            ack_nr: if kind == PacketType::Syn { 0 } else { self.ack_nr },
        }
    }

    fn send_outstanding(&mut self, now: Timestamp, i: usize, out: &mut [u8]) -> Option<usize> {
        let o = self.outstanding[i];
        let header = self.header(now, o.kind, o.seq);
        let start = (o.offset - self.send_base) as usize;
        let n = self.encode(now, &header, Some((start, usize::from(o.len))), out)?;
        let o = &mut self.outstanding[i];
        if o.need_resend {
            o.need_resend = false;
            self.to_send -= 1;
        }
        o.sent_at = now;
        o.transmissions = o.transmissions.saturating_add(1);
        if !o.in_flight {
            o.in_flight = true;
            self.in_flight += u32::from(o.len);
        }
        if o.kind == PacketType::Syn {
            self.syn_sends += 1;
        }
        if self.timers[Timer::Retransmit as usize].is_none() {
            self.set_timer(Timer::Retransmit, Some(now + self.rtt.rto()));
        }
        Some(n)
    }

    /// Encodes `header`, our SACK when packets are out of order, and the payload `range` of the send
    /// ring; every packet carries the current ACK, so the delayed-ACK state is cleared.
    fn encode(
        &mut self,
        now: Timestamp,
        header: &Header,
        range: Option<(usize, usize)>,
        out: &mut [u8],
    ) -> Option<usize> {
        let mut sack = [0u8; SACK_BYTES];
        let sack_len = if header.kind == PacketType::Syn { 0 } else { self.sack_mask(&mut sack) };
        let payload_len = range.map_or(0, |r| r.1);
        let total = packet::encoded_len(sack_len, payload_len);
        if out.len() < total {
            return None;
        }
        let n = packet::encode_into(header, &sack[..sack_len], &[], out)?;
        // The payload comes straight from the send ring (two slices when it wraps).
        if let Some((start, len)) = range {
            let (a, b) = self.send_buf.as_slices();
            let (a_from, a_to) = (start.min(a.len()), (start + len).min(a.len()));
            let done = a_to - a_from;
            out[n..n + done].copy_from_slice(&a[a_from..a_to]);
            let (b_from, b_to) = (start.saturating_sub(a.len()), (start + len).saturating_sub(a.len()));
            out[n + done..n + len].copy_from_slice(&b[b_from..b_to]);
        }
        self.ack_now = false;
        self.acks_owed = 0;
        self.set_timer(Timer::DelayedAck, None);
        self.last_send = now;
        self.set_timer(Timer::KeepAlive, Some(now + KEEPALIVE));
        Some(total)
    }

    /// Our SACK bitmask (bit `i` = `ack_nr + 2 + i` is held); returns its length, a multiple of 4, or 0.
    fn sack_mask(&self, mask: &mut [u8; SACK_BYTES]) -> usize {
        if self.ooo_count == 0 {
            return 0;
        }
        let mut highest = None;
        for i in 0..OOO_SLOTS - 1 {
            let seq = self.ack_nr.wrapping_add(2).wrapping_add(i as u16);
            let slot = &self.ooo[usize::from(seq) % OOO_SLOTS];
            if slot.used && slot.seq == seq {
                mask[i / 8] |= 1 << (i % 8);
                highest = Some(i);
            }
        }
        highest.map_or(0, |i| (i / 8 + 1).div_ceil(4) * 4)
    }
}
