//! A private mainline DHT on loopback (issue 12), for the tests that find peers without a tracker.
//!
//! - [`LtDhtNode`]: a python3-libtorrent session with no torrent, only a DHT node (`lt_peer.py --dht-only-node`):
//!   the bootstrap node every member of a test swarm is given. Its status file says how many nodes its routing
//!   table holds and which `announce_peer`s it accepted.
//! - [`LtDht`]: the `--dht` options for a libtorrent seeder or leecher (`LtOptions::dht`, `LtLeechOptions::dht`):
//!   its first node, and `force_dht_announce` every 2 s while it has no peer.
//! - [`trackerless_magnet`]: `magnet:?xt=urn:btih:HEX` and nothing else.
//! - [`rill_dht_args`]: what every rill run of these tests is given: an explicit loopback `--dht-bootstrap` and a
//!   `--state-dir` in the test's own directory (never the built-in routers, never `~/.local/state`).
//! - [`KrpcFlooder`]: malformed and valid KRPC datagrams from one UDP socket, bounded in time.
//! - [`peak_rss_kib`]: VmHWM from `/proc/PID/status`.
//!
//! libtorrent 2.0.8 needs an explicit `127.0.0.1:PORT` listen address, no bootstrap router, the per-IP
//! restrictions off and its DoS blocker relaxed to run a DHT on loopback: see `lt_peer.py` and
//! `docs/interop-notes.md`.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bencode::{self, Value};
use super::json::{self, Json};
use super::{free_port, lifetime_until, mkdir, peer_script, require_python_libtorrent, wait_until, Proc, PYTHON};

/// `magnet:?xt=urn:btih:HEX`: no name, no tracker, no peer address. Its peers can only come from the DHT.
pub fn trackerless_magnet(info_hash: &[u8; 20]) -> String {
    format!("magnet:?xt=urn:btih:{}", bencode::hex(info_hash))
}

/// `--dht-bootstrap BOOTSTRAP --state-dir STATE_DIR`: the DHT options of every rill run in these tests.
pub fn rill_dht_args(bootstrap: &str, state_dir: &Path) -> Vec<String> {
    vec!["--dht-bootstrap".into(), bootstrap.into(), "--state-dir".into(), state_dir.display().to_string()]
}

/// The DHT side of a libtorrent seeder or leecher (`lt_peer.py --dht`).
#[derive(Clone, Debug, Default)]
pub struct LtDht {
    /// `IP:PORT`s given to `add_dht_node` (re-added while its table is empty).
    pub nodes: Vec<String>,
    /// `force_dht_announce()` as soon as its table has a node, then every 2 s while it has no peer.
    pub force_announce: bool,
    /// libtorrent's DHT log lines and packets in its stdout (verbose).
    pub log: bool,
}

impl LtDht {
    /// Starts from `node` and announces every 2 s until it has a peer.
    pub fn via(node: &str) -> LtDht {
        LtDht { nodes: vec![node.to_string()], force_announce: true, log: false }
    }

    /// Appends `--dht [--dht-node N]… [--force-dht-announce] [--dht-log]` to an `lt_peer.py` command.
    pub fn add_args(&self, cmd: &mut Command) {
        cmd.arg("--dht");
        for n in &self.nodes {
            cmd.arg("--dht-node").arg(n);
        }
        if self.force_announce {
            cmd.arg("--force-dht-announce");
        }
        if self.log {
            cmd.arg("--dht-log");
        }
    }
}

/// What an `lt_peer.py --dht` status file says about the DHT.
#[derive(Clone, Debug, Default)]
pub struct DhtStatus {
    pub running: bool,
    /// Nodes in its routing table now.
    pub nodes: u64,
    /// The most it ever had.
    pub nodes_seen: u64,
    /// Every `announce_peer` it accepted: ("ip:port" of the announced peer, info-hash hex).
    pub announces_in: Vec<(String, String)>,
    /// `get_peers` queries it answered.
    pub get_peers_in: u64,
}

impl DhtStatus {
    pub fn parse(s: &Json) -> DhtStatus {
        let announces_in = s
            .get("dht_announces_in")
            .and_then(Json::as_array)
            .unwrap_or(&[])
            .iter()
            .map(|a| {
                let text = |k| a.get(k).and_then(Json::as_str).unwrap_or("").to_string();
                (text("peer"), text("info_hash"))
            })
            .collect();
        DhtStatus {
            running: s.get("dht_running").and_then(Json::as_bool) == Some(true),
            nodes: s.get("dht_nodes").and_then(Json::as_u64).unwrap_or(0),
            nodes_seen: s.get("dht_nodes_seen").and_then(Json::as_u64).unwrap_or(0),
            announces_in,
            get_peers_in: s.get("dht_get_peers_in").and_then(Json::as_u64).unwrap_or(0),
        }
    }

    /// Whether it accepted an announce of `info_hash` for a peer on 127.0.0.1:`port`.
    pub fn was_announced(&self, info_hash: &[u8; 20], port: u16) -> bool {
        let (peer, hash) = (format!("127.0.0.1:{port}"), bencode::hex(info_hash));
        self.announces_in.iter().any(|(p, h)| *p == peer && *h == hash)
    }
}

/// Reads an `lt_peer.py` status file.
pub fn read_status(path: &Path) -> Option<Json> {
    let text = fs::read_to_string(path).ok()?;
    json::parse(&text).ok()
}

/// A libtorrent DHT node with no torrent (`lt_peer.py --dht-only-node`) on 127.0.0.1:`port` (UDP).
pub struct LtDhtNode {
    name: String,
    pub proc: Proc,
    pub port: u16,
    status_path: PathBuf,
}

impl LtDhtNode {
    /// Starts it under `dir/NAME` (knowing `first` nodes, if any) and waits until its DHT runs and its status
    /// file is written.
    #[track_caller]
    pub fn start(dir: &Path, name: &str, first: &[String], deadline: Instant) -> LtDhtNode {
        require_python_libtorrent();
        let home = mkdir(&dir.join(name));
        let port = free_port();
        let status_path = home.join("status.json");
        let lifetime = lifetime_until(deadline);
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u").arg(peer_script("lt_peer.py")).arg("--dht-only-node");
        cmd.arg("--port").arg(port.to_string()).arg("--status").arg(&status_path);
        cmd.arg("--max-life").arg(lifetime.as_secs().to_string());
        for n in first {
            cmd.arg("--dht-node").arg(n);
        }
        let proc = Proc::spawn(name, &cmd, &dir.join("logs"), lifetime);
        let node = LtDhtNode { name: name.to_string(), proc, port, status_path };
        wait_until(deadline, &format!("{name} to run its DHT node"), || {
            node.proc.assert_running();
            node.dht().running
        });
        node
    }

    /// `127.0.0.1:PORT`, e.g. for `--dht-bootstrap`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its last status (all defaults before the first one).
    pub fn dht(&self) -> DhtStatus {
        read_status(&self.status_path).map(|s| DhtStatus::parse(&s)).unwrap_or_default()
    }

    /// Waits until its routing table holds at least `n` nodes.
    #[track_caller]
    pub fn wait_nodes(&self, n: u64, deadline: Instant) {
        wait_until(deadline, &format!("{} to know {n} DHT nodes", self.name), || {
            self.proc.assert_running();
            self.dht().nodes >= n
        });
    }
}

/// VmHWM (peak resident set) of process `pid` in KiB, while it runs.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------------------------
// A KRPC flooder

/// What a [`KrpcFlooder`] sent and got back.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodReport {
    pub sent: u64,
    /// Of `sent`: well-formed queries (ping, find_node, get_peers, announce_peer).
    pub valid_queries: u64,
    /// Of `sent`: datagrams no DHT node should accept.
    pub malformed: u64,
    /// Datagrams received back.
    pub replies: u64,
    /// Of `replies`: `y` = `r` answers (the rest are errors or garbage).
    pub answers: u64,
    /// `announce_peer`s sent with a token the target gave us.
    pub announces_with_token: u64,
    pub elapsed: Duration,
}

/// Floods one UDP target from one socket for a bounded time, in a thread: a seeded mix of well-formed KRPC
/// queries (ping, find_node and get_peers for random targets, announce_peer with made-up tokens and with tokens
/// the target handed out, for many info-hashes) and malformed datagrams (random bytes, truncations, deep nesting,
/// absurd lengths, wrong types, unknown methods, unmatched responses, oversized datagrams). At most
/// `per_second` datagrams a second.
pub struct KrpcFlooder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<FloodReport>>,
}

impl KrpcFlooder {
    /// Starts flooding `target` from a socket bound to `from_ip` (a loopback address) until `stop` or `max`.
    pub fn start(from_ip: &str, target: SocketAddr, per_second: u64, max: Duration, seed: u64) -> KrpcFlooder {
        let socket = UdpSocket::bind((from_ip, 0)).unwrap_or_else(|e| panic!("bind {from_ip}:0: {e}"));
        socket.set_nonblocking(true).expect("non-blocking UDP socket");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || flood(&socket, target, per_second, max, seed, &flag));
        KrpcFlooder { stop, thread: Some(thread) }
    }

    /// Stops it and returns what it did.
    pub fn stop(mut self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for KrpcFlooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// xorshift64*: deterministic, so a failing flood can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn id(&mut self) -> Value {
        Value::Bytes(self.bytes(20))
    }
}

fn query(t: &[u8], q: &str, args: Vec<(&str, Value)>) -> Vec<u8> {
    Value::dict(vec![
        ("a", Value::dict(args)),
        ("q", Value::str(q)),
        ("t", Value::Bytes(t.to_vec())),
        ("y", Value::str("q")),
    ])
    .encode()
}

/// One malformed datagram, of kind `kind`.
fn malformed(rng: &mut Rng, kind: u64, our_id: &[u8]) -> Vec<u8> {
    let t = rng.bytes(2);
    let ping = query(&t, "ping", vec![("id", Value::Bytes(our_id.to_vec()))]);
    match kind {
        0 => {
            let n = rng.below(200) as usize;
            rng.bytes(n)
        }
        1 => {
            // A valid query cut short.
            let cut = rng.below(ping.len() as u64) as usize;
            ping[..cut].to_vec()
        }
        2 => {
            // Deep nesting: thousands of `l`s.
            let depth = 1000 + rng.below(20_000) as usize;
            let mut v = vec![b'l'; depth];
            v.extend(std::iter::repeat(b'e').take(depth));
            v
        }
        3 => b"d1:ad2:id99999999999:abce1:q4:ping1:t2:aa1:y1:qe".to_vec(),
        4 => {
            // A 19-byte id, an integer id, a list as `a`.
            match rng.below(3) {
                0 => query(&t, "ping", vec![("id", Value::Bytes(rng.bytes(19)))]),
                1 => query(&t, "find_node", vec![("id", Value::int(7)), ("target", rng.id())]),
                _ => Value::dict(vec![
                    ("a", Value::List(vec![Value::int(1)])),
                    ("q", Value::str("ping")),
                    ("t", Value::Bytes(t.clone())),
                    ("y", Value::str("q")),
                ])
                .encode(),
            }
        }
        5 => query(&t, "vote", vec![("id", Value::Bytes(our_id.to_vec())), ("target", rng.id())]),
        6 => {
            // A response to nothing we asked, with 8 made-up nodes.
            Value::dict(vec![
                (
                    "r",
                    Value::dict(vec![
                        ("id", Value::Bytes(our_id.to_vec())),
                        ("nodes", Value::Bytes(rng.bytes(26 * 8))),
                    ]),
                ),
                ("t", Value::Bytes(rng.bytes(4))),
                ("y", Value::str("r")),
            ])
            .encode()
        }
        7 => {
            // An oversized datagram: a get_peers whose transaction id is kilobytes long.
            let n = 2_000 + rng.below(30_000) as usize;
            let t = rng.bytes(n);
            query(&t, "get_peers", vec![("id", Value::Bytes(our_id.to_vec())), ("info_hash", rng.id())])
        }
        8 => b"i-0e".to_vec(),
        9 => b"d1:y1:qe".to_vec(),
        10 => {
            // announce_peer with a port out of range and a wrong-typed token.
            query(
                &t,
                "announce_peer",
                vec![
                    ("id", Value::Bytes(our_id.to_vec())),
                    ("info_hash", rng.id()),
                    ("port", Value::int(70_000 + rng.below(1 << 40) as i64)),
                    ("token", Value::int(5)),
                ],
            )
        }
        _ => {
            // Duplicate and unsorted keys.
            b"d1:y1:q1:y1:r1:q4:ping1:t2:xx1:ad2:id20:01234567890123456789ee".to_vec()
        }
    }
}

fn flood(
    socket: &UdpSocket,
    target: SocketAddr,
    per_second: u64,
    max: Duration,
    seed: u64,
    stop: &AtomicBool,
) -> FloodReport {
    let mut rng = Rng(seed | 1);
    let our_id = rng.bytes(20);
    let mut report = FloodReport::default();
    let started = Instant::now();
    let mut tokens: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < max {
        // Pace: never ahead of `per_second`.
        let allowed = (started.elapsed().as_secs_f64() * per_second as f64) as u64 + 1;
        if report.sent >= allowed {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            let t = rng.bytes(4);
            let (bytes, valid) = match rng.below(10) {
                0 => (query(&t, "ping", vec![("id", Value::Bytes(our_id.clone()))]), true),
                1 => (query(&t, "find_node", vec![("id", Value::Bytes(our_id.clone())), ("target", rng.id())]), true),
                2 | 3 => {
                    let args = vec![("id", Value::Bytes(our_id.clone())), ("info_hash", rng.id())];
                    (query(&t, "get_peers", args), true)
                }
                4 => {
                    // announce_peer for a fresh info-hash, with a token it gave us (if any) or a made-up one.
                    let token = if tokens.is_empty() {
                        rng.bytes(8)
                    } else {
                        report.announces_with_token += 1;
                        tokens[rng.below(tokens.len() as u64) as usize].clone()
                    };
                    let args = vec![
                        ("id", Value::Bytes(our_id.clone())),
                        ("implied_port", Value::int(rng.below(2) as i64)),
                        ("info_hash", rng.id()),
                        ("port", Value::int(1 + rng.below(65_535) as i64)),
                        ("token", Value::Bytes(token)),
                    ];
                    (query(&t, "announce_peer", args), true)
                }
                _ => {
                    let kind = rng.below(12);
                    (malformed(&mut rng, kind, &our_id), false)
                }
            };
            if socket.send_to(&bytes, target).is_ok() {
                report.sent += 1;
                if valid {
                    report.valid_queries += 1;
                } else {
                    report.malformed += 1;
                }
            }
        }
        // Drain what came back; keep a few tokens for announces.
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            report.replies += 1;
            if let Ok(v) = bencode::decode(&buf[..n]) {
                if v.get("y").and_then(Value::as_str) == Some("r") {
                    report.answers += 1;
                    if let Some(tok) = v.get("r").and_then(|r| r.get("token")).and_then(Value::as_bytes) {
                        if tokens.len() < 16 {
                            tokens.push(tok.to_vec());
                        }
                    }
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Sends one `ping` to `target` from a fresh socket bound to `from_ip` and waits (up to `wait`) for the answer:
/// whether a node answers a well-behaved stranger.
pub fn ping_answered(from_ip: &str, target: SocketAddr, wait: Duration) -> bool {
    let Ok(socket) = UdpSocket::bind((from_ip, 0)) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let t = b"pq".to_vec();
    let ping = query(&t, "ping", vec![("id", Value::Bytes(b"rill-tests-pinger-01".to_vec()))]);
    let until = Instant::now() + wait;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < until {
        let _ = socket.send_to(&ping, target);
        let resend = Instant::now() + Duration::from_millis(500);
        while Instant::now() < resend.min(until) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let answer = bencode::decode(&buf[..n]).ok();
                if from == target
                    && answer.as_ref().and_then(|v| v.get("t")).and_then(Value::as_bytes) == Some(&t[..])
                    && answer.as_ref().and_then(|v| v.get("y")).and_then(Value::as_str) == Some("r")
                {
                    return true;
                }
            }
        }
    }
    false
}
