//! The RPC server's sockets (`rill daemon`): its listener and connections, driving `rpc::RpcServer` and,
//! through it, the daemon's backend over the engine.
//!
//! Owns: the RPC listener and one socket per RPC connection (indexed by the server's `RpcConnId`),
//! reading (bounded per turn, the rest on a backlog so one client cannot hold the loop), writing what the
//! server has to say, closing what it closes, and the daemon's once-a-second tick.
//! Must not: parse HTTP or decide anything (`rpc` and `daemon` do).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};

use super::token::{self, Source};
use crate::daemon::Daemon;
use crate::engine::Engine;
use crate::rpc::{RpcConnId, RpcServer};
use crate::time::Timestamp;

/// Bytes read from one RPC connection per readiness event or turn; the rest waits for the next turn.
const READ_BUDGET: usize = 256 * 1024;

pub struct RpcDriver {
    listener: TcpListener,
    server: RpcServer,
    daemon: Daemon,
    sockets: Vec<Option<TcpStream>>,
    /// Connections cut short by the read budget: read again next turn.
    backlog: Vec<RpcConnId>,
}

impl RpcDriver {
    /// Binds the RPC listener (`--rpc-bind`) and registers it.
    pub fn bind(addr: SocketAddr, server: RpcServer, daemon: Daemon, registry: &Registry) -> io::Result<RpcDriver> {
        let mut listener = TcpListener::bind(addr)?;
        registry.register(&mut listener, token::encode(Source::RpcListener), Interest::READABLE)?;
        log::info!("rpc on http://{}/transmission/rpc", listener.local_addr()?);
        Ok(RpcDriver { listener, server, daemon, sockets: Vec::new(), backlog: Vec::new() })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn daemon_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }

    pub fn has_work(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub fn poll_timeout(&self) -> Timestamp {
        let next = self.daemon.next_tick();
        self.server.poll_timeout().map_or(next, |t| t.min(next))
    }

    pub fn accept_all(&mut self, registry: &Registry, now: Timestamp) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let id = self.server.handle_accept(peer, now);
                    self.reap(registry);
                    if let Err(e) = registry.register(
                        &mut stream,
                        token::encode(Source::Rpc(id.0)),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        log::debug!("rpc {peer}: cannot register: {e}");
                        self.server.handle_error(id);
                        self.reap(registry);
                        continue;
                    }
                    if self.sockets.len() <= id.0 {
                        self.sockets.resize_with(id.0 + 1, || None);
                    }
                    self.sockets[id.0] = Some(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, most likely: stop accepting this turn.
                    log::warn!("rpc: accept: {e}");
                    return;
                }
            }
        }
    }

    /// A readiness event on an RPC connection.
    pub fn on_ready(&mut self, slot: usize, engine: &mut Engine, registry: &Registry, now: Timestamp) {
        let id = RpcConnId(slot);
        self.read(id, engine, now);
        self.write(id);
        self.reap(registry);
        // A change a client made is on disk within moments, not at the next tick.
        self.daemon.save_if_needed(false);
    }

    /// Reads what `id` sent, up to the budget, and lets the server answer it.
    fn read(&mut self, id: RpcConnId, engine: &mut Engine, now: Timestamp) {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        loop {
            let Some(Some(stream)) = self.sockets.get_mut(id.0) else {
                return;
            };
            if total >= READ_BUDGET {
                if !self.backlog.contains(&id) {
                    self.backlog.push(id);
                }
                return;
            }
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.server.handle_eof(id);
                    return;
                }
                Ok(n) => {
                    total += n;
                    let mut backend = self.daemon.backend(engine, now);
                    self.server.handle_input(id, &buf[..n], now, &mut backend);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("rpc: read: {e}");
                    self.server.handle_error(id);
                    return;
                }
            }
        }
    }

    fn write(&mut self, id: RpcConnId) {
        loop {
            let Some(Some(stream)) = self.sockets.get_mut(id.0) else {
                return;
            };
            let out = self.server.pending_output(id);
            if out.is_empty() {
                return;
            }
            match stream.write(out) {
                Ok(0) => {
                    self.server.handle_error(id);
                    return;
                }
                Ok(n) => self.server.consume_output(id, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("rpc: write: {e}");
                    self.server.handle_error(id);
                    return;
                }
            }
        }
    }

    /// Drops the sockets of connections the server closed.
    fn reap(&mut self, registry: &Registry) {
        while let Some(id) = self.server.poll_close() {
            if let Some(mut stream) = self.sockets.get_mut(id.0).and_then(Option::take) {
                let _ = registry.deregister(&mut stream);
            }
            self.backlog.retain(|&b| b != id);
        }
    }

    /// Once per turn: connections cut short read on, deadlines, the daemon's tick.
    pub fn turn(&mut self, engine: &mut Engine, registry: &Registry, now: Timestamp) {
        for id in std::mem::take(&mut self.backlog) {
            self.read(id, engine, now);
            self.write(id);
        }
        self.server.handle_timeout(now);
        // A 408 may be waiting to be written.
        let open: Vec<usize> = (0..self.sockets.len()).filter(|&i| self.sockets[i].is_some()).collect();
        for i in open {
            if !self.server.pending_output(RpcConnId(i)).is_empty() {
                self.write(RpcConnId(i));
            }
        }
        self.reap(registry);
        self.daemon.tick(engine, now);
    }

    /// At exit: the daemon's state on disk.
    pub fn finish(&mut self, engine: &Engine) {
        self.daemon.finish(engine);
    }
}
