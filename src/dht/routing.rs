//! The routing table of one address family (BEP 5 "Routing Table"; BEP 32 keeps a second one for IPv6
//! with the same id).
//!
//! Owns: which nodes we know, in K-buckets that split only where our own id falls, each with a
//! replacement cache; every node's state (good / questionable / bad); when each bucket is due for refresh.
//! Must not: send anything or read the clock: it reports which node to ping (`Insert::Cached`) and which
//! bucket to refresh (`due_refresh`), and the `Dht` machine does the talking.
//!
//! Node states, as BEP 5 defines them: *good* if it answered one of our queries within 15 minutes, or has
//! answered at least once and queried us within 15 minutes; *bad* after [`MAX_FAILURES`] queries in a row
//! went unanswered (or one, for a node that never answered: it may be a spoofed source); *questionable*
//! otherwise. Only nodes that have answered are handed to others. A full bucket takes a new node in place of a bad one;
//! otherwise the newcomer waits in the replacement cache and the least recently seen questionable node is
//! pinged; when a node turns bad the freshest replacement takes its place.
//!
//! Memory: a bucket holds at most [`K`] nodes and [`REPLACEMENTS`] replacements, in vectors allocated
//! once at that capacity; there are at most 160 buckets. So the table's largest size is
//! 160 × (8 + 8) × `size_of::<Node>()` (104 bytes on 64-bit targets) + 160 bucket headers ≈ 275 KB
//! ([`RoutingTable::MAX_BYTES`]; a test checks it). A real table, with ids spread at random, has about
//! log2(N / 8) ≈ 20 buckets for N million nodes, so ≈ 35 KB.
//!
//! BEP 5: <https://www.bittorrent.org/beps/bep_0005.html>; BEP 32: <https://www.bittorrent.org/beps/bep_0032.html>.

use std::net::SocketAddr;
use std::time::Duration;

use super::krpc;
use super::node_id::{self, NodeId};
use crate::time::{secs, Timestamp};

pub const K: usize = 8;
pub const REPLACEMENTS: usize = 8;
/// How long an answer (or a query after one answer) keeps a node good.
pub const GOOD_FOR: Duration = secs(15 * 60);
/// A bucket with no change for this long is refreshed.
pub const REFRESH_AFTER: Duration = secs(15 * 60);
/// Unanswered queries in a row after which a node is bad.
pub const MAX_FAILURES: u8 = 3;
/// A questionable node is pinged at most this often.
const PING_EVERY: Duration = secs(60);

#[derive(Clone, Copy, Debug)]
pub struct Node {
    pub id: NodeId,
    pub addr: SocketAddr,
    last_response: Option<Timestamp>,
    last_query: Option<Timestamp>,
    last_ping: Option<Timestamp>,
    pub failures: u8,
    /// Whether the id matches the address under BEP 42 (or the address is exempt).
    pub trusted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Good,
    Questionable,
    Bad,
}

impl Node {
    fn new(id: NodeId, addr: SocketAddr) -> Self {
        Node {
            id,
            addr,
            last_response: None,
            last_query: None,
            last_ping: None,
            failures: 0,
            trusted: node_id::id_matches_ip(&id, addr.ip()),
        }
    }

    pub fn state(&self, now: Timestamp) -> NodeState {
        // A node that never answered is bad at its first failure: it may be a spoofed source.
        if self.failures >= MAX_FAILURES || (self.last_response.is_none() && self.failures > 0) {
            return NodeState::Bad;
        }
        let recent = |t: Option<Timestamp>| t.is_some_and(|t| now.saturating_since(t) < GOOD_FOR);
        if recent(self.last_response) || (self.last_response.is_some() && recent(self.last_query)) {
            NodeState::Good
        } else {
            NodeState::Questionable
        }
    }

    fn last_seen(&self) -> Timestamp {
        self.last_response.max(self.last_query).unwrap_or(Timestamp::ZERO)
    }

    fn saw(&mut self, now: Timestamp, seen: Seen) {
        match seen {
            Seen::Responded => {
                self.last_response = Some(now);
                self.failures = 0;
            }
            Seen::Queried => self.last_query = Some(now),
        }
    }
}

/// How we heard from a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// It answered one of our queries.
    Responded,
    /// It sent us a query.
    Queried,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    Added,
    Updated,
    /// It took the place of a bad node.
    Replaced,
    /// The bucket is full of good or questionable nodes: it waits in the replacement cache; `ping` is the
    /// least recently seen questionable node, to be pinged (its failure makes room).
    Cached {
        ping: Option<(NodeId, SocketAddr)>,
    },
    /// Our own id, the wrong family, or a known id at another address.
    Ignored,
}

#[derive(Clone, Debug)]
struct Bucket {
    nodes: Vec<Node>,
    replacements: Vec<Node>,
    last_changed: Timestamp,
}

impl Bucket {
    fn new(now: Timestamp) -> Self {
        Bucket { nodes: Vec::with_capacity(K), replacements: Vec::with_capacity(REPLACEMENTS), last_changed: now }
    }
}

/// The K nodes closest to a target that a table knows, nearest first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Closest {
    len: usize,
    items: [Option<([u8; 20], NodeId, SocketAddr)>; K],
}

impl Closest {
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.items[..self.len].iter().flatten().map(|&(_, id, addr)| (id, addr))
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn offer(&mut self, dist: [u8; 20], id: NodeId, addr: SocketAddr) {
        let mut at = self.len;
        while at > 0 && self.items[at - 1].is_some_and(|(d, _, _)| d > dist) {
            at -= 1;
        }
        if at >= K {
            return;
        }
        let end = self.len.min(K - 1);
        for i in (at..end).rev() {
            self.items[i + 1] = self.items[i];
        }
        self.items[at] = Some((dist, id, addr));
        self.len = (self.len + 1).min(K);
    }
    /// Appends compact node infos (26 or 38 bytes each).
    pub fn write_compact(&self, out: &mut Vec<u8>) {
        for (id, addr) in self.iter() {
            out.extend_from_slice(&id.0);
            krpc::put_compact_peer(addr, out);
        }
    }
}

// The bound the module doc states.
const _: () = assert!(RoutingTable::MAX_BYTES < 300_000);

pub struct RoutingTable {
    own: NodeId,
    v4: bool,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// The most bytes a table can hold on the heap, its vectors at full capacity (see the module doc).
    pub const MAX_BYTES: usize =
        160 * ((K + REPLACEMENTS) * std::mem::size_of::<Node>() + std::mem::size_of::<Bucket>());

    pub fn new(own: NodeId, v4: bool, now: Timestamp) -> Self {
        RoutingTable { own, v4, buckets: vec![Bucket::new(now)] }
    }

    pub fn own_id(&self) -> NodeId {
        self.own
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        self.own.shared_prefix(id).min(self.buckets.len() - 1)
    }

    /// Records that `id` at `addr` answered us or queried us, adding it if there is room.
    pub fn heard_from(&mut self, now: Timestamp, id: NodeId, addr: SocketAddr, seen: Seen) -> Insert {
        if id == self.own || addr.is_ipv4() != self.v4 || addr.port() == 0 {
            return Insert::Ignored;
        }
        loop {
            let last = self.buckets.len() - 1;
            let b = self.bucket_of(&id);
            let bucket = &mut self.buckets[b];
            if let Some(n) = bucket.nodes.iter_mut().find(|n| n.id == id) {
                if n.addr != addr {
                    return Insert::Ignored;
                }
                n.saw(now, seen);
                if seen == Seen::Responded {
                    bucket.last_changed = now;
                }
                return Insert::Updated;
            }
            if bucket.nodes.len() < K {
                let mut n = Node::new(id, addr);
                n.saw(now, seen);
                bucket.replacements.retain(|r| r.id != id);
                bucket.nodes.push(n);
                bucket.last_changed = now;
                return Insert::Added;
            }
            if let Some(bad) = bucket.nodes.iter_mut().find(|n| n.state(now) == NodeState::Bad) {
                let mut n = Node::new(id, addr);
                n.saw(now, seen);
                *bad = n;
                bucket.replacements.retain(|r| r.id != id);
                bucket.last_changed = now;
                return Insert::Replaced;
            }
            if b == last && last < 159 {
                self.split(now);
                continue;
            }
            // The replacement cache: update, else add (dropping the least recently seen when full).
            if let Some(r) = bucket.replacements.iter_mut().find(|r| r.id == id) {
                if r.addr == addr {
                    r.saw(now, seen);
                }
            } else {
                if bucket.replacements.len() == REPLACEMENTS {
                    let oldest = (0..REPLACEMENTS).min_by_key(|&i| bucket.replacements[i].last_seen()).unwrap_or(0);
                    bucket.replacements.swap_remove(oldest);
                }
                let mut n = Node::new(id, addr);
                n.saw(now, seen);
                bucket.replacements.push(n);
            }
            let ping = bucket
                .nodes
                .iter_mut()
                .filter(|n| n.state(now) == NodeState::Questionable)
                .filter(|n| n.last_ping.map_or(true, |t| now.saturating_since(t) >= PING_EVERY))
                .min_by_key(|n| n.last_seen())
                .map(|n| {
                    n.last_ping = Some(now);
                    (n.id, n.addr)
                });
            return Insert::Cached { ping };
        }
    }

    /// Splits the last bucket (the one that holds our own id) in two.
    fn split(&mut self, now: Timestamp) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let mut next = Bucket::new(now);
        let old = &mut self.buckets[depth];
        let deeper = |n: &Node| own.shared_prefix(&n.id) > depth;
        next.nodes.extend(old.nodes.iter().filter(|n| deeper(n)).copied());
        old.nodes.retain(|n| !deeper(n));
        next.replacements.extend(old.replacements.iter().filter(|n| deeper(n)).copied());
        old.replacements.retain(|n| !deeper(n));
        // Replacements can now fill the room the move made.
        while old.nodes.len() < K {
            let Some(r) = old.replacements.pop() else { break };
            old.nodes.push(r);
        }
        // Exactly one more slot, not a doubling: the bound below counts one header per bucket.
        self.buckets.reserve_exact(1);
        self.buckets.push(next);
    }

    /// A query to `id` at `addr` went unanswered. A node that turns bad gives way to the freshest
    /// replacement.
    pub fn failed(&mut self, now: Timestamp, id: NodeId, addr: SocketAddr) {
        if addr.is_ipv4() != self.v4 {
            return;
        }
        let b = self.bucket_of(&id);
        let bucket = &mut self.buckets[b];
        if let Some(i) = bucket.nodes.iter().position(|n| n.id == id && n.addr == addr) {
            let n = &mut bucket.nodes[i];
            n.failures = n.failures.saturating_add(1);
            if n.state(now) == NodeState::Bad {
                let best = (0..bucket.replacements.len())
                    .max_by_key(|&r| (bucket.replacements[r].last_response, bucket.replacements[r].last_seen()));
                if let Some(r) = best {
                    bucket.nodes[i] = bucket.replacements.swap_remove(r);
                    bucket.last_changed = now;
                }
            }
        } else if let Some(r) = bucket.replacements.iter().position(|n| n.id == id && n.addr == addr) {
            bucket.replacements.swap_remove(r);
        }
    }

    /// The up-to-K closest nodes to `target` that have answered us and are not bad (a node that only
    /// queried us may be a spoofed source, so it is not handed on).
    pub fn closest(&self, now: Timestamp, target: &NodeId) -> Closest {
        let mut c = Closest::default();
        for n in self.buckets.iter().flat_map(|b| &b.nodes) {
            if n.last_response.is_some() && n.state(now) != NodeState::Bad {
                c.offer(n.id.distance(target), n.id, n.addr);
            }
        }
        c
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.buckets.iter().flat_map(|b| &b.nodes)
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Nodes waiting in the replacement caches.
    pub fn replacement_count(&self) -> usize {
        self.buckets.iter().map(|b| b.replacements.len()).sum()
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn good_count(&self, now: Timestamp) -> usize {
        self.nodes().filter(|n| n.state(now) == NodeState::Good).count()
    }

    /// When the next bucket falls due for refresh.
    pub fn poll_timeout(&self) -> Timestamp {
        self.buckets.iter().map(|b| b.last_changed + REFRESH_AFTER).min().unwrap_or(Timestamp::ZERO + REFRESH_AFTER)
    }

    /// A bucket due for refresh, if any: marks it refreshed now and returns a random target inside it (for
    /// a `find_node` lookup). The last bucket covers every depth from its index on; its target shares
    /// exactly that many bits with our id.
    pub fn due_refresh(&mut self, now: Timestamp, fill: &mut dyn FnMut(&mut [u8])) -> Option<NodeId> {
        let i = self.buckets.iter().position(|b| now >= b.last_changed + REFRESH_AFTER)?;
        self.buckets[i].last_changed = now;
        Some(self.own.random_at_depth(i, fill))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from(((0x0a00_0000u32 + i).to_be_bytes(), 6881))
    }

    /// An id sharing exactly `prefix` bits with `own`, distinct per `salt`.
    fn id_at(own: &NodeId, prefix: usize, salt: u8) -> NodeId {
        let mut rng = Rng::seeded(u64::from(salt) * 1000 + prefix as u64);
        own.random_at_depth(prefix, &mut |o| rng.fill(o))
    }

    #[test]
    fn splits_only_where_our_id_falls() {
        let t = Timestamp::from_secs(1);
        let own = NodeId([0x55; 20]);
        let mut table = RoutingTable::new(own, true, t);
        // 8 far nodes (prefix 0) fill the single bucket.
        for i in 0..8 {
            assert_eq!(table.heard_from(t, id_at(&own, 0, i), addr(u32::from(i)), Seen::Responded), Insert::Added);
        }
        assert_eq!(table.bucket_count(), 1);
        // A ninth far node forces a split; the far bucket stays full, so it is cached.
        let r = table.heard_from(t, id_at(&own, 0, 100), addr(100), Seen::Responded);
        assert!(matches!(r, Insert::Cached { .. }), "{r:?}");
        assert_eq!(table.bucket_count(), 2);
        // More far nodes never split again: the far bucket does not hold our id.
        for i in 101..120 {
            table.heard_from(t, id_at(&own, 0, i), addr(u32::from(i)), Seen::Responded);
        }
        assert_eq!(table.bucket_count(), 2);
        assert_eq!(table.len(), 8);
        // Close nodes split deeper.
        for depth in 1..40 {
            for s in 0..3 {
                table.heard_from(
                    t,
                    id_at(&own, depth, s),
                    addr(1000 + depth as u32 * 10 + u32::from(s)),
                    Seen::Responded,
                );
            }
        }
        assert!(table.bucket_count() > 10 && table.bucket_count() <= 160);
        for b in &table.buckets {
            assert!(b.nodes.len() <= K && b.replacements.len() <= REPLACEMENTS);
        }
        assert_eq!(table.heard_from(t, own, addr(9), Seen::Responded), Insert::Ignored);
        let six: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert_eq!(table.heard_from(t, id_at(&own, 3, 9), six, Seen::Responded), Insert::Ignored);
    }

    #[test]
    fn bad_nodes_give_way_to_replacements_and_states_follow_bep5() {
        let t = Timestamp::from_secs(1);
        let own = NodeId([0; 20]);
        let mut table = RoutingTable::new(own, true, t);
        // Fill the far half (prefix 0) after one split.
        let far: Vec<NodeId> = (0..9).map(|i| id_at(&own, 0, i)).collect();
        for (i, id) in far.iter().enumerate().take(8) {
            table.heard_from(t, *id, addr(i as u32), Seen::Responded);
        }
        let r = table.heard_from(t, far[8], addr(8), Seen::Responded);
        assert_eq!(r, Insert::Cached { ping: None }, "all are good: nothing to ping");
        let n = |table: &RoutingTable, id: NodeId| table.nodes().find(|n| n.id == id).copied();
        assert_eq!(n(&table, far[0]).unwrap().state(t), NodeState::Good);
        // 15 minutes later every node is questionable; a query from one after it answered makes it good.
        let later = t + GOOD_FOR;
        assert_eq!(n(&table, far[0]).unwrap().state(later), NodeState::Questionable);
        table.heard_from(later, far[1], addr(1), Seen::Queried);
        assert_eq!(n(&table, far[1]).unwrap().state(later), NodeState::Good);
        // A node that only ever queried us is questionable.
        let mut t2 = RoutingTable::new(own, true, t);
        t2.heard_from(t, far[0], addr(0), Seen::Queried);
        assert_eq!(n(&t2, far[0]).unwrap().state(t), NodeState::Questionable);
        // A newcomer when questionable nodes exist: cached, with the least recently seen one to ping.
        let newcomer = id_at(&own, 0, 50);
        let Insert::Cached { ping: Some((pid, paddr)) } = table.heard_from(later, newcomer, addr(50), Seen::Responded)
        else {
            panic!("expected a ping")
        };
        assert_ne!(pid, far[1], "the good one is not pinged");
        // It fails MAX_FAILURES times: bad, and the freshest replacement (the newcomer) takes its place.
        for _ in 0..MAX_FAILURES {
            table.failed(later, pid, paddr);
        }
        assert!(n(&table, pid).is_none());
        assert!(n(&table, newcomer).is_some());
        assert_eq!(table.len(), 8);
        // A known id from a different address is ignored (no hijack).
        assert_eq!(table.heard_from(later, far[1], addr(77), Seen::Responded), Insert::Ignored);
    }

    #[test]
    fn closest_is_sorted_and_refresh_comes_due() {
        let t = Timestamp::from_secs(1);
        let mut rng = Rng::seeded(5);
        let own = NodeId([7; 20]);
        let mut table = RoutingTable::new(own, true, t);
        let mut all = Vec::new();
        for i in 0..500 {
            let mut id = [0u8; 20];
            rng.fill(&mut id);
            if table.heard_from(t, NodeId(id), addr(i), Seen::Responded) != Insert::Ignored {
                all.push(NodeId(id));
            }
        }
        let target = NodeId([0x99; 20]);
        let c = table.closest(t, &target);
        assert_eq!(c.len(), K);
        let ids: Vec<NodeId> = c.iter().map(|(id, _)| id).collect();
        let mut sorted = ids.clone();
        sorted.sort_by_key(|id| id.distance(&target));
        assert_eq!(ids, sorted);
        let in_table: Vec<NodeId> = table.nodes().map(|n| n.id).collect();
        let mut expect = in_table.clone();
        expect.sort_by_key(|id| id.distance(&target));
        assert_eq!(ids, expect[..K].to_vec());
        let mut out = Vec::new();
        c.write_compact(&mut out);
        assert_eq!(out.len(), K * krpc::NODE4_LEN);
        // Refresh.
        assert_eq!(table.poll_timeout(), t + REFRESH_AFTER);
        assert!(table.due_refresh(t + secs(60), &mut |o| rng.fill(o)).is_none());
        let mut due = 0;
        while let Some(target) = table.due_refresh(t + REFRESH_AFTER, &mut |o| rng.fill(o)) {
            assert!(own.shared_prefix(&target) < table.bucket_count() + 1);
            due += 1;
        }
        assert_eq!(due, table.bucket_count());
        assert_eq!(table.poll_timeout(), t + REFRESH_AFTER + REFRESH_AFTER);
    }

    #[test]
    fn memory_bound_holds_at_the_deepest_table() {
        assert!(std::mem::size_of::<Node>() <= 104, "Node grew: {}", std::mem::size_of::<Node>());
        // An attacker choosing ids to force every split still cannot pass the bound.
        let t = Timestamp::from_secs(1);
        let own = NodeId([0x3c; 20]);
        let mut table = RoutingTable::new(own, true, t);
        let mut i = 0;
        for depth in 0..160 {
            for s in 0..20 {
                i += 1;
                table.heard_from(t, id_at(&own, depth, s), addr(i), Seen::Responded);
            }
        }
        assert!(table.bucket_count() <= 160);
        let bytes: usize = table
            .buckets
            .iter()
            .map(|b| (b.nodes.capacity() + b.replacements.capacity()) * std::mem::size_of::<Node>())
            .sum::<usize>()
            + table.buckets.capacity() * std::mem::size_of::<Bucket>();
        assert!(bytes <= RoutingTable::MAX_BYTES, "{bytes} > {}", RoutingTable::MAX_BYTES);
    }
}
