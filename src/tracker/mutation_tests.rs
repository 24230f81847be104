//! Seeded mutation tests of every tracker reply decoder (STYLE §7.12 item 4): random bytes, bit flips,
//! truncations and splices of valid replies. Each asserts no panic and bounded output; a failing case
//! prints its seed.

use std::io::ErrorKind;
use std::net::SocketAddr;

use super::codec::{self, encode_compact, Value};
use super::http::{self, ResponseParser, MAX_BODY};
use super::message::MAX_PEERS_PER_REPLY;
use super::udp::{self, decode_reply, Reply, Retransmit, Step, UdpExchange, UdpWork};
use super::*;

const ROUNDS: u64 = 3000;

fn http_corpus() -> Vec<Vec<u8>> {
    let mut compact = Vec::new();
    for p in ["10.0.0.1:1", "127.0.0.1:6881", "192.168.1.1:51413"] {
        encode_compact(p.parse().unwrap(), &mut compact);
    }
    let mut six = Vec::new();
    encode_compact("[2001:db8::1]:6881".parse().unwrap(), &mut six);
    let mut announce =
        format!("d8:completei2e10:incompletei1e8:intervali1800e12:min intervali60e5:peers{}:", compact.len())
            .into_bytes();
    announce.extend_from_slice(&compact);
    announce.extend_from_slice(format!("6:peers6{}:", six.len()).as_bytes());
    announce.extend_from_slice(&six);
    announce.extend_from_slice(b"10:tracker id3:abc15:warning message2:hie");
    let dict =
        b"d8:intervali60e5:peersld2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti1eed2:ip3:::14:porti2eeee"
            .to_vec();
    let mut scrape = b"d5:filesd20:".to_vec();
    scrape.extend_from_slice(&[0x11; 20]);
    scrape.extend_from_slice(b"d8:completei2e10:downloadedi4e10:incompletei6eeee");
    let with_length = |body: &[u8]| {
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        r
    };
    let chunked = |body: &[u8]| {
        let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.chunks(7) {
            r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            r.extend_from_slice(part);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    };
    let mut close = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    close.extend_from_slice(&dict);
    vec![
        with_length(&announce),
        chunked(&announce),
        with_length(&dict),
        close,
        with_length(&scrape),
        chunked(&scrape),
        with_length(b"d14:failure reason5:nope!e"),
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n".to_vec(),
    ]
}

fn udp_corpus() -> Vec<Vec<u8>> {
    let mut connect = vec![0, 0, 0, 0, 1, 2, 3, 4];
    connect.extend_from_slice(&0x42u64.to_be_bytes());
    let mut announce = vec![0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 7, 8, 0, 0, 0, 1, 0, 0, 0, 2];
    for p in ["10.0.0.1:1", "127.0.0.1:6881"] {
        encode_compact(p.parse().unwrap(), &mut announce);
    }
    let scrape = vec![0, 0, 0, 2, 1, 2, 3, 4, 0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 3];
    let mut error = vec![0, 0, 0, 3, 1, 2, 3, 4];
    error.extend_from_slice(b"unregistered torrent");
    vec![connect, announce, scrape, error]
}

/// One mutation of a corpus entry (or pure noise), chosen by the generator.
fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let base = &corpus[rng.below(corpus.len() as u64) as usize];
    match rng.below(5) {
        0 => {
            let mut noise = vec![0; rng.below(4096) as usize];
            rng.fill(&mut noise);
            noise
        }
        1 => {
            let mut m = base.clone();
            for _ in 0..=rng.below(8) {
                if m.is_empty() {
                    break;
                }
                let i = rng.below(m.len() as u64) as usize;
                m[i] ^= 1 << rng.below(8);
            }
            m
        }
        2 => base[..rng.below(base.len() as u64 + 1) as usize].to_vec(),
        3 => {
            let mut m = base.clone();
            let at = rng.below(m.len() as u64 + 1) as usize;
            let mut noise = vec![0; rng.below(64) as usize];
            rng.fill(&mut noise);
            m.splice(at..at, noise);
            m
        }
        _ => {
            // Replace a digit run: lengths and counts are where decoders get hurt.
            let mut m = base.clone();
            if let Some(i) = (0..m.len()).filter(|&i| m[i].is_ascii_digit()).nth(rng.below(16) as usize) {
                let huge = b"99999999999999999999";
                let take = 1 + rng.below(huge.len() as u64) as usize;
                m.splice(i..i + 1, huge[..take].iter().copied());
            }
            m
        }
    }
}

#[test]
fn http_parser_and_body_decoders_survive_mutations() {
    let corpus = http_corpus();
    let hash = InfoHash([0x11; 20]);
    for seed in 0..ROUNDS {
        let mut rng = Rng::seeded(seed);
        let input = mutate(&mut rng, &corpus);
        // Split at random points: framing must not depend on read sizes.
        let mut parser = ResponseParser::new();
        let mut rest = &input[..];
        let mut outcome = None;
        while !rest.is_empty() && outcome.is_none() {
            let n = 1 + rng.below(rest.len() as u64) as usize;
            match parser.feed(&rest[..n]) {
                Ok(Some(r)) => outcome = Some(Ok(r)),
                Ok(None) => {}
                Err(e) => outcome = Some(Err(e)),
            }
            rest = &rest[n..];
        }
        let outcome = outcome.unwrap_or_else(|| parser.on_eof());
        if let Ok(response) = outcome {
            assert!(response.body.len() <= MAX_BODY, "seed {seed}");
            if let Ok(reply) = http::decode_announce(&response.body) {
                assert!(reply.peers.len() <= MAX_PEERS_PER_REPLY, "seed {seed}");
                let text = reply.warning.unwrap_or_default();
                assert!(text.chars().count() <= codec::MAX_REMOTE_TEXT + 1, "seed {seed}");
                assert!(!text.contains('\n'), "seed {seed}");
            }
            let _ = http::decode_scrape(&response.body, &hash);
        }
        // The body decoders on raw bytes too.
        let _ = http::decode_announce(&input);
        let _ = http::decode_scrape(&input, &hash);
        if let Ok(v) = Value::parse(&input) {
            let _ = v.entries().count();
            let _ = v.items().count();
        }
    }
}

#[test]
fn deeply_nested_bodies_are_rejected_without_recursion() {
    let deep = [vec![b'l'; 200_000], vec![b'e'; 200_000]].concat();
    assert!(http::decode_announce(&deep).is_err());
    let mut body = b"d5:peers".to_vec();
    body.extend(std::iter::repeat(b'l').take(100_000));
    assert!(http::decode_announce(&body).is_err());
}

#[test]
fn udp_decoder_and_exchange_survive_mutations() {
    let corpus = udp_corpus();
    let tracker: SocketAddr = "127.0.0.1:6969".parse().unwrap();
    for seed in 0..ROUNDS {
        let mut rng = Rng::seeded(seed);
        let input = mutate(&mut rng, &corpus);
        let Ok(reply) = decode_reply(&input) else {
            continue;
        };
        if let Reply::Announce { peers, .. } = reply {
            // Compact entries round-trip.
            let mut again = Vec::new();
            for p in codec::compact_v4(peers) {
                encode_compact(p, &mut again);
            }
            assert_eq!(again, peers[..peers.len() / 6 * 6], "seed {seed}");
        }
        // Feed it to an exchange that awaits exactly this transaction id, in both phases.
        for connection in [None, Some(udp::ConnectionId { id: 1, obtained: Timestamp::ZERO })] {
            let mut ex_rng = Entropy::seeded(seed);
            let work = if seed % 2 == 0 {
                UdpWork::Announce(announce_params())
            } else {
                UdpWork::Scrape(InfoHash([0x11; 20]))
            };
            let (mut ex, _) = UdpExchange::start(
                work,
                vec![tracker],
                connection,
                Retransmit::default(),
                0,
                Timestamp::ZERO,
                &mut ex_rng,
            );
            let mut forged = input.clone();
            forged[4..8].copy_from_slice(&ex.transaction_id().to_be_bytes());
            let Ok(reply) = decode_reply(&forged) else {
                continue;
            };
            if let Step::Done(Ok(message::Answer::Announce(r))) =
                ex.on_reply(tracker, &reply, Timestamp::ZERO, &mut ex_rng)
            {
                assert!(r.peers.len() <= MAX_PEERS_PER_REPLY, "seed {seed}");
            }
        }
    }
}

fn announce_params() -> AnnounceParams {
    AnnounceParams {
        info_hash: InfoHash([0x11; 20]),
        peer_id: *b"-RL0001-abcdefghijkl",
        port: 6881,
        transfer: Transfer::default(),
        event: Event::Started,
        numwant: 50,
        key: 1,
        tracker_id: None,
    }
}

fn identity() -> ClientIdentity {
    ClientIdentity {
        info_hash: InfoHash([0x11; 20]),
        peer_id: *b"-RL0001-abcdefghijkl",
        port: 6881,
        key: 1,
        numwant: 50,
    }
}

#[test]
fn trackers_survive_mutated_http_replies_and_end_every_announce() {
    let corpus = http_corpus();
    let tiers = vec![vec!["http://127.0.0.1:1001/announce".to_string()]];
    for seed in 0..ROUNDS / 3 {
        let mut rng = Rng::seeded(seed);
        let input = mutate(&mut rng, &corpus);
        let mut tr = Trackers::new(&tiers, identity(), Entropy::seeded(1), &mut rng, Timestamp::ZERO);
        tr.on_timeout(Timestamp::ZERO, Transfer::default(), &mut rng);
        let mut pending: Vec<IoId> = Vec::new();
        let mut redirects = 0;
        loop {
            while let Some(io) = tr.poll_io() {
                if let TrackerIo::HttpRequest { id, .. } = io {
                    pending.push(id);
                }
            }
            let Some(id) = pending.pop() else { break };
            redirects += 1;
            assert!(redirects <= 10, "seed {seed}: redirects are bounded");
            tr.on_http_data(id, &input, Timestamp::ZERO);
            tr.on_http_closed(
                id,
                if seed % 3 == 0 { Err(ErrorKind::ConnectionReset) } else { Ok(()) },
                Timestamp::ZERO,
            );
        }
        let status = &tr.status()[0];
        assert!(matches!(status.state, TrackerState::Working | TrackerState::Failing), "seed {seed}: {status:?}");
        let mut lines = 0;
        while let Some(event) = tr.poll_event() {
            if let TrackerEvent::Error { message, .. } | TrackerEvent::Warning { message, .. } = event {
                assert!(!message.contains('\n') && !message.contains('\r'), "seed {seed}: {message:?}");
                lines += 1;
            }
        }
        assert!(status.state == TrackerState::Working || lines == 1, "seed {seed}");
    }
}

#[test]
fn trackers_survive_mutated_datagrams_from_anyone() {
    let corpus = udp_corpus();
    let tracker: SocketAddr = "127.0.0.1:6969".parse().unwrap();
    let tiers = vec![vec!["udp://127.0.0.1:6969".to_string()]];
    let mut rng = Rng::seeded(99);
    let mut tr = Trackers::new(&tiers, identity(), Entropy::seeded(1), &mut rng, Timestamp::ZERO);
    let mut now = Timestamp::ZERO;
    tr.on_timeout(now, Transfer::default(), &mut rng);
    for seed in 0..ROUNDS {
        // Now and then let time move on, so retransmissions, failures and new rounds happen too.
        if seed % 50 == 49 {
            if let Some(d) = tr.next_deadline() {
                now = now.max(d);
                tr.on_timeout(now, Transfer::default(), &mut rng);
            }
        }
        let mut m = Rng::seeded(seed);
        let mut input = mutate(&mut m, &corpus);
        // Give some of them the live transaction id so they reach the exchange.
        if input.len() >= 8 && seed % 2 == 0 {
            let live = std::iter::from_fn(|| tr.poll_io()).find_map(|io| match io {
                TrackerIo::UdpSend { datagram, .. } => Some(datagram[12..16].to_vec()),
                _ => None,
            });
            if let Some(tid) = live {
                input[4..8].copy_from_slice(&tid);
            }
        }
        let from = if seed % 5 == 0 { "127.0.0.2:6969".parse().unwrap() } else { tracker };
        tr.on_datagram(from, &input, now);
        if tr.next_deadline().is_some_and(|d| d <= now) {
            tr.on_timeout(now, Transfer::default(), &mut rng);
        }
        while tr.poll_event().is_some() {}
    }
}
