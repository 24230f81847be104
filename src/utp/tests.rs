//! Two muxes over a simulated link under simulated time (quinn's `Pair`): handshake, transfers over clean,
//! lossy, reordering, duplicating and delaying links, RESET, SYN flood, time-outs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::rng::{Entropy, Rng};
use crate::time::{millis, secs, Timestamp};

const A: ([u8; 4], u16) = ([10, 0, 0, 1], 6881);
const B: ([u8; 4], u16) = ([10, 0, 0, 2], 6881);

fn addr(a: ([u8; 4], u16)) -> SocketAddr {
    SocketAddr::from(a)
}

/// One direction of the simulated path.
#[derive(Clone, Copy, Debug, Default)]
struct Link {
    latency: Duration,
    /// Per million datagrams.
    loss_ppm: u64,
    dup_ppm: u64,
    /// Datagrams held back by up to `reorder_by` (per million).
    reorder_ppm: u64,
    reorder_by: Duration,
    /// Added to every datagram (a queue somewhere on the path).
    extra: Duration,
    /// Drop everything.
    down: bool,
    /// A bottleneck: bytes per second (0: none), with a drop-tail queue of at most `queue_limit` of
    /// sending time.
    rate: u64,
    queue_limit: Duration,
}

/// A datagram on the wire: (deliver at, order sent, to b?, bytes).
type InFlight = Reverse<(Timestamp, u64, bool, Vec<u8>)>;

struct Pair {
    now: Timestamp,
    a: UtpMux,
    b: UtpMux,
    ab: Link,
    ba: Link,
    rng: Rng,
    wire: BinaryHeap<InFlight>,
    order: u64,
    sent_ab: u64,
    sent_ba: u64,
    /// When each direction's bottleneck is free again.
    busy_ab: Timestamp,
    busy_ba: Timestamp,
    /// Queueing delay each datagram met at a bottleneck a→b: (when, delay).
    queued_ab: Vec<(Timestamp, Duration)>,
}

impl Pair {
    fn new(seed: u64, config: Config) -> Self {
        let now = Timestamp::from_secs(1);
        Pair {
            now,
            a: UtpMux::new(now, config, Entropy::seeded(seed)),
            b: UtpMux::new(now, config, Entropy::seeded(seed ^ 0xb)),
            ab: Link { latency: millis(25), ..Link::default() },
            ba: Link { latency: millis(25), ..Link::default() },
            rng: Rng::seeded(seed),
            wire: BinaryHeap::new(),
            order: 0,
            sent_ab: 0,
            sent_ba: 0,
            busy_ab: Timestamp::ZERO,
            busy_ba: Timestamp::ZERO,
            queued_ab: Vec::new(),
        }
    }

    fn put(&mut self, to_b: bool, bytes: &[u8]) {
        let link = if to_b { self.ab } else { self.ba };
        if link.down || self.rng.below(1_000_000) < link.loss_ppm {
            return;
        }
        let mut depart = self.now;
        if let Some(ns) = (bytes.len() as u64 * 1_000_000_000).checked_div(link.rate) {
            let busy = if to_b { &mut self.busy_ab } else { &mut self.busy_ba };
            let start = self.now.max(*busy);
            if start - self.now > link.queue_limit {
                return; // drop-tail
            }
            depart = start + Duration::from_nanos(ns);
            *busy = depart;
            if to_b {
                self.queued_ab.push((self.now, start - self.now));
            }
        }
        let copies = if self.rng.below(1_000_000) < link.dup_ppm { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = depart + link.latency + link.extra;
            if self.rng.below(1_000_000) < link.reorder_ppm {
                at = at + Duration::from_micros(self.rng.below(link.reorder_by.as_micros() as u64 + 1));
            }
            self.order += 1;
            self.wire.push(Reverse((at, self.order, to_b, bytes.to_vec())));
        }
    }

    /// Moves every datagram both muxes want to send onto the wire.
    fn flush(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        while let Some((to, n)) = self.a.poll_transmit(&mut buf) {
            assert_eq!(to, addr(B));
            assert!(n <= 1400);
            self.sent_ab += 1;
            self.put(true, &buf[..n]);
        }
        while let Some((to, n)) = self.b.poll_transmit(&mut buf) {
            assert_eq!(to, addr(A));
            self.sent_ba += 1;
            self.put(false, &buf[..n]);
        }
    }

    /// Advances to the next datagram or deadline (at most `limit`) and handles it.
    fn step(&mut self, limit: Timestamp) {
        self.flush();
        let next = [self.wire.peek().map(|Reverse(d)| d.0), self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(limit)
            .min(limit);
        self.now = self.now.max(next);
        while self.wire.peek().is_some_and(|Reverse(d)| d.0 <= self.now) {
            let Reverse((_, _, to_b, bytes)) = self.wire.pop().unwrap();
            if to_b {
                self.b.handle_datagram(self.now, addr(A), &bytes);
            } else {
                self.a.handle_datagram(self.now, addr(B), &bytes);
            }
        }
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.a.check_invariants();
        self.b.check_invariants();
    }

    /// Connects a to b; returns (a's id, b's id).
    fn connect(&mut self) -> (UtpId, UtpId) {
        let ida = self.a.connect(self.now, addr(B)).unwrap();
        let limit = self.now + secs(5);
        let mut idb = None;
        let mut connected = false;
        while !(connected && idb.is_some()) {
            assert!(self.now < limit, "handshake did not finish");
            self.step(limit);
            while let Some(e) = self.b.poll_event() {
                if let UtpEvent::Incoming(id, from) = e {
                    assert_eq!(from, addr(A));
                    idb = Some(id);
                }
            }
            while let Some(e) = self.a.poll_event() {
                if e == UtpEvent::Connected(ida) {
                    connected = true;
                }
            }
        }
        (ida, idb.unwrap())
    }
}

/// What a transfer measured.
#[derive(Debug)]
struct Transfer {
    /// Simulated time from connect to the receiver's end of stream.
    elapsed: Duration,
    peak_memory: usize,
    /// Sender's congestion window samples: (time, cwnd, queueing delay µs).
    cwnd: Vec<(Timestamp, u32, u32)>,
    sent_ab: u64,
}

/// Sends `len` seeded bytes from a to b over `pair`, driving both as the engine would (write until
/// `WouldBlock`, more on `Writable`; read until `WouldBlock` on `Readable`; close after the last byte and
/// at end of stream); `at_step` may change the links as time passes. Asserts byte-identical delivery,
/// end of stream, and that both connections are freed afterwards.
fn transfer(pair: &mut Pair, len: usize, mut at_step: impl FnMut(&mut Pair, Duration)) -> Transfer {
    let mut data = vec![0u8; len];
    Rng::seeded(len as u64).fill(&mut data);
    let t0 = pair.now;
    let (ida, idb) = pair.connect();
    let mut written = 0;
    let mut received = Vec::with_capacity(len);
    let mut eof_at = None;
    let mut a_closed = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Transfer { elapsed: Duration::ZERO, peak_memory: 0, cwnd: Vec::new(), sent_ab: 0 };
    let limit = t0 + secs(600);
    let mut can_write = true;
    let mut readable = true;
    while eof_at.is_none() || pair.a.connection_count() + pair.b.connection_count() > 0 {
        assert!(pair.now < limit, "transfer stalled at {written}/{} of {len} bytes", received.len());
        // The writer.
        while can_write && written < len {
            match pair.a.write(ida, &data[written..(written + 20_000).min(len)]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => can_write = false,
                Err(e) => panic!("write: {e}"),
            }
        }
        if written == len && !a_closed {
            pair.a.close(ida);
            a_closed = true;
        }
        // The reader.
        while readable && eof_at.is_none() {
            match pair.b.stream(idb).read(&mut buf) {
                Ok(0) => {
                    eof_at = Some(pair.now);
                    pair.b.close(idb);
                }
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable = false,
                Err(e) => panic!("read: {e}"),
            }
        }
        pair.step(limit);
        at_step(pair, pair.now - t0);
        while let Some(e) = pair.a.poll_event() {
            match e {
                UtpEvent::Writable(id) if id == ida => can_write = true,
                UtpEvent::Closed(_, reason) => panic!("sender closed: {reason}"),
                _ => {}
            }
        }
        while let Some(e) = pair.b.poll_event() {
            match e {
                UtpEvent::Readable(id) if id == idb => readable = true,
                UtpEvent::Closed(_, reason) => panic!("receiver closed: {reason}"),
                _ => {}
            }
        }
        if let Some((cwnd, delay, _)) = pair.a.congestion(ida) {
            if out.cwnd.last().map_or(true, |&(at, _, _)| pair.now >= at + millis(10)) {
                out.cwnd.push((pair.now, cwnd, delay));
            }
        }
        out.peak_memory = out.peak_memory.max(pair.a.memory_bytes()).max(pair.b.memory_bytes());
    }
    assert!(received == data, "received {} bytes, not the {len} sent", received.len());
    out.elapsed = eof_at.unwrap() - t0;
    out.sent_ab = pair.sent_ab;
    if std::env::var_os("RILL_UTP_FIGURES").is_some() {
        eprintln!(
            "utp transfer: {len} B in {:?} simulated ({:.2} MB/s), {} datagrams a→b, {} b→a, peak memory {} B",
            out.elapsed,
            len as f64 / out.elapsed.as_secs_f64() / 1e6,
            pair.sent_ab,
            pair.sent_ba,
            out.peak_memory
        );
    }
    out
}

fn mb_per_s(t: &Transfer, len: usize) -> f64 {
    len as f64 / t.elapsed.as_secs_f64() / 1e6
}

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------- handshake

#[test]
fn handshake_both_ways_then_bytes_each_way() {
    let mut pair = Pair::new(1, Config::default());
    let (ida, idb) = pair.connect();
    assert_eq!(pair.a.peer_addr(ida), Some(addr(B)));
    assert_eq!(pair.b.write(idb, b"hello from b").unwrap(), 12);
    assert_eq!(pair.a.write(ida, b"hello from a").unwrap(), 12);
    let limit = pair.now + secs(2);
    while pair.a.readable_bytes(ida) < 12 || pair.b.readable_bytes(idb) < 12 {
        assert!(pair.now < limit);
        pair.step(limit);
    }
    let mut buf = [0u8; 64];
    assert_eq!(pair.a.read(ida, &mut buf).unwrap(), 12);
    assert_eq!(&buf[..12], b"hello from b");
    assert_eq!(pair.b.read(idb, &mut buf).unwrap(), 12);
    assert_eq!(&buf[..12], b"hello from a");
    assert_eq!(pair.a.read(ida, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn handshake_survives_a_lost_syn_and_a_lost_answer() {
    let mut pair = Pair::new(2, Config::default());
    pair.ab.down = true;
    let ida = pair.a.connect(pair.now, addr(B)).unwrap();
    pair.flush(); // the first SYN is lost
    pair.ab.down = false;
    pair.ba.down = true;
    let limit = pair.now + millis(1500);
    while pair.now < limit {
        pair.step(limit); // the second SYN arrives; its answer is lost
    }
    assert_eq!(pair.b.half_open_count(), 1);
    pair.ba.down = false;
    let limit = pair.now + secs(5);
    while pair.a.poll_event() != Some(UtpEvent::Connected(ida)) {
        assert!(pair.now < limit);
        pair.step(limit);
    }
    // The repeated SYN found the same connection: still one.
    assert_eq!(pair.b.connection_count(), 1);
}

#[test]
fn connect_to_nobody_times_out_after_three_syns() {
    let mut pair = Pair::new(3, Config::default());
    pair.ab.down = true;
    let t0 = pair.now;
    let ida = pair.a.connect(t0, addr(B)).unwrap();
    let limit = t0 + secs(30);
    let closed = loop {
        assert!(pair.now < limit);
        pair.step(limit);
        if let Some(e) = pair.a.poll_event() {
            break e;
        }
    };
    assert_eq!(closed, UtpEvent::Closed(ida, CloseReason::ConnectTimeout));
    assert_eq!(pair.sent_ab, 3);
    assert_eq!(pair.now - t0, secs(7)); // SYNs at 0, 1 and 3 s; given up at 7 s
    assert_eq!(pair.a.connection_count(), 0);
    assert_eq!(pair.a.read(ida, &mut [0u8; 4]).unwrap_err().kind(), io::ErrorKind::NotConnected);
}

// ---------------------------------------------------------------------------------------- transfers

#[test]
fn clean_link_delivers_4_mib_byte_identical_with_fin() {
    let mut pair = Pair::new(4, Config::default());
    let t = transfer(&mut pair, 4 * MIB, |_, _| {});
    // 50 ms RTT and a 256 KiB window: at most ~5 MB/s; slow start reaches it quickly.
    let rate = mb_per_s(&t, 4 * MIB);
    assert!(rate > 2.0, "{rate:.2} MB/s in {:?}", t.elapsed);
    // Nearly no waste: every packet but the handshake, FIN and keep-alives carries a full payload.
    let packets = (4 * MIB) / pair.a.connection_memory_bound().min(1362);
    assert!(t.sent_ab < packets as u64 * 11 / 10 + 100, "{} packets sent", t.sent_ab);
    assert!(t.peak_memory <= 2 * pair.a.connection_memory_bound());
}

#[test]
fn lossy_link_delivers_byte_identical() {
    for (seed, loss_ppm) in [(5, 10_000), (6, 30_000), (7, 50_000)] {
        let mut pair = Pair::new(seed, Config::default());
        pair.ab.loss_ppm = loss_ppm;
        pair.ba.loss_ppm = loss_ppm;
        let t = transfer(&mut pair, 2 * MIB, |_, _| {});
        assert!(mb_per_s(&t, 2 * MIB) > 0.1, "seed {seed}: {:?}", t.elapsed);
    }
}

#[test]
fn reordering_link_delivers_byte_identical() {
    let mut pair = Pair::new(8, Config::default());
    pair.ab.reorder_ppm = 100_000;
    pair.ab.reorder_by = millis(20);
    pair.ba.reorder_ppm = 100_000;
    pair.ba.reorder_by = millis(20);
    transfer(&mut pair, 3 * MIB, |_, _| {});
}

#[test]
fn duplicating_link_delivers_byte_identical() {
    let mut pair = Pair::new(9, Config::default());
    pair.ab.dup_ppm = 50_000;
    pair.ba.dup_ppm = 50_000;
    transfer(&mut pair, 3 * MIB, |_, _| {});
}

#[test]
fn everything_at_once_delivers_byte_identical() {
    let mut pair = Pair::new(10, Config::default());
    for link in [&mut pair.ab, &mut pair.ba] {
        link.loss_ppm = 20_000;
        link.dup_ppm = 20_000;
        link.reorder_ppm = 50_000;
        link.reorder_by = millis(30);
    }
    transfer(&mut pair, 2 * MIB, |_, _| {});
}

#[test]
fn queueing_delay_above_target_makes_ledbat_back_off() {
    let mut pair = Pair::new(11, Config::default());
    // After 1 s of transfer, the path queues every datagram a further 150 ms (above the 100 ms target).
    let step_at = secs(1);
    let t = transfer(&mut pair, 10 * MIB, |pair, since| {
        if since >= step_at {
            pair.ab.extra = millis(150);
        }
    });
    let t0 = t.cwnd[0].0;
    let window = |from: Duration, to: Duration| t.cwnd.iter().filter(move |s| s.0 - t0 >= from && s.0 - t0 < to);
    let before = window(Duration::ZERO, step_at).map(|s| s.1).max().unwrap();
    // Once the delay is seen (one RTT after the step), the window only goes down, by libutp's gain
    // (at most 3,000 bytes per RTT, scaled by how far off target): about 1,500 bytes per 200 ms RTT here.
    let after: Vec<_> = window(step_at + millis(500), secs(600)).filter(|s| s.2 > 0).collect();
    assert!(after.len() > 20, "{} samples after the step", after.len());
    assert!(after.iter().all(|s| s.2 >= 140_000), "queueing delay seen below 140 ms after the step");
    assert!(after.windows(2).all(|w| w[1].1 <= w[0].1), "cwnd grew while the delay was above target");
    let (first, last) = (after[0], after[after.len() - 1]);
    let secs_after = (last.0 - first.0).as_secs_f64();
    assert!(secs_after > 3.0, "{secs_after} s of samples after the step");
    // Leaving slow start halves the window; then LEDBAT's gain walks it down while the delay stays high.
    assert!(last.1 < before / 4, "cwnd {before} → {} in {secs_after:.1} s", last.1);
}

#[test]
fn bottleneck_queue_is_held_near_the_target_delay() {
    let mut pair = Pair::new(19, Config::default());
    // 1 MB/s with a deep 1 s buffer: a window-limited sender would queue ~200 ms; LEDBAT aims at 100 ms.
    pair.ab.rate = 1_000_000;
    pair.ab.queue_limit = secs(1);
    let len = 6 * MIB;
    let t = transfer(&mut pair, len, |_, _| {});
    let rate = mb_per_s(&t, len);
    assert!(rate > 0.85, "{rate:.2} MB/s through a 1 MB/s bottleneck");
    // After the first 2 s (slow start overshoots), the queue stays around the target.
    let t0 = pair.queued_ab[0].0;
    let late: Vec<f64> =
        pair.queued_ab.iter().filter(|q| q.0 - t0 > secs(2)).map(|q| q.1.as_secs_f64() * 1000.0).collect();
    let mean = late.iter().sum::<f64>() / late.len() as f64;
    let max = late.iter().copied().fold(0.0, f64::max);
    assert!((60.0..=140.0).contains(&mean), "mean queueing delay {mean:.0} ms (max {max:.0} ms)");
    assert!(max < 200.0, "max queueing delay {max:.0} ms");
}

// ---------------------------------------------------------------------------------------- endings

#[test]
fn reset_by_the_peer_closes_the_connection() {
    let mut pair = Pair::new(12, Config::default());
    let (ida, idb) = pair.connect();
    pair.b.reset(idb);
    assert_eq!(pair.b.connection_count(), 0);
    let limit = pair.now + secs(1);
    let e = loop {
        assert!(pair.now < limit);
        pair.step(limit);
        if let Some(e) = pair.a.poll_event() {
            break e;
        }
    };
    assert_eq!(e, UtpEvent::Closed(ida, CloseReason::Reset));
    assert_eq!(pair.a.write(ida, b"x").unwrap_err().kind(), io::ErrorKind::NotConnected);
}

#[test]
fn packet_for_an_unknown_connection_is_answered_with_a_reset() {
    let mut pair = Pair::new(13, Config::default());
    let (ida, _) = pair.connect();
    // b forgets the connection without telling a; a's next packet gets a RESET back.
    let mut b = UtpMux::new(pair.now, Config::default(), Entropy::seeded(99));
    std::mem::swap(&mut pair.b, &mut b);
    pair.a.write(ida, b"anyone there?").unwrap();
    let limit = pair.now + secs(2);
    let e = loop {
        assert!(pair.now < limit);
        pair.step(limit);
        if let Some(e) = pair.a.poll_event() {
            break e;
        }
    };
    assert_eq!(e, UtpEvent::Closed(ida, CloseReason::Reset));
    assert_eq!(pair.b.stats().resets_sent, 1);
}

#[test]
fn idle_connection_lives_on_keepalives_and_dies_when_the_peer_vanishes() {
    let mut pair = Pair::new(14, Config::default());
    let (ida, idb) = pair.connect();
    let limit = pair.now + secs(600);
    while pair.now < limit {
        pair.step(limit);
        assert_eq!(pair.a.poll_event(), None);
        assert_eq!(pair.b.poll_event(), None);
    }
    assert!(pair.sent_ab >= 600 / 29);
    pair.ab.down = true;
    pair.ba.down = true;
    let gone = pair.now;
    let limit = pair.now + secs(400);
    let mut closed = Vec::new();
    while closed.len() < 2 {
        assert!(pair.now < limit);
        pair.step(limit);
        closed.extend(std::iter::from_fn(|| pair.a.poll_event()));
        closed.extend(std::iter::from_fn(|| pair.b.poll_event()));
    }
    assert!(closed.contains(&UtpEvent::Closed(ida, CloseReason::TimedOut)));
    assert!(closed.contains(&UtpEvent::Closed(idb, CloseReason::TimedOut)));
    assert!(pair.now - gone <= conn::IDLE_TIMEOUT + secs(1));
}

#[test]
fn unanswered_data_times_out() {
    let mut pair = Pair::new(15, Config::default());
    let (ida, _) = pair.connect();
    pair.ab.down = true;
    pair.a.write(ida, &[7u8; 5000]).unwrap();
    let t0 = pair.now;
    let limit = t0 + secs(200);
    let e = loop {
        assert!(pair.now < limit);
        pair.step(limit);
        if let Some(e) = pair.a.poll_event() {
            break e;
        }
    };
    assert_eq!(e, UtpEvent::Closed(ida, CloseReason::TimedOut));
    // Backed-off retransmissions: 0.5 + 1 + 2 + 4 + 8 + 16 + 32 s at least.
    assert!(pair.now - t0 >= secs(30), "{:?}", pair.now - t0);
}

// ---------------------------------------------------------------------------------------- bounds

#[test]
fn syn_flood_is_bounded() {
    let config = Config::default();
    let mut mux = UtpMux::new(Timestamp::ZERO, config, Entropy::seeded(16));
    let mut rng = Rng::seeded(16);
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut syn = [0u8; 20];
    for i in 0..10_000u32 {
        let header = Header {
            kind: PacketType::Syn,
            connection_id: rng.next_u32() as u16,
            timestamp_us: i,
            timestamp_difference_us: 0,
            wnd_size: 1 << 20,
            seq_nr: rng.next_u32() as u16,
            ack_nr: 0,
        };
        packet::encode_into(&header, &[], &[], &mut syn).unwrap();
        let from = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1000 + (i % 7) as u16));
        let now = Timestamp::from_millis(u64::from(i));
        mux.handle_datagram(now, from, &syn);
        while mux.poll_transmit(&mut buf).is_some() {}
        mux.handle_timeout(now);
        while mux.poll_event().is_some() {}
        mux.check_invariants();
        assert!(mux.half_open_count() <= config.max_half_open);
        assert!(mux.connection_count() <= config.max_half_open);
    }
    assert!(mux.stats().syn_refused > 9_000);
    // Half-open connections cost no buffers.
    let per_conn = mux.memory_bytes() / mux.connection_count().max(1);
    assert!(per_conn < 8 * 1024, "{per_conn} bytes per half-open connection");
    // And they expire.
    mux.handle_timeout(Timestamp::from_secs(100));
    assert_eq!(mux.connection_count(), 0);
    assert_eq!(mux.half_open_count(), 0);
}

#[test]
fn connection_budget_is_enforced() {
    let config = Config { max_connections: 4, ..Config::default() };
    let mut mux = UtpMux::new(Timestamp::ZERO, config, Entropy::seeded(17));
    for i in 0..4 {
        assert!(mux.connect(Timestamp::ZERO, SocketAddr::from(([10, 0, 0, i], 1))).is_some());
    }
    assert_eq!(mux.connect(Timestamp::ZERO, addr(B)), None);
}

#[test]
fn hostile_datagrams_never_panic_and_memory_stays_bounded() {
    let mut pair = Pair::new(18, Config::default());
    let (ida, _) = pair.connect();
    pair.a.write(ida, &[1u8; 100_000]).unwrap();
    pair.step(pair.now + millis(10));
    let mut rng = Rng::seeded(18);
    let mut buf = [0u8; MAX_DATAGRAM];
    // Valid-looking packets for the live connection (right ids, random numbers) and mutated ones.
    let mut base = [0u8; 60];
    for i in 0..50_000u32 {
        let kind = [PacketType::Data, PacketType::State, PacketType::Fin, PacketType::Syn][rng.below(4) as usize];
        let header = Header {
            kind,
            connection_id: if rng.below(2) == 0 {
                pair.b.slots.iter().flatten().next().unwrap().conn.send_id
            } else {
                rng.next_u32() as u16
            },
            timestamp_us: rng.next_u32(),
            timestamp_difference_us: rng.next_u32(),
            wnd_size: rng.next_u32(),
            seq_nr: rng.next_u32() as u16,
            ack_nr: rng.next_u32() as u16,
        };
        let mut sack = [0u8; 8];
        rng.fill(&mut sack);
        let n =
            packet::encode_into(&header, &sack[..rng.below(3) as usize * 4], b"0123456789abcdef", &mut base).unwrap();
        let input = rng.mutate(&[&base[..n]], &[0, 1, 2, 0x41, 0xff]);
        pair.a.handle_datagram(pair.now, addr(B), &input);
        while pair.a.poll_transmit(&mut buf).is_some() {}
        if i % 1000 == 0 {
            pair.now = pair.now + millis(100);
            pair.a.handle_timeout(pair.now);
            while pair.a.poll_event().is_some() {}
        }
        pair.a.check_invariants();
        assert!(pair.a.memory_bytes() <= 2 * pair.a.connection_memory_bound());
    }
}

#[test]
fn per_connection_memory_matches_the_module_doc() {
    // The figures the module doc states: ~500 bytes of state, ≈ 1.52 MB at the very most with the
    // defaults (1 MiB of it the receive ring), a few KB for a connection that moved little.
    let state = std::mem::size_of::<conn::Conn>();
    let mut pair = Pair::new(20, Config::default());
    let bound = pair.a.connection_memory_bound();
    if std::env::var_os("RILL_UTP_FIGURES").is_some() {
        eprintln!("utp memory: state {state} B, bound {bound} B");
    }
    assert!(state <= 600, "{state} B of connection state");
    assert!(bound <= 1_530_000, "{bound} B bound");
    let (ida, _) = pair.connect();
    pair.a.write(ida, &[9u8; 3000]).unwrap();
    let limit = pair.now + secs(1);
    while pair.now < limit {
        pair.step(limit);
    }
    let idle = pair.b.memory_bytes();
    if std::env::var_os("RILL_UTP_FIGURES").is_some() {
        eprintln!("utp memory: {idle} B after moving 3 KB");
    }
    assert!(idle < 16 * 1024, "{idle} B for a connection that moved 3 KB");
}
