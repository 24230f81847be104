//! The full-screen live view as a pure function: a snapshot and the view's state in, the screen's lines
//! out.
//!
//! Owns: the layout (header, one block per torrent, the selected torrent's trackers and sparkline, the
//! busiest peers table, the log panel), how it adapts to the size (columns dropped by priority, names
//! truncated, sections dropped when short of rows), peer sorting and the flags' letters.
//! Must not: write to the terminal, read the clock or any state but its arguments.
//!
//! Every line is at most `width` characters and there are at most `height` lines; a character is taken to
//! be one column (names with wide characters may overflow a little; they are truncated by characters).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::client::client_name;
use super::rates::{self, RateHistory};
use super::units;
use crate::engine::snapshot::{PeerEncryption, PeerSnapshot, Snapshot, TorrentSnapshot, TrackerSnapshot};
use crate::engine::torrent::State;
use crate::engine::TorrentId;
use crate::tracker::TrackerState;

/// What the peers table is sorted by (`s` cycles through them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortColumn {
    /// Busiest first: down + up rate.
    #[default]
    Busiest,
    Down,
    Up,
    Rtt,
    Share,
    Address,
}

impl SortColumn {
    pub fn next(self) -> Self {
        match self {
            SortColumn::Busiest => SortColumn::Down,
            SortColumn::Down => SortColumn::Up,
            SortColumn::Up => SortColumn::Rtt,
            SortColumn::Rtt => SortColumn::Share,
            SortColumn::Share => SortColumn::Address,
            SortColumn::Address => SortColumn::Busiest,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            SortColumn::Busiest => "busiest",
            SortColumn::Down => "down",
            SortColumn::Up => "up",
            SortColumn::Rtt => "rtt",
            SortColumn::Share => "share",
            SortColumn::Address => "address",
        }
    }
}

/// What the view remembers between frames, besides the rates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewState {
    /// Index into the snapshot's torrents (clamped when drawn).
    pub selected: usize,
    pub sort: SortColumn,
    pub width: usize,
    pub height: usize,
}

/// Everything one frame is drawn from.
pub struct Frame<'a> {
    pub snapshot: &'a Snapshot,
    pub state: &'a ViewState,
    pub rates: &'a HashMap<TorrentId, RateHistory>,
    /// The newest log lines, oldest first.
    pub log: &'a [String],
}

/// Rows of log panel shown when there are log lines and room.
const LOG_ROWS: usize = 3;

/// The screen: at most `height` lines of at most `width` characters.
pub fn render(f: &Frame<'_>) -> Vec<String> {
    let (width, height) = (f.state.width.max(1), f.state.height.max(1));
    let snap = f.snapshot;
    let selected = f.state.selected.min(snap.torrents.len().saturating_sub(1));
    let empty = RateHistory::default();
    let rates_of = |t: &TorrentSnapshot| f.rates.get(&t.id).unwrap_or(&empty);

    let mut top = vec![header(snap, f, width)];
    let several = snap.torrents.len() > 1;
    // Torrent blocks: two lines each for the others, more for the selected one.
    let mut chosen = Vec::new();
    for (i, t) in snap.torrents.iter().enumerate() {
        let rates = rates_of(t);
        if i == selected {
            chosen = torrent_lines(t, rates, several, true, width);
            chosen.extend(tracker_lines(&t.trackers, width));
            chosen.push(sparkline(rates, t.seeding, width));
            top.extend(chosen.iter().cloned());
        } else {
            top.extend(torrent_lines(t, rates, several, false, width));
        }
    }
    if snap.torrents.is_empty() {
        top.push(fit("no torrents", width));
    }
    let log_rows = if f.log.is_empty() { 0 } else { LOG_ROWS.min(f.log.len()) };
    // Short of rows: the header and the selected torrent only, then as much of it as fits.
    if top.len() + 3 + log_rows > height {
        top.truncate(1);
        top.extend(chosen);
    }
    let mut lines = top;
    let peer_rows = height.saturating_sub(lines.len() + 2 + if log_rows > 0 { log_rows + 1 } else { 0 });
    if let Some(t) = snap.torrents.get(selected) {
        if peer_rows > 0 {
            lines.push(String::new());
            lines.extend(peer_table(snap, t, f.state.sort, width, peer_rows + 1));
        }
    }
    if log_rows > 0 && lines.len() + 1 + log_rows <= height {
        // The panel sits at the bottom.
        lines.resize(height - 1 - log_rows, String::new());
        lines.push(fit(&"─".repeat(width), width));
        for line in &f.log[f.log.len() - log_rows..] {
            lines.push(fit(line, width));
        }
    }
    lines.truncate(height);
    lines
}

/// `rill  down 1.20 MiB/s  up 38.0 KiB/s  peers 12        q quit  p pause  j/k select  s sort: busiest`.
fn header(snap: &Snapshot, f: &Frame<'_>, width: usize) -> String {
    let (mut down, mut up) = (0.0, 0.0);
    for t in &snap.torrents {
        if let Some(r) = f.rates.get(&t.id) {
            down += r.down();
            up += r.up();
        }
    }
    let peers: usize = snap.torrents.iter().map(|t| t.peers).sum();
    let left = format!("rill  down {}  up {}  peers {peers}", units::rate(down), units::rate(up));
    let keys = format!("q quit  p pause  j/k select  s sort: {}", f.state.sort.word());
    join_right(&left, &keys, width)
}

/// `left`, then `right` flush with the right edge if both fit, else `left` alone.
fn join_right(left: &str, right: &str, width: usize) -> String {
    let (l, r) = (left.chars().count(), right.chars().count());
    if l + 2 + r <= width {
        format!("{left}{}{right}", " ".repeat(width - l - r))
    } else {
        fit(left, width)
    }
}

/// The state word: what the torrent is doing.
fn state_word(t: &TorrentSnapshot) -> String {
    if let Some(e) = &t.error {
        return format!("error: {e}");
    }
    if t.stopping && t.state != State::Paused {
        return "stopping".into();
    }
    if let (Some((done, of)), State::Active | State::Checking) = (t.check_progress, t.state) {
        return format!("checking {}%", u64::from(done) * 100 / u64::from(of.max(1)));
    }
    match t.state {
        State::AwaitingMetadata => match t.metadata_progress {
            Some((asked, Some((got, of)))) => format!("fetching metadata: {got} of {of} pieces, {asked} peers asked"),
            Some((asked, None)) if asked > 0 => format!("fetching metadata: {asked} peers asked"),
            _ => "fetching metadata".into(),
        },
        State::Checking => "checking".into(),
        State::Paused => "paused".into(),
        State::Stopped => "stopped".into(),
        State::Active if t.seeding || (t.total > 0 && t.done >= t.total) => "seeding".into(),
        State::Active => "downloading".into(),
    }
}

/// The torrent's lines: name and state; progress bar, sizes, rates, ETA; and, when `detail`, its peers,
/// DHT and waste.
fn torrent_lines(t: &TorrentSnapshot, rates: &RateHistory, several: bool, detail: bool, width: usize) -> Vec<String> {
    let mark = match (several, detail) {
        (true, true) => "> ",
        (true, false) => "  ",
        (false, _) => "",
    };
    let state = state_word(t);
    // The name gives way to the state word.
    let room = width.saturating_sub(mark.len() + 2 + state.chars().count()).max(8);
    let mut lines = vec![fit(&format!("{mark}{}  {state}", truncate(&t.name, room)), width)];

    // Nothing wanted (a seed that had it all): complete, as the status line says.
    let percent = if t.total == 0 {
        if t.seeding {
            100.0
        } else {
            0.0
        }
    } else {
        t.done as f64 * 100.0 / t.total as f64
    };
    let eta = match rates::eta(t.total.saturating_sub(t.done), rates.down()) {
        Some(d) => units::duration(d),
        None => "--".into(),
    };
    // Segments after the bar, most important first; the bar takes what is left (10 to 50 columns).
    let segments = [
        format!("{percent:5.1}%"),
        format!("{} / {}", units::bytes(t.done), units::bytes(t.total)),
        format!("down {}", units::rate(rates.down())),
        format!("up {}", units::rate(rates.up())),
        format!("eta {eta}"),
    ];
    let indent = "  ";
    let mut tail = String::new();
    for (i, s) in segments.iter().enumerate() {
        let extra = s.chars().count() + 2;
        // Leave at least a 12-column bar ("[" + 10 + "]").
        if i > 0 && indent.len() + 12 + tail.chars().count() + extra > width {
            break;
        }
        tail.push_str("  ");
        tail.push_str(s);
    }
    let bar_width = width.saturating_sub(indent.len() + 2 + tail.chars().count()).clamp(10, 50);
    lines.push(fit(&format!("{indent}{}{tail}", bar(percent, bar_width)), width));

    if detail {
        let mut line = format!(
            "  peers {} ({} unchoking us, {} we unchoke, {} half-open)",
            t.peers, t.unchoking_us, t.we_unchoke, t.half_open
        );
        if let Some((nodes, found)) = t.dht {
            let _ = write!(line, "  dht {nodes} nodes {found} peers");
        }
        let _ = write!(line, "  waste {} ({} hash failures)", units::bytes(t.wasted), t.hash_failures);
        lines.push(fit(&line, width));
    }
    lines
}

/// `[##########..........]`, `width` columns in all.
fn bar(percent: f64, width: usize) -> String {
    let inner = width.saturating_sub(2);
    let full = ((percent.clamp(0.0, 100.0) / 100.0) * inner as f64).floor() as usize;
    format!("[{}{}]", "#".repeat(full), ".".repeat(inner - full.min(inner)))
}

/// One line per tracker: `tracker udp://t.example:6969  working  50 peers 2m10s ago  next 27m50s`.
fn tracker_lines(trackers: &[TrackerSnapshot], width: usize) -> Vec<String> {
    trackers
        .iter()
        .map(|tr| {
            let mut what = String::new();
            let state = match tr.state {
                TrackerState::Idle => "idle",
                TrackerState::Announcing => "announcing",
                TrackerState::Working => "ok",
                TrackerState::Failing => "failing",
                TrackerState::Stopping => "stopping",
                TrackerState::Stopped => "stopped",
            };
            what.push_str(state);
            if let Some(ago) = tr.last_announce_ago {
                let _ = write!(what, "  {} peers {} ago", tr.peers, units::duration(round_secs(ago)));
            }
            if let Some(next) = tr.next_announce_in {
                let _ = write!(what, "  next {}", units::duration(round_secs(next)));
            }
            if let (TrackerState::Failing, Some(e)) = (tr.state, &tr.last_error) {
                let _ = write!(what, "  {e}");
            }
            let room = width.saturating_sub(14 + what.chars().count()).max(12);
            fit(&format!("  tracker {}  {what}", truncate(&tr.url, room)), width)
        })
        .collect()
}

/// Whole seconds (tenths would change every frame).
fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `  down ▁▂▃▅▇█▇▅  peak 6.10 MiB/s, last minute` (up while seeding).
fn sparkline(rates: &RateHistory, seeding: bool, width: usize) -> String {
    let word = if seeding { "up  " } else { "down" };
    let samples: Vec<f32> = rates.samples().map(|(d, u)| if seeding { u } else { d }).collect();
    let peak = samples.iter().copied().fold(0.0f32, f32::max);
    let label = format!("  peak {}, last minute", units::rate(f64::from(peak)));
    let room = width.saturating_sub(8 + label.chars().count());
    let shown = &samples[samples.len().saturating_sub(room)..];
    let line: String = shown
        .iter()
        .map(|&v| if v <= 0.0 || peak <= 0.0 { ' ' } else { SPARKS[(((v / peak) * 7.0).round() as usize).min(7)] })
        .collect();
    fit(&format!("  {word} {line}{label}"), width)
}

/// A peer table column, in display order; `drop` orders which go first when the screen is narrow.
#[derive(Clone, Copy)]
struct Column {
    title: &'static str,
    width: usize,
    /// Higher: dropped sooner.
    drop: u8,
    right: bool,
    /// Takes a share of any spare width, up to this many columns more.
    grow: usize,
}

const COLUMNS: [Column; 10] = [
    Column { title: "address", width: 21, drop: 0, right: false, grow: 25 },
    Column { title: "via", width: 7, drop: 7, right: false, grow: 0 },
    Column { title: "client", width: 18, drop: 4, right: false, grow: 6 },
    Column { title: "down", width: 10, drop: 1, right: true, grow: 0 },
    Column { title: "up", width: 10, drop: 2, right: true, grow: 0 },
    Column { title: "req/depth", width: 9, drop: 5, right: true, grow: 0 },
    Column { title: "rtt", width: 6, drop: 6, right: true, grow: 0 },
    Column { title: "flags", width: 5, drop: 3, right: false, grow: 0 },
    Column { title: "share", width: 5, drop: 8, right: true, grow: 0 },
    Column { title: "last", width: 5, drop: 9, right: true, grow: 0 },
];

/// The columns that fit `width` (one space between), widened into any spare room.
fn columns_for(width: usize) -> Vec<Column> {
    let mut shown: Vec<Column> = COLUMNS.to_vec();
    let used = |cols: &[Column]| cols.iter().map(|c| c.width).sum::<usize>() + cols.len().saturating_sub(1);
    while used(&shown) > width && shown.len() > 1 {
        let worst = shown.iter().enumerate().max_by_key(|(_, c)| c.drop).map_or(0, |(i, _)| i);
        shown.remove(worst);
    }
    let mut spare = width.saturating_sub(used(&shown));
    for c in shown.iter_mut() {
        let more = c.grow.min(spare);
        c.width += more;
        spare -= more;
    }
    shown
}

/// The selected torrent's busiest peers (or sorted by `sort`): a title, a header and up to `rows - 2`
/// peers.
fn peer_table(snap: &Snapshot, t: &TorrentSnapshot, sort: SortColumn, width: usize, rows: usize) -> Vec<String> {
    let mut peers: Vec<&PeerSnapshot> =
        snap.peers.iter().filter(|p| p.torrent == Some(t.id) && p.peer_id.is_some()).collect();
    sort_peers(&mut peers, sort);
    let mut lines = Vec::with_capacity(rows);
    let title = format!("peers of {} ({}, sorted by {})", t.name, peers.len(), sort.word());
    lines.push(fit(&title, width));
    if rows < 3 {
        return lines;
    }
    let cols = columns_for(width);
    lines.push(row(&cols, |c| c.title.to_string(), width));
    let shown = peers.len().min(rows - 2);
    let more = peers.len() - shown;
    for (i, p) in peers.iter().take(shown).enumerate() {
        if more > 0 && i + 1 == shown {
            lines.push(fit(&format!("  … and {} more", more + 1), width));
            break;
        }
        lines.push(row(&cols, |c| cell(p, c.title), width));
    }
    lines
}

/// One comparison for every column (one sort instantiation in the binary), ties broken by address so rows
/// hold still between frames.
fn sort_peers(peers: &mut [&PeerSnapshot], sort: SortColumn) {
    use std::cmp::Ordering;
    let desc = |a: f64, b: f64| b.partial_cmp(&a).unwrap_or(Ordering::Equal);
    peers.sort_unstable_by(|a, b| {
        let by = match sort {
            SortColumn::Busiest => desc(a.download_rate + a.upload_rate, b.download_rate + b.upload_rate),
            SortColumn::Down => desc(a.download_rate, b.download_rate),
            SortColumn::Up => desc(a.upload_rate, b.upload_rate),
            // Fastest round trip first; peers never measured last.
            SortColumn::Rtt => a.rtt.unwrap_or(Duration::MAX).cmp(&b.rtt.unwrap_or(Duration::MAX)),
            SortColumn::Share => desc(a.share, b.share),
            SortColumn::Address => Ordering::Equal,
        };
        by.then_with(|| a.addr.cmp(&b.addr))
    });
}

/// One table line: each column padded or truncated to its width.
fn row(cols: &[Column], text: impl Fn(&Column) -> String, width: usize) -> String {
    let mut line = String::with_capacity(width);
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let s = truncate(&text(c), c.width);
        let pad = c.width - s.chars().count();
        if c.right {
            line.push_str(&" ".repeat(pad));
            line.push_str(&s);
        } else {
            line.push_str(&s);
            line.push_str(&" ".repeat(pad));
        }
    }
    fit(line.trim_end(), width)
}

fn cell(p: &PeerSnapshot, title: &str) -> String {
    match title {
        "address" => p.addr.map(|a| a.to_string()).unwrap_or_default(),
        "via" => {
            let transport = if p.utp { "uTP" } else { "TCP" };
            match p.encryption {
                PeerEncryption::Plain => transport.to_string(),
                PeerEncryption::MsePlain => format!("{transport} mse"),
                PeerEncryption::Rc4 => format!("{transport} rc4"),
            }
        }
        "client" => p.peer_id.as_ref().map(client_name).unwrap_or_default(),
        "down" => units::rate(p.download_rate),
        "up" => units::rate(p.upload_rate),
        "req/depth" => format!("{}/{}", p.requests_active, p.depth),
        "rtt" => p.rtt.map(|d| format!("{}ms", d.as_millis())).unwrap_or_else(|| "-".into()),
        "flags" => flags(p),
        "share" => format!("{:.0}%", p.share * 100.0),
        "last" => match p.last_block_ago {
            Some(d) if d < Duration::from_secs(60) => format!("{}s", d.as_secs()),
            Some(d) => units::duration(d),
            None => "-".into(),
        },
        _ => String::new(),
    }
}

/// Choke and interest both ways, two letters (µTorrent's): our download side — `D` interested and
/// unchoked, `d` interested and choked, `K` unchoked but not interested; their side — `U` we upload
/// (interested, unchoked), `u` interested but choked, `?` unchoked but not interested; `.` neither. `S`
/// after them: snubbed.
fn flags(p: &PeerSnapshot) -> String {
    let down = match (p.am_interested, p.peer_choking) {
        (true, false) => 'D',
        (true, true) => 'd',
        (false, false) => 'K',
        (false, true) => '.',
    };
    let up = match (p.peer_interested, p.am_choking) {
        (true, false) => 'U',
        (true, true) => 'u',
        (false, false) => '?',
        (false, true) => '.',
    };
    let mut s = format!("{down}{up}");
    if p.snubbed {
        s.push('S');
    }
    s
}

/// `s` cut to `width` characters, ending in `…` when cut.
fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Control characters (a name or a log line could carry escapes) become `?`, and the line is cut to
/// `width`.
fn fit(s: &str, width: usize) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    truncate(&clean, width)
}

#[cfg(test)]
mod tests;
