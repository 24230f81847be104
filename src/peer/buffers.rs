//! Per-connection byte buffers: a bounded linear `ReadBuf` parsed in place, sized to what the peer sends,
//! and a `WriteBuf` with high/low water marks that gives its memory back when the peer goes quiet.
//!
//! Owns: buffer memory, its invariants and its sizing (grow on need, shrink after `SHRINK_AFTER` quiet).
//! Must not: make protocol decisions or name a socket type; `fill_from` takes any `io::Read`.
//!
//! # Sizing
//!
//! A connection's memory is mostly its buffers, and most connections are quiet most of the time (a seed's
//! choked peers exchange a `have` or a keep-alive now and then; one still handshaking sends 68 bytes). So:
//!
//! - A `ReadBuf` owns **nothing** until the first read (a connect in progress, or an accepted connection
//!   that has sent nothing, costs no buffer), then `IDLE_READ_CAPACITY` bytes (`HANDSHAKE_READ_CAPACITY`
//!   for an incoming connection): a handshake, a bitfield of a few thousand pieces, an extension
//!   handshake, a run of `have`s or requests.
//! - It **grows** (to at least twice its size, at most `max`) only when it must: a frame larger than it is
//!   in progress (a block: the peer is sending us data), or a read filled every free byte (more is
//!   waiting). `max` is one largest legal frame plus `READ_CHUNK`, the size a busy connection always had,
//!   so a busy connection reads as it did: a few grows at the start of a transfer, none per block.
//! - It **shrinks** back to `IDLE_READ_CAPACITY` once it has been quiet for `SHRINK_AFTER` (no read
//!   larger than the idle size, no grow), checked once a second by the engine (`on_tick`). Growing and
//!   shrinking are rare events with hysteresis: a peer sending blocks keeps its buffer; one that stopped
//!   half a minute ago gives it back.
//! - The `WriteBuf` allocates on the first message; serving stops filling it past `SERVE_AHEAD` (the
//!   socket's own buffer does the rest), and after `SHRINK_AFTER` without a large write it gives back
//!   what it holds beyond `IDLE_WRITE_CAPACITY` (when empty).
//!
//! A loop-wide read scratch with small per-connection leftovers was the alternative: it saves the
//! idle buffer too, but every partial block at the end of a read would be copied out and back, on the
//! path that carries the payload. Sizing per connection keeps that path as it was (parse in place, one
//! `copy_within` of at most one partial frame) and costs an idle peer about 1 KiB.

use std::io;
use std::time::Duration;

use crate::peer::PeerMisbehaved;
use crate::time::{secs, Timestamp};
use crate::wire::handshake::{Handshake, HANDSHAKE_LEN};
use crate::wire::{self, Decoded, Frame, FrameLimits};

/// Bytes read from one peer, parsed where they lie.
///
/// Invariant: `start <= end <= buf.len() <= max` (a buffer holding more than `max` after `fit` lowered
/// nothing: `max` only grows). `buf[start..end]` is not yet parsed. `max` exceeds the largest legal frame,
/// so a buffer grown to `max` always holds a whole frame.
///
/// ```text
///  0        start          end          len        max
///  |  parsed  |  unparsed   |    free    |  (growth) |
/// ```
pub struct ReadBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The most this buffer may grow to: one largest frame plus `READ_CHUNK` once the torrent is known,
    /// `HANDSHAKE_READ_MAX` before.
    max: usize,
    /// The last read filled every free byte: more is probably waiting, so the next read gets more room.
    saturated: bool,
    /// Since the last `on_tick`: a read larger than the idle size, or a grow.
    busy: bool,
    /// The last tick that found the buffer busy.
    busy_at: Timestamp,
    /// What the first read allocates.
    first: usize,
}

/// Extra room beyond one maximal frame, so one `read(2)` takes in several blocks at once.
pub const READ_CHUNK: usize = 64 * 1024;
/// What a quiet connection's read buffer holds: a handshake plus a few small messages.
pub const IDLE_READ_CAPACITY: usize = 1024;
/// What an incoming connection's first read allocates: a plain handshake, or an MSE public key and some
/// padding. A connection that sends a few bytes and stalls costs this much buffer.
pub const HANDSHAKE_READ_CAPACITY: usize = 256;
/// Before the torrent is known (an MSE exchange, whose initial payload may be up to 64 KiB, then the
/// handshake), a read buffer grows to at most this.
pub const HANDSHAKE_READ_MAX: usize = HANDSHAKE_LEN + READ_CHUNK;
/// A buffer unused beyond its idle size for this long shrinks back to it.
pub const SHRINK_AFTER: Duration = secs(30);

impl ReadBuf {
    /// For a connection whose torrent is known (one we dial): no memory until the first read.
    pub fn new(limits: &FrameLimits) -> Self {
        Self::empty(Self::capacity_for(limits), IDLE_READ_CAPACITY)
    }

    /// For a connection whose torrent is not known yet (incoming, before its handshake names it): room for
    /// the handshake (or the MSE exchange before it) only. [`ReadBuf::fit`] raises the limit once the
    /// torrent is known.
    pub fn for_handshake() -> Self {
        Self::empty(HANDSHAKE_READ_MAX, HANDSHAKE_READ_CAPACITY)
    }

    fn empty(max: usize, first: usize) -> Self {
        let busy_at = Timestamp::ZERO;
        ReadBuf { buf: Box::default(), start: 0, end: 0, max, saturated: false, busy: false, busy_at, first }
    }

    fn capacity_for(limits: &FrameLimits) -> usize {
        (4 + limits.max_body as usize).max(HANDSHAKE_LEN) + READ_CHUNK
    }

    /// Lets the buffer grow to the largest frame `limits` allow (plus `READ_CHUNK`), keeping the unparsed
    /// bytes. Allocates nothing by itself.
    pub fn fit(&mut self, limits: &FrameLimits) {
        self.max = self.max.max(Self::capacity_for(limits));
    }

    /// Bytes of memory the buffer holds now.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// The most it may grow to (one largest frame and a read chunk, once the torrent is known).
    pub fn max_capacity(&self) -> usize {
        self.max
    }

    /// Replaces the storage with `capacity` bytes, keeping the unparsed ones at the front.
    fn resize(&mut self, capacity: usize) {
        let n = self.end - self.start;
        debug_assert!(n <= capacity);
        let mut fresh = vec![0; capacity].into_boxed_slice();
        fresh[..n].copy_from_slice(&self.buf[self.start..self.end]);
        self.buf = fresh;
        self.start = 0;
        self.end = n;
    }

    /// Grows to at least `need` bytes and at least twice the present size, within `max`. False at `max`.
    fn grow(&mut self, need: usize) -> bool {
        let now = self.buf.len();
        let to = need.max(now * 2).min(self.max);
        if to <= now {
            return false;
        }
        self.resize(to);
        self.busy = true;
        true
    }

    /// One `read(2)` into the free tail. `Ok(0)` means the peer closed its side.
    pub fn fill_from(&mut self, src: &mut impl io::Read) -> io::Result<usize> {
        if self.buf.is_empty() || self.saturated {
            self.saturated = false;
            self.grow(self.first);
        }
        let len = self.buf.len();
        if self.end == len || (self.start > 0 && len - self.end < (READ_CHUNK / 2).min(len / 2)) {
            self.compact();
        }
        if self.end == self.buf.len() && !self.grow(self.end + 1) {
            // Only a stage before framing can get here (an MSE header announcing a 64 KiB initial payload
            // into a connection's pre-handshake buffer): next_frame() grows for any frame within limits.
            return Err(io::Error::new(io::ErrorKind::InvalidData, "read buffer full before a whole message"));
        }
        let free = self.buf.len() - self.end;
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        self.saturated = n == free && self.buf.len() < self.max;
        if n > IDLE_READ_CAPACITY {
            self.busy = true;
        }
        Ok(n)
    }

    /// Once a second or so: a buffer that was not busy for `SHRINK_AFTER` goes back to the idle size (if
    /// what it holds fits).
    pub fn on_tick(&mut self, now: Timestamp) {
        if std::mem::take(&mut self.busy) {
            self.busy_at = now;
            return;
        }
        if self.buf.len() > IDLE_READ_CAPACITY
            && self.end - self.start <= IDLE_READ_CAPACITY
            && now.saturating_since(self.busy_at) >= SHRINK_AFTER
        {
            self.resize(IDLE_READ_CAPACITY);
            self.saturated = false;
        }
    }

    /// Bytes not yet parsed.
    pub fn unparsed(&self) -> usize {
        self.end - self.start
    }

    /// The unparsed bytes, for a stage before framing (the MSE handshake), which may rewrite them in place.
    pub fn unparsed_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// The first `n` unparsed bytes are done with.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// The peer's handshake, once all 68 bytes are here.
    pub fn next_handshake(&mut self) -> Result<Option<Handshake>, PeerMisbehaved> {
        let hs = Handshake::parse(&self.buf[self.start..self.end])?;
        if hs.is_some() {
            self.start += HANDSHAKE_LEN;
        }
        Ok(hs)
    }

    /// The next whole frame, borrowed from the buffer, or `None` until more bytes arrive (having made room
    /// for the whole of a frame larger than the buffer).
    pub fn next_frame(&mut self, limits: &FrameLimits) -> Result<Option<Frame<'_>>, PeerMisbehaved> {
        // A frame larger than the buffer (within `limits`, which `fit` raised `max` to): room for all of it.
        if let Some(prefix) = self.buf.get(self.start..self.start + 4).filter(|_| self.end - self.start >= 4) {
            let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            let total = 4 + len as usize;
            if len <= limits.max_body && total > self.buf.len() {
                self.grow(total);
            }
        }
        let Self { buf, start, end, .. } = self;
        match wire::decode(&buf[*start..*end], limits)? {
            Decoded::Frame { frame, len } => {
                *start += len;
                Ok(Some(frame))
            }
            Decoded::NeedMore => Ok(None),
        }
    }

    /// Moves the unparsed tail to the front; costs at most one partial frame plus what a read added.
    fn compact(&mut self) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }
}

/// Bytes queued for one peer, oldest first.
///
/// Invariant: `start <= buf.len()`; `buf[start..]` is still to be written. The storage is reused while
/// the peer is busy, so it settles at `SERVE_AHEAD` plus one message and is never freed per message; it
/// is given back after `SHRINK_AFTER` without a write larger than `IDLE_WRITE_CAPACITY`.
#[derive(Default)]
pub struct WriteBuf {
    buf: Vec<u8>,
    start: usize,
    /// Since the last `on_tick`: a write to the socket larger than the idle size.
    busy: bool,
    /// The last tick that found the buffer busy.
    busy_at: Timestamp,
}

/// Above this backlog a connection stops reading (and so stops taking requests) until it drains.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Reading resumes once the backlog falls below this.
pub const WRITE_LOW_WATER: usize = 64 * 1024;
/// Blocks are read from disk into the buffer only while less than this is queued: the socket's own
/// send buffer does the rest, so a peer being served holds about this much here, not a backlog of every
/// request it made.
pub const SERVE_AHEAD: usize = 32 * 1024;
// Serving alone never stops reading a peer: that is for output nobody paces (metadata, a flood of rejects).
const _: () = assert!(SERVE_AHEAD + 2 * (crate::geometry::BLOCK_LEN as usize) < WRITE_HIGH_WATER);
/// What a quiet connection's write buffer keeps: handshakes, bitfields, `have`s, keep-alives.
pub const IDLE_WRITE_CAPACITY: usize = 1024;

impl WriteBuf {
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    pub fn pending_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of memory the buffer holds now.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
    /// `n` bytes were written to the socket.
    pub fn consume(&mut self, n: usize) {
        if n > IDLE_WRITE_CAPACITY {
            self.busy = true;
        }
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }
    /// Space to append a message; compacts first when the written prefix dominates.
    pub fn tail(&mut self) -> &mut Vec<u8> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }
    /// Gives back memory a served peer no longer needs (it is choked now); a no-op while bytes wait.
    pub fn shrink_if_idle(&mut self) {
        if self.is_empty() && self.buf.capacity() > IDLE_WRITE_CAPACITY {
            self.buf = Vec::new();
            self.start = 0;
        }
    }
    /// Once a second or so: a buffer that wrote nothing large for `SHRINK_AFTER` gives its memory back
    /// (when empty).
    pub fn on_tick(&mut self, now: Timestamp) {
        if std::mem::take(&mut self.busy) {
            self.busy_at = now;
        } else if now.saturating_since(self.busy_at) >= SHRINK_AFTER {
            self.shrink_if_idle();
        }
    }

    pub fn is_above_high_water(&self) -> bool {
        self.len() > WRITE_HIGH_WATER
    }
    pub fn is_below_low_water(&self) -> bool {
        self.len() < WRITE_LOW_WATER
    }
    /// Enough is queued to keep the socket busy: serve no more blocks until it drains.
    pub fn is_full_for_serving(&self) -> bool {
        self.len() >= SERVE_AHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::secs;
    use crate::wire::encode;

    /// A reader that hands out its bytes in fixed-size pieces, as a socket might.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_split_across_reads_are_reassembled_in_place() {
        let limits = FrameLimits::for_torrent(100);
        let block = vec![7u8; 16 * 1024];
        let mut bytes = vec![];
        for i in 0..20 {
            encode(&Frame::Have { piece: i }, &mut bytes);
            encode(&Frame::Piece { piece: i, offset: 0, data: &block }, &mut bytes);
        }
        let mut src = Trickle { data: &bytes, step: 1000 };
        let mut rb = ReadBuf::new(&limits);
        let mut seen = 0;
        loop {
            match rb.fill_from(&mut src) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            while let Some(frame) = rb.next_frame(&limits).unwrap() {
                match frame {
                    Frame::Have { piece } => assert_eq!(piece, seen / 2),
                    Frame::Piece { piece, data, .. } => {
                        assert_eq!(piece, seen / 2);
                        assert_eq!(data, &block[..]);
                    }
                    other => panic!("unexpected {other:?}"),
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 40);
        assert_eq!(rb.unparsed(), 0);
    }

    /// Reads everything `src` has into `rb`, handling frames as they come; returns how many there were and
    /// the distinct capacities the buffer had (each change is one allocation).
    fn drain(rb: &mut ReadBuf, src: &mut Trickle<'_>, limits: &FrameLimits) -> (usize, Vec<usize>) {
        let (mut frames, mut sizes) = (0, vec![]);
        loop {
            match rb.fill_from(src) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            if sizes.last() != Some(&rb.capacity()) {
                sizes.push(rb.capacity());
            }
            while rb.next_frame(limits).unwrap().is_some() {
                frames += 1;
            }
        }
        (frames, sizes)
    }

    fn small_messages(n: u32) -> Vec<u8> {
        let mut bytes = vec![];
        for i in 0..n {
            encode(&Frame::Have { piece: i }, &mut bytes);
            encode(&Frame::KeepAlive, &mut bytes);
        }
        bytes
    }

    fn blocks(n: u32) -> Vec<u8> {
        let block = vec![7u8; 16 * 1024];
        let mut bytes = vec![];
        for i in 0..n {
            encode(&Frame::Piece { piece: i, offset: 0, data: &block }, &mut bytes);
        }
        bytes
    }

    #[test]
    fn read_buf_owns_nothing_before_the_first_read() {
        assert_eq!(ReadBuf::new(&FrameLimits::for_torrent(100)).capacity(), 0);
        assert_eq!(ReadBuf::for_handshake().capacity(), 0);
        let mut rb = ReadBuf::for_handshake();
        let mut nothing = Trickle { data: &[], step: 1 };
        assert_eq!(rb.fill_from(&mut nothing).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(rb.capacity(), HANDSHAKE_READ_CAPACITY, "a connection that sent nothing yet");
    }

    #[test]
    fn read_buf_stays_small_for_a_peer_that_sends_small_messages() {
        let limits = FrameLimits::for_torrent(100);
        let mut rb = ReadBuf::new(&limits);
        // Arriving a few at a time, as a quiet peer's messages do.
        let bytes = small_messages(500);
        let (frames, sizes) = drain(&mut rb, &mut Trickle { data: &bytes, step: 100 }, &limits);
        assert_eq!(frames, 1000);
        assert_eq!(sizes, [IDLE_READ_CAPACITY]);
    }

    #[test]
    fn read_buf_grows_for_blocks_in_a_few_steps_and_never_past_its_limit() {
        let limits = FrameLimits::for_torrent(100);
        let mut rb = ReadBuf::new(&limits);
        let bytes = blocks(100);
        let (frames, sizes) = drain(&mut rb, &mut Trickle { data: &bytes, step: 1 << 20 }, &limits);
        assert_eq!(frames, 100);
        let full = ReadBuf::capacity_for(&limits);
        assert_eq!(sizes.last(), Some(&full), "a busy peer reads into a full-size buffer: {sizes:?}");
        assert!(sizes.len() <= 6, "grows are rare events, not one per block: {sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "only grows while busy: {sizes:?}");
    }

    #[test]
    fn read_buf_grows_for_a_frame_larger_than_it_even_from_small_reads() {
        let limits = FrameLimits::for_torrent(100);
        let mut rb = ReadBuf::new(&limits);
        let bytes = blocks(3);
        let (frames, sizes) = drain(&mut rb, &mut Trickle { data: &bytes, step: 500 }, &limits);
        assert_eq!(frames, 3);
        assert!(sizes.iter().all(|&s| s <= ReadBuf::capacity_for(&limits)));
        assert!(*sizes.last().unwrap() >= 4 + 9 + 16 * 1024);
    }

    #[test]
    fn read_buf_shrinks_only_after_a_quiet_spell() {
        let limits = FrameLimits::for_torrent(100);
        let mut rb = ReadBuf::new(&limits);
        let t0 = Timestamp::from_secs(100);
        let bytes = blocks(10);
        drain(&mut rb, &mut Trickle { data: &bytes, step: 1 << 20 }, &limits);
        let full = rb.capacity();
        assert!(full > IDLE_READ_CAPACITY);
        rb.on_tick(t0); // busy since the last tick
        rb.on_tick(t0 + SHRINK_AFTER - secs(1));
        assert_eq!(rb.capacity(), full, "not quiet long enough");
        // Busy again just before: the quiet spell starts over.
        drain(&mut rb, &mut Trickle { data: &bytes, step: 1 << 20 }, &limits);
        rb.on_tick(t0 + SHRINK_AFTER - secs(1));
        rb.on_tick(t0 + SHRINK_AFTER + secs(1));
        assert_eq!(rb.capacity(), full);
        rb.on_tick(t0 + SHRINK_AFTER * 2);
        assert_eq!(rb.capacity(), IDLE_READ_CAPACITY);
        // And it still works, growing again when blocks come.
        let (frames, _) = drain(&mut rb, &mut Trickle { data: &bytes, step: 4000 }, &limits);
        assert_eq!(frames, 10);
    }

    #[test]
    fn read_buf_keeps_a_partial_frame_larger_than_the_idle_size_across_a_tick() {
        let limits = FrameLimits::for_torrent(100);
        let mut rb = ReadBuf::new(&limits);
        let bytes = blocks(1);
        let half = &bytes[..bytes.len() / 2];
        drain(&mut rb, &mut Trickle { data: half, step: 1 << 20 }, &limits);
        let held = rb.capacity();
        rb.on_tick(Timestamp::from_secs(1));
        rb.on_tick(Timestamp::from_secs(1000));
        assert_eq!(rb.capacity(), held, "half a block is waiting for its rest");
        let (frames, _) = drain(&mut rb, &mut Trickle { data: &bytes[bytes.len() / 2..], step: 1 << 20 }, &limits);
        assert_eq!(frames, 1);
    }

    #[test]
    fn read_buf_refuses_an_oversized_length_prefix_without_growing() {
        let limits = FrameLimits::for_torrent(100);
        let mut rb = ReadBuf::new(&limits);
        let mut bytes = (limits.max_body + 1).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[7; 100]);
        rb.fill_from(&mut Trickle { data: &bytes, step: 1 << 20 }).unwrap();
        assert!(rb.next_frame(&limits).is_err());
        assert_eq!(rb.capacity(), IDLE_READ_CAPACITY);
    }

    #[test]
    fn read_buf_before_the_handshake_grows_to_its_own_limit_and_no_further() {
        let mut rb = ReadBuf::for_handshake();
        let junk = vec![0x55u8; HANDSHAKE_READ_MAX + 1000];
        let mut src = Trickle { data: &junk, step: 1 << 20 };
        let err = loop {
            match rb.fill_from(&mut src) {
                Ok(_) => assert!(rb.capacity() <= HANDSHAKE_READ_MAX),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(rb.unparsed(), HANDSHAKE_READ_MAX);
    }

    #[test]
    fn write_buf_gives_memory_back_after_a_quiet_spell_only() {
        let mut wb = WriteBuf::default();
        let t0 = Timestamp::from_secs(100);
        wb.tail().extend_from_slice(&[1; 40 * 1024]);
        wb.consume(40 * 1024);
        let held = wb.capacity();
        assert!(held >= 40 * 1024, "kept for the next block");
        wb.on_tick(t0);
        wb.tail().extend_from_slice(b"have");
        wb.consume(4); // small writes are not busy
        wb.on_tick(t0 + SHRINK_AFTER - secs(1));
        assert_eq!(wb.capacity(), held);
        wb.tail().extend_from_slice(b"unsent");
        wb.on_tick(t0 + SHRINK_AFTER);
        assert_eq!(wb.capacity(), held, "bytes still wait");
        wb.consume(6);
        wb.on_tick(t0 + SHRINK_AFTER + secs(1));
        assert_eq!(wb.capacity(), 0);
    }

    #[test]
    fn write_buf_consumes_and_reuses_storage() {
        let mut wb = WriteBuf::default();
        wb.tail().extend_from_slice(b"hello world");
        wb.consume(6);
        assert_eq!(wb.pending(), b"world");
        wb.tail().extend_from_slice(b"!");
        assert_eq!(wb.pending(), b"world!");
        wb.consume(100);
        assert!(wb.is_empty());
        assert!(wb.is_below_low_water());
    }
}
