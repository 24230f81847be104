//! The engine's side of the disk queue: jobs out to the driver's executor, results back into the
//! torrents and sessions.
//!
//! Owns: routing each result (`Done`) to its torrent (by the engine's number and the storage's key, so a
//! result for a torrent that is gone is dropped), giving buffers back to the pool, resuming connections
//! that waited for pool room, and failing a torrent whose disk failed.
//! Must not: touch files or threads; the driver runs the jobs (`storage::worker` under the event loop,
//! `storage::disk::Executor` in place under the simulation).

use super::{conn, torrent, Engine, TorrentId};
use crate::peer::session::PeerSession;
use crate::storage::disk::{DiskStats, Done, Job, Purpose, POOL_BLOCKS};

/// How long the driver's turns take, and what the disk did (for the trace and the statistics).
#[derive(Default)]
pub struct TurnStats {
    pub longest: std::time::Duration,
    longest_recent: std::time::Duration,
    count: u64,
    count_at_sample: u64,
    pub disk: DiskStats,
}
use crate::swarm::PeerNo;
use crate::time::Timestamp;

/// Connections waiting for pool room are read again once this many buffers are free.
const RESUME_ROOM: usize = POOL_BLOCKS / 8;

/// How a read job names its peer: the connection's slot and (the low bits of) its number, so a result
/// for a connection that closed and whose slot was reused is recognised.
pub(super) fn read_tag(slot: usize, no: PeerNo) -> u64 {
    (no.0 << 32) | (slot as u64 & 0xffff_ffff)
}

fn split_tag(tag: u64) -> (usize, u64) {
    ((tag & 0xffff_ffff) as usize, tag >> 32)
}

impl Engine {
    /// The next disk job for the driver to run. Each comes back through `handle_disk_done`.
    pub fn poll_disk_job(&mut self) -> Option<Job> {
        self.disk.poll_job()
    }

    /// Disk jobs queued or running: the driver lets them finish before the run ends.
    pub fn disk_pending(&self) -> usize {
        self.disk.pending()
    }

    /// A disk job finished.
    pub fn handle_disk_done(&mut self, done: Done, now: Timestamp) {
        self.disk.on_done(&done);
        match done {
            Done::Written { owner, key, buf, result } => {
                self.disk.give_back(buf);
                if let (Err(e), true) = (result, self.owns(owner, key)) {
                    self.fail_torrent(TorrentId(owner), torrent::TorrentError::Storage(e), now);
                }
            }
            Done::Verified { owner, key, piece, purpose, result } => {
                if !self.owns(owner, key) {
                    return;
                }
                let verdict = match result {
                    Ok(verdict) => verdict,
                    Err(e) => {
                        self.fail_torrent(TorrentId(owner), torrent::TorrentError::Storage(e), now);
                        return;
                    }
                };
                let t = &mut self.torrents[owner];
                match purpose {
                    Purpose::Check => {
                        t.on_check_verdict(piece, verdict);
                        self.check_progressed = true;
                    }
                    Purpose::Confirm => {
                        if let Some(data) = t.data.as_mut() {
                            data.on_confirm_verdict(piece, verdict);
                        }
                    }
                    Purpose::Download => {
                        if let Some(data) = t.data.as_mut() {
                            data.on_verdict(piece, verdict);
                        }
                    }
                }
            }
            Done::Read { owner, key, tag, block, buf, result } => {
                self.on_read_done(owner, key, tag, &block, &buf, result, now);
                self.disk.give_back(buf);
                // Peers that had requests queued while the pool's read share was taken get their turn.
                for slot in std::mem::take(&mut self.read_waiting) {
                    if let Some(c) = self.conns.get_mut(slot) {
                        c.read_waiting = false;
                        self.mark_transmit(slot);
                    }
                }
            }
        }
        self.resume_disk_waiting();
    }

    #[allow(clippy::too_many_arguments)]
    fn on_read_done(
        &mut self,
        owner: usize,
        key: u64,
        tag: u64,
        block: &crate::geometry::BlockRef,
        buf: &[u8],
        result: Result<(), crate::storage::StorageError>,
        now: Timestamp,
    ) {
        let (slot, no) = split_tag(tag);
        let owned = self.owns(owner, key);
        let live = |c: &conn::PeerConn| c.no.0 & 0xffff_ffff == no && c.torrent == Some(TorrentId(owner));
        let conn = self.conns.get_mut(slot).filter(|c| live(c));
        let session: Option<&mut PeerSession> = conn.and_then(|c| c.session.as_mut());
        match (result, session) {
            (Ok(()), Some(session)) if owned => {
                if let Some(data) = self.torrents[owner].data.as_mut() {
                    data.on_read(session, block, &buf[..block.len as usize]);
                }
                self.conns[slot].last_payload = Some(now);
                self.mark_transmit(slot);
            }
            (Ok(()), Some(session)) => session.read_failed(),
            (Ok(()), None) => {}
            (Err(e), session) => {
                if let Some(session) = session {
                    session.read_failed();
                }
                if owned {
                    self.fail_torrent(TorrentId(owner), torrent::TorrentError::Storage(e), now);
                }
            }
        }
    }

    /// The driver's measure of its last turn (from the end of its wait to the end of the turn).
    pub fn handle_turn_took(&mut self, took: std::time::Duration) {
        self.turns.longest = self.turns.longest.max(took);
        self.turns.longest_recent = self.turns.longest_recent.max(took);
        self.turns.count += 1;
    }

    /// What the disk executor has done so far.
    pub fn handle_disk_stats(&mut self, stats: DiskStats) {
        self.turns.disk = stats;
    }

    /// The loop and disk figures for this second (the trace's `loop` event); starts the next second.
    pub(super) fn take_loop_sample(&mut self) -> super::trace::TraceKind {
        let t = &mut self.turns;
        let sample = super::trace::TraceKind::Loop {
            turns: t.count - t.count_at_sample,
            longest_turn_us: t.longest_recent.as_micros() as u64,
            disk_pending: self.disk.pending() as u32,
            write_calls: t.disk.write_calls,
            bytes_written: t.disk.bytes_written,
            read_calls: t.disk.read_calls,
            pieces_hashed: t.disk.pieces_hashed,
            bytes_read_back: t.disk.bytes_read_back,
        };
        t.count_at_sample = t.count;
        t.longest_recent = std::time::Duration::ZERO;
        sample
    }

    /// Whether torrent `owner` is still the one whose storage has key `key`.
    fn owns(&self, owner: usize, key: u64) -> bool {
        self.torrents.get(owner).and_then(|t| t.data.as_ref()).is_some_and(|d| d.disk.key == key)
    }

    fn resume_disk_waiting(&mut self) {
        if self.disk_waiting.is_empty() || self.disk.room() < RESUME_ROOM {
            return;
        }
        for slot in std::mem::take(&mut self.disk_waiting) {
            if let Some(c) = self.conns.get_mut(slot) {
                c.disk_waiting = false;
                self.queue_backlog(slot);
            }
        }
    }
}

/// Blocks one read into `conn`'s buffer can bring: the pool must have this many free before it is read.
pub(super) fn blocks_per_fill(conn: &conn::PeerConn) -> usize {
    conn.read.max_capacity() / crate::geometry::BLOCK_LEN as usize + 1
}
