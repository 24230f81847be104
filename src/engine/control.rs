//! Run-time control for a long-running engine (`rill daemon`): staying up with no torrents, rate limits
//! changed while running, and what a front-end shows of one torrent beyond the snapshot (its files and how
//! much of each is verified).
//!
//! Owns: those few calls. Must not: keep state of its own (everything lives in `Engine` and its torrents).

use std::path::PathBuf;

use super::{Engine, TorrentId, Wake};
use crate::swarm::throttle::{TokenBucket, REFILL_EVERY};
use crate::time::Timestamp;

/// One file of a torrent, for a front-end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProgress {
    /// Relative to the torrent's download directory.
    pub path: PathBuf,
    pub length: u64,
    /// Bytes of it in verified pieces.
    pub done: u64,
    pub wanted: bool,
}

impl Engine {
    /// Keep running when every torrent is stopped or removed, until `Command::Shutdown` (a daemon).
    pub fn stay_up(&mut self) {
        self.stay_up = true;
    }

    /// Sets or clears the engine-wide rate limits (bytes/s), from now on.
    pub fn set_rate_limits(&mut self, up: Option<u64>, down: Option<u64>, now: Timestamp) {
        self.config.up_limit = up;
        self.config.down_limit = down;
        self.up_bucket = up.map(|r| TokenBucket::new(r, now));
        self.down_bucket = down.map(|r| TokenBucket::new(r, now));
        self.after_limits_changed(now);
    }

    /// Sets or clears one torrent's own rate limits (bytes/s), on top of the engine's, from now on.
    pub fn set_torrent_rate_limits(&mut self, id: TorrentId, up: Option<u64>, down: Option<u64>, now: Timestamp) {
        let Some(t) = self.torrents.get_mut(id.0) else { return };
        if t.up_bucket.as_ref().map(TokenBucket::rate) != up {
            t.up_bucket = up.map(|r| TokenBucket::new(r, now));
        }
        if t.down_bucket.as_ref().map(TokenBucket::rate) != down {
            t.down_bucket = down.map(|r| TokenBucket::new(r, now));
        }
        self.after_limits_changed(now);
    }

    /// One torrent's own limits (up, down), bytes/s.
    pub fn torrent_rate_limits(&self, id: TorrentId) -> (Option<u64>, Option<u64>) {
        self.torrents.get(id.0).map_or((None, None), |t| {
            (t.up_bucket.as_ref().map(TokenBucket::rate), t.down_bucket.as_ref().map(TokenBucket::rate))
        })
    }

    fn after_limits_changed(&mut self, now: Timestamp) {
        if !self.refilling {
            self.refilling = true;
            self.timers.schedule(now + REFILL_EVERY, Wake::Refill);
        }
        // Connections held back by a bucket that may no longer exist are read again (a bucket still dry
        // holds them back again at once), and those waiting to be served are looked at.
        let throttled = std::mem::take(&mut self.throttled);
        self.backlog.extend(throttled);
    }

    pub fn rate_limits(&self) -> (Option<u64>, Option<u64>) {
        (self.config.up_limit, self.config.down_limit)
    }

    /// The torrent's files (padding left out) and how much of each is verified; `None` before its
    /// metadata and storage exist.
    pub fn file_progress(&self, id: TorrentId) -> Option<Vec<FileProgress>> {
        let t = self.torrents.get(id.0)?;
        let data = t.data.as_ref()?;
        let geometry = &data.ctx.geometry;
        let piece_length = u64::from(geometry.piece_length());
        let have = data.swarm.have();
        let mut out = Vec::new();
        for (index, (path, offset, length, padding)) in
            data.files.iter().map(|(p, o, l, pad)| (p.as_path(), *o, *l, *pad)).enumerate()
        {
            if padding {
                continue;
            }
            let mut done = 0;
            if length > 0 && piece_length > 0 {
                let (first, last) = (offset / piece_length, (offset + length - 1) / piece_length);
                for piece in first..=last {
                    if !have.get(piece as u32) {
                        continue;
                    }
                    let start = (piece * piece_length).max(offset);
                    let end = ((piece + 1) * piece_length).min(offset + length);
                    done += end.saturating_sub(start);
                }
            }
            let wanted = match &t.opts.mode {
                super::torrent::Mode::Download { wanted_files: Some(w), .. } => w.get(index).copied().unwrap_or(false),
                _ => true,
            };
            out.push(FileProgress { path: path.to_path_buf(), length, done, wanted });
        }
        Some(out)
    }

    /// The torrent's tracker URLs, first tier first.
    pub fn tracker_urls(&self, id: TorrentId) -> Vec<(usize, String)> {
        self.torrents.get(id.0).map(|t| t.tracker_urls()).unwrap_or_default()
    }
}
