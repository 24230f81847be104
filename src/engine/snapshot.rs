//! What the engine tells the outside: commands in, events and snapshots out.
//!
//! Owns: the plain data types of the engine's interface for front-ends (the terminal view today, the
//! daemon's RPC and the live view next): `Command`, `Event`, `Snapshot` of every torrent and peer, and a
//! torrent's `Outcome` at the end of a run.
//! Must not: format anything for people (that is `observe`), or hold references into the engine.

use std::net::SocketAddr;
use std::time::Duration;

use crate::metainfo::InfoHash;
use crate::peer::DropReason;
use crate::tracker::TrackerState;

use super::torrent::{CheckSummary, State};
use super::{ConnId, TorrentId};

/// Something a user (CLI signal, RPC client) asks of the engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    /// Close the torrent's peers, tell its trackers `stopped`; it can be resumed.
    Pause(TorrentId),
    /// Start a paused torrent again.
    Resume(TorrentId),
    /// Stop the torrent and forget it once its trackers were told.
    Remove(TorrentId),
    /// Seed until this ratio of uploaded to torrent size, then stop (`None`: seed on).
    SetSeedRatio(TorrentId, Option<f64>),
    /// Ask the trackers for peers now (each tracker's minimum interval allowing).
    Reannounce(TorrentId),
    /// Stop every torrent: the engine is finished once their trackers were told (or a grace period passed).
    Shutdown,
    /// A second shutdown request: stop waiting for trackers.
    ShutdownNow,
}

/// What a tracker said, for the news lines.
#[derive(Clone, Debug, PartialEq)]
pub enum TrackerNews {
    Announced { url: String, peers: usize, seeders: Option<u32>, leechers: Option<u32>, next: Option<Duration> },
    Warning { url: String, message: String },
    Error { url: String, message: String },
}

/// Something that happened, for the view and the log (one line each, at most).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The start-up check hashed `done` of `total` pieces.
    Checking {
        torrent: TorrentId,
        done: u32,
        total: u32,
    },
    /// The start-up check is over; the torrent is active.
    Checked {
        torrent: TorrentId,
        summary: CheckSummary,
        seeding: bool,
    },
    /// Stopped during the check: what was checked is in the resume file.
    CheckInterrupted {
        torrent: TorrentId,
        checked: u32,
        known: u32,
        pieces: u32,
    },
    Tracker {
        torrent: TorrentId,
        news: TrackerNews,
    },
    /// A piece trusted from the resume file no longer matched what is on disk.
    ConfirmFailed {
        torrent: TorrentId,
        piece: u32,
        refetch: bool,
    },
    /// A magnet's metadata arrived and passed its hash: the torrent now has a name, a size and files.
    MetadataReceived {
        torrent: TorrentId,
        name: String,
        size: u64,
        files: usize,
        peers: u32,
        elapsed: Duration,
    },
    /// Every wanted piece is verified.
    Completed {
        torrent: TorrentId,
    },
    /// The torrent stopped with an error; the others go on.
    Failed {
        torrent: TorrentId,
        error: String,
    },
    /// A web seed is not used any more, and why (said once per seed).
    WebSeedGaveUp {
        torrent: TorrentId,
        url: String,
        why: String,
    },
    /// A connection ended (what it had done, for traces and the simulation).
    PeerClosed {
        conn: ConnId,
        torrent: Option<TorrentId>,
        addr: SocketAddr,
        reason: DropReason,
        peer: PeerSnapshot,
    },
}

/// One torrent, as the status line and an RPC client see it.
#[derive(Clone, Debug, PartialEq)]
pub struct TorrentSnapshot {
    pub id: TorrentId,
    pub info_hash: InfoHash,
    pub name: String,
    pub state: State,
    /// Stopping (telling trackers), not yet stopped.
    pub stopping: bool,
    /// Bytes of wanted data verified, and wanted in all.
    pub done: u64,
    pub total: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub down_rate: f64,
    pub up_rate: f64,
    pub peers: usize,
    pub half_open: usize,
    pub seeding: bool,
    pub wasted: u64,
    pub hash_failures: u32,
    /// (pieces hashed, pieces to hash) while checking.
    pub check_progress: Option<(u32, u32)>,
    /// While fetching a magnet's metadata: (peers asked, pieces received, pieces), the last two once the
    /// size is known.
    pub metadata_progress: Option<(u32, Option<(u32, u32)>)>,
    pub error: Option<String>,
    /// DHT nodes known (process-wide) and peers the DHT gave this torrent; `None` when it does not use the
    /// DHT (private, or the DHT is off).
    pub dht: Option<(usize, u64)>,
    /// Connected peers that unchoke us, and that we unchoke.
    pub unchoking_us: usize,
    pub we_unchoke: usize,
    /// Each tracker, tier by tier (empty for a torrent without trackers).
    pub trackers: Vec<TrackerSnapshot>,
}

/// One tracker of a torrent, as a view shows it (times relative to the snapshot).
#[derive(Clone, Debug, PartialEq)]
pub struct TrackerSnapshot {
    pub url: String,
    /// 0-based tier (BEP 12).
    pub tier: usize,
    pub state: TrackerState,
    /// What its last answer said of the swarm, if it said.
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// How long ago it last answered an announce, and the peers that answer listed.
    pub last_announce_ago: Option<Duration>,
    pub peers: usize,
    /// Until it is asked next (only the tracker its tier asks next has one).
    pub next_announce_in: Option<Duration>,
    pub last_error: Option<String>,
}

/// One connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerSnapshot {
    pub torrent: Option<TorrentId>,
    pub addr: Option<SocketAddr>,
    pub peer_id: Option<[u8; 20]>,
    pub outgoing: bool,
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Requests we have outstanding at the peer, and how many of ours ever timed out.
    pub requests_active: u32,
    pub requests_timed_out: u64,
    pub snubbed: bool,
    pub cancels_sent: u64,
    /// How the stream is carried: plain, MSE then plaintext, or RC4.
    pub encryption: PeerEncryption,
    /// Over uTP (else TCP).
    pub utp: bool,
    /// The smoothed request round trip, once a request was answered.
    pub rtt: Option<Duration>,
    /// The pipeline's target depth (requests it keeps in flight).
    pub depth: u32,
    /// How long since the peer last sent a block (`None`: never).
    pub last_block_ago: Option<Duration>,
    /// This peer's part of its torrent's downloaded bytes, 0 to 1.
    pub share: f64,
    /// How much of the torrent the peer says it has (its bitfield and haves), 0 to 1.
    pub progress: f64,
}

/// A connection's encryption, for views and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerEncryption {
    #[default]
    Plain,
    /// An MSE handshake that selected plaintext.
    MsePlain,
    Rc4,
}

/// Every torrent and peer at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub torrents: Vec<TorrentSnapshot>,
    pub peers: Vec<PeerSnapshot>,
}

/// How a torrent's run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub id: TorrentId,
    pub name: String,
    pub complete: bool,
    pub interrupted: bool,
    pub elapsed: Duration,
    /// Verified bytes of what was wanted, and all that was wanted.
    pub have_bytes: u64,
    pub wanted_bytes: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes received but not needed (endgame duplicates, failed pieces).
    pub wasted: u64,
    pub hash_failures: u32,
    pub peers_used: usize,
    /// Never got past the check (a signal during it, or an error).
    pub checked_only: bool,
    pub error: Option<String>,
}
