//! uTP as a second transport for peer connections: the engine's side of `crate::utp::UtpMux`.
//!
//! Owns: the process's `UtpMux` (on the shared UDP socket), the map from uTP connection ids to the engine's
//! connections, the wheel entry that wakes the mux, and moving bytes between a uTP connection and its
//! `PeerConn` — through the same `handle_peer_input` / `handle_peer_output` a TCP socket goes through, so
//! sessions, buffers, encryption and backpressure are the same whatever carries them.
//! Must not: touch a socket or the clock (datagrams leave through `Engine::poll_datagram` into the driver's
//! buffer, with no allocation per packet), or speak uTP itself (that is `crate::utp`).
//!
//! Which transport first: TCP. The kernel does TCP's congestion control and retransmission for free,
//! while uTP costs user-space work per packet — on a small device that matters. A peer whose TCP connect
//! fails (refused, or timed out: a peer that speaks only uTP, or one behind a NAT that passes only UDP) is
//! dialled again at once over uTP, and that is remembered for it (`Candidates`); never are two connections
//! to one peer live at once, since the second dial starts only after the first is gone. Incoming uTP is
//! accepted like incoming TCP (same slot policy) unless `--no-utp`.

use std::net::SocketAddr;

use super::conn::PeerConn;
use super::{ConnId, Engine, Wake};
use crate::peer::buffers::ReadBuf;
use crate::peer::encryption::Encryption;
use crate::peer::DropReason;
use crate::swarm::slots::Admission;
use crate::time::Timestamp;
use crate::timer_wheel::TimerId;
use crate::utp::{CloseReason, UtpEvent, UtpId, UtpMux};

/// How a connection's bytes travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// A TCP socket the driver owns, keyed by the connection's id.
    #[default]
    Tcp,
    /// A uTP connection in the engine's mux.
    Utp(UtpId),
}

/// The engine's uTP state.
pub struct UtpHost {
    pub(super) mux: UtpMux,
    /// uTP id → the engine's connection slot.
    pub(super) conns: std::collections::HashMap<UtpId, usize>,
    timer: Option<(TimerId, Timestamp)>,
}

impl UtpHost {
    pub fn new(mux: UtpMux) -> Self {
        UtpHost { mux, conns: std::collections::HashMap::new(), timer: None }
    }
}

fn drop_reason(reason: CloseReason) -> DropReason {
    match reason {
        CloseReason::ConnectTimeout => DropReason::ConnectTimedOut,
        CloseReason::Reset => DropReason::Io(std::io::ErrorKind::ConnectionReset),
        CloseReason::TimedOut => DropReason::Io(std::io::ErrorKind::TimedOut),
    }
}

impl Engine {
    /// The next datagram of the uTP connections, written into `buf` (at least [`crate::utp::MAX_DATAGRAM`]
    /// bytes): the driver sends `buf[..len]` to the address from the shared UDP socket.
    pub fn poll_datagram(&mut self, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        self.utp.as_mut()?.mux.poll_transmit(buf)
    }

    /// A uTP datagram from the shared socket.
    pub(super) fn utp_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp) {
        let Some(host) = self.utp.as_mut() else {
            log::trace!("udp {from}: uTP packet ignored: uTP is off");
            return;
        };
        host.mux.handle_datagram(now, from, data);
        self.pump_utp(now);
    }

    pub(super) fn utp_timeout(&mut self, now: Timestamp) {
        let Some(host) = self.utp.as_mut() else {
            return;
        };
        match host.timer {
            Some((_, at)) if at > now => return,
            _ => host.timer = None,
        }
        host.mux.handle_timeout(now);
        self.pump_utp(now);
    }

    /// Opens a uTP connection to `addr`; `None` when uTP is off or the mux is full.
    pub(super) fn utp_connect(&mut self, addr: SocketAddr, now: Timestamp) -> Option<UtpId> {
        let host = self.utp.as_mut()?;
        host.mux.connect(now, addr)
    }

    /// Records that `slot` is carried by uTP connection `id`.
    pub(super) fn utp_bind(&mut self, id: UtpId, slot: usize) {
        if let Some(host) = self.utp.as_mut() {
            host.conns.insert(id, slot);
        }
    }

    /// A closed connection's uTP side: FIN after what is queued (or RESET when the peer misbehaved).
    pub(super) fn utp_release(&mut self, id: UtpId, reason: &DropReason) {
        if let Some(host) = self.utp.as_mut() {
            if host.conns.remove(&id).is_some() {
                match reason {
                    DropReason::Misbehaved(_) | DropReason::Banned => host.mux.reset(id),
                    _ => host.mux.close(id),
                }
            }
        }
    }

    /// Reads what a uTP connection has into its `PeerConn`.
    pub(super) fn utp_input(&mut self, slot: usize, id: UtpId, now: Timestamp) {
        let Some(mut host) = self.utp.take() else {
            return;
        };
        self.handle_peer_input(ConnId(slot), &mut host.mux.stream(id), now);
        self.utp = Some(host);
    }

    /// Writes what a `PeerConn` has queued into its uTP connection.
    pub(super) fn utp_output(&mut self, slot: usize, id: UtpId, now: Timestamp) {
        let Some(mut host) = self.utp.take() else {
            return;
        };
        self.handle_peer_output(ConnId(slot), &mut host.mux.stream(id), now);
        self.utp = Some(host);
    }

    /// Moves what the mux produced: events to connections, and its next deadline to the wheel.
    pub(super) fn pump_utp(&mut self, now: Timestamp) {
        while let Some(event) = self.utp.as_mut().and_then(|h| h.mux.poll_event()) {
            let slot_of = |engine: &Engine, id: UtpId| engine.utp.as_ref().and_then(|h| h.conns.get(&id).copied());
            match event {
                UtpEvent::Incoming(id, addr) => self.utp_incoming(id, addr, now),
                UtpEvent::Connected(id) => {
                    if let Some(slot) = slot_of(self, id) {
                        self.handle_connected(ConnId(slot), now);
                        self.utp_output(slot, id, now);
                    }
                }
                UtpEvent::Readable(id) => {
                    if let Some(slot) = slot_of(self, id) {
                        self.utp_input(slot, id, now);
                    }
                }
                UtpEvent::Writable(id) => {
                    if let Some(slot) = slot_of(self, id) {
                        self.utp_output(slot, id, now);
                    }
                }
                UtpEvent::Closed(id, reason) => {
                    if let Some(slot) = self.utp.as_mut().and_then(|h| h.conns.remove(&id)) {
                        self.close_conn(slot, drop_reason(reason));
                    }
                }
            }
        }
        let Some(host) = self.utp.as_mut() else {
            return;
        };
        if let Some(at) = host.mux.poll_timeout() {
            if host.timer.map_or(true, |(_, t)| at < t) {
                if let Some((old, _)) = host.timer.take() {
                    self.timers.cancel(old);
                }
                host.timer = Some((self.timers.schedule(at.max(now), Wake::Utp), at));
            }
        }
    }

    /// A peer opened a uTP connection to us: admitted as an incoming TCP connection would be.
    fn utp_incoming(&mut self, id: UtpId, addr: SocketAddr, now: Timestamp) {
        let refuse = |engine: &mut Engine| {
            if let Some(host) = engine.utp.as_mut() {
                host.mux.reset(id);
            }
        };
        if self.shutting_down || !self.torrents.iter().any(|(_, t)| t.accepts_peers()) {
            return refuse(self);
        }
        if !self.admit_handshaking(addr, now) {
            return refuse(self);
        }
        let we_seed = self.torrents.iter().filter(|(_, t)| t.is_active()).all(|(_, t)| t.is_seed());
        match self.slot_policy().on_incoming(addr.ip(), &self.slot_view(None), we_seed, now) {
            Admission::Admit => {}
            Admission::Replace(victim) => self.close_conn(victim, DropReason::NotNeeded),
            Admission::Full | Admission::SameAddress => return refuse(self),
        }
        let no = self.new_peer_no();
        let encryption = Encryption::incoming(&mut self.entropy, self.config.encryption);
        let mut conn = PeerConn::new(no, addr, None, None, ReadBuf::for_handshake(), encryption, now);
        conn.handshake_deadline = now + crate::peer::session::HANDSHAKE_TIMEOUT;
        conn.transport = Transport::Utp(id);
        let slot = self.conns.insert(conn);
        self.utp_bind(id, slot);
        log::debug!("{addr}: accepted over uTP");
        if let Some(q) = self.trace.as_deref_mut() {
            q.push(now, super::trace::TraceKind::Accepted { peer: no, addr, transport: super::trace::Transport::Utp });
        }
        self.reschedule_conn(slot, now);
        self.utp_input(slot, id, now);
    }
}
