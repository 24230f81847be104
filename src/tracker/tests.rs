//! `Trackers` under simulated time: tiers, fall-back, lifecycle, names, redirects, peers, scrape.
//!
//! The harness is just another driver: it takes `TrackerIo` out, answers as a tracker would (or does not),
//! and moves time to the next deadline.

use std::io::ErrorKind;
use std::net::SocketAddr;

use super::codec::encode_compact;
use super::request::resolve_location;
use super::tiers;
use super::*;

const INFO_HASH: InfoHash = InfoHash([0x11; 20]);
const OWN_PORT: u16 = 6881;

fn identity() -> ClientIdentity {
    ClientIdentity {
        info_hash: INFO_HASH,
        peer_id: *b"-RL0001-abcdefghijkl",
        port: OWN_PORT,
        key: 0xdead_beef,
        numwant: 50,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Sim {
    tr: Trackers,
    now: Timestamp,
    rng: Rng,
    transfer: Transfer,
}

impl Sim {
    fn new(tiers: &[&[&str]]) -> Sim {
        Sim::with_entropy(tiers, Entropy::seeded(1))
    }

    /// Every `Sim` uses the same xoshiro seed; only `entropy` may differ.
    fn with_entropy(tiers: &[&[&str]], entropy: Entropy) -> Sim {
        let tiers: Vec<Vec<String>> = tiers.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect();
        let mut rng = Rng::seeded(42);
        let tr = Trackers::new(&tiers, identity(), entropy, &mut rng, Timestamp::ZERO);
        Sim { tr, now: Timestamp::ZERO, rng, transfer: Transfer { uploaded: 0, downloaded: 0, left: 1000 } }
    }

    /// `Sim::new`, drawing UDP transaction ids in namespace `ns`.
    fn in_namespace(tiers: &[&[&str]], ns: u16) -> Sim {
        let mut sim = Sim::new(tiers);
        let tiers: Vec<Vec<String>> = tiers.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect();
        let mut rng = Rng::seeded(42);
        sim.tr =
            Trackers::new(&tiers, identity(), Entropy::seeded(1), &mut rng, Timestamp::ZERO).with_txn_namespace(ns);
        sim
    }

    fn tick(&mut self, at: Timestamp) {
        assert!(at >= self.now, "time never goes back");
        self.now = at;
        self.tr.on_timeout(at, self.transfer, &mut self.rng);
    }

    /// Moves to the next deadline if it is at or before `limit`.
    fn step_until(&mut self, limit: Timestamp) -> bool {
        match self.tr.next_deadline() {
            Some(d) if d <= limit => {
                self.tick(d.max(self.now));
                true
            }
            _ => false,
        }
    }

    fn io(&mut self) -> Vec<TrackerIo> {
        std::iter::from_fn(|| self.tr.poll_io()).collect()
    }

    fn events(&mut self) -> Vec<TrackerEvent> {
        std::iter::from_fn(|| self.tr.poll_event()).collect()
    }

    fn peers(&mut self) -> Vec<SocketAddr> {
        self.events()
            .into_iter()
            .flat_map(|e| match e {
                TrackerEvent::Peers(p) => p,
                _ => Vec::new(),
            })
            .collect()
    }

    fn errors(&mut self) -> Vec<(String, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                TrackerEvent::Error { url, message } => Some((url, message)),
                _ => None,
            })
            .collect()
    }

    /// Answers one HTTP request with `response` and an orderly close.
    fn answer_http(&mut self, id: IoId, response: &[u8]) {
        self.tr.on_http_data(id, response, self.now);
    }
}

fn http_ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

fn compact_body(interval: u32, peers: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in peers {
        encode_compact(addr(p), &mut list);
    }
    let mut body = format!("d8:intervali{interval}e5:peers{}:", list.len()).into_bytes();
    body.extend_from_slice(&list);
    body.push(b'e');
    body
}

fn target(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    text.split(' ').nth(1).unwrap_or("").to_string()
}

fn param(request: &[u8], name: &str) -> Option<String> {
    let t = target(request);
    let query = t.split_once('?')?.1.to_string();
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
}

#[track_caller]
fn http_requests(io: &[TrackerIo]) -> Vec<(IoId, SocketAddr, Vec<u8>)> {
    io.iter()
        .filter_map(|x| match x {
            TrackerIo::HttpRequest { id, addr, request } => Some((*id, *addr, request.clone())),
            _ => None,
        })
        .collect()
}

fn udp_sends(io: &[TrackerIo]) -> Vec<(SocketAddr, Vec<u8>)> {
    io.iter()
        .filter_map(|x| match x {
            TrackerIo::UdpSend { addr, datagram } => Some((*addr, datagram.clone())),
            _ => None,
        })
        .collect()
}

fn closes(io: &[TrackerIo]) -> Vec<IoId> {
    io.iter()
        .filter_map(|x| match x {
            TrackerIo::HttpClose { id } => Some(*id),
            _ => None,
        })
        .collect()
}

/// A UDP tracker's answer to `datagram`: connection id 0x42, 1800 s interval, `peers`.
fn udp_answer(datagram: &[u8], peers: &[&str]) -> Vec<u8> {
    let action = u32::from_be_bytes(datagram[8..12].try_into().unwrap());
    let tid = &datagram[12..16];
    let mut d = Vec::new();
    match action {
        0 => {
            d.extend_from_slice(&[0, 0, 0, 0]);
            d.extend_from_slice(tid);
            d.extend_from_slice(&0x42u64.to_be_bytes());
        }
        1 => {
            d.extend_from_slice(&[0, 0, 0, 1]);
            d.extend_from_slice(tid);
            d.extend_from_slice(&[0, 0, 0x07, 0x08, 0, 0, 0, 1, 0, 0, 0, 2]);
            for p in peers {
                encode_compact(addr(p), &mut d);
            }
        }
        2 => {
            d.extend_from_slice(&[0, 0, 0, 2]);
            d.extend_from_slice(tid);
            d.extend_from_slice(&[0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 3]);
        }
        _ => panic!("unexpected action {action}"),
    }
    d
}

fn udp_event(datagram: &[u8]) -> u32 {
    u32::from_be_bytes(datagram[80..84].try_into().unwrap())
}

// ---- tiers and fall-back ----------------------------------------------------------------------------

#[test]
fn dead_first_tier_does_not_delay_second_tier_peers() {
    // Tier 1: a UDP port nobody answers and an HTTP server that accepts and never replies.
    let mut sim = Sim::new(&[
        &["udp://127.0.0.1:1001/announce", "http://127.0.0.1:1002/announce"],
        &["http://127.0.0.1:2000/announce"],
    ]);
    sim.tick(Timestamp::ZERO);
    let io = sim.io();
    let http = http_requests(&io);
    let tier2 = http.iter().find(|(_, a, _)| a.port() == 2000).expect("tier 2 asked at once");
    assert_eq!(http.len() + udp_sends(&io).len(), 2, "one tracker per tier");
    // Tier 2 answers after 50 ms of loopback latency.
    sim.tick(Timestamp::from_millis(50));
    sim.answer_http(tier2.0, &http_ok(&compact_body(1800, &["10.0.0.1:1", "10.0.0.2:2"])));
    let peers = sim.peers();
    assert_eq!(peers.len(), 2);
    assert!(sim.now <= Timestamp::from_secs(1));
    let status = sim.tr.status();
    assert_eq!(status[2].state, TrackerState::Working);
    assert_eq!(status[2].peers, 2);
}

#[test]
fn within_a_tier_silent_trackers_give_way_after_15s_and_refused_ones_at_once() {
    let mut sim = Sim::new(&[&[
        "udp://127.0.0.1:1001/announce",
        "http://127.0.0.1:1002/announce",
        "http://127.0.0.1:1003/announce",
    ]]);
    let order: Vec<String> = sim.tr.status().into_iter().map(|s| s.url).collect();
    sim.tick(Timestamp::ZERO);
    let mut asked = Vec::new();
    let mut answered_at = None;
    loop {
        for io in sim.io() {
            match io {
                TrackerIo::UdpSend { addr, .. } => asked.push((sim.now, addr.port())),
                TrackerIo::HttpRequest { id, addr, .. } => {
                    asked.push((sim.now, addr.port()));
                    match addr.port() {
                        1002 => {} // accepts, never replies
                        1003 => {
                            sim.tr.on_http_closed(id, Err(ErrorKind::ConnectionRefused), sim.now);
                        }
                        _ => unreachable!(),
                    }
                }
                _ => {}
            }
        }
        if sim.tr.status().iter().all(|s| s.state == TrackerState::Failing) && answered_at.is_none() {
            answered_at = Some(sim.now);
        }
        if !sim.step_until(Timestamp::from_secs(100)) {
            break;
        }
    }
    // Each tracker is asked once per round, in the tier's shuffled order; a refused one costs no time.
    let ports: Vec<u16> = order.iter().map(|u| u.split(':').nth(2).unwrap()[..4].parse().unwrap()).collect();
    let first_round: Vec<u16> = asked.iter().take(3).map(|a| a.1).collect();
    assert_eq!(first_round, ports);
    // The two silent ones cost 15 s each, whatever the order.
    assert_eq!(answered_at, Some(Timestamp::from_secs(30)), "{asked:?}");
    // Then the whole tier backs off 60 s before the next round.
    let round2 = asked.iter().find(|a| a.0 > answered_at.unwrap()).unwrap();
    assert_eq!(round2.0, answered_at.unwrap() + secs(60));
}

#[test]
fn first_tracker_that_answers_moves_to_front_of_its_tier() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a", "http://127.0.0.1:1002/a"]]);
    let first = sim.tr.status()[0].url.clone();
    sim.tick(Timestamp::ZERO);
    let (id, _, _) = http_requests(&sim.io())[0].clone();
    sim.tr.on_http_closed(id, Err(ErrorKind::ConnectionRefused), sim.now);
    sim.tick(sim.tr.next_deadline().unwrap());
    let (id2, _, _) = http_requests(&sim.io())[0].clone();
    sim.answer_http(id2, &http_ok(&compact_body(1800, &[])));
    let status = sim.tr.status();
    assert_ne!(status[0].url, first, "the answering tracker is first now");
    assert_eq!(status[0].state, TrackerState::Working);
    assert_eq!(status[0].next_announce, Some(sim.now + secs(1800)));
    assert_eq!(status[1].url, first);
    assert_eq!(status[1].state, TrackerState::Failing);
    assert_eq!(status[1].last_error.as_deref(), Some("cannot connect: connection refused"));
}

#[test]
fn whole_tier_failures_back_off_growing() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a"]]);
    let mut starts = Vec::new();
    sim.tick(Timestamp::ZERO);
    while sim.now < Timestamp::from_secs(2000) {
        for (id, _, _) in http_requests(&sim.io()) {
            starts.push(sim.now.as_micros() / 1_000_000);
            sim.answer_http(id, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n");
        }
        if !sim.step_until(Timestamp::from_secs(2000)) {
            break;
        }
    }
    assert_eq!(starts, [0, 60, 180, 420, 900, 1860]);
    assert!(sim.errors().iter().all(|(_, m)| m == "http status 500"));
}

// ---- lifecycle --------------------------------------------------------------------------------------

#[test]
fn started_then_interval_then_completed_then_stopped_with_accurate_figures() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/announce"]]);
    sim.transfer = Transfer { uploaded: 5, downloaded: 0, left: 1000 };
    sim.tick(Timestamp::ZERO);
    let (id, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event").as_deref(), Some("started"));
    assert_eq!(param(&req, "left").as_deref(), Some("1000"));
    assert_eq!(param(&req, "uploaded").as_deref(), Some("5"));
    assert_eq!(param(&req, "numwant").as_deref(), Some("50"));
    assert_eq!(param(&req, "key").as_deref(), Some("deadbeef"));
    assert_eq!(param(&req, "compact").as_deref(), Some("1"));
    let body = b"d8:intervali100e12:min intervali300e10:tracker id2:T15:peers0:e";
    sim.answer_http(id, &http_ok(body));
    // min interval wins over a shorter interval.
    assert_eq!(sim.tr.next_deadline(), Some(Timestamp::from_secs(300)));
    sim.tick(Timestamp::from_secs(299));
    assert!(http_requests(&sim.io()).is_empty());
    sim.transfer = Transfer { uploaded: 7, downloaded: 600, left: 400 };
    sim.tick(Timestamp::from_secs(300));
    let (id, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event"), None, "a regular re-announce has no event");
    assert_eq!(param(&req, "trackerid").as_deref(), Some("T1"));
    assert_eq!(param(&req, "key").as_deref(), Some("deadbeef"), "key is stable");
    assert_eq!(param(&req, "downloaded").as_deref(), Some("600"));
    sim.answer_http(id, &http_ok(b"d8:intervali1800e5:peers0:e"));
    // The last piece verifies: completed goes out now, once.
    sim.now = Timestamp::from_secs(400);
    sim.transfer = Transfer { uploaded: 9, downloaded: 1000, left: 0 };
    sim.tr.on_completed(sim.now, sim.transfer);
    let (id, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event").as_deref(), Some("completed"));
    assert_eq!(param(&req, "left").as_deref(), Some("0"));
    assert_eq!(param(&req, "downloaded").as_deref(), Some("1000"));
    sim.answer_http(id, &http_ok(b"d8:intervali1800e5:peers0:e"));
    sim.tr.on_completed(sim.now, sim.transfer);
    assert!(http_requests(&sim.io()).is_empty(), "completed is sent once");
    sim.tick(Timestamp::from_secs(400 + 1800));
    let (id, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event"), None);
    // Exit while that re-announce is in flight: it is cancelled, stopped is sent.
    assert!(!sim.tr.is_stopped());
    sim.tr.on_stop(sim.now, sim.transfer);
    let io = sim.io();
    assert_eq!(closes(&io), [id]);
    let (id, _, req) = http_requests(&io)[0].clone();
    assert_eq!(param(&req, "event").as_deref(), Some("stopped"));
    assert_eq!(param(&req, "numwant").as_deref(), Some("0"));
    assert!(!sim.tr.is_stopped());
    sim.answer_http(id, &http_ok(b"d8:intervali1800ee"));
    assert!(sim.tr.is_stopped());
    assert_eq!(sim.tr.status()[0].state, TrackerState::Stopped);
    assert_eq!(sim.tr.next_deadline(), None);
}

#[test]
fn a_reannounce_asked_for_goes_out_at_once_but_never_inside_the_minimum_interval() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/announce"]]);
    sim.tick(Timestamp::ZERO);
    let (id, _, _) = http_requests(&sim.io())[0].clone();
    // Asked while the first announce is in flight: nothing more goes out.
    sim.tr.reannounce(sim.now, sim.transfer);
    assert!(http_requests(&sim.io()).is_empty());
    sim.answer_http(id, &http_ok(b"d8:intervali1800e12:min intervali120e5:peers0:e"));
    // Inside the tracker's minimum interval: refused, however often asked.
    for at in [1, 60, 119] {
        sim.now = Timestamp::from_secs(at);
        sim.tr.reannounce(sim.now, sim.transfer);
        assert!(http_requests(&sim.io()).is_empty(), "asked at {at} s");
    }
    sim.now = Timestamp::from_secs(120);
    sim.tr.reannounce(sim.now, sim.transfer);
    let (id, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event"), None, "a re-announce, not a new start");
    sim.answer_http(id, &http_ok(b"d8:intervali1800e5:peers0:e"));
    // No minimum interval named: rill's own floor of 30 s holds.
    sim.now = Timestamp::from_secs(140);
    sim.tr.reannounce(sim.now, sim.transfer);
    assert!(http_requests(&sim.io()).is_empty());
    sim.now = Timestamp::from_secs(150);
    sim.tr.reannounce(sim.now, sim.transfer);
    assert_eq!(http_requests(&sim.io()).len(), 1);
}

fn tiers_of(list: &[&[&str]]) -> Vec<Vec<String>> {
    list.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect()
}

#[test]
fn tracker_lists_are_normalized_once_for_everyone() {
    let tiers = tiers_of(&[&[" http://a/ann ", ""], &[], &["http://a/ann", "udp://b:1"]]);
    assert_eq!(normalize_tiers(&tiers), tiers_of(&[&["http://a/ann"], &["udp://b:1"]]));
}

#[test]
fn an_edited_list_keeps_what_stays_announces_what_is_new_and_cancels_what_goes() {
    let (a, b, c) = ("http://127.0.0.1:1001/a", "http://127.0.0.1:1002/a", "http://127.0.0.1:1003/a");
    let mut sim = Sim::new(&[&[a], &[b]]);
    sim.tick(Timestamp::ZERO);
    let asked = http_requests(&sim.io());
    let by_port = |port: u16| asked.iter().find(|r| r.1.port() == port).unwrap().0;
    let (id_a, id_b) = (by_port(1001), by_port(1002));
    sim.answer_http(id_a, &http_ok(&compact_body(1800, &["10.0.0.1:1"])));
    sim.now = Timestamp::from_secs(5);
    // b (in flight) is removed, c is added, a (answered) stays in its own tier.
    sim.tr.set_tiers(&tiers_of(&[&[a], &[c]]), sim.now);
    let io = sim.io();
    assert!(io.iter().any(|x| matches!(x, TrackerIo::HttpClose { id } if *id == id_b)), "b's request closed: {io:?}");
    assert_eq!(sim.tr.next_deadline(), Some(sim.now), "the new tier is due at once");
    sim.tick(sim.now);
    let asked = http_requests(&sim.io());
    assert_eq!(asked.len(), 1, "only c is asked; a waits for its interval");
    assert_eq!(asked[0].1.port(), 1003);
    assert_eq!(param(&asked[0].2, "event").as_deref(), Some("started"));
    // A late answer for b's cancelled request changes nothing.
    sim.answer_http(id_b, &http_ok(&compact_body(1800, &["10.0.0.9:9"])));
    assert!(sim.peers().iter().all(|p| p.port() != 9));
    let status = sim.tr.status();
    let urls: Vec<&str> = status.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, [a, c]);
    assert_eq!(status[0].state, TrackerState::Working, "a keeps its answer");
    assert_eq!(status[0].next_announce, Some(Timestamp::from_secs(1800)), "and its schedule");
    assert_eq!((status[0].tier, status[1].tier), (0, 1));
    // c answers; its tier then runs on as any other.
    sim.answer_http(asked[0].0, &http_ok(&compact_body(900, &[])));
    assert_eq!(sim.tr.status()[1].next_announce, Some(sim.now + secs(900)));
}

#[test]
fn a_tracker_in_flight_moved_to_another_tier_keeps_its_request_and_its_answer_counts() {
    let (a, b) = ("http://127.0.0.1:1001/a", "http://127.0.0.1:1002/a");
    let mut sim = Sim::new(&[&[a]]);
    sim.tick(Timestamp::ZERO);
    let (id_a, _, _) = http_requests(&sim.io())[0].clone();
    sim.tr.set_tiers(&tiers_of(&[&[b], &[a]]), sim.now);
    let io = sim.io();
    assert!(!io.iter().any(|x| matches!(x, TrackerIo::HttpClose { .. })), "a's request runs on");
    sim.tick(sim.now);
    let asked = http_requests(&sim.io());
    assert_eq!(asked.iter().map(|r| r.1.port()).collect::<Vec<_>>(), [1002], "only the new b is asked");
    sim.answer_http(id_a, &http_ok(&compact_body(600, &["10.0.0.1:1"])));
    assert_eq!(sim.peers(), [addr("10.0.0.1:1")]);
    let status = sim.tr.status();
    assert_eq!((status[1].url.as_str(), status[1].tier, status[1].state), (a, 1, TrackerState::Working));
    assert_eq!(status[1].next_announce, Some(sim.now + secs(600)));
}

#[test]
fn stop_right_after_completion_lets_completed_finish_then_sends_stopped() {
    // rill exits as soon as the last piece verifies: the tracker must still count the completion.
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/announce"]]);
    sim.tick(Timestamp::ZERO);
    let (id, _, _) = http_requests(&sim.io())[0].clone();
    sim.answer_http(id, &http_ok(b"d8:intervali1800e5:peers0:e"));
    sim.now = Timestamp::from_secs(5);
    sim.transfer = Transfer { uploaded: 0, downloaded: 1000, left: 0 };
    sim.tr.on_completed(sim.now, sim.transfer);
    let (completed, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event").as_deref(), Some("completed"));
    sim.tr.on_stop(sim.now, sim.transfer);
    let io = sim.io();
    assert!(closes(&io).is_empty(), "the completed announce is not cancelled");
    assert!(http_requests(&io).is_empty(), "stopped waits for completed");
    assert!(!sim.tr.is_stopped());
    sim.answer_http(completed, &http_ok(b"d8:intervali1800e5:peers0:e"));
    let (stopped, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event").as_deref(), Some("stopped"));
    sim.answer_http(stopped, &http_ok(b"d8:intervali1800ee"));
    assert!(sim.tr.is_stopped());
}

#[test]
fn stopped_only_to_trackers_that_answered_and_bounded_by_stop_timeout() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a"], &["udp://127.0.0.1:1002"], &["udp://127.0.0.1:1003"]]);
    sim.tick(Timestamp::ZERO);
    for (to, d) in udp_sends(&sim.io()) {
        if to.port() == 1002 {
            sim.tr.on_datagram(to, &udp_answer(&d, &[]), sim.now);
        }
    }
    for (to, d) in udp_sends(&sim.io()) {
        assert_eq!(udp_event(&d), 2, "started");
        sim.tr.on_datagram(to, &udp_answer(&d, &[]), sim.now);
    }
    assert_eq!(sim.tr.status()[1].state, TrackerState::Working);
    sim.now = Timestamp::from_secs(10);
    sim.tr.on_stop(sim.now, sim.transfer);
    let io = sim.io();
    assert_eq!(closes(&io).len(), 1, "the unanswered HTTP announce is closed");
    let sends = udp_sends(&io);
    assert_eq!(sends.len(), 1, "only the tracker that knows us hears stopped");
    assert_eq!(sends[0].0.port(), 1002);
    assert_eq!(sends[0].1.len(), 98, "connection id still fresh: no connect");
    assert_eq!(udp_event(&sends[0].1), 3);
    // It never answers: one-second retransmissions, then the stop time-out ends it.
    let mut resent = 0;
    while sim.step_until(Timestamp::from_secs(60)) {
        resent += udp_sends(&sim.io()).len();
    }
    assert!(sim.tr.is_stopped());
    assert_eq!(sim.now, Timestamp::from_secs(15));
    assert_eq!(resent, 2, "at 11 s and 13 s");
}

#[test]
fn completed_before_a_tracker_first_answers_goes_as_started_with_left_zero() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a"]]);
    sim.tick(Timestamp::ZERO);
    let (id, _, _) = http_requests(&sim.io())[0].clone();
    sim.tr.on_http_closed(id, Err(ErrorKind::ConnectionRefused), sim.now);
    sim.transfer.left = 0;
    sim.tr.on_completed(Timestamp::from_secs(1), sim.transfer);
    assert!(sim.io().is_empty(), "the tier waits its back-off");
    sim.tick(Timestamp::from_secs(60));
    let (id, _, req) = http_requests(&sim.io())[0].clone();
    assert_eq!(param(&req, "event").as_deref(), Some("started"));
    assert_eq!(param(&req, "left").as_deref(), Some("0"));
    sim.answer_http(id, &http_ok(b"d8:intervali1800ee"));
    assert_eq!(sim.tr.next_deadline(), Some(Timestamp::from_secs(60 + 1800)), "no completed after");
}

// ---- UDP through the tiers --------------------------------------------------------------------------

#[test]
fn udp_announce_connects_reuses_connection_id_for_a_minute_and_ignores_strangers() {
    let mut sim = Sim::new(&[&["udp://127.0.0.1:1001/announce"]]);
    let tracker = addr("127.0.0.1:1001");
    sim.tick(Timestamp::ZERO);
    let (to, connect) = udp_sends(&sim.io())[0].clone();
    assert_eq!((to, connect.len()), (tracker, 16));
    // A stranger with the right transaction id, garbage, a short datagram: all ignored.
    sim.tr.on_datagram(addr("127.0.0.1:9999"), &udp_answer(&connect, &[]), sim.now);
    sim.tr.on_datagram(tracker, b"garbage", sim.now);
    sim.tr.on_datagram(tracker, &[0; 200], sim.now);
    assert!(sim.io().is_empty());
    sim.tr.on_datagram(tracker, &udp_answer(&connect, &[]), sim.now);
    let (_, announce) = udp_sends(&sim.io())[0].clone();
    assert_eq!(announce.len(), 98);
    sim.tr.on_datagram(tracker, &udp_answer(&announce, &["10.0.0.1:1", "127.0.0.1:6881"]), sim.now);
    assert_eq!(sim.peers(), [addr("10.0.0.1:1")], "our own loopback address is skipped");
    // The tracker asked for 1800 s; a scrape 30 s later reuses the connection id.
    sim.now = Timestamp::from_secs(30);
    sim.tr.scrape(sim.now);
    let (_, scrape) = udp_sends(&sim.io())[0].clone();
    assert_eq!((scrape.len(), &scrape[0..8]), (36, &0x42u64.to_be_bytes()[..]));
    sim.tr.on_datagram(tracker, &udp_answer(&scrape, &[]), sim.now);
    let scraped: Vec<_> = sim.events().into_iter().filter(|e| matches!(e, TrackerEvent::Scraped { .. })).collect();
    assert!(matches!(
        &scraped[..],
        [TrackerEvent::Scraped { result: Ok(ScrapeCounts { seeders: 5, completed: 7, leechers: 3 }), .. }]
    ));
    // 61 s after the connect, it has to connect again.
    sim.now = Timestamp::from_secs(61);
    sim.tr.scrape(sim.now);
    assert_eq!(udp_sends(&sim.io())[0].1.len(), 16);
}

#[test]
fn udp_trackers_in_different_namespaces_never_claim_each_others_replies() {
    // Two torrents' trackers share one UDP socket and the same tracker. Their entropy has the same seed, so
    // only the namespace tells their transaction ids apart.
    let url = "udp://127.0.0.1:1001/announce";
    let tracker = addr("127.0.0.1:1001");
    let mut a = Sim::in_namespace(&[&[url]], 1);
    let mut b = Sim::in_namespace(&[&[url]], 2);
    assert_eq!((a.tr.txn_namespace(), b.tr.txn_namespace()), (1, 2));
    a.tick(Timestamp::ZERO);
    b.tick(Timestamp::ZERO);
    let (_, connect_a) = udp_sends(&a.io())[0].clone();
    let (_, connect_b) = udp_sends(&b.io())[0].clone();
    let tid = |d: &[u8]| u32::from_be_bytes(d[12..16].try_into().unwrap());
    assert_eq!(tid(&connect_a) & 0xf_ffff, tid(&connect_b) & 0xf_ffff, "the same random bits");
    assert_ne!(tid(&connect_a), tid(&connect_b));
    let (reply_a, reply_b) = (udp_answer(&connect_a, &[]), udp_answer(&connect_b, &[]));
    assert_eq!((udp_reply_namespace(&reply_a), udp_reply_namespace(&reply_b)), (Some(1), Some(2)));
    // The control: a third in namespace 1 draws a's ids and would take a's reply.
    let mut c = Sim::in_namespace(&[&[url]], 1);
    c.tick(Timestamp::ZERO);
    assert_eq!(udp_sends(&c.io())[0].1, connect_a);
    c.tr.on_datagram(tracker, &reply_a, c.now);
    assert_eq!(udp_sends(&c.io()).len(), 1, "same namespace, same id: the reply is taken");
    // Connect replies: each ignores the other's and takes its own.
    b.tr.on_datagram(tracker, &reply_a, b.now);
    a.tr.on_datagram(tracker, &reply_b, a.now);
    assert!(a.io().is_empty() && b.io().is_empty(), "a reply from another namespace was taken");
    a.tr.on_datagram(tracker, &reply_a, a.now);
    b.tr.on_datagram(tracker, &reply_b, b.now);
    let (_, announce_a) = udp_sends(&a.io())[0].clone();
    let (_, announce_b) = udp_sends(&b.io())[0].clone();
    // Announce replies: the same.
    let reply_a = udp_answer(&announce_a, &["10.0.0.1:1"]);
    let reply_b = udp_answer(&announce_b, &["10.0.0.2:2"]);
    assert_eq!((udp_reply_namespace(&reply_a), udp_reply_namespace(&reply_b)), (Some(1), Some(2)));
    b.tr.on_datagram(tracker, &reply_a, b.now);
    a.tr.on_datagram(tracker, &reply_b, a.now);
    assert_eq!((a.peers(), b.peers()), (vec![], vec![]), "an announce reply from another namespace was taken");
    a.tr.on_datagram(tracker, &reply_a, a.now);
    b.tr.on_datagram(tracker, &reply_b, b.now);
    assert_eq!((a.peers(), b.peers()), (vec![addr("10.0.0.1:1")], vec![addr("10.0.0.2:2")]));
}

#[test]
fn udp_transaction_ids_default_to_namespace_zero() {
    let mut sim = Sim::new(&[&["udp://127.0.0.1:1001"]]);
    assert_eq!(sim.tr.txn_namespace(), 0);
    for t in 0..4 {
        sim.tick(Timestamp::from_secs(t * 15));
        for (_, datagram) in udp_sends(&sim.io()) {
            assert_eq!(datagram[12] >> 4, 0, "the top 12 bits are zero: {:02x?}", &datagram[12..16]);
            assert_eq!(datagram[13] & 0xf0, 0);
        }
    }
}

#[test]
fn udp_transaction_ids_come_from_the_entropy_source_not_the_xoshiro_rng() {
    let first_transaction_id = |entropy: Entropy| {
        let mut sim = Sim::with_entropy(&[&["udp://127.0.0.1:1001"]], entropy);
        sim.tick(Timestamp::ZERO);
        let (_, connect) = udp_sends(&sim.io())[0].clone();
        u32::from_be_bytes(connect[12..16].try_into().unwrap())
    };
    // Same xoshiro seed in both engines: seeded entropy repeats (the test can tell), the OS source does
    // not (the 20 random bits below the namespace collide with odds of 2^-20).
    assert_eq!(first_transaction_id(Entropy::seeded(7)), first_transaction_id(Entropy::seeded(7)));
    let os = || Entropy::os().expect("the OS generator");
    assert_ne!(first_transaction_id(os()), first_transaction_id(os()));
}

#[test]
fn udp_error_action_is_reported_as_tracker_failure() {
    let mut sim = Sim::new(&[&["udp://127.0.0.1:1001"]]);
    sim.tick(Timestamp::ZERO);
    let (to, connect) = udp_sends(&sim.io())[0].clone();
    let mut err = vec![0, 0, 0, 3];
    err.extend_from_slice(&connect[12..16]);
    err.extend_from_slice(b"torrent not registered");
    sim.tr.on_datagram(to, &err, sim.now);
    assert_eq!(
        sim.errors(),
        [("udp://127.0.0.1:1001".to_string(), "tracker refused: torrent not registered".to_string())]
    );
}

#[test]
fn udp_send_failure_fails_the_tracker_at_once() {
    let mut sim = Sim::new(&[&["udp://[::1]:1001", "http://127.0.0.1:1002/a"]]);
    sim.tick(Timestamp::ZERO);
    let io = sim.io();
    if let Some((to, _)) = udp_sends(&io).first() {
        sim.tr.on_udp_send_failed(*to, ErrorKind::NetworkUnreachable, sim.now);
        assert_eq!(sim.tr.next_deadline(), Some(sim.now), "next tracker of the tier is due now");
        sim.tick(sim.now);
        assert_eq!(http_requests(&sim.io()).len(), 1);
    } else {
        // The shuffle put HTTP first; refuse it and the UDP one goes next.
        let (id, _, _) = http_requests(&io)[0].clone();
        sim.tr.on_http_closed(id, Err(ErrorKind::ConnectionRefused), sim.now);
        sim.tick(sim.now);
        let (to, _) = udp_sends(&sim.io())[0].clone();
        sim.tr.on_udp_send_failed(to, ErrorKind::NetworkUnreachable, sim.now);
    }
    assert!(sim.errors().iter().any(|(_, m)| m == "connection failed: network unreachable"));
}

// ---- names, redirects, time-outs --------------------------------------------------------------------

#[test]
fn names_are_resolved_once_shared_and_cached_and_failures_are_tracker_errors() {
    let mut sim = Sim::new(&[&["http://localhost:1001/a"], &["udp://LOCALHOST:1002"], &["http://nowhere.invalid/a"]]);
    sim.tick(Timestamp::ZERO);
    let io = sim.io();
    let lookups: Vec<(IoId, String, u16)> = io
        .iter()
        .filter_map(|x| match x {
            TrackerIo::Resolve { id, host, port } => Some((*id, host.clone(), *port)),
            _ => None,
        })
        .collect();
    assert_eq!(lookups.len(), 2, "one lookup per name: {lookups:?}");
    assert!(http_requests(&io).is_empty() && udp_sends(&io).is_empty());
    for (id, host, _) in &lookups {
        match host.as_str() {
            "localhost" => sim.tr.on_resolved(*id, Ok(vec![addr("[::1]:1001"), addr("127.0.0.1:1001")]), sim.now),
            "nowhere.invalid" => sim.tr.on_resolved(*id, Err("Name or service not known".into()), sim.now),
            other => panic!("{other}"),
        }
    }
    let io = sim.io();
    // IPv4 first; each tracker keeps its own port.
    assert_eq!(http_requests(&io)[0].1, addr("127.0.0.1:1001"));
    assert!(String::from_utf8_lossy(&http_requests(&io)[0].2).contains("\r\nHost: localhost:1001\r\n"));
    assert_eq!(udp_sends(&io)[0].0, addr("127.0.0.1:1002"));
    assert_eq!(
        sim.errors(),
        [("http://nowhere.invalid/a".to_string(), "cannot resolve host: Name or service not known".to_string())]
    );
    // Refused on the v4 address: the other address of the name is tried before giving up.
    let id = http_requests(&io)[0].0;
    sim.tr.on_http_closed(id, Err(ErrorKind::ConnectionRefused), sim.now);
    let retry = http_requests(&sim.io());
    assert_eq!(retry[0].1, addr("[::1]:1001"));
    sim.answer_http(retry[0].0, &http_ok(&compact_body(1800, &["10.0.0.1:1"])));
    assert_eq!(sim.peers(), [addr("10.0.0.1:1")]);
    // The cache answers the next announce.
    sim.tick(Timestamp::from_secs(1800));
    let io = sim.io();
    assert!(io.iter().all(|x| !matches!(x, TrackerIo::Resolve { host, .. } if host == "localhost")), "{io:?}");
    assert_eq!(http_requests(&io)[0].1, addr("127.0.0.1:1001"));
}

#[test]
fn http_redirects_are_followed_to_another_host_a_bounded_number_of_times() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/announce?passkey=k"]]);
    sim.tick(Timestamp::ZERO);
    let (id, _, req) = http_requests(&sim.io())[0].clone();
    let query = target(&req).split_once('?').unwrap().1.to_string();
    let location = format!("http://127.0.0.2:1002/real/announce?{query}");
    sim.answer_http(id, format!("HTTP/1.1 301 Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n").as_bytes());
    let io = sim.io();
    assert_eq!(closes(&io), [id]);
    let (id, to, req) = http_requests(&io)[0].clone();
    assert_eq!(to, addr("127.0.0.2:1002"));
    assert_eq!(target(&req), format!("/real/announce?{query}"));
    assert!(String::from_utf8_lossy(&req).contains("Host: 127.0.0.2:1002\r\n"));
    // Now a loop of relative redirects: given up after MAX_REDIRECTS.
    let mut current = id;
    for _ in 0..10 {
        sim.answer_http(current, b"HTTP/1.1 307 Again\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n");
        match http_requests(&sim.io()).first() {
            Some((next, _, req)) => {
                assert_eq!(target(req), "/again");
                current = *next;
            }
            None => break,
        }
    }
    assert_eq!(sim.errors()[0].1, "too many redirects");
    assert_eq!(sim.tr.status()[0].state, TrackerState::Failing);
}

#[test]
fn location_resolution() {
    let base = TrackerUrl::parse("http://a.example:8080/x/announce?k=1").unwrap();
    let r = |l: &str| resolve_location(&base, l).map(|u| (u.host.to_string(), u.port, u.path));
    assert_eq!(r("/y"), Ok(("a.example".into(), 8080, "/y".into())));
    assert_eq!(r("other?q"), Ok(("a.example".into(), 8080, "/x/other?q".into())));
    assert_eq!(r("//b.example/z"), Ok(("b.example".into(), 80, "/z".into())));
    assert_eq!(r("http://[::1]:9/z"), Ok(("[::1]".into(), 9, "/z".into())));
    assert_eq!(r("https://b.example/z"), Err(UrlError::UnsupportedScheme("https".into())));
}

#[test]
fn http_tracker_that_never_answers_times_out_and_its_connection_is_closed() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a"]]);
    sim.tick(Timestamp::ZERO);
    let (id, _, _) = http_requests(&sim.io())[0].clone();
    // Half a response, then silence.
    sim.answer_http(id, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nd8:inter");
    assert_eq!(sim.tr.next_deadline(), Some(Timestamp::from_secs(15)));
    sim.tick(Timestamp::from_secs(15));
    assert_eq!(closes(&sim.io()), [id]);
    assert_eq!(sim.errors()[0].1, "timed out");
    // Data and a close for the dead id are ignored.
    sim.tr.on_http_data(id, b"x", sim.now);
    sim.tr.on_http_closed(id, Ok(()), sim.now);
    assert!(sim.io().is_empty() && sim.events().is_empty());
}

#[test]
fn failure_reason_and_warning_reach_the_log_as_one_line_each() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a"], &["http://127.0.0.1:1002/a"]]);
    sim.tick(Timestamp::ZERO);
    for (id, to, _) in http_requests(&sim.io()) {
        let body: &[u8] = if to.port() == 1001 {
            b"d14:failure reason20:unregistered\ntorrente"
        } else {
            b"d15:warning message4:slow8:intervali60e5:peers0:e"
        };
        sim.answer_http(id, &http_ok(body));
    }
    let events = sim.events();
    assert!(events.iter().any(
        |e| matches!(e, TrackerEvent::Error { message, .. } if message == "tracker refused: unregistered torrent")
    ));
    assert!(events.iter().any(|e| matches!(e, TrackerEvent::Warning { message, .. } if message == "slow")));
}

#[test]
fn close_delimited_answer_ends_with_the_connection() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a"]]);
    sim.tick(Timestamp::ZERO);
    let (id, _, _) = http_requests(&sim.io())[0].clone();
    sim.answer_http(id, b"HTTP/1.0 200 OK\r\n\r\n");
    sim.answer_http(id, &compact_body(60, &["10.0.0.3:3"]));
    sim.tr.on_http_closed(id, Ok(()), sim.now);
    assert!(closes(&sim.io()).is_empty(), "the loop closed it already");
    assert_eq!(sim.peers(), [addr("10.0.0.3:3")]);
}

// ---- peers ------------------------------------------------------------------------------------------

#[test]
fn peers_are_merged_across_trackers_without_duplicates() {
    let mut sim = Sim::new(&[&["http://127.0.0.1:1001/a"], &["http://127.0.0.1:1002/a"]]);
    sim.tick(Timestamp::ZERO);
    let requests = http_requests(&sim.io());
    sim.answer_http(
        requests[0].0,
        &http_ok(&compact_body(60, &["10.0.0.1:1", "10.0.0.2:2", "0.0.0.0:5", "10.0.0.9:0"])),
    );
    assert_eq!(sim.peers(), [addr("10.0.0.1:1"), addr("10.0.0.2:2")]);
    sim.answer_http(requests[1].0, &http_ok(&compact_body(60, &["10.0.0.2:2", "10.0.0.3:3", "10.0.0.3:3"])));
    assert_eq!(sim.peers(), [addr("10.0.0.3:3")]);
    sim.tick(Timestamp::from_secs(60));
    for (id, _, _) in http_requests(&sim.io()) {
        sim.answer_http(id, &http_ok(&compact_body(60, &["10.0.0.1:1"])));
    }
    assert!(sim.peers().is_empty(), "nothing new");
}

// ---- scrape -----------------------------------------------------------------------------------------

#[test]
fn scrape_only_instance_never_announces_and_reports_every_tracker() {
    let tiers = vec![
        vec!["http://127.0.0.1:1001/announce".to_string()],
        vec!["http://127.0.0.1:1002/a".to_string(), "https://x.example/announce".to_string()],
    ];
    let mut rng = Rng::seeded(1);
    let mut tr = Trackers::scrape_only(&tiers, INFO_HASH, Entropy::seeded(1), &mut rng, Timestamp::ZERO);
    assert_eq!(tr.next_deadline(), None);
    tr.on_timeout(Timestamp::from_secs(5), Transfer::default(), &mut rng);
    assert!(tr.poll_io().is_none());
    tr.scrape(Timestamp::from_secs(5));
    assert!(tr.is_scraping());
    let io: Vec<_> = std::iter::from_fn(|| tr.poll_io()).collect();
    let requests = http_requests(&io);
    assert_eq!(requests.len(), 1);
    assert!(target(&requests[0].2).starts_with("/scrape?info_hash=%11%11"));
    let mut body = b"d5:filesd20:".to_vec();
    body.extend_from_slice(&INFO_HASH.0);
    body.extend_from_slice(b"d8:completei2e10:downloadedi4e10:incompletei6eeee");
    tr.on_http_data(requests[0].0, &http_ok(&body), Timestamp::from_secs(5));
    assert!(!tr.is_scraping());
    let mut results: Vec<(String, Result<ScrapeCounts, TrackerError>)> = std::iter::from_fn(|| tr.poll_event())
        .filter_map(|e| match e {
            TrackerEvent::Scraped { url, result } => Some((url, result)),
            _ => None,
        })
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        results,
        [
            ("http://127.0.0.1:1001/announce".to_string(), Ok(ScrapeCounts { seeders: 2, leechers: 6, completed: 4 })),
            ("http://127.0.0.1:1002/a".to_string(), Err(TrackerError::NoScrape)),
            (
                "https://x.example/announce".to_string(),
                Err(TrackerError::Url(UrlError::UnsupportedScheme("https".into())))
            ),
        ]
    );
}

#[test]
fn bad_urls_fail_fast_and_the_tier_moves_on() {
    for seed in 0..8 {
        let tiers = vec![vec!["wss://t.example/announce".to_string(), "http://127.0.0.1:1001/a".to_string()]];
        let mut rng = Rng::seeded(seed);
        let mut tr = Trackers::new(&tiers, identity(), Entropy::seeded(1), &mut rng, Timestamp::ZERO);
        tr.on_timeout(Timestamp::ZERO, Transfer::default(), &mut rng);
        let io: Vec<_> = std::iter::from_fn(|| tr.poll_io()).collect();
        assert_eq!(http_requests(&io).len(), 1, "the valid tracker is asked at time zero (seed {seed})");
    }
}

// ---- fan-out: a torrent with many trackers ----------------------------------------------------------

/// `n` tiers of one HTTP tracker each, on distinct loopback ports from 10000.
fn many_tiers(n: u16) -> Sim {
    let urls: Vec<String> = (0..n).map(|i| format!("http://127.0.0.1:{}/announce", 10_000 + i)).collect();
    let tiers: Vec<Vec<String>> = urls.into_iter().map(|u| vec![u]).collect();
    let mut rng = Rng::seeded(42);
    let tr = Trackers::new(&tiers, identity(), Entropy::seeded(1), &mut rng, Timestamp::ZERO);
    Sim { tr, now: Timestamp::ZERO, rng, transfer: Transfer { uploaded: 0, downloaded: 0, left: 1000 } }
}

#[test]
fn many_tiers_start_at_most_eight_exchanges_and_queue_the_rest() {
    let mut sim = many_tiers(100);
    sim.tick(Timestamp::ZERO);
    let started = http_requests(&sim.io());
    assert_eq!(started.len(), MAX_IN_FLIGHT);
    let ports: Vec<u16> = started.iter().map(|(_, a, _)| a.port()).collect();
    assert_eq!(ports, (10_000..10_008).collect::<Vec<_>>(), "in tier order");
    // Nothing to do before a silent tracker's patience runs out (a quarter of it, with 92 tiers queued): no
    // busy loop on the waiting tiers.
    let patience = FIRST_ANSWER_PATIENCE / 4;
    assert_eq!(sim.tr.next_deadline(), Some(Timestamp::ZERO + patience));
    sim.tick(Timestamp::ZERO + patience - crate::time::millis(1));
    assert!(sim.io().is_empty());
}

/// `n` tiers of one UDP tracker each (ports from 20000), then `m` of one HTTP tracker each (from 10000).
fn udp_then_http_tiers(n: u16, m: u16) -> Sim {
    let mut tiers: Vec<Vec<String>> = (0..n).map(|i| vec![format!("udp://127.0.0.1:{}", 20_000 + i)]).collect();
    tiers.extend((0..m).map(|i| vec![format!("http://127.0.0.1:{}/announce", 10_000 + i)]));
    let mut rng = Rng::seeded(42);
    let tr = Trackers::new(&tiers, identity(), Entropy::seeded(1), &mut rng, Timestamp::ZERO);
    Sim { tr, now: Timestamp::ZERO, rng, transfer: Transfer { uploaded: 0, downloaded: 0, left: 1000 } }
}

/// A silent UDP tracker past its patience with no UDP tier waiting, while the HTTP budget is full of newer
/// exchanges: nothing is due until an HTTP exchange's patience ends. (Waking at the UDP one's patience end
/// would find nothing to do, again and again: a spin.)
#[test]
fn a_full_budget_waits_for_its_own_trackers_patience_not_the_other_budgets() {
    let mut sim = udp_then_http_tiers(1, 30);
    sim.tick(Timestamp::ZERO);
    let first = http_requests(&sim.io());
    assert_eq!(first.len(), MAX_IN_FLIGHT);
    let half = Timestamp::from_millis(500);
    sim.now = half;
    for (id, _, _) in &first {
        sim.tr.on_http_closed(*id, Err(ErrorKind::ConnectionRefused), half);
    }
    sim.tick(half);
    assert_eq!(http_requests(&sim.io()).len(), MAX_IN_FLIGHT, "eight more started at 0.5 s");
    let mut steps = 0;
    while sim.step_until(Timestamp::from_secs(5)) {
        steps += 1;
        assert!(steps < 1_000, "next_deadline keeps returning a moment with nothing to do");
        sim.io();
    }
    assert!(sim.now >= half + FIRST_ANSWER_PATIENCE);
}

#[test]
fn udp_exchanges_have_their_own_larger_budget_and_do_not_hold_http_slots() {
    let mut sim = udp_then_http_tiers(600, 20);
    sim.tick(Timestamp::ZERO);
    let io = sim.io();
    assert_eq!(udp_sends(&io).len(), MAX_UDP_IN_FLIGHT, "a connect request to each of the first 512 UDP tiers");
    let http: Vec<u16> = http_requests(&io).iter().map(|(_, a, _)| a.port()).collect();
    assert_eq!(http, (10_000..10_000 + MAX_IN_FLIGHT as u16).collect::<Vec<_>>(), "HTTP tiers start beside them");
    assert_eq!(sim.tr.in_flight_of(Budget::Datagrams), MAX_UDP_IN_FLIGHT);
    assert_eq!(sim.tr.in_flight_of(Budget::Sockets), MAX_IN_FLIGHT);
    // The silent UDP trackers give their slots to the 88 waiting UDP tiers after their patience.
    assert!(sim.step_until(Timestamp::ZERO + FIRST_ANSWER_PATIENCE));
    let next: Vec<u16> = udp_sends(&sim.io()).iter().map(|(a, _)| a.port()).filter(|&p| p >= 20_512).collect();
    assert_eq!(next, (20_512..20_600).collect::<Vec<_>>());
}

#[test]
fn refused_trackers_free_their_slot_at_once() {
    let mut sim = many_tiers(20);
    sim.tick(Timestamp::ZERO);
    let started = http_requests(&sim.io());
    for (id, _, _) in &started[..3] {
        sim.tr.on_http_closed(*id, Err(ErrorKind::ConnectionRefused), sim.now);
    }
    assert_eq!(sim.tr.next_deadline(), Some(Timestamp::ZERO), "waiting tiers are due now");
    sim.tick(sim.now);
    let next: Vec<u16> = http_requests(&sim.io()).iter().map(|(_, a, _)| a.port()).collect();
    assert_eq!(next, [10_008, 10_009, 10_010]);
}

#[test]
fn silent_never_answered_trackers_give_their_slots_up_after_patience_while_others_wait() {
    let mut sim = many_tiers(20);
    sim.tick(Timestamp::ZERO);
    let first = http_requests(&sim.io());
    sim.events();
    assert!(sim.step_until(Timestamp::ZERO + FIRST_ANSWER_PATIENCE));
    assert_eq!(sim.now, Timestamp::ZERO + FIRST_ANSWER_PATIENCE);
    let io = sim.io();
    let closed = closes(&io);
    assert_eq!(closed.len(), MAX_IN_FLIGHT, "every silent one's connection is closed");
    assert!(first.iter().all(|(id, _, _)| closed.contains(id)));
    let next: Vec<u16> = http_requests(&io).iter().map(|(_, a, _)| a.port()).collect();
    assert_eq!(next, (10_008..10_016).collect::<Vec<_>>());
    let errors = sim.errors();
    assert_eq!(errors.len(), MAX_IN_FLIGHT);
    assert!(errors.iter().all(|(_, m)| m == "timed out"), "{errors:?}");
}

#[test]
fn the_one_real_tracker_in_the_middle_of_many_silent_ones_is_reached_in_seconds() {
    let mut sim = many_tiers(200);
    let real = 10_100;
    let mut asked_at = None;
    sim.tick(Timestamp::ZERO);
    while asked_at.is_none() && sim.now < Timestamp::from_secs(300) {
        for (id, a, _) in http_requests(&sim.io()) {
            if a.port() == real {
                asked_at = Some(sim.now);
                sim.answer_http(id, &http_ok(&compact_body(1800, &["10.0.0.1:6881"])));
            }
        }
        assert!(sim.tr.in_flight() <= MAX_IN_FLIGHT);
        if asked_at.is_none() {
            assert!(sim.step_until(Timestamp::from_secs(300)));
        }
    }
    // 100 silent trackers before it, 8 at a time, 1 s each.
    let asked_at = asked_at.expect("the real tracker was never asked");
    assert!(asked_at <= Timestamp::from_secs(13), "asked only at {asked_at}");
    assert_eq!(sim.peers(), [addr("10.0.0.1:6881")]);
}

#[test]
fn a_single_silent_tracker_keeps_its_slot_for_the_full_time_limit() {
    let mut sim = many_tiers(3);
    sim.tick(Timestamp::ZERO);
    assert_eq!(http_requests(&sim.io()).len(), 3);
    assert_eq!(sim.tr.next_deadline(), Some(Timestamp::ZERO + Timeouts::default().http), "nobody waits");
}

#[test]
fn trackers_that_answered_before_keep_their_slots_longer_while_others_wait() {
    let mut sim = many_tiers(9);
    sim.tr.set_timeouts(Timeouts { http: secs(100), ..Timeouts::default() });
    sim.tick(Timestamp::ZERO);
    for (id, _, _) in http_requests(&sim.io()) {
        sim.answer_http(id, &http_ok(&compact_body(30, &[])));
    }
    sim.tick(sim.now);
    let ninth = http_requests(&sim.io());
    assert_eq!(ninth.len(), 1, "the ninth tier takes a freed slot and stays silent");
    // At 30 s the eight re-announce while the never-answered one still holds a slot past its 2 s: it
    // gives the slot up, and all eight start (and stay silent).
    sim.tick(Timestamp::from_secs(30));
    let io = sim.io();
    assert_eq!(closes(&io), [ninth[0].0]);
    let eight = http_requests(&io);
    assert_eq!(eight.len(), 8);
    // Nobody waits until the ninth tier's back-off ends at 90 s: nothing is cut meanwhile, although the
    // eight have been silent for far longer than their first-answer patience.
    while sim.step_until(Timestamp::from_secs(89)) {
        assert!(closes(&sim.io()).is_empty());
    }
    // At 90 s one of them, silent for 60 s (more than the 15 s a tracker that answered before gets),
    // gives its slot to the ninth.
    sim.tick(Timestamp::from_secs(90));
    let io = sim.io();
    assert_eq!(closes(&io).len(), 1);
    assert!(eight.iter().any(|(id, _, _)| closes(&io).contains(id)));
    let next: Vec<u16> = http_requests(&io).iter().map(|(_, a, _)| a.port()).collect();
    assert_eq!(next, [10_008]);
    let answered = sim.tr.trackers.iter().find(|t| t.started_ok).unwrap();
    assert_eq!(tiers::patience_for(answered, 1_000), Some(ANSWERED_PATIENCE));
}

#[test]
fn a_cut_tracker_is_retried_after_its_tier_backs_off_with_more_patience() {
    let mut sim = many_tiers(9);
    sim.tick(Timestamp::ZERO);
    sim.io();
    assert!(sim.step_until(Timestamp::ZERO + FIRST_ANSWER_PATIENCE));
    sim.io();
    // The first tracker was cut at 1 s: its tier waits the whole-tier back-off (60 s).
    let first = sim.tr.trackers.iter().position(|t| t.url_text.ends_with(":10000/announce")).unwrap();
    assert_eq!(sim.tr.trackers[first].unanswered, 1);
    assert_eq!(sim.tr.tiers[sim.tr.trackers[first].tier].next_at, Some(Timestamp::from_secs(61)));
    assert_eq!(tiers::patience_for(&sim.tr.trackers[first], 0), Some(secs(2)), "doubled for the next try");
    assert_eq!(tiers::patience_for(&sim.tr.trackers[first], 17), Some(secs(1)), "halved while 17 tiers queue");
    assert_eq!(tiers::patience_for(&sim.tr.trackers[first], 65), Some(crate::time::millis(500)));
}

#[test]
fn scrapes_of_many_trackers_run_eight_at_a_time() {
    let urls: Vec<Vec<String>> = (0..20).map(|i| vec![format!("http://127.0.0.1:{}/announce", 10_000 + i)]).collect();
    let mut rng = Rng::seeded(1);
    let mut tr = Trackers::scrape_only(&urls, INFO_HASH, Entropy::seeded(1), &mut rng, Timestamp::ZERO);
    let now = Timestamp::ZERO;
    tr.scrape(now);
    let io: Vec<TrackerIo> = std::iter::from_fn(|| tr.poll_io()).collect();
    let started = http_requests(&io);
    assert_eq!(started.len(), MAX_IN_FLIGHT);
    tr.on_http_closed(started[0].0, Err(ErrorKind::ConnectionRefused), now);
    let io: Vec<TrackerIo> = std::iter::from_fn(|| tr.poll_io()).collect();
    assert_eq!(http_requests(&io).len(), 1, "one finished, one more starts");
    assert!(tr.is_scraping());
}

#[test]
fn a_waiting_tracker_costs_little_memory() {
    // What every tracker holds, whether or not it ever becomes active; the requests are boxed.
    let size = std::mem::size_of::<Tracker>();
    println!("Tracker: {size} bytes");
    assert!(size <= 192, "{size} bytes");
}

#[test]
fn untried_trackers_go_before_retries_of_dead_ones() {
    let mut sim = many_tiers(2000);
    let mut first_try_of_last = None;
    sim.tick(Timestamp::ZERO);
    while first_try_of_last.is_none() && sim.now < Timestamp::from_secs(1000) {
        for (_, a, _) in http_requests(&sim.io()) {
            if a.port() == 10_000 + 1999 {
                first_try_of_last = Some(sim.now);
            }
        }
        if first_try_of_last.is_none() {
            assert!(sim.step_until(Timestamp::from_secs(1000)));
        }
    }
    // 2000 silent trackers, 8 at a time, 0.25 s each while more than 64 tiers queue: the last is first asked at
    // 62.25 s, although the first ones come due again after a minute.
    assert_eq!(first_try_of_last, Some(Timestamp::from_millis(62_250)));
}
