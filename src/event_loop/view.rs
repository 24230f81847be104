//! What the person at the terminal sees: the live status line (or plain lines), and one-line news
//! above it (tracker answers and errors).
//!
//! Owns: when and where lines are printed. Must not: format them (that is `observe::ui`) or decide
//! anything.
//!
//! Output errors: a write to stdout that fails (a closed pipe or terminal, a full disk) never panics
//! and never stops the run; rill stops printing for the rest of it (`stdout_lost`) and goes on
//! transferring.

use std::io::{self, Write};

use super::{EventLoop, UiMode};
use crate::observe::ui::{self, Snapshot};
use crate::time::Timestamp;

impl EventLoop {
    pub(super) fn snapshot(&self) -> Snapshot {
        let total = self.torrent.swarm.wanted_bytes();
        Snapshot {
            done: total - self.torrent.swarm.left(),
            total,
            uploaded: self.torrent.swarm.totals.uploaded,
            down_rate: self.down_rate,
            up_rate: self.up_rate,
            peers: self.peers.len() - self.half_open(),
            half_open: self.half_open(),
            seeding: self.torrent.swarm.is_complete() && self.config.keep_seeding,
            state: self.stopping.then_some("stopping"),
            wasted: self.torrent.swarm.totals.wasted,
            hash_failures: self.torrent.swarm.totals.hash_failures,
        }
    }

    /// Prints one line of news (a tracker answered, failed...) above the live status line.
    pub(super) fn say(&mut self, now: Timestamp, line: &str) {
        if self.stopping || self.stdout_lost {
            return;
        }
        let mut out = io::stdout().lock();
        match self.config.ui {
            UiMode::Live => {
                let pad = " ".repeat(self.last_line_len.saturating_sub(line.chars().count()));
                let written = writeln!(out, "\r{line}{pad}");
                drop(out);
                self.note_output(written);
                self.last_line_len = 0;
                self.redraw(now, false);
            }
            UiMode::Plain => {
                let written = writeln!(out, "{line}").and_then(|()| out.flush());
                drop(out);
                self.note_output(written);
            }
        }
    }

    /// After a failed write, nothing more is printed in this run.
    fn note_output(&mut self, written: io::Result<()>) {
        if let Err(e) = written {
            log::debug!("stdout: {e}; no more progress lines");
            self.stdout_lost = true;
        }
    }

    pub(super) fn redraw(&mut self, _now: Timestamp, last: bool) {
        if self.stdout_lost {
            return;
        }
        let snap = self.snapshot();
        match self.config.ui {
            UiMode::Live => {
                let line = ui::render_status(&snap, self.config.columns.saturating_sub(1));
                let pad = self.last_line_len.saturating_sub(line.chars().count());
                let mut out = io::stdout().lock();
                let written = write!(out, "\r{line}{}", " ".repeat(pad))
                    .and_then(|()| if last { writeln!(out) } else { Ok(()) })
                    .and_then(|()| out.flush());
                drop(out);
                self.note_output(written);
                self.last_line_len = line.chars().count();
            }
            UiMode::Plain => {
                let line = ui::render_status(&snap, 200);
                let mut out = io::stdout().lock();
                let written = writeln!(out, "{line}").and_then(|()| out.flush());
                drop(out);
                self.note_output(written);
            }
        }
    }
}
