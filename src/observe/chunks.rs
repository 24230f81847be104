//! A byte buffer made of fixed-size chunks: for the `--stats-json` document, rewritten every few seconds.
//!
//! Owns: the chunks and the order of the bytes in them.
//! Must not: know what is written into it, or write files (the `rill-trace` helper writes the parts).
//!
//! Why not a `Vec<u8>`: the document grows for hours (it keeps up to `MAX_CLOSED_PEERS` closed peers, about
//! 1 KB of pretty JSON each), and a `Vec` grown by doubling copies itself at every step, holds up to twice what
//! it needs, and leaves the smaller buffers it outgrew to the allocator. Chunks of one size are allocated once
//! and reused from one document to the next: the memory is the document's size rounded up to a chunk, and
//! nothing is copied as it grows.

use std::io;

/// Bytes per chunk.
pub const CHUNK_LEN: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct Chunks {
    /// Each holds at most `CHUNK_LEN` bytes (its capacity); `chunks[..in_use]` hold the bytes, every one of
    /// them full except the last; the rest are empty, kept for the next document.
    chunks: Vec<Vec<u8>>,
    in_use: usize,
}

impl Chunks {
    /// Forgets the bytes, keeping the chunks.
    pub fn clear(&mut self) {
        for chunk in &mut self.chunks[..self.in_use] {
            chunk.clear();
        }
        self.in_use = 0;
    }

    /// The bytes, in order.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks[..self.in_use].iter().map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.parts().map(<[u8]>::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.in_use == 0
    }

    /// Bytes of memory held, used or not.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    /// The bytes as one `Vec` (tests, and the rare caller that wants them whole).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().flatten().copied().collect()
    }
}

impl io::Write for Chunks {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let room = match self.in_use.checked_sub(1).map(|last| &self.chunks[last]) {
                Some(last) => CHUNK_LEN - last.len(),
                None => 0,
            };
            if room == 0 {
                if self.in_use == self.chunks.len() {
                    self.chunks.push(Vec::with_capacity(CHUNK_LEN));
                }
                self.in_use += 1;
                continue;
            }
            let take = room.min(buf.len());
            self.chunks[self.in_use - 1].extend_from_slice(&buf[..take]);
            buf = &buf[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bytes_come_back_in_order_across_chunks_and_chunks_are_reused() {
        let mut c = Chunks::default();
        let data: Vec<u8> = (0..(3 * CHUNK_LEN + 100)).map(|i| (i % 251) as u8).collect();
        // Written in odd pieces, as a serialiser does.
        for piece in data.chunks(777) {
            c.write_all(piece).unwrap();
        }
        assert_eq!(c.len(), data.len());
        assert_eq!(c.to_vec(), data);
        assert!(c.parts().all(|p| p.len() <= CHUNK_LEN));
        assert_eq!(c.capacity(), 4 * CHUNK_LEN, "exactly the chunks it needs, no doubling");
        c.clear();
        assert!(c.is_empty());
        c.write_all(&data[..10]).unwrap();
        assert_eq!(c.to_vec(), &data[..10]);
        assert_eq!(c.capacity(), 4 * CHUNK_LEN, "cleared chunks are kept for the next document");
    }

    #[test]
    fn an_empty_write_allocates_nothing() {
        let mut c = Chunks::default();
        c.write_all(&[]).unwrap();
        assert_eq!((c.len(), c.capacity()), (0, 0));
    }
}
