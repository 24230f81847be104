//! Progress output that never blocks the event loop.
//!
//! Owns: the `rill-stdout` helper thread and the bounded queue to it. A terminal that is slow, a pipe
//! nobody reads, or a suspended `less` would block a `write(2)` to stdout; the loop only queues lines
//! (`try_send`), and the helper writes them. A full queue drops status lines first (the next redraw
//! replaces them) and counts dropped news lines. A failed write (closed pipe, full disk) never panics
//! and never stops the run: nothing more is printed, and the queue keeps draining.
//! Whole frames of the full-screen view go the same way; at most `MAX_FRAMES_QUEUED` wait, and a frame
//! beyond that is dropped (a slow terminal skips frames, the loop never waits for it).
//! Must not: format lines (that is `view` and `ui`), or be used for what must reach the user (errors and
//! the closing summary are written by `main` after the run).

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Lines queued before the loop drops status lines (news lines are dropped only when this is full).
const QUEUE: usize = 256;
/// Frames waiting for the writer (not yet taken from the queue) before a new one is dropped.
const MAX_FRAMES_QUEUED: usize = 2;

enum Message {
    /// A line of news, printed above the live status line.
    News(String),
    /// The status line: redrawn in place (live) or printed as a line (plain).
    Status(String),
    /// The live status line is final: end it with a newline.
    EndStatus,
    /// A whole screen of the full-screen view, escape sequences included, written as it is.
    Frame(String),
}

/// The loop's handle on stdout.
pub struct Output {
    live: bool,
    queue: Option<SyncSender<Message>>,
    writer: Option<JoinHandle<()>>,
    /// News lines dropped because the queue was full.
    pub dropped: u64,
    /// Frames queued and not yet taken by the writer (it counts them down).
    frames_queued: Arc<AtomicUsize>,
    /// Frames dropped because the terminal was behind.
    pub dropped_frames: u64,
}

impl Output {
    /// `live`: a terminal, with one status line redrawn in place.
    pub fn new(live: bool) -> Self {
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let frames_queued = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&frames_queued);
        let (queue, writer) =
            match thread::Builder::new().name("rill-stdout".into()).spawn(move || write_all(rx, live, &counter)) {
                Ok(writer) => (Some(queue), Some(writer)),
                Err(e) => {
                    log::warn!("cannot start the output thread ({e}); no progress lines");
                    (None, None)
                }
            };
        Output { live, queue, writer, dropped: 0, frames_queued, dropped_frames: 0 }
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    pub fn news(&mut self, line: String) {
        if let Some(q) = &self.queue {
            if let Err(TrySendError::Full(_)) = q.try_send(Message::News(line)) {
                self.dropped += 1;
            }
        }
    }

    pub fn status(&mut self, line: String) {
        if let Some(q) = &self.queue {
            // A full queue: this status is stale by the next redraw anyway.
            let _ = q.try_send(Message::Status(line));
        }
    }

    /// A whole frame; dropped if the terminal has not taken the frames before it yet. `force` (the first
    /// frame, which enters the alternate screen) is queued whatever waits.
    pub fn frame(&mut self, frame: String, force: bool) -> bool {
        let Some(q) = &self.queue else {
            return false;
        };
        if !force && self.frames_queued.load(Ordering::Acquire) >= MAX_FRAMES_QUEUED {
            self.dropped_frames += 1;
            return false;
        }
        self.frames_queued.fetch_add(1, Ordering::AcqRel);
        if q.try_send(Message::Frame(frame)).is_err() {
            self.frames_queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped_frames += 1;
            return false;
        }
        true
    }

    /// Ends the live line and waits until everything queued is written (at the end of a run).
    pub fn finish(mut self) {
        if let Some(q) = self.queue.take() {
            if self.live {
                let _ = q.send(Message::EndStatus);
            }
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The helper thread: writes until the queue closes; after a failed write it only drains.
fn write_all(rx: Receiver<Message>, live: bool, frames_queued: &AtomicUsize) {
    let mut lost = false;
    let mut status = String::new();
    let mut shown_len = 0usize;
    for message in rx {
        if matches!(message, Message::Frame(_)) {
            frames_queued.fetch_sub(1, Ordering::AcqRel);
        }
        if lost {
            continue;
        }
        let mut out = io::stdout().lock();
        let written = match message {
            Message::News(line) if live => {
                let pad = " ".repeat(shown_len.saturating_sub(line.chars().count()));
                shown_len = status.chars().count();
                write!(out, "\r{line}{pad}\n{status}").and_then(|()| out.flush())
            }
            Message::News(line) => writeln!(out, "{line}").and_then(|()| out.flush()),
            Message::Status(line) if live => {
                let pad = " ".repeat(shown_len.saturating_sub(line.chars().count()));
                shown_len = line.chars().count();
                let w = write!(out, "\r{line}{pad}").and_then(|()| out.flush());
                status = line;
                w
            }
            Message::Status(line) => writeln!(out, "{line}").and_then(|()| out.flush()),
            Message::Frame(frame) => out.write_all(frame.as_bytes()).and_then(|()| out.flush()),
            Message::EndStatus => {
                if shown_len > 0 {
                    writeln!(out).and_then(|()| out.flush())
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = written {
            log::debug!("stdout: {e}; no more progress lines");
            lost = true;
        }
    }
}
