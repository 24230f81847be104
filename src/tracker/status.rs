//! What the UI shows per tracker.
//!
//! Owns: `TrackerStatus`, `TrackerState` and `Trackers::status`.
//! Must not: change any state.

use std::fmt;

use super::Trackers;
use crate::time::Timestamp;

/// A tracker as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    /// 0-based tier index.
    pub tier: usize,
    pub state: TrackerState,
    /// When it last answered an announce.
    pub last_announce: Option<Timestamp>,
    /// Peers listed in its last answer.
    pub peers: usize,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// When it is due to be asked next (only for the tracker its tier will ask).
    pub next_announce: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerState {
    /// Not asked yet (or a stand-by in its tier).
    Idle,
    Announcing,
    /// The last announce succeeded.
    Working,
    /// The last announce failed.
    Failing,
    Stopping,
    Stopped,
}

impl fmt::Display for TrackerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrackerState::Idle => "idle",
            TrackerState::Announcing => "announcing",
            TrackerState::Working => "working",
            TrackerState::Failing => "failing",
            TrackerState::Stopping => "stopping",
            TrackerState::Stopped => "stopped",
        })
    }
}

impl Trackers {
    /// Every tracker, tier by tier in the order each tier will try them.
    pub fn status(&self) -> Vec<TrackerStatus> {
        let mut out = Vec::with_capacity(self.trackers.len());
        for (i, tier) in self.tiers.iter().enumerate() {
            for (pos, &t) in tier.order.iter().enumerate() {
                let tr = &self.trackers[t];
                let next_announce = if pos == tier.pos && self.stop_deadline.is_none() { tier.next_at } else { None };
                out.push(TrackerStatus {
                    url: tr.url_text.clone(),
                    tier: i,
                    state: tr.state,
                    last_announce: tr.last_announce,
                    peers: tr.peers,
                    seeders: tr.seeders,
                    leechers: tr.leechers,
                    next_announce,
                    last_error: tr.last_error.clone(),
                });
            }
        }
        out
    }
}
