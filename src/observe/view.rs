//! What the person at the terminal sees during a run: the full-screen view (a terminal on stdin and
//! stdout), the status line (redrawn in place: stdout alone is a terminal) or plain lines every few
//! seconds (`--no-ui`, logs and pipes), and one line of news for each engine event worth a line.
//!
//! Owns: turning engine events and snapshots into lines or frames, when a status line is due, the
//! per-torrent prefix when several torrents run, and in the full-screen view its state (selection, sort
//! column, rate history, size) and what keys ask for. Output goes through [`Output`], which never blocks
//! the loop.
//! Must not: decide anything (a key becomes a `Command` the driver hands the engine), or read the clock
//! (the driver says when to redraw, and what time it is).

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use super::output::Output;
use super::rates::RateHistory;
use super::screen::{self, SortColumn, ViewState};
use super::terminal::{self, Key, Terminal};
use super::ui::{self, Snapshot as StatusLine};
use super::{logpanel, units};
use crate::engine::snapshot::{Command, Event, Snapshot, TorrentSnapshot, TrackerNews};
use crate::engine::torrent::State;
use crate::engine::TorrentId;
use crate::time::{millis, secs, Timestamp};

pub const REDRAW_LIVE_EVERY: Duration = millis(250);
pub const REDRAW_FULL_EVERY: Duration = millis(500);
pub const REDRAW_PLAIN_EVERY: Duration = secs(5);
/// Log lines the full-screen view shows at most.
const LOG_SHOWN: usize = 3;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UiMode {
    /// The full-screen view with keys (stdin and stdout are a terminal).
    Full,
    /// One line redrawn in place on a terminal.
    Live,
    /// A plain line every few seconds (logs and pipes).
    Plain,
}

impl UiMode {
    pub fn detect(no_ui: bool) -> Self {
        if no_ui || !io::stdout().is_terminal() {
            UiMode::Plain
        } else if io::stdin().is_terminal() {
            UiMode::Full
        } else {
            UiMode::Live
        }
    }

    pub fn redraw_every(self) -> Duration {
        match self {
            UiMode::Full => REDRAW_FULL_EVERY,
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
    /// The full-screen view's state, while it is up.
    full: Option<Full>,
    /// Prefix every line with its torrent's name, even while only one runs (a daemon adds torrents later).
    always_named: bool,
}

/// The full-screen view: what it remembers between frames. Dropping it restores the terminal (after
/// `View::out`, declared before it, has written every queued frame).
struct Full {
    state: ViewState,
    rates: HashMap<TorrentId, RateHistory>,
    /// The torrents of the last frame, in screen order, with their state (what `p` acts on).
    torrents: Vec<(TorrentId, State)>,
    /// The last frame queued: an unchanged screen is not sent again.
    last_frame: String,
    /// Clear the whole screen with the next frame (after a resize).
    clear: bool,
    _terminal: Terminal,
}

impl Drop for Full {
    /// The terminal back first, then the log lines the panel held, on stderr.
    fn drop(&mut self) {
        terminal::restore();
        let held = logpanel::close();
        let mut err = io::stderr().lock();
        for line in held {
            let _ = writeln!(err, "{line}");
        }
    }
}

impl View {
    /// The view for `mode`. The full-screen view falls back to the status line when the terminal cannot
    /// be put in raw mode.
    pub fn new(mode: UiMode, columns: usize) -> Self {
        let mut full = None;
        let mut mode = mode;
        if mode == UiMode::Full {
            match Terminal::raw() {
                Ok(t) => {
                    let (width, height) = terminal::size().unwrap_or((columns, 24));
                    full = Some(Full {
                        state: ViewState { selected: 0, sort: SortColumn::default(), width, height },
                        rates: HashMap::new(),
                        torrents: Vec::new(),
                        last_frame: String::new(),
                        clear: false,
                        _terminal: t,
                    });
                }
                Err(e) => {
                    log::warn!("cannot use the terminal for the full-screen view ({e}); a status line instead");
                    mode = UiMode::Live;
                }
            }
        }
        let mut out = Output::new(mode == UiMode::Live);
        if full.is_some() {
            logpanel::open();
            out.frame(terminal::ENTER.to_string(), true);
        }
        View { mode, columns, out, names: HashMap::new(), check_shown: HashMap::new(), full, always_named: false }
    }

    /// The mode in use (the full-screen view may have fallen back to the status line).
    pub fn mode(&self) -> UiMode {
        self.mode
    }

    /// Whether keys on stdin mean something (the full-screen view is up).
    pub fn wants_keys(&self) -> bool {
        self.full.is_some()
    }

    /// Stdin is readable: reads every key there is; returns the commands they ask for (`Quit` is
    /// `Shutdown`, which the driver treats as Ctrl-C) and whether the screen should be redrawn now.
    pub fn on_input(&mut self) -> (Vec<Command>, bool) {
        let mut commands = Vec::new();
        let mut redraw = false;
        let mut buf = [0u8; 64];
        loop {
            let n = match terminal::read_input(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    log::debug!("stdin: {e}");
                    break;
                }
            };
            for key in terminal::decode_keys(&buf[..n]) {
                let (command, changed) = self.on_key(key);
                commands.extend(command);
                redraw |= changed;
            }
        }
        (commands, redraw)
    }

    /// One key: the command it asks for, and whether the view changed.
    pub fn on_key(&mut self, key: Key) -> (Option<Command>, bool) {
        match self.full.as_mut() {
            Some(full) => apply_key(&mut full.state, &full.torrents, key),
            None => (None, false),
        }
    }

    /// The terminal changed size (SIGWINCH): the next frame is drawn for the new size.
    pub fn on_resize(&mut self) {
        if let (Some(full), Some((width, height))) = (self.full.as_mut(), terminal::size()) {
            full.state.width = width;
            full.state.height = height;
            full.clear = true;
        }
    }

    /// Draws the full-screen view from `snap` at `now`; an unchanged screen is not sent again.
    fn redraw_full(&mut self, snap: &Snapshot, now: Timestamp) {
        let Some(full) = self.full.as_mut() else {
            return;
        };
        for t in &snap.torrents {
            full.rates.entry(t.id).or_default().record(now, t.downloaded, t.uploaded);
        }
        full.rates.retain(|id, _| snap.torrents.iter().any(|t| t.id == *id));
        full.torrents = snap.torrents.iter().map(|t| (t.id, t.state)).collect();
        let log = logpanel::recent(LOG_SHOWN);
        let lines =
            screen::render(&screen::Frame { snapshot: snap, state: &full.state, rates: &full.rates, log: &log });
        let mut frame = String::with_capacity(full.state.width * (lines.len() + 1) * 2);
        if std::mem::take(&mut full.clear) {
            frame.push_str(terminal::CLEAR_ALL);
        }
        frame.push_str(terminal::HOME);
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                frame.push_str("\r\n");
            }
            frame.push_str(line);
            frame.push_str(terminal::CLEAR_LINE_END);
        }
        frame.push_str(terminal::CLEAR_BELOW);
        if frame != full.last_frame && self.out.frame(frame.clone(), false) {
            full.last_frame = frame;
        }
    }

    /// The torrents' names, for prefixes (given once they are added).
    pub fn set_names(&mut self, names: impl IntoIterator<Item = (TorrentId, String)>) {
        self.names = names.into_iter().collect();
    }

    /// Name every line after its torrent, however many run (`rill daemon`: torrents come and go).
    pub fn always_name_torrents(&mut self) {
        self.always_named = true;
    }

    fn prefix(&self, id: TorrentId) -> String {
        match self.names.get(&id) {
            Some(name) if self.names.len() > 1 || self.always_named => format!("{name}: "),
            _ => String::new(),
        }
    }

    fn news(&mut self, id: TorrentId, line: &str) {
        let line = format!("{}{line}", self.prefix(id));
        if self.full.is_some() {
            logpanel::push(&line);
        } else {
            self.out.news(line);
        }
    }

    /// One engine event: a line for the ones a person wants to see.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            // The full-screen view shows the check's progress itself.
            Event::Checking { .. } if self.full.is_some() => {}
            Event::Checking { torrent, done, total } => {
                let pct = u64::from(*done) * 100 / u64::from((*total).max(1));
                let shown = if self.mode == UiMode::Live { pct } else { pct / 10 * 10 };
                if self.check_shown.get(torrent) == Some(&shown) {
                    return;
                }
                self.check_shown.insert(*torrent, shown);
                let line = format!("{}checking existing data {shown:3}%", self.prefix(*torrent));
                match self.mode {
                    UiMode::Live | UiMode::Full => self.out.status(line),
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

    /// Draws the status at `now`: the full-screen view, or one line for a torrent (prefixed when several
    /// run in plain mode), or, live, one compact line for all.
    /// Whether `event` is about a torrent this view cannot name yet (then the driver hands it a snapshot).
    pub fn wants_name_for(&self, event: &Event) -> bool {
        let torrent = match event {
            Event::Checking { torrent, .. }
            | Event::Checked { torrent, .. }
            | Event::CheckInterrupted { torrent, .. }
            | Event::Tracker { torrent, .. }
            | Event::ConfirmFailed { torrent, .. }
            | Event::MetadataReceived { torrent, .. }
            | Event::Completed { torrent }
            | Event::Failed { torrent, .. }
            | Event::WebSeedGaveUp { torrent, .. } => *torrent,
            Event::PeerClosed { .. } => return false,
        };
        self.always_named && !self.names.contains_key(&torrent)
    }

    /// Names torrents added after the start, and slots reused by new ones, from a snapshot.
    pub fn learn_names(&mut self, snap: &Snapshot) {
        for t in &snap.torrents {
            if self.names.get(&t.id) != Some(&t.name) {
                self.names.insert(t.id, t.name.clone());
            }
        }
    }

    pub fn redraw(&mut self, snap: &Snapshot, now: Timestamp) {
        if self.always_named {
            self.learn_names(snap);
        }
        if self.full.is_some() {
            self.redraw_full(snap, now);
            return;
        }
        let fetching: Vec<&TorrentSnapshot> =
            snap.torrents.iter().filter(|t| t.state == State::AwaitingMetadata && !t.stopping).collect();
        for t in &fetching {
            let line = format!("{}{}", self.prefix(t.id), metadata_line(t));
            match self.mode {
                UiMode::Plain => self.out.status(line),
                UiMode::Live if snap.torrents.len() == 1 => self.out.status(line),
                UiMode::Live | UiMode::Full => {}
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
            UiMode::Live | UiMode::Full => {
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

    /// The last status, then everything queued is written. The full-screen view closes: the terminal is
    /// restored, and the log lines it held are printed to stderr.
    pub fn finish(mut self, snap: &Snapshot, now: Timestamp) {
        self.redraw(snap, now);
        let full = self.full.take();
        self.out.finish();
        drop(full);
    }
}

/// What `key` does to the view's `state`, given the torrents on screen (in order, with their state): the
/// command it asks of the engine, and whether the screen changed.
fn apply_key(state: &mut ViewState, torrents: &[(TorrentId, State)], key: Key) -> (Option<Command>, bool) {
    let last = torrents.len().saturating_sub(1);
    match key {
        Key::Quit => (Some(Command::Shutdown), true),
        Key::Up => {
            state.selected = state.selected.min(last).saturating_sub(1);
            (None, true)
        }
        Key::Down => {
            state.selected = (state.selected + 1).min(last);
            (None, true)
        }
        Key::Sort => {
            state.sort = state.sort.next();
            (None, true)
        }
        Key::Pause => {
            let command = match torrents.get(state.selected) {
                Some(&(id, State::Paused)) => Some(Command::Resume(id)),
                Some(&(id, State::Active)) => Some(Command::Pause(id)),
                // Checking, fetching metadata or stopped: nothing to pause.
                _ => None,
            };
            (command, true)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_select_sort_pause_resume_and_quit() {
        let mut state = ViewState { selected: 0, sort: SortColumn::Busiest, width: 80, height: 24 };
        let torrents = [(TorrentId(3), State::Active), (TorrentId(5), State::Paused), (TorrentId(7), State::Checking)];
        assert_eq!(apply_key(&mut state, &torrents, Key::Pause), (Some(Command::Pause(TorrentId(3))), true));
        assert_eq!(apply_key(&mut state, &torrents, Key::Down), (None, true));
        assert_eq!(apply_key(&mut state, &torrents, Key::Pause), (Some(Command::Resume(TorrentId(5))), true));
        apply_key(&mut state, &torrents, Key::Down);
        apply_key(&mut state, &torrents, Key::Down);
        assert_eq!(state.selected, 2, "the selection stops at the last torrent");
        assert_eq!(apply_key(&mut state, &torrents, Key::Pause), (None, true), "a checking torrent is not paused");
        for _ in 0..5 {
            apply_key(&mut state, &torrents, Key::Up);
        }
        assert_eq!(state.selected, 0, "and at the first");
        apply_key(&mut state, &torrents, Key::Sort);
        assert_eq!(state.sort, SortColumn::Down);
        assert_eq!(apply_key(&mut state, &torrents, Key::Quit), (Some(Command::Shutdown), true));
        let mut none = state.clone();
        assert_eq!(apply_key(&mut none, &[], Key::Pause), (None, true), "no torrent: nothing to pause");
        apply_key(&mut none, &[], Key::Down);
        assert_eq!(none.selected, 0);
    }
}
