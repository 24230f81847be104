//! The mainline DHT as one sans-I/O machine (BEP 5, with BEP 32 IPv6 and BEP 42 node-id checks).
//!
//! Owns: our node id, the IPv4 and IPv6 routing tables (same id, BEP 32), the token secrets, the peer
//! store we serve, the per-source rate limit, the outstanding transactions, the running lookups, and the
//! datagrams and events waiting to be collected. Must not: touch a socket, the clock, OS entropy or files
//! (time comes in as `now`, unguessable values from the `Entropy` it is handed, fair choices from an
//! `Rng`, and `save_nodes`/`load_nodes` only encode and decode: the caller writes the file).
//!
//! Driving it (STYLE §7.3, as quinn-proto): feed `handle_datagram(now, from, bytes)` and
//! `handle_timeout(now)`; give commands `get_peers`, `announce`, `add_node`; then drain
//! `poll_transmit()` (datagrams to send), `poll_event()` (peers found, lookups done) and ask
//! `poll_timeout()` when to call `handle_timeout` next. Spurious `handle_timeout` calls do nothing.
//!
//! Timers (STYLE §7.7): each deadline lives in exactly one place and `poll_timeout` takes their minimum:
//! token rotation in `TokenSecrets`, bucket refresh in each `RoutingTable`, a lookup's query time-outs in
//! its `Lookup`, a ping's or announce's time-out in its `Pending` entry, the store sweep in `sweep_at`, and
//! the retry of a bootstrap that found too few nodes in `rebootstrap_at`.
//!
//! Unguessable values: transaction ids (4 bytes), the token secrets and a random node id come from
//! `Entropy`, never from the `Rng`: a guessable transaction id lets an off-path attacker forge answers.
//! A response is accepted only from the address its query went to.
//!
//! BEP 5: <https://www.bittorrent.org/beps/bep_0005.html>, BEP 32: <https://www.bittorrent.org/beps/bep_0032.html>,
//! BEP 42: <https://www.bittorrent.org/beps/bep_0042.html>, BEP 43: <https://www.bittorrent.org/beps/bep_0043.html>.

pub mod krpc;
pub mod limit;
pub mod lookup;
pub mod node_id;
pub mod routing;
pub mod store;
pub mod token;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use krpc::{Body, Query, Reply, Response, Token, Want, NODE4_LEN, NODE6_LEN};
use limit::{LimitConfig, RateLimit};
use lookup::{Lookup, LookupKind, ALPHA, QUERY_TIMEOUT};
use node_id::NodeId;
use routing::{Insert, NodeState, RoutingTable, Seen};
use store::PeerStore;
use token::TokenSecrets;

use crate::bencode::{self, DictEntries};
use crate::rng::{Entropy, Rng};
use crate::time::{secs, Timestamp};

/// Most nodes `save_nodes` writes.
pub const MAX_SAVED_NODES: usize = 300;
/// Most peers put in one `get_peers` answer (fits one datagram in either family).
const MAX_VALUES_SENT: usize = 50;
/// How often expired peers are dropped from the store.
const SWEEP_EVERY: Duration = secs(60);
/// Most bootstrap addresses remembered (for a re-bootstrap when the table empties).
const MAX_BOOTSTRAP: usize = 16;
/// Agreeing `ip` votes that decide our external address.
const IP_VOTES: u32 = 3;
/// Most distinct addresses voted for before a decision (a bound on what a liar can make us keep).
const MAX_VOTE_ADDRESSES: usize = 8;
/// A bootstrap that left fewer than K nodes known is retried after this long, doubled per failed
/// attempt up to [`REBOOTSTRAP_MAX`].
const REBOOTSTRAP_AFTER: Duration = secs(5);
const REBOOTSTRAP_MAX: Duration = secs(300);

/// Limits and identity. With the defaults the machine's heap is bounded by (heap bytes measured on
/// x86-64 by `tests/dht_memory.rs`): two routing tables (≤ 272 KB each at their deepest, which only ids
/// chosen to split every bucket reach; 33 KB after a million random nodes), the peer store (500
/// info-hashes × 50 peers: 1.05 MB full), the rate-limit table (4,096 sources: 205 KB full, empty at
/// start), 256 pending queries with as many queued pings (97 KB), 16 lookups of ≤ 64 candidates and
/// ≤ 1,024 peers remembered (≤ 44 KB each), and ≤ 256 queued datagrams of ≤ 1.5 KB (an answer is cut to
/// fit one). All together ≈ 3 MB at the very most; a new machine holds 3.4 KB.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Most lookups running at once (user lookups beyond it are refused, refreshes skipped).
    pub max_lookups: usize,
    /// Most outstanding queries.
    pub max_pending: usize,
    /// Most datagrams waiting in `poll_transmit` (answers beyond it are dropped).
    pub max_transmit: usize,
    pub store_hashes: usize,
    pub store_peers_per_hash: usize,
    pub limit: LimitConfig,
    /// Ask for both families' nodes (BEP 32 `want`), when the machine has IPv6.
    pub want_both: bool,
    /// Our `v` (client version).
    pub version: [u8; 4],
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_lookups: 16,
            max_pending: 256,
            max_transmit: 256,
            store_hashes: 500,
            store_peers_per_hash: 50,
            limit: LimitConfig::default(),
            want_both: false,
            version: *b"RL01",
        }
    }
}

/// What the machine tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Peers for `info_hash` from one answer, as they arrive.
    Peers { info_hash: NodeId, peers: Vec<SocketAddr> },
    /// A `get_peers`/`announce` lookup ended; `announced` is how many nodes we sent `announce_peer` to.
    LookupDone { info_hash: NodeId, announced: usize },
}

/// Counters for the status line and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub malformed: u64,
    pub rate_limited: u64,
    /// Responses matching no outstanding query (late, spoofed, or from the wrong address).
    pub unmatched: u64,
    pub answered: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Lookup(u64),
    Ping,
    Announce,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    to: SocketAddr,
    id: Option<NodeId>,
    purpose: Purpose,
    /// Lookup queries have their deadline in the `Lookup`; only pings and announces have one here.
    deadline: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    User { announce_port: Option<u16> },
    Refresh,
    Bootstrap,
}

struct Running {
    serial: u64,
    why: Why,
    lookup: Lookup,
}

/// How much the machine holds right now, counted in entries: what the bounds in [`Config`]'s doc are
/// about (read-only, for tests, the fuzz target and the status line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub pending: usize,
    pub transmit: usize,
    pub events: usize,
    pub lookups: usize,
    /// The most candidates any one lookup holds.
    pub lookup_candidates: usize,
    pub nodes4: usize,
    pub nodes6: usize,
    pub replacements: usize,
    pub buckets4: usize,
    pub buckets6: usize,
    pub store_hashes: usize,
    pub store_peers: usize,
    /// The most peers stored for one info-hash.
    pub store_most_peers: usize,
    pub rate_sources: usize,
    pub bootstrap: usize,
    pub votes: usize,
}

/// A saved node file did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    Bencode(bencode::BencodeError),
    MissingId,
    BadId,
    BadNodes,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Bencode(e) => write!(f, "DHT node file is not bencode: {e}"),
            LoadError::MissingId => write!(f, "DHT node file has no node id"),
            LoadError::BadId => write!(f, "DHT node file's node id is not 20 bytes"),
            LoadError::BadNodes => write!(f, "DHT node file's node list is not whole entries"),
        }
    }
}

impl std::error::Error for LoadError {}

/// What `load_nodes` gives back: our former id and the nodes that were good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedNodes {
    pub id: NodeId,
    pub nodes: Vec<(NodeId, SocketAddr)>,
}

/// Decodes `save_nodes` output: `d2:id20:…5:nodes<26n>6:nodes6<38n>e`. At most [`MAX_SAVED_NODES`] are kept.
pub fn load_nodes(bytes: &[u8]) -> Result<SavedNodes, LoadError> {
    bencode::whole_value_span(bytes).map_err(LoadError::Bencode)?;
    let (mut id, mut nodes) = (None, Vec::new());
    for entry in DictEntries::new(bytes, 0).map_err(LoadError::Bencode)? {
        let entry = entry.map_err(LoadError::Bencode)?;
        let value = &bytes[entry.value];
        let body = value.iter().position(|&b| b == b':').filter(|_| value[0].is_ascii_digit()).map(|c| &value[c + 1..]);
        match (&bytes[entry.key], body) {
            (b"id", Some(b)) => id = Some(NodeId::from_slice(b).ok_or(LoadError::BadId)?),
            (b"id", None) => return Err(LoadError::BadId),
            (b"nodes", Some(b)) if b.len() % NODE4_LEN == 0 => nodes.extend(krpc::compact_nodes(b, NODE4_LEN)),
            (b"nodes6", Some(b)) if b.len() % NODE6_LEN == 0 => nodes.extend(krpc::compact_nodes(b, NODE6_LEN)),
            (b"nodes" | b"nodes6", _) => return Err(LoadError::BadNodes),
            _ => {}
        }
    }
    nodes.truncate(MAX_SAVED_NODES);
    Ok(SavedNodes { id: id.ok_or(LoadError::MissingId)?, nodes })
}

pub struct Dht {
    config: Config,
    id: NodeId,
    table4: RoutingTable,
    table6: RoutingTable,
    tokens: TokenSecrets,
    store: PeerStore,
    limit: RateLimit,
    entropy: Entropy,
    rng: Rng,
    pending: HashMap<u32, Pending>,
    lookups: Vec<Running>,
    next_serial: u64,
    bootstrap: Vec<SocketAddr>,
    /// Nodes a former run saved (`add_saved_nodes`): asked by every lookup while the table is small, so a
    /// restart finds peers even when the bootstrap addresses are gone.
    saved: Vec<(NodeId, SocketAddr)>,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    sweep_at: Timestamp,
    /// Set when a bootstrap lookup ended with fewer than K nodes known: try again then.
    rebootstrap_at: Option<Timestamp>,
    /// Bootstraps in a row that left fewer than K nodes.
    rebootstrap_attempts: u32,
    /// Our external address once decided (BEP 42), from `set_external_ip` or from [`IP_VOTES`] answers
    /// agreeing.
    external: Option<IpAddr>,
    /// Votes from the `ip` field of answers to our queries (tx-matched, so not forgeable off-path).
    votes: Vec<(IpAddr, u32)>,
    stats: Stats,
    /// Reused buffers for compact node lists and values in answers.
    scratch4: Vec<u8>,
    scratch6: Vec<u8>,
    scratch_peers: Vec<SocketAddr>,
}

impl Dht {
    /// A node with `id` (a saved one, or BEP 42's for a known external address), or a random one.
    pub fn new(now: Timestamp, config: Config, id: Option<NodeId>, mut entropy: Entropy, rng: Rng) -> Self {
        let id = id.unwrap_or_else(|| NodeId::random(&mut entropy));
        Dht {
            config,
            id,
            table4: RoutingTable::new(id, true, now),
            table6: RoutingTable::new(id, false, now),
            tokens: TokenSecrets::new(now, &mut entropy),
            store: PeerStore::new(config.store_hashes, config.store_peers_per_hash),
            limit: RateLimit::new(config.limit),
            entropy,
            rng,
            pending: HashMap::new(),
            lookups: Vec::new(),
            next_serial: 0,
            bootstrap: Vec::new(),
            saved: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            sweep_at: now + SWEEP_EVERY,
            rebootstrap_at: None,
            rebootstrap_attempts: 0,
            external: None,
            votes: Vec::new(),
            stats: Stats::default(),
            scratch4: Vec::new(),
            scratch6: Vec::new(),
            scratch_peers: Vec::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Nodes in both tables (for the status line).
    pub fn node_count(&self) -> usize {
        self.table4.len() + self.table6.len()
    }
    pub fn good_nodes(&self, now: Timestamp) -> usize {
        self.table4.good_count(now) + self.table6.good_count(now)
    }
    /// Our external address, once known (BEP 42).
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.external
    }

    /// Our external address is `ip` (from a peer's `yourip`, or agreeing DHT answers). If our id does not
    /// match it under BEP 42, a new id is derived from it and both tables are rebuilt around the new id
    /// (nodes keep their place as far as the new buckets allow). Exempt (private) addresses change nothing.
    pub fn set_external_ip(&mut self, now: Timestamp, ip: IpAddr) {
        self.external = Some(ip);
        if node_id::is_exempt(ip) || node_id::id_matches_ip(&self.id, ip) {
            return;
        }
        let id = node_id::secure_id(ip, &mut self.entropy);
        log::debug!("dht: external address {ip}: node id now {id:?} (BEP 42)");
        self.id = id;
        for v4 in [true, false] {
            let old = if v4 { &self.table4 } else { &self.table6 };
            let mut table = RoutingTable::new(id, v4, now);
            for n in old.nodes() {
                let seen = if n.state(now) == NodeState::Good { Seen::Responded } else { Seen::Queried };
                table.heard_from(now, n.id, n.addr, seen);
            }
            if v4 {
                self.table4 = table;
            } else {
                self.table6 = table;
            }
        }
    }

    /// One report of our external address (a peer's `yourip`, BEP 10): it is decided, as from DHT answers,
    /// once [`IP_VOTES`] reports agree, so no single peer decides our node id.
    pub fn vote_external_ip(&mut self, now: Timestamp, ip: IpAddr) {
        self.vote(now, ip);
    }

    fn vote(&mut self, now: Timestamp, ip: IpAddr) {
        if self.external == Some(ip) {
            return;
        }
        match self.votes.iter().position(|v| v.0 == ip) {
            Some(i) => self.votes[i].1 += 1,
            None if self.votes.len() < MAX_VOTE_ADDRESSES => self.votes.push((ip, 1)),
            None => return,
        }
        if self.votes.iter().any(|v| v.0 == ip && v.1 >= IP_VOTES) {
            self.votes.clear();
            self.set_external_ip(now, ip);
        }
    }
    pub fn stored_peers(&self) -> usize {
        self.store.peer_count()
    }

    /// What the machine holds now, in entries (see [`Footprint`]).
    pub fn footprint(&self) -> Footprint {
        Footprint {
            pending: self.pending.len(),
            transmit: self.transmit.len(),
            events: self.events.len(),
            lookups: self.lookups.len(),
            lookup_candidates: self.lookups.iter().map(|r| r.lookup.candidate_count()).max().unwrap_or(0),
            nodes4: self.table4.len(),
            nodes6: self.table6.len(),
            replacements: self.table4.replacement_count() + self.table6.replacement_count(),
            buckets4: self.table4.bucket_count(),
            buckets6: self.table6.bucket_count(),
            store_hashes: self.store.hashes(),
            store_peers: self.store.peer_count(),
            store_most_peers: self.store.most_peers(),
            rate_sources: self.limit.tracked(),
            bootstrap: self.bootstrap.len(),
            votes: self.votes.len(),
        }
    }

    fn table(&mut self, addr: SocketAddr) -> &mut RoutingTable {
        if addr.is_ipv4() {
            &mut self.table4
        } else {
            &mut self.table6
        }
    }

    // ---- commands ----

    /// Bootstraps from `addr` (a router or a `--dht-bootstrap` address): it is asked in a `find_node`
    /// lookup for our own id, which fills the table. It is remembered (up to 16) for re-bootstraps.
    pub fn add_node(&mut self, now: Timestamp, addr: SocketAddr) {
        if !self.bootstrap.contains(&addr) && self.bootstrap.len() < MAX_BOOTSTRAP {
            self.bootstrap.push(addr);
        }
        self.bootstrap_with(now, &[(None, addr)]);
    }

    /// Pings `addr` (a peer's BEP 5 `port` message): if it answers, it enters the table.
    pub fn ping(&mut self, now: Timestamp, addr: SocketAddr) {
        if addr.port() != 0 && !self.pending.values().any(|p| p.to == addr) {
            self.send_query(now, addr, None, &Query::Ping, Purpose::Ping);
        }
    }

    /// Starts from nodes saved by a former run (`load_nodes`): they are asked first.
    pub fn add_saved_nodes(&mut self, now: Timestamp, nodes: &[(NodeId, SocketAddr)]) {
        for &node in nodes {
            if self.saved.len() < MAX_SAVED_NODES && !self.saved.contains(&node) {
                self.saved.push(node);
            }
        }
        let list: Vec<(Option<NodeId>, SocketAddr)> = nodes.iter().map(|&(id, a)| (Some(id), a)).collect();
        self.bootstrap_with(now, &list);
    }

    fn bootstrap_with(&mut self, now: Timestamp, nodes: &[(Option<NodeId>, SocketAddr)]) {
        let running = self.lookups.iter().position(|r| r.why == Why::Bootstrap);
        let i = match running {
            Some(i) => i,
            None => match self.start(now, self.id, LookupKind::FindNode, Why::Bootstrap) {
                Some(i) => i,
                None => return,
            },
        };
        for &(id, addr) in nodes {
            self.lookups[i].lookup.add_candidate(id, addr);
        }
        self.drive(now);
    }

    /// Looks for peers of `info_hash`; they come out as `Event::Peers`, then `Event::LookupDone`.
    /// Returns false when a lookup for it is already running or too many are.
    pub fn get_peers(&mut self, now: Timestamp, info_hash: NodeId) -> bool {
        self.user_lookup(now, info_hash, None)
    }

    /// `get_peers`, then `announce_peer` of `port` to the closest nodes that gave a token.
    pub fn announce(&mut self, now: Timestamp, info_hash: NodeId, port: u16) -> bool {
        self.user_lookup(now, info_hash, Some(port))
    }

    fn user_lookup(&mut self, now: Timestamp, info_hash: NodeId, announce_port: Option<u16>) -> bool {
        if self.lookups.iter().any(|r| matches!(r.why, Why::User { .. }) && r.lookup.target() == info_hash) {
            return false;
        }
        let started = self.start(now, info_hash, LookupKind::GetPeers, Why::User { announce_port }).is_some();
        self.drive(now);
        started
    }

    fn start(&mut self, now: Timestamp, target: NodeId, kind: LookupKind, why: Why) -> Option<usize> {
        if self.lookups.len() >= self.config.max_lookups {
            return None;
        }
        let mut lookup = Lookup::new(target, kind);
        for table in [&self.table4, &self.table6] {
            for (id, addr) in table.closest(now, &target).iter() {
                lookup.add_candidate(Some(id), addr);
            }
        }
        if self.node_count() < routing::K {
            for &addr in &self.bootstrap {
                lookup.add_candidate(None, addr);
            }
            for &(id, addr) in &self.saved {
                lookup.add_candidate(Some(id), addr);
            }
        }
        self.next_serial += 1;
        self.lookups.push(Running { serial: self.next_serial, why, lookup });
        Some(self.lookups.len() - 1)
    }

    /// Encodes our id and up to [`MAX_SAVED_NODES`] good nodes, for the caller to write atomically.
    pub fn save_nodes(&self, now: Timestamp) -> Vec<u8> {
        let mut nodes = Vec::new();
        let mut nodes6 = Vec::new();
        let mut n = 0;
        for node in self.table4.nodes().chain(self.table6.nodes()) {
            if n >= MAX_SAVED_NODES || node.state(now) != NodeState::Good {
                continue;
            }
            let out = if node.addr.is_ipv4() { &mut nodes } else { &mut nodes6 };
            out.extend_from_slice(&node.id.0);
            krpc::put_compact_peer(node.addr, out);
            n += 1;
        }
        let mut out = b"d2:id20:".to_vec();
        out.extend_from_slice(&self.id.0);
        for (key, list) in [(&b"5:nodes"[..], nodes), (&b"6:nodes6"[..], nodes6)] {
            out.extend_from_slice(key);
            out.extend_from_slice(list.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(&list);
        }
        out.push(b'e');
        out
    }

    // ---- inputs ----

    /// One datagram from `from`. Malformed ones are counted and dropped; queries beyond the sender's rate
    /// are dropped unanswered.
    pub fn handle_datagram(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        let msg = match krpc::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                log::trace!("dht: dropped a datagram from {from}: {e}");
                return;
            }
        };
        match msg.body {
            Body::Query { id, query, want, read_only } => {
                if !self.limit.allow(now, from.ip()) {
                    self.stats.rate_limited += 1;
                    return;
                }
                self.answer(now, from, msg.tx.as_bytes(), id, query, want, read_only);
            }
            Body::Response(r) => {
                if self.on_response(now, from, msg.tx.as_bytes(), r) {
                    if let Some(ip) = msg.ip {
                        self.vote(now, ip.ip());
                    }
                }
            }
            Body::Error { .. } => self.on_error(now, from, msg.tx.as_bytes()),
        }
        self.drive(now);
    }

    fn queue(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        if self.transmit.len() < self.config.max_transmit {
            self.transmit.push_back((to, bytes));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &mut self,
        now: Timestamp,
        from: SocketAddr,
        tx: &[u8],
        id: NodeId,
        query: Query,
        want: Want,
        read_only: bool,
    ) {
        let insert =
            if read_only { Insert::Ignored } else { self.table(from).heard_from(now, id, from, Seen::Queried) };
        let version = self.config.version;
        let mut out = Vec::with_capacity(256);
        let (n4, n6) = if want.n4 || want.n6 { (want.n4, want.n6) } else { (from.is_ipv4(), from.is_ipv6()) };
        let mut nodes4 = std::mem::take(&mut self.scratch4);
        let mut nodes6 = std::mem::take(&mut self.scratch6);
        let mut values = std::mem::take(&mut self.scratch_peers);
        nodes4.clear();
        nodes6.clear();
        values.clear();
        let mut nodes_for = |target: &NodeId, dht: &Dht| {
            if n4 {
                dht.table4.closest(now, target).write_compact(&mut nodes4);
            }
            if n6 {
                dht.table6.closest(now, target).write_compact(&mut nodes6);
            }
        };
        match query {
            Query::Ping => {
                krpc::encode_response(tx, &self.id, &Reply::default(), Some(from), Some(&version), &mut out);
            }
            Query::FindNode { target } => {
                nodes_for(&target, self);
                let reply =
                    Reply { nodes: n4.then_some(&nodes4[..]), nodes6: n6.then_some(&nodes6[..]), ..Reply::default() };
                krpc::encode_response(tx, &self.id, &reply, Some(from), Some(&version), &mut out);
            }
            Query::GetPeers { info_hash } => {
                nodes_for(&info_hash, self);
                self.store.peers(now, &info_hash, from.is_ipv4(), MAX_VALUES_SENT, &mut values);
                let token = self.tokens.make(from.ip());
                let reply = Reply {
                    nodes: n4.then_some(&nodes4[..]),
                    nodes6: n6.then_some(&nodes6[..]),
                    token: Some(&token),
                    values: &values,
                };
                krpc::encode_response(tx, &self.id, &reply, Some(from), Some(&version), &mut out);
                // Both node lists and a full swarm of IPv6 peers come to ≈1.7 KB: drop peers until the
                // answer fits one datagram (each costs its length prefix and compact form).
                if out.len() > krpc::MAX_DATAGRAM {
                    let each = if from.is_ipv4() { 2 + 6 } else { 3 + 18 };
                    let keep = values.len().saturating_sub((out.len() - krpc::MAX_DATAGRAM).div_ceil(each));
                    out.clear();
                    let reply = Reply { values: &values[..keep], ..reply };
                    krpc::encode_response(tx, &self.id, &reply, Some(from), Some(&version), &mut out);
                }
            }
            Query::AnnouncePeer { info_hash, port, implied_port, token } => {
                if self.tokens.check(from.ip(), token.as_bytes()) {
                    let port = if implied_port { from.port() } else { port };
                    self.store.announce(now, info_hash, SocketAddr::new(from.ip(), port));
                    krpc::encode_response(tx, &self.id, &Reply::default(), Some(from), Some(&version), &mut out);
                } else {
                    krpc::encode_error(tx, 203, "bad token", Some(&version), &mut out);
                }
            }
            Query::Unknown => krpc::encode_error(tx, 204, "method unknown", Some(&version), &mut out),
        }
        self.scratch4 = nodes4;
        self.scratch6 = nodes6;
        self.scratch_peers = values;
        self.stats.answered += 1;
        self.queue(from, out);
        // A new node that only queried us is pinged: its answer proves the address is real.
        if insert == Insert::Added {
            self.send_query(now, from, Some(id), &Query::Ping, Purpose::Ping);
        }
        self.ping_if_asked(now, insert);
    }

    fn ping_if_asked(&mut self, now: Timestamp, insert: Insert) {
        if let Insert::Cached { ping: Some((id, addr)) } = insert {
            self.send_query(now, addr, Some(id), &Query::Ping, Purpose::Ping);
        }
    }

    /// The outstanding query `tx` names, if it went to `from`.
    fn take_pending(&mut self, from: SocketAddr, tx: &[u8]) -> Option<Pending> {
        let key = u32::from_be_bytes(tx.try_into().ok()?);
        match self.pending.get(&key) {
            Some(p) if p.to == from => self.pending.remove(&key),
            _ => None,
        }
    }

    /// Whether the response answered one of our queries.
    fn on_response(&mut self, now: Timestamp, from: SocketAddr, tx: &[u8], r: Response<'_>) -> bool {
        let Some(p) = self.take_pending(from, tx) else {
            self.stats.unmatched += 1;
            return false;
        };
        let insert = self.table(from).heard_from(now, r.id, from, Seen::Responded);
        self.ping_if_asked(now, insert);
        let Purpose::Lookup(serial) = p.purpose else { return true };
        let own = self.id;
        let Some(run) = self.lookups.iter_mut().find(|l| l.serial == serial) else { return true };
        let nodes = krpc::compact_nodes(r.nodes, NODE4_LEN)
            .chain(krpc::compact_nodes(r.nodes6, NODE6_LEN))
            .filter(|(id, _)| *id != own);
        run.lookup.on_response(from, r.id, r.token, nodes, r.values.iter());
        true
    }

    fn on_error(&mut self, _now: Timestamp, from: SocketAddr, tx: &[u8]) {
        let Some(p) = self.take_pending(from, tx) else {
            self.stats.unmatched += 1;
            return;
        };
        if let Purpose::Lookup(serial) = p.purpose {
            if let Some(run) = self.lookups.iter_mut().find(|l| l.serial == serial) {
                run.lookup.on_failure(from);
            }
        }
    }

    fn send_query(&mut self, now: Timestamp, to: SocketAddr, id: Option<NodeId>, query: &Query, purpose: Purpose) {
        if self.pending.len() >= self.config.max_pending {
            return;
        }
        let tx = loop {
            let t = self.entropy.next_u32();
            if !self.pending.contains_key(&t) {
                break t;
            }
        };
        let want = Want { n4: self.config.want_both, n6: self.config.want_both };
        let mut out = Vec::with_capacity(128);
        krpc::encode_query(&tx.to_be_bytes(), &self.id, query, want, Some(&self.config.version), &mut out);
        let deadline = match purpose {
            Purpose::Lookup(_) => None,
            Purpose::Ping | Purpose::Announce => Some(now + QUERY_TIMEOUT),
        };
        self.pending.insert(tx, Pending { to, id, purpose, deadline });
        self.queue(to, out);
    }

    /// Moves every lookup along: sends what it wants sent, reports failures to the tables, emits peers,
    /// announces and ends finished ones.
    fn drive(&mut self, now: Timestamp) {
        let mut i = 0;
        while i < self.lookups.len() {
            let serial = self.lookups[i].serial;
            while self.pending.len() + ALPHA <= self.config.max_pending {
                let Some((id, addr)) = self.lookups[i].lookup.poll_query(now) else { break };
                let target = self.lookups[i].lookup.target();
                let query = match self.lookups[i].lookup.kind() {
                    LookupKind::FindNode => Query::FindNode { target },
                    LookupKind::GetPeers => Query::GetPeers { info_hash: target },
                };
                self.send_query(now, addr, id, &query, Purpose::Lookup(serial));
            }
            while let Some((id, addr)) = self.lookups[i].lookup.poll_failed() {
                self.table(addr).failed(now, id, addr);
                self.pending.retain(|_, p| !(p.purpose == Purpose::Lookup(serial) && p.to == addr));
            }
            let target = self.lookups[i].lookup.target();
            let mut peers = Vec::new();
            while let Some(p) = self.lookups[i].lookup.poll_peer() {
                peers.push(p);
            }
            if !peers.is_empty() && matches!(self.lookups[i].why, Why::User { .. }) {
                self.events.push_back(Event::Peers { info_hash: target, peers });
            }
            if !self.lookups[i].lookup.is_done() {
                i += 1;
                continue;
            }
            let run = self.lookups.remove(i);
            self.pending.retain(|_, p| p.purpose != Purpose::Lookup(serial));
            if run.why == Why::Bootstrap {
                if self.node_count() < routing::K && !self.bootstrap.is_empty() {
                    let delay = REBOOTSTRAP_AFTER * 2u32.pow(self.rebootstrap_attempts.min(6));
                    self.rebootstrap_at = Some(now + delay.min(REBOOTSTRAP_MAX));
                    self.rebootstrap_attempts += 1;
                } else {
                    self.rebootstrap_attempts = 0;
                }
            }
            if let Why::User { announce_port } = run.why {
                let mut announced = 0;
                if let Some(port) = announce_port {
                    let targets: Vec<(NodeId, SocketAddr, Token)> = run.lookup.announce_targets().collect();
                    for (id, addr, token) in targets {
                        let q = Query::AnnouncePeer { info_hash: target, port, implied_port: false, token };
                        self.send_query(now, addr, Some(id), &q, Purpose::Announce);
                        announced += 1;
                    }
                }
                self.events.push_back(Event::LookupDone { info_hash: target, announced });
            }
        }
    }

    /// Does whatever is due at `now`: time-outs, token rotation, bucket refresh, store expiry.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.tokens.handle_timeout(now, &mut self.entropy);
        let expired: Vec<u32> =
            self.pending.iter().filter(|(_, p)| p.deadline.is_some_and(|d| d <= now)).map(|(k, _)| *k).collect();
        for k in expired {
            if let Some(p) = self.pending.remove(&k) {
                if let (Purpose::Ping, Some(id)) = (p.purpose, p.id) {
                    self.table(p.to).failed(now, id, p.to);
                }
            }
        }
        for run in &mut self.lookups {
            run.lookup.handle_timeout(now);
        }
        for v4 in [true, false] {
            loop {
                let rng = &mut self.rng;
                let table = if v4 { &mut self.table4 } else { &mut self.table6 };
                let empty = table.is_empty();
                let Some(target) = table.due_refresh(now, &mut |o| rng.fill(o)) else { break };
                if empty {
                    // Nothing to refresh from: start over from the bootstrap addresses, once.
                    if v4 && !self.bootstrap.is_empty() && !self.lookups.iter().any(|r| r.why == Why::Bootstrap) {
                        let addrs: Vec<(Option<NodeId>, SocketAddr)> =
                            self.bootstrap.iter().map(|&a| (None, a)).collect();
                        self.bootstrap_with(now, &addrs);
                    }
                    continue;
                }
                self.start(now, target, LookupKind::FindNode, Why::Refresh);
            }
        }
        if self.rebootstrap_at.is_some_and(|t| now >= t) {
            self.rebootstrap_at = None;
            if self.node_count() < routing::K {
                let addrs: Vec<(Option<NodeId>, SocketAddr)> = self.bootstrap.iter().map(|&a| (None, a)).collect();
                self.bootstrap_with(now, &addrs);
            }
        }
        if now >= self.sweep_at {
            self.store.expire(now);
            self.sweep_at = now + SWEEP_EVERY;
        }
        self.drive(now);
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Timestamp {
        let mut t = self.tokens.poll_timeout().min(self.sweep_at).min(self.table4.poll_timeout());
        t = t.min(self.table6.poll_timeout());
        if let Some(r) = self.rebootstrap_at {
            t = t.min(r);
        }
        for p in self.pending.values() {
            if let Some(d) = p.deadline {
                t = t.min(d);
            }
        }
        for run in &self.lookups {
            if let Some(d) = run.lookup.poll_timeout() {
                t = t.min(d);
            }
        }
        t
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
