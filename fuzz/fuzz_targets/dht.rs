//! The DHT (BEP 5/32/42): `dht::krpc::decode` and `dht::load_nodes` on the whole input, then one `Dht`
//! machine driven by the input as a script: datagrams from a pool of eight addresses (IPv4 and IPv6,
//! exempt and public), answers to the queries it sent (so lookups, votes and announces are reached, which
//! random bytes never could: transaction ids come from `Entropy`), commands, and time moving forward.
//!
//! Input: byte 0 = flags (bit 0: a small `Config`, so every bound is reached; bit 1: `want` both families),
//! then ops. An op is one byte, `kind = op & 7` and `arg = op >> 3`, and its operands:
//!   0, 5  raw datagram from pool[arg]: 2-byte little-endian length, the bytes
//!   1, 6  a query from pool[arg]: a shape byte (method, `want`, `ro`, repeat count), an id byte, an operand
//!   2, 7  an answer to the arg-th remembered query we sent, from where it went: a shape byte, then operands
//!   3     time: one byte (× 20 ms, or minutes above 200, or 16 minutes at 255), then `handle_timeout`
//!   4     a command (get_peers, announce, add_node, ping, set_external_ip, save/load, saved nodes)
//!
//! Invariants: never a panic; a decoded message re-encodes to the same message; `load_nodes` keeps at most
//! `MAX_SAVED_NODES`; everything the machine sends is one valid KRPC datagram of at most `MAX_DATAGRAM`
//! bytes; the `Config` bounds hold after every op (pending, transmit queue, lookups and their candidates,
//! routing tables, store, rate-limit table); after `handle_timeout(now)` nothing is due at `now` (no busy
//! loop); `save_nodes` output loads back.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use rill::dht::krpc::{
    self, compact_nodes, decode, encode_error, encode_query, encode_response, Body, Query, Reply, Token, Want,
    MAX_DATAGRAM, MAX_TOKEN_LEN, MAX_TX_LEN, MAX_VALUES, NODE4_LEN, NODE6_LEN,
};
use rill::dht::limit::LimitConfig;
use rill::dht::lookup::MAX_CANDIDATES;
use rill::dht::node_id::{secure_id, NodeId};
use rill::dht::routing::{K, REPLACEMENTS};
use rill::dht::{load_nodes, Config, Dht, Event, MAX_SAVED_NODES};
use rill::rng::{Entropy, Rng};
use rill::time::{millis, secs, Timestamp};

const POOL: usize = 8;

fn pool(i: usize) -> SocketAddr {
    match i % POOL {
        0 => SocketAddr::from(([10, 0, 0, 1], 6881)),
        1 => SocketAddr::from(([10, 0, 0, 2], 6881)),
        2 => SocketAddr::from(([127, 0, 0, 1], 7000)),
        3 => SocketAddr::from(([124, 31, 75, 21], 6881)),
        4 => SocketAddr::from(([8, 8, 8, 8], 53)),
        5 => SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), 6881),
        6 => SocketAddr::new(IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 2]), 6881),
        _ => SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, 3]), 6881),
    }
}

fn pool_index(a: SocketAddr) -> Option<usize> {
    (0..POOL).find(|&i| pool(i).ip() == a.ip())
}

/// A node id from one byte: below 0x80 a plain pattern (untrusted at a public address), above it one that
/// BEP 42 allows for the address it goes with.
fn node_id(b: u8, at: SocketAddr) -> NodeId {
    if b < 0x80 {
        NodeId([b; 20])
    } else {
        secure_id(at.ip(), &mut Entropy::seeded(u64::from(b)))
    }
}

/// A node address from one byte: a pool address with one of 32 ports, so the script's network stays closed.
fn node_addr(b: u8) -> SocketAddr {
    let mut a = pool(usize::from(b >> 5));
    a.set_port(6881 + u16::from(b & 31));
    a
}

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// A query we sent, as the script may answer it.
struct Sent {
    to: SocketAddr,
    tx: Vec<u8>,
}

struct Run {
    d: Dht,
    config: Config,
    now: Timestamp,
    sent: Vec<Sent>,
    /// The last token our answers gave each pool address.
    tokens: [Option<Token>; POOL],
    /// Our own datagrams, to echo back.
    echoes: Vec<(SocketAddr, Vec<u8>)>,
    next_tx: u32,
    /// Our id when the op began (a vote inside it can change it).
    id_before: NodeId,
}

impl Run {
    fn drain(&mut self) {
        let f = self.d.footprint();
        assert!(f.transmit <= self.config.max_transmit, "{f:?}");
        while let Some((to, bytes)) = self.d.poll_transmit() {
            assert!(bytes.len() <= MAX_DATAGRAM, "we sent {} bytes to {to}", bytes.len());
            assert_ne!(to.port(), 0);
            let msg = decode(&bytes).unwrap_or_else(|e| panic!("we sent a datagram we cannot decode: {e}"));
            match msg.body {
                Body::Query { id, .. } => {
                    // Queued before a BEP 42 id change in the same op, or after it.
                    assert!(id == self.d.id() || id == self.id_before, "{id:?}");
                    assert_eq!(msg.tx.as_bytes().len(), 4);
                    if self.sent.len() == 64 {
                        self.sent.remove(0);
                    }
                    self.sent.push(Sent { to, tx: msg.tx.as_bytes().to_vec() });
                }
                Body::Response(r) => {
                    assert_eq!(msg.ip, Some(to), "BEP 42: an answer says where we saw the asker");
                    if let (Some(t), Some(i)) = (r.token, pool_index(to)) {
                        self.tokens[i] = Token::new(t);
                    }
                }
                Body::Error { .. } => {}
            }
            if self.echoes.len() < 16 {
                self.echoes.push((to, bytes));
            }
        }
        while let Some(e) = self.d.poll_event() {
            if let Event::Peers { peers, .. } = e {
                assert!(!peers.is_empty() && peers.iter().all(|p| p.port() != 0));
            }
        }
    }

    fn check(&self) {
        let c = &self.config;
        let f = self.d.footprint();
        assert!(f.pending <= c.max_pending, "{f:?}");
        assert!(f.lookups <= c.max_lookups, "{f:?}");
        assert!(f.lookup_candidates <= MAX_CANDIDATES, "{f:?}");
        assert!(f.buckets4 <= 160 && f.buckets6 <= 160, "{f:?}");
        assert!(f.nodes4 <= f.buckets4 * K && f.nodes6 <= f.buckets6 * K, "{f:?}");
        assert!(f.replacements <= (f.buckets4 + f.buckets6) * REPLACEMENTS, "{f:?}");
        assert!(f.store_hashes <= c.store_hashes, "{f:?}");
        assert!(f.store_most_peers <= c.store_peers_per_hash, "{f:?}");
        assert!(f.store_peers <= c.store_hashes * c.store_peers_per_hash, "{f:?}");
        assert!(f.rate_sources <= c.limit.max_sources, "{f:?}");
        assert!(f.bootstrap <= 16 && f.votes <= 8, "{f:?}");
        assert_eq!(self.d.node_count(), f.nodes4 + f.nodes6);
    }

    fn send(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.d.handle_datagram(self.now, from, bytes);
    }

    /// Op 1: a query from `from`.
    fn query(&mut self, from: SocketAddr, input: &mut Input) {
        let (Some(shape), Some(idb), Some(operand)) = (input.byte(), input.byte(), input.byte()) else { return };
        let id = node_id(idb, from);
        let target = NodeId([operand; 20]);
        let query = match shape & 3 {
            0 => Query::Ping,
            1 => Query::FindNode { target },
            2 => Query::GetPeers { info_hash: target },
            _ => {
                let token = match self.tokens[pool_index(from).unwrap_or(0)] {
                    Some(t) if operand & 1 == 0 => t,
                    _ => Token::new(&[operand; 8]).unwrap_or_else(|| unreachable!()),
                };
                let port = u16::from(idb) << 8 | u16::from(operand);
                Query::AnnouncePeer {
                    info_hash: NodeId([operand >> 4; 20]),
                    port: port.max(1),
                    implied_port: operand & 2 != 0,
                    token,
                }
            }
        };
        let want = Want { n4: shape & 4 != 0, n6: shape & 8 != 0 };
        let mut out = Vec::new();
        let repeat = [1, 1, 1, 1, 2, 8, 64, 200][usize::from(shape >> 5)];
        for i in 0..repeat {
            self.next_tx = self.next_tx.wrapping_add(1);
            out.clear();
            // Repeated announces name one port after another (a full swarm from one address).
            let query = match query {
                Query::AnnouncePeer { info_hash, port, implied_port, token } => {
                    Query::AnnouncePeer { info_hash, port: port.wrapping_add(i).max(1), implied_port, token }
                }
                q => q,
            };
            encode_query(&self.next_tx.to_be_bytes(), &id, &query, want, Some(b"FZ01"), &mut out);
            if shape & 16 != 0 {
                // BEP 43 read-only: `ro` goes in `a`.
                let at = out.windows(5).position(|w| w == b"1:ad2").map_or(0, |p| p + 4);
                out.splice(at..at, b"2:roi1e".iter().copied());
            }
            self.send(from, &out);
            self.drain();
        }
    }

    /// Op 2: an answer to a query we sent.
    fn answer(&mut self, pick: usize, input: &mut Input) {
        let Some(shape) = input.byte() else { return };
        if self.sent.is_empty() {
            return;
        }
        let Sent { to, tx } = &self.sent[pick % self.sent.len()];
        let (mut from, tx) = (*to, tx.clone());
        let mut out = Vec::new();
        match shape & 3 {
            0 => {
                // A raw `r` dictionary body.
                let n = usize::from(input.byte().unwrap_or(0));
                out.extend_from_slice(b"d1:rd");
                out.extend_from_slice(input.bytes(n));
                out.extend_from_slice(b"e1:t");
                out.extend_from_slice(format!("{}:", tx.len()).as_bytes());
                out.extend_from_slice(&tx);
                out.extend_from_slice(b"1:y1:re");
            }
            2 => encode_error(&tx, 201 + i64::from(shape >> 2), "fuzz", None, &mut out),
            _ => {
                if shape & 3 == 3 {
                    // The right transaction id from the wrong address.
                    from = pool(usize::from(shape >> 2));
                }
                let id = node_id(input.byte().unwrap_or(0), from);
                let count = usize::from(shape >> 2 & 7);
                let (mut nodes, mut nodes6, mut values) = (Vec::new(), Vec::new(), Vec::new());
                for b in input.bytes(count).to_vec() {
                    let a = node_addr(b);
                    let list = if a.is_ipv4() { &mut nodes } else { &mut nodes6 };
                    list.extend_from_slice(&node_id(b, a).0);
                    krpc::put_compact_peer(a, list);
                }
                if shape & 0x20 != 0 {
                    let n = usize::from(input.byte().unwrap_or(0)) % (MAX_VALUES + 1);
                    for b in input.bytes(n).to_vec() {
                        values.push(node_addr(b));
                    }
                }
                let token = (shape & 0x40 != 0).then_some(&b"tok-fuzz"[..]);
                let ip = (shape & 0x80 != 0).then(|| pool(usize::from(input.byte().unwrap_or(0))));
                let reply = Reply {
                    nodes: (!nodes.is_empty()).then_some(&nodes[..]),
                    nodes6: (!nodes6.is_empty()).then_some(&nodes6[..]),
                    token,
                    values: &values,
                };
                encode_response(&tx, &id, &reply, ip, None, &mut out);
            }
        }
        self.send(from, &out);
    }

    /// Op 3: time moves on.
    fn advance(&mut self, b: u8) {
        self.now = self.now
            + match b {
                255 => secs(16 * 60),
                200..=254 => secs(60 * u64::from(b - 199)),
                _ => millis(20 * u64::from(b)),
            };
        self.d.handle_timeout(self.now);
        assert!(self.d.poll_timeout() > self.now, "handle_timeout left work due at {}", self.now);
    }

    /// Op 4: a command.
    fn command(&mut self, c: u8, input: &mut Input) {
        let b = input.byte().unwrap_or(0);
        let now = self.now;
        match c % 8 {
            0 => {
                self.d.get_peers(now, NodeId([b; 20]));
            }
            1 => {
                self.d.announce(now, NodeId([b; 20]), u16::from(b) + 1);
            }
            2 => self.d.add_node(now, node_addr(b)),
            3 => self.d.ping(now, node_addr(b)),
            4 => self.d.set_external_ip(now, pool(usize::from(b)).ip()),
            5 => {
                let saved = load_nodes(&self.d.save_nodes(now)).expect("our own node file loads");
                assert_eq!(saved.id, self.d.id());
                assert!(saved.nodes.len() <= MAX_SAVED_NODES);
                assert_eq!(saved.nodes.len(), self.d.good_nodes(now).min(MAX_SAVED_NODES));
                if b & 1 == 0 {
                    self.d.add_saved_nodes(now, &saved.nodes);
                }
            }
            6 => {
                if let Ok(saved) = load_nodes(input.bytes(usize::from(b))) {
                    self.d.add_saved_nodes(now, &saved.nodes);
                }
            }
            _ => {
                // One of our own datagrams comes back from where it went.
                if !self.echoes.is_empty() {
                    let (to, bytes) = self.echoes.swap_remove(usize::from(b) % self.echoes.len());
                    self.send(to, &bytes);
                }
            }
        }
    }
}

/// Decoding on the whole input: a message re-encodes to the same message.
fn decode_round_trip(data: &[u8]) {
    let Ok(msg) = decode(data) else { return };
    let tx = msg.tx.as_bytes();
    assert!(!tx.is_empty() && tx.len() <= MAX_TX_LEN);
    let mut out = Vec::new();
    match msg.body {
        Body::Query { id, query, want, .. } => {
            if let Query::AnnouncePeer { token, implied_port, port, .. } = query {
                assert!(!token.as_bytes().is_empty() && token.as_bytes().len() <= MAX_TOKEN_LEN);
                assert!(implied_port || port != 0);
            }
            encode_query(tx, &id, &query, want, msg.version, &mut out);
            let again = decode(&out).expect("our encoding of a decoded query decodes");
            assert_eq!(again.body, Body::Query { id, query, want, read_only: false });
        }
        Body::Response(r) => {
            assert_eq!(r.nodes.len() % NODE4_LEN, 0);
            assert_eq!(r.nodes6.len() % NODE6_LEN, 0);
            let values: Vec<SocketAddr> = r.values.iter().collect();
            assert!(values.len() <= MAX_VALUES);
            let _ = compact_nodes(r.nodes, NODE4_LEN).count() + compact_nodes(r.nodes6, NODE6_LEN).count();
            let reply = Reply { nodes: Some(r.nodes), nodes6: Some(r.nodes6), token: r.token, values: &values };
            encode_response(tx, &r.id, &reply, msg.ip, msg.version, &mut out);
            let again = decode(&out).expect("our encoding of a decoded response decodes");
            let Body::Response(a) = again.body else { panic!("not a response") };
            assert_eq!((a.id, a.nodes, a.nodes6, a.token), (r.id, r.nodes, r.nodes6, r.token));
            assert_eq!(a.values.iter().collect::<Vec<_>>(), values);
            assert_eq!(again.ip, msg.ip);
        }
        Body::Error { code, message } => {
            if let Ok(text) = std::str::from_utf8(message) {
                encode_error(tx, code, text, msg.version, &mut out);
                assert_eq!(decode(&out).expect("our error decodes").body, msg.body);
            }
        }
    }
    if !out.is_empty() {
        assert_eq!(decode(&out).map(|m| m.tx), Ok(msg.tx));
    }
}

fuzz_target!(|data: &[u8]| {
    decode_round_trip(data);
    if let Ok(saved) = load_nodes(data) {
        assert!(saved.nodes.len() <= MAX_SAVED_NODES);
    }

    let mut input = Input { data };
    let flags = input.byte().unwrap_or(0);
    let mut config = Config { want_both: flags & 2 != 0, ..Config::default() };
    if flags & 1 != 0 {
        config.max_lookups = 2;
        config.max_pending = 8;
        config.max_transmit = 8;
        config.store_hashes = 3;
        config.store_peers_per_hash = 4;
        config.limit = LimitConfig { per_second: 2, burst: 4, max_sources: 3 };
    }
    let now = Timestamp::from_secs(1);
    let d = Dht::new(now, config, None, Entropy::seeded(u64::from(flags)), Rng::seeded(7));
    let id_before = d.id();
    let mut run =
        Run { d, config, now, sent: Vec::new(), tokens: [None; POOL], echoes: Vec::new(), next_tx: 0, id_before };
    run.check();
    while let Some(op) = input.byte() {
        run.id_before = run.d.id();
        let arg = usize::from(op >> 3);
        match op & 7 {
            0 | 5 => {
                let len = input.bytes(2);
                let len = usize::from(u16::from_le_bytes([
                    len.first().copied().unwrap_or(0),
                    len.get(1).copied().unwrap_or(0),
                ]));
                let bytes = input.bytes(len % (MAX_DATAGRAM + 100)).to_vec();
                run.send(pool(arg), &bytes);
            }
            1 | 6 => run.query(pool(arg), &mut input),
            2 | 7 => run.answer(arg, &mut input),
            3 => run.advance(input.byte().unwrap_or(0)),
            _ => run.command(op >> 3, &mut input),
        }
        run.drain();
        run.check();
    }
});
