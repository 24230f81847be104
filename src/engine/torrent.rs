//! One torrent inside the engine: its lifecycle and its policy.
//!
//! Owns: the lifecycle `AwaitingMetadata → Checking → Active → Paused/Stopped`, the per-torrent parts
//! that exist from the start (trackers, candidates, choker, bans, options) and those built at the
//! transition into `Checking` (geometry, swarm, storage: the data plane in [`crate::torrent::Torrent`]),
//! the incremental data check, completion, seed ratio, rates and totals for the snapshot.
//! Must not: touch connections (the engine owns them and asks this module for decisions), sockets or
//! the clock.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::metainfo::{InfoHash, Metainfo};
use crate::peer::session::TorrentContext;
use crate::rng::{Entropy, Rng};
use crate::storage::disk::{DiskQueue, Purpose};
use crate::storage::{verify, Storage, StorageError};
use crate::swarm::candidates::Candidates;
use crate::swarm::choker::Choker;
use crate::swarm::throttle::TokenBucket;
use crate::swarm::Swarm;
use crate::time::Timestamp;
use crate::timer_wheel::TimerId;
use crate::torrent::Torrent;
use crate::tracker::{ClientIdentity, Trackers, Transfer};
use crate::verdict::VerifiedPiece;
use crate::wire::FrameLimits;

use super::TorrentId;

/// Where a torrent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Known by info-hash only (a magnet link): no geometry, no storage yet.
    AwaitingMetadata,
    /// Waiting for its turn to check, or hashing what is on disk (one torrent checks at a time).
    Checking,
    /// Downloading or seeding.
    Active,
    /// Stopped by a command; can be resumed.
    Paused,
    /// Finished for this run: complete (and not seeding), failed, or shut down.
    Stopped,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::AwaitingMetadata => "metadata",
            State::Checking => "checking",
            State::Active => "active",
            State::Paused => "paused",
            State::Stopped => "stopped",
        }
    }
}

/// What to do with a torrent: fetch it, or seed what is on disk.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Fetch the wanted files (`None`: all); keep seeding once complete or stop.
    Download { wanted_files: Option<Vec<bool>>, sequential: bool, keep_seeding: bool },
    /// Seed what the check finds; refuse missing pieces unless `partial`.
    Seed { partial: bool },
}

/// Where a torrent comes from.
pub enum Source {
    /// A `.torrent` file: its metainfo and, to serve it to magnet users, the raw info dictionary.
    Metainfo { meta: Box<Metainfo>, info: Option<Vec<u8>> },
    /// A magnet link: only the info-hash; the metadata is fetched from peers.
    Magnet(crate::magnet::Magnet),
}

/// How one torrent is to be run.
#[derive(Clone, Debug)]
pub struct TorrentOptions {
    /// The torrent's files go under this directory.
    pub dir: PathBuf,
    pub mode: Mode,
    /// Hash everything at start instead of trusting the resume file.
    pub recheck: bool,
    /// When seeding, stop once uploaded / total reaches this.
    pub seed_ratio: Option<f64>,
    /// Bytes uploaded in earlier runs (a daemon keeps the count): they count toward `seed_ratio`.
    pub uploaded_before: u64,
    /// Peers to dial besides those the trackers give.
    pub extra_peers: Vec<SocketAddr>,
    /// Write the metainfo here once a magnet's metadata arrives (`--save-torrent`).
    pub save_torrent: Option<PathBuf>,
    /// Find peers through the DHT and announce there (never for a private torrent; only when the engine
    /// runs a DHT node).
    pub dht: bool,
}

impl TorrentOptions {
    pub fn keep_seeding(&self) -> bool {
        match self.mode {
            Mode::Download { keep_seeding, .. } => keep_seeding,
            Mode::Seed { .. } => true,
        }
    }
}

/// The start-up check, done a bounded amount per engine turn.
/// How much of the start-up check is queued for hashing at once.
pub const CHECK_IN_FLIGHT_BYTES: u64 = 8 * 1024 * 1024;

pub struct Check {
    plan: verify::RestorePlan,
    have: Bitfield,
    /// Index into `plan.to_check` of the next piece to queue for hashing.
    queued: usize,
    /// Verdicts received so far, and bytes queued and not yet judged.
    next: usize,
    in_flight: u64,
    /// The storage was opened and the plan made (the first step of a check).
    pub started: bool,
}

impl Check {
    pub fn progress(&self) -> (u32, u32) {
        (self.next as u32, self.plan.to_check.len() as u32)
    }
}

/// What the check found, for the line the user sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckSummary {
    pub pieces: u32,
    /// Pieces hashed and found right, plus pieces the resume file vouches for.
    pub present: u32,
    pub trusted: u32,
    pub checked: u32,
}

/// Why a torrent stopped with an error.
#[derive(Debug)]
pub enum TorrentError {
    Storage(StorageError),
    /// The info dictionary peers sent hashes right but is not a usable torrent.
    Metadata(crate::metainfo::MetainfoError),
    /// A magnet's files, now known, would use a path another torrent in the same directory uses.
    Overlap {
        path: PathBuf,
        other: String,
    },
    /// The fetched metainfo could not be written where `--save-torrent` said.
    SaveTorrent {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `rill seed` without `--partial`, and pieces are missing.
    Missing {
        root: PathBuf,
        missing: u32,
        pieces: u32,
    },
}

impl std::fmt::Display for TorrentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TorrentError::Storage(e) => write!(f, "{e}"),
            TorrentError::Metadata(e) => write!(f, "the metadata peers sent: {e}"),
            TorrentError::Overlap { path, other } => {
                write!(f, "{} is used by {other} too; not downloading this torrent there", path.display())
            }
            TorrentError::SaveTorrent { path, error } => write!(f, "cannot write {}: {error}", path.display()),
            TorrentError::Missing { root, missing, pieces } => write!(
                f,
                "{}: {missing} of {pieces} pieces are missing or damaged; use --partial to seed what is there",
                root.display()
            ),
        }
    }
}

pub struct TorrentCore {
    pub id: TorrentId,
    pub info_hash: InfoHash,
    pub name: String,
    pub state: State,
    /// The metainfo, until the check has opened the storage (then only the data plane keeps what it needs).
    meta: Option<Box<Metainfo>>,
    /// Geometry, swarm, storage: built at the transition into `Checking`.
    pub data: Option<Torrent>,
    /// The raw info dictionary (served to magnet users), when known as bytes.
    pub info_bytes: Option<Vec<u8>>,
    /// While the metadata is fetched (a magnet link), and until its sessions are upgraded at activation.
    pub phase: Option<Box<super::magnet::MetadataPhase>>,
    pub check: Option<Check>,
    pub trackers: Trackers,
    /// The tracker tiers (the metainfo's, or the user's edit), normalized, to start the trackers again after
    /// a pause.
    tiers: Vec<Vec<String>>,
    pub tracker_timer: Option<(TimerId, Timestamp)>,
    /// This torrent's own rate limits (the daemon's `torrent-set`), on top of the engine's: both must allow
    /// a read or a served block.
    pub up_bucket: Option<TokenBucket>,
    pub down_bucket: Option<TokenBucket>,
    pub candidates: Candidates,
    pub choker: Choker,
    /// Peer ids never to talk to again (they sent data that failed verification).
    pub banned_ids: Vec<[u8; 20]>,
    pub opts: TorrentOptions,
    pub completed_announced: bool,
    /// Peers that ever sent us payload.
    pub peers_used: PeersUsed,
    pub down_rate: f64,
    pub up_rate: f64,
    last_downloaded: u64,
    last_uploaded: u64,
    /// Bytes verified since the resume file was last written.
    pub unsaved_bytes: u64,
    pub error: Option<TorrentError>,
    /// `stopped` announces are running (or done); no new peers.
    pub stopping: bool,
    pub stop_deadline: Option<Timestamp>,
    /// Stopped by a signal or command before it was done.
    pub interrupted: bool,
    pub summary: Option<CheckSummary>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Its DHT lookups.
    pub dht: super::dht::TorrentDht,
    /// Its web seeds (BEP 19).
    pub webseeds: super::webseed::WebSeeds,
}

/// Distinct peers that sent us payload, for the closing summary. Bounded: beyond `PeersUsed::MAX_KEPT`
/// addresses (a long download from a big swarm), further connections are counted, not remembered.
#[derive(Debug, Default)]
pub struct PeersUsed {
    seen: HashSet<SocketAddr>,
    beyond: usize,
}

impl PeersUsed {
    pub const MAX_KEPT: usize = 4096;

    /// A connection's first payload (called once per connection, not per block).
    pub fn note(&mut self, addr: SocketAddr) {
        if self.seen.contains(&addr) {
            return;
        }
        if self.seen.len() < Self::MAX_KEPT {
            self.seen.insert(addr);
        } else {
            self.beyond += 1;
        }
    }

    pub fn count(&self) -> usize {
        self.seen.len() + self.beyond
    }
}

impl TorrentCore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: TorrentId,
        meta: Metainfo,
        opts: TorrentOptions,
        peer_id: [u8; 20],
        listen_port: Option<u16>,
        entropy: &mut Entropy,
        rng: &mut Rng,
        now: Timestamp,
    ) -> Self {
        let identity = ClientIdentity {
            info_hash: meta.info_hash,
            peer_id,
            port: listen_port.unwrap_or(0),
            key: entropy.next_u32(),
            numwant: 80,
        };
        let trackers = Trackers::new(&meta.trackers, identity, entropy.fork(), rng, now)
            .with_txn_namespace((id.0 % (1 << crate::tracker::TXN_NAMESPACE_BITS)) as u16);
        let mut candidates = Candidates::new();
        if let Some(port) = listen_port {
            candidates.set_own_addresses(vec![
                SocketAddr::from(([127, 0, 0, 1], port)),
                SocketAddr::from(([0, 0, 0, 0], port)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            ]);
        }
        for addr in &opts.extra_peers {
            candidates.add(*addr);
        }
        let tiers = crate::tracker::normalize_tiers(&meta.trackers);
        TorrentCore {
            id,
            info_hash: meta.info_hash,
            name: meta.name.clone(),
            state: State::Checking,
            meta: Some(Box::new(meta)),
            data: None,
            info_bytes: None,
            phase: None,
            check: None,
            trackers,
            tiers,
            tracker_timer: None,
            up_bucket: None,
            down_bucket: None,
            candidates,
            choker: Choker::new(4),
            banned_ids: Vec::new(),
            opts,
            completed_announced: false,
            peers_used: PeersUsed::default(),
            down_rate: 0.0,
            up_rate: 0.0,
            last_downloaded: 0,
            last_uploaded: 0,
            unsaved_bytes: 0,
            error: None,
            stopping: false,
            stop_deadline: None,
            interrupted: false,
            summary: None,
            started_at: now,
            finished_at: None,
            dht: Default::default(),
            webseeds: Default::default(),
        }
    }

    /// A torrent known only by a magnet link: it announces and dials at once, and fetches its metadata.
    #[allow(clippy::too_many_arguments)]
    pub fn new_magnet(
        id: TorrentId,
        magnet: &crate::magnet::Magnet,
        opts: TorrentOptions,
        peer_id: [u8; 20],
        listen_port: Option<u16>,
        entropy: &mut Entropy,
        rng: &mut Rng,
        now: Timestamp,
    ) -> Self {
        // A placeholder metainfo carries the identity and the trackers until the real one arrives.
        let placeholder = Metainfo {
            info_hash: magnet.info_hash,
            name: magnet.name.clone().unwrap_or_else(|| magnet.info_hash.to_string()),
            piece_length: 16 * 1024,
            piece_hashes: Vec::new(),
            total_length: 0,
            files: Vec::new(),
            trackers: magnet.trackers.clone(),
            private: false,
            comment: None,
            created_by: None,
            web_seeds: Vec::new(),
            mapped: Default::default(),
        };
        let mut core = TorrentCore::new(id, placeholder, opts, peer_id, listen_port, entropy, rng, now);
        core.meta = None;
        core.state = State::AwaitingMetadata;
        let dht_port = if core.opts.dht { listen_port } else { None };
        core.phase =
            Some(Box::new(super::magnet::MetadataPhase::new(magnet.info_hash, peer_id, listen_port, dht_port, now)));
        for hint in &magnet.peers {
            match hint {
                crate::magnet::PeerHint::Addr(addr) => {
                    core.candidates.add(*addr);
                }
                crate::magnet::PeerHint::Host(host, port) => {
                    log::info!("{}: x.pe {host}:{port}: host names are not resolved for peers", core.name);
                }
            }
        }
        core
    }

    /// The context and swarm sessions of this torrent run against: the real ones once the check built
    /// them, the metadata phase's before.
    pub fn session_parts(&mut self) -> Option<(&TorrentContext, &mut Swarm)> {
        match (self.data.as_mut(), self.phase.as_deref_mut()) {
            (Some(d), _) => Some((&d.ctx, &mut d.swarm)),
            (None, Some(p)) => Some((&p.ctx, &mut p.swarm)),
            (None, None) => None,
        }
    }

    /// The relative paths this torrent's files use under its directory (from the metainfo before the check,
    /// from storage after).
    pub fn paths(&self) -> Vec<&std::path::Path> {
        match (&self.meta, &self.data) {
            (Some(meta), _) => meta.files.iter().filter(|f| !f.padding).map(|f| f.path.as_path()).collect(),
            (None, Some(data)) => data.files.iter().filter(|f| !f.3).map(|f| f.0.as_path()).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// The metadata is here and verified: builds the metainfo, keeps it beside the resume file (and where
    /// `--save-torrent` says), and moves on to `Checking`. Returns (size, files) of the torrent.
    pub fn complete_metadata(&mut self) -> Result<(u64, usize), TorrentError> {
        let Some(info) = self.phase.as_mut().and_then(|p| p.info.take()) else {
            return Err(TorrentError::Metadata(crate::metainfo::MetainfoError::NotBencode(
                crate::bencode::BencodeError::UnexpectedEnd { at: 0 },
            )));
        };
        let bytes = super::magnet::torrent_bytes(&info, &self.tiers);
        let meta = Metainfo::from_bytes(&bytes).map_err(TorrentError::Metadata)?;
        let saved = self.opts.dir.join(crate::storage::resume::metadata_file_name(&self.info_hash.0));
        if let Err(e) = crate::storage::files::write_atomically(&saved, &bytes) {
            // Not fatal: the next start fetches the metadata again.
            log::info!("{}: cannot keep the metadata in {}: {e}", meta.name, saved.display());
        }
        if let Some(path) = &self.opts.save_torrent {
            crate::storage::files::write_atomically(path, &bytes)
                .map_err(|error| TorrentError::SaveTorrent { path: path.clone(), error })?;
        }
        let facts = (meta.total_length, meta.files.iter().filter(|f| !f.padding).count());
        self.name = meta.name.clone();
        self.meta = Some(Box::new(meta));
        self.info_bytes = Some(info);
        self.state = State::Checking;
        Ok(facts)
    }

    /// Fresh tracker machines after a pause (the old ones said `stopped`).
    pub fn restart_trackers(&mut self, entropy: &mut Entropy, rng: &mut Rng, now: Timestamp) {
        let identity = self.trackers.identity().clone();
        self.trackers = Trackers::new(&self.tiers, identity, entropy.fork(), rng, now)
            .with_txn_namespace((self.id.0 % (1 << crate::tracker::TXN_NAMESPACE_BITS)) as u16);
        self.tracker_timer = None;
    }

    /// A user's edit of the tracker list: the running trackers take it (see `Trackers::set_tiers`), and so
    /// do the trackers of a later resume and the metainfo saved for a magnet.
    pub fn set_tracker_tiers(&mut self, tiers: &[Vec<String>], now: Timestamp) {
        self.tiers = crate::tracker::normalize_tiers(tiers);
        self.trackers.set_tiers(&self.tiers, now);
    }

    /// The tracker tiers in use (normalized).
    pub fn tiers(&self) -> &[Vec<String>] {
        &self.tiers
    }

    /// Every tracker URL with its tier (0-based), in tier order: the list as given (normalized), not in the
    /// order each tier tries them, so a front-end's numbering of trackers holds while they answer.
    pub fn tracker_urls(&self) -> Vec<(usize, String)> {
        self.tiers.iter().enumerate().flat_map(|(tier, urls)| urls.iter().map(move |u| (tier, u.clone()))).collect()
    }

    pub fn set_upload_slots(&mut self, slots: usize) {
        self.choker = Choker::new(slots);
    }

    pub fn swarm(&self) -> Option<&Swarm> {
        self.data.as_ref().map(|t| &t.swarm)
    }

    pub fn ctx(&self) -> Option<&TorrentContext> {
        self.data.as_ref().map(|t| &t.ctx)
    }

    /// Downloading or seeding.
    pub fn is_active(&self) -> bool {
        self.state == State::Active && !self.stopping
    }

    /// Accepting and dialling peers: active, or fetching its metadata.
    pub fn accepts_peers(&self) -> bool {
        matches!(self.state, State::Active | State::AwaitingMetadata) && !self.stopping
    }

    /// Asks the DHT for peers: accepting peers, DHT on, and not private (BEP 27).
    pub fn uses_dht(&self) -> bool {
        self.opts.dht && !self.is_private() && self.accepts_peers()
    }

    /// A private torrent (BEP 27): its trackers only.
    pub fn is_private(&self) -> bool {
        match (&self.data, &self.meta) {
            (Some(d), _) => d.ctx.private,
            (None, Some(m)) => m.private,
            (None, None) => false,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.swarm().is_some_and(Swarm::is_complete)
    }

    pub fn is_seed(&self) -> bool {
        self.swarm().is_some_and(Swarm::is_seed)
    }

    pub fn transfer(&self) -> Transfer {
        match self.swarm() {
            Some(s) => {
                Transfer { uploaded: s.totals.uploaded, downloaded: s.totals.downloaded, left: s.left_vouched() }
            }
            // The size is unknown before the metadata: not 0, which trackers count as a seed.
            None => Transfer { uploaded: 0, downloaded: 0, left: 1 },
        }
    }

    /// Done with this run: stopped, and its trackers told (or given up on).
    pub fn is_finished(&self, now: Timestamp) -> bool {
        match self.state {
            State::Stopped | State::Paused => {
                !self.stopping || self.trackers.is_stopped() || self.stop_deadline.is_some_and(|d| now >= d)
            }
            _ => false,
        }
    }

    /// Opens the storage and plans the check (the first step of `Checking`). An error fails the torrent.
    pub fn start_check(&mut self, listen_port: Option<u16>, peer_id: [u8; 20]) -> Result<(), TorrentError> {
        let Some(meta) = self.meta.as_deref() else {
            return Ok(());
        };
        let geometry = Geometry::new(meta.piece_length, meta.total_length);
        let wanted_file = |i: usize| match &self.opts.mode {
            Mode::Download { wanted_files: Some(w), .. } => w.get(i).copied().unwrap_or(false),
            Mode::Download { wanted_files: None, .. } => true,
            Mode::Seed { .. } => false,
        };
        let mut storage = Storage::open(&self.opts.dir, meta, wanted_file).map_err(TorrentError::Storage)?;
        self.webseeds.set_layout(meta);
        let resume = if self.opts.recheck {
            None
        } else {
            storage.load_resume(&meta.info_hash.0, geometry.piece_count()).map_err(TorrentError::Storage)?
        };
        let plan = verify::plan_restore(&storage, &geometry, resume.as_ref(), self.opts.recheck);
        let n = geometry.piece_count();
        let ctx = TorrentContext {
            info_hash: meta.info_hash,
            our_peer_id: peer_id,
            geometry,
            limits: FrameLimits::for_torrent(n),
            listen_port,
            metadata_size: self.info_bytes.as_ref().and_then(|b| u32::try_from(b.len()).ok()),
            private: meta.private,
            dht_port: if self.opts.dht && !meta.private { listen_port } else { None },
            awaiting_metadata: false,
        };
        // An empty swarm until the check is done: nothing is had or wanted yet.
        let swarm = Swarm::new(geometry, Bitfield::new(n), Bitfield::new(n), false);
        let mut data = Torrent::new(ctx, swarm, storage, meta.piece_hashes.clone());
        data.info = self.info_bytes.clone();
        self.data = Some(data);
        self.check = Some(Check { plan, have: Bitfield::new(n), queued: 0, next: 0, in_flight: 0, started: true });
        Ok(())
    }

    /// Queues the check's hashing on the disk queue, at most `CHECK_IN_FLIGHT_BYTES` at once. True once
    /// every verdict is in.
    pub fn check_some(&mut self, disk: &mut DiskQueue) -> bool {
        let (Some(check), Some(data)) = (self.check.as_mut(), self.data.as_mut()) else {
            return true;
        };
        let geometry = data.ctx.geometry;
        while check.in_flight < CHECK_IN_FLIGHT_BYTES {
            let Some(&piece) = check.plan.to_check.get(check.queued) else {
                break;
            };
            check.queued += 1;
            check.in_flight += u64::from(geometry.piece_len(piece));
            disk.push(data.verify_job(piece, Purpose::Check));
        }
        check.next >= check.plan.to_check.len()
    }

    /// A verdict of the check.
    pub fn on_check_verdict(&mut self, piece: u32, verdict: Option<VerifiedPiece>) {
        let (Some(check), Some(data)) = (self.check.as_mut(), self.data.as_ref()) else {
            return;
        };
        check.in_flight = check.in_flight.saturating_sub(u64::from(data.ctx.geometry.piece_len(piece)));
        check.next += 1;
        if let Some(v) = verdict {
            check.have.set(v.piece());
        }
    }

    /// The check is done: builds the real swarm (what is had, what is wanted) and becomes `Active`, or
    /// fails (`rill seed` with pieces missing).
    pub fn finish_check(&mut self) -> Result<CheckSummary, TorrentError> {
        let (Some(check), Some(data)) = (self.check.take(), self.data.as_mut()) else {
            return Err(TorrentError::Missing { root: self.opts.dir.clone(), missing: 0, pieces: 0 });
        };
        let meta = self.meta.take();
        let geometry = data.ctx.geometry;
        let n = geometry.piece_count();
        let summary = CheckSummary {
            pieces: n,
            present: check.have.count_ones() + check.plan.trusted,
            trusted: check.plan.trusted,
            checked: check.next as u32,
        };
        let (wanted, sequential) = match &self.opts.mode {
            Mode::Seed { partial } => {
                let missing = n - summary.present;
                if missing > 0 && !partial {
                    let root = meta
                        .as_ref()
                        .and_then(|m| m.files.first())
                        .and_then(|f| f.path.components().next())
                        .map(|c| self.opts.dir.join(c.as_os_str()))
                        .unwrap_or_else(|| self.opts.dir.clone());
                    return Err(TorrentError::Missing { root, missing, pieces: n });
                }
                // A seed fetches nothing: only what was hashed is wanted, so an unconfirmed piece that fails
                // its check is dropped rather than downloaded (and `left` stays 0 for the trackers).
                (check.have.clone(), false)
            }
            Mode::Download { wanted_files, sequential, .. } => {
                let mut wanted = Bitfield::new(n);
                if let Some(meta) = &meta {
                    for (i, f) in meta.files.iter().enumerate() {
                        let want = wanted_files.as_ref().map_or(true, |w| w.get(i).copied().unwrap_or(false));
                        if !want || f.padding || f.length == 0 {
                            continue;
                        }
                        let first = (f.offset / u64::from(meta.piece_length)) as u32;
                        let last = ((f.offset + f.length - 1) / u64::from(meta.piece_length)) as u32;
                        for p in first..=last {
                            wanted.set(p);
                        }
                    }
                }
                (wanted, *sequential)
            }
        };
        data.swarm = Swarm::new(geometry, check.have, wanted, sequential).with_unconfirmed(&check.plan.unconfirmed);
        // Complete at start (a seed, or a download whose pieces were all hashed now): nothing completes in
        // this run, so there is no completion to announce.
        self.completed_announced = data.swarm.is_complete();
        self.state = State::Active;
        self.summary = Some(summary);
        Ok(summary)
    }

    /// Stopped during the check: records what is known, so the next start hashes only what was not
    /// reached. Returns (pieces checked, pieces known good, pieces).
    pub fn save_interrupted_check(&mut self) -> Result<(u32, u32, u32), StorageError> {
        let (Some(check), Some(data)) = (self.check.as_ref(), self.data.as_mut()) else {
            return Ok((0, 0, 0));
        };
        let mut recorded = check.have.clone();
        for p in check.plan.unconfirmed.iter_ones() {
            recorded.set(p);
        }
        data.disk.lock().save_resume(&self.info_hash.0, &recorded)?;
        Ok((check.next as u32, recorded.count_ones(), data.ctx.geometry.piece_count()))
    }

    /// Once a second: the smoothed rates.
    pub fn sample_rates(&mut self, dt: Duration) {
        let Some(swarm) = self.swarm() else {
            return;
        };
        let (downloaded, uploaded) = (swarm.totals.downloaded, swarm.totals.uploaded);
        let secs = dt.as_secs_f64().max(1e-3);
        let down = downloaded - self.last_downloaded;
        let up = uploaded - self.last_uploaded;
        self.last_downloaded = downloaded;
        self.last_uploaded = uploaded;
        self.down_rate = 0.5 * self.down_rate + 0.5 * (down as f64 / secs);
        self.up_rate = 0.5 * self.up_rate + 0.5 * (up as f64 / secs);
    }

    /// The seed ratio is reached (only once complete).
    pub fn seed_ratio_reached(&self) -> bool {
        let (Some(ratio), Some(data)) = (self.opts.seed_ratio, self.data.as_ref()) else {
            return false;
        };
        if !data.swarm.is_complete() {
            return false;
        }
        let total = data.ctx.geometry.total_length().max(1);
        let uploaded = self.opts.uploaded_before.saturating_add(data.swarm.totals.uploaded);
        uploaded as f64 / total as f64 >= ratio
    }

    /// Records the verified pieces in the resume file now (on exit).
    pub fn save_resume(&mut self) -> Result<(), StorageError> {
        // Before the check is done the swarm knows nothing (an interrupted check saved what it found).
        if self.check.is_some() || self.summary.is_none() {
            return Ok(());
        }
        let Some(data) = self.data.as_mut() else {
            return Ok(());
        };
        data.disk.lock().save_resume(&self.info_hash.0, &data.swarm.recorded())?;
        self.unsaved_bytes = 0;
        Ok(())
    }

    /// Starts a resume save on storage's helper thread when pieces were verified since the last one; if one
    /// is still running, a later call tries again. Reports the error of a save that finished.
    pub fn save_resume_in_background(&mut self) -> Result<(), StorageError> {
        let Some(data) = self.data.as_mut() else {
            return Ok(());
        };
        // The disk thread holds the storage for a batch of jobs now: the next call tries again.
        let Some(mut storage) = data.disk.try_lock() else {
            return Ok(());
        };
        storage.poll_background_save()?;
        if self.check.is_none()
            && self.unsaved_bytes > 0
            && storage.start_background_save(&self.info_hash.0, &data.swarm.recorded())?
        {
            self.unsaved_bytes = 0;
        }
        Ok(())
    }
}
