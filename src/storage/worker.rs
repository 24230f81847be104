//! The disk helper threads: run the disk queue's jobs beside the event loop.
//!
//! Owns: two threads and their lanes — `rill-disk` (writes, piece verdicts with their read-backs, checks)
//! and `rill-disk-read` (reads that serve peers) — the hand-over of jobs and results (queues under a
//! mutex per lane, held only to move them, so neither side waits on the other's I/O), and the wake-up of
//! the loop when results are ready.
//! Why this shape: the writes and verdicts of a torrent must run in order (a piece's writes before its
//! verdict), and an SD card or USB stick gains nothing from parallel writes, so one thread writes and
//! hashes — beside the loop, which is what a two-core device has room for (on one core it is still one
//! thread, and the loop never waits). Reads for uploads are only of verified pieces, so they need no
//! order against writes; on their own thread (and their own file handles) a peer's request is answered
//! while a write is stalled on the device.
//! Must not: decide anything; it carries out what the engine queued (`disk::Executor`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::disk::{DiskStats, Done, Executor, Job};

/// The most jobs the thread takes at once (writes among them are coalesced).
const BATCH: usize = 128;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    done: Vec<Done>,
    stats: DiskStats,
    closed: bool,
    /// The thread is waiting for jobs: only then does a submit wake it (a notify is a syscall whether or
    /// not anyone waits, and the loop submits every turn).
    idle: bool,
}

/// One thread's queue.
struct Lane {
    state: Mutex<State>,
    work: Condvar,
}

impl Lane {
    fn new() -> Arc<Self> {
        Arc::new(Lane { state: Mutex::new(State::default()), work: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct DiskWorker {
    writer: Arc<Lane>,
    reader: Arc<Lane>,
    threads: Vec<JoinHandle<()>>,
}

impl DiskWorker {
    /// Starts the threads. `wake` is called (from them) when results are waiting and none were before.
    pub fn start(wake: Box<dyn Fn() + Send + Sync>) -> std::io::Result<Self> {
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::from(wake);
        let (writer, reader) = (Lane::new(), Lane::new());
        let mut threads = Vec::new();
        for (name, lane) in [("rill-disk", &writer), ("rill-disk-read", &reader)] {
            let (lane, wake) = (Arc::clone(lane), Arc::clone(&wake));
            threads.push(std::thread::Builder::new().name(name.into()).spawn(move || work(&lane, &*wake))?);
        }
        Ok(DiskWorker { writer, reader, threads })
    }

    /// Hands jobs to the threads: reads for peers to the reader, the rest to the writer, in order.
    pub fn submit(&self, jobs: impl Iterator<Item = Job>) {
        let (mut w, mut r) = (self.writer.lock(), self.reader.lock());
        let (w0, r0) = (w.jobs.len(), r.jobs.len());
        for job in jobs {
            if job.is_read() {
                r.jobs.push_back(job);
            } else {
                w.jobs.push_back(job);
            }
        }
        // One notify per wait: `idle` is cleared here, not only when the thread wakes, so the loop's later
        // submits in the same turn (it submits after every event) do not notify again.
        if w.jobs.len() > w0 && std::mem::take(&mut w.idle) {
            self.writer.work.notify_one();
        }
        if r.jobs.len() > r0 && std::mem::take(&mut r.idle) {
            self.reader.work.notify_one();
        }
    }

    /// Moves the results that are ready into `out`.
    pub fn collect(&self, out: &mut Vec<Done>) {
        out.append(&mut self.reader.lock().done);
        out.append(&mut self.writer.lock().done);
    }

    /// What the threads have done so far.
    pub fn stats(&self) -> DiskStats {
        let mut stats = self.writer.lock().stats;
        let read = self.reader.lock().stats;
        stats.read_calls += read.read_calls;
        stats.bytes_read += read.bytes_read;
        stats
    }

    /// Lets the threads finish the jobs they have, waits for them, and returns every result not yet
    /// collected, and the final figures.
    pub fn finish(mut self) -> (Vec<Done>, DiskStats) {
        self.close();
        let mut out = Vec::new();
        self.collect(&mut out);
        (out, self.stats())
    }

    fn close(&mut self) {
        for lane in [&self.writer, &self.reader] {
            lane.lock().closed = true;
            lane.work.notify_one();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for DiskWorker {
    fn drop(&mut self) {
        self.close();
    }
}

fn work(lane: &Lane, wake: &dyn Fn()) {
    let mut executor = Executor::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut done = Vec::with_capacity(BATCH);
    loop {
        {
            let mut state = lane.lock();
            while state.jobs.is_empty() && !state.closed {
                state.idle = true;
                state = lane.work.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
                state.idle = false;
            }
            if state.jobs.is_empty() {
                return;
            }
            let n = state.jobs.len().min(BATCH);
            batch.extend(state.jobs.drain(..n));
        }
        executor.run(&mut batch, &mut done);
        let was_empty = {
            let mut state = lane.lock();
            let was_empty = state.done.is_empty();
            state.done.append(&mut done);
            state.stats = executor.stats;
            was_empty
        };
        if was_empty {
            wake();
        }
    }
}
