//! Peer connections: socket + read buffer + `PeerSession`, and the loop's work on them.
//!
//! Owns: non-blocking connects and their completion check, accepting, reading until `WouldBlock` into the
//! connection's `ReadBuf` and handing frames to the session, writing its output until `WouldBlock`,
//! serving blocks from storage into its write buffer, each peer's wheel entry, choke rounds and the
//! rate-limit buckets as applied to sockets, bans, and reaping closed connections.
//! Must not: decide protocol; every decision is the session's, the swarm's or the choker's (who gets a
//! connection slot, and who gives one up, is `swarm::slots`'s).
//!
//! Every connection is registered once for READABLE | WRITABLE (edge-triggered) and never re-registered:
//! with edge triggering an idle writable socket costs nothing, and backpressure is applied by not reading
//! (a paused connection is put back on the loop's backlog when its send queue drains, because the data
//! already waiting will not raise a new edge).

use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::Interest;

use super::token::{self, Source};
use super::{EventLoop, LoopError, Wake, WHEEL_TICK};
use crate::peer::buffers::ReadBuf;
use crate::peer::session::{PeerSession, Phase, TorrentContext};
use crate::peer::{DropReason, PeerMisbehaved};
use crate::swarm::choker::{PeerStat, SNUB_AFTER};
use crate::swarm::slots::{Admission, PeerUse, SlotPolicy};
use crate::swarm::throttle::TokenBucket;
use crate::swarm::PeerNo;
use crate::time::Timestamp;
use crate::timer_wheel::TimerId;
use crate::torrent::{InputError, Torrent};
use crate::wire::mse;

/// Bytes read from one peer per readiness event before others get a turn.
pub const READ_BUDGET: usize = 1024 * 1024;

pub struct Connection {
    pub socket: TcpStream,
    pub addr: SocketAddr,
    pub read: ReadBuf,
    pub session: PeerSession,
    /// The peer's wheel entry and when it fires.
    pub timer: Option<(TimerId, Timestamp)>,
    /// Set once the connection is to be reaped at the end of the turn; events for it are ignored.
    pub closing: Option<DropReason>,
    /// Reading stopped because our send queue is above its high-water mark.
    pub paused: bool,
    /// Already queued on the loop's backlog.
    pub in_backlog: bool,
    pub connected_at: Timestamp,
    /// The last payload received from or sent to this peer (for the slot policy).
    pub last_payload: Option<Timestamp>,
    /// An incoming connection whose first byte is not yet known may open with an MSE handshake; while
    /// one runs, its bytes go to the responder instead of the session.
    pub encryption: Encryption,
}

/// Where an incoming connection stands on Message Stream Encryption.
pub enum Encryption {
    /// Plain BitTorrent (our own connections, or the peer's first byte said so).
    Plain,
    /// Incoming, first byte not seen yet.
    Undecided(Box<mse::Responder>),
    /// The peer opened with MSE; the handshake is running.
    Handshaking(Box<mse::Responder>),
}

/// What a read pass ended with.
pub enum ReadOutcome {
    /// Drained to `WouldBlock`.
    Drained,
    /// Budget spent or paused with data possibly waiting: try again later.
    MoreLater,
}

impl Connection {
    pub fn new(
        socket: TcpStream,
        addr: SocketAddr,
        session: PeerSession,
        ctx: &TorrentContext,
        now: Timestamp,
    ) -> Self {
        Connection {
            socket,
            addr,
            read: ReadBuf::new(&ctx.limits),
            session,
            timer: None,
            closing: None,
            paused: false,
            in_backlog: false,
            connected_at: now,
            last_payload: None,
            encryption: Encryption::Plain,
        }
    }

    /// Our connect finished or failed (a writable or error event while `AwaitingConnect`).
    /// `Ok(false)`: not yet (a spurious event).
    pub fn check_connected(&mut self) -> Result<bool, DropReason> {
        if let Ok(Some(e)) | Err(e) = self.socket.take_error() {
            return Err(DropReason::ConnectFailed(e.kind()));
        }
        match self.socket.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(DropReason::ConnectFailed(e.kind())),
        }
    }

    /// Reads until `WouldBlock`, `budget` bytes, or backpressure, handing every whole frame to the session.
    pub fn read_and_process(
        &mut self,
        torrent: &mut Torrent,
        budget: usize,
        now: Timestamp,
    ) -> Result<ReadOutcome, InputError> {
        let mut budget = budget.min(READ_BUDGET);
        loop {
            if !self.session.wants_input() {
                self.paused = true;
                return Ok(ReadOutcome::MoreLater);
            }
            match self.read.fill_from(&mut self.socket) {
                Ok(0) => return Err(DropReason::ClosedByPeer.into()),
                Ok(n) => {
                    if self.run_encryption_handshake()? {
                        torrent.process_input(&mut self.read, &mut self.session, now)?;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        return Ok(ReadOutcome::MoreLater);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DropReason::Io(e.kind()).into()),
            }
        }
    }

    /// Drives an MSE handshake over the bytes read so far. True once the stream is plain BitTorrent.
    fn run_encryption_handshake(&mut self) -> Result<bool, DropReason> {
        loop {
            match std::mem::replace(&mut self.encryption, Encryption::Plain) {
                Encryption::Plain => return Ok(true),
                Encryption::Undecided(responder) => match self.read.unparsed_mut().first() {
                    None => {
                        self.encryption = Encryption::Undecided(responder);
                        return Ok(false);
                    }
                    Some(&first) if mse::looks_encrypted(first) => {
                        self.encryption = Encryption::Handshaking(responder);
                    }
                    Some(_) => return Ok(true),
                },
                Encryption::Handshaking(mut responder) => match responder.on_bytes(self.read.unparsed_mut()) {
                    mse::Step::NeedMore => {
                        self.encryption = Encryption::Handshaking(responder);
                        return Ok(false);
                    }
                    mse::Step::Reply { consumed, reply } => {
                        self.read.consume(consumed);
                        self.session.queue_raw(&reply);
                        self.encryption = Encryption::Handshaking(responder);
                    }
                    mse::Step::Done { consumed, reply, .. } => {
                        self.read.consume(consumed);
                        self.session.queue_raw(&reply);
                        log::debug!("{}: encrypted handshake done, plaintext selected", self.addr);
                        return Ok(true);
                    }
                    mse::Step::Fail => return Err(PeerMisbehaved::WrongProtocolString.into()),
                },
            }
        }
    }

    /// Serves queued requests (within `allowance` bytes) and writes until `WouldBlock` or nothing is left.
    pub fn flush(&mut self, torrent: &mut Torrent, allowance: &mut u64, now: Timestamp) -> Result<(), InputError> {
        loop {
            torrent.serve(&mut self.session, allowance).map_err(InputError::Fatal)?;
            let pending = self.session.pending_output();
            if pending.is_empty() {
                return Ok(());
            }
            match self.socket.write(pending) {
                Ok(0) => return Err(DropReason::Io(io::ErrorKind::WriteZero).into()),
                Ok(n) => self.session.output_written(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DropReason::Io(e.kind()).into()),
            }
        }
    }
}

/// The loop's side of peer connections: dialling, accepting, reading and writing in the fixed order the
/// module doc of `event_loop` gives, choke rounds and rate limits, and reaping.
impl EventLoop {
    pub(super) fn half_open(&self) -> usize {
        self.peers.iter().filter(|(_, c)| c.session.phase() == Phase::AwaitingConnect).count()
    }

    /// Connections not being closed.
    fn live_peers(&self) -> usize {
        self.peers.len() - self.closing.len()
    }

    fn slot_policy(&self) -> SlotPolicy {
        SlotPolicy::new(self.config.max_peers)
    }

    /// What the slot policy needs to know about every live connection.
    fn slot_view(&self) -> Vec<PeerUse<usize>> {
        self.peers
            .iter()
            .filter(|(_, c)| c.closing.is_none())
            .map(|(slot, c)| {
                let s = &c.session;
                PeerUse {
                    key: slot,
                    ip: c.addr.ip(),
                    outgoing: s.is_outgoing(),
                    connecting: s.phase() == Phase::AwaitingConnect,
                    handshaken: s.peer_id.is_some(),
                    connected_at: c.connected_at,
                    last_payload: c.last_payload,
                    am_interested: s.is_am_interested(),
                    peer_interested: s.is_peer_interested(),
                    peer_seed: s.is_peer_seed(),
                }
            })
            .collect()
    }

    /// Dials known candidates while there is room. With `turnover` (once a second), a full house may
    /// also give the slot of its least useful peer to one candidate, as the slot policy decides.
    pub(super) fn dial_more(&mut self, now: Timestamp, turnover: bool) {
        if self.stopping || (self.torrent.swarm.is_complete() && !self.config.keep_seeding) {
            return;
        }
        let policy = self.slot_policy();
        let we_seed = self.torrent.swarm.is_seed();
        let mut half_open = self.half_open();
        let mut replaced = false;
        while half_open < self.config.max_half_open && (turnover || self.live_peers() < self.config.max_peers) {
            let Some(addr) = self.candidates.next_to_dial(now) else {
                break;
            };
            match policy.on_dial(addr.ip(), &self.slot_view(), we_seed, now) {
                Admission::Admit => {}
                Admission::Replace(victim) if turnover && !replaced => {
                    replaced = true;
                    log::debug!("{}: replaced by a dial to {addr}", self.peers[victim].addr);
                    self.close_peer(victim, DropReason::NotNeeded);
                }
                Admission::Replace(_) | Admission::Full => {
                    self.candidates.put_back(addr);
                    break;
                }
                Admission::SameAddress => {
                    log::debug!("{addr}: not dialled: already connected to that address");
                    self.candidates.on_closed(addr, true, now);
                    continue;
                }
            }
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

    pub(super) fn new_peer_no(&mut self) -> PeerNo {
        self.next_peer_no += 1;
        PeerNo(self.next_peer_no)
    }

    pub(super) fn insert_peer(
        &mut self,
        mut socket: TcpStream,
        addr: SocketAddr,
        session: PeerSession,
        now: Timestamp,
    ) -> Option<usize> {
        // Requests and `have`s are small writes that must not wait for an ACK (Nagle): the peer's
        // pipeline, and so the transfer rate, depends on them arriving at once.
        if let Err(e) = socket.set_nodelay(true) {
            log::debug!("{addr}: cannot set TCP_NODELAY: {e}");
        }
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

    pub(super) fn accept_all(&mut self, now: Timestamp) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((socket, addr)) => {
                    // IPv4 peers reach the dual-stack listener as ::ffff:a.b.c.d.
                    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                    if self.stopping {
                        drop(socket);
                        continue;
                    }
                    let we_seed = self.torrent.swarm.is_seed();
                    match self.slot_policy().on_incoming(addr.ip(), &self.slot_view(), we_seed, now) {
                        Admission::Admit => {}
                        Admission::Replace(victim) => {
                            log::debug!("{}: replaced by incoming {addr}", self.peers[victim].addr);
                            self.close_peer(victim, DropReason::NotNeeded);
                        }
                        Admission::Full => {
                            log::debug!("{addr}: incoming connection refused: no free slot");
                            drop(socket);
                            continue;
                        }
                        Admission::SameAddress => {
                            log::debug!("{addr}: incoming connection refused: already connected to that address");
                            drop(socket);
                            continue;
                        }
                    }
                    let no = self.new_peer_no();
                    let session = PeerSession::incoming(no, &self.torrent.ctx, now);
                    let responder = mse::Responder::new(self.torrent.ctx.info_hash, &mut self.entropy);
                    if let Some(slot) = self.insert_peer(socket, addr, session, now) {
                        self.peers[slot].encryption = Encryption::Undecided(Box::new(responder));
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

    pub(super) fn queue_backlog(&mut self, slot: usize) {
        if let Some(conn) = self.peers.get_mut(slot) {
            if !conn.in_backlog {
                conn.in_backlog = true;
                self.backlog.push(slot);
            }
        }
    }

    pub(super) fn on_peer_event(&mut self, slot: usize, writable: bool, now: Timestamp) -> Result<(), LoopError> {
        let Some(conn) = self.peers.get_mut(slot) else {
            return Ok(());
        };
        if conn.closing.is_some() {
            return Ok(());
        }
        if conn.session.phase() == Phase::AwaitingConnect {
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
    pub(super) fn read_peer(&mut self, slot: usize, now: Timestamp) -> Result<(), LoopError> {
        let Some(conn) = self.peers.get_mut(slot) else {
            return Ok(());
        };
        if conn.closing.is_some() || conn.session.phase() == Phase::AwaitingConnect {
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
            conn.last_payload = Some(now);
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

    pub(super) fn flush_peer(&mut self, slot: usize, now: Timestamp) -> Result<(), LoopError> {
        let Some(conn) = self.peers.get_mut(slot) else {
            return Ok(());
        };
        if conn.closing.is_some() || conn.session.phase() == Phase::AwaitingConnect {
            return Ok(());
        }
        let mut allowance = self.up_bucket.as_ref().map_or(u64::MAX, TokenBucket::available);
        let uploaded_before = self.torrent.swarm.totals.uploaded;
        let result = conn.flush(&mut self.torrent, &mut allowance, now);
        if self.torrent.swarm.totals.uploaded > uploaded_before {
            conn.last_payload = Some(now);
        }
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
    pub(super) fn reschedule_peer(&mut self, slot: usize, now: Timestamp) {
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

    pub(super) fn close_peer(&mut self, slot: usize, reason: DropReason) {
        if let Some(conn) = self.peers.get_mut(slot) {
            if conn.closing.is_none() {
                log::debug!("{}: dropped: {reason}", conn.addr);
                conn.closing = Some(reason);
                self.closing.push(slot);
            }
        }
    }

    pub(super) fn reap_closed(&mut self, now: Timestamp) {
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

    pub(super) fn choke_round(&mut self, now: Timestamp) {
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
    pub(super) fn refill(&mut self, now: Timestamp) -> Result<(), LoopError> {
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

    pub(super) fn ban(&mut self, no: PeerNo) {
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
}
