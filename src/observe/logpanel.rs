//! Where log lines go: stderr, or, while the full-screen view is up, a bounded ring the view shows in its
//! bottom panel (a line written to the terminal would tear the screen). The lines still in the ring when
//! the view closes are printed to stderr then, so a warning is never lost from sight.
//!
//! Owns: the process-wide ring and `LogSink`, the writer `env_logger` is given.
//! Must not: format log records (env_logger does), or keep more than `RING` lines of `MAX_LINE` characters.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Mutex;

/// Lines kept while the view is up.
pub const RING: usize = 200;
/// Characters kept of one line.
const MAX_LINE: usize = 300;

/// `Some` while the view is up.
static PANEL: Mutex<Option<VecDeque<String>>> = Mutex::new(None);

fn with_panel<R>(f: impl FnOnce(&mut Option<VecDeque<String>>) -> R) -> R {
    match PANEL.lock() {
        Ok(mut p) => f(&mut p),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

/// From now on, log lines go to the ring.
pub fn open() {
    with_panel(|p| *p = Some(VecDeque::with_capacity(16)));
}

/// Log lines go to stderr again; returns the lines the ring held.
pub fn close() -> Vec<String> {
    with_panel(|p| p.take().map(Vec::from).unwrap_or_default())
}

/// A line for the panel (the view's own news while it is up); ignored when the panel is closed.
pub fn push(line: &str) {
    with_panel(|p| {
        if let Some(ring) = p {
            push_into(ring, line);
        }
    });
}

/// The newest `n` lines, oldest first (empty when the panel is closed).
pub fn recent(n: usize) -> Vec<String> {
    with_panel(|p| match p {
        Some(ring) => ring.iter().skip(ring.len().saturating_sub(n)).cloned().collect(),
        None => Vec::new(),
    })
}

fn push_into(ring: &mut VecDeque<String>, text: &str) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(without_colours(line).chars().take(MAX_LINE).collect());
    }
}

/// `line` without its colour sequences (`ESC [ … m`: env_logger colours the level on a terminal).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters, up to the final byte (@ to ~).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The writer env_logger writes every record through (one `write` per record).
pub struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let held = with_panel(|p| match p {
            Some(ring) => {
                push_into(ring, &String::from_utf8_lossy(buf));
                true
            }
            None => false,
        });
        if !held {
            // Like env_logger's own stderr target: a failed write is dropped.
            let _ = io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_lines_cut_to_length() {
        let mut ring = VecDeque::new();
        for i in 0..(RING + 5) {
            push_into(&mut ring, &format!("line {i}\n"));
        }
        assert_eq!(ring.len(), RING);
        assert_eq!(ring.front().map(String::as_str), Some("line 5"));
        push_into(&mut ring, &"x".repeat(1000));
        assert_eq!(ring.back().map(|l| l.len()), Some(MAX_LINE));
        push_into(&mut ring, "two\nlines\n\n");
        push_into(&mut ring, "[\x1b[33mWARN\x1b[0m rill] x");
        assert_eq!(ring.back().map(String::as_str), Some("[WARN rill] x"), "colours are taken out");
        ring.pop_back();
        assert_eq!(ring.iter().rev().take(2).collect::<Vec<_>>(), ["lines", "two"]);
    }
}
