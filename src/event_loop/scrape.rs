//! `rill info --scrape`: a small one-shot loop that scrapes every tracker of a torrent.
//!
//! Owns: `TrackerLoop`, a `mio::Poll` with its own `Waker` and `Clock` that drives one `Trackers` through a
//! `TrackerDriver` exactly as the engine does (also used by tests that need real tracker sockets without
//! the engine), and `scrape`, which runs it for a scrape-only `Trackers`.
//! Must not: print (the CLI prints each `ScrapeOutcome`), or outlive the caller's time limit.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll, Waker};

use super::token::{self, Source};
use super::trackers::TrackerDriver;
use crate::metainfo::InfoHash;
use crate::rng::{Entropy, Rng};
use crate::time::{secs, Clock, Timestamp};
use crate::tracker::{Retransmit, ScrapeCounts, Timeouts, TrackerError, TrackerEvent, Trackers, Transfer};

/// One tracker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeOutcome {
    pub url: String,
    pub result: Result<ScrapeCounts, TrackerError>,
}

impl fmt::Display for ScrapeOutcome {
    /// One line: `URL: 3 seeders, 1 leechers, 7 completed` or `URL: error: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(counts) => write!(f, "{}: {counts}", self.url),
            Err(e) => write!(f, "{}: error: {e}", self.url),
        }
    }
}

/// Scrapes every tracker in `tiers` at once and returns one outcome per tracker, in tier order. Trackers
/// that have not answered within `timeout` get `TrackerError::TimedOut`. UDP packets are retransmitted
/// after a quarter of `timeout` (1 s to 15 s), since a one-shot command cannot wait out BEP 15's minutes.
pub fn scrape(tiers: &[Vec<String>], info_hash: InfoHash, timeout: Duration) -> Vec<ScrapeOutcome> {
    let urls: Vec<String> = {
        let mut seen = std::collections::HashSet::new();
        tiers
            .iter()
            .flatten()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty() && seen.insert(u.clone()))
            .collect()
    };
    let mut results: Vec<Option<Result<ScrapeCounts, TrackerError>>> = vec![None; urls.len()];
    if let Err(e) = run_scrape(tiers, info_hash, timeout, &urls, &mut results) {
        log::debug!("scrape loop: {e}");
        for result in results.iter_mut().filter(|r| r.is_none()) {
            *result = Some(Err(TrackerError::Io(e.kind())));
        }
    }
    urls.into_iter()
        .zip(results)
        .map(|(url, result)| ScrapeOutcome { url, result: result.unwrap_or(Err(TrackerError::TimedOut)) })
        .collect()
}

fn run_scrape(
    tiers: &[Vec<String>],
    info_hash: InfoHash,
    timeout: Duration,
    urls: &[String],
    results: &mut [Option<Result<ScrapeCounts, TrackerError>>],
) -> io::Result<()> {
    let mut lp = TrackerLoop::new()?;
    let start = lp.now();
    let end = start + timeout;
    // Transaction ids must not be guessable (BEP 15): they come from the OS generator.
    let mut entropy = Entropy::os().map_err(io::Error::other)?;
    let mut rng = Rng::seeded(entropy.next_u64());
    let mut trackers = Trackers::scrape_only(tiers, info_hash, entropy, &mut rng, start);
    trackers.set_timeouts(Timeouts {
        http: timeout,
        udp: Retransmit { base: (timeout / 4).clamp(secs(1), secs(15)), ..Retransmit::default() },
        stop: Duration::ZERO,
    });
    trackers.scrape(start);
    let mut record = |event: TrackerEvent| {
        if let TrackerEvent::Scraped { url, result } = event {
            if let Some(i) = urls.iter().position(|u| *u == url) {
                results[i] = Some(result);
            }
        }
    };
    loop {
        lp.turn(&mut trackers, Transfer::default(), &mut rng, end, &mut record)?;
        if !trackers.is_scraping() || lp.now() >= end {
            return Ok(());
        }
    }
}

/// A loop of its own for one `Trackers`: the engine's tracker dispatch without the engine.
pub struct TrackerLoop {
    poll: Poll,
    driver: TrackerDriver,
    clock: Clock,
    events: Events,
}

impl TrackerLoop {
    pub fn new() -> io::Result<TrackerLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), token::encode(Source::Waker))?);
        let driver = TrackerDriver::new(poll.registry(), waker)?;
        Ok(TrackerLoop { poll, driver, clock: Clock::start(), events: Events::with_capacity(64) })
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn driver(&self) -> &TrackerDriver {
        &self.driver
    }

    /// One turn: fire due time-outs, perform queued I/O and hand out events, wait for readiness until the
    /// next deadline (never past `end`), dispatch what is ready, and hand out the events that caused.
    pub fn turn(
        &mut self,
        trackers: &mut Trackers,
        transfer: Transfer,
        rng: &mut Rng,
        end: Timestamp,
        on_event: &mut impl FnMut(TrackerEvent),
    ) -> io::Result<()> {
        let now = self.clock.now();
        if trackers.next_deadline().is_some_and(|d| d <= now) {
            trackers.on_timeout(now, transfer, rng);
        }
        self.pump(trackers, on_event);
        let wake = trackers.next_deadline().map_or(end, |d| d.min(end));
        match self.poll.poll(&mut self.events, Some(wake - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let now = self.clock.now();
        for event in self.events.iter() {
            match token::decode(event.token()) {
                Some(Source::Waker) => self.driver.on_wake(trackers, now),
                Some(source @ (Source::TrackerHttp(_) | Source::TrackerUdp4 | Source::TrackerUdp6)) => {
                    self.driver.on_ready(source, event, self.poll.registry(), trackers, now);
                }
                _ => {}
            }
        }
        self.pump(trackers, on_event);
        Ok(())
    }

    /// Performs queued I/O and hands out every event (after `on_completed` or `on_stop`, say).
    pub fn pump(&mut self, trackers: &mut Trackers, on_event: &mut impl FnMut(TrackerEvent)) {
        let now = self.clock.now();
        self.driver.pump(self.poll.registry(), trackers, now);
        while let Some(event) = trackers.poll_event() {
            on_event(event);
        }
    }
}
