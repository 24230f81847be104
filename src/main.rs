//! The `rill` binary: argv → command → run → exit code.
//!
//! Owns: process concerns only — logging set-up, the OS `Entropy` source (peer id, keys) and the RNG
//! seed, reading the `.torrent` file, printing results, mapping errors to exit codes (0 ok, 1 runtime
//! failure, 2 bad input).
//! Must not: contain protocol logic.

use std::ffi::OsString;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use env_logger::WriteStyle;
use signal_hook::consts::{SIGINT, SIGTERM};

use rill::cli::{self, Command, CreateOptions, TransferOptions};
use rill::engine::dht::{Bootstrap, DhtConfig, DEFAULT_ROUTERS};
use rill::engine::snapshot::Outcome;
use rill::engine::torrent::{Mode, Source, TorrentOptions};
use rill::engine::{AddError, Engine, EngineConfig};
use rill::event_loop::{Bound, EventLoop, LoopConfig, LoopError};
use rill::metainfo::{Metainfo, MetainfoError};
use rill::observe::view::{UiMode, View};
use rill::observe::{info, ui};
use rill::rng::{Entropy, EntropyError, Rng};

/// How a command failed, and which exit code that means.
#[derive(Debug)]
enum Failure {
    // ---- bad usage or bad input: exit 2 ----
    Usage(cli::UsageError),
    /// A `.torrent` file that cannot be read or parsed.
    Torrent {
        path: PathBuf,
        why: TorrentFileError,
    },
    Magnet(rill::magnet::MagnetError),
    /// `--scrape` of a magnet link.
    ScrapeMagnet,
    NoTrackers(PathBuf),
    NoSuchFile {
        n: usize,
        count: usize,
    },
    /// Two different torrents would write the same path.
    Overlap {
        a: PathBuf,
        b: PathBuf,
        path: PathBuf,
    },
    OutputExists(PathBuf),
    Scan(rill::storage::scan::ScanError),
    /// `rill seed` of a magnet link (nothing to seed without the data's metainfo).
    SeedMagnet,
    /// `--files` with a magnet link (the files are not known before its metadata).
    FilesOfMagnet,
    // ---- the run itself failed: exit 1 ----
    Entropy(EntropyError),
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    Loop(LoopError),
    /// Torrents that stopped with an error (name, error), or a download that stopped before completing.
    Torrents(Vec<(String, String)>),
    Stdout(std::io::Error),
    Create(String),
    /// `rill daemon` without a state directory to keep its list in.
    NoStateDir,
    /// The daemon's state could not be restored.
    Daemon(String),
    /// `--trace` or `--stats-json` cannot be written.
    Output {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Why a `.torrent` file was refused.
#[derive(Debug)]
enum TorrentFileError {
    Io(std::io::Error),
    Directory,
    TooBig,
    Malformed(MetainfoError),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_)
            | Failure::Torrent { .. }
            | Failure::Magnet(_)
            | Failure::ScrapeMagnet
            | Failure::NoTrackers(_)
            | Failure::NoSuchFile { .. }
            | Failure::Overlap { .. }
            | Failure::OutputExists(_)
            | Failure::Scan(_)
            | Failure::SeedMagnet
            | Failure::FilesOfMagnet
            | Failure::NoStateDir => 2,
            Failure::Entropy(_)
            | Failure::CreateDir { .. }
            | Failure::Loop(_)
            | Failure::Torrents(_)
            | Failure::Stdout(_)
            | Failure::Create(_)
            | Failure::Daemon(_)
            | Failure::Output { .. } => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(e) => write!(f, "{e}"),
            Failure::Torrent { path, why } => match why {
                TorrentFileError::Io(e) => write!(f, "cannot read {}: {e}", path.display()),
                TorrentFileError::Directory => write!(f, "cannot read {}: it is a directory", path.display()),
                TorrentFileError::TooBig => write!(
                    f,
                    "{}: larger than {} MiB, too big for a torrent file",
                    path.display(),
                    MAX_TORRENT_BYTES / (1024 * 1024)
                ),
                TorrentFileError::Malformed(e) => write!(f, "{}: {e}", path.display()),
            },
            Failure::Magnet(e) => write!(f, "{e}"),
            Failure::ScrapeMagnet => write!(f, "--scrape needs a .torrent file; a magnet link has no metadata"),
            Failure::NoTrackers(path) => write!(f, "{}: the torrent lists no trackers", path.display()),
            Failure::NoSuchFile { n, count } => {
                write!(f, "--files: no file {n} (the torrent has {count} files, numbered from 0)")
            }
            Failure::Overlap { a, b, path } => {
                write!(f, "{} and {} both use {}", a.display(), b.display(), path.display())
            }
            Failure::OutputExists(path) => write!(f, "{} exists (--force overwrites it)", path.display()),
            Failure::Scan(e) => write!(f, "{e}"),
            Failure::SeedMagnet => write!(f, "rill seed needs .torrent files, not magnet links"),
            Failure::FilesOfMagnet => {
                write!(f, "--files needs a .torrent file: a magnet link's files are not known yet")
            }
            Failure::Entropy(e) => write!(f, "{e}"),
            Failure::CreateDir { path, error } => write!(f, "cannot create {}: {error}", path.display()),
            Failure::Loop(e) => write!(f, "{e}"),
            Failure::Torrents(list) => {
                for (i, (name, error)) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, "\nrill: ")?;
                    }
                    if name.is_empty() {
                        write!(f, "{error}")?;
                    } else {
                        write!(f, "{name}: {error}")?;
                    }
                }
                Ok(())
            }
            Failure::Stdout(e) => write!(f, "cannot write to stdout: {e}"),
            Failure::Create(msg) => write!(f, "{msg}"),
            Failure::NoStateDir => {
                write!(f, "rill daemon needs --state-dir (no default: HOME is unset or RILL_FORBID_DHT_ROUTERS is set)")
            }
            Failure::Daemon(msg) => write!(f, "{msg}"),
            Failure::Output { path, error } => write!(f, "cannot write {}: {error}", path.display()),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // A daemon's log is its journal: what it added, removed and why something failed.
    let default_level = if args.first().is_some_and(|a| a == "daemon") { "info" } else { "warn" };
    // Log lines go through the log panel's sink: to stderr, or, while the full-screen view is up, into its
    // panel (then to stderr when it closes). Coloured when stderr is a terminal, as env_logger does itself.
    let mut logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if std::env::var_os("RUST_LOG_STYLE").is_none() {
        logger.write_style(if std::io::stderr().is_terminal() { WriteStyle::Always } else { WriteStyle::Never });
    }
    logger.format_target(true).target(env_logger::Target::Pipe(Box::new(rill::observe::logpanel::LogSink))).init();
    match cli::parse(args).map_err(Failure::Usage).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            err(format_args!("rill: {failure}\n"));
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Writes to stdout and flushes. Every line rill prints goes through here (or through the loop's
/// `view.rs`, which follows the same rule) instead of `print!`, which panics on a write error — and a
/// panic is an abort in the release profile. An error (EPIPE from `rill info | head`, a full disk, a
/// closed terminal) returns false: the caller stops printing, and the exit code stays the command's
/// own, since nobody is left to read a message about it. (Rust ignores SIGPIPE, so a closed pipe is an
/// ordinary EPIPE here.)
fn out(args: fmt::Arguments<'_>) -> bool {
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args).and_then(|()| stdout.flush()).is_ok()
}

/// `out` for stderr: an error message that cannot be written is dropped, never a panic. (env_logger
/// behaves the same: it ignores the result of its own writes to stderr.)
fn err(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Help(text) => {
            out(format_args!("{text}"));
            Ok(())
        }
        Command::Version => {
            out(format_args!("rill {}\n", env!("CARGO_PKG_VERSION")));
            Ok(())
        }
        Command::Info { torrent, scrape } if rill::magnet::is_magnet(&torrent.to_string_lossy()) => {
            let link = torrent.to_string_lossy();
            let magnet = rill::magnet::Magnet::parse(&link).map_err(Failure::Magnet)?;
            if scrape {
                return Err(Failure::ScrapeMagnet);
            }
            out(format_args!("{}", rill::observe::magnet_info::render_magnet(&magnet)));
            Ok(())
        }
        Command::Info { torrent, scrape } => {
            let meta = load_torrent(&torrent)?;
            // Line by line through a buffer: 200,000 files are never one string. A closed pipe ends the
            // listing quietly.
            let mut listing = std::io::BufWriter::new(std::io::stdout().lock());
            match info::write_info(&meta, &mut listing).and_then(|()| listing.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(Failure::Stdout(e)),
            }
            drop(listing);
            if scrape {
                if meta.trackers.is_empty() {
                    return Err(Failure::NoTrackers(torrent));
                }
                let outcomes = rill::event_loop::scrape::scrape(
                    &meta.trackers,
                    meta.info_hash,
                    std::time::Duration::from_secs(15),
                );
                if out(format_args!("scrape:\n")) {
                    for outcome in outcomes {
                        if !out(format_args!("  {outcome}\n")) {
                            break;
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Download { opts, seed, files, sequential, recheck, save_torrent } => {
            let torrents = load_all(&opts, true)?;
            let wanted_files = match (&files, torrents.first().map(|l| &l.kind)) {
                (Some(list), Some(Kind::Torrent { meta, .. })) => Some(select_files(meta, list)?),
                (Some(_), _) => return Err(Failure::FilesOfMagnet),
                _ => None,
            };
            let mode = Mode::Download { wanted_files, sequential, keep_seeding: seed };
            transfer(torrents, &opts, mode, recheck, save_torrent)
        }
        Command::Create(opts) => create_torrent(&opts),
        Command::Daemon { opts, rpc } => daemon(&opts, &rpc),
        Command::Seed { opts, partial, recheck } => {
            let torrents = load_all(&opts, false)?;
            transfer(torrents, &opts, Mode::Seed { partial }, recheck, None)
        }
    }
}

/// Largest `.torrent` file rill reads: 64 MiB. A torrent with 200,000 files is about 10 MiB; anything
/// much bigger is not a torrent, and reading it whole would cost that much memory.
const MAX_TORRENT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads and parses a `.torrent` file: a regular file or a pipe (`rill info <(cat x.torrent)`), at most
/// [`MAX_TORRENT_BYTES`]. The bytes are dropped once parsed.
fn load_torrent(path: &Path) -> Result<Metainfo, Failure> {
    let bytes = read_torrent_file(path)?;
    Metainfo::from_vec(bytes)
        .map_err(|e| Failure::Torrent { path: path.to_path_buf(), why: TorrentFileError::Malformed(e) })
}

/// [`load_torrent`], keeping a copy of the raw info dictionary too (a seed serves it to magnet users).
fn load_torrent_and_info(path: &Path) -> Result<(Metainfo, Vec<u8>), Failure> {
    let bytes = read_torrent_file(path)?;
    let info = rill::metainfo::raw_info(&bytes).map(<[u8]>::to_vec).unwrap_or_default();
    let meta = Metainfo::from_vec(bytes)
        .map_err(|e| Failure::Torrent { path: path.to_path_buf(), why: TorrentFileError::Malformed(e) })?;
    Ok((meta, info))
}

fn read_torrent_file(path: &Path) -> Result<Vec<u8>, Failure> {
    use rill::storage::files::{read_bounded, ReadError};
    let refuse = |why| Failure::Torrent { path: path.to_path_buf(), why };
    read_bounded(path, MAX_TORRENT_BYTES).map_err(|e| match e {
        ReadError::Io(e) => refuse(TorrentFileError::Io(e)),
        ReadError::Directory => refuse(TorrentFileError::Directory),
        ReadError::TooBig => refuse(TorrentFileError::TooBig),
    })
}

/// Maps `--files` indices (as `rill info` numbers them: non-padding files) to a per-file flag.
fn select_files(meta: &Metainfo, list: &[usize]) -> Result<Vec<bool>, Failure> {
    let numbered: Vec<usize> = meta.selectable_files().map(|(_, f)| f).map(|f| file_index(meta, f)).collect();
    let mut wanted = vec![false; meta.files.len()];
    for &n in list {
        let Some(&i) = numbered.get(n) else {
            return Err(Failure::NoSuchFile { n, count: numbered.len() });
        };
        wanted[i] = true;
    }
    Ok(wanted)
}

fn file_index(meta: &Metainfo, f: &rill::metainfo::FileEntry) -> usize {
    meta.files.iter().position(|g| std::ptr::eq(g, f)).unwrap_or(0)
}

/// IPv6 and IPv4 peers alike (a dual-stack socket; the loop falls back to IPv4 only where there is no
/// IPv6).
/// Where the DHT starts: `--dht-bootstrap`, else the built-in routers; `None` with `--no-dht`.
///
/// `RILL_FORBID_DHT_ROUTERS` (set by the test suite, the benchmarks and the demo, which must never send a
/// packet off the machine): the built-in routers are never used, so without `--dht-bootstrap` the node
/// starts with no one to ask (it still answers queries and learns nodes from peers' `port` messages).
fn dht_bootstrap(opts: &TransferOptions) -> Option<Vec<Bootstrap>> {
    if opts.no_dht {
        return None;
    }
    if !opts.dht_bootstrap.is_empty() {
        let nodes = opts.dht_bootstrap.iter().map(|h| match h.addr() {
            Some(addr) => Bootstrap::Addr(addr),
            None => Bootstrap::Host { host: h.host.clone(), port: h.port },
        });
        return Some(nodes.collect());
    }
    if routers_forbidden() {
        return Some(Vec::new());
    }
    Some(DEFAULT_ROUTERS.iter().map(|&(host, port)| Bootstrap::Host { host: host.into(), port }).collect())
}

fn routers_forbidden() -> bool {
    std::env::var_os("RILL_FORBID_DHT_ROUTERS").is_some_and(|v| !v.is_empty())
}

/// `--state-dir`, else `$XDG_STATE_HOME/rill`, else `~/.local/state/rill` (`None` without a home, and
/// under `RILL_FORBID_DHT_ROUTERS` unless `--state-dir` is given: tests do not share a state).
fn state_dir(opts: &TransferOptions) -> Option<PathBuf> {
    if opts.state_dir.is_some() || routers_forbidden() {
        return opts.state_dir.clone();
    }
    let env_dir = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    env_dir("XDG_STATE_HOME").map(|d| d.join("rill")).or_else(|| env_dir("HOME").map(|d| d.join(".local/state/rill")))
}

fn listen_addr(opts: &TransferOptions) -> SocketAddr {
    let ip = opts.bind.unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    SocketAddr::new(ip, opts.port.unwrap_or(cli::DEFAULT_PORT))
}

/// One torrent of the command line, loaded.
struct Loaded {
    /// As given: a path or a magnet link.
    arg: PathBuf,
    info_hash: rill::metainfo::InfoHash,
    kind: Kind,
}

enum Kind {
    Torrent { meta: Metainfo, info: Vec<u8> },
    Magnet(rill::magnet::Magnet),
}

/// Loads every torrent and magnet link on the command line before anything touches the network: a
/// malformed one is an error naming it; the same torrent twice is loaded once, with a note; two torrents
/// whose files would overlap on disk are an error naming both. A magnet whose metadata an earlier run kept
/// in DIR is loaded from there. `rill seed` (`magnets` false) needs `.torrent` files.
fn load_all(opts: &TransferOptions, magnets: bool) -> Result<Vec<Loaded>, Failure> {
    let mut loaded: Vec<Loaded> = Vec::with_capacity(opts.torrents.len());
    for arg in &opts.torrents {
        let text = arg.to_string_lossy();
        let (info_hash, kind) = if rill::magnet::is_magnet(&text) {
            if !magnets {
                return Err(Failure::SeedMagnet);
            }
            let magnet = rill::magnet::Magnet::parse(&text).map_err(Failure::Magnet)?;
            (magnet.info_hash, saved_metadata(&magnet, &opts.dir).unwrap_or(Kind::Magnet(magnet)))
        } else {
            let (meta, info) = load_torrent_and_info(arg)?;
            (meta.info_hash, Kind::Torrent { meta, info })
        };
        if let Some(first) = loaded.iter().find(|l| l.info_hash == info_hash) {
            err(format_args!("rill: {}: same torrent as {}; loaded once\n", arg.display(), first.arg.display()));
            continue;
        }
        loaded.push(Loaded { arg: arg.clone(), info_hash, kind });
    }
    let with_files: Vec<(PathBuf, &Metainfo)> = loaded
        .iter()
        .filter_map(|l| match &l.kind {
            Kind::Torrent { meta, .. } => Some((l.arg.clone(), meta)),
            Kind::Magnet(_) => None,
        })
        .collect();
    check_overlaps(&with_files, &opts.dir)?;
    Ok(loaded)
}

/// The metadata an earlier run fetched for `magnet` and kept beside its resume file, if it is there and
/// is that torrent (the trackers of the magnet are added to the ones the saved file lists).
fn saved_metadata(magnet: &rill::magnet::Magnet, dir: &Path) -> Option<Kind> {
    let path = dir.join(rill::storage::resume::metadata_file_name(&magnet.info_hash.0));
    let bytes = rill::storage::files::read_bounded(&path, MAX_TORRENT_BYTES).ok()?;
    let info = rill::metainfo::raw_info(&bytes)?.to_vec();
    let mut meta = Metainfo::from_vec(bytes).ok().filter(|m| m.info_hash == magnet.info_hash)?;
    for tier in &magnet.trackers {
        if !meta.trackers.contains(tier) {
            meta.trackers.push(tier.clone());
        }
    }
    log::info!("{}: metadata from {}", meta.name, path.display());
    Some(Kind::Torrent { meta, info })
}

/// Two different torrents must not use the same path under `dir`: neither the same file, nor a file of
/// one where the other needs a folder.
fn check_overlaps(torrents: &[(PathBuf, &Metainfo)], dir: &Path) -> Result<(), Failure> {
    let paths: Vec<Vec<&Path>> = torrents
        .iter()
        .map(|(_, meta)| meta.files.iter().filter(|f| !f.padding).map(|f| f.path.as_path()).collect())
        .collect();
    for (i, a) in paths.iter().enumerate() {
        for (j, b) in paths.iter().enumerate().skip(i + 1) {
            if let Some(path) = rill::metainfo::overlap(a, b) {
                return Err(Failure::Overlap {
                    a: torrents[i].0.clone(),
                    b: torrents[j].0.clone(),
                    path: dir.join(path),
                });
            }
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM set a flag from here on, instead of killing rill: the loop reads it once at its
/// start (a signal before the loop's own `Signals` source is not lost). The loop's source is registered
/// next to this handler; signal-hook runs every registered action, so the two do not conflict. `None`
/// if neither handler can be set.
fn stop_flag() -> Option<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let mut any = false;
    for signal in [SIGINT, SIGTERM] {
        // A handler once set stays for the process (signal-hook cannot restore the default action), so the
        // flag is handed on if either registration worked: a flag nobody read would make that signal a no-op.
        match signal_hook::flag::register(signal, Arc::clone(&flag)) {
            Ok(_) => any = true,
            Err(e) => log::warn!("cannot catch signal {signal}: {e}"),
        }
    }
    any.then_some(flag)
}

/// `rill download` and `rill seed`: every torrent in one engine, on one port, driven by one loop.
fn transfer(
    torrents: Vec<Loaded>,
    opts: &TransferOptions,
    mode: Mode,
    recheck: bool,
    save_torrent: Option<PathBuf>,
) -> Result<(), Failure> {
    if matches!(mode, Mode::Download { .. }) {
        rill::storage::files::ensure_dir(&opts.dir)
            .map_err(|error| Failure::CreateDir { path: opts.dir.clone(), error })?;
    }
    let dht_bootstrap = dht_bootstrap(opts);
    let stop = stop_flag();
    let ui_mode = UiMode::detect(opts.no_ui);
    let bound = Bound::bind(LoopConfig {
        listen: Some(listen_addr(opts)),
        // The default port may be taken by another client: any free port will do then.
        listen_fallback: opts.port.is_none(),
        stop_requested: stop,
    })
    .map_err(Failure::Loop)?;
    if let (Some(port), Some(0)) = (bound.port(), opts.port) {
        out(format_args!("listening on port {port}\n"));
    }
    // The OS generator for what must not be guessed (peer id, MSE keys, tracker key and transaction ids);
    // xoshiro, seeded from it, for fair choices.
    let mut entropy = Entropy::os().map_err(Failure::Entropy)?;
    let rng = Rng::seeded(entropy.next_u64());
    let peer_id = rill::peer::our_peer_id(&mut entropy);
    let now = bound.now();
    let config = engine_config(opts, &bound, dht_bootstrap, state_dir(opts));
    let mut engine = Engine::new(config, peer_id, rng, entropy, now);
    let multi = torrents.len() > 1;
    let mut names = Vec::with_capacity(torrents.len());
    for loaded in torrents {
        let options = TorrentOptions {
            dir: opts.dir.clone(),
            mode: mode.clone(),
            recheck,
            seed_ratio: opts.seed_ratio,
            uploaded_before: 0,
            extra_peers: opts.peers.clone(),
            save_torrent: save_torrent.clone(),
            dht: true,
        };
        let (name, source) = match loaded.kind {
            Kind::Torrent { meta, info } => {
                let info = (!info.is_empty()).then_some(info);
                (meta.name.clone(), Source::Metainfo { meta: Box::new(meta), info })
            }
            Kind::Magnet(m) => (m.name.clone().unwrap_or_else(|| m.info_hash.to_string()), Source::Magnet(m)),
        };
        match engine.add(source, options, now) {
            Ok(id) => names.push((id, name)),
            // `load_all` loaded each info-hash once.
            Err(AddError::Duplicate(_)) => {}
        }
    }
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&c| c >= 20).unwrap_or(80);
    let recorder = start_recorder(opts, &names, &engine, now)?;
    let mut view = View::new(ui_mode, columns);
    view.set_names(names);
    let redraw_every = view.mode().redraw_every();
    let mut event_loop = EventLoop::new(bound, engine, view, redraw_every).map_err(Failure::Loop)?;
    if let Some(recorder) = recorder {
        event_loop.set_recorder(recorder);
    }
    let outcomes = event_loop.run().map_err(Failure::Loop)?;
    report(&outcomes, multi)
}

/// The engine's settings from the command line: `state_dir` keeps the DHT's node file.
fn engine_config(
    opts: &TransferOptions,
    bound: &Bound,
    dht_bootstrap: Option<Vec<Bootstrap>>,
    state_dir: Option<PathBuf>,
) -> EngineConfig {
    EngineConfig {
        max_peers: opts.max_peers,
        max_half_open: 8,
        upload_slots: opts.max_upload_slots,
        up_limit: opts.up_limit,
        down_limit: opts.down_limit,
        listen_port: bound.port(),
        encryption: opts.encryption,
        utp: !opts.no_utp,
        trace: opts.trace.is_some() || opts.stats_json.is_some(),
        dht: dht_bootstrap.map(|bootstrap| DhtConfig {
            bootstrap,
            node_file: state_dir.map(|dir| dir.join("dht.dat")),
            ipv6: bound.has_ipv6(),
        }),
    }
}

/// `rill daemon`: an engine that stays up, torrents from the state file, the RPC server on the loop.
fn daemon(opts: &TransferOptions, rpc: &cli::RpcOptions) -> Result<(), Failure> {
    use rill::daemon::{Daemon, DaemonConfig};
    use rill::rpc::{RpcConfig, RpcServer};
    let state_dir = state_dir(opts).ok_or(Failure::NoStateDir)?;
    let cwd = std::env::current_dir().map_err(|error| Failure::CreateDir { path: opts.dir.clone(), error })?;
    let root = cwd.join(&opts.dir);
    rill::storage::files::ensure_dir(&root).map_err(|error| Failure::CreateDir { path: root.clone(), error })?;
    let state_dir = cwd.join(state_dir);
    rill::storage::files::ensure_dir(&state_dir)
        .map_err(|error| Failure::CreateDir { path: state_dir.clone(), error })?;
    let dht_bootstrap = dht_bootstrap(opts);
    let stop = stop_flag();
    let mut bound = Bound::bind(LoopConfig {
        listen: Some(listen_addr(opts)),
        listen_fallback: opts.port.is_none(),
        stop_requested: stop,
    })
    .map_err(Failure::Loop)?;
    let mut entropy = Entropy::os().map_err(Failure::Entropy)?;
    let rng = Rng::seeded(entropy.next_u64());
    let peer_id = rill::peer::our_peer_id(&mut entropy);
    let session_id: String = (0..3).map(|_| format!("{:016x}", entropy.next_u64())).collect();
    let now = bound.now();
    let config = engine_config(opts, &bound, dht_bootstrap, Some(state_dir.clone()));
    let dht = config.dht.is_some();
    let mut engine = Engine::new(config, peer_id, rng, entropy, now);
    engine.stay_up();
    let session = rill::rpc::transmission::SessionInfo {
        peer_port: bound.port().unwrap_or(0),
        peer_limit_global: opts.max_peers as u32,
        encryption: match opts.encryption {
            rill::peer::encryption::EncryptionPolicy::Require => "required",
            rill::peer::encryption::EncryptionPolicy::Prefer => "preferred",
            rill::peer::encryption::EncryptionPolicy::Off => "tolerated",
        },
        dht_enabled: dht,
        utp_enabled: !opts.no_utp,
        pex_enabled: true,
        ..Default::default()
    };
    let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut daemon = Daemon::new(
        DaemonConfig {
            download_dir: root,
            state_dir,
            watch_dir: rpc.watch.as_ref().map(|w| cwd.join(w)),
            seed_ratio: opts.seed_ratio,
            extra_peers: opts.peers.clone(),
            dht,
            session,
        },
        unix_now,
        now,
    );
    let restored = daemon.restore(&mut engine, now).map_err(Failure::Daemon)?;
    if restored > 0 {
        log::info!("restored {restored} torrent(s)");
    }
    let server = RpcServer::new(RpcConfig { auth: rpc.auth.clone(), host_allow: rpc.hosts.clone() }, session_id);
    let rpc_addr = bound.bind_rpc(rpc.bind, server, daemon).map_err(Failure::Loop)?;
    out(format_args!(
        "rill daemon: rpc on http://{rpc_addr}/transmission/rpc, web page http://{rpc_addr}/, peers on port {}\n",
        bound.port().unwrap_or(0)
    ));
    let recorder = start_recorder(opts, &[], &engine, now)?;
    let mut view = View::new(UiMode::Plain, 200);
    view.always_name_torrents();
    let mut event_loop = EventLoop::new(bound, engine, view, DAEMON_STATUS_EVERY).map_err(Failure::Loop)?;
    if let Some(recorder) = recorder {
        event_loop.set_recorder(recorder);
    }
    event_loop.run().map_err(Failure::Loop)?;
    Ok(())
}

/// How often the daemon prints its torrents' status lines (its log is a journal, not a screen).
const DAEMON_STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// `--trace` and `--stats-json`: opens the trace file and puts a first stats document in place (so a path
/// that cannot be written fails before any traffic), then starts the recorder's helper thread.
fn start_recorder(
    opts: &TransferOptions,
    names: &[(rill::engine::TorrentId, String)],
    engine: &Engine,
    now: rill::time::Timestamp,
) -> Result<Option<rill::observe::trace::Recorder>, Failure> {
    if opts.trace.is_none() && opts.stats_json.is_none() {
        return Ok(None);
    }
    let trace = match &opts.trace {
        Some(path) => Some(
            rill::storage::files::create_truncated(path)
                .map_err(|error| Failure::Output { path: path.clone(), error })?,
        ),
        None => None,
    };
    if let Some(path) = &opts.stats_json {
        let first = rill::observe::stats::Stats::new(names).document(now, &engine.snapshot(), 0);
        rill::storage::files::write_atomically(path, &first)
            .map_err(|error| Failure::Output { path: path.clone(), error })?;
    }
    let path = opts.trace.clone().or_else(|| opts.stats_json.clone()).unwrap_or_default();
    rill::observe::trace::Recorder::start(trace, opts.stats_json.clone(), names)
        .map(Some)
        .map_err(|error| Failure::Output { path, error })
}

/// The closing lines, one set per torrent (prefixed by its name when several ran); the torrents that
/// failed or stopped short make the error.
fn report(outcomes: &[Outcome], multi: bool) -> Result<(), Failure> {
    let mut failed = Vec::new();
    // Write errors are ignored here (`let _`): the run's outcome decides the exit code.
    let mut stdout = std::io::stdout().lock();
    for o in outcomes {
        let name = if multi { o.name.clone() } else { String::new() };
        let prefix = if multi { format!("{}: ", o.name) } else { String::new() };
        if let Some(e) = &o.error {
            failed.push((name, e.clone()));
            continue;
        }
        if o.checked_only {
            // Stopped during the check: the view said how far it got.
            continue;
        }
        if !o.complete {
            if o.interrupted {
                let (have, wanted) = (ui::bytes(o.have_bytes), ui::bytes(o.wanted_bytes));
                let _ = writeln!(stdout, "{prefix}stopped: {have} of {wanted} verified");
            } else {
                failed.push((name, "stopped before the download completed".to_string()));
            }
            continue;
        }
        if o.downloaded == 0 && o.uploaded > 0 {
            let secs = o.elapsed.as_secs_f64().max(1e-3);
            let _ = writeln!(
                stdout,
                "{prefix}seeded: {} uploaded in {} ({}/s average)",
                ui::bytes(o.uploaded),
                rill::observe::units::duration(o.elapsed),
                ui::bytes((o.uploaded as f64 / secs) as u64)
            );
        } else {
            let _ =
                writeln!(stdout, "{prefix}{}", ui::render_summary(o.wanted_bytes, o.elapsed, o.peers_used, o.uploaded));
        }
        if o.wasted > 0 || o.hash_failures > 0 {
            let _ = writeln!(
                stdout,
                "{prefix}wasted: {} ({} bytes), {} piece{} failed verification",
                ui::bytes(o.wasted),
                o.wasted,
                o.hash_failures,
                if o.hash_failures == 1 { "" } else { "s" }
            );
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Torrents(failed))
    }
}

/// `rill create`: walk, hash with a progress line on a terminal, encode, check by parsing back, write
/// atomically (a temporary beside OUT, then rename).
fn create_torrent(o: &CreateOptions) -> Result<(), Failure> {
    use rill::metainfo::create::{default_piece_length, NewTorrent};
    use rill::observe::units;
    use rill::storage::scan;
    use std::io::IsTerminal;

    if o.output.exists() && !o.force {
        return Err(Failure::OutputExists(o.output.clone()));
    }
    let scanned = scan::scan(&o.source, o.include_hidden).map_err(Failure::Scan)?;
    let mut err = std::io::stderr();
    for (path, why) in &scanned.skipped {
        let _ = writeln!(err, "rill: left out {} ({why})", path.display());
    }
    let total: u64 = scanned.files.iter().map(|f| f.length).sum();
    let piece_length = o.piece_size.unwrap_or_else(|| default_piece_length(total));
    let torrent = NewTorrent {
        name: scanned.name.clone(),
        files: scanned.files.clone(),
        single_file: scanned.single_file,
        piece_length,
        trackers: o.trackers.clone(),
        web_seeds: o.web_seeds.clone(),
        private: o.private,
        comment: o.comment.clone(),
        source: o.source_tag.clone(),
        created_by: format!("rill {}", env!("CARGO_PKG_VERSION")),
        creation_date: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs()),
    };
    let live = err.is_terminal();
    let started = std::time::Instant::now();
    let mut last_shown = None;
    let pieces = scan::hash_pieces(&scanned.sources, &scanned.files, piece_length, |done| {
        let pct = done * 100 / total.max(1);
        if live && last_shown != Some(pct) {
            let _ = write!(err, "\rhashing {pct:3}% ({} of {})", units::bytes(done), units::bytes(total));
            last_shown = Some(pct);
        }
    })
    .map_err(|e| Failure::Create(e.to_string()))?;
    if live {
        let _ = writeln!(err);
    }
    let bytes = torrent.encode(&pieces);
    let meta =
        Metainfo::from_bytes(&bytes).map_err(|e| Failure::Create(format!("the new torrent does not parse: {e}")))?;
    if let Err(e) = rill::storage::files::write_atomically(&o.output, &bytes) {
        return Err(Failure::Create(format!("cannot write {}: {e}", o.output.display())));
    }
    let _ = writeln!(
        std::io::stdout(),
        "{}: {} ({} files, {} in {} pieces of {}), info-hash {}, hashed in {}",
        o.output.display(),
        meta.name,
        scanned.files.len(),
        units::bytes(total),
        meta.piece_hashes.len(),
        units::bytes(u64::from(piece_length)),
        meta.info_hash,
        units::duration(started.elapsed()),
    );
    Ok(())
}
