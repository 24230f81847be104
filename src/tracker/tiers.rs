//! BEP 12 tiers and the announce lifecycle: which tracker of each tier is asked when, with which event,
//! and what its answer changes.
//!
//! Owns: starting due announces, the event for each tracker, fall-back within a tier, the move to the
//! front of the tracker that answered, re-announce intervals and the whole-tier back-off, peer
//! de-duplication, and a user's edit of the tracker list.
//! Must not: build or parse bytes, or track a request's phases (that is `request.rs`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::request::Slot;
use super::{
    AnnounceParams, AnnounceReply, Budget, Event, Retransmit, Tier, Tracker, TrackerError, TrackerEvent, TrackerState,
    Trackers, ANSWERED_PATIENCE, FIRST_ANSWER_PATIENCE, MAX_PATIENCE_DOUBLINGS,
};
use crate::time::{secs, Timestamp};

/// Re-announce interval when a tracker names none.
const DEFAULT_INTERVAL: Duration = secs(30 * 60);
/// Bounds on the re-announce interval, whatever a tracker says.
const MIN_INTERVAL: Duration = secs(30);
const MAX_INTERVAL: Duration = secs(4 * 60 * 60);
/// Back-off after a whole tier failed: doubles from `RETRY_BASE` up to `RETRY_MAX`.
const RETRY_BASE: Duration = secs(60);
const RETRY_MAX: Duration = secs(60 * 60);
/// Peer addresses remembered for de-duplication; later ones are dropped, which bounds memory.
const MAX_KNOWN_PEERS: usize = 65_536;

impl Trackers {
    /// Starts the announce of every tier whose time has come, in tier order (tiers that failed as a whole
    /// last), while fewer than `MAX_IN_FLIGHT` exchanges run; the others stay due and wait. A start that fails at once (bad URL,
    /// cached lookup failure) moves its tier on, so each tier is started until it has a request in flight,
    /// is no longer due, or no slot is left; a tier that ran out waits a back-off, so this ends, in one pass
    /// over the tiers.
    pub(super) fn start_due_announces(&mut self, now: Timestamp) {
        if !self.announcing || self.stop_deadline.is_some() {
            return;
        }
        // Tiers that have not failed as a whole go first: every tracker of a long list gets its first try
        // before dead ones are retried, so a working tracker is reached wherever it sits in the list.
        for retries in [false, true] {
            for i in 0..self.tiers.len() {
                if (self.tiers[i].failures > 0) != retries {
                    continue;
                }
                while self.tiers[i].next_at.is_some_and(|at| at <= now) {
                    let tier = &self.tiers[i];
                    if !self.has_room(self.trackers[tier.order[tier.pos]].budget()) {
                        break; // a later tier may use the other budget
                    }
                    self.start_tier(i, now);
                }
            }
        }
    }

    /// Replaces the tracker list (a user's edit), in `normalize_tiers` form. Every tracker that stays keeps what
    /// is known of it: its request in flight, its last answer, whether it knows us. Those that go have their
    /// requests cancelled (without `stopped`, as Transmission does). A tier holding a tracker that was there
    /// before keeps that tracker's old tier's schedule and back-off; a tier of new trackers is due now. Tier
    /// order is the list's: the edit is the user's order.
    pub fn set_tiers(&mut self, tiers: &[Vec<String>], now: Timestamp) {
        let tiers = super::normalize_tiers(tiers);
        {
            let staying: HashSet<&str> = tiers.iter().flatten().map(String::as_str).collect();
            for t in 0..self.trackers.len() {
                if !staying.contains(self.trackers[t].url_text.as_str()) {
                    self.cancel(t, Slot::Announce);
                    self.cancel(t, Slot::Scrape);
                }
            }
        }
        let old_tiers = std::mem::take(&mut self.tiers);
        let old_count = self.trackers.len();
        let mut old: HashMap<String, (usize, Tracker)> = std::mem::take(&mut self.trackers)
            .into_iter()
            .enumerate()
            .map(|(i, tr)| (tr.url_text.clone(), (i, tr)))
            .collect();
        let mut moved_to: Vec<Option<usize>> = vec![None; old_count];
        let scheduling = self.announcing && self.stop_deadline.is_none();
        for urls in tiers {
            let tier_no = self.tiers.len();
            let mut order = Vec::with_capacity(urls.len());
            let mut inherited: Option<&Tier> = None;
            let mut in_flight = None;
            for url in urls {
                let t = self.trackers.len();
                let tracker = match old.remove(&url) {
                    Some((i, mut tracker)) => {
                        moved_to[i] = Some(t);
                        inherited = inherited.or(old_tiers.get(tracker.tier));
                        tracker.tier = tier_no;
                        tracker
                    }
                    None => Tracker::fresh(url, tier_no),
                };
                if tracker.announce.is_some() && in_flight.is_none() {
                    in_flight = Some(order.len());
                }
                order.push(t);
                self.trackers.push(tracker);
            }
            let (next_at, failures, manual_from) =
                inherited.map_or((Some(now), 0, now), |tier| (tier.next_at, tier.failures, tier.manual_from));
            // A tier whose current tracker has a request in flight is scheduled by its answer; any other is due
            // when its old tier was (or now, if that old tier was waiting for a request that is gone).
            let next_at = if !scheduling || in_flight.is_some() { None } else { Some(next_at.unwrap_or(now)) };
            self.tiers.push(Tier { order, pos: in_flight.unwrap_or(0), next_at, failures, manual_from });
        }
        self.active = self.active.iter().filter_map(|&t| moved_to[t]).collect();
        self.scrape_queue = self.scrape_queue.iter().filter_map(|&t| moved_to[t]).collect();
    }

    /// Starts the announce of tier `i`'s current tracker.
    fn start_tier(&mut self, i: usize, now: Timestamp) {
        let tier = &mut self.tiers[i];
        tier.next_at = None;
        let t = tier.order[tier.pos];
        let last_in_tier = tier.pos + 1 == tier.order.len();
        let event = self.event_for(t);
        let params = self.announce_params(t, event);
        // A silent UDP tracker gives way after one wait when the tier has another to try.
        let schedule = Retransmit {
            max_exponent: if last_in_tier { self.timeouts.udp.max_exponent } else { 0 },
            ..self.timeouts.udp
        };
        self.trackers[t].state = TrackerState::Announcing;
        self.begin_announce(t, params, None, schedule, now);
    }

    /// How long tracker `t`'s announce in flight may hold its slot while `queued` tiers of its budget wait,
    /// if it is limited.
    fn patience(&self, t: usize, queued: usize) -> Option<Duration> {
        let tracker = &self.trackers[t];
        if tracker.announce.as_ref()?.event() == Some(Event::Stopped) {
            return None;
        }
        patience_for(tracker, queued)
    }

    /// Tiers with an announce scheduled (due now or later) whose next tracker counts against `budget`.
    fn queued(&self, budget: Budget) -> usize {
        self.tiers
            .iter()
            .filter(|tier| tier.next_at.is_some() && self.trackers[tier.order[tier.pos]].budget() == budget)
            .count()
    }

    /// When the first announce in flight runs out of patience.
    pub(super) fn earliest_patience_end(&self, budget: Budget) -> Option<Timestamp> {
        let queued = self.queued(budget);
        self.active
            .iter()
            .filter(|&&t| self.trackers[t].budget() == budget)
            .filter_map(|&t| Some(self.trackers[t].announce.as_ref()?.started_at() + self.patience(t, queued)?))
            .min()
    }

    /// While every slot is taken and a tier waits, ends the announces whose patience ran out (oldest
    /// first, one per waiting tier): each counts as that tracker failing.
    pub(super) fn give_up_impatient(&mut self, now: Timestamp) {
        if !self.announcing || self.stop_deadline.is_some() {
            return;
        }
        for budget in [Budget::Sockets, Budget::Datagrams] {
            let waiting = self
                .tiers
                .iter()
                .filter(|tier| tier.next_at.is_some_and(|at| at <= now))
                .filter(|tier| self.trackers[tier.order[tier.pos]].budget() == budget)
                .count();
            let mut to_free = (self.in_flight_of(budget) + waiting).saturating_sub(budget.limit()).min(waiting);
            let queued = self.queued(budget);
            while to_free > 0 {
                let expired = self
                    .active
                    .iter()
                    .filter(|&&t| self.trackers[t].budget() == budget)
                    .filter_map(|&t| {
                        let started = self.trackers[t].announce.as_ref()?.started_at();
                        (started + self.patience(t, queued)? <= now).then_some((started, t))
                    })
                    .min();
                let Some((_, t)) = expired else {
                    break;
                };
                log::debug!("tracker {}: no answer yet; giving its slot to the next", self.trackers[t].url_text);
                self.give_up_announce(t, now);
                to_free -= 1;
            }
        }
    }

    fn event_for(&self, t: usize) -> Event {
        let tracker = &self.trackers[t];
        if !tracker.started_ok {
            Event::Started
        } else if self.completed && !tracker.completed_sent {
            Event::Completed
        } else {
            Event::None
        }
    }

    pub(super) fn announce_params(&self, t: usize, event: Event) -> AnnounceParams {
        let id = &self.identity;
        AnnounceParams {
            info_hash: id.info_hash,
            peer_id: id.peer_id,
            port: id.port,
            transfer: self.transfer,
            event,
            numwant: if event == Event::Stopped { 0 } else { id.numwant },
            key: id.key,
            tracker_id: self.trackers[t].tracker_id.clone(),
        }
    }

    /// An announce finished (its request is already gone).
    pub(super) fn announce_done(
        &mut self,
        t: usize,
        params: &AnnounceParams,
        result: Result<AnnounceReply, TrackerError>,
        now: Timestamp,
    ) {
        let url = self.trackers[t].url_text.clone();
        if self.trackers[t].stop_after_completed {
            // rill is stopping: record the `completed` answer, then say goodbye.
            self.trackers[t].stop_after_completed = false;
            if let Ok(reply) = &result {
                self.trackers[t].completed_sent = true;
                self.trackers[t].started_ok = true;
                self.events.push_back(TrackerEvent::Announced {
                    url: url.clone(),
                    event: params.event,
                    peers: reply.peers.len(),
                    seeders: reply.seeders,
                    leechers: reply.leechers,
                });
            }
            if let Some(deadline) = self.stop_deadline {
                if now < deadline {
                    self.send_stopped(t, deadline, now);
                }
            }
            return;
        }
        if params.event == Event::Stopped {
            let tracker = &mut self.trackers[t];
            tracker.state = TrackerState::Stopped;
            if let Err(e) = result {
                tracker.last_error = Some(e.to_string());
                let message = format!("stopped: {e}");
                self.events.push_back(TrackerEvent::Error { url, message });
            }
            return;
        }
        let i = self.trackers[t].tier;
        match result {
            Ok(reply) => {
                let tracker = &mut self.trackers[t];
                tracker.state = TrackerState::Working;
                tracker.started_ok = true;
                if params.event == Event::Completed || (self.completed && params.transfer.left == 0) {
                    tracker.completed_sent = true;
                }
                if reply.tracker_id.is_some() {
                    tracker.tracker_id = reply.tracker_id.clone();
                }
                tracker.last_announce = Some(now);
                tracker.peers = reply.peers.len();
                tracker.seeders = reply.seeders;
                tracker.leechers = reply.leechers;
                tracker.last_error = None;
                let again_now = self.completed && !tracker.completed_sent;
                if let Some(message) = reply.warning.clone() {
                    self.events.push_back(TrackerEvent::Warning { url: url.clone(), message });
                }
                self.events.push_back(TrackerEvent::Announced {
                    url,
                    event: params.event,
                    peers: reply.peers.len(),
                    seeders: reply.seeders,
                    leechers: reply.leechers,
                });
                self.merge_peers(&reply.peers);
                // BEP 12: the tracker that answered moves to the front of its tier.
                let tier = &mut self.tiers[i];
                if let Some(pos) = tier.order.iter().position(|&x| x == t) {
                    tier.order.remove(pos);
                }
                tier.order.insert(0, t);
                tier.pos = 0;
                tier.failures = 0;
                tier.manual_from = now + reply.min_interval.unwrap_or(MIN_INTERVAL).clamp(MIN_INTERVAL, MAX_INTERVAL);
                let interval = reply
                    .interval
                    .unwrap_or(DEFAULT_INTERVAL)
                    .max(reply.min_interval.unwrap_or(Duration::ZERO))
                    .clamp(MIN_INTERVAL, MAX_INTERVAL);
                tier.next_at = Some(if again_now { now } else { now + interval });
            }
            Err(e) => {
                let tracker = &mut self.trackers[t];
                if !tracker.started_ok {
                    tracker.unanswered = tracker.unanswered.saturating_add(1);
                }
                tracker.state = TrackerState::Failing;
                tracker.last_error = Some(e.to_string());
                self.events.push_back(TrackerEvent::Error { url, message: e.to_string() });
                let tier = &mut self.tiers[i];
                if tier.order.get(tier.pos) != Some(&t) {
                    return;
                }
                tier.pos += 1;
                if tier.pos < tier.order.len() {
                    tier.next_at = Some(now);
                } else {
                    tier.pos = 0;
                    tier.failures = tier.failures.saturating_add(1);
                    tier.next_at = Some(now + retry_backoff(tier.failures));
                }
            }
        }
    }

    /// Hands out the addresses no tracker gave before, skipping unusable ones and ourselves on loopback.
    fn merge_peers(&mut self, peers: &[SocketAddr]) {
        let own_port = self.identity.port;
        let mut fresh = Vec::new();
        for &addr in peers {
            let ip = addr.ip();
            let unusable = addr.port() == 0
                || ip.is_unspecified()
                || ip.is_multicast()
                || ip == IpAddr::from([255, 255, 255, 255])
                || (ip.is_loopback() && addr.port() == own_port);
            if unusable || self.known_peers.len() >= MAX_KNOWN_PEERS {
                continue;
            }
            if self.known_peers.insert(addr) {
                fresh.push(addr);
            }
        }
        if !fresh.is_empty() {
            self.events.push_back(TrackerEvent::Peers(fresh));
        }
    }
}

/// How long an announce to `tracker` may hold a slot while others wait: `FIRST_ANSWER_PATIENCE` (doubling)
/// while it never answered, `ANSWERED_PATIENCE` once it did (so that a few trackers that answered once and
/// then went silent cannot hold every slot for a whole UDP retransmission schedule).
///
/// The first-answer patience shrinks while many tiers queue for the same budget (half from 17 queued, a quarter
/// from 65): with thousands of trackers a first pass that gives each 1 s would take minutes to reach a working
/// one, so the first pass finds the quick ones and a tracker that was merely slow is asked again, with twice
/// the patience, on a later pass.
pub(super) fn patience_for(tracker: &Tracker, queued: usize) -> Option<Duration> {
    if tracker.started_ok {
        return Some(ANSWERED_PATIENCE);
    }
    let full = FIRST_ANSWER_PATIENCE.saturating_mul(1 << tracker.unanswered.min(MAX_PATIENCE_DOUBLINGS));
    let divisor = match queued {
        0..=16 => 1,
        17..=64 => 2,
        _ => 4,
    };
    Some(full / divisor)
}

/// The wait after the `failures`-th whole-tier failure in a row.
fn retry_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1 << doublings).min(RETRY_MAX)
}
