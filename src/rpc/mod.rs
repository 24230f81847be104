//! The RPC server as a sans-I/O machine: Transmission-compatible RPC at `/transmission/rpc` and rill's web
//! page at `/`, for `rill daemon`.
//!
//! Owns: every RPC connection's bytes in and out, framing (`http`), the checks in Transmission's order —
//! Basic credentials (401), the Host allow-list against DNS rebinding (421), the
//! `X-Transmission-Session-Id` handshake (409) — and the caps that keep hostile clients cheap: connections
//! (the least recently active one is dropped for a new one), bytes buffered per connection and in all, a
//! deadline for a request to arrive whole (slowloris) and for an idle connection.
//! Must not: touch sockets (the loop's `event_loop::rpc` moves the bytes), the engine (the [`Backend`]
//! does what a method asks), or the clock (the driver passes `now`).

pub mod base64;
pub mod http;
pub mod transmission;

use std::net::SocketAddr;
use std::time::Duration;

use slab::Slab;

use crate::time::{secs, Timestamp};
use http::{Framing, Method, Request, Response};
pub use transmission::Backend;

/// Connections served at once; a new one beyond this closes the least recently active.
pub const MAX_CONNECTIONS: usize = 32;
/// A request must arrive whole within this of its first byte.
pub const REQUEST_DEADLINE: Duration = secs(10);
/// An idle keep-alive connection is closed after this.
pub const IDLE_DEADLINE: Duration = secs(30);
/// Bytes buffered across every connection, input and output (a few `torrent-add`s at once).
pub const MAX_BUFFERED: usize = 24 << 20;
/// The web page, embedded: one file, no build step.
const PAGE: &str = include_str!("page.html");
/// The RPC endpoint, as Transmission's clients expect it.
pub const RPC_PATH: &str = "/transmission/rpc";

/// One RPC connection, as the driver names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RpcConnId(pub usize);

/// Who may talk to the server.
#[derive(Clone, Debug, Default)]
pub struct RpcConfig {
    /// HTTP Basic credentials (`--rpc-auth USER:PASS`).
    pub auth: Option<(String, String)>,
    /// Host names accepted besides IP literals and `localhost` (`--rpc-host NAME`, may repeat).
    pub host_allow: Vec<String>,
}

struct Conn {
    peer: SocketAddr,
    input: Vec<u8>,
    output: Vec<u8>,
    /// When a partial request must be complete, or the idle connection closes.
    deadline: Timestamp,
    /// The first byte of the request now being read has arrived.
    reading: bool,
    /// `100 Continue` was sent for the request being read.
    continued: bool,
    /// Close once the output is written.
    closing: bool,
    last_active: Timestamp,
}

/// The server: connections and what each has to say.
pub struct RpcServer {
    config: RpcConfig,
    session_id: String,
    conns: Slab<Conn>,
    /// Connections to close now (evicted, timed out, or finished and flushed).
    to_close: Vec<RpcConnId>,
    buffered: usize,
    /// Requests answered, and refused (for the log and the tests).
    pub served: u64,
    pub refused: u64,
}

impl RpcServer {
    /// `session_id`: an unguessable string (the CSRF token browsers cannot read across origins).
    pub fn new(config: RpcConfig, session_id: String) -> Self {
        RpcServer { config, session_id, conns: Slab::new(), to_close: Vec::new(), buffered: 0, served: 0, refused: 0 }
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A connection was accepted. At the cap, the least recently active one is closed for it.
    pub fn handle_accept(&mut self, peer: SocketAddr, now: Timestamp) -> RpcConnId {
        if self.conns.len() >= MAX_CONNECTIONS {
            if let Some((oldest, _)) = self.conns.iter().min_by_key(|(_, c)| c.last_active) {
                log::debug!("rpc: {} connections: closing the least recently active", self.conns.len());
                self.close(RpcConnId(oldest));
            }
        }
        let conn = Conn {
            peer,
            input: Vec::new(),
            output: Vec::new(),
            deadline: now + IDLE_DEADLINE,
            reading: false,
            continued: false,
            closing: false,
            last_active: now,
        };
        RpcConnId(self.conns.insert(conn))
    }

    /// Bytes arrived on `id`; complete requests are answered into its output.
    pub fn handle_input(&mut self, id: RpcConnId, data: &[u8], now: Timestamp, backend: &mut dyn Backend) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        if conn.closing {
            return;
        }
        if self.buffered + data.len() > MAX_BUFFERED {
            log::debug!("rpc {}: the server's buffers are full", conn.peer);
            self.refuse(id, Response::error(503, "busy"));
            return;
        }
        if !conn.reading && !data.is_empty() {
            conn.reading = true;
            conn.deadline = now + REQUEST_DEADLINE;
        }
        conn.last_active = now;
        conn.input.extend_from_slice(data);
        self.buffered += data.len();
        self.serve(id, now, backend);
    }

    /// The client closed its side: nothing more will come.
    pub fn handle_eof(&mut self, id: RpcConnId) {
        if let Some(conn) = self.conns.get_mut(id.0) {
            conn.closing = true;
            if conn.output.is_empty() {
                self.close(id);
            }
        }
    }

    fn serve(&mut self, id: RpcConnId, now: Timestamp, backend: &mut dyn Backend) {
        loop {
            let Some(conn) = self.conns.get_mut(id.0) else {
                return;
            };
            if conn.closing || conn.input.is_empty() {
                return;
            }
            match http::parse_request(&conn.input) {
                Err(e) => {
                    log::debug!("rpc {}: {e}", conn.peer);
                    self.refuse(id, Response::error(e.status(), &e.to_string()));
                    return;
                }
                Ok(Framing::Incomplete { expects_continue }) => {
                    if expects_continue && !conn.continued {
                        conn.continued = true;
                        conn.output.extend_from_slice(http::CONTINUE);
                        self.buffered += http::CONTINUE.len();
                    }
                    return;
                }
                Ok(Framing::Complete(request, used)) => {
                    conn.input.drain(..used);
                    self.buffered -= used;
                    conn.continued = false;
                    conn.reading = !conn.input.is_empty();
                    conn.deadline = now + if conn.reading { REQUEST_DEADLINE } else { IDLE_DEADLINE };
                    let keep_alive = request.keep_alive;
                    let head_only = request.method == Method::Head;
                    let response = self.respond(&request, backend);
                    self.send(id, &response, keep_alive, head_only);
                }
            }
        }
    }

    /// Answers a framed request: checks first, then the page or the RPC.
    fn respond(&mut self, request: &Request, backend: &mut dyn Backend) -> Response {
        if let Some((user, pass)) = &self.config.auth {
            if !basic_auth_matches(request.authorization.as_deref(), user, pass) {
                self.refused += 1;
                return Response::error(401, "Unauthorized User")
                    .with_header("WWW-Authenticate", "Basic realm=\"rill\"");
            }
        }
        if !host_allowed(request.host.as_deref(), &self.config.host_allow) {
            self.refused += 1;
            return Response::error(
                421,
                "Transmission received your request, but the hostname was unrecognized (use an IP address, \
                 localhost, or a name given with --rpc-host)",
            );
        }
        let path = request.path.trim_end_matches('/');
        match (request.method, path) {
            (Method::Get | Method::Head, "" | "/transmission/web" | "/transmission/web/index.html" | "/index.html") => {
                self.served += 1;
                Response::new(200, "text/html; charset=UTF-8", PAGE)
                    .with_header("Cache-Control", "no-store")
                    .with_header("X-Frame-Options", "DENY")
                    .with_header("Content-Security-Policy", "default-src 'self' 'unsafe-inline'; img-src 'self' data:")
            }
            (Method::Get | Method::Head, "/transmission") => {
                Response::new(301, "text/plain", "").with_header("Location", "/transmission/web/")
            }
            (_, RPC_PATH) => {
                if request.session_id.as_deref() != Some(self.session_id.as_str()) {
                    self.refused += 1;
                    let body = format!(
                        "<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p>\
                         <p><code>X-Transmission-Session-Id: {}</code></p>",
                        self.session_id
                    );
                    return Response::new(409, "text/html; charset=UTF-8", body)
                        .with_header("X-Transmission-Session-Id", self.session_id.clone());
                }
                if request.method != Method::Post {
                    self.refused += 1;
                    return Response::error(405, "RPC requests are POSTs").with_header("Allow", "POST");
                }
                self.served += 1;
                let body = transmission::handle(&request.body, backend);
                Response::new(200, "application/json; charset=UTF-8", body)
            }
            _ => {
                self.refused += 1;
                Response::error(404, "not found")
            }
        }
    }

    fn send(&mut self, id: RpcConnId, response: &Response, keep_alive: bool, head_only: bool) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let before = conn.output.len();
        response.write_to(&mut conn.output, keep_alive, head_only);
        self.buffered += conn.output.len() - before;
        if !keep_alive {
            conn.closing = true;
            conn.input.clear();
        }
    }

    /// Answers with an error and closes once it is written.
    fn refuse(&mut self, id: RpcConnId, response: Response) {
        self.refused += 1;
        if let Some(conn) = self.conns.get_mut(id.0) {
            self.buffered -= conn.input.len();
            conn.input = Vec::new();
        }
        self.send(id, &response, false, false);
    }

    /// What `id` has to write.
    pub fn pending_output(&self, id: RpcConnId) -> &[u8] {
        self.conns.get(id.0).map_or(&[], |c| &c.output)
    }

    /// The driver wrote `n` bytes of `pending_output`.
    pub fn consume_output(&mut self, id: RpcConnId, n: usize) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let n = n.min(conn.output.len());
        conn.output.drain(..n);
        self.buffered -= n;
        if conn.output.is_empty() {
            conn.output = Vec::new();
            if conn.closing {
                self.close(id);
            }
        }
    }

    /// A write or read failed: forget the connection.
    pub fn handle_error(&mut self, id: RpcConnId) {
        self.close(id);
    }

    fn close(&mut self, id: RpcConnId) {
        if let Some(conn) = self.conns.try_remove(id.0) {
            self.buffered -= conn.input.len() + conn.output.len();
            self.to_close.push(id);
        }
    }

    /// A connection the driver must close (its socket), once.
    pub fn poll_close(&mut self) -> Option<RpcConnId> {
        self.to_close.pop()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.conns.iter().map(|(_, c)| c.deadline).min()
    }

    /// Closes connections past their deadline: a request that did not arrive in time gets a 408.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let due: Vec<(usize, bool)> =
            self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(k, c)| (k, c.reading)).collect();
        for (key, reading) in due {
            let id = RpcConnId(key);
            if reading {
                log::debug!("rpc: a request did not arrive within {REQUEST_DEADLINE:?}: closing");
                self.refuse(id, Response::error(408, "request timeout"));
                // No second chance to write it slowly either.
                if let Some(conn) = self.conns.get_mut(id.0) {
                    conn.deadline = now + REQUEST_DEADLINE;
                    conn.reading = false;
                }
            } else {
                self.close(id);
            }
        }
    }
}

/// Whether an `Authorization` header carries `user:pass` (HTTP Basic).
fn basic_auth_matches(header: Option<&str>, user: &str, pass: &str) -> bool {
    let Some(value) = header else {
        return false;
    };
    let Some((scheme, coded)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Some(decoded) = base64::decode(coded.trim().as_bytes()) else {
        return false;
    };
    let expected = format!("{user}:{pass}");
    constant_time_eq(&decoded, expected.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Transmission's rule against DNS rebinding: a request's Host must be an IP address, `localhost`, or a
/// name the user allowed. A request without Host (HTTP/1.0) passes, as in Transmission.
pub fn host_allowed(host: Option<&str>, allow: &[String]) -> bool {
    let Some(host) = host else {
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
    };
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || allow.iter().any(|a| a.eq_ignore_ascii_case(name) || wildcard_matches(a, name))
}

/// `*.example.com` matches `a.example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|suffix| {
        suffix.starts_with('.')
            && name.len() > suffix.len()
            && name.to_ascii_lowercase().ends_with(&suffix.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests;
