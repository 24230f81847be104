//! What a person sees: the live status line, the plain progress line for logs and pipes, and the summary.
//!
//! Owns: turning a `Snapshot` into text. Pure: `render_*` return strings; the loop prints them.
//! Must not: write to the terminal or read any state but the snapshot.

use std::time::Duration;

use super::units;
pub use super::units::bytes;

/// Everything the status line shows, copied out of the loop once per redraw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Bytes of wanted data verified, and wanted in all.
    pub done: u64,
    pub total: u64,
    pub uploaded: u64,
    pub down_rate: f64,
    pub up_rate: f64,
    pub peers: usize,
    pub half_open: usize,
    pub seeding: bool,
    /// A short state word when not simply downloading ("checking", "stopping").
    pub state: Option<&'static str>,
    /// Bytes received but not used, and pieces that failed verification.
    pub wasted: u64,
    pub hash_failures: u32,
    /// DHT nodes known and peers the DHT found, when the torrent uses it.
    pub dht: Option<(usize, u64)>,
}

impl Snapshot {
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        }
    }

    /// Time to finish at the current rate, if it is meaningful.
    pub fn eta(&self) -> Option<Duration> {
        let left = self.total.saturating_sub(self.done);
        (self.down_rate >= 1.0 && left > 0).then(|| Duration::from_secs_f64(left as f64 / self.down_rate))
    }
}

/// `  dht 87 nodes 12 peers`: the DHT nodes known and the peers the DHT found.
pub fn dht_words((nodes, peers): (usize, u64)) -> String {
    format!("  dht {nodes} nodes {peers} peers")
}

/// One line for the live view, at most `width` columns.
pub fn render_status(s: &Snapshot, width: usize) -> String {
    let mut line = if s.seeding {
        format!("seeding  up {} ({})  peers {}", units::bytes(s.uploaded), units::rate(s.up_rate), s.peers)
    } else {
        let eta = match s.eta() {
            Some(d) => units::duration(d),
            None => "--".to_string(),
        };
        format!(
            "{:5.1}%  {} / {}  down {}  up {}  peers {}+{}  eta {}",
            s.percent(),
            units::bytes(s.done),
            units::bytes(s.total),
            units::rate(s.down_rate),
            units::rate(s.up_rate),
            s.peers,
            s.half_open,
            eta
        )
    };
    if s.hash_failures > 0 || s.wasted > 0 {
        line.push_str(&format!("  wasted {} ({} bad)", units::bytes(s.wasted), s.hash_failures));
    }
    if let Some(dht) = s.dht {
        line.push_str(&dht_words(dht));
    }
    if let Some(state) = s.state {
        line = format!("[{state}] {line}");
    }
    if line.chars().count() > width {
        line = line.chars().take(width).collect();
    }
    line
}

/// The closing summary.
pub fn render_summary(total: u64, elapsed: Duration, peers_used: usize, uploaded: u64) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "done: {} in {} ({} average), {} peer{} sent data, {} uploaded",
        units::bytes(total),
        units::duration(elapsed),
        units::rate(total as f64 / secs),
        peers_used,
        if peers_used == 1 { "" } else { "s" },
        units::bytes(uploaded)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_progress_rates_peers_and_eta() {
        let s = Snapshot {
            done: 512 * 1024 * 1024,
            total: 1024 * 1024 * 1024,
            down_rate: 64.0 * 1024.0 * 1024.0,
            peers: 3,
            half_open: 1,
            ..Snapshot::default()
        };
        let line = render_status(&s, 200);
        assert!(line.starts_with(" 50.0%"), "{line}");
        assert!(line.contains("peers 3+1"), "{line}");
        assert!(line.contains("eta 8.0s"), "{line}");
        assert_eq!(render_status(&s, 10).chars().count(), 10);
        assert!(!line.contains("dht"), "{line}");
        let with_dht = render_status(&Snapshot { dht: Some((87, 12)), ..s }, 200);
        assert!(with_dht.ends_with("  dht 87 nodes 12 peers"), "{with_dht}");
    }

    #[test]
    fn summary_mentions_size_time_rate_and_peers() {
        let line = render_summary(1 << 30, Duration::from_secs(4), 2, 0);
        assert!(line.contains("2 peers sent data"), "{line}");
        assert!(line.contains("/s average"), "{line}");
    }
}
