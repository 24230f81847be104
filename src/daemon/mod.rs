//! `rill daemon`: torrents added, stopped, started and removed at run time (through the RPC and the watch
//! folder), kept in a state file and restored on start.
//!
//! Owns: the torrent list as a front-end sees it — stable RPC ids, where each torrent came from (a kept
//! `.torrent` or a magnet link), its directory under the download root, stopped or not, unwanted files,
//! dates — and reconciling it with the engine each tick: a torrent the user wants running is added to the
//! engine, a stopped one is removed from it (its resume file keeps its progress, so a start checks
//! nothing again), a restart (verify, new file selection) is a removal then an add once the engine has
//! forgotten it. Also the [`rpc::Backend`] over the engine, the state file, the watch folder.
//! Must not: touch sockets (the loop does), parse HTTP (`rpc`), or read the clock (the driver passes
//! `now`, and the wall-clock time at start).

pub mod state;

use std::cell::OnceCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::engine::snapshot::{Command, PeerEncryption, Snapshot, TorrentSnapshot};
use crate::engine::torrent::{Mode, Source, State, TorrentOptions};
use crate::engine::{AddError, Engine, TorrentId};
use crate::magnet::Magnet;
use crate::metainfo::{InfoHash, Metainfo};
use crate::rpc::transmission::{
    AddSource, AddTorrent, Added, Backend, Detail, FileInfo, PeerInfo, SessionInfo, SessionSet, SessionStats, Status,
    TorrentInfo, TorrentSet, TrackerInfo,
};
use crate::storage::files::{self, BackgroundWrite};
use crate::storage::relocate::Relocation;
use crate::time::{secs, Timestamp};
use crate::tracker::TrackerState;
use state::{SavedState, SavedTorrent};

/// Largest `.torrent` accepted (as `rill download`).
pub const MAX_TORRENT_BYTES: u64 = 64 << 20;
/// How often the daemon reconciles with the engine, saves its state and looks at the watch folder.
pub const TICK: Duration = secs(1);
/// A torrent counts as recently active (`ids: "recently-active"`) this long after traffic or a change.
const RECENT: Duration = secs(60);
/// Removed ids are reported to `recently-active` this long.
const REMOVED_KEPT: Duration = secs(60);

/// What the daemon runs with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The download root: torrents go here unless `torrent-add` names a directory below it.
    pub download_dir: PathBuf,
    pub state_dir: PathBuf,
    pub watch_dir: Option<PathBuf>,
    pub seed_ratio: Option<f64>,
    pub extra_peers: Vec<SocketAddr>,
    pub dht: bool,
    /// The session's fixed settings for `session-get`.
    pub session: SessionInfo,
}

/// Transmission's default alternative speed limits, bytes/s (50 kB/s each way).
const ALT_SPEED_DEFAULT: u64 = 50_000;

/// A torrent's metainfo, as much as a front-end shows.
#[derive(Clone, Debug, Default)]
struct Summary {
    total_size: u64,
    piece_count: u32,
    piece_size: u64,
    private: bool,
    comment: String,
    creator: String,
    /// Files a user can pick (no padding), in order: relative path, length.
    files: Vec<(PathBuf, u64)>,
    /// Tracker URLs with their tiers, in tier order.
    trackers: Vec<(usize, String)>,
    web_seeds: Vec<String>,
}

impl Summary {
    fn of(meta: &Metainfo) -> Summary {
        Summary {
            total_size: meta.total_length,
            piece_count: meta.piece_count(),
            piece_size: u64::from(meta.piece_length),
            private: meta.private,
            comment: meta.comment.clone().unwrap_or_default(),
            creator: meta.created_by.clone().unwrap_or_default(),
            files: meta.selectable_files().map(|(_, f)| (f.path.clone(), f.length)).collect(),
            trackers: flat_trackers(&meta.trackers),
            web_seeds: meta.web_seeds.clone(),
        }
    }
}

/// A tracker list as front-ends number it: normalized (as the engine's trackers use it), each URL with its tier.
fn flat_trackers(tiers: &[Vec<String>]) -> Vec<(usize, String)> {
    crate::tracker::normalize_tiers(tiers)
        .into_iter()
        .enumerate()
        .flat_map(|(tier, urls)| urls.into_iter().map(move |u| (tier, u)))
        .collect()
}

/// Figures last seen while the torrent ran, shown while it is stopped.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    done: u64,
    total: u64,
    downloaded: u64,
    uploaded: u64,
    wasted: u64,
}

impl Figures {
    fn of(t: &TorrentSnapshot) -> Figures {
        Figures { done: t.done, total: t.total, downloaded: t.downloaded, uploaded: t.uploaded, wasted: t.wasted }
    }
}

struct Entry {
    id: u32,
    info_hash: InfoHash,
    name: String,
    /// The magnet link it came from; `None`: a `.torrent` kept in the state directory.
    magnet: Option<String>,
    dir: PathBuf,
    /// The user stopped it.
    stopped: bool,
    unwanted: Vec<usize>,
    added: u64,
    done_date: u64,
    /// Its torrent in the engine.
    torrent: Option<TorrentId>,
    /// Removed from the engine (stop, restart, removal), not yet forgotten by it: it cannot be added again
    /// before.
    leaving: Option<TorrentId>,
    /// Hash everything at the next add (verify).
    recheck: bool,
    /// Why it could not be added to the engine (missing `.torrent`, unreadable, overlapping files).
    error: Option<String>,
    last: Figures,
    summary: Option<Summary>,
    active_at: Timestamp,
    /// Transmission's `seedRatioMode` (0 the session's ratio, 1 `ratio_limit`, 2 none) and its own ratio.
    ratio_mode: u8,
    ratio_limit: f64,
    /// Bytes downloaded and uploaded before its present run in the engine (earlier runs, before a stop, a
    /// verify or a restart of the daemon), which the engine's own counts, from zero, add to.
    carried: (u64, u64),
    /// Time spent downloading and seeding, over all runs (`secondsDownloading`, `secondsSeeding`).
    active_secs: (Duration, Duration),
    /// The user's tracker list (`torrent-set`), in place of the metainfo's or the magnet's.
    trackers: Option<Vec<Vec<String>>>,
    /// Its files are to move to another folder (`torrent-set-location` with `move`): out of the engine until
    /// they are there.
    relocating: Option<Relocating>,
    /// Its own rate limits, bytes/s: download, upload (`torrent-set`), on top of the session's.
    limits: (Option<u64>, Option<u64>),
}

/// A move of a torrent's files: started once the engine has let go of them.
struct Relocating {
    to: PathBuf,
    files: Vec<PathBuf>,
    job: Option<Relocation>,
}

impl Entry {
    /// Every file of this torrent in its directory, relative to it: the data files it knows of, the resume
    /// file and a magnet's kept metadata.
    fn files_on_disk(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            self.summary.as_ref().map(|s| s.files.iter().map(|(p, _)| p.clone()).collect()).unwrap_or_default();
        files.push(PathBuf::from(crate::storage::resume::file_name(&self.info_hash.0)));
        files.push(PathBuf::from(crate::storage::resume::metadata_file_name(&self.info_hash.0)));
        files
    }

    /// What the engine shows of this torrent, with the totals of its earlier runs.
    fn figures(&self, t: &TorrentSnapshot) -> Figures {
        let mut f = Figures::of(t);
        f.downloaded += self.carried.0;
        f.uploaded += self.carried.1;
        f
    }
}

/// A removed torrent's files to delete once the engine has let go of them.
struct PendingDelete {
    info_hash: InfoHash,
    torrent: Option<TorrentId>,
    dir: PathBuf,
    files: Vec<PathBuf>,
    /// A move of these files under way when the torrent was removed: the delete waits for its end, then
    /// deletes in both folders (the move either finished or put everything back).
    moving: Option<(Relocation, PathBuf)>,
}

/// The daemon's torrents and their persistence.
pub struct Daemon {
    config: DaemonConfig,
    entries: Vec<Entry>,
    next_id: u32,
    removed: Vec<(u32, Timestamp)>,
    deletes: Vec<PendingDelete>,
    /// Unix seconds at `started`.
    unix_at_start: u64,
    started: Timestamp,
    dirty: bool,
    /// The state file's write in progress, and the kept `.torrent` files it syncs first.
    saving: Option<(BackgroundWrite, Vec<PathBuf>)>,
    /// Kept `.torrent` files written but not yet synced: the next state save syncs them before the state
    /// file that names them (the loop never waits for an fsync).
    unsynced: Vec<PathBuf>,
    next_tick: Timestamp,
    /// When `tick` last ran.
    ticked_at: Timestamp,
    /// The session's seed ratio (`session-set seedRatioLimit`/`seedRatioLimited`; `--seed-ratio` at start),
    /// for torrents in ratio mode 0. Kept while disabled, as Transmission does.
    ratio_limit: f64,
    ratio_limited: bool,
    /// Transmission's alternative speed limits ("turtle mode"): on or not, and their rates (up, down),
    /// bytes/s. While on, the engine runs at them; the speed limits proper wait in `normal_limits`.
    alt_speed: (bool, u64, u64),
    /// The session's speed limits (up, down) while the alternative ones are in force.
    normal_limits: Option<(Option<u64>, Option<u64>)>,
}

impl Daemon {
    /// `unix_now`: the wall-clock time (Unix seconds) at `now`, for the dates front-ends show.
    pub fn new(config: DaemonConfig, unix_now: u64, now: Timestamp) -> Self {
        let (ratio_limit, ratio_limited) =
            (config.seed_ratio.unwrap_or(state::DEFAULT_SEED_RATIO), config.seed_ratio.is_some());
        Daemon {
            config,
            entries: Vec::new(),
            next_id: 1,
            removed: Vec::new(),
            deletes: Vec::new(),
            unix_at_start: unix_now,
            started: now,
            dirty: false,
            saving: None,
            unsynced: Vec::new(),
            next_tick: now,
            ticked_at: now,
            ratio_limit,
            ratio_limited,
            alt_speed: (false, ALT_SPEED_DEFAULT, ALT_SPEED_DEFAULT),
            normal_limits: None,
        }
    }

    /// The seed ratio torrent `e` stops at, if any.
    fn seed_ratio_of(&self, e: &Entry) -> Option<f64> {
        match e.ratio_mode {
            0 => self.ratio_limited.then_some(self.ratio_limit),
            1 => Some(e.ratio_limit),
            _ => None,
        }
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    fn unix(&self, at: Timestamp) -> u64 {
        self.unix_at_start + at.saturating_since(self.started).as_secs()
    }

    fn state_file(&self) -> PathBuf {
        self.config.state_dir.join(state::FILE_NAME)
    }

    fn torrent_file(&self, hash: &InfoHash) -> PathBuf {
        self.config.state_dir.join("torrents").join(format!("{hash}.torrent"))
    }

    /// Reads the state file and adds every torrent it lists (each resumes from its resume file). A
    /// missing file is an empty list; a malformed one is an error (not overwritten).
    pub fn restore(&mut self, engine: &mut Engine, now: Timestamp) -> Result<usize, String> {
        let path = self.state_file();
        let bytes = match files::read_bounded(&path, state::MAX_STATE_BYTES) {
            Ok(bytes) => bytes,
            Err(files::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let saved = SavedState::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut restored = 0;
        for t in saved.torrents {
            if !state::is_hex_hash(&t.hash) {
                log::warn!("{}: skipping a torrent with a malformed hash", path.display());
                continue;
            }
            let Some(info_hash) = parse_hash(&t.hash) else {
                continue;
            };
            if self.entries.iter().any(|e| e.info_hash == info_hash) {
                continue;
            }
            let summary = match &t.magnet {
                None => match self.load_torrent_file(&info_hash) {
                    Ok((mut meta, _)) => {
                        if let Some(tiers) = &t.trackers {
                            meta.trackers.clone_from(tiers);
                        }
                        Some(Summary::of(&meta))
                    }
                    Err(e) => {
                        log::warn!("{}: {e}", t.name);
                        None
                    }
                },
                Some(_) => None,
            };
            let id = self.next_id;
            self.next_id += 1;
            self.entries.push(Entry {
                id,
                info_hash,
                name: t.name,
                magnet: t.magnet,
                dir: PathBuf::from(t.dir),
                stopped: t.stopped,
                unwanted: t.unwanted,
                added: t.added,
                done_date: t.done,
                torrent: None,
                leaving: None,
                recheck: false,
                error: None,
                last: Figures {
                    done: t.have,
                    total: t.wanted,
                    downloaded: t.downloaded,
                    uploaded: t.uploaded,
                    wasted: 0,
                },
                summary,
                active_at: now,
                ratio_mode: t.seed_ratio_mode.min(2),
                ratio_limit: if t.seed_ratio_limit.is_finite() && t.seed_ratio_limit >= 0.0 {
                    t.seed_ratio_limit
                } else {
                    state::DEFAULT_SEED_RATIO
                },
                carried: (0, 0),
                active_secs: (secs(t.seconds_downloading), secs(t.seconds_seeding)),
                trackers: t.trackers.map(|tiers| crate::tracker::normalize_tiers(&tiers)),
                relocating: None,
                limits: (t.download_limit.filter(|&l| l > 0), t.upload_limit.filter(|&l| l > 0)),
            });
            restored += 1;
        }
        self.reconcile(engine, now, Duration::ZERO);
        Ok(restored)
    }

    fn load_torrent_file(&self, hash: &InfoHash) -> Result<(Metainfo, Vec<u8>), String> {
        let path = self.torrent_file(hash);
        let bytes = files::read_bounded(&path, MAX_TORRENT_BYTES).map_err(|e| format!("{}: {e}", path.display()))?;
        let info = crate::metainfo::raw_info(&bytes).map(<[u8]>::to_vec).unwrap_or_default();
        let meta = Metainfo::from_vec(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.info_hash != *hash {
            return Err(format!("{}: another torrent's metainfo", path.display()));
        }
        Ok((meta, info))
    }

    /// What to hand the engine for `e`: its kept `.torrent`, or its magnet (with the metadata an earlier
    /// run fetched, if it is in the torrent's directory).
    fn source_of(&self, e: &Entry) -> Result<(Source, Option<Metainfo>), String> {
        let (source, meta) = self.original_source_of(e)?;
        let Some(tiers) = &e.trackers else {
            return Ok((source, meta));
        };
        let source = match source {
            Source::Metainfo { mut meta, info } => {
                meta.trackers.clone_from(tiers);
                Source::Metainfo { meta, info }
            }
            Source::Magnet(mut magnet) => {
                magnet.trackers.clone_from(tiers);
                Source::Magnet(magnet)
            }
        };
        let meta = meta.map(|mut meta| {
            meta.trackers.clone_from(tiers);
            meta
        });
        Ok((source, meta))
    }

    /// `source_of` with the trackers the torrent came with.
    fn original_source_of(&self, e: &Entry) -> Result<(Source, Option<Metainfo>), String> {
        match &e.magnet {
            None => {
                let (meta, info) = self.load_torrent_file(&e.info_hash)?;
                let info = (!info.is_empty()).then_some(info);
                Ok((Source::Metainfo { meta: Box::new(meta.clone()), info }, Some(meta)))
            }
            Some(link) => {
                let magnet = Magnet::parse(link).map_err(|err| err.to_string())?;
                let saved = e.dir.join(crate::storage::resume::metadata_file_name(&e.info_hash.0));
                if let Ok(bytes) = files::read_bounded(&saved, MAX_TORRENT_BYTES) {
                    let info = crate::metainfo::raw_info(&bytes).map(<[u8]>::to_vec);
                    if let Ok(mut meta) = Metainfo::from_vec(bytes) {
                        if meta.info_hash == e.info_hash {
                            for tier in &magnet.trackers {
                                if !meta.trackers.contains(tier) {
                                    meta.trackers.push(tier.clone());
                                }
                            }
                            return Ok((Source::Metainfo { meta: Box::new(meta.clone()), info }, Some(meta)));
                        }
                    }
                }
                Ok((Source::Magnet(magnet), None))
            }
        }
    }

    /// Adds `e` (by index) to the engine.
    fn start_in_engine(&mut self, index: usize, engine: &mut Engine, now: Timestamp) {
        let (source, meta) = match self.source_of(&self.entries[index]) {
            Ok(s) => s,
            Err(error) => {
                let e = &mut self.entries[index];
                if e.error.as_deref() != Some(error.as_str()) {
                    log::warn!("{}: cannot start: {error}", e.name);
                }
                e.error = Some(error);
                return;
            }
        };
        let e = &self.entries[index];
        let wanted_files = meta.as_ref().filter(|_| !e.unwanted.is_empty()).map(|meta| {
            let mut wanted = vec![true; meta.files.len()];
            for (n, (i, _)) in meta.files.iter().enumerate().filter(|(_, f)| !f.padding).enumerate() {
                if e.unwanted.contains(&n) {
                    wanted[i] = false;
                }
            }
            wanted
        });
        let opts = TorrentOptions {
            dir: e.dir.clone(),
            mode: Mode::Download { wanted_files, sequential: false, keep_seeding: true },
            recheck: e.recheck,
            seed_ratio: self.seed_ratio_of(e),
            uploaded_before: e.last.uploaded,
            extra_peers: self.config.extra_peers.clone(),
            save_torrent: None,
            dht: self.config.dht,
        };
        match engine.add(source, opts, now) {
            Ok(id) => {
                let summary = meta.as_ref().map(Summary::of);
                let e = &mut self.entries[index];
                if e.limits != (None, None) {
                    engine.set_torrent_rate_limits(id, e.limits.1, e.limits.0, now);
                }
                e.torrent = Some(id);
                e.carried = (e.last.downloaded, e.last.uploaded);
                e.recheck = false;
                e.error = None;
                if summary.is_some() {
                    e.summary = summary;
                }
                e.active_at = now;
            }
            // Still leaving the engine under another entry's removal: try again next tick.
            Err(AddError::Duplicate(_)) => {}
        }
    }

    /// Removes `e`'s torrent from the engine (stop, restart, removal); it is `leaving` until forgotten.
    fn leave_engine(e: &mut Entry, engine: &mut Engine, now: Timestamp) {
        if let Some(id) = e.torrent.take() {
            engine.handle_command(Command::Remove(id), now);
            e.leaving = Some(id);
        }
    }

    /// Whether the engine still holds torrent `id` for `hash` (a forgotten torrent's slot may be reused).
    fn engine_holds(engine: &Engine, id: TorrentId, hash: &InfoHash) -> bool {
        engine.torrent(id).is_some_and(|t| t.info_hash == *hash)
    }

    /// The last figures of every torrent in the engine (at shutdown).
    fn reconcile_figures(&mut self, engine: &Engine) {
        let snapshot = engine.snapshot();
        for e in &mut self.entries {
            let Some(t) = e.torrent.and_then(|id| snapshot.torrents.iter().find(|t| t.id == id)) else {
                continue;
            };
            if t.total > 0 {
                e.last = e.figures(t);
            }
        }
    }

    /// Brings the engine in line with what the user wants; records what front-ends show of stopped
    /// torrents (and `elapsed`, the time since the last tick, as downloading or seeding time); deletes the
    /// files of removed torrents the engine has let go of.
    fn reconcile(&mut self, engine: &mut Engine, now: Timestamp, elapsed: Duration) {
        let snapshot = engine.snapshot();
        for index in 0..self.entries.len() {
            let e = &mut self.entries[index];
            if let Some(id) = e.leaving {
                if !Self::engine_holds(engine, id, &e.info_hash) {
                    e.leaving = None;
                }
            }
            if let Some(id) = e.torrent {
                if let Some(t) = snapshot.torrents.iter().find(|t| t.id == id) {
                    if t.metadata_progress.is_none() || t.total > 0 {
                        e.last = e.figures(t);
                    }
                    if t.name != e.name && !t.name.is_empty() {
                        e.name = t.name.clone();
                        self.dirty = true;
                    }
                    if t.down_rate > 0.0 || t.up_rate > 0.0 {
                        e.active_at = now;
                    }
                    match status_of(e, Some(t)) {
                        Status::Download => e.active_secs.0 += elapsed,
                        Status::Seed => e.active_secs.1 += elapsed,
                        _ => {}
                    }
                    if t.total > 0 && t.done == t.total && e.done_date == 0 {
                        e.done_date = self.unix_at_start + now.saturating_since(self.started).as_secs();
                        e.active_at = now;
                        self.dirty = true;
                    }
                    if e.summary.is_none() && t.state == State::Active {
                        // A magnet's metadata arrived: its files are known now.
                        e.summary = summary_from_engine(engine, id, t);
                    }
                } else if !Self::engine_holds(engine, id, &e.info_hash) {
                    e.torrent = None;
                }
            }
            if e.torrent.is_none() && e.leaving.is_none() && e.relocating.is_some() {
                if Self::relocation_pending(e) {
                    continue;
                }
                self.dirty = true; // moved or not: the state file says where the files are
            }
            if !e.stopped && e.torrent.is_none() && e.leaving.is_none() {
                self.start_in_engine(index, engine, now);
            }
        }
        let mut i = 0;
        while i < self.deletes.len() {
            let d = &self.deletes[i];
            let held = d.torrent.is_some_and(|id| Self::engine_holds(engine, id, &d.info_hash));
            let moving = d.moving.as_ref().is_some_and(|(job, _)| !job.is_finished());
            if held || moving {
                i += 1;
                continue;
            }
            let d = self.deletes.swap_remove(i);
            let mut dirs = vec![d.dir];
            if let Some((job, to)) = d.moving {
                let _ = job.wait();
                dirs.push(to);
            }
            for dir in dirs {
                log::info!("deleting {} file(s) of a removed torrent under {}", d.files.len(), dir.display());
                if let Err(e) = files::delete_in_background(dir, d.files.clone()) {
                    log::warn!("cannot start deleting: {e}");
                }
            }
        }
        self.removed.retain(|(_, at)| now.saturating_since(*at) < REMOVED_KEPT);
    }

    /// Once a second: reconcile, save the state when it changed, look at the watch folder.
    pub fn tick(&mut self, engine: &mut Engine, now: Timestamp) {
        if now < self.next_tick {
            return;
        }
        let elapsed = now.saturating_since(std::mem::replace(&mut self.ticked_at, now));
        self.next_tick = now + TICK;
        self.reconcile(engine, now, elapsed);
        self.scan_watch_folder(engine, now);
        self.save_if_needed(false);
    }

    pub fn next_tick(&self) -> Timestamp {
        self.next_tick
    }

    /// Writes the state file (on a helper thread) if it changed; `wait` at exit, so the last change is on
    /// disk before the process ends.
    pub fn save_if_needed(&mut self, wait: bool) {
        if let Some((job, synced)) = self.saving.take() {
            if job.is_finished() || wait {
                if let Err(e) = job.wait() {
                    log::error!("cannot save {}: {e}", self.state_file().display());
                    self.dirty = true;
                    self.unsynced.extend(synced);
                }
            } else {
                self.saving = Some((job, synced));
                return;
            }
        }
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let bytes = self.saved().to_bytes();
        let sync = std::mem::take(&mut self.unsynced);
        match files::write_durably_in_background_after(sync.clone(), self.state_file(), bytes) {
            Ok(job) if wait => {
                if let Err(e) = job.wait() {
                    log::error!("cannot save {}: {e}", self.state_file().display());
                }
            }
            Ok(job) => self.saving = Some((job, sync)),
            Err(e) => {
                log::error!("cannot save {}: {e}", self.state_file().display());
                self.dirty = true;
                self.unsynced = sync;
            }
        }
    }

    fn saved(&self) -> SavedState {
        SavedState {
            version: state::VERSION,
            torrents: self
                .entries
                .iter()
                .map(|e| SavedTorrent {
                    hash: e.info_hash.to_string(),
                    magnet: e.magnet.clone(),
                    name: e.name.clone(),
                    dir: e.dir.to_string_lossy().into_owned(),
                    stopped: e.stopped,
                    unwanted: e.unwanted.clone(),
                    added: e.added,
                    done: e.done_date,
                    have: e.last.done,
                    wanted: e.last.total,
                    downloaded: e.last.downloaded,
                    uploaded: e.last.uploaded,
                    seed_ratio_mode: e.ratio_mode,
                    seed_ratio_limit: e.ratio_limit,
                    seconds_downloading: e.active_secs.0.as_secs(),
                    seconds_seeding: e.active_secs.1.as_secs(),
                    trackers: e.trackers.clone(),
                    download_limit: e.limits.0,
                    upload_limit: e.limits.1,
                })
                .collect(),
        }
    }

    /// Adds what the watch folder holds: `*.torrent` and `*.magnet` files, renamed `.added` once taken
    /// or `.invalid` (with a line saying why) when they cannot be.
    fn scan_watch_folder(&mut self, engine: &mut Engine, now: Timestamp) {
        let Some(dir) = self.config.watch_dir.clone() else {
            return;
        };
        let list = match files::list_files(&dir) {
            Ok(list) => list,
            Err(e) => {
                log::debug!("watch folder {}: {e}", dir.display());
                return;
            }
        };
        for path in list.into_iter().take(64) {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let source = match ext {
                "torrent" => {
                    files::read_bounded(&path, MAX_TORRENT_BYTES).map(AddSource::Metainfo).map_err(|e| e.to_string())
                }
                "magnet" => files::read_bounded(&path, 64 * 1024)
                    .map_err(|e| e.to_string())
                    .and_then(|b| String::from_utf8(b).map_err(|_| "not text".to_string()))
                    .map(|s| AddSource::Filename(s.trim().to_string())),
                _ => continue,
            };
            let outcome = source.and_then(|source| {
                self.add(
                    engine,
                    AddTorrent { source, download_dir: None, paused: false, files_unwanted: Vec::new() },
                    now,
                )
            });
            let mark = match &outcome {
                Ok(added) => {
                    log::info!("watch folder: added {} ({})", added.name, path.display());
                    "added"
                }
                Err(e) => {
                    log::warn!("watch folder: {}: {e}", path.display());
                    "invalid"
                }
            };
            let mut to = path.clone().into_os_string();
            to.push(".");
            to.push(mark);
            if let Err(e) = files::rename(&path, Path::new(&to)) {
                log::warn!("watch folder: cannot rename {}: {e}", path.display());
            }
        }
    }

    /// Refuses a torrent (`name`, with the files of `summary`) in `dir` whose files would overlap those of
    /// another torrent there (all but `except`).
    fn refuse_overlap(&self, name: &str, summary: &Summary, dir: &Path, except: Option<u32>) -> Result<(), String> {
        let mine: Vec<&Path> = summary.files.iter().map(|(p, _)| p.as_path()).collect();
        for other in self.entries.iter().filter(|o| o.dir == dir && Some(o.id) != except) {
            let Some(theirs) = &other.summary else { continue };
            let theirs: Vec<&Path> = theirs.files.iter().map(|(p, _)| p.as_path()).collect();
            if let Some(path) = crate::metainfo::overlap(&mine, &theirs) {
                return Err(format!("{name} would use {} too, which {} uses", path.display(), other.name));
            }
        }
        Ok(())
    }

    /// Adds a torrent (RPC `torrent-add`, the watch folder).
    pub fn add(&mut self, engine: &mut Engine, req: AddTorrent, now: Timestamp) -> Result<Added, String> {
        let dir = resolve_dir(&self.config.download_dir, req.download_dir.as_deref())?;
        let (info_hash, name, magnet, meta, bytes) = match req.source {
            AddSource::Metainfo(bytes) => {
                let meta = Metainfo::from_bytes(&bytes).map_err(|e| format!("invalid or corrupt torrent file: {e}"))?;
                (meta.info_hash, meta.name.clone(), None, Some(meta), Some(bytes))
            }
            AddSource::Filename(name) if crate::magnet::is_magnet(&name) => {
                let m = Magnet::parse(&name).map_err(|e| format!("invalid magnet link: {e}"))?;
                let display = m.name.clone().unwrap_or_else(|| m.info_hash.to_string());
                (m.info_hash, display, Some(name), None, None)
            }
            AddSource::Filename(path) => {
                if path.starts_with("http://") || path.starts_with("https://") {
                    return Err("rill does not fetch .torrent files from URLs; send the file's bytes".into());
                }
                let bytes = files::read_bounded(Path::new(&path), MAX_TORRENT_BYTES)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                let meta = Metainfo::from_bytes(&bytes).map_err(|e| format!("invalid or corrupt torrent file: {e}"))?;
                (meta.info_hash, meta.name.clone(), None, Some(meta), Some(bytes))
            }
        };
        if let Some(e) = self.entries.iter().find(|e| e.info_hash == info_hash) {
            return Ok(Added { id: e.id, name: e.name.clone(), hash: info_hash.to_string(), duplicate: true });
        }
        let summary = meta.as_ref().map(Summary::of);
        if let Some(new) = &summary {
            self.refuse_overlap(&name, new, &dir, None)?;
        }
        if let Some(bytes) = bytes {
            // Kept for restarts. Written here (into the page cache, so a failure is the client's answer)
            // and synced by the state save a tick later, before the state file that names it.
            let path = self.torrent_file(&info_hash);
            files::ensure_parent(&path)
                .and_then(|()| files::write_atomically(&path, &bytes))
                .map_err(|e| format!("cannot keep {}: {e}", path.display()))?;
            self.unsynced.push(path);
        }
        let file_count = summary.as_ref().map_or(0, |s| s.files.len());
        let id = self.next_id;
        self.next_id += 1;
        let unix = self.unix(now);
        self.entries.push(Entry {
            id,
            info_hash,
            name: name.clone(),
            magnet,
            dir,
            stopped: req.paused,
            unwanted: req.files_unwanted.into_iter().filter(|&n| n < file_count).collect(),
            added: unix,
            done_date: 0,
            torrent: None,
            leaving: None,
            recheck: false,
            error: None,
            last: Figures::default(),
            summary,
            active_at: now,
            ratio_mode: 0,
            ratio_limit: state::DEFAULT_SEED_RATIO,
            carried: (0, 0),
            active_secs: (Duration::ZERO, Duration::ZERO),
            trackers: None,
            relocating: None,
            limits: (None, None),
        });
        self.dirty = true;
        if !req.paused {
            let index = self.entries.len() - 1;
            self.start_in_engine(index, engine, now);
        }
        log::info!("added {name} (id {id})");
        Ok(Added { id, name, hash: info_hash.to_string(), duplicate: false })
    }

    fn index(&self, id: u32) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id)
    }

    pub fn start(&mut self, engine: &mut Engine, id: u32, now: Timestamp) {
        let Some(i) = self.index(id) else { return };
        let e = &mut self.entries[i];
        e.stopped = false;
        e.active_at = now;
        self.dirty = true;
        // A torrent the engine stopped by itself (an error, its seed ratio) starts again from scratch.
        if let Some(t) = e.torrent.and_then(|t| engine.torrent(t)) {
            if matches!(t.state, State::Stopped | State::Paused) {
                Self::leave_engine(e, engine, now);
            }
        }
        if e.torrent.is_none() && e.leaving.is_none() {
            self.start_in_engine(i, engine, now);
        }
    }

    pub fn stop(&mut self, engine: &mut Engine, id: u32, now: Timestamp) {
        self.reconcile_figures(engine);
        let Some(i) = self.index(id) else { return };
        let e = &mut self.entries[i];
        if !e.stopped {
            e.stopped = true;
            e.active_at = now;
            self.dirty = true;
        }
        Self::leave_engine(e, engine, now);
    }

    /// Hashes the torrent's data again: a running torrent restarts with a full check; a stopped one is
    /// checked when it next starts.
    pub fn verify(&mut self, engine: &mut Engine, id: u32, now: Timestamp) {
        self.reconcile_figures(engine);
        let Some(i) = self.index(id) else { return };
        let e = &mut self.entries[i];
        e.recheck = true;
        e.active_at = now;
        Self::leave_engine(e, engine, now);
    }

    pub fn remove(&mut self, engine: &mut Engine, id: u32, delete_local_data: bool, now: Timestamp) {
        let Some(i) = self.index(id) else { return };
        let mut e = self.entries.remove(i);
        let in_engine = e.torrent.or(e.leaving);
        Self::leave_engine(&mut e, engine, now);
        if delete_local_data {
            let files = e.files_on_disk();
            let moving = e.relocating.take().and_then(|r| Some((r.job?, r.to)));
            self.deletes.push(PendingDelete {
                info_hash: e.info_hash,
                torrent: in_engine,
                dir: e.dir.clone(),
                files,
                moving,
            });
        }
        if e.magnet.is_none() {
            let path = self.torrent_file(&e.info_hash);
            self.deletes.push(PendingDelete {
                info_hash: e.info_hash,
                torrent: None,
                dir: self.config.state_dir.clone(),
                files: vec![path.strip_prefix(&self.config.state_dir).map(Path::to_path_buf).unwrap_or(path)],
                moving: None,
            });
        }
        self.removed.push((id, now));
        self.dirty = true;
        log::info!("removed {} (id {id}){}", e.name, if delete_local_data { " and its data" } else { "" });
    }

    pub fn set_files(&mut self, engine: &mut Engine, id: u32, wanted: &[usize], unwanted: &[usize], now: Timestamp) {
        self.reconcile_figures(engine);
        let Some(i) = self.index(id) else { return };
        let e = &mut self.entries[i];
        let count = e.summary.as_ref().map_or(0, |s| s.files.len());
        let before = e.unwanted.clone();
        e.unwanted.retain(|n| !wanted.contains(n));
        for &n in unwanted.iter().filter(|&&n| n < count) {
            if !e.unwanted.contains(&n) {
                e.unwanted.push(n);
            }
        }
        e.unwanted.sort_unstable();
        if e.unwanted != before {
            self.dirty = true;
            e.active_at = now;
            // The new selection takes effect by a restart (its resume file keeps what is verified).
            Self::leave_engine(e, engine, now);
        }
    }

    /// A torrent's tracker list (`torrent-set`): kept across restarts, and a running torrent's trackers take
    /// it at once (see `Trackers::set_tiers`).
    pub fn set_trackers(&mut self, engine: &mut Engine, id: u32, tiers: &[Vec<String>], now: Timestamp) {
        let Some(i) = self.index(id) else { return };
        let tiers = crate::tracker::normalize_tiers(tiers);
        let e = &mut self.entries[i];
        if let Some(summary) = &mut e.summary {
            summary.trackers = flat_trackers(&tiers);
        }
        if let Some(tid) = e.torrent {
            engine.set_trackers(tid, &tiers, now);
        }
        log::info!(
            "{}: trackers set to {} URLs in {} tiers",
            e.name,
            tiers.iter().map(Vec::len).sum::<usize>(),
            tiers.len()
        );
        e.trackers = Some(tiers);
        e.active_at = now;
        self.dirty = true;
    }

    /// Where a torrent's files are (`torrent-set-location`; `location` must be under the download root).
    /// With `move_data` its files move there (on `rill-move`, once the engine has let go of them) and it
    /// starts again from there, resume file included; without, it starts again from there with a full
    /// check, as for files put there by hand.
    pub fn set_location(
        &mut self,
        engine: &mut Engine,
        id: u32,
        location: &str,
        move_data: bool,
        now: Timestamp,
    ) -> Result<(), String> {
        let Some(i) = self.index(id) else { return Ok(()) };
        let to = resolve_dir(&self.config.download_dir, Some(location))?;
        let e = &self.entries[i];
        if e.relocating.is_some() {
            return Err(format!("{}: its files are being moved already", e.name));
        }
        if to == e.dir {
            return Ok(());
        }
        if let Some(s) = &e.summary {
            self.refuse_overlap(&e.name, s, &to, Some(id))?;
        }
        let e = &mut self.entries[i];
        Self::leave_engine(e, engine, now);
        if move_data {
            let files = e.files_on_disk();
            log::info!("{}: moving its files from {} to {}", e.name, e.dir.display(), to.display());
            e.relocating = Some(Relocating { to, files, job: None });
        } else {
            log::info!("{}: its files are in {} now; checking them", e.name, to.display());
            e.dir = to;
            e.recheck = true;
        }
        e.active_at = now;
        self.dirty = true;
        Ok(())
    }

    /// Drives `e`'s move, if it has one: starts it (the engine has let go), or takes its result. True while
    /// it is not done.
    fn relocation_pending(e: &mut Entry) -> bool {
        let Some(r) = &mut e.relocating else { return false };
        match &r.job {
            None => match Relocation::start(e.dir.clone(), r.to.clone(), r.files.clone()) {
                Ok(job) => r.job = Some(job),
                Err(err) => {
                    e.error = Some(format!("cannot start moving the files: {err}"));
                    e.relocating = None;
                    return false;
                }
            },
            Some(job) if job.is_finished() => {
                if let Some(Relocating { to, job: Some(job), .. }) = e.relocating.take() {
                    Self::relocated(e, to, job.wait());
                }
                return false;
            }
            Some(_) => {}
        }
        true
    }

    /// A move ended: on success the torrent's files are under `to` now; on failure they are where they were.
    fn relocated(e: &mut Entry, to: PathBuf, result: Result<usize, String>) {
        match result {
            Ok(n) => {
                log::info!("{}: {n} file(s) moved to {}", e.name, to.display());
                e.dir = to;
                e.error = None;
            }
            Err(err) => {
                log::warn!("{}: cannot move its files: {err}", e.name);
                e.error = Some(format!("cannot move the files: {err}"));
            }
        }
    }

    /// A torrent's own rate limits, bytes/s (`torrent-set`; `Some(None)` lifts one, `None` leaves it); a
    /// running torrent takes them at once.
    pub fn set_limits(
        &mut self,
        engine: &mut Engine,
        id: u32,
        down: Option<Option<u64>>,
        up: Option<Option<u64>>,
        now: Timestamp,
    ) {
        let Some(i) = self.index(id) else { return };
        let e = &mut self.entries[i];
        if let Some(down) = down {
            e.limits.0 = down.filter(|&l| l > 0);
        }
        if let Some(up) = up {
            e.limits.1 = up.filter(|&l| l > 0);
        }
        if let Some(tid) = e.torrent {
            engine.set_torrent_rate_limits(tid, e.limits.1, e.limits.0, now);
        }
        e.active_at = now;
        self.dirty = true;
    }

    /// A torrent's seed ratio mode and limit (`torrent-set`); a running torrent takes it at once.
    pub fn set_seed_ratio(
        &mut self,
        engine: &mut Engine,
        id: u32,
        mode: Option<u8>,
        limit: Option<f64>,
        now: Timestamp,
    ) {
        let Some(i) = self.index(id) else { return };
        let e = &mut self.entries[i];
        e.ratio_mode = mode.unwrap_or(e.ratio_mode).min(2);
        e.ratio_limit = limit.unwrap_or(e.ratio_limit);
        e.active_at = now;
        self.dirty = true;
        let (torrent, ratio) = (e.torrent, self.seed_ratio_of(&self.entries[i]));
        if let Some(tid) = torrent {
            engine.handle_command(Command::SetSeedRatio(tid, ratio), now);
        }
    }

    /// The session's seed ratio (`session-set`): every torrent that follows it takes it at once.
    pub fn set_session_seed_ratio(
        &mut self,
        engine: &mut Engine,
        limit: Option<f64>,
        limited: Option<bool>,
        now: Timestamp,
    ) {
        self.ratio_limit = limit.unwrap_or(self.ratio_limit);
        self.ratio_limited = limited.unwrap_or(self.ratio_limited);
        for e in self.entries.iter().filter(|e| e.ratio_mode == 0) {
            if let Some(tid) = e.torrent {
                engine.handle_command(Command::SetSeedRatio(tid, self.seed_ratio_of(e)), now);
            }
        }
    }

    /// Everything for a front-end, as one backend call at a time over `engine`.
    pub fn backend<'a>(&'a mut self, engine: &'a mut Engine, now: Timestamp) -> DaemonBackend<'a> {
        DaemonBackend { daemon: self, engine, now, snapshot: OnceCell::new() }
    }

    /// At shutdown: the state file written (with the last figures) and waited for.
    pub fn finish(&mut self, engine: &Engine) {
        self.reconcile_figures(engine);
        // A move under way is let finish, so the state file names where the files are.
        for e in &mut self.entries {
            if let Some(Relocating { to, job: Some(job), .. }) = e.relocating.take() {
                log::info!("{}: waiting for its files to move", e.name);
                Self::relocated(e, to, job.wait());
            }
        }
        self.dirty = true;
        self.save_if_needed(true);
    }
}

/// A magnet's file list, once its metadata made storage: from the engine.
fn summary_from_engine(engine: &Engine, id: TorrentId, t: &TorrentSnapshot) -> Option<Summary> {
    let files = engine.file_progress(id)?;
    Some(Summary {
        total_size: files.iter().map(|f| f.length).sum(),
        files: files.into_iter().map(|f| (f.path, f.length)).collect(),
        trackers: engine.tracker_urls(id),
        piece_count: 0,
        piece_size: 0,
        private: false,
        comment: String::new(),
        creator: String::new(),
        web_seeds: Vec::new(),
    })
    .filter(|_| t.total > 0)
}

fn parse_hash(hex: &str) -> Option<InfoHash> {
    let mut out = [0u8; 20];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(InfoHash(out))
}

/// The directory a torrent goes in: the root, or a directory under it (`torrent-add`'s `download-dir`:
/// absolute below the root, or relative to it). Anything that would leave the root is refused.
pub fn resolve_dir(root: &Path, requested: Option<&str>) -> Result<PathBuf, String> {
    let Some(requested) = requested.filter(|r| !r.is_empty()) else {
        return Ok(root.to_path_buf());
    };
    let path = Path::new(requested);
    let rel = if path.is_absolute() {
        path.strip_prefix(root).map_err(|_| format!("download-dir {requested} is outside {}", root.display()))?
    } else {
        path
    };
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("download-dir {requested} is outside {}", root.display()));
    }
    Ok(root.join(rel))
}

/// The RPC's view of the daemon and the engine, for one request.
pub struct DaemonBackend<'a> {
    daemon: &'a mut Daemon,
    engine: &'a mut Engine,
    now: Timestamp,
    /// One engine snapshot per request, taken when first needed, with its torrents by id (a `torrent-get`
    /// of every torrent looks each one up).
    snapshot: OnceCell<(Snapshot, HashMap<TorrentId, usize>)>,
}

impl DaemonBackend<'_> {
    fn snapshot(&self) -> &Snapshot {
        &self.indexed().0
    }

    fn indexed(&self) -> &(Snapshot, HashMap<TorrentId, usize>) {
        self.snapshot.get_or_init(|| {
            let snapshot = self.engine.snapshot();
            let index = snapshot.torrents.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
            (snapshot, index)
        })
    }

    /// The torrent's trackers as front-ends show them: from the engine while it runs (state, last answer,
    /// next announce), else as the metainfo lists them.
    fn tracker_infos(&self, e: &Entry, s: &Summary, t: Option<&TorrentSnapshot>) -> Vec<TrackerInfo> {
        let unix_now = self.daemon.unix(self.now);
        let at = |d: Duration, later: bool| {
            if later {
                unix_now + d.as_secs()
            } else {
                unix_now.saturating_sub(d.as_secs())
            }
        };
        match t.filter(|t| !t.trackers.is_empty()) {
            Some(t) => t
                .trackers
                .iter()
                .map(|tr| {
                    let answered = tr.last_announce_ago.is_some() && tr.state != TrackerState::Failing;
                    TrackerInfo {
                        announce: tr.url.clone(),
                        tier: tr.tier,
                        announcing: matches!(tr.state, TrackerState::Announcing | TrackerState::Stopping),
                        last_announce_time: tr.last_announce_ago.map_or(0, |d| at(d, false)),
                        has_announced: tr.last_announce_ago.is_some() || tr.state == TrackerState::Failing,
                        last_announce_succeeded: answered,
                        last_announce_result: match (&tr.last_error, answered) {
                            (_, true) => "Success".into(),
                            (Some(e), false) => e.clone(),
                            (None, false) => String::new(),
                        },
                        last_announce_peer_count: tr.peers as u64,
                        next_announce_time: tr.next_announce_in.map_or(0, |d| at(d, true)),
                        seeders: tr.seeders,
                        leechers: tr.leechers,
                    }
                })
                .collect(),
            None => {
                // A magnet whose metadata never came has no summary, but may have an edited list.
                let edited = match (&e.summary, &e.trackers) {
                    (None, Some(tiers)) => flat_trackers(tiers),
                    _ => Vec::new(),
                };
                let listed = if edited.is_empty() { &s.trackers } else { &edited };
                listed
                    .iter()
                    .map(|(tier, url)| TrackerInfo { announce: url.clone(), tier: *tier, ..TrackerInfo::default() })
                    .collect()
            }
        }
    }

    fn torrent_snapshot(&self, id: TorrentId) -> Option<&TorrentSnapshot> {
        let (snapshot, index) = self.indexed();
        index.get(&id).map(|&i| &snapshot.torrents[i])
    }

    fn changed(&mut self) {
        self.snapshot = OnceCell::new();
    }
}

fn status_of(e: &Entry, t: Option<&TorrentSnapshot>) -> Status {
    match t {
        None if e.stopped || e.torrent.is_none() => Status::Stopped,
        None => Status::Stopped,
        Some(t) => match t.state {
            State::Checking if t.check_progress.is_some_and(|(done, _)| done > 0) => Status::Check,
            State::Checking => Status::CheckWait,
            State::AwaitingMetadata => Status::Download,
            State::Active if t.seeding || (t.total > 0 && t.done == t.total) => Status::Seed,
            State::Active => Status::Download,
            State::Paused | State::Stopped => Status::Stopped,
        },
    }
}

/// A magnet link for a torrent (`magnetLink`).
fn magnet_link<'a>(hash: &InfoHash, name: &str, trackers: impl Iterator<Item = &'a str>) -> String {
    let mut link = format!("magnet:?xt=urn:btih:{hash}&dn={}", percent_encode(name));
    for t in trackers {
        link.push_str("&tr=");
        link.push_str(&percent_encode(t));
    }
    link
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Backend for DaemonBackend<'_> {
    fn torrent_ids(&self) -> Vec<u32> {
        self.daemon.entries.iter().map(|e| e.id).collect()
    }

    fn recently_active(&self) -> Vec<u32> {
        let now = self.now;
        self.daemon.entries.iter().filter(|e| now.saturating_since(e.active_at) < RECENT).map(|e| e.id).collect()
    }

    fn recently_removed(&self) -> Vec<u32> {
        self.daemon.removed.iter().map(|(id, _)| *id).collect()
    }

    fn id_by_hash(&self, hash: &str) -> Option<u32> {
        let hash = parse_hash(hash).filter(|_| hash.len() == 40)?;
        self.daemon.entries.iter().find(|e| e.info_hash == hash).map(|e| e.id)
    }

    fn torrent(&self, id: u32, detail: Detail) -> Option<TorrentInfo> {
        let d = &*self.daemon;
        let e = d.entries.iter().find(|e| e.id == id)?;
        let snap = self.snapshot();
        let t = e.torrent.and_then(|tid| self.torrent_snapshot(tid));
        let f = match t {
            Some(t) if t.total > 0 || t.metadata_progress.is_none() => e.figures(t),
            _ => e.last,
        };
        let none = Summary::default();
        let s = e.summary.as_ref().unwrap_or(&none);
        let (down, up) = t.map_or((0.0, 0.0), |t| (t.down_rate, t.up_rate));
        let left = f.total.saturating_sub(f.done);
        let peers: Vec<_> = e.torrent.map_or(Vec::new(), |tid| {
            snap.peers.iter().filter(|p| p.torrent == Some(tid) && p.addr.is_some()).collect()
        });
        let mut info = TorrentInfo {
            id,
            hash: e.info_hash.to_string(),
            name: e.name.clone(),
            status: Some(status_of(e, t)),
            error: e.error.clone().or_else(|| t.and_then(|t| t.error.clone())),
            total_size: if s.total_size > 0 { s.total_size } else { f.total },
            size_when_done: f.total,
            left_until_done: left,
            have_valid: f.done,
            downloaded_ever: f.downloaded,
            uploaded_ever: f.uploaded,
            corrupt_ever: f.wasted,
            rate_download: down as u64,
            rate_upload: up as u64,
            peers_connected: peers.len() as u32,
            peers_sending_to_us: peers
                .iter()
                .filter(|p| p.download_rate > 0.0 || (!p.peer_choking && p.am_interested))
                .count() as u32,
            peers_getting_from_us: peers
                .iter()
                .filter(|p| p.upload_rate > 0.0 || (!p.am_choking && p.peer_interested))
                .count() as u32,
            eta: (down >= 1.0 && left > 0).then(|| (left as f64 / down) as u64),
            download_dir: e.dir.to_string_lossy().into_owned(),
            added_date: e.added,
            start_date: e.added,
            done_date: e.done_date,
            activity_date: d.unix(e.active_at),
            piece_count: s.piece_count,
            piece_size: s.piece_size,
            is_private: s.private,
            comment: s.comment.clone(),
            creator: s.creator.clone(),
            date_created: 0,
            magnet_link: e
                .magnet
                .clone()
                .unwrap_or_else(|| magnet_link(&e.info_hash, &e.name, s.trackers.iter().map(|(_, url)| url.as_str()))),
            recheck_progress: t.and_then(|t| t.check_progress).map_or(0.0, |(done, total)| {
                if total > 0 {
                    f64::from(done) / f64::from(total)
                } else {
                    0.0
                }
            }),
            metadata_percent: match t.and_then(|t| t.metadata_progress) {
                Some((_, Some((got, of)))) if of > 0 => f64::from(got) / f64::from(of),
                Some(_) => 0.0,
                None if e.summary.is_some() || f.total > 0 => 1.0,
                None => 0.0,
            },
            trackers: self.tracker_infos(e, s, t),
            web_seeds: s.web_seeds.clone(),
            seconds_downloading: e.active_secs.0.as_secs(),
            seconds_seeding: e.active_secs.1.as_secs(),
            seed_ratio_mode: e.ratio_mode,
            seed_ratio_limit: e.ratio_limit,
            download_limit: e.limits.0,
            upload_limit: e.limits.1,
            finished: e
                .torrent
                .and_then(|tid| self.engine.torrent(tid))
                .is_some_and(|c| c.state == State::Stopped && c.seed_ratio_reached()),
            ..TorrentInfo::default()
        };
        if detail.files {
            let progress = e.torrent.and_then(|tid| self.engine.file_progress(tid));
            info.files = match progress {
                Some(list) => list
                    .into_iter()
                    .enumerate()
                    .map(|(n, p)| FileInfo {
                        name: p.path.to_string_lossy().into_owned(),
                        length: p.length,
                        bytes_completed: p.done,
                        wanted: !e.unwanted.contains(&n),
                    })
                    .collect(),
                None => s
                    .files
                    .iter()
                    .enumerate()
                    .map(|(n, (path, length))| FileInfo {
                        name: path.to_string_lossy().into_owned(),
                        length: *length,
                        // Stopped: what was verified is not known per file without the engine.
                        bytes_completed: if f.total > 0 && f.done == f.total { *length } else { 0 },
                        wanted: !e.unwanted.contains(&n),
                    })
                    .collect(),
            };
        }
        if detail.peers {
            info.peers = peers
                .iter()
                .map(|p| {
                    let addr = p.addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                    PeerInfo {
                        address: addr.ip().to_string(),
                        port: addr.port(),
                        client: p.peer_id.as_ref().map(crate::observe::client::client_name).unwrap_or_default(),
                        rate_to_client: p.download_rate as u64,
                        rate_to_peer: p.upload_rate as u64,
                        progress: p.progress,
                        encrypted: p.encryption == PeerEncryption::Rc4,
                        utp: p.utp,
                        incoming: !p.outgoing,
                        choked_by_peer: p.peer_choking,
                        choking_peer: p.am_choking,
                        interested: p.am_interested,
                        peer_interested: p.peer_interested,
                    }
                })
                .collect();
        }
        Some(info)
    }

    fn add(&mut self, add: AddTorrent) -> Result<Added, String> {
        let added = self.daemon.add(self.engine, add, self.now);
        self.changed();
        added
    }

    fn start(&mut self, id: u32) {
        self.daemon.start(self.engine, id, self.now);
        self.changed();
    }

    fn stop(&mut self, id: u32) {
        self.daemon.stop(self.engine, id, self.now);
        self.changed();
    }

    fn verify(&mut self, id: u32) {
        self.daemon.verify(self.engine, id, self.now);
        self.changed();
    }

    fn reannounce(&mut self, id: u32) {
        if let Some(tid) = self.daemon.entries.iter().find(|e| e.id == id).and_then(|e| e.torrent) {
            self.engine.handle_command(Command::Reannounce(tid), self.now);
        }
    }

    fn remove(&mut self, id: u32, delete_local_data: bool) {
        self.daemon.remove(self.engine, id, delete_local_data, self.now);
        self.changed();
    }

    fn set_torrent(&mut self, id: u32, set: &TorrentSet) -> Result<(), String> {
        if set.download_limit.is_some() || set.upload_limit.is_some() {
            self.daemon.set_limits(self.engine, id, set.download_limit, set.upload_limit, self.now);
            self.changed();
        }
        if !set.files_wanted.is_empty() || !set.files_unwanted.is_empty() {
            self.daemon.set_files(self.engine, id, &set.files_wanted, &set.files_unwanted, self.now);
            self.changed();
        }
        if set.seed_ratio_mode.is_some() || set.seed_ratio_limit.is_some() {
            self.daemon.set_seed_ratio(self.engine, id, set.seed_ratio_mode, set.seed_ratio_limit, self.now);
            self.changed();
        }
        if let Some(tiers) = &set.trackers {
            self.daemon.set_trackers(self.engine, id, tiers, self.now);
            self.changed();
        }
        Ok(())
    }

    fn set_location(&mut self, id: u32, location: &str, move_data: bool) -> Result<(), String> {
        let set = self.daemon.set_location(self.engine, id, location, move_data, self.now);
        self.changed();
        set
    }

    fn session(&self) -> SessionInfo {
        let (up, down) = self.daemon.normal_limits.unwrap_or_else(|| self.engine.rate_limits());
        let (alt_speed_enabled, alt_speed_up, alt_speed_down) = self.daemon.alt_speed;
        SessionInfo {
            download_dir: self.daemon.config.download_dir.to_string_lossy().into_owned(),
            config_dir: self.daemon.config.state_dir.to_string_lossy().into_owned(),
            speed_limit_down: down,
            speed_limit_up: up,
            seed_ratio_limit: self.daemon.ratio_limit,
            seed_ratio_limited: self.daemon.ratio_limited,
            alt_speed_enabled,
            alt_speed_down,
            alt_speed_up,
            ..self.daemon.config.session.clone()
        }
    }

    fn set_session(&mut self, set: &SessionSet) -> Result<(), String> {
        let d = &mut *self.daemon;
        let (mut up, mut down) = d.normal_limits.unwrap_or_else(|| self.engine.rate_limits());
        if let Some(limit) = set.speed_limit_down {
            down = limit;
        }
        if let Some(limit) = set.speed_limit_up {
            up = limit;
        }
        let (mut on, mut alt_up, mut alt_down) = d.alt_speed;
        on = set.alt_speed_enabled.unwrap_or(on);
        alt_up = set.alt_speed_up.unwrap_or(alt_up);
        alt_down = set.alt_speed_down.unwrap_or(alt_down);
        d.alt_speed = (on, alt_up, alt_down);
        // In force: the alternative limits while they are on (0 is no limit, as a speed limit of 0 would
        // stop everything), else the speed limits.
        let in_force = if on {
            d.normal_limits = Some((up, down));
            (Some(alt_up).filter(|&r| r > 0), Some(alt_down).filter(|&r| r > 0))
        } else {
            d.normal_limits = None;
            (up, down)
        };
        if in_force != self.engine.rate_limits() {
            self.engine.set_rate_limits(in_force.0, in_force.1, self.now);
        }
        if set.seed_ratio_limit.is_some() || set.seed_ratio_limited.is_some() {
            self.daemon.set_session_seed_ratio(self.engine, set.seed_ratio_limit, set.seed_ratio_limited, self.now);
            self.changed();
        }
        Ok(())
    }

    fn stats(&self) -> SessionStats {
        let snap = self.snapshot();
        let d = &*self.daemon;
        let running = d.entries.iter().filter(|e| e.torrent.is_some() && !e.stopped).count() as u32;
        SessionStats {
            download_speed: snap.torrents.iter().map(|t| t.down_rate).sum::<f64>() as u64,
            upload_speed: snap.torrents.iter().map(|t| t.up_rate).sum::<f64>() as u64,
            active_torrents: running,
            paused_torrents: d.entries.len() as u32 - running,
            torrent_count: d.entries.len() as u32,
            downloaded_bytes: snap.torrents.iter().map(|t| t.downloaded).sum(),
            uploaded_bytes: snap.torrents.iter().map(|t| t.uploaded).sum(),
            seconds_active: self.now.saturating_since(d.started).as_secs(),
        }
    }

    fn free_space(&self, path: &str) -> Option<u64> {
        let dir = resolve_dir(&self.daemon.config.download_dir, Some(path)).ok()?;
        files::free_space(&dir).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_dirs_stay_under_the_root() {
        let root = Path::new("/srv/rill");
        assert_eq!(resolve_dir(root, None).unwrap(), root);
        assert_eq!(resolve_dir(root, Some("")).unwrap(), root);
        assert_eq!(resolve_dir(root, Some("films")).unwrap(), root.join("films"));
        assert_eq!(resolve_dir(root, Some("/srv/rill/a/b")).unwrap(), root.join("a/b"));
        for bad in ["/etc", "../x", "a/../../x", "/srv/rill/../etc", "/srv/rillx"] {
            assert!(resolve_dir(root, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn turtle_mode_puts_the_alternative_limits_in_force_and_takes_them_out_again() {
        let config =
            crate::engine::EngineConfig { up_limit: Some(1_000_000), ..crate::engine::EngineConfig::for_tests() };
        let now = Timestamp::ZERO;
        let mut entropy = crate::rng::Entropy::seeded(1);
        let peer_id = crate::peer::our_peer_id(&mut entropy);
        let mut engine = Engine::new(config, peer_id, crate::rng::Rng::seeded(1), entropy, now);
        let daemon_config = DaemonConfig {
            download_dir: PathBuf::from("/nonexistent/rill"),
            state_dir: PathBuf::from("/nonexistent/rill-state"),
            watch_dir: None,
            seed_ratio: None,
            extra_peers: Vec::new(),
            dht: false,
            session: SessionInfo::default(),
        };
        let mut daemon = Daemon::new(daemon_config, 0, now);
        let mut b = daemon.backend(&mut engine, now);
        let set = |b: &mut DaemonBackend, set: SessionSet| b.set_session(&set).unwrap();
        set(
            &mut b,
            SessionSet { alt_speed_enabled: Some(true), alt_speed_down: Some(120_000), ..SessionSet::default() },
        );
        assert_eq!(b.engine.rate_limits(), (Some(ALT_SPEED_DEFAULT), Some(120_000)), "(up, down) in force");
        // The speed limits proper change underneath and show as set, but wait their turn.
        set(&mut b, SessionSet { speed_limit_down: Some(Some(500_000)), ..SessionSet::default() });
        let s = b.session();
        assert_eq!((s.speed_limit_up, s.speed_limit_down), (Some(1_000_000), Some(500_000)));
        assert!(s.alt_speed_enabled && s.alt_speed_down == 120_000);
        assert_eq!(b.engine.rate_limits(), (Some(ALT_SPEED_DEFAULT), Some(120_000)));
        set(&mut b, SessionSet { alt_speed_enabled: Some(false), ..SessionSet::default() });
        assert_eq!(b.engine.rate_limits(), (Some(1_000_000), Some(500_000)));
        assert!(!b.session().alt_speed_enabled);
    }

    #[test]
    fn hashes_and_magnet_links_are_formed_for_front_ends() {
        let hash = parse_hash(&"0a".repeat(20)).unwrap();
        assert_eq!(hash.to_string(), "0a".repeat(20));
        assert!(parse_hash("zz").is_none());
        let link = magnet_link(&hash, "a b&c", ["http://t/announce"].into_iter());
        assert_eq!(link, format!("magnet:?xt=urn:btih:{}&dn=a%20b%26c&tr=http%3A%2F%2Ft%2Fannounce", "0a".repeat(20)));
        assert!(Magnet::parse(&link).is_ok());
    }
}
