//! Per-connection byte buffers: a bounded linear `ReadBuf` parsed in place, and a `WriteBuf` with
//! high/low water marks.
//!
//! Owns: buffer memory and its invariants. Must not: make protocol decisions or name a socket type;
//! `fill_from` takes any `io::Read`.

use std::io;

use crate::peer::PeerMisbehaved;
use crate::wire::handshake::{Handshake, HANDSHAKE_LEN};
use crate::wire::{self, Decoded, Frame, FrameLimits};

/// Bytes read from one peer, parsed where they lie.
///
/// Invariant: `start <= end <= buf.len()`; `buf[start..end]` is not yet parsed. Capacity exceeds the
/// largest legal frame, so a full buffer always holds a whole frame.
///
/// ```text
///  0        start          end          len
///  |  parsed  |  unparsed   |    free    |
/// ```
pub struct ReadBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// Extra room beyond one maximal frame, so one `read(2)` takes in several blocks at once.
pub const READ_CHUNK: usize = 64 * 1024;

impl ReadBuf {
    pub fn new(limits: &FrameLimits) -> Self {
        ReadBuf { buf: vec![0; Self::capacity_for(limits)].into_boxed_slice(), start: 0, end: 0 }
    }

    /// For a connection whose torrent is not known yet (incoming, before its handshake names it): room for
    /// the handshake (or the MSE exchange before it) only. [`ReadBuf::fit`] grows it once the torrent is known.
    pub fn for_handshake() -> Self {
        ReadBuf { buf: vec![0; HANDSHAKE_LEN + READ_CHUNK].into_boxed_slice(), start: 0, end: 0 }
    }

    fn capacity_for(limits: &FrameLimits) -> usize {
        (4 + limits.max_body as usize).max(HANDSHAKE_LEN) + READ_CHUNK
    }

    /// Makes room for the largest frame `limits` allow, keeping the unparsed bytes.
    pub fn fit(&mut self, limits: &FrameLimits) {
        let capacity = Self::capacity_for(limits);
        if self.buf.len() < capacity {
            let mut bigger = vec![0; capacity].into_boxed_slice();
            let n = self.end - self.start;
            bigger[..n].copy_from_slice(&self.buf[self.start..self.end]);
            self.buf = bigger;
            self.start = 0;
            self.end = n;
        }
    }

    /// One `read(2)` into the free tail. `Ok(0)` means the peer closed its side.
    pub fn fill_from(&mut self, src: &mut impl io::Read) -> io::Result<usize> {
        if self.end == self.buf.len() || (self.start > 0 && self.buf.len() - self.end < READ_CHUNK / 2) {
            self.compact();
        }
        if self.end == self.buf.len() {
            // Only a stage before framing can get here (an MSE header announcing a 64 KiB initial payload
            // into a connection's pre-handshake buffer): decode() bounds frames below capacity.
            return Err(io::Error::new(io::ErrorKind::InvalidData, "read buffer full before a whole message"));
        }
        let n = src.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// The most bytes the buffer holds.
    pub fn capacity(&self) -> usize {
        self.buf.len()
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

    /// The next whole frame, borrowed from the buffer, or `None` until more bytes arrive.
    pub fn next_frame(&mut self, limits: &FrameLimits) -> Result<Option<Frame<'_>>, PeerMisbehaved> {
        let Self { buf, start, end } = self;
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
/// Invariant: `start <= buf.len()`; `buf[start..]` is still to be written. The storage is reused, so it
/// settles at the high-water mark plus one message and is never freed per message.
#[derive(Default)]
pub struct WriteBuf {
    buf: Vec<u8>,
    start: usize,
}

/// Above this backlog a connection stops reading (and so stops taking requests) until it drains.
pub const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Reading resumes once the backlog falls below this.
pub const WRITE_LOW_WATER: usize = 64 * 1024;

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
    /// `n` bytes were written to the socket.
    pub fn consume(&mut self, n: usize) {
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
        if self.is_empty() && self.buf.capacity() > WRITE_LOW_WATER {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    pub fn is_above_high_water(&self) -> bool {
        self.len() > WRITE_HIGH_WATER
    }
    pub fn is_below_low_water(&self) -> bool {
        self.len() < WRITE_LOW_WATER
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
