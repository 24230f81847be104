//! The `rill-disk` helper thread: runs the disk queue's jobs beside the event loop.
//!
//! Owns: the thread, the hand-over of jobs and results (two queues under one mutex, held only to swap
//! them, so neither side waits on the other's I/O), and the wake-up of the loop when results are ready.
//! One thread, not a pool: the jobs of a torrent must run in order (a piece's writes before its verdict),
//! an SD card or USB stick gains nothing from parallel writes, and one thread hashing beside the loop is
//! what a two-core device has room for; on one core it is still one thread, and the loop never waits.
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
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub struct DiskWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DiskWorker {
    /// Starts the thread. `wake` is called (from it) when results are waiting and none were before.
    pub fn start(wake: Box<dyn Fn() + Send>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), work: Condvar::new() });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("rill-disk".into()).spawn(move || work(&theirs, &*wake))?;
        Ok(DiskWorker { shared, thread: Some(thread) })
    }

    /// Hands jobs to the thread.
    pub fn submit(&self, jobs: impl Iterator<Item = Job>) {
        let mut state = self.shared.lock();
        let before = state.jobs.len();
        state.jobs.extend(jobs);
        if state.jobs.len() > before {
            self.shared.work.notify_one();
        }
    }

    /// Moves the results that are ready into `out`.
    pub fn collect(&self, out: &mut Vec<Done>) {
        let mut state = self.shared.lock();
        out.append(&mut state.done);
    }

    /// What the thread has done so far.
    pub fn stats(&self) -> DiskStats {
        self.shared.lock().stats
    }

    /// Lets the thread finish the jobs it has, waits for it, and returns every result not yet collected.
    pub fn finish(mut self) -> Vec<Done> {
        self.close();
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DiskWorker {
    fn drop(&mut self) {
        self.close();
    }
}

fn work(shared: &Shared, wake: &dyn Fn()) {
    let mut executor = Executor::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut done = Vec::with_capacity(BATCH);
    loop {
        {
            let mut state = shared.lock();
            while state.jobs.is_empty() && !state.closed {
                state = shared.work.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.jobs.is_empty() {
                return;
            }
            let n = state.jobs.len().min(BATCH);
            batch.extend(state.jobs.drain(..n));
        }
        executor.run(&mut batch, &mut done);
        let was_empty = {
            let mut state = shared.lock();
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
