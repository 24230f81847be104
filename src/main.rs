//! The `rill` binary: argv → command → run → exit code.
//!
//! Owns: process concerns only — logging set-up, the OS `Entropy` source (peer id, keys) and the RNG
//! seed, reading the `.torrent` file, printing results, mapping errors to exit codes (0 ok, 1 runtime
//! failure, 2 bad input).
//! Must not: contain protocol logic.

use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

use rill::bitfield::Bitfield;
use rill::cli::{self, Command, CreateOptions, TransferOptions};
use rill::event_loop::{EventLoop, RunConfig, UiMode};
use rill::geometry::Geometry;
use rill::metainfo::Metainfo;
use rill::observe::{info, ui};
use rill::rng::{Entropy, Rng};
use rill::storage::{verify, Storage};
use rill::swarm::Swarm;

/// How a command failed, and which exit code that means.
enum Failure {
    /// Bad usage or bad input: exit 2.
    Input(String),
    /// The run itself failed: exit 1.
    Runtime(String),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_target(true).init();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            err(format_args!("rill: {e}\n"));
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            err(format_args!("rill: {msg}\n"));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            err(format_args!("rill: {msg}\n"));
            ExitCode::from(1)
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
            let magnet = rill::magnet::Magnet::parse(&link).map_err(|e| Failure::Input(e.to_string()))?;
            if scrape {
                return Err(Failure::Input("--scrape needs a .torrent file; a magnet link has no metadata".into()));
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
                Err(e) => return Err(Failure::Runtime(format!("cannot write to stdout: {e}"))),
            }
            drop(listing);
            if scrape {
                if meta.trackers.is_empty() {
                    return Err(Failure::Input(format!("{}: the torrent lists no trackers", torrent.display())));
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
        Command::Download { opts, seed, files, sequential, recheck } => {
            let meta = load_torrent(&opts.torrent)?;
            let wanted_files = match &files {
                Some(list) => select_files(&meta, list)?,
                None => vec![true; meta.files.len()],
            };
            download(&meta, &opts, &wanted_files, sequential, seed, recheck)
        }
        Command::Create(opts) => create_torrent(&opts),
        Command::Seed { opts, partial, recheck } => {
            let meta = load_torrent(&opts.torrent)?;
            seed(&meta, &opts, partial, recheck)
        }
    }
}

/// Largest `.torrent` file rill reads: 64 MiB. A torrent with 200,000 files is about 10 MiB; anything
/// much bigger is not a torrent, and reading it whole would cost that much memory.
const MAX_TORRENT_BYTES: u64 = 64 * 1024 * 1024;

/// Reads and parses a `.torrent` file: a regular file or a pipe (`rill info <(cat x.torrent)`), at most
/// [`MAX_TORRENT_BYTES`]. The bytes are dropped once parsed.
fn load_torrent(path: &Path) -> Result<Metainfo, Failure> {
    use std::io::Read;
    let cannot = |e: std::io::Error| Failure::Input(format!("cannot read {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?;
    if kind.is_dir() {
        return Err(Failure::Input(format!("cannot read {}: it is a directory", path.display())));
    }
    // The size of a regular file sizes the buffer exactly; a pipe's is unknown (0).
    let hint = if kind.is_file() { kind.len().min(MAX_TORRENT_BYTES) + 1 } else { 64 * 1024 };
    let mut bytes = Vec::with_capacity(hint as usize);
    file.take(MAX_TORRENT_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_TORRENT_BYTES {
        return Err(Failure::Input(format!(
            "{}: larger than {} MiB, too big for a torrent file",
            path.display(),
            MAX_TORRENT_BYTES / (1024 * 1024)
        )));
    }
    Metainfo::from_vec(bytes).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))
}

/// Maps `--files` indices (as `rill info` numbers them: non-padding files) to a per-file flag.
fn select_files(meta: &Metainfo, list: &[usize]) -> Result<Vec<bool>, Failure> {
    let numbered: Vec<usize> = meta.selectable_files().map(|(_, f)| f).map(|f| file_index(meta, f)).collect();
    let mut wanted = vec![false; meta.files.len()];
    for &n in list {
        let Some(&i) = numbered.get(n) else {
            return Err(Failure::Input(format!(
                "--files: no file {n} (the torrent has {} files, numbered from 0)",
                numbered.len()
            )));
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
fn listen_addr(opts: &TransferOptions) -> SocketAddr {
    let ip = opts.bind.unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    SocketAddr::new(ip, opts.port.unwrap_or(cli::DEFAULT_PORT))
}

fn download(
    meta: &Metainfo,
    opts: &TransferOptions,
    wanted_files: &[bool],
    sequential: bool,
    seed: bool,
    recheck: bool,
) -> Result<(), Failure> {
    let stop = stop_flag();
    let geometry = Geometry::new(meta.piece_length, meta.total_length);
    let n = geometry.piece_count();
    let mut wanted = Bitfield::new(n);
    for (i, f) in meta.files.iter().enumerate() {
        if !wanted_files[i] || f.padding || f.length == 0 {
            continue;
        }
        let first = (f.offset / u64::from(meta.piece_length)) as u32;
        let last = ((f.offset + f.length - 1) / u64::from(meta.piece_length)) as u32;
        for p in first..=last {
            wanted.set(p);
        }
    }
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| Failure::Runtime(format!("cannot create {}: {e}", opts.dir.display())))?;
    let mut storage =
        Storage::open(&opts.dir, meta, |i| wanted_files[i]).map_err(|e| Failure::Runtime(e.to_string()))?;
    let ui_mode = UiMode::detect(opts.no_ui);
    let Some(restored) = restore(meta, &mut storage, &geometry, recheck, ui_mode, stop.as_ref())? else {
        return Ok(());
    };
    let swarm = Swarm::new(geometry, restored.have, wanted, sequential).with_unconfirmed(&restored.unconfirmed);
    let config = run_config(opts, ui_mode, seed, stop);
    run_loop(meta, swarm, storage, config, opts)
}

/// SIGINT and SIGTERM set a flag from here on, instead of killing rill: the data check polls it between
/// pieces, and the loop reads it once at its start (a signal between the check and the loop's own
/// `Signals` source is not lost). The loop's source is registered next to this handler; signal-hook
/// runs every registered action, so the two do not conflict. `None` if neither handler can be set (then
/// a signal during the check kills rill as before).
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

/// What is already on disk: pieces hashed now, and pieces the resume file vouches for (unconfirmed:
/// hashed later, before they are served or counted). Shows progress while hashing. `None`: a signal
/// stopped the check; what was checked is in the resume file, and the command should exit 0.
fn restore(
    meta: &Metainfo,
    storage: &mut Storage,
    geometry: &Geometry,
    recheck: bool,
    ui_mode: UiMode,
    stop: Option<&Arc<AtomicBool>>,
) -> Result<Option<verify::Restored>, Failure> {
    let resume = if recheck {
        None
    } else {
        storage.load_resume(&meta.info_hash.0, geometry.piece_count()).map_err(|e| Failure::Runtime(e.to_string()))?
    };
    let mut last_shown = u64::MAX;
    let mut printing = true;
    let stopped = || stop.is_some_and(|flag| flag.load(Ordering::Relaxed));
    let restored = verify::restore(storage, geometry, &meta.piece_hashes, resume.as_ref(), recheck, |done, total| {
        let pct = u64::from(done) * 100 / u64::from(total.max(1));
        let shown = if ui_mode == UiMode::Live { pct } else { pct / 10 * 10 };
        if shown != last_shown && printing {
            printing = if ui_mode == UiMode::Live {
                out(format_args!("\rchecking existing data {pct:3}%"))
            } else {
                out(format_args!("checking existing data {shown}%\n"))
            };
            last_shown = shown;
        }
        !stopped()
    })
    .map_err(|e| Failure::Runtime(e.to_string()))?;
    if ui_mode == UiMode::Live && restored.checked > 0 {
        out(format_args!("\n"));
    }
    if restored.interrupted || stopped() {
        // Record what is known, so the next start hashes only what was not reached.
        let mut recorded = restored.have.clone();
        for p in restored.unconfirmed.iter_ones() {
            recorded.set(p);
        }
        storage.save_resume(&meta.info_hash.0, &recorded).map_err(|e| Failure::Runtime(e.to_string()))?;
        out(format_args!(
            "stopped during the data check: {} pieces checked, {} of {} known good\n",
            restored.checked,
            recorded.count_ones(),
            geometry.piece_count()
        ));
        return Ok(None);
    }
    if restored.trusted > 0 || restored.checked > 0 {
        out(format_args!(
            "{} of {} pieces already here ({} from the resume file, {} checked)\n",
            restored.have.count_ones() + restored.trusted,
            geometry.piece_count(),
            restored.trusted,
            restored.checked,
        ));
    }
    Ok(Some(restored))
}

fn run_config(
    opts: &TransferOptions,
    ui: UiMode,
    keep_seeding: bool,
    stop_requested: Option<Arc<AtomicBool>>,
) -> RunConfig {
    RunConfig {
        stop_requested,
        max_peers: opts.max_peers,
        max_half_open: 8,
        listen: Some(listen_addr(opts)),
        // The default port may be taken by another client: any free port will do then.
        listen_fallback: opts.port.is_none(),
        ui,
        extra_peers: opts.peers.clone(),
        keep_seeding,
        seed_ratio: opts.seed_ratio,
        up_limit: opts.up_limit,
        down_limit: opts.down_limit,
        upload_slots: opts.max_upload_slots,
        columns: std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&c| c >= 20).unwrap_or(80),
    }
}

fn run_loop(
    meta: &Metainfo,
    swarm: Swarm,
    storage: Storage,
    config: RunConfig,
    opts: &TransferOptions,
) -> Result<(), Failure> {
    // The OS generator for what must not be guessed (peer id, MSE keys, tracker key and transaction
    // ids); xoshiro, seeded from it, for fair choices.
    let mut entropy = Entropy::os().map_err(|e| Failure::Runtime(e.to_string()))?;
    let rng = Rng::seeded(entropy.next_u64());
    let id = rill::peer::our_peer_id(&mut entropy);
    let event_loop =
        EventLoop::new(meta, swarm, storage, config, id, rng, entropy).map_err(|e| Failure::Runtime(e.to_string()))?;
    if let Some(port) = event_loop.listen_port() {
        if opts.port == Some(0) {
            out(format_args!("listening on port {port}\n"));
        }
    }
    let outcome = event_loop.run().map_err(|e| Failure::Runtime(e.to_string()))?;
    // Write errors are ignored here (`let _`): the run's outcome decides the exit code.
    let mut out = std::io::stdout().lock();
    if !outcome.complete {
        if outcome.interrupted {
            let _ = writeln!(
                out,
                "stopped: {} of {} verified",
                ui::bytes(outcome.have_bytes),
                ui::bytes(outcome.wanted_bytes)
            );
            return Ok(());
        }
        return Err(Failure::Runtime("stopped before the download completed".into()));
    }
    if outcome.downloaded == 0 && outcome.uploaded > 0 {
        let secs = outcome.elapsed.as_secs_f64().max(1e-3);
        let _ = writeln!(
            out,
            "seeded: {} uploaded in {} ({}/s average)",
            ui::bytes(outcome.uploaded),
            rill::observe::units::duration(outcome.elapsed),
            ui::bytes((outcome.uploaded as f64 / secs) as u64)
        );
    } else {
        let _ = writeln!(
            out,
            "{}",
            ui::render_summary(outcome.wanted_bytes, outcome.elapsed, outcome.peers_used, outcome.uploaded)
        );
    }
    if outcome.wasted > 0 || outcome.hash_failures > 0 {
        let _ = writeln!(
            out,
            "wasted: {} ({} bytes), {} piece{} failed verification",
            ui::bytes(outcome.wasted),
            outcome.wasted,
            outcome.hash_failures,
            if outcome.hash_failures == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// `rill seed`: hash what the resume file does not vouch for (with progress), refuse if pieces are
/// missing unless `--partial`, then seed; vouched-for pieces are hashed in the background and served only
/// once they pass. `recheck` hashes everything first.
fn seed(meta: &Metainfo, opts: &TransferOptions, partial: bool, recheck: bool) -> Result<(), Failure> {
    let stop = stop_flag();
    let geometry = Geometry::new(meta.piece_length, meta.total_length);
    let n = geometry.piece_count();
    let mut storage = Storage::open(&opts.dir, meta, |_| false).map_err(|e| Failure::Runtime(e.to_string()))?;
    let ui_mode = UiMode::detect(opts.no_ui);
    let Some(restored) = restore(meta, &mut storage, &geometry, recheck, ui_mode, stop.as_ref())? else {
        return Ok(());
    };
    let present = restored.have.count_ones() + restored.trusted;
    let missing = n - present;
    if missing > 0 && !partial {
        let root = meta.files.first().map(|f| f.path.clone()).unwrap_or_default();
        let root = root.components().next().map(|c| opts.dir.join(c.as_os_str())).unwrap_or_default();
        return Err(Failure::Runtime(format!(
            "{}: {missing} of {n} pieces are missing or damaged; use --partial to seed what is there",
            root.display()
        )));
    }
    out(format_args!("{present} of {n} pieces present; seeding\n"));
    // A seed fetches nothing: only what was hashed is wanted, so an unconfirmed piece that fails its
    // check is dropped rather than downloaded (and `left` stays 0 for the trackers).
    let wanted = restored.have.clone();
    let swarm = Swarm::new(geometry, restored.have, wanted, false).with_unconfirmed(&restored.unconfirmed);
    let config = run_config(opts, ui_mode, true, stop);
    run_loop(meta, swarm, storage, config, opts)
}

/// `rill create`: walk, hash with a progress line on a terminal, encode, check by parsing back, write
/// atomically (a temporary beside OUT, then rename).
fn create_torrent(o: &CreateOptions) -> Result<(), Failure> {
    use rill::metainfo::create::{default_piece_length, NewTorrent};
    use rill::observe::units;
    use rill::storage::scan;
    use std::io::IsTerminal;

    if o.output.exists() && !o.force {
        return Err(Failure::Input(format!("{} exists (--force overwrites it)", o.output.display())));
    }
    let scanned = scan::scan(&o.source, o.include_hidden).map_err(|e| Failure::Input(e.to_string()))?;
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
    .map_err(|e| Failure::Runtime(e.to_string()))?;
    if live {
        let _ = writeln!(err);
    }
    let bytes = torrent.encode(&pieces);
    let meta =
        Metainfo::from_bytes(&bytes).map_err(|e| Failure::Runtime(format!("the new torrent does not parse: {e}")))?;
    let mut tmp_name = o.output.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".rill-tmp");
    let tmp = o.output.with_file_name(tmp_name);
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &o.output));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::Runtime(format!("cannot write {}: {e}", o.output.display())));
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
