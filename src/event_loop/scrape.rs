//! `rill info --scrape`: a small one-shot loop that scrapes every tracker of a torrent.
//!
//! Owns: its own `mio::Poll`, `Waker` and `Clock` for the few seconds the scrape takes, driving a
//! scrape-only `Trackers` through a `TrackerDriver` exactly as the engine does.
//! Must not: print (the CLI prints each `ScrapeOutcome`), or outlive `timeout`.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll, Waker};

use super::token::{self, Source};
use super::trackers::TrackerDriver;
use crate::metainfo::InfoHash;
use crate::rng::Rng;
use crate::time::{secs, Clock};
use crate::tracker::{
    Retransmit, ScrapeCounts, Timeouts, TrackerError, TrackerEvent, Trackers, Transfer,
};

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
    let mut outcomes: Vec<Option<ScrapeOutcome>> = vec![None; urls.len()];
    if let Err(e) = run(tiers, info_hash, timeout, &urls, &mut outcomes) {
        log::debug!("scrape loop: {e}");
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            *slot = Some(ScrapeOutcome {
                url: String::new(),
                result: Err(TrackerError::Io(e.kind())),
            });
        }
    }
    urls.into_iter()
        .zip(outcomes)
        .map(|(url, outcome)| ScrapeOutcome {
            result: outcome.map_or(Err(TrackerError::TimedOut), |o| o.result),
            url,
        })
        .collect()
}

fn run(
    tiers: &[Vec<String>],
    info_hash: InfoHash,
    timeout: Duration,
    urls: &[String],
    outcomes: &mut [Option<ScrapeOutcome>],
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), token::encode(Source::Waker))?);
    let mut driver = TrackerDriver::new(poll.registry(), waker)?;
    let clock = Clock::start();
    let start = clock.now();
    let end = start + timeout;
    // Transaction ids need only differ between runs; main owns OS entropy, so mix the process id in.
    let seed = u64::from_le_bytes(info_hash.0[..8].try_into().unwrap_or_default())
        ^ u64::from(std::process::id());
    let mut rng = Rng::seeded(seed);
    let mut trackers = Trackers::scrape_only(tiers, info_hash, &mut rng, start);
    trackers.set_timeouts(Timeouts {
        http: timeout,
        udp: Retransmit {
            base: (timeout / 4).clamp(secs(1), secs(15)),
            ..Retransmit::default()
        },
        stop: Duration::ZERO,
    });
    trackers.scrape(start);
    let mut events = Events::with_capacity(64);
    loop {
        driver.pump(poll.registry(), &mut trackers, clock.now());
        while let Some(event) = trackers.poll_event() {
            if let TrackerEvent::Scraped { url, result } = event {
                if let Some(i) = urls.iter().position(|u| *u == url) {
                    outcomes[i] = Some(ScrapeOutcome { url, result });
                }
            }
        }
        let now = clock.now();
        if !trackers.is_scraping() || now >= end {
            return Ok(());
        }
        let wake = trackers.next_deadline().map_or(end, |d| d.min(end));
        if let Err(e) = poll.poll(&mut events, Some(wake - now)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let now = clock.now();
        for event in events.iter() {
            match token::decode(event.token()) {
                Some(Source::Waker) => driver.on_wake(&mut trackers, now),
                Some(
                    source @ (Source::TrackerHttp(_) | Source::TrackerUdp4 | Source::TrackerUdp6),
                ) => {
                    driver.on_ready(source, event, poll.registry(), &mut trackers, now);
                }
                _ => {}
            }
        }
        if trackers.next_deadline().is_some_and(|d| d <= now) {
            trackers.on_timeout(now, Transfer::default(), &mut rng);
        }
    }
}
