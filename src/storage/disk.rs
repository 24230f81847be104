//! The disk queue: every data-file read and write of a running transfer as a job, so the event loop never
//! waits on the device.
//!
//! Owns: the jobs the engine hands to storage (`Job`), their results (`Done`), the engine's side of the
//! queue (`DiskQueue`: the outbox and a fixed pool of 16 KiB block buffers, which is the backpressure: no
//! free buffer, no reading from peers), and the `Executor` that carries jobs out against a torrent's
//! `Storage`: contiguous writes coalesced into one `pwritev`, each piece's SHA-1 fed in block order as its
//! blocks are written (so every byte is hashed once; blocks that arrived out of order are read back at the
//! verdict), and early write-back with drop-behind (`posix_fadvise`) so the page cache does not fill with a
//! whole torrent. The executor runs on the `rill-disk` helper thread (`worker`) under the event loop, and
//! in place under the simulation: the same code either way.
//! Must not: know about peers, sockets or the clock. Jobs carry byte offsets; `owner` and `tag` are the
//! engine's opaque numbers, handed back untouched.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha1::{Digest, Sha1};

use super::{Storage, StorageError};
use crate::geometry::{BlockRef, BLOCK_LEN};
use crate::verdict::VerifiedPiece;

/// One torrent's storage, shared between the loop (which owns the torrent) and the disk executor. The loop
/// only ever `try_lock`s it on its turn (a resume save, the vanished-file check) or locks it outside the
/// transfer (start, stop, a control command); the executor holds it for one batch of jobs.
pub struct DiskTarget {
    /// Unique for the life of the process: results of a torrent that is gone are recognised by it.
    pub key: u64,
    storage: Mutex<Storage>,
    /// The same files with handles of their own, for reads that serve peers (`Storage::reader`): they
    /// never wait for a write stalled on the device.
    reader: Mutex<Storage>,
}

impl DiskTarget {
    pub fn new(storage: Storage) -> Arc<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let reader = Mutex::new(storage.reader());
        Arc::new(DiskTarget { key: NEXT.fetch_add(1, Ordering::Relaxed), storage: Mutex::new(storage), reader })
    }

    /// The storage, waiting for a batch of disk jobs to finish if one runs. Not for the transfer's path.
    pub fn lock(&self) -> MutexGuard<'_, Storage> {
        self.storage.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The reading view (see `reader` above).
    fn reader(&self) -> MutexGuard<'_, Storage> {
        self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The storage if no disk job holds it now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, Storage>> {
        match self.storage.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// A 16 KiB buffer from the queue's pool.
pub type BlockBuf = Box<[u8]>;

/// Why a piece is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Its last block was just written: the running hash is finished (and the rest read back).
    Download,
    /// Trusted from the resume file, hashed from disk before it is served (`Swarm::next_unconfirmed`).
    Confirm,
    /// The start-up check of existing data.
    Check,
}

/// A block to write: `block.len` bytes of `buf` at `at` in the torrent's layout.
pub struct WriteJob {
    pub target: Arc<DiskTarget>,
    pub owner: usize,
    pub block: BlockRef,
    pub at: u64,
    pub buf: BlockBuf,
}

pub enum Job {
    Write(WriteJob),
    /// Hash piece `piece` (`len` bytes at `at`) and compare with `expected`. For `Purpose::Download` the
    /// piece's running hash (fed by its writes, which come first in the queue) is finished.
    Verify {
        target: Arc<DiskTarget>,
        owner: usize,
        piece: u32,
        at: u64,
        len: u32,
        expected: [u8; 20],
        purpose: Purpose,
    },
    /// Read `block` (at `at` in the layout) into `buf` for the peer the engine calls `tag`. Reads are
    /// only of verified pieces, so they may run beside, or before, writes queued earlier.
    Read {
        target: Arc<DiskTarget>,
        owner: usize,
        tag: u64,
        block: BlockRef,
        at: u64,
        buf: BlockBuf,
    },
    /// The torrent is gone: forget its running hashes and cached pages.
    Forget {
        key: u64,
    },
}

impl Job {
    /// A read that serves a peer (it may run on its own thread: see `Job::Read`).
    pub fn is_read(&self) -> bool {
        matches!(self, Job::Read { .. })
    }
}

pub enum Done {
    Written {
        owner: usize,
        key: u64,
        buf: BlockBuf,
        result: Result<(), StorageError>,
    },
    Verified {
        owner: usize,
        key: u64,
        piece: u32,
        purpose: Purpose,
        result: Result<Option<VerifiedPiece>, StorageError>,
    },
    Read {
        owner: usize,
        key: u64,
        tag: u64,
        block: BlockRef,
        buf: BlockBuf,
        result: Result<(), StorageError>,
    },
}

/// Block buffers in the pool: the most data on its way to or from the disk at once (2 MiB). A full pool
/// stops reading from the peers we download from until writes finish: a stalled card costs pace, never
/// memory (the peers' data waits in the kernel's socket buffers and TCP pushes back). 2 MiB keeps a
/// loopback transfer at full speed (64 blocks cost it about a fifth; 256 gained nothing measurable).
pub const POOL_BLOCKS: usize = 128;

/// At most this many of the pool's buffers serve reads for uploads, so a busy seed never starves writes.
pub const READ_BLOCKS: usize = POOL_BLOCKS / 4;

/// The engine's side of the queue: jobs not yet taken by the driver, and the buffer pool.
pub struct DiskQueue {
    /// Bytes queued to send plus being read, per peer, before its next request is read (the engine sets
    /// it from how many peers it serves: `PeerSession::next_to_serve`).
    pub serve_ahead: usize,
    outbox: VecDeque<Job>,
    free: Vec<BlockBuf>,
    /// Buffers alive (made when first needed, then reused; at most `POOL_BLOCKS` but for a web seed's
    /// short overshoot).
    made: usize,
    /// Buffers lent to read jobs now.
    reading: usize,
    /// Jobs handed out and not yet done.
    in_flight: usize,
    /// Jobs handed out in total, and the most in flight at once (for the statistics).
    pub jobs_total: u64,
    pub peak_in_flight: usize,
}

impl Default for DiskQueue {
    fn default() -> Self {
        DiskQueue {
            // The least, until the engine has counted the peers it serves (a burst of newcomers must not
            // each get the most).
            serve_ahead: SERVE_AHEAD_MIN,
            outbox: VecDeque::new(),
            free: Vec::new(),
            made: 0,
            reading: 0,
            in_flight: 0,
            jobs_total: 0,
            peak_in_flight: 0,
        }
    }
}

/// The least `serve_ahead` is (as `peer::buffers::SERVE_AHEAD`: with many peers the socket buffers do the rest).
pub const SERVE_AHEAD_MIN: usize = 32 * 1024;

/// The most `serve_ahead` is (one or a few peers: six blocks cover the disk thread's round trip).
pub const SERVE_AHEAD_MAX: usize = 96 * 1024;

/// Spread over the peers we serve: `serve_ahead` is this divided by their number, within bounds.
pub const SERVE_BUDGET: usize = 1024 * 1024;

impl DiskQueue {
    /// Buffers that can be taken without going over the pool.
    pub fn room(&self) -> usize {
        self.free.len() + POOL_BLOCKS.saturating_sub(self.made)
    }

    /// Whether a read for an upload may take a buffer now.
    pub fn read_room(&self) -> bool {
        self.reading < READ_BLOCKS && self.room() > 0
    }

    /// A buffer from the pool, or a new one: callers check `room` first (a peer connection is not read
    /// while the pool is short), so only a web seed's HTTP read, which cannot wait, may go a few blocks
    /// over, and `give_back` frees the extra ones.
    fn take_buffer(&mut self) -> BlockBuf {
        self.free.pop().unwrap_or_else(|| {
            self.made += 1;
            vec![0; BLOCK_LEN as usize].into_boxed_slice()
        })
    }

    /// Queues a write of `data` (one block, at most 16 KiB).
    pub fn write(&mut self, target: &Arc<DiskTarget>, owner: usize, block: BlockRef, at: u64, data: &[u8]) {
        let mut buf = self.take_buffer();
        buf[..data.len()].copy_from_slice(data);
        self.push(Job::Write(WriteJob { target: Arc::clone(target), owner, block, at, buf }));
    }

    /// Queues a read of `block` for `tag`. False when no buffer is free for reads.
    pub fn read(&mut self, target: &Arc<DiskTarget>, owner: usize, tag: u64, block: BlockRef, at: u64) -> bool {
        if !self.read_room() {
            return false;
        }
        let buf = self.take_buffer();
        self.reading += 1;
        self.push(Job::Read { target: Arc::clone(target), owner, tag, block, at, buf });
        true
    }

    pub fn push(&mut self, job: Job) {
        self.outbox.push_back(job);
    }

    /// The next job for the executor.
    pub fn poll_job(&mut self) -> Option<Job> {
        let job = self.outbox.pop_front()?;
        self.in_flight += 1;
        self.jobs_total += 1;
        self.peak_in_flight = self.peak_in_flight.max(self.in_flight);
        Some(job)
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.outbox.len() + self.in_flight
    }

    /// A job is done: its buffer goes back to the pool once the caller is finished with it
    /// (`give_back`).
    pub fn on_done(&mut self, done: &Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if matches!(done, Done::Read { .. }) {
            self.reading = self.reading.saturating_sub(1);
        }
    }

    pub fn give_back(&mut self, buf: BlockBuf) {
        if self.made > POOL_BLOCKS {
            self.made -= 1;
        } else {
            self.free.push(buf);
        }
    }

    /// Drops every queued job of torrent `key` that has not been handed out (its buffers go back).
    pub fn cancel(&mut self, key: u64) {
        let mut kept = VecDeque::with_capacity(self.outbox.len());
        for job in std::mem::take(&mut self.outbox) {
            match job {
                Job::Write(WriteJob { target, buf, .. }) if target.key == key => self.give_back(buf),
                Job::Read { target, buf, .. } if target.key == key => {
                    self.reading = self.reading.saturating_sub(1);
                    self.give_back(buf);
                }
                Job::Verify { target, .. } if target.key == key => {}
                other => kept.push_back(other),
            }
        }
        self.outbox = kept;
        self.outbox.push_back(Job::Forget { key });
    }
}

/// A piece's running hash: SHA-1 over its blocks `0..next`, fed as they are written in order.
struct RunningHash {
    hasher: Sha1,
    next: u32,
    /// Blocks past `next` that were written before it (their own buffers, a few, in arrival order), hashed once
    /// the gap before them is filled.
    held: Vec<HeldBlock>,
    /// Blocks past `next` written but not held (no room), one bit each: read back from the page cache
    /// when the hash reaches them, so the hash goes on and the held blocks after them are let go.
    written: Vec<u64>,
}

struct HeldBlock {
    index: u32,
    len: u32,
    buf: BlockBuf,
}

impl RunningHash {
    fn new() -> Self {
        RunningHash { hasher: Sha1::new(), next: 0, held: Vec::new(), written: Vec::new() }
    }

    fn mark_written(&mut self, index: u32) {
        let word = index as usize / 64;
        if self.written.len() <= word {
            self.written.resize(word + 1, 0);
        }
        self.written[word] |= 1 << (index % 64);
    }

    /// Takes back block `index`'s written mark, if it had one.
    fn take_written(&mut self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        match self.written.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }
}

/// The most out-of-order blocks kept in memory for the running hashes, over all pieces (512 KiB, taken
/// only while blocks arrive out of order). A peer answers its requests in order as a rule, but one with
/// several disk threads (libtorrent) sends a few blocks of a piece early: held here, they are hashed once
/// the block before them is written instead of read back from the disk at the verdict. A block that
/// finds no room is read back (from the page cache, as soon as the hash reaches it).
const REORDER_BLOCKS: usize = 32;

/// Bytes of freshly verified pieces kept in the page cache before they are dropped (the newest are the
/// ones peers ask for first, once we announce them).
const DROP_BEHIND_BYTES: u64 = 32 * 1024 * 1024;

/// The most blocks one vectored write takes (1 MiB).
const MAX_RUN_BLOCKS: usize = 64;

/// What the executor did, for the statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskStats {
    pub write_calls: u64,
    pub bytes_written: u64,
    pub read_calls: u64,
    pub bytes_read: u64,
    pub pieces_hashed: u64,
    /// Bytes of downloaded pieces read back from the disk to hash them (blocks that came out of order).
    pub bytes_read_back: u64,
}

/// Carries jobs out. One per driver (the `rill-disk` thread, or the simulation in place).
#[derive(Default)]
pub struct Executor {
    hashes: HashMap<(u64, u32), RunningHash>,
    /// Verified downloads whose pages may still be cached: (storage, offset, length), oldest first.
    written: VecDeque<(Arc<DiskTarget>, u64, u64)>,
    written_bytes: u64,
    /// Writes gathered between two other jobs (kept to reuse its memory).
    writes: Vec<WriteJob>,
    /// Blocks held in the running hashes, and buffers for more (`REORDER_BLOCKS` in all at most).
    held: usize,
    spare: Vec<BlockBuf>,
    pub stats: DiskStats,
}

impl Executor {
    /// Runs `jobs` in order, except that the writes between two other jobs are sorted by place, so runs
    /// of contiguous blocks go to the disk in one call each. Results are appended to `done`.
    pub fn run(&mut self, jobs: &mut Vec<Job>, done: &mut Vec<Done>) {
        let mut writes = std::mem::take(&mut self.writes);
        for job in jobs.drain(..) {
            match job {
                Job::Write(w) => writes.push(w),
                other => {
                    self.write_all(&mut writes, done);
                    self.run_one(other, done);
                }
            }
        }
        self.write_all(&mut writes, done);
        self.writes = writes;
    }

    fn run_one(&mut self, job: Job, done: &mut Vec<Done>) {
        match job {
            Job::Write(w) => {
                let mut writes = std::mem::take(&mut self.writes);
                writes.push(w);
                self.write_all(&mut writes, done);
                self.writes = writes;
            }
            Job::Verify { target, owner, piece, at, len, expected, purpose } => {
                let result = self.verify(&target, piece, at, len, &expected, purpose);
                done.push(Done::Verified { owner, key: target.key, piece, purpose, result });
            }
            Job::Read { target, owner, tag, block, at, mut buf } => {
                let len = (block.len as usize).min(buf.len());
                let result = target.reader().read(at, &mut buf[..len]);
                self.stats.read_calls += 1;
                self.stats.bytes_read += len as u64;
                done.push(Done::Read { owner, key: target.key, tag, block, buf, result });
            }
            Job::Forget { key } => {
                let (held, spare) = (&mut self.held, &mut self.spare);
                self.hashes.retain(|(k, _), r| {
                    if *k == key {
                        *held -= r.held.len();
                        spare.extend(r.held.drain(..).map(|h| h.buf));
                    }
                    *k != key
                });
                self.written.retain(|(t, _, _)| t.key != key);
                self.written_bytes = self.written.iter().map(|(_, _, len)| len).sum();
            }
        }
    }

    /// Writes `writes` sorted by place, each contiguous run of one torrent (at most `MAX_RUN_BLOCKS`) in
    /// one call; then feeds each block to its piece's running hash when it is the next in order. A run
    /// that fails reports the error on its first block and breaks its pieces' running hashes.
    fn write_all(&mut self, writes: &mut Vec<WriteJob>, done: &mut Vec<Done>) {
        if writes.is_empty() {
            return;
        }
        writes.sort_by_key(|w| (w.target.key, w.at));
        // Each run is written, then drained from the front: the next run starts at 0 again.
        let i = 0;
        while i < writes.len() {
            let key = writes[i].target.key;
            let mut end_at = writes[i].at;
            let mut j = i;
            while j < writes.len() && j - i < MAX_RUN_BLOCKS && writes[j].target.key == key && writes[j].at == end_at {
                end_at += u64::from(writes[j].block.len);
                j += 1;
            }
            let run = &writes[i..j];
            let mut parts: [&[u8]; MAX_RUN_BLOCKS] = [&[]; MAX_RUN_BLOCKS];
            for (part, w) in parts.iter_mut().zip(run) {
                *part = &w.buf[..w.block.len as usize];
            }
            let mut result = run[0].target.lock().write_run(run[0].at, &parts[..run.len()]);
            self.stats.write_calls += 1;
            self.stats.bytes_written += end_at - run[0].at;
            for w in &mut writes[i..j] {
                let entry = self.hashes.entry((key, w.block.piece)).or_insert_with(RunningHash::new);
                let data = &w.buf[..w.block.len as usize];
                if result.is_err() {
                    entry.next = BROKEN;
                    self.held -= entry.held.len();
                    self.spare.extend(entry.held.drain(..).map(|h| h.buf));
                } else if w.block.index() == entry.next {
                    entry.hasher.update(data);
                    entry.next += 1;
                    let target = &w.target;
                    let at = w.at - u64::from(w.block.offset);
                    catch_up(entry, &mut self.held, &mut self.spare, &mut self.stats, || target.lock(), at);
                } else if w.block.index() > entry.next && entry.next != BROKEN {
                    if self.held < REORDER_BLOCKS {
                        // The written buffer itself is held (no copy); the queue's pool gets a spare one
                        // of the same size in its place.
                        let spare = self.spare.pop().unwrap_or_else(|| vec![0; BLOCK_LEN as usize].into_boxed_slice());
                        let buf = std::mem::replace(&mut w.buf, spare);
                        entry.held.push(HeldBlock { index: w.block.index(), len: w.block.len, buf });
                        self.held += 1;
                    } else if w.block.len == BLOCK_LEN {
                        entry.mark_written(w.block.index()); // (a short last block waits for the verdict)
                    }
                }
            }
            for w in writes.drain(i..j) {
                let r = std::mem::replace(&mut result, Ok(()));
                done.push(Done::Written { owner: w.owner, key, buf: w.buf, result: r });
            }
        }
    }

    /// Finishes (or, for a confirmation or a check, computes) a piece's hash, reading back from disk what
    /// the running hash does not cover. A verified download starts its write-back and joins the
    /// drop-behind window.
    fn verify(
        &mut self,
        target: &Arc<DiskTarget>,
        piece: u32,
        at: u64,
        len: u32,
        expected: &[u8; 20],
        purpose: Purpose,
    ) -> Result<Option<VerifiedPiece>, StorageError> {
        let running = match purpose {
            Purpose::Download => self.hashes.remove(&(target.key, piece)),
            Purpose::Confirm | Purpose::Check => None,
        };
        let (hasher, next) = match running {
            Some(r) => {
                // Held blocks past a gap that never filled (one found no room) are read back with the rest.
                self.held -= r.held.len();
                self.spare.extend(r.held.into_iter().map(|h| h.buf));
                if self.hashes.is_empty() {
                    self.spare = Vec::new(); // nothing is downloading: give the memory back
                }
                (r.hasher, r.next)
            }
            None => (Sha1::new(), 0),
        };
        if next == BROKEN {
            return Ok(None);
        }
        let hashed = (u64::from(next) * u64::from(BLOCK_LEN)).min(u64::from(len));
        if purpose == Purpose::Download {
            self.stats.bytes_read_back += u64::from(len) - hashed;
        }
        let verdict = {
            // Data already on disk (a check, a confirmation) is read through the reading view, whose handles
            // serve peers next: a seed keeps one handle per file, not two.
            let mut storage = match purpose {
                Purpose::Download => target.lock(),
                Purpose::Confirm | Purpose::Check => target.reader(),
            };
            super::verify::finish_range(&mut storage, piece, at, u64::from(len), hasher, hashed, expected)?
        };
        self.stats.pieces_hashed += 1;
        if verdict.is_some() && purpose == Purpose::Download {
            self.drop_behind(target, at, u64::from(len));
        }
        Ok(verdict)
    }

    /// Early write-back and drop-behind: the piece's dirty pages are sent to the device now (the first
    /// `POSIX_FADV_DONTNEED` starts write-back and drops nothing dirty), and once `DROP_BEHIND_BYTES` of
    /// newer pieces came after it, its pages (clean by then) leave the page cache.
    fn drop_behind(&mut self, target: &Arc<DiskTarget>, at: u64, len: u64) {
        target.lock().advise_done_with(at, len);
        self.written.push_back((Arc::clone(target), at, len));
        self.written_bytes += len;
        while self.written_bytes > DROP_BEHIND_BYTES {
            let Some((old, at, len)) = self.written.pop_front() else {
                break;
            };
            self.written_bytes -= len;
            old.lock().advise_done_with(at, len);
        }
    }
}

/// The block before them is in: feeds `entry` the blocks that now follow in order, from its held copies,
/// or read back from the disk (`piece_at`: where its piece starts) for those written without room to
/// hold them, until one is missing. A read that fails leaves the rest to the verdict.
fn catch_up<'a>(
    entry: &mut RunningHash,
    held: &mut usize,
    spare: &mut Vec<BlockBuf>,
    stats: &mut DiskStats,
    storage: impl Fn() -> MutexGuard<'a, Storage>,
    piece_at: u64,
) {
    loop {
        let next = entry.next;
        if let Some(i) = entry.held.iter().position(|h| h.index == next) {
            let h = entry.held.swap_remove(i);
            entry.hasher.update(&h.buf[..h.len as usize]);
            *held -= 1;
            spare.push(h.buf);
        } else if entry.take_written(next) {
            let mut buf = spare.pop().unwrap_or_else(|| vec![0; BLOCK_LEN as usize].into_boxed_slice());
            let at = piece_at + u64::from(next) * u64::from(BLOCK_LEN);
            let ok = storage().read(at, &mut buf).is_ok();
            stats.bytes_read_back += u64::from(BLOCK_LEN);
            if ok {
                entry.hasher.update(&buf);
            }
            spare.push(buf);
            if !ok {
                return;
            }
        } else {
            return;
        }
        entry.next += 1;
    }
}

/// A running hash whose blocks could not be written.
const BROKEN: u32 = u32::MAX;
