//! What the person at the terminal sees during a run: the status line (live, redrawn in place) or plain
//! lines every few seconds, and one line of news for each engine event worth a line.
//!
//! Owns: turning engine events and snapshots into lines, when a status line is due, the per-torrent
//! prefix when several torrents run. Output goes through [`Output`], which never blocks the loop.
//! Must not: decide anything, or read the clock (the driver says when to redraw).

use std::collections::HashMap;
use std::io::{self, IsTerminal};
use std::time::Duration;

use super::output::Output;
use super::ui::{self, Snapshot as StatusLine};
use super::units;
use crate::engine::snapshot::{Event, Snapshot, TorrentSnapshot, TrackerNews};
use crate::engine::torrent::State;
use crate::engine::TorrentId;
use crate::time::{millis, secs};

pub const REDRAW_LIVE_EVERY: Duration = millis(250);
pub const REDRAW_PLAIN_EVERY: Duration = secs(5);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UiMode {
    /// One line redrawn in place on a terminal.
    Live,
    /// A plain line every few seconds (logs and pipes).
    Plain,
}

impl UiMode {
    pub fn detect(no_ui: bool) -> Self {
        if no_ui || !io::stdout().is_terminal() {
            UiMode::Plain
        } else {
            UiMode::Live
        }
    }

    pub fn redraw_every(self) -> Duration {
        match self {
            UiMode::Live => REDRAW_LIVE_EVERY,
            UiMode::Plain => REDRAW_PLAIN_EVERY,
        }
    }
}

pub struct View {
    mode: UiMode,
    /// Terminal width for the live line (a longer line would wrap and break the redraw).
    columns: usize,
    out: Output,
    names: HashMap<TorrentId, String>,
    /// The check percentage last shown, per torrent.
    check_shown: HashMap<TorrentId, u64>,
}

impl View {
    pub fn new(mode: UiMode, columns: usize) -> Self {
        View {
            mode,
            columns,
            out: Output::new(mode == UiMode::Live),
            names: HashMap::new(),
            check_shown: HashMap::new(),
        }
    }

    /// The torrents' names, for prefixes (given once they are added).
    pub fn set_names(&mut self, names: impl IntoIterator<Item = (TorrentId, String)>) {
        self.names = names.into_iter().collect();
    }

    fn prefix(&self, id: TorrentId) -> String {
        match self.names.get(&id) {
            Some(name) if self.names.len() > 1 => format!("{name}: "),
            _ => String::new(),
        }
    }

    fn news(&mut self, id: TorrentId, line: &str) {
        let line = format!("{}{line}", self.prefix(id));
        self.out.news(line);
    }

    /// One engine event: a line for the ones a person wants to see.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Checking { torrent, done, total } => {
                let pct = u64::from(*done) * 100 / u64::from((*total).max(1));
                let shown = if self.mode == UiMode::Live { pct } else { pct / 10 * 10 };
                if self.check_shown.get(torrent) == Some(&shown) {
                    return;
                }
                self.check_shown.insert(*torrent, shown);
                let line = format!("{}checking existing data {shown:3}%", self.prefix(*torrent));
                match self.mode {
                    UiMode::Live => self.out.status(line),
                    UiMode::Plain => self.out.news(format!("{}checking existing data {shown}%", self.prefix(*torrent))),
                }
            }
            Event::Checked { torrent, summary, seeding } => {
                if *seeding {
                    self.news(*torrent, &format!("{} of {} pieces present; seeding", summary.present, summary.pieces));
                } else if summary.trusted > 0 || summary.checked > 0 {
                    self.news(
                        *torrent,
                        &format!(
                            "{} of {} pieces already here ({} from the resume file, {} checked)",
                            summary.present, summary.pieces, summary.trusted, summary.checked
                        ),
                    );
                }
            }
            Event::CheckInterrupted { torrent, checked, known, pieces } => self.news(
                *torrent,
                &format!("stopped during the data check: {checked} pieces checked, {known} of {pieces} known good"),
            ),
            Event::Tracker { torrent, news } => {
                let line = match news {
                    TrackerNews::Warning { url, message } => format!("tracker {url}: warning: {message}"),
                    TrackerNews::Error { url, message } => format!("tracker {url}: {message}"),
                    TrackerNews::Announced { url, peers, seeders, leechers, next } => {
                        let counts = match (seeders, leechers) {
                            (Some(s), Some(l)) => format!(" ({s} seeders, {l} leechers)"),
                            _ => String::new(),
                        };
                        let next =
                            next.map(|d| format!(", next announce in {}", units::duration(d))).unwrap_or_default();
                        format!("tracker {url}: {peers} peers{counts}{next}")
                    }
                };
                self.news(*torrent, &line);
            }
            Event::WebSeedGaveUp { torrent, url, why } => {
                self.news(*torrent, &format!("web seed {url}: given up: {why}"));
            }
            Event::ConfirmFailed { torrent, piece, refetch } => {
                let what = if *refetch { "fetching it again" } else { "not serving it" };
                self.news(*torrent, &format!("piece {piece}: data changed on disk since it was checked; {what}"));
            }
            Event::MetadataReceived { torrent, name, size, files, peers, elapsed } => {
                self.names.insert(*torrent, name.clone());
                let files = if *files == 1 { "1 file".to_string() } else { format!("{files} files") };
                let peers = if *peers == 1 { "1 peer".to_string() } else { format!("{peers} peers") };
                let line = format!(
                    "metadata: {name}, {} in {files}, from {peers} in {}",
                    units::bytes(*size),
                    units::duration(*elapsed)
                );
                self.news(*torrent, &line);
            }
            Event::Completed { .. } | Event::Failed { .. } | Event::PeerClosed { .. } => {}
        }
    }

    /// Draws the status: one line for a torrent (prefixed when several run in plain mode), or, live, one
    /// compact line for all.
    pub fn redraw(&mut self, snap: &Snapshot) {
        let fetching: Vec<&TorrentSnapshot> =
            snap.torrents.iter().filter(|t| t.state == State::AwaitingMetadata && !t.stopping).collect();
        for t in &fetching {
            let line = format!("{}{}", self.prefix(t.id), metadata_line(t));
            match self.mode {
                UiMode::Plain => self.out.status(line),
                UiMode::Live if snap.torrents.len() == 1 => self.out.status(line),
                UiMode::Live => {}
            }
        }
        let shown: Vec<&TorrentSnapshot> =
            snap.torrents.iter().filter(|t| t.state == State::Active || t.stopping).collect();
        if shown.is_empty() {
            return;
        }
        match self.mode {
            UiMode::Live if shown.len() == 1 => {
                let line = ui::render_status(&status_line(shown[0]), self.columns.saturating_sub(1));
                self.out.status(line);
            }
            UiMode::Live => {
                let mut line = String::new();
                let (down, up) = shown.iter().fold((0.0, 0.0), |(d, u), t| (d + t.down_rate, u + t.up_rate));
                line.push_str(&format!("down {}  up {} ", units::rate(down), units::rate(up)));
                for t in &shown {
                    let s = status_line(t);
                    let what = if s.seeding { "seed".to_string() } else { format!("{:.0}%", s.percent()) };
                    line.push_str(&format!(" [{} {what}]", t.name));
                }
                let width = self.columns.saturating_sub(1);
                if line.chars().count() > width {
                    line = line.chars().take(width).collect();
                }
                self.out.status(line);
            }
            UiMode::Plain => {
                for t in shown {
                    let line = format!("{}{}", self.prefix(t.id), ui::render_status(&status_line(t), 200));
                    self.out.status(line);
                }
            }
        }
    }

    /// The last status, then everything queued is written.
    pub fn finish(mut self, snap: &Snapshot) {
        self.redraw(snap);
        self.out.finish();
    }
}

/// `fetching metadata: 3 peers asked, 2 of 5 pieces  peers 4+1`.
fn metadata_line(t: &TorrentSnapshot) -> String {
    let (asked, pieces) = t.metadata_progress.unwrap_or((0, None));
    let pieces = match pieces {
        Some((got, of)) => format!(", {got} of {of} pieces"),
        None => String::new(),
    };
    let dht = t.dht.map(ui::dht_words).unwrap_or_default();
    format!("fetching metadata: {asked} peers asked{pieces}  peers {}+{}{dht}", t.peers, t.half_open)
}

fn status_line(t: &TorrentSnapshot) -> StatusLine {
    StatusLine {
        done: t.done,
        total: t.total,
        uploaded: t.uploaded,
        down_rate: t.down_rate,
        up_rate: t.up_rate,
        peers: t.peers,
        half_open: t.half_open,
        seeding: t.seeding,
        state: t.stopping.then_some("stopping"),
        wasted: t.wasted,
        hash_failures: t.hash_failures,
        dht: t.dht,
    }
}
