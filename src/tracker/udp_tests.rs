//! BEP 15 tests: byte layouts, reply decoding, and one exchange under simulated time.

use std::collections::HashSet;

use super::*;
use crate::tracker::message::Event;
use crate::tracker::Transfer;

const T0: Timestamp = Timestamp::ZERO;
const TRACKER: &str = "127.0.0.1:6969";

fn at(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn tracker() -> SocketAddr {
    TRACKER.parse().unwrap()
}

fn params() -> AnnounceParams {
    AnnounceParams {
        info_hash: InfoHash([0xab; 20]),
        peer_id: *b"-RL0001-012345678901",
        port: 0x1ae1,
        transfer: Transfer { uploaded: 0x0102, downloaded: 0x0304, left: 0x0506 },
        event: Event::Started,
        numwant: 50,
        key: 0xcafe_f00d,
        tracker_id: None,
    }
}

fn connect_reply(tid: u32, connection_id: u64) -> Vec<u8> {
    let mut d = vec![0, 0, 0, 0];
    d.extend_from_slice(&tid.to_be_bytes());
    d.extend_from_slice(&connection_id.to_be_bytes());
    d
}

fn announce_reply(tid: u32, peers: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, 0, 1];
    d.extend_from_slice(&tid.to_be_bytes());
    d.extend_from_slice(&1800u32.to_be_bytes());
    d.extend_from_slice(&3u32.to_be_bytes());
    d.extend_from_slice(&7u32.to_be_bytes());
    d.extend_from_slice(peers);
    d
}

fn error_reply(tid: u32, message: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 0, 0, 3];
    d.extend_from_slice(&tid.to_be_bytes());
    d.extend_from_slice(message);
    d
}

#[track_caller]
fn sent(step: Step) -> Send {
    match step {
        Step::Send(s) => s,
        other => panic!("expected a send, got {other:?}"),
    }
}

fn tid_of(datagram: &[u8]) -> u32 {
    be_u32(datagram, 12)
}

fn action_of(datagram: &[u8]) -> u32 {
    be_u32(datagram, 8)
}

fn feed(ex: &mut UdpExchange, from: SocketAddr, d: &[u8], now: Timestamp, rng: &mut Entropy) -> Step {
    let reply = decode_reply(d).unwrap();
    ex.on_reply(from, &reply, now, rng)
}

fn start(connection: Option<ConnectionId>, rng: &mut Entropy) -> (UdpExchange, Send) {
    let (ex, step) =
        UdpExchange::start(UdpWork::Announce(params()), vec![tracker()], connection, Retransmit::default(), 0, T0, rng);
    (ex, sent(step))
}

// ---- byte layouts -------------------------------------------------------------------------------------

#[test]
fn connect_packet_is_exact() {
    assert_eq!(encode_connect(0x0102_0304), [0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]);
}

#[test]
fn announce_packet_is_98_bytes_with_every_field_in_place() {
    let p = encode_announce(0x1122_3344_5566_7788, 0xa0b0_c0d0, &params());
    assert_eq!(p.len(), 98);
    assert_eq!(p[0..8], 0x1122_3344_5566_7788u64.to_be_bytes());
    assert_eq!(p[8..12], [0, 0, 0, 1]);
    assert_eq!(p[12..16], [0xa0, 0xb0, 0xc0, 0xd0]);
    assert_eq!(p[16..36], [0xab; 20]);
    assert_eq!(&p[36..56], b"-RL0001-012345678901");
    assert_eq!(p[56..64], 0x0304u64.to_be_bytes(), "downloaded");
    assert_eq!(p[64..72], 0x0506u64.to_be_bytes(), "left");
    assert_eq!(p[72..80], 0x0102u64.to_be_bytes(), "uploaded");
    assert_eq!(p[80..84], [0, 0, 0, 2], "event started");
    assert_eq!(p[84..88], [0; 4], "ip");
    assert_eq!(p[88..92], [0xca, 0xfe, 0xf0, 0x0d], "key");
    assert_eq!(p[92..96], 50i32.to_be_bytes(), "num_want");
    assert_eq!(p[96..98], [0x1a, 0xe1], "port");
    let mut stopped = params();
    stopped.event = Event::Stopped;
    assert_eq!(encode_announce(1, 1, &stopped)[80..84], [0, 0, 0, 3]);
    stopped.event = Event::Completed;
    assert_eq!(encode_announce(1, 1, &stopped)[80..84], [0, 0, 0, 1]);
    stopped.event = Event::None;
    assert_eq!(encode_announce(1, 1, &stopped)[80..84], [0, 0, 0, 0]);
}

#[test]
fn scrape_packet_is_exact() {
    let p = encode_scrape(7, 9, &InfoHash([0xcd; 20]));
    assert_eq!(p[0..16], [0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 9]);
    assert_eq!(p[16..36], [0xcd; 20]);
}

#[test]
fn replies_decode_and_short_oversized_unknown_are_rejected() {
    assert_eq!(
        decode_reply(&connect_reply(5, 0xfeed)),
        Ok(Reply::Connect { transaction_id: 5, connection_id: 0xfeed })
    );
    let a = announce_reply(6, &[1, 2, 3, 4, 0, 80]);
    assert_eq!(
        decode_reply(&a),
        Ok(Reply::Announce { transaction_id: 6, interval: 1800, leechers: 3, seeders: 7, peers: &[1, 2, 3, 4, 0, 80] })
    );
    let mut s = vec![0, 0, 0, 2, 0, 0, 0, 8];
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
    assert_eq!(decode_reply(&s), Ok(Reply::Scrape { transaction_id: 8, seeders: 1, completed: 2, leechers: 3 }));
    assert_eq!(decode_reply(&error_reply(9, b"nope")), Ok(Reply::Error { transaction_id: 9, message: b"nope" }));
    assert_eq!(decode_reply(&[0; 7]), Err(UdpError::Short { len: 7 }));
    assert_eq!(decode_reply(&connect_reply(5, 1)[..15]), Err(UdpError::Short { len: 15 }));
    assert_eq!(decode_reply(&announce_reply(5, &[])[..19]), Err(UdpError::Short { len: 19 }));
    assert_eq!(decode_reply(&s[..19]), Err(UdpError::Short { len: 19 }));
    assert_eq!(decode_reply(&[0, 0, 0, 9, 0, 0, 0, 0]), Err(UdpError::UnknownAction(9)));
    let huge = announce_reply(1, &vec![0; MAX_REPLY_LEN]);
    assert_eq!(decode_reply(&huge), Err(UdpError::Oversized { len: huge.len() }));
}

// ---- one exchange -------------------------------------------------------------------------------------

#[test]
fn awaiting_connect_reply_then_announce_then_peers() {
    let mut rng = Entropy::seeded(1);
    let (mut ex, first) = start(None, &mut rng);
    assert_eq!(first.addr, tracker());
    assert_eq!(first.datagram.len(), CONNECT_LEN);
    assert_eq!(action_of(&first.datagram), ACTION_CONNECT);
    let tid = tid_of(&first.datagram);
    let second = sent(feed(&mut ex, tracker(), &connect_reply(tid, 0x77), at(1), &mut rng));
    assert_eq!(second.datagram.len(), ANNOUNCE_LEN);
    assert_eq!(second.datagram[0..8], 0x77u64.to_be_bytes());
    assert_ne!(tid_of(&second.datagram), tid, "a new transaction id per request");
    assert_eq!(ex.connection(), Some(ConnectionId { id: 0x77, obtained: at(1) }));
    let reply = announce_reply(tid_of(&second.datagram), &[127, 0, 0, 1, 0x1a, 0xe1, 9]);
    match feed(&mut ex, tracker(), &reply, at(2), &mut rng) {
        Step::Done(Ok(Answer::Announce(r))) => {
            assert_eq!(r.peers, ["127.0.0.1:6881".parse::<SocketAddr>().unwrap()]);
            assert_eq!((r.seeders, r.leechers), (Some(7), Some(3)));
            assert_eq!(r.interval, Some(secs(1800)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ipv6_tracker_replies_carry_18_byte_peers() {
    let mut rng = Entropy::seeded(2);
    let v6: SocketAddr = "[::1]:6969".parse().unwrap();
    let fresh = ConnectionId { id: 1, obtained: T0 };
    let (mut ex, step) =
        UdpExchange::start(UdpWork::Announce(params()), vec![v6], Some(fresh), Retransmit::default(), 0, T0, &mut rng);
    let first = sent(step);
    let mut peers = Vec::new();
    codec::encode_compact("[2001:db8::7]:51413".parse().unwrap(), &mut peers);
    let reply = announce_reply(tid_of(&first.datagram), &peers);
    match feed(&mut ex, v6, &reply, at(1), &mut rng) {
        Step::Done(Ok(Answer::Announce(r))) => {
            assert_eq!(r.peers, ["[2001:db8::7]:51413".parse::<SocketAddr>().unwrap()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fresh_connection_id_is_reused_and_expired_one_renewed() {
    let mut rng = Entropy::seeded(3);
    let id = ConnectionId { id: 0x55, obtained: T0 };
    let (_, step) = UdpExchange::start(
        UdpWork::Announce(params()),
        vec![tracker()],
        Some(id),
        Retransmit::default(),
        0,
        at(59),
        &mut rng,
    );
    let d = sent(step).datagram;
    assert_eq!((d.len(), d[0..8].to_vec()), (ANNOUNCE_LEN, 0x55u64.to_be_bytes().to_vec()));
    let (_, step) = UdpExchange::start(
        UdpWork::Announce(params()),
        vec![tracker()],
        Some(id),
        Retransmit::default(),
        0,
        at(60),
        &mut rng,
    );
    assert_eq!(sent(step).datagram.len(), CONNECT_LEN, "one minute old: connect again");
}

#[test]
fn retransmits_after_15_times_2_pow_n_then_gives_up() {
    let mut rng = Entropy::seeded(4);
    let (mut ex, first) = start(None, &mut rng);
    let mut t = 0;
    for n in 0..=MAX_RETRANSMIT_EXPONENT {
        let wait = 15 * (1 << n);
        assert_eq!(ex.next_deadline(), at(t + wait), "wait {n}");
        let just_before = Timestamp::from_micros((t + wait) * 1_000_000 - 1);
        assert_eq!(ex.on_timeout(just_before, &mut rng), Step::Idle);
        t += wait;
        if n < MAX_RETRANSMIT_EXPONENT {
            let again = sent(ex.on_timeout(at(t), &mut rng));
            assert_eq!(again.datagram, first.datagram, "same connect, same transaction id");
        }
    }
    assert_eq!(t, 15 * 511, "3840 s is the last wait");
    assert_eq!(ex.on_timeout(at(t), &mut rng), Step::Done(Err(TrackerError::TimedOut)));
}

#[test]
fn retransmission_base_is_overridable_and_addresses_rotate() {
    let mut rng = Entropy::seeded(5);
    let other: SocketAddr = "127.0.0.2:6969".parse().unwrap();
    let schedule = Retransmit { base: Duration::from_millis(100), max_exponent: 2 };
    let (mut ex, step) =
        UdpExchange::start(UdpWork::Scrape(InfoHash([1; 20])), vec![tracker(), other], None, schedule, 0, T0, &mut rng);
    assert_eq!(sent(step).addr, tracker());
    assert_eq!(ex.next_deadline(), Timestamp::from_millis(100));
    assert_eq!(sent(ex.on_timeout(Timestamp::from_millis(100), &mut rng)).addr, other);
    assert_eq!(ex.next_deadline(), Timestamp::from_millis(300));
    assert_eq!(sent(ex.on_timeout(Timestamp::from_millis(300), &mut rng)).addr, tracker());
    assert_eq!(ex.on_timeout(Timestamp::from_millis(700), &mut rng), Step::Done(Err(TrackerError::TimedOut)));
}

#[test]
fn connection_id_expiring_during_retransmission_goes_back_to_connect() {
    let mut rng = Entropy::seeded(6);
    let (mut ex, first) = start(None, &mut rng);
    let announce = sent(feed(&mut ex, tracker(), &connect_reply(tid_of(&first.datagram), 9), at(0), &mut rng));
    assert_eq!(announce.datagram.len(), ANNOUNCE_LEN);
    // 15 s: still fresh, the announce goes again.
    assert_eq!(sent(ex.on_timeout(at(15), &mut rng)).datagram.len(), ANNOUNCE_LEN);
    // 45 s: still fresh.
    assert_eq!(sent(ex.on_timeout(at(45), &mut rng)).datagram.len(), ANNOUNCE_LEN);
    // 105 s: the id is over a minute old: connect first.
    let again = sent(ex.on_timeout(at(105), &mut rng));
    assert_eq!(again.datagram.len(), CONNECT_LEN);
    assert_eq!(ex.connection(), None);
    let renewed = sent(feed(&mut ex, tracker(), &connect_reply(tid_of(&again.datagram), 10), at(106), &mut rng));
    assert_eq!(renewed.datagram[0..8], 10u64.to_be_bytes());
}

#[test]
fn wrong_transaction_id_stranger_and_wrong_action_are_ignored() {
    let mut rng = Entropy::seeded(7);
    let (mut ex, first) = start(None, &mut rng);
    let tid = tid_of(&first.datagram);
    let stranger: SocketAddr = "127.0.0.9:6969".parse().unwrap();
    assert_eq!(feed(&mut ex, tracker(), &connect_reply(tid ^ 1, 5), at(1), &mut rng), Step::Idle);
    assert_eq!(feed(&mut ex, stranger, &connect_reply(tid, 5), at(1), &mut rng), Step::Idle);
    assert_eq!(feed(&mut ex, tracker(), &announce_reply(tid, &[]), at(1), &mut rng), Step::Idle);
    assert_eq!(feed(&mut ex, stranger, &error_reply(tid, b"x"), at(1), &mut rng), Step::Idle);
    assert_eq!(ex.connection(), None);
    // The real answer still works afterwards.
    assert_eq!(sent(feed(&mut ex, tracker(), &connect_reply(tid, 5), at(2), &mut rng)).datagram.len(), ANNOUNCE_LEN);
}

#[test]
fn error_action_is_a_sanitised_failure_and_forgets_the_connection() {
    let mut rng = Entropy::seeded(8);
    let id = ConnectionId { id: 3, obtained: T0 };
    let (mut ex, first) = start(Some(id), &mut rng);
    let step = feed(&mut ex, tracker(), &error_reply(tid_of(&first.datagram), b"bad\nconnection id"), at(1), &mut rng);
    assert_eq!(step, Step::Done(Err(TrackerError::Failure("bad connection id".into()))));
    assert_eq!(ex.connection(), None);
}

#[test]
fn scrape_exchange_reads_counts() {
    let mut rng = Entropy::seeded(9);
    let id = ConnectionId { id: 3, obtained: T0 };
    let (mut ex, step) = UdpExchange::start(
        UdpWork::Scrape(InfoHash([2; 20])),
        vec![tracker()],
        Some(id),
        Retransmit::default(),
        0,
        T0,
        &mut rng,
    );
    let d = sent(step).datagram;
    assert_eq!((d.len(), action_of(&d)), (SCRAPE_LEN, ACTION_SCRAPE));
    let mut reply = vec![0, 0, 0, 2];
    reply.extend_from_slice(&tid_of(&d).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6]);
    assert_eq!(
        feed(&mut ex, tracker(), &reply, at(1), &mut rng),
        Step::Done(Ok(Answer::Scrape(ScrapeCounts { seeders: 4, completed: 5, leechers: 6 })))
    );
}

// ---- transaction-id namespaces ------------------------------------------------------------------------

#[test]
fn transaction_ids_carry_the_namespace_on_top_and_random_bits_below() {
    let mut rng = Entropy::seeded(10);
    for ns in [0u16, 1, 2, 0x800, 4095] {
        let ids: Vec<u32> = (0..64).map(|_| draw_transaction_id(ns, &mut rng)).collect();
        for &id in &ids {
            assert_eq!(txn_namespace_of(id), ns, "{id:#010x}");
            assert_eq!(id >> (32 - TXN_NAMESPACE_BITS), u32::from(ns), "{id:#010x}");
            assert_eq!(udp_reply_namespace(&connect_reply(id, 1)), Some(ns));
            assert_eq!(udp_reply_namespace(&error_reply(id, b"")), Some(ns), "the 8-byte header is enough");
        }
        let low: HashSet<u32> = ids.iter().map(|id| id & ((1 << (32 - TXN_NAMESPACE_BITS)) - 1)).collect();
        assert!(low.len() > 60, "the low 20 bits are random: {} distinct of 64", low.len());
    }
    assert_eq!(TXN_NAMESPACES, 4096);
    assert_eq!(udp_reply_namespace(&[0xff; 7]), None, "too short to hold a transaction id");
    assert_eq!(udp_reply_namespace(&[]), None);
    assert_eq!(udp_reply_namespace(&[0, 0, 0, 1, 0xab, 0xcd, 0xef, 0x01]), Some(0xabc));
}

#[test]
fn an_exchange_draws_every_transaction_id_in_its_namespace() {
    // Connect, the request after it, and the connect again after the connection id expired.
    let mut rng = Entropy::seeded(11);
    let ns = 0x5a7;
    let (mut ex, step) =
        UdpExchange::start(UdpWork::Announce(params()), vec![tracker()], None, Retransmit::default(), ns, T0, &mut rng);
    let connect = sent(step);
    assert_eq!(txn_namespace_of(tid_of(&connect.datagram)), ns);
    let announce = sent(feed(&mut ex, tracker(), &connect_reply(tid_of(&connect.datagram), 9), at(0), &mut rng));
    assert_eq!(announce.datagram.len(), ANNOUNCE_LEN);
    assert_eq!(txn_namespace_of(tid_of(&announce.datagram)), ns);
    assert_eq!(sent(ex.on_timeout(at(15), &mut rng)).datagram.len(), ANNOUNCE_LEN);
    assert_eq!(sent(ex.on_timeout(at(45), &mut rng)).datagram.len(), ANNOUNCE_LEN);
    let again = sent(ex.on_timeout(at(105), &mut rng));
    assert_eq!(again.datagram.len(), CONNECT_LEN);
    assert_eq!(txn_namespace_of(tid_of(&again.datagram)), ns);
    assert_eq!(udp_reply_namespace(&connect_reply(tid_of(&again.datagram), 10)), Some(ns));
}
