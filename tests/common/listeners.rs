//! Loopback listeners that stand in for a torrent's trackers and for a peer, and record whatever reaches them: the
//! rig for "bad input is refused before any network traffic" (a run that refuses its input must leave them silent;
//! the control run shows that the same rig does see rill when the input is good).

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{deadline_within, rill_command, wait_until, Proc};

/// Listeners a test owns, standing in for a torrent's trackers (HTTP on TCP, BEP 15 on UDP, one port) and for a
/// `--peer` (TCP, and UDP in case a peer is ever tried over uTP). They record whatever reaches them.
pub struct Listeners {
    tracker_tcp: TcpListener,
    tracker_udp: UdpSocket,
    peer_tcp: TcpListener,
    peer_udp: UdpSocket,
    seen: RefCell<Vec<String>>,
    held: RefCell<Vec<TcpStream>>,
}

impl Listeners {
    pub fn start() -> Listeners {
        // Bound here and kept, not a port from `free_port` bound later: between the two, another test's
        // outgoing connection may take the port as its own.
        let bind = || {
            for _ in 0..1000 {
                let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
                let port = tcp.local_addr().expect("local_addr").port();
                let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) else {
                    continue;
                };
                tcp.set_nonblocking(true).expect("nonblocking");
                udp.set_nonblocking(true).expect("nonblocking");
                return (tcp, udp);
            }
            panic!("no loopback port free for both TCP and UDP");
        };
        let (tracker_tcp, tracker_udp) = bind();
        let (peer_tcp, peer_udp) = bind();
        Listeners { tracker_tcp, tracker_udp, peer_tcp, peer_udp, seen: RefCell::default(), held: RefCell::default() }
    }

    pub fn tracker_port(&self) -> u16 {
        self.tracker_tcp.local_addr().expect("local_addr").port()
    }

    /// Two tiers: the HTTP tracker, then the UDP one (same port).
    pub fn announce_list(&self) -> Vec<String> {
        let port = self.tracker_port();
        vec![format!("http://127.0.0.1:{port}/announce"), format!("udp://127.0.0.1:{port}/announce")]
    }

    /// `127.0.0.1:P` for `--peer`.
    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_tcp.local_addr().expect("local_addr").port())
    }

    /// Takes in whatever arrived since the last call; returns everything seen so far, one entry per connection or
    /// datagram ("tracker tcp from …", "peer udp from …").
    pub fn traffic(&self) -> Vec<String> {
        let mut seen = self.seen.borrow_mut();
        for (what, l) in [("tracker tcp", &self.tracker_tcp), ("peer tcp", &self.peer_tcp)] {
            loop {
                match l.accept() {
                    Ok((mut s, from)) => {
                        let _ = s.set_nonblocking(true);
                        let mut buf = [0u8; 64];
                        let first = s.read(&mut buf).map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
                        seen.push(format!("{what} from {from} ({first:?})"));
                        self.held.borrow_mut().push(s);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("accept on the {what} listener: {e}"),
                }
            }
        }
        for (what, u) in [("tracker udp", &self.tracker_udp), ("peer udp", &self.peer_udp)] {
            let mut buf = [0u8; 2048];
            loop {
                match u.recv_from(&mut buf) {
                    Ok((n, from)) => seen.push(format!("{what} from {from}: {n} bytes")),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("recv on the {what} socket: {e}"),
                }
            }
        }
        seen.clone()
    }

    /// The control: the same rig does see rill's traffic when rill runs `source` (a .torrent, or a magnet link)
    /// alone (so a silent bad-input run means something). Waits until rill has dialled the `--peer` and asked a
    /// tracker, then stops it.
    #[track_caller]
    pub fn assert_rill_would_be_seen(&self, dir: &Path, source: impl AsRef<OsStr>, deadline: Instant) {
        let out = dir.join("control-out");
        fs::create_dir_all(&out).expect("create control-out");
        let mut cmd = rill_command();
        cmd.arg("download").arg(source).arg("-d").arg(&out).args(["--no-ui", "--port", "0", "--peer"]);
        cmd.arg(self.peer_addr()).env("RUST_LOG", "info");
        let rill = Proc::spawn("control", &cmd, &dir.join("logs"), Duration::from_secs(30));
        wait_until(deadline_within(deadline, 20), "the control run to dial the peer and ask a tracker", || {
            let seen = self.traffic();
            let peer = seen.iter().any(|s| s.starts_with("peer tcp"));
            let tracker = seen.iter().any(|s| s.starts_with("tracker"));
            if !(peer && tracker) {
                rill.assert_running();
            }
            peer && tracker
        });
    }
}
