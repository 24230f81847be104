//! The `Dht` machine driven by tests: single exchanges, persistence, floods, and 50 nodes on a simulated
//! network with delay and loss under a simulated clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use std::net::IpAddr;

use super::krpc::{decode, encode_query, Body, Query, Want};
use super::*;
use crate::time::millis;

/// Datagrams in flight: (arrival, sequence, from, to, bytes), earliest first.
type Wire = BinaryHeap<Reverse<(Timestamp, u64, usize, usize, Vec<u8>)>>;

fn node(i: u64) -> Dht {
    Dht::new(Timestamp::ZERO, Config::default(), None, Entropy::seeded(1000 + i), Rng::seeded(i))
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881))
}

/// The next answer `d` sends (skipping the pings it sends to verify new askers).
fn reply(d: &mut Dht) -> Option<(SocketAddr, Vec<u8>)> {
    while let Some((to, bytes)) = d.poll_transmit() {
        if !matches!(decode(&bytes).map(|m| m.body), Ok(Body::Query { .. })) {
            return Some((to, bytes));
        }
    }
    None
}

fn query(tx: &[u8], id: NodeId, q: &Query) -> Vec<u8> {
    let mut out = Vec::new();
    encode_query(tx, &id, q, Want::default(), None, &mut out);
    out
}

#[test]
fn answers_every_query_kind_and_checks_tokens() {
    let t = Timestamp::from_secs(1);
    let mut d = node(1);
    let asker = SocketAddr::from(([10, 9, 9, 9], 4000));
    let them = NodeId([0x42; 20]);
    d.handle_datagram(t, asker, &query(b"p1", them, &Query::Ping));
    let (to, bytes) = reply(&mut d).unwrap();
    assert_eq!(to, asker);
    let m = decode(&bytes).unwrap();
    assert_eq!(m.tx.as_bytes(), b"p1");
    assert_eq!(m.ip, Some(asker), "BEP 42: our answer says where we saw them");
    assert!(matches!(m.body, Body::Response(r) if r.id == d.id()));
    assert_eq!(d.node_count(), 1, "a querying node enters the table");

    let info_hash = NodeId([7; 20]);
    d.handle_datagram(t, asker, &query(b"g1", them, &Query::GetPeers { info_hash }));
    let (_, bytes) = reply(&mut d).unwrap();
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    let token = Token::new(r.token.expect("a token")).unwrap();
    assert!(r.values.is_empty());

    let bad = Token::new(b"12345678").unwrap();
    let announce = |token| Query::AnnouncePeer { info_hash, port: 5555, implied_port: false, token };
    d.handle_datagram(t, asker, &query(b"a0", them, &announce(bad)));
    let (_, bytes) = reply(&mut d).unwrap();
    assert!(matches!(decode(&bytes).unwrap().body, Body::Error { code: 203, .. }));
    assert_eq!(d.stored_peers(), 0);
    // The token is bound to the asker's address.
    d.handle_datagram(t, SocketAddr::from(([10, 9, 9, 8], 4000)), &query(b"a1", them, &announce(token)));
    assert!(matches!(decode(&reply(&mut d).unwrap().1).unwrap().body, Body::Error { code: 203, .. }));
    d.handle_datagram(t, asker, &query(b"a2", them, &announce(token)));
    assert!(matches!(decode(&reply(&mut d).unwrap().1).unwrap().body, Body::Response(_)));
    assert_eq!(d.stored_peers(), 1);

    d.handle_datagram(t, asker, &query(b"g2", them, &Query::GetPeers { info_hash }));
    let (_, bytes) = reply(&mut d).unwrap();
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert_eq!(r.values.iter().collect::<Vec<_>>(), vec![SocketAddr::from(([10, 9, 9, 9], 5555))]);
    // implied_port: the source port is the peer's.
    let implied = Query::AnnouncePeer { info_hash, port: 1, implied_port: true, token };
    d.handle_datagram(t, asker, &query(b"a3", them, &implied));
    reply(&mut d).unwrap();
    d.handle_datagram(t, asker, &query(b"g3", them, &Query::GetPeers { info_hash }));
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert!(r.values.iter().any(|p| p == asker));
    // An unknown method gets 204.
    d.handle_datagram(t, asker, &query(b"u1", them, &Query::Unknown));
    assert!(matches!(decode(&reply(&mut d).unwrap().1).unwrap().body, Body::Error { code: 204, .. }));
    // After two rotations the token is refused.
    d.handle_timeout(t + secs(600));
    d.handle_datagram(t + secs(600), asker, &query(b"a4", them, &announce(token)));
    assert!(matches!(decode(&reply(&mut d).unwrap().1).unwrap().body, Body::Error { code: 203, .. }));
}

#[test]
fn responses_only_from_the_queried_address_and_only_once() {
    let t = Timestamp::from_secs(1);
    let mut d = node(2);
    let router = SocketAddr::from(([10, 1, 1, 1], 6881));
    d.add_node(t, router);
    let (to, bytes) = d.poll_transmit().unwrap();
    assert_eq!(to, router);
    let q = decode(&bytes).unwrap();
    assert_eq!(q.tx.as_bytes().len(), 4);
    assert!(matches!(q.body, Body::Query { query: Query::FindNode { target }, .. } if target == d.id()));
    let mut reply = Vec::new();
    krpc::encode_response(q.tx.as_bytes(), &NodeId([9; 20]), &Reply::default(), None, None, &mut reply);
    d.handle_datagram(t, SocketAddr::from(([10, 1, 1, 2], 6881)), &reply);
    assert_eq!((d.stats().unmatched, d.node_count()), (1, 0), "a spoofed source is ignored");
    d.handle_datagram(t, router, &reply);
    assert_eq!(d.node_count(), 1);
    d.handle_datagram(t, router, &reply);
    assert_eq!(d.stats().unmatched, 2, "a replayed answer is ignored");
    // The bootstrap lookup had nobody else to ask: it ended, and nothing is left pending.
    assert!(d.pending.is_empty() && d.lookups.is_empty());
}

#[test]
fn floods_are_bounded_and_malformed_datagrams_counted() {
    let t = Timestamp::from_secs(1);
    let mut d = node(3);
    let flooder = SocketAddr::from(([8, 8, 8, 8], 1));
    for i in 0..10_000u32 {
        d.handle_datagram(t, flooder, &query(&i.to_be_bytes(), NodeId([1; 20]), &Query::Ping));
        d.handle_datagram(t, flooder, b"d1:t2:aa1:y1:q");
    }
    assert_eq!(d.stats().malformed, 10_000);
    let answered = d.stats().answered;
    assert!(answered <= u64::from(LimitConfig::default().burst), "{answered} answered");
    assert!(d.transmit.len() <= Config::default().max_transmit);
    // Another address is still served.
    let other = SocketAddr::from(([9, 9, 9, 9], 1));
    d.handle_datagram(t, other, &query(b"ok", NodeId([2; 20]), &Query::Ping));
    assert_eq!(d.stats().answered, answered + 1);
    // Many addresses: the table and store stay bounded.
    for i in 0..50_000u32 {
        let from = SocketAddr::from((i.to_be_bytes(), 1));
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(&i.to_be_bytes());
        d.handle_datagram(t, from, &query(b"zz", NodeId(id), &Query::Ping));
        while d.poll_transmit().is_some() {}
    }
    assert!(d.limit.tracked() <= LimitConfig::default().max_sources);
    assert!(d.table4.bucket_count() <= 160);
    assert!(d.pending.len() <= Config::default().max_pending);
}

#[test]
fn saved_nodes_round_trip_and_bad_files_are_errors() {
    let t = Timestamp::from_secs(1);
    let mut d = node(4);
    for i in 0..20u8 {
        let from = SocketAddr::from(([10, 0, 0, i], 6881));
        // A node is good once it has answered; feed answers to pings we send.
        let mut id = [i; 20];
        id[0] = i.wrapping_mul(37);
        d.table4.heard_from(t, NodeId(id), from, Seen::Responded);
    }
    d.table6.heard_from(t, NodeId([0xee; 20]), "[2001:db8::1]:6881".parse().unwrap(), Seen::Responded);
    let bytes = d.save_nodes(t);
    let saved = load_nodes(&bytes).unwrap();
    assert_eq!(saved.id, d.id());
    assert_eq!(saved.nodes.len(), d.node_count());
    assert!(saved.nodes.iter().any(|(_, a)| a.is_ipv6()));
    let mut e = node(5);
    e.add_saved_nodes(t, &saved.nodes);
    assert_eq!(e.transmit.len(), ALPHA, "the saved nodes are asked first");
    assert_eq!(load_nodes(b"d5:nodes0:e"), Err(LoadError::MissingId));
    assert_eq!(load_nodes(b"d2:id3:abce"), Err(LoadError::BadId));
    assert_eq!(load_nodes(b"d2:id20:abcdefghij01234567895:nodes3:abce"), Err(LoadError::BadNodes));
    assert!(matches!(load_nodes(b"d2:id"), Err(LoadError::Bencode(_))));
    let mut rng = Rng::seeded(77);
    for _ in 0..5000 {
        let mut m = bytes.clone();
        let at = rng.below(m.len() as u64) as usize;
        m[at] = rng.next_u32() as u8;
        m.truncate(m.len() - rng.below(3) as usize);
        if let Ok(s) = load_nodes(&m) {
            assert!(s.nodes.len() <= MAX_SAVED_NODES);
        }
    }
}

/// The machine survives any datagram: mutations of real traffic fed to a live node.
#[test]
fn mutated_traffic_never_panics() {
    let t = Timestamp::from_secs(1);
    let mut a = node(6);
    let mut b = node(7);
    let (aa, ba) = (addr(1), addr(2));
    a.add_node(t, ba);
    let mut corpus = Vec::new();
    for _ in 0..20 {
        while let Some((_, bytes)) = a.poll_transmit() {
            corpus.push(bytes.clone());
            b.handle_datagram(t, aa, &bytes);
        }
        while let Some((_, bytes)) = b.poll_transmit() {
            corpus.push(bytes.clone());
            a.handle_datagram(t, ba, &bytes);
        }
        b.get_peers(t, NodeId([3; 20]));
    }
    assert!(corpus.len() >= 3);
    let mut rng = Rng::seeded(0xd47);
    let corpus: Vec<&[u8]> = corpus.iter().map(Vec::as_slice).collect();
    for round in 0..5000 {
        let m = rng.mutate(&corpus, b"deil0123456789:");
        a.handle_datagram(t + millis(round), ba, &m);
        a.handle_timeout(t + millis(round));
        while a.poll_transmit().is_some() {}
    }
}

/// 50 nodes on a simulated network (delay 5–80 ms, 5% loss), bootstrapped from node 0; node 7 announces,
/// node 33 finds it.
#[test]
fn fifty_nodes_announce_and_find_each_other() {
    const N: usize = 50;
    let mut nodes: Vec<Dht> = (0..N as u64).map(node).collect();
    let mut rng = Rng::seeded(0x5eed);
    // In flight: (arrival, sequence, from, to, bytes).
    let mut wire: Wire = BinaryHeap::new();
    let mut seq = 0u64;
    let mut now = Timestamp::ZERO;
    let (mut sent, mut lost) = (0u64, 0u64);
    let info_hash = NodeId([0xab; 20]);
    let index_of = |a: SocketAddr| -> Option<usize> {
        match a.ip() {
            std::net::IpAddr::V4(v4) => {
                let o = v4.octets();
                Some(usize::from(o[2]) << 8 | usize::from(o[3])).filter(|&i| i < N && a == addr(i))
            }
            _ => None,
        }
    };
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); N];
    // Each node but the first bootstraps from node 0, 100 ms apart.
    let mut step = |nodes: &mut Vec<Dht>,
                    now: &mut Timestamp,
                    until: Timestamp,
                    wire: &mut Wire,
                    events: &mut Vec<Vec<Event>>,
                    stop: &dyn Fn(&Vec<Vec<Event>>) -> bool| {
        while *now < until {
            for (i, d) in nodes.iter_mut().enumerate() {
                while let Some((to, bytes)) = d.poll_transmit() {
                    sent += 1;
                    if rng.below(100) < 5 {
                        lost += 1;
                        continue;
                    }
                    if let Some(j) = index_of(to) {
                        seq += 1;
                        wire.push(Reverse((*now + millis(5 + rng.below(75)), seq, i, j, bytes)));
                    }
                }
                while let Some(e) = d.poll_event() {
                    events[i].push(e);
                }
            }
            if stop(events) {
                return true;
            }
            let next_timer = nodes.iter().map(Dht::poll_timeout).min().unwrap();
            let next_wire = wire.peek().map(|r| r.0 .0).unwrap_or(until);
            *now = next_timer.min(next_wire).min(until).max(*now);
            while wire.peek().is_some_and(|r| r.0 .0 <= *now) {
                let Reverse((_, _, from, to, bytes)) = wire.pop().unwrap();
                nodes[to].handle_datagram(*now, addr(from), &bytes);
            }
            for d in nodes.iter_mut() {
                if d.poll_timeout() <= *now {
                    d.handle_timeout(*now);
                }
            }
        }
        false
    };
    for i in 1..N {
        let until = now + millis(100);
        step(&mut nodes, &mut now, until, &mut wire, &mut events, &|_| false);
        nodes[i].add_node(now, addr(0));
    }
    let until = now + secs(60);
    step(&mut nodes, &mut now, until, &mut wire, &mut events, &|_| false);
    let known: Vec<usize> = nodes.iter().map(Dht::node_count).collect();
    assert!(known.iter().all(|&n| n >= 8), "every node knows at least K others: {known:?}");

    assert!(nodes[7].announce(now, info_hash, 7777));
    let until = now + secs(60);
    let announced = step(&mut nodes, &mut now, until, &mut wire, &mut events, &|ev| {
        ev[7].iter().any(|e| matches!(e, Event::LookupDone { .. }))
    });
    assert!(announced, "node 7's announce lookup ended");
    let Some(Event::LookupDone { announced, .. }) =
        events[7].iter().find(|e| matches!(e, Event::LookupDone { .. })).cloned()
    else {
        unreachable!()
    };
    assert!(announced >= 4, "announced to {announced} nodes");
    // Let the announces land.
    let until = now + secs(2);
    step(&mut nodes, &mut now, until, &mut wire, &mut events, &|_| false);
    let holders = nodes.iter().filter(|d| d.stored_peers() > 0).count();
    assert!(holders >= 3, "{holders} nodes hold the peer");

    let started = now;
    assert!(nodes[33].get_peers(now, info_hash));
    let want = SocketAddr::from(([10, 0, 0, 7], 7777));
    let found = step(&mut nodes, &mut now, started + secs(60), &mut wire, &mut events, &|ev| {
        ev[33].iter().any(|e| matches!(e, Event::Peers { peers, .. } if peers.contains(&want)))
    });
    assert!(found, "node 33 found node 7's announce; events: {:?}", events[33]);
    assert!(now - started < secs(10), "found in {:?}", now - started);
    assert!(lost > 0 && sent > 500, "the network lost {lost} of {sent}");
    for d in &nodes {
        assert_eq!(d.stats().malformed, 0);
    }
}

#[test]
fn agreeing_ip_votes_give_us_a_bep42_id_and_keep_the_table() {
    let t = Timestamp::from_secs(1);
    let mut d = node(8);
    let public: IpAddr = "124.31.75.21".parse().unwrap();
    let me = SocketAddr::new(public, 6881);
    // Three routers answer our bootstrap queries, each saying where it saw us.
    for i in 0..3u8 {
        let router = SocketAddr::from(([10, 2, 0, i], 6881));
        d.add_node(t, router);
        let mut asked = None;
        while let Some((to, bytes)) = d.poll_transmit() {
            if to == router {
                asked = Some(bytes);
            }
        }
        let asked = asked.expect("the router was asked");
        let q = decode(&asked).unwrap();
        let mut reply = Vec::new();
        krpc::encode_response(q.tx.as_bytes(), &NodeId([i + 1; 20]), &Reply::default(), Some(me), None, &mut reply);
        let before = d.id();
        d.handle_datagram(t, router, &reply);
        if i < 2 {
            assert_eq!(d.id(), before, "two votes do not decide");
        }
    }
    assert_eq!(d.external_ip(), Some(public));
    assert!(node_id::id_matches_ip(&d.id(), public), "our id now follows BEP 42");
    assert_eq!(d.node_count(), 3, "the nodes moved to the rebuilt table");
    // A private address changes nothing.
    let id = d.id();
    d.set_external_ip(t, "192.168.1.5".parse().unwrap());
    assert_eq!(d.id(), id);
}

#[test]
fn ipv6_askers_get_nodes6_and_values_in_their_family() {
    let t = Timestamp::from_secs(1);
    let mut d = node(9);
    for i in 0..5u8 {
        d.table4.heard_from(t, NodeId([i + 1; 20]), SocketAddr::from(([10, 0, 0, i], 1)), Seen::Responded);
        let six = SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i) + 1]), 1);
        d.table6.heard_from(t, NodeId([i + 0x80; 20]), six, Seen::Responded);
    }
    let asker6: SocketAddr = "[2001:db8::99]:7000".parse().unwrap();
    let them = NodeId([0x33; 20]);
    d.handle_datagram(t, asker6, &query(b"f6", them, &Query::FindNode { target: NodeId([0; 20]) }));
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert!(r.nodes.is_empty(), "no IPv4 nodes unasked");
    assert_eq!(r.nodes6.len(), 5 * krpc::NODE6_LEN, "the 5 that answered us, not the unverified asker");
    // `want` n4 and n6: both lists.
    let mut q = Vec::new();
    encode_query(b"fb", &them, &Query::FindNode { target: NodeId([0; 20]) }, Want { n4: true, n6: true }, None, &mut q);
    d.handle_datagram(t, asker6, &q);
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert_eq!((r.nodes.len(), r.nodes6.len()), (5 * krpc::NODE4_LEN, 5 * krpc::NODE6_LEN));
    // A peer announced over IPv6 is served to IPv6 askers only.
    let info_hash = NodeId([5; 20]);
    d.handle_datagram(t, asker6, &query(b"g6", them, &Query::GetPeers { info_hash }));
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    let token = Token::new(r.token.unwrap()).unwrap();
    let announce = Query::AnnouncePeer { info_hash, port: 0, implied_port: true, token };
    d.handle_datagram(t, asker6, &query(b"a6", them, &announce));
    assert!(matches!(decode(&reply(&mut d).unwrap().1).unwrap().body, Body::Response(_)));
    d.handle_datagram(t, asker6, &query(b"h6", NodeId([0x34; 20]), &Query::GetPeers { info_hash }));
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert_eq!(r.values.iter().collect::<Vec<_>>(), vec![asker6]);
    let asker4 = SocketAddr::from(([10, 5, 5, 5], 1));
    d.handle_datagram(t, asker4, &query(b"g4", them, &Query::GetPeers { info_hash }));
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert!(r.values.is_empty(), "an IPv4 asker gets no IPv6 peers");
}

#[test]
fn a_new_asker_is_pinged_and_a_spoofed_one_turns_bad_at_once() {
    let t = Timestamp::from_secs(1);
    let mut d = node(10);
    let real = SocketAddr::from(([10, 7, 0, 1], 1));
    let spoofed = SocketAddr::from(([10, 7, 0, 2], 1));
    for (who, tx, id) in [(real, b"r1", 0x21u8), (spoofed, b"s1", 0x22)] {
        d.handle_datagram(t, who, &query(tx, NodeId([id; 20]), &Query::Ping));
    }
    let mut pings = Vec::new();
    while let Some((to, bytes)) = d.poll_transmit() {
        let m = decode(&bytes).unwrap();
        if matches!(m.body, Body::Query { query: Query::Ping, .. }) {
            pings.push((to, m.tx));
        }
    }
    assert_eq!(pings.iter().map(|p| p.0).collect::<Vec<_>>(), vec![real, spoofed]);
    assert!(d.table4.closest(t, &NodeId([0; 20])).is_empty(), "unverified askers are not handed on");
    // The real one answers; the spoofed source never does.
    let mut answer = Vec::new();
    let real_id = d.table4.nodes().find(|n| n.addr == real).unwrap().id;
    krpc::encode_response(pings[0].1.as_bytes(), &real_id, &Reply::default(), None, None, &mut answer);
    d.handle_datagram(t, real, &answer);
    d.handle_timeout(t + QUERY_TIMEOUT);
    let state = |d: &Dht, a| d.table4.nodes().find(|n| n.addr == a).map(|n| n.state(t + QUERY_TIMEOUT));
    assert_eq!(state(&d, real), Some(NodeState::Good));
    assert_eq!(state(&d, spoofed), Some(NodeState::Bad));
    let handed: Vec<SocketAddr> = d.table4.closest(t, &NodeId([0; 20])).iter().map(|n| n.1).collect();
    assert_eq!(handed, vec![real]);
}

#[test]
fn a_port_message_ping_adds_the_node_when_it_answers() {
    let t = Timestamp::from_secs(1);
    let mut d = node(11);
    let peer = SocketAddr::from(([10, 8, 0, 1], 6881));
    d.ping(t, peer);
    d.ping(t, peer);
    let (to, bytes) = d.poll_transmit().unwrap();
    assert!(d.poll_transmit().is_none(), "one ping in flight per address");
    assert_eq!(to, peer);
    let q = decode(&bytes).unwrap();
    let mut answer = Vec::new();
    krpc::encode_response(q.tx.as_bytes(), &NodeId([0x61; 20]), &Reply::default(), None, None, &mut answer);
    d.handle_datagram(t, peer, &answer);
    assert_eq!(d.good_nodes(t), 1);
    // A ping that times out costs nothing and leaves nothing pending.
    d.ping(t, SocketAddr::from(([10, 8, 0, 2], 6881)));
    d.handle_timeout(t + QUERY_TIMEOUT);
    assert!(d.pending.is_empty());
    assert_eq!(d.node_count(), 1);
}

/// Found while writing the fuzz target's one-datagram check: a `get_peers` answer to an IPv6 asker that wants both families, for a hash with a full
/// swarm of IPv6 peers, came to ≈1,700 bytes: over one datagram, and over what our own decoder accepts.
/// Values are now cut until the answer fits.
#[test]
fn a_full_ipv6_get_peers_answer_with_both_node_lists_fits_one_datagram() {
    let t = Timestamp::from_secs(1);
    let mut d = node(12);
    for i in 0..8u8 {
        d.table4.heard_from(t, NodeId([i + 1; 20]), SocketAddr::from(([10, 0, 0, i], 1)), Seen::Responded);
        let six = SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(i) + 1]), 1);
        d.table6.heard_from(t, NodeId([i + 0x80; 20]), six, Seen::Responded);
    }
    let asker: SocketAddr = "[2001:db8::99]:7000".parse().unwrap();
    let them = NodeId([0x33; 20]);
    let info_hash = NodeId([5; 20]);
    d.handle_datagram(t, asker, &query(b"g0", them, &Query::GetPeers { info_hash }));
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    let token = Token::new(r.token.unwrap()).unwrap();
    // One asker announces 50 ports (a full swarm at the default 50 per hash).
    for port in 1..=Config::default().store_peers_per_hash as u16 {
        let q = Query::AnnouncePeer { info_hash, port, implied_port: false, token };
        // Spaced out, so the asker stays within its rate.
        d.handle_datagram(t + millis(100 * u64::from(port)), asker, &query(&port.to_be_bytes(), them, &q));
        assert!(matches!(decode(&reply(&mut d).unwrap().1).unwrap().body, Body::Response(_)));
    }
    assert_eq!(d.stored_peers(), 50);
    let mut q = Vec::new();
    encode_query(b"gb", &them, &Query::GetPeers { info_hash }, Want { n4: true, n6: true }, None, &mut q);
    let later = t + secs(30); // past the asker's burst
    d.handle_datagram(later, asker, &q);
    let bytes = reply(&mut d).unwrap().1;
    assert!(bytes.len() <= krpc::MAX_DATAGRAM, "{} bytes", bytes.len());
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert_eq!((r.nodes.len(), r.nodes6.len()), (8 * krpc::NODE4_LEN, 8 * krpc::NODE6_LEN));
    let values = r.values.iter().count();
    assert!(values >= 40, "as many values as fit: {values}");
    // Without `want` an IPv6 asker gets only nodes6, and all 50 values fit.
    d.handle_datagram(later, asker, &query(b"g1", them, &Query::GetPeers { info_hash }));
    let bytes = reply(&mut d).unwrap().1;
    let Body::Response(r) = decode(&bytes).unwrap().body else { panic!() };
    assert_eq!(r.values.iter().count(), 50);
}

/// Seeded mutations of real node files (both families, empty lists, the most nodes) through `load_nodes`:
/// never a panic, never more than `MAX_SAVED_NODES`, and every node it returns is a whole entry of the input.
#[test]
fn load_nodes_survives_seeded_mutations() {
    let t = Timestamp::from_secs(1);
    let mut full = node(13);
    for i in 0..400u32 {
        let mut id = [0u8; 20];
        id[..4].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_be_bytes());
        full.table4.heard_from(t, NodeId(id), SocketAddr::from((i.to_be_bytes(), 6881)), Seen::Responded);
        id[4] = 6;
        let six = SocketAddr::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16]), 6881);
        full.table6.heard_from(t, NodeId(id), six, Seen::Responded);
    }
    let empty = node(14).save_nodes(t);
    let many = full.save_nodes(t);
    let loaded = load_nodes(&many).unwrap();
    assert_eq!(loaded.nodes.len(), full.good_nodes(t).min(MAX_SAVED_NODES));
    assert!(loaded.nodes.iter().any(|n| n.1.is_ipv6()) && loaded.nodes.iter().any(|n| n.1.is_ipv4()));
    let corpus: Vec<&[u8]> = vec![&empty, &many, b"d2:id20:abcdefghij01234567895:nodes0:6:nodes60:e"];
    let mut rng = Rng::seeded(0x10ad);
    let mut ok = 0;
    for round in 0..20_000u32 {
        let input = rng.mutate(&corpus, b"deil0123456789:");
        if let Ok(saved) = load_nodes(&input) {
            ok += 1;
            assert!(saved.nodes.len() <= MAX_SAVED_NODES, "round {round}");
            for (id, addr) in &saved.nodes {
                let mut entry = id.0.to_vec();
                krpc::put_compact_peer(*addr, &mut entry);
                assert!(input.windows(entry.len()).any(|w| w == entry), "round {round}: {addr} not in the input");
            }
        }
    }
    assert!(ok > 100, "only {ok} mutants decoded: the mutations say nothing about the accepted path");
}
