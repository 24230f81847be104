//! The engine's DHT node: one `dht::Dht` shared by every torrent, and when each torrent asks it for peers.
//!
//! Owns: the `Dht` machine (process-wide, on the shared UDP socket), the bootstrap host names until the
//! DNS helper resolved them, the node file (read at start; written every 15 minutes on a short-lived
//! `rill-save` thread and at the end of the run), the timer-wheel entry that wakes the machine, and
//! each torrent's lookup schedule (`TorrentDht`).
//! Must not: touch a socket or the clock. Datagrams leave as `Action::Datagram`, names are resolved through
//! `Action::ResolveInBackground` with ids in the DHT's own namespace ([`DHT_IO`]), time comes in as
//! `now`. The KRPC protocol itself is `crate::dht`'s; this module only connects it to the torrents.
//!
//! Lookup schedule: a torrent that accepts peers (downloading, seeding, fetching its metadata), is not
//! private and has the DHT on runs one lookup at a time: `announce_peer` (with our port) when we listen,
//! else `get_peers`. Peers go to its candidates as each answer arrives. The next lookup comes 5 minutes
//! after a fruitful one while downloading, 15 minutes while seeding (libtorrent's announce interval),
//! and sooner (15 s, doubling to 5 minutes) after one that found no peer and announced nowhere — which
//! is what happens while the routing table is still filling.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Action, Engine, TorrentId, Wake};
use crate::dht::node_id::NodeId;
use crate::dht::{self, Dht, Event as DhtEvent};
use crate::metainfo::InfoHash;
use crate::rng::{Entropy, Rng};
use crate::storage::files;
use crate::time::{secs, Timestamp};
use crate::timer_wheel::TimerId;
use crate::tracker::IoId;

/// `IoId`s of DHT host-name lookups carry this bit (tracker ids carry their torrent below it).
pub const DHT_IO: u64 = 1 << 63;
/// The routers used when no `--dht-bootstrap` is given (BitTorrent Inc., Transmission, uTorrent, libtorrent).
pub const DEFAULT_ROUTERS: [(&str, u16); 4] = [
    ("router.bittorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("router.utorrent.com", 6881),
    ("dht.libtorrent.org", 25401),
];
/// The node file is this small at most (300 IPv6 nodes are 11.4 KB); a bigger one is not ours.
const MAX_NODE_FILE: u64 = 64 * 1024;
const SAVE_EVERY: Duration = secs(15 * 60);
const LOOKUP_EVERY_DOWNLOADING: Duration = secs(5 * 60);
const LOOKUP_EVERY_SEEDING: Duration = secs(15 * 60);
const RETRY_FIRST: Duration = secs(15);
const RETRY_MAX: Duration = secs(5 * 60);

/// Where the DHT starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    Addr(SocketAddr),
    /// Resolved on the DNS helper first.
    Host {
        host: String,
        port: u16,
    },
}

/// The process's DHT settings (`None` in `EngineConfig::dht`: no DHT at all).
#[derive(Clone, Debug)]
pub struct DhtConfig {
    pub bootstrap: Vec<Bootstrap>,
    /// Our node id and good nodes, kept between runs.
    pub node_file: Option<PathBuf>,
    /// The shared socket reaches IPv6 too: ask for both families' nodes (BEP 32).
    pub ipv6: bool,
}

/// The DHT node and what the engine keeps for it.
pub struct DhtNode {
    pub(super) dht: Dht,
    node_file: Option<PathBuf>,
    /// Host names to resolve, by index in `DHT_IO` ids.
    hosts: Vec<(String, u16)>,
    timer: Option<(TimerId, Timestamp)>,
    save_at: Timestamp,
    saving: Option<files::BackgroundWrite>,
    /// Nodes read from the node file at start.
    pub loaded_nodes: usize,
}

/// A torrent's DHT lookups.
#[derive(Clone, Copy, Debug, Default)]
pub struct TorrentDht {
    /// No lookup before this (`None`: at once).
    next_at: Option<Timestamp>,
    running: bool,
    found_in_run: usize,
    /// Lookups in a row that found nothing.
    fruitless: u32,
    /// Peers the DHT gave this torrent, for the status line.
    pub peers_found: u64,
}

impl DhtNode {
    /// A node with the id and nodes of `config.node_file` when it reads well (else a fresh random id).
    pub fn new(config: &DhtConfig, now: Timestamp, mut entropy: Entropy, rng: Rng) -> DhtNode {
        let saved = config.node_file.as_deref().and_then(|path| match files::read_bounded(path, MAX_NODE_FILE) {
            Ok(bytes) => match dht::load_nodes(&bytes) {
                Ok(saved) => Some(saved),
                Err(e) => {
                    log::warn!("{}: {e}; starting the DHT afresh", path.display());
                    None
                }
            },
            Err(files::ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                log::warn!("{}: {e}; starting the DHT afresh", path.display());
                None
            }
        });
        let dht_config = dht::Config { want_both: config.ipv6, ..dht::Config::default() };
        let mut dht = Dht::new(now, dht_config, saved.as_ref().map(|s| s.id), entropy.fork(), rng);
        let loaded_nodes = saved.as_ref().map_or(0, |s| s.nodes.len());
        if let Some(saved) = &saved {
            dht.add_saved_nodes(now, &saved.nodes);
        }
        let mut hosts = Vec::new();
        for b in &config.bootstrap {
            match b {
                Bootstrap::Addr(addr) => dht.add_node(now, *addr),
                Bootstrap::Host { host, port } => hosts.push((host.clone(), *port)),
            }
        }
        log::info!(
            "dht: node {:?}, {loaded_nodes} saved nodes, {} bootstrap addresses",
            dht.id(),
            config.bootstrap.len()
        );
        DhtNode {
            dht,
            node_file: config.node_file.clone(),
            hosts,
            timer: None,
            save_at: now + SAVE_EVERY,
            saving: None,
            loaded_nodes,
        }
    }

    /// The resolve requests for the bootstrap host names (sent once, at start).
    pub(super) fn resolve_requests(&self) -> impl Iterator<Item = Action> + '_ {
        self.hosts.iter().enumerate().map(|(i, (host, port))| Action::ResolveInBackground {
            id: IoId(DHT_IO | i as u64),
            host: host.clone(),
            port: *port,
        })
    }

    /// The node file's bytes, if there is anything worth keeping (a run that found no good node does not
    /// overwrite the nodes of an earlier one).
    fn node_file_bytes(&self, now: Timestamp) -> Option<(PathBuf, Vec<u8>)> {
        let path = self.node_file.clone()?;
        (self.dht.good_nodes(now) > 0).then(|| (path, self.dht.save_nodes(now)))
    }

    fn save_in_background(&mut self, now: Timestamp) {
        if self.saving.as_ref().is_some_and(files::BackgroundWrite::is_finished) {
            if let Some(Err(e)) = self.saving.take().map(files::BackgroundWrite::wait) {
                log::warn!("dht: cannot save the node file: {e}");
            }
        }
        if self.saving.is_some() {
            return;
        }
        let Some((path, bytes)) = self.node_file_bytes(now) else {
            return;
        };
        match files::BackgroundWrite::start(path, bytes) {
            Ok(write) => self.saving = Some(write),
            Err(e) => log::warn!("dht: cannot start the node file writer: {e}"),
        }
    }

    /// Writes the node file now (the end of the run).
    pub(super) fn save_now(&mut self, now: Timestamp) {
        if let Some(write) = self.saving.take() {
            let _ = write.wait();
        }
        if let Some((path, bytes)) = self.node_file_bytes(now) {
            match files::ensure_parent(&path).and_then(|()| files::write_atomically(&path, &bytes)) {
                Ok(()) => log::info!("dht: saved {} to {}", self.dht.good_nodes(now), path.display()),
                Err(e) => log::warn!("dht: cannot save {}: {e}", path.display()),
            }
        }
    }
}

impl Engine {
    /// A KRPC datagram from the shared socket.
    pub(super) fn dht_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp) {
        let Some(node) = self.dht.as_mut() else {
            log::trace!("udp {from}: DHT message ignored: the DHT is off");
            return;
        };
        node.dht.handle_datagram(now, from, data);
        self.pump_dht(now);
    }

    /// A bootstrap host name resolved (or not).
    pub(super) fn dht_resolved(&mut self, id: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp) {
        let Some(node) = self.dht.as_mut() else {
            return;
        };
        let Some((host, port)) = node.hosts.get((id.0 & !DHT_IO) as usize).cloned() else {
            return;
        };
        match result {
            Ok(addrs) => {
                log::info!("dht: {host}:{port} is {addrs:?}");
                for addr in addrs {
                    node.dht.add_node(now, addr);
                }
                // Torrents that found nothing while there was nothing to ask try again now.
                for (_, t) in self.torrents.iter_mut() {
                    if t.dht.fruitless > 0 {
                        t.dht.next_at = None;
                    }
                }
            }
            Err(e) => log::info!("dht: cannot resolve {host}:{port}: {e}"),
        }
        self.pump_dht(now);
        self.dht_lookups(now);
    }

    pub(super) fn dht_timeout(&mut self, now: Timestamp) {
        let Some(node) = self.dht.as_mut() else {
            return;
        };
        match node.timer {
            // A later deadline was set after this entry was scheduled: it has its own entry.
            Some((_, at)) if at > now => return,
            _ => node.timer = None,
        }
        node.dht.handle_timeout(now);
        if now >= node.save_at {
            node.save_in_background(now);
            node.save_at = now + SAVE_EVERY;
        }
        self.pump_dht(now);
    }

    /// A peer's `port` message (BEP 5) and `yourip` (BEP 10) reach the DHT.
    pub(super) fn dht_from_peer(&mut self, slot: usize, now: Timestamp) {
        let Some(node) = self.dht.as_mut() else {
            return;
        };
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let Some(session) = conn.session.as_mut() else {
            return;
        };
        let mut acted = false;
        if let Some(port) = session.take_peer_dht_port() {
            node.dht.ping(now, SocketAddr::new(conn.addr.ip(), port));
            acted = true;
        }
        if !conn.your_ip_noted {
            if let Some(ip) = session.extended.as_ref().and_then(|e| e.your_ip) {
                conn.your_ip_noted = true;
                node.dht.vote_external_ip(now, ip.to_canonical());
                acted = true;
            }
        }
        if acted {
            self.pump_dht(now);
        }
    }

    /// Starts the lookups that are due (see the module doc for the schedule).
    pub(super) fn dht_lookups(&mut self, now: Timestamp) {
        let Some(node) = self.dht.as_mut() else {
            return;
        };
        let port = self.config.listen_port;
        let mut started = false;
        for (_, t) in self.torrents.iter_mut() {
            if !t.uses_dht() || t.dht.running || t.dht.next_at.is_some_and(|at| now < at) {
                continue;
            }
            let target = NodeId(t.info_hash.0);
            let ok = match port {
                Some(port) => node.dht.announce(now, target, port),
                None => node.dht.get_peers(now, target),
            };
            if ok {
                log::debug!("{}: DHT lookup started", t.name);
                if let Some(q) = self.trace.as_deref_mut() {
                    q.push(now, super::trace::TraceKind::DhtLookup { torrent: t.id });
                }
                t.dht.running = true;
                t.dht.found_in_run = 0;
                started = true;
            }
        }
        if started {
            self.pump_dht(now);
        }
    }

    /// Moves what the machine produced: datagrams to the driver, peers to torrents, and its next deadline
    /// to the wheel.
    pub(super) fn pump_dht(&mut self, now: Timestamp) {
        let Some(node) = self.dht.as_mut() else {
            return;
        };
        while let Some((to, data)) = node.dht.poll_transmit() {
            self.actions.push_back(Action::Datagram { to, data });
        }
        let mut added = false;
        while let Some(event) = node.dht.poll_event() {
            match event {
                DhtEvent::Peers { info_hash, peers } => {
                    let Some(t) = self.by_hash.get(&InfoHash(info_hash.0)).and_then(|id| self.torrents.get_mut(id.0))
                    else {
                        continue;
                    };
                    if !t.uses_dht() {
                        continue;
                    }
                    log::debug!("{}: DHT: {} peers", t.name, peers.len());
                    if let Some(q) = self.trace.as_deref_mut() {
                        q.push(now, super::trace::TraceKind::DhtPeers { torrent: t.id, count: peers.len() });
                    }
                    t.dht.found_in_run += peers.len();
                    t.dht.peers_found += peers.len() as u64;
                    for addr in peers {
                        added |= t.candidates.add(addr);
                    }
                }
                DhtEvent::LookupDone { info_hash, announced } => {
                    let Some(t) = self.by_hash.get(&InfoHash(info_hash.0)).and_then(|id| self.torrents.get_mut(id.0))
                    else {
                        continue;
                    };
                    if let Some(q) = self.trace.as_deref_mut() {
                        q.push(now, super::trace::TraceKind::DhtLookupDone { torrent: t.id, announced });
                    }
                    let seeding = t.is_seed();
                    let d = &mut t.dht;
                    d.running = false;
                    let fruitful = d.found_in_run > 0 || (seeding && announced > 0);
                    let wait = if fruitful {
                        d.fruitless = 0;
                        if seeding {
                            LOOKUP_EVERY_SEEDING
                        } else {
                            LOOKUP_EVERY_DOWNLOADING
                        }
                    } else {
                        d.fruitless += 1;
                        (RETRY_FIRST * 2u32.pow((d.fruitless - 1).min(5))).min(RETRY_MAX)
                    };
                    d.next_at = Some(now + wait);
                    log::debug!(
                        "{}: DHT lookup done: {} peers, announced to {announced}; next in {}s",
                        t.name,
                        d.found_in_run,
                        wait.as_secs()
                    );
                }
            }
        }
        let at = node.dht.poll_timeout();
        if node.timer.map_or(true, |(_, t)| at < t) {
            if let Some((old, _)) = node.timer.take() {
                self.timers.cancel(old);
            }
            node.timer = Some((self.timers.schedule(at.max(now), Wake::Dht), at));
        }
        if added {
            self.dial_more(now, false);
        }
    }

    /// Nodes in the DHT's routing tables (`None`: the DHT is off).
    pub fn dht_node_count(&self) -> Option<usize> {
        self.dht.as_ref().map(|n| n.dht.node_count())
    }

    /// Nodes in the routing tables and peers the DHT gave torrent `id` (for the status line).
    pub fn dht_status(&self, id: TorrentId) -> Option<(usize, u64)> {
        let node = self.dht.as_ref()?;
        let t = self.torrents.get(id.0)?;
        Some((node.dht.node_count(), t.dht.peers_found))
    }
}
