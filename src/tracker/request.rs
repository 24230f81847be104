//! One announce or scrape to one tracker, from name lookup to answer, over HTTP or UDP.
//!
//! Owns: the phases of a request (awaiting a lookup, an HTTP exchange, a UDP exchange), routing of the loop's `on_*` inputs to the request they belong to, HTTP redirects and the
//! fall-back to a name's next address.
//! Must not: decide what to announce or when (that is `mod.rs`), or touch sockets.

use std::io;
use std::net::SocketAddr;

use log::debug;

use super::codec::{Host, Scheme, TrackerUrl, UrlError};
use super::error::TrackerError;
use super::http::{self, HttpResponse, ResponseParser};
use super::message::{AnnounceParams, Answer, Event};
use super::resolve::Lookup;
use super::udp::{self, Retransmit, Step, UdpExchange, UdpWork};
use super::{IoId, Tracker, TrackerEvent, TrackerIo, Trackers};
use crate::time::Timestamp;

/// HTTP redirects followed per request (301, 302, 303, 307, 308).
pub(super) const MAX_REDIRECTS: u32 = 5;

/// Which of a tracker's two request slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    Announce,
    Scrape,
}

const SLOTS: [Slot; 2] = [Slot::Announce, Slot::Scrape];

#[derive(Debug)]
enum Purpose {
    Announce(AnnounceParams),
    Scrape,
}

impl Request {
    /// The announce event this request carries, if it is an announce.
    pub(super) fn event(&self) -> Option<Event> {
        match &self.purpose {
            Purpose::Announce(params) => Some(params.event),
            Purpose::Scrape => None,
        }
    }
}

/// A request in flight.
#[derive(Debug)]
pub(super) struct Request {
    purpose: Purpose,
    /// The URL contacted now: the announce or scrape URL, or a redirect's target.
    target: TrackerUrl,
    /// The HTTP request for `target` (empty for UDP).
    http_request: Vec<u8>,
    phase: Phase,
    /// The request fails at this moment whatever its phase (HTTP requests and `stopped` announces).
    give_up_at: Option<Timestamp>,
    schedule: Retransmit,
    redirects: u32,
    /// When the request began (the slot policy's patience runs from here).
    started_at: Timestamp,
}

/// Named for what the request awaits.
#[derive(Debug)]
enum Phase {
    /// The loop resolving `target`'s host.
    Lookup {
        until: Timestamp,
    },
    Http(HttpExchange),
    Udp(UdpExchange),
}

#[derive(Debug)]
struct HttpExchange {
    io: IoId,
    /// The loop still holds the connection: dropping the request must send `HttpClose`.
    open: bool,
    /// Invariant: `addr < addrs.len()`.
    addrs: Vec<SocketAddr>,
    addr: usize,
    parser: ResponseParser,
}

impl Request {
    pub(super) fn started_at(&self) -> Timestamp {
        self.started_at
    }

    pub(super) fn deadline(&self) -> Option<Timestamp> {
        let phase = match &self.phase {
            Phase::Lookup { until } => Some(*until),
            Phase::Http(_) => None,
            Phase::Udp(exchange) => Some(exchange.next_deadline()),
        };
        match (phase, self.give_up_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The request slot itself, to fill or empty it.
fn slot_box(tracker: &mut Tracker, slot: Slot) -> &mut Option<Box<Request>> {
    match slot {
        Slot::Announce => &mut tracker.announce,
        Slot::Scrape => &mut tracker.scrape,
    }
}

fn slot_of(tracker: &mut Tracker, slot: Slot) -> Option<&mut Request> {
    slot_box(tracker, slot).as_deref_mut()
}

fn slot_ref(tracker: &Tracker, slot: Slot) -> Option<&Request> {
    match slot {
        Slot::Announce => tracker.announce.as_deref(),
        Slot::Scrape => tracker.scrape.as_deref(),
    }
}

impl Trackers {
    // -----------------------------------------------------------------------------------------------------
    // Inputs from the loop.

    /// The loop's answer to `TrackerIo::Resolve { id, .. }`; every request waiting for that name goes on.
    pub fn on_resolved(&mut self, id: IoId, result: Result<Vec<SocketAddr>, String>, now: Timestamp) {
        let Some(name) = self.hosts.on_answer(id, result, now) else {
            debug!("lookup {id:?}: answer for nobody, ignored");
            return;
        };
        let host = Host::Name(name);
        for t in self.active.clone() {
            for slot in SLOTS {
                let waiting = slot_ref(&self.trackers[t], slot)
                    .is_some_and(|r| matches!(r.phase, Phase::Lookup { .. }) && r.target.host == host);
                if waiting {
                    self.go(t, slot, now);
                }
            }
        }
    }

    pub fn on_http_data(&mut self, id: IoId, data: &[u8], now: Timestamp) {
        let Some((t, slot)) = self.find_http(id) else {
            return;
        };
        let Some(Request { phase: Phase::Http(exchange), .. }) = slot_of(&mut self.trackers[t], slot) else {
            return;
        };
        match exchange.parser.feed(data) {
            Ok(None) => {}
            Ok(Some(response)) => self.on_http_response(t, slot, response, now),
            Err(e) => self.finish(t, slot, Err(TrackerError::Http(e)), now),
        }
    }

    /// The connection ended: `Ok` for an orderly close by the server, `Err` with the reason otherwise.
    /// A connection that fails before any byte arrives moves on to the name's next address.
    pub fn on_http_closed(&mut self, id: IoId, result: Result<(), io::ErrorKind>, now: Timestamp) {
        let Some((t, slot)) = self.find_http(id) else {
            return;
        };
        let next_io = IoId(self.next_io + 1);
        let Some(request) = slot_of(&mut self.trackers[t], slot) else {
            return;
        };
        let Phase::Http(exchange) = &mut request.phase else {
            return;
        };
        exchange.open = false;
        let outcome = match result {
            Ok(()) => exchange.parser.on_eof().map_err(TrackerError::Http),
            Err(kind) if exchange.parser.received_any() => Err(TrackerError::Io(kind)),
            Err(kind) if exchange.addr + 1 < exchange.addrs.len() => {
                debug!("tracker {}: {kind}; trying its next address", request.target.host);
                exchange.addr += 1;
                exchange.io = next_io;
                exchange.open = true;
                exchange.parser = ResponseParser::new();
                let addr = exchange.addrs[exchange.addr];
                let request = request.http_request.clone();
                self.next_io += 1;
                self.io.push_back(TrackerIo::HttpRequest { id: next_io, addr, request });
                return;
            }
            Err(kind) => Err(TrackerError::Connect(kind)),
        };
        match outcome {
            Ok(response) => self.on_http_response(t, slot, response, now),
            Err(e) => self.finish(t, slot, Err(e), now),
        }
    }

    /// A datagram on a tracker UDP socket. Short, oversized, unknown or unmatched datagrams and replies from
    /// another address than the tracker's are ignored (logged at debug).
    pub fn on_datagram(&mut self, from: SocketAddr, data: &[u8], now: Timestamp) {
        let reply = match udp::decode_reply(data) {
            Ok(reply) => reply,
            Err(e) => {
                debug!("udp {from}: ignored: {e}");
                return;
            }
        };
        let id = reply.transaction_id();
        if udp::txn_namespace_of(id) != self.txn_namespace {
            debug!("udp {from}: ignored: transaction id {id:#010x} is in another torrent's namespace");
            return;
        }
        let mut found = None;
        'search: for &t in &self.active {
            let tracker = &self.trackers[t];
            for slot in SLOTS {
                if let Some(Request { phase: Phase::Udp(exchange), .. }) = slot_ref(tracker, slot) {
                    if exchange.transaction_id() == id {
                        found = Some((t, slot));
                        break 'search;
                    }
                }
            }
        }
        let Some((t, slot)) = found else {
            debug!("udp {from}: ignored: unknown transaction id {id:#010x}");
            return;
        };
        let Some(Request { phase: Phase::Udp(exchange), .. }) = slot_of(&mut self.trackers[t], slot) else {
            return;
        };
        let step = exchange.on_reply(from, &reply, now, &mut self.entropy);
        if step == Step::Idle {
            debug!("udp {from}: ignored: stranger or unexpected action");
        }
        self.udp_step(t, slot, step, now);
    }

    /// The loop could not send a datagram to `addr` (no route, no IPv6, socket error): every exchange with
    /// that tracker fails now instead of waiting out its retransmissions.
    pub fn on_udp_send_failed(&mut self, addr: SocketAddr, kind: io::ErrorKind, now: Timestamp) {
        for t in self.active.clone() {
            for slot in SLOTS {
                let affected = matches!(
                    slot_ref(&self.trackers[t], slot),
                    Some(Request { phase: Phase::Udp(exchange), .. }) if exchange.talks_to(addr)
                );
                if affected {
                    self.finish(t, slot, Err(TrackerError::Io(kind)), now);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------------------
    // Starting, advancing and ending requests.

    pub(super) fn begin_announce(
        &mut self,
        t: usize,
        params: AnnounceParams,
        give_up_at: Option<Timestamp>,
        schedule: Retransmit,
        now: Timestamp,
    ) {
        let (url_text, event) = (self.trackers[t].url_text.clone(), params.event);
        self.events.push_back(TrackerEvent::Requested { url: url_text, event });
        let url = match self.trackers[t].url() {
            Ok(url) => url,
            Err(e) => {
                let e = TrackerError::Url(e);
                self.announce_done(t, &params, Err(e), now);
                return;
            }
        };
        let http_request = match url.scheme {
            Scheme::Http => http::announce_request(&url, &params),
            Scheme::Udp => Vec::new(),
        };
        self.begin(t, Slot::Announce, Purpose::Announce(params), url, http_request, give_up_at, schedule, now);
    }

    pub(super) fn begin_scrape(&mut self, t: usize, target: TrackerUrl, now: Timestamp) {
        let http_request = match target.scheme {
            Scheme::Http => http::scrape_request(&target, &self.identity.info_hash),
            Scheme::Udp => Vec::new(),
        };
        let schedule = self.timeouts.udp;
        self.begin(t, Slot::Scrape, Purpose::Scrape, target, http_request, None, schedule, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn begin(
        &mut self,
        t: usize,
        slot: Slot,
        purpose: Purpose,
        target: TrackerUrl,
        http_request: Vec<u8>,
        give_up_at: Option<Timestamp>,
        schedule: Retransmit,
        now: Timestamp,
    ) {
        let http_limit = now + self.timeouts.http;
        let give_up_at = match target.scheme {
            Scheme::Http => Some(give_up_at.map_or(http_limit, |g| g.min(http_limit))),
            Scheme::Udp => give_up_at,
        };
        *slot_box(&mut self.trackers[t], slot) = Some(Box::new(Request {
            purpose,
            target,
            http_request,
            phase: Phase::Lookup { until: http_limit },
            give_up_at,
            schedule,
            redirects: 0,
            started_at: now,
        }));
        if !self.active.contains(&t) {
            self.active.push(t);
        }
        self.go(t, slot, now);
    }

    /// Contacts the target's host, or waits for its lookup.
    fn go(&mut self, t: usize, slot: Slot, now: Timestamp) {
        let Some(request) = slot_ref(&self.trackers[t], slot) else {
            return;
        };
        let (host, port) = (request.target.host.clone(), request.target.port);
        let next_io = &mut self.next_io;
        let lookup = self.hosts.lookup(&host, port, now, || {
            *next_io += 1;
            IoId(*next_io)
        });
        if let Lookup::Ask { io, name } = &lookup {
            self.io.push_back(TrackerIo::Resolve { id: *io, host: name.clone(), port });
        }
        match lookup {
            Lookup::Ready(addrs) => self.contact(t, slot, addrs, now),
            Lookup::Pending | Lookup::Ask { .. } => {
                let until = now + self.timeouts.http;
                if let Some(request) = slot_of(&mut self.trackers[t], slot) {
                    request.phase = Phase::Lookup { until };
                }
            }
            Lookup::Failed(e) => self.finish(t, slot, Err(e), now),
        }
    }

    /// `addrs` is not empty: a literal, or a lookup that found addresses.
    fn contact(&mut self, t: usize, slot: Slot, addrs: Vec<SocketAddr>, now: Timestamp) {
        let io = IoId(self.next_io + 1);
        let info_hash = self.identity.info_hash;
        let tracker = &mut self.trackers[t];
        let connection = tracker.connection;
        let Some(request) = slot_of(tracker, slot) else {
            return;
        };
        match request.target.scheme {
            Scheme::Http => {
                self.next_io += 1;
                let addr = addrs[0];
                request.phase =
                    Phase::Http(HttpExchange { io, open: true, addrs, addr: 0, parser: ResponseParser::new() });
                let request = request.http_request.clone();
                self.io.push_back(TrackerIo::HttpRequest { id: io, addr, request });
            }
            Scheme::Udp => {
                let work = match &request.purpose {
                    Purpose::Announce(params) => UdpWork::Announce(params.clone()),
                    Purpose::Scrape => UdpWork::Scrape(info_hash),
                };
                let (exchange, step) = UdpExchange::start(
                    work,
                    addrs,
                    connection,
                    request.schedule,
                    self.txn_namespace,
                    now,
                    &mut self.entropy,
                );
                request.phase = Phase::Udp(exchange);
                self.udp_step(t, slot, step, now);
            }
        }
    }

    fn udp_step(&mut self, t: usize, slot: Slot, step: Step, now: Timestamp) {
        let tracker = &mut self.trackers[t];
        if let Some(Request { phase: Phase::Udp(exchange), .. }) = slot_of(tracker, slot) {
            tracker.connection = exchange.connection();
        }
        match step {
            Step::Idle => {}
            Step::Send(send) => self.io.push_back(TrackerIo::UdpSend { addr: send.addr, datagram: send.datagram }),
            Step::Done(result) => self.finish(t, slot, result, now),
        }
    }

    fn on_http_response(&mut self, t: usize, slot: Slot, response: HttpResponse, now: Timestamp) {
        let status = response.status;
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            self.redirect(t, slot, response.location, now);
            return;
        }
        let is_announce = slot_ref(&self.trackers[t], slot).is_some_and(|r| matches!(r.purpose, Purpose::Announce(_)));
        let result = if (200..300).contains(&status) {
            if is_announce {
                http::decode_announce(&response.body).map(Answer::Announce)
            } else {
                http::decode_scrape(&response.body, &self.identity.info_hash).map(Answer::Scrape)
            }
        } else {
            // Some trackers send their `failure reason` with a 4xx status.
            match http::decode_announce(&response.body) {
                Err(TrackerError::Failure(reason)) => Err(TrackerError::Failure(reason)),
                _ => Err(TrackerError::HttpStatus(status)),
            }
        };
        self.finish(t, slot, result, now);
    }

    fn redirect(&mut self, t: usize, slot: Slot, location: Option<String>, now: Timestamp) {
        let Some(request) = slot_of(&mut self.trackers[t], slot) else {
            return;
        };
        if let Phase::Http(exchange) = &mut request.phase {
            if exchange.open {
                exchange.open = false;
                self.io.push_back(TrackerIo::HttpClose { id: exchange.io });
            }
        }
        let target = match location {
            None => Err(TrackerError::RedirectWithoutLocation),
            Some(_) if request.redirects >= MAX_REDIRECTS => Err(TrackerError::TooManyRedirects),
            Some(location) => match resolve_location(&request.target, &location) {
                Ok(target) if target.scheme == Scheme::Http => Ok(target),
                Ok(_) => Err(TrackerError::Url(UrlError::UnsupportedScheme("udp".into()))),
                Err(e) => Err(TrackerError::Url(e)),
            },
        };
        match target {
            Ok(target) => {
                debug!("tracker {}: redirected to {}{}", request.target.host, target.host, target.path);
                request.redirects += 1;
                request.http_request = http::get_request(&target, &target.path);
                request.target = target;
                request.phase = Phase::Lookup { until: now + self.timeouts.http };
                self.go(t, slot, now);
            }
            Err(e) => self.finish(t, slot, Err(e), now),
        }
    }

    /// Fails requests whose time ran out and retransmits UDP packets that are due.
    pub(super) fn expire_requests(&mut self, now: Timestamp) {
        for t in self.active.clone() {
            for slot in SLOTS {
                let Some(request) = slot_of(&mut self.trackers[t], slot) else {
                    continue;
                };
                if request.deadline().map_or(true, |d| d > now) {
                    continue;
                }
                if request.give_up_at.is_some_and(|g| g <= now) {
                    self.finish(t, slot, Err(TrackerError::TimedOut), now);
                    continue;
                }
                match &mut request.phase {
                    Phase::Lookup { .. } => {
                        let e = TrackerError::Resolve("lookup timed out".into());
                        self.finish(t, slot, Err(e), now);
                    }
                    Phase::Udp(exchange) => {
                        let step = exchange.on_timeout(now, &mut self.entropy);
                        self.udp_step(t, slot, step, now);
                    }
                    Phase::Http(_) => {}
                }
            }
        }
    }

    /// Ends tracker `t`'s announce now as unanswered (it held a slot others wait for); its connection is
    /// closed.
    pub(super) fn give_up_announce(&mut self, t: usize, now: Timestamp) {
        self.finish(t, Slot::Announce, Err(TrackerError::TimedOut), now);
    }

    /// Drops a request without an answer or an event (on exit); its connection is closed.
    pub(super) fn cancel(&mut self, t: usize, slot: Slot) {
        if let Some(request) = slot_box(&mut self.trackers[t], slot).take() {
            self.close_if_open(&request);
            self.forget_if_idle(t);
        }
    }

    /// Tracker `t` leaves the active list once neither of its requests runs.
    fn forget_if_idle(&mut self, t: usize) {
        let tracker = &self.trackers[t];
        if tracker.announce.is_none() && tracker.scrape.is_none() {
            self.active.retain(|&x| x != t);
        }
    }

    fn close_if_open(&mut self, request: &Request) {
        if let Phase::Http(exchange) = &request.phase {
            if exchange.open {
                self.io.push_back(TrackerIo::HttpClose { id: exchange.io });
            }
        }
    }

    /// Ends a request and reports its outcome.
    fn finish(&mut self, t: usize, slot: Slot, result: Result<Answer, TrackerError>, now: Timestamp) {
        let Some(request) = slot_box(&mut self.trackers[t], slot).take() else {
            return;
        };
        self.close_if_open(&request);
        self.forget_if_idle(t);
        match request.purpose {
            Purpose::Announce(params) => {
                let result = result.and_then(|answer| match answer {
                    Answer::Announce(reply) => Ok(reply),
                    Answer::Scrape(_) => Err(TrackerError::BadReply("scrape answer to an announce")),
                });
                self.announce_done(t, &params, result, now);
            }
            Purpose::Scrape => {
                let result = result.and_then(|answer| match answer {
                    Answer::Scrape(counts) => Ok(counts),
                    Answer::Announce(_) => Err(TrackerError::BadReply("announce answer to a scrape")),
                });
                let url = self.trackers[t].url_text.clone();
                self.events.push_back(TrackerEvent::Scraped { url, result });
                self.start_queued_scrapes(now);
            }
        }
    }

    fn find_http(&self, id: IoId) -> Option<(usize, Slot)> {
        self.active.iter().find_map(|&t| {
            SLOTS.into_iter().find_map(|slot| match slot_ref(&self.trackers[t], slot) {
                Some(Request { phase: Phase::Http(exchange), .. }) if exchange.io == id => Some((t, slot)),
                _ => None,
            })
        })
    }
}

/// The URL a `Location` names: absolute, scheme-relative (`//host/p`), absolute-path or relative to
/// the current path's folder. The result is checked like any tracker URL.
pub(super) fn resolve_location(base: &TrackerUrl, location: &str) -> Result<TrackerUrl, UrlError> {
    if location.contains("://") {
        return TrackerUrl::parse(location);
    }
    if let Some(rest) = location.strip_prefix("//") {
        return TrackerUrl::parse(&format!("http://{rest}"));
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let path_only = base.path.split('?').next().unwrap_or("/");
        let folder_end = path_only.rfind('/').map_or(0, |i| i + 1);
        format!("/{}{location}", path_only[..folder_end].trim_start_matches('/'))
    };
    TrackerUrl::parse(&format!("http://{}:{}{path}", base.host, base.port))
}
