//! The terminal under the full-screen view: raw input, its size, the alternate screen, keys, and putting
//! everything back.
//!
//! Owns: the saved terminal modes (one process-wide copy, so the panic hook can restore them), raw mode
//! (no echo, no line editing, no signal keys; `VMIN = 0`, `VTIME = 0` so a read of stdin returns at once
//! with what there is, without setting `O_NONBLOCK` on a file description the shell shares), the ANSI
//! sequences, reading and decoding keys, and the panic hook that restores the terminal.
//! Must not: draw (that is `screen`), or queue output (frames go through `Output`); `restore` alone
//! writes to stdout itself, at the very end or in a panic.
//!
//! Hand-written ANSI and rustix's `termios`: a handful of escape sequences and two ioctls, where
//! ratatui + crossterm would add several hundred KiB to a binary that must stay under 2 MiB.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use rustix::termios::{self, InputModes, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

/// Alternate screen on, cursor hidden, screen cleared.
pub const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
/// Cursor shown, main screen back.
pub const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
pub const HOME: &str = "\x1b[H";
pub const CLEAR_LINE_END: &str = "\x1b[K";
pub const CLEAR_BELOW: &str = "\x1b[J";
pub const CLEAR_ALL: &str = "\x1b[2J";

/// The modes before raw mode, while the view is up.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
/// The alternate screen is up (set by `enter`, cleared by the first `restore`).
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// The view's hold on the terminal: dropping it restores the terminal.
pub struct Terminal {
    _private: (),
}

impl Terminal {
    /// Raw mode on stdin, and a panic hook that restores the terminal. The caller then queues `ENTER`
    /// (through `Output`, so it comes before every frame).
    pub fn raw() -> io::Result<Terminal> {
        let stdin = io::stdin();
        // In the background (`rill … &`), changing the modes would stop rill (SIGTTOU), reading keys too.
        if termios::tcgetpgrp(&stdin)? != rustix::process::getpgrp() {
            return Err(io::Error::other("not the terminal's foreground process"));
        }
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        // Keys one by one, not echoed; Ctrl-C and Ctrl-Z are keys too (the view quits on Ctrl-C, like the
        // signal; a stopped process would leave the terminal raw).
        raw.local_modes.remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN);
        raw.input_modes.remove(InputModes::IXON | InputModes::ICRNL);
        raw.special_codes[SpecialCodeIndex::VMIN] = 0;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        if let Ok(mut s) = SAVED.lock() {
            *s = Some(saved);
        }
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        ACTIVE.store(true, Ordering::SeqCst);
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        Ok(Terminal { _private: () })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Main screen, cursor and cooked mode back, once (later calls do nothing). Written straight to the file
/// descriptor: no lock that a panicking thread might hold, no buffer.
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = rustix::io::write(io::stdout(), LEAVE.as_bytes());
    let saved = match SAVED.lock() {
        Ok(mut s) => s.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(io::stdin(), OptionalActions::Now, &saved);
    }
}

/// (columns, rows) of the terminal on stdout, if it says.
pub fn size() -> Option<(usize, usize)> {
    let ws = termios::tcgetwinsize(io::stdout()).ok()?;
    (ws.ws_col > 0 && ws.ws_row > 0).then_some((usize::from(ws.ws_col), usize::from(ws.ws_row)))
}

/// Reads what stdin has (raw mode: returns at once, 0 when there is nothing).
pub fn read_input(buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(io::stdin(), &mut *buf) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a key asks of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// `q` or Ctrl-C.
    Quit,
    /// `p`.
    Pause,
    /// `k` or up arrow.
    Up,
    /// `j` or down arrow.
    Down,
    /// `s`.
    Sort,
}

/// The keys in `bytes` (arrows arrive as `ESC [ A` / `ESC O A`); anything else is ignored.
pub fn decode_keys(bytes: &[u8]) -> Vec<Key> {
    let mut keys = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let key = match bytes[i] {
            b'q' | b'Q' | 0x03 => Some(Key::Quit),
            b'p' | b'P' | b' ' => Some(Key::Pause),
            b'k' | b'K' => Some(Key::Up),
            b'j' | b'J' => Some(Key::Down),
            b's' | b'S' => Some(Key::Sort),
            0x1b if matches!(bytes.get(i + 1), Some(b'[' | b'O')) => {
                i += 2;
                match bytes.get(i) {
                    Some(b'A') => Some(Key::Up),
                    Some(b'B') => Some(Key::Down),
                    _ => None,
                }
            }
            _ => None,
        };
        keys.extend(key);
        i += 1;
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_arrows_decode_and_the_rest_is_ignored() {
        assert_eq!(decode_keys(b"q"), vec![Key::Quit]);
        assert_eq!(decode_keys(b"\x03"), vec![Key::Quit], "Ctrl-C in raw mode");
        assert_eq!(decode_keys(b"jk\x1b[A\x1b[B\x1bOB"), vec![Key::Down, Key::Up, Key::Up, Key::Down, Key::Down]);
        assert_eq!(decode_keys(b"sp"), vec![Key::Sort, Key::Pause]);
        assert_eq!(decode_keys(b"x\x1b[C\x1b"), vec![], "right arrow, a lone escape, other letters");
        assert_eq!(decode_keys(b"\x1b["), vec![], "a cut sequence");
    }
}
