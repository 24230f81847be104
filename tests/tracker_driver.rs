//! The tracker I/O driver over real loopback sockets, against small misbehaving servers run on threads:
//! slow chunked replies written in pieces, refused connections, endless bodies, forged UDP replies from a
//! stranger, and the `stopped` announce on exit. Every server thread has read time-outs and is joined.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rill::event_loop::scrape::TrackerLoop;
use rill::metainfo::InfoHash;
use rill::rng::{Entropy, Rng};
use rill::tracker::{ClientIdentity, TrackerEvent, Trackers, Transfer};

const OWN_PORT: u16 = 6881;

struct Client {
    lp: TrackerLoop,
    trackers: Trackers,
    rng: Rng,
    events: Vec<TrackerEvent>,
}

impl Client {
    fn new(tiers: &[&[&str]]) -> Client {
        Client::seeded(tiers, 7)
    }

    fn seeded(tiers: &[&[&str]], seed: u64) -> Client {
        let tiers: Vec<Vec<String>> = tiers.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect();
        let lp = TrackerLoop::new().expect("tracker loop");
        let mut rng = Rng::seeded(seed);
        let identity = ClientIdentity {
            info_hash: InfoHash([0x22; 20]),
            peer_id: *b"-RL0001-driverdriver",
            port: OWN_PORT,
            key: 1,
            numwant: 50,
        };
        let trackers = Trackers::new(&tiers, identity, Entropy::seeded(1), &mut rng, lp.now());
        Client { lp, trackers, rng, events: Vec::new() }
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Client) -> bool) -> bool {
        let end = self.lp.now() + limit;
        let transfer = Transfer { uploaded: 0, downloaded: 0, left: 10 };
        loop {
            if done(self) {
                return true;
            }
            if self.lp.now() >= end {
                return false;
            }
            let events = &mut self.events;
            self.lp.turn(&mut self.trackers, transfer, &mut self.rng, end, &mut |e| events.push(e)).expect("loop turn");
        }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.events
            .iter()
            .flat_map(|e| match e {
                TrackerEvent::Peers(p) => p.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TrackerEvent::Error { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

fn compact(peers: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in peers {
        let a: SocketAddr = p.parse().unwrap();
        if let SocketAddr::V4(a) = a {
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
    }
    out
}

/// Accepts `connections` connections in turn, reads each request head and hands it to `reply`.
fn http_server(
    connections: usize,
    reply: impl Fn(&str, &mut TcpStream) + Send + 'static,
) -> (u16, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let mut heads = Vec::new();
        for _ in 0..connections {
            let Ok((mut s, _)) = listener.accept() else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                match s.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            reply(&head, &mut s);
            heads.push(head);
        }
        heads
    });
    (port, handle)
}

#[test]
fn slow_chunked_reply_in_small_pieces_gives_peers() {
    let (port, server) = http_server(1, |head, s| {
        assert!(head.starts_with("GET /announce?info_hash=%22%22"), "{head}");
        let mut body = b"d8:intervali60e5:peers12:".to_vec();
        body.extend_from_slice(&compact(&["10.0.0.1:1", "10.0.0.2:2"]));
        body.push(b'e');
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.chunks(5) {
            raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            raw.extend_from_slice(part);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(b"0\r\n\r\n");
        for piece in raw.chunks(7) {
            let _ = s.write_all(piece);
            let _ = s.flush();
            thread::sleep(Duration::from_millis(2));
        }
        // Keep the connection open: the client must end it once the body is complete.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let url = format!("http://127.0.0.1:{port}/announce");
    let mut c = Client::new(&[&[&url]]);
    assert!(c.run_until(Duration::from_secs(5), |c| !c.peers().is_empty()), "{:?}", c.errors());
    assert_eq!(c.peers().len(), 2);
    assert!(c.run_until(Duration::from_secs(2), |c| c.lp.driver().open_connections() == 0));
    server.join().unwrap();
}

#[test]
fn refused_connections_move_to_the_next_tracker_at_once() {
    let refused: Vec<String> = (0..2)
        .map(|_| {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            format!("http://127.0.0.1:{port}/announce")
        })
        .collect();
    let (port, server) = http_server(1, |_, s| {
        let mut body = b"d8:intervali60e5:peers6:".to_vec();
        body.extend_from_slice(&compact(&["10.0.0.3:3"]));
        body.push(b'e');
        let _ = write!(s, "HTTP/1.0 200 OK\r\n\r\n");
        let _ = s.write_all(&body);
    });
    let good = format!("http://127.0.0.1:{port}/announce");
    // A seed whose shuffle puts a refused tracker first, so the fall-back really happens.
    let mut c = (0..)
        .map(|seed| Client::seeded(&[&[&refused[0], &refused[1], &good]], seed))
        .find(|c| c.trackers.status()[0].url != good)
        .unwrap();
    let started = Instant::now();
    assert!(c.run_until(Duration::from_secs(3), |c| !c.peers().is_empty()), "{:?}", c.errors());
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert!(!c.errors().is_empty());
    assert!(c.errors().iter().all(|e| e == "cannot connect: connection refused"), "{:?}", c.errors());
    assert_eq!(c.trackers.status()[0].url, good, "the tracker that answered leads its tier");
    server.join().unwrap();
}

#[test]
fn endless_body_is_cut_at_the_cap_and_the_connection_closed() {
    let (port, server) = http_server(1, |_, s| {
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
        let chunk = vec![b'x'; 16 * 1024];
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && s.write_all(&chunk).is_ok() {}
    });
    let mut c = Client::new(&[&[&format!("http://127.0.0.1:{port}/announce")]]);
    assert!(c.run_until(Duration::from_secs(5), |c| !c.errors().is_empty()));
    assert_eq!(c.errors(), ["bad http response: body too large"]);
    assert_eq!(c.lp.driver().open_connections(), 0);
    server.join().unwrap();
}

#[test]
fn stopped_reaches_the_tracker_on_exit() {
    let (tx, rx) = mpsc::channel::<String>();
    let (port, server) = http_server(2, move |head, s| {
        let _ = tx.send(head.lines().next().unwrap_or("").to_string());
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\nd8:intervali60ee");
    });
    let mut c = Client::new(&[&[&format!("http://127.0.0.1:{port}/announce")]]);
    assert!(
        c.run_until(Duration::from_secs(5), |c| c.events.iter().any(|e| matches!(e, TrackerEvent::Announced { .. })))
    );
    let now = c.lp.now();
    c.trackers.on_stop(now, Transfer::default());
    assert!(c.run_until(Duration::from_secs(5), |c| c.trackers.is_stopped()));
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(lines[0].contains("&event=started"), "{lines:?}");
    assert!(lines[1].contains("&event=stopped"), "{lines:?}");
    server.join().unwrap();
}

#[test]
fn forged_udp_reply_from_a_stranger_is_ignored() {
    let tracker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = tracker.local_addr().unwrap().port();
    tracker.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let server = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            let Ok((n, from)) = tracker.recv_from(&mut buf) else {
                return;
            };
            let action = u32::from_be_bytes(buf[8..12].try_into().unwrap());
            let tid = buf[12..16].to_vec();
            let mut reply = Vec::new();
            if n == 16 && action == 0 {
                reply.extend_from_slice(&[0, 0, 0, 0]);
                reply.extend_from_slice(&tid);
                reply.extend_from_slice(&7u64.to_be_bytes());
            } else {
                // First the stranger answers with the right transaction id and a bogus peer.
                let mut forged = vec![0, 0, 0, 1];
                forged.extend_from_slice(&tid);
                forged.extend_from_slice(&[0, 0, 0, 60, 0, 0, 0, 0, 0, 0, 0, 0]);
                forged.extend_from_slice(&compact(&["6.6.6.6:666"]));
                stranger.send_to(&forged, from).unwrap();
                thread::sleep(Duration::from_millis(20));
                reply.extend_from_slice(&[0, 0, 0, 1]);
                reply.extend_from_slice(&tid);
                reply.extend_from_slice(&[0, 0, 0, 60, 0, 0, 0, 1, 0, 0, 0, 1]);
                reply.extend_from_slice(&compact(&["10.0.0.4:4"]));
            }
            tracker.send_to(&reply, from).unwrap();
        }
    });
    let mut c = Client::new(&[&[&format!("udp://127.0.0.1:{port}")]]);
    assert!(c.run_until(Duration::from_secs(5), |c| !c.peers().is_empty()), "{:?}", c.errors());
    assert_eq!(c.peers(), ["10.0.0.4:4".parse::<SocketAddr>().unwrap()]);
    server.join().unwrap();
}
