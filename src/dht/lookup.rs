//! One iterative lookup (BEP 5 / Kademlia): `find_node` or `get_peers` toward a target.
//!
//! Owns: the candidate list (sorted by XOR distance, bounded), which candidates are in flight and their
//! per-query deadlines ([`QUERY_TIMEOUT`]), the peers found (an output queue, so they reach the torrent as
//! they arrive, not at the end), the tokens of the closest answerers (for `announce_peer`), and when the
//! lookup is done. Must not: send, encode, know transaction ids, or touch the routing table: the `Dht`
//! machine polls queries out of it, feeds responses in, and reports failures to the table.
//!
//! Rules: at most [`ALPHA`] queries in flight, always to the closest candidate not yet asked. The lookup
//! ends when the [`K`] closest candidates that count have answered (or nothing is left to ask). A node
//! counts when its id matches its address under BEP 42 (exempt ranges always do) and when the id it
//! answered with is the one we looked for; others are still asked (they may know peers) but cannot end
//! the lookup, nor get our announce. Bootstrap candidates (id unknown) are asked first and never count.
//! A query unanswered after [`QUERY_TIMEOUT`] fails; a late answer is ignored.
//!
//! BEP 5: <https://www.bittorrent.org/beps/bep_0005.html>; BEP 42: <https://www.bittorrent.org/beps/bep_0042.html>.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::krpc::Token;
use super::node_id::{self, NodeId};
use super::routing::K;
use crate::time::{secs, Timestamp};

pub const ALPHA: usize = 3;
pub const QUERY_TIMEOUT: Duration = secs(2);
/// Most candidates kept; the farthest not-yet-asked one goes first when full.
pub const MAX_CANDIDATES: usize = 64;
/// Most queries one lookup sends in all (a bound on a lookup among hostile nodes).
pub const MAX_QUERIES: usize = 200;
/// Most distinct peers remembered for de-duplication.
const MAX_PEERS_SEEN: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupKind {
    FindNode,
    GetPeers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    InFlight { deadline: Timestamp },
    Answered,
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    /// `None` for a bootstrap address whose id we do not know yet.
    id: Option<NodeId>,
    addr: SocketAddr,
    state: State,
    counts: bool,
    token: Option<Token>,
}

pub struct Lookup {
    target: NodeId,
    kind: LookupKind,
    candidates: Vec<Candidate>,
    in_flight: usize,
    sent: usize,
    peers: VecDeque<SocketAddr>,
    peers_seen: Vec<SocketAddr>,
    failed: VecDeque<(NodeId, SocketAddr)>,
}

impl Lookup {
    pub fn new(target: NodeId, kind: LookupKind) -> Self {
        Lookup {
            target,
            kind,
            candidates: Vec::with_capacity(MAX_CANDIDATES),
            in_flight: 0,
            sent: 0,
            peers: VecDeque::new(),
            peers_seen: Vec::new(),
            failed: VecDeque::new(),
        }
    }

    pub fn target(&self) -> NodeId {
        self.target
    }
    pub fn kind(&self) -> LookupKind {
        self.kind
    }
    /// Candidates held (at most [`MAX_CANDIDATES`]).
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    fn key(&self, c: &Candidate) -> (bool, [u8; 20]) {
        match c.id {
            None => (false, [0; 20]),
            Some(id) => (true, id.distance(&self.target)),
        }
    }

    /// Adds a node to ask (from the routing table, a response's `nodes`, or a bootstrap address with
    /// `id` `None`). Duplicates (by address or id) are ignored; when full, the farthest unasked or failed
    /// candidate makes room, or the newcomer is dropped if it is the farthest.
    pub fn add_candidate(&mut self, id: Option<NodeId>, addr: SocketAddr) {
        if addr.port() == 0 || self.candidates.iter().any(|c| c.addr == addr || (id.is_some() && c.id == id)) {
            return;
        }
        let new = Candidate {
            id,
            addr,
            state: State::Fresh,
            counts: id.is_some_and(|id| node_id::id_matches_ip(&id, addr.ip())),
            token: None,
        };
        let key = self.key(&new);
        if self.candidates.len() >= MAX_CANDIDATES {
            let Some(far) = self.candidates.iter().rposition(|c| matches!(c.state, State::Fresh | State::Failed))
            else {
                return;
            };
            if self.key(&self.candidates[far]) <= key {
                return;
            }
            self.candidates.remove(far);
        }
        let at = self.candidates.partition_point(|c| self.key(c) <= key);
        self.candidates.insert(at, new);
    }

    /// The next node to ask, marked in flight until `now + QUERY_TIMEOUT`; `None` if α are in flight,
    /// nobody is left worth asking, or the lookup is done.
    pub fn poll_query(&mut self, now: Timestamp) -> Option<(Option<NodeId>, SocketAddr)> {
        if self.in_flight >= ALPHA || self.sent >= MAX_QUERIES {
            return None;
        }
        let mut answered = 0;
        let mut pick = None;
        for (i, c) in self.candidates.iter().enumerate() {
            match c.state {
                State::Answered if c.counts => {
                    answered += 1;
                    if answered >= K {
                        break;
                    }
                }
                State::Fresh => {
                    pick = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let c = &mut self.candidates[pick?];
        c.state = State::InFlight { deadline: now + QUERY_TIMEOUT };
        self.in_flight += 1;
        self.sent += 1;
        Some((c.id, c.addr))
    }

    /// Whether the lookup has ended: the K closest counting candidates answered with nothing closer
    /// pending, or nothing left to ask and nothing in flight.
    pub fn is_done(&self) -> bool {
        let mut answered = 0;
        for c in &self.candidates {
            match c.state {
                State::Answered if c.counts => {
                    answered += 1;
                    if answered >= K {
                        return true;
                    }
                }
                State::Fresh if self.sent < MAX_QUERIES => return false,
                State::InFlight { .. } => return false,
                _ => {}
            }
        }
        true
    }

    fn in_flight_at(&self, addr: SocketAddr) -> Option<usize> {
        self.candidates.iter().position(|c| c.addr == addr && matches!(c.state, State::InFlight { .. }))
    }

    /// Whether a query to `addr` is in flight (so a response from it belongs here).
    pub fn is_waiting_for(&self, addr: SocketAddr) -> bool {
        self.in_flight_at(addr).is_some()
    }

    /// An answer from `addr` with id `id`: its token, the nodes it gave, the peers it knows.
    pub fn on_response(
        &mut self,
        addr: SocketAddr,
        id: NodeId,
        token: Option<&[u8]>,
        nodes: impl Iterator<Item = (NodeId, SocketAddr)>,
        peers: impl Iterator<Item = SocketAddr>,
    ) {
        let Some(i) = self.in_flight_at(addr) else { return };
        self.in_flight -= 1;
        let mut c = self.candidates.remove(i);
        c.counts = c.id == Some(id) && node_id::id_matches_ip(&id, addr.ip());
        c.id = Some(id);
        c.state = State::Answered;
        c.token = token.and_then(Token::new);
        let key = self.key(&c);
        let at = self.candidates.partition_point(|x| self.key(x) <= key);
        self.candidates.insert(at, c);
        for (nid, naddr) in nodes {
            if nid != id {
                self.add_candidate(Some(nid), naddr);
            }
        }
        if self.kind == LookupKind::GetPeers {
            for p in peers {
                if p.port() != 0 && !self.peers_seen.contains(&p) {
                    if self.peers_seen.len() < MAX_PEERS_SEEN {
                        self.peers_seen.push(p);
                    }
                    self.peers.push_back(p);
                }
            }
        }
    }

    /// A query to `addr` failed early (an error reply).
    pub fn on_failure(&mut self, addr: SocketAddr) {
        if let Some(i) = self.in_flight_at(addr) {
            self.fail(i);
        }
    }

    fn fail(&mut self, i: usize) {
        let c = &mut self.candidates[i];
        c.state = State::Failed;
        self.in_flight -= 1;
        if let Some(id) = c.id {
            self.failed.push_back((id, c.addr));
        }
    }

    /// Fails every query past its deadline.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        for i in 0..self.candidates.len() {
            if matches!(self.candidates[i].state, State::InFlight { deadline } if deadline <= now) {
                self.fail(i);
            }
        }
    }

    /// The earliest query deadline.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.candidates
            .iter()
            .filter_map(|c| match c.state {
                State::InFlight { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// A peer found, in the order they arrived.
    pub fn poll_peer(&mut self) -> Option<SocketAddr> {
        self.peers.pop_front()
    }

    /// A node (with a known id) whose query failed, for the routing table.
    pub fn poll_failed(&mut self) -> Option<(NodeId, SocketAddr)> {
        self.failed.pop_front()
    }

    /// The up-to-K closest trusted answerers that gave a token: where `announce_peer` goes.
    pub fn announce_targets(&self) -> impl Iterator<Item = (NodeId, SocketAddr, Token)> + '_ {
        self.candidates
            .iter()
            .filter(|c| c.state == State::Answered && c.counts)
            .take(K)
            .filter_map(|c| Some((c.id?, c.addr, c.token?)))
    }

    /// The K closest answerers that count, nearest first (for tests and refresh).
    pub fn closest_answered(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.candidates.iter().filter(|c| c.state == State::Answered && c.counts).take(K).filter_map(|c| c.id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BinaryHeap, HashMap};

    use super::*;
    use crate::dht::routing::{RoutingTable, Seen};
    use crate::rng::Rng;
    use crate::time::millis;

    /// A simulated network: every node a routing table answering from its own table; `holders` know peers
    /// for the target; `dead` nodes never answer.
    struct Net {
        tables: Vec<RoutingTable>,
        addrs: HashMap<SocketAddr, usize>,
        dead: Vec<bool>,
        holders: Vec<bool>,
    }

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6881))
    }

    fn build(n: usize, seed: u64, dead_every: usize) -> (Net, Rng) {
        let mut rng = Rng::seeded(seed);
        let t = Timestamp::ZERO;
        let ids: Vec<NodeId> = (0..n)
            .map(|_| {
                let mut b = [0u8; 20];
                rng.fill(&mut b);
                NodeId(b)
            })
            .collect();
        let mut tables: Vec<RoutingTable> = ids.iter().map(|id| RoutingTable::new(*id, true, t)).collect();
        for (i, table) in tables.iter_mut().enumerate() {
            // Every node knows 60 random others: enough to fill its near buckets partly.
            for _ in 0..60 {
                let j = rng.below(n as u64) as usize;
                if j != i {
                    table.heard_from(t, ids[j], addr(j), Seen::Responded);
                }
            }
            // And its true neighbours, as a converged DHT would.
            let mut by_dist: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            by_dist.sort_by_key(|&j| ids[j].distance(&ids[i]));
            for &j in by_dist.iter().take(16) {
                table.heard_from(t, ids[j], addr(j), Seen::Responded);
            }
        }
        let addrs = (0..n).map(|i| (addr(i), i)).collect();
        let dead = (0..n).map(|i| dead_every > 0 && i % dead_every == 3).collect();
        (Net { tables, addrs, dead, holders: vec![false; n] }, rng)
    }

    struct Outcome {
        done_at: Timestamp,
        first_peer_at: Option<Timestamp>,
        peers: Vec<SocketAddr>,
        queries: usize,
        lookup: Lookup,
    }

    fn run(net: &Net, rng: &mut Rng, start: usize, target: NodeId, kind: LookupKind) -> Outcome {
        let mut lookup = Lookup::new(target, kind);
        for (id, a) in net.tables[start].closest(Timestamp::ZERO, &target).iter() {
            lookup.add_candidate(Some(id), a);
        }
        // Pending answers: (arrival time, from).
        let mut pending: BinaryHeap<std::cmp::Reverse<(Timestamp, SocketAddr)>> = BinaryHeap::new();
        let mut now = Timestamp::ZERO;
        let (mut first_peer_at, mut peers, mut queries) = (None, Vec::new(), 0);
        let holder_peer = SocketAddr::from(([192, 0, 2, 1], 51413));
        for _ in 0..100_000 {
            while let Some((_, to)) = lookup.poll_query(now) {
                queries += 1;
                let j = net.addrs[&to];
                if !net.dead[j] {
                    pending.push(std::cmp::Reverse((now + millis(20 + rng.below(200)), to)));
                }
            }
            while let Some(p) = lookup.poll_peer() {
                first_peer_at.get_or_insert(now);
                peers.push(p);
            }
            while lookup.poll_failed().is_some() {}
            if lookup.is_done() {
                return Outcome { done_at: now, first_peer_at, peers, queries, lookup };
            }
            // Advance to the next event: an answer or a deadline.
            let next_answer = pending.peek().map(|r| r.0 .0);
            let next_deadline = lookup.poll_timeout();
            now = match (next_answer, next_deadline) {
                (Some(a), Some(d)) => a.min(d),
                (Some(a), None) => a,
                (None, Some(d)) => d,
                (None, None) => panic!("stalled: nothing pending, not done"),
            };
            lookup.handle_timeout(now);
            while pending.peek().is_some_and(|r| r.0 .0 <= now) {
                let std::cmp::Reverse((_, from)) = pending.pop().unwrap();
                let j = net.addrs[&from];
                let table = &net.tables[j];
                let closest = table.closest(now, &target);
                let values: Vec<SocketAddr> = if net.holders[j] { vec![holder_peer] } else { vec![] };
                lookup.on_response(from, table.own_id(), Some(b"tok"), closest.iter(), values.into_iter());
            }
        }
        panic!("lookup did not end in 100,000 steps");
    }

    fn true_closest(net: &Net, target: &NodeId, skip_dead: bool) -> Vec<NodeId> {
        let mut ids: Vec<(NodeId, usize)> = net.tables.iter().enumerate().map(|(i, t)| (t.own_id(), i)).collect();
        ids.retain(|(_, i)| !skip_dead || !net.dead[*i]);
        ids.sort_by_key(|(id, _)| id.distance(target));
        ids.iter().take(K).map(|(id, _)| *id).collect()
    }

    #[test]
    fn find_node_converges_on_the_true_closest() {
        let (net, mut rng) = build(300, 11, 0);
        for round in 0..5 {
            let mut t = [0u8; 20];
            rng.fill(&mut t);
            let target = NodeId(t);
            let out = run(&net, &mut rng, round * 17, target, LookupKind::FindNode);
            let found: Vec<NodeId> = out.lookup.closest_answered().collect();
            assert_eq!(found, true_closest(&net, &target, false), "round {round}");
            assert!(out.queries < 80, "{} queries", out.queries);
            assert!(out.done_at < Timestamp::from_secs(5));
        }
    }

    #[test]
    fn get_peers_streams_peers_before_the_end_and_dead_nodes_do_not_stall() {
        let (mut net, mut rng) = build(400, 12, 7);
        let mut t = [0u8; 20];
        rng.fill(&mut t);
        let target = NodeId(t);
        // The 8 live nodes closest to the target hold a peer (as after an announce).
        for id in true_closest(&net, &target, true) {
            let j = net.tables.iter().position(|t| t.own_id() == id).unwrap();
            net.holders[j] = true;
        }
        let start = (0..400).find(|i| !net.dead[*i]).unwrap();
        let out = run(&net, &mut rng, start, target, LookupKind::GetPeers);
        assert_eq!(out.peers, vec![SocketAddr::from(([192, 0, 2, 1], 51413))], "found once, de-duplicated");
        let first = out.first_peer_at.expect("a peer was found");
        assert!(first < out.done_at, "the peer came out at {first}, before the end at {}", out.done_at);
        let found: Vec<NodeId> = out.lookup.closest_answered().collect();
        assert_eq!(found, true_closest(&net, &target, true), "the K closest live nodes answered");
        // Dead nodes cost one time-out each, in parallel: the lookup still ends within a few seconds.
        assert!(out.done_at < Timestamp::from_secs(12), "ended at {}", out.done_at);
        assert_eq!(out.lookup.announce_targets().count(), K);
    }

    #[test]
    fn an_unanswering_node_times_out_and_nothing_left_ends_it() {
        let mut l = Lookup::new(NodeId([1; 20]), LookupKind::FindNode);
        let a = SocketAddr::from(([10, 0, 0, 1], 1));
        l.add_candidate(Some(NodeId([2; 20])), a);
        let t = Timestamp::from_secs(1);
        assert_eq!(l.poll_query(t), Some((Some(NodeId([2; 20])), a)));
        assert_eq!(l.poll_query(t), None);
        assert!(!l.is_done());
        assert_eq!(l.poll_timeout(), Some(t + QUERY_TIMEOUT));
        l.handle_timeout(t + millis(1999));
        assert!(!l.is_done());
        l.handle_timeout(t + QUERY_TIMEOUT);
        assert!(l.is_done());
        assert_eq!(l.poll_failed(), Some((NodeId([2; 20]), a)));
        // A late answer is ignored.
        l.on_response(a, NodeId([2; 20]), None, std::iter::empty(), std::iter::empty());
        assert_eq!(l.closest_answered().count(), 0);
    }

    #[test]
    fn untrusted_ids_do_not_end_a_lookup_and_get_no_announce() {
        let target = NodeId([0; 20]);
        let mut l = Lookup::new(target, LookupKind::GetPeers);
        let t = Timestamp::from_secs(1);
        // Public addresses with ids that fail BEP 42.
        for i in 0..K as u8 {
            l.add_candidate(Some(NodeId([i + 1; 20])), SocketAddr::from(([8, 8, 8, i], 1)));
        }
        let far = SocketAddr::from(([10, 0, 0, 1], 1));
        l.add_candidate(Some(NodeId([0xf0; 20])), far);
        while let Some((id, a)) = l.poll_query(t) {
            l.on_response(a, id.unwrap(), Some(b"x"), std::iter::empty(), std::iter::empty());
        }
        assert!(l.is_done(), "nothing left");
        let targets: Vec<SocketAddr> = l.announce_targets().map(|(_, a, _)| a).collect();
        assert_eq!(targets, vec![far], "only the exempt node counts");
        // A bootstrap address (no id) is asked first and never counts.
        let mut l = Lookup::new(target, LookupKind::FindNode);
        l.add_candidate(Some(NodeId([1; 20])), SocketAddr::from(([10, 0, 0, 2], 1)));
        l.add_candidate(None, SocketAddr::from(([10, 0, 0, 3], 1)));
        assert_eq!(l.poll_query(t).unwrap().0, None);
    }

    /// Under simulated time, a lookup among nodes that keep naming new nodes that never count (ids that fail
    /// BEP 42) still ends, within [`MAX_QUERIES`] queries: once its bounded candidate list holds only nodes
    /// already asked (an answered candidate is never evicted), nothing is left to ask.
    #[test]
    fn endless_untrusted_nodes_cannot_keep_a_lookup_going() {
        let target = NodeId([0; 20]);
        let mut l = Lookup::new(target, LookupKind::GetPeers);
        let mut rng = Rng::seeded(99);
        let public = |i: u32| SocketAddr::from(((0x0800_0000 + i).to_be_bytes(), 6881));
        let mut next = 0u32;
        let mut fresh = |rng: &mut Rng| {
            next += 1;
            let mut id = [0u8; 20];
            rng.fill(&mut id);
            (NodeId(id), public(next))
        };
        for _ in 0..K {
            let (id, a) = fresh(&mut rng);
            l.add_candidate(Some(id), a);
        }
        let mut now = Timestamp::from_secs(1);
        let mut sent = 0;
        while !l.is_done() {
            let mut asked = Vec::new();
            while let Some((id, a)) = l.poll_query(now) {
                asked.push((id, a));
            }
            sent += asked.len();
            // Nothing new to ask: time jumps to the next query deadline.
            now = match l.poll_timeout() {
                Some(d) if asked.is_empty() => now.max(d),
                _ => now + millis(50),
            };
            // Every other one answers 50 ms later with 8 new nodes; the rest time out.
            for (i, (id, a)) in asked.into_iter().enumerate() {
                if i % 2 == 0 {
                    let nodes: Vec<_> = (0..K).map(|_| fresh(&mut rng)).collect();
                    l.on_response(a, id.unwrap(), Some(b"t"), nodes.into_iter(), std::iter::empty());
                }
            }
            l.handle_timeout(now);
            while l.poll_failed().is_some() {}
            assert!(now < Timestamp::from_secs(600), "still running at {now}");
        }
        assert!(sent <= MAX_QUERIES, "{sent} queries");
        assert_eq!(l.sent, sent);
        assert!(l.candidates.iter().all(|c| matches!(c.state, State::Answered | State::Failed)));
        assert_eq!(l.closest_answered().count(), 0, "none of them counts");
        assert_eq!(l.announce_targets().count(), 0, "so none gets our announce");
        assert!(now < Timestamp::from_secs(200), "ended at {now}");
    }
}
