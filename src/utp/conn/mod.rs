//! One uTP connection as a sans-I/O machine (BEP 29): handshake, sequence numbers, acknowledgement with
//! selective ACK, reassembly, retransmission, FIN and RESET, and its timers.
//!
//! Owns: the connection's state, its send buffer (unacknowledged then unsent bytes, one byte ring), the
//! in-flight packet records (no payload copies: a packet is a range of the send ring), the in-order
//! receive ring and the out-of-order slots, congestion control (`ledbat.rs`) and its timer table.
//! Must not: touch a socket or the clock, know other connections, or allocate per packet (the rings grow
//! up to their caps; out-of-order slot buffers are allocated once and reused).
//!
//! Files: this one holds the state, acknowledgement processing (ACK, SACK, losses) and the timers;
//! `receive.rs` the receive ring, reassembly and window; `output.rs` choosing and encoding the next packet.
//!
//! Sequence numbers (BEP 29, "connection setup"): SYN, DATA and FIN each consume one; STATE carries the
//! next one without consuming it. `ack_nr` is the last packet received in order. The initiator's SYN
//! carries its receive id; the acceptor answers with a STATE whose `seq_nr` is its first (unused) number,
//! so the initiator sets `ack_nr = seq_nr - 1` (as libutp and libtorrent).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

mod output;
mod receive;

use super::ledbat::{Ledbat, Rtt};
use super::packet::{Header, Packet, PacketType, HEADER_LEN};
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

    // ------------------------------------------------------------------ owner's writes (reads: receive.rs)

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
}
