//! The `rill` binary: argv → command → run → exit code.
//!
//! Owns: process concerns only — logging set-up, OS entropy for the RNG and peer id, reading the
//! `.torrent` file, printing results, mapping errors to exit codes (0 ok, 1 runtime failure, 2 bad input).
//! Must not: contain protocol logic.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use rill::bitfield::Bitfield;
use rill::cli::{self, Command, TransferOptions};
use rill::event_loop::{EventLoop, RunConfig, UiMode};
use rill::geometry::Geometry;
use rill::metainfo::Metainfo;
use rill::observe::{info, ui};
use rill::rng::Rng;
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
            eprintln!("rill: {e}");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            eprintln!("rill: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("rill: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Command::Version => {
            println!("rill {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Info { torrent, scrape } => {
            let meta = load_torrent(&torrent)?;
            print!("{}", info::render_info(&meta));
            if scrape {
                if meta.trackers.is_empty() {
                    return Err(Failure::Input(format!("{}: the torrent lists no trackers", torrent.display())));
                }
                let outcomes = rill::event_loop::scrape::scrape(
                    &meta.trackers,
                    meta.info_hash,
                    std::time::Duration::from_secs(15),
                );
                println!("scrape:");
                for outcome in outcomes {
                    println!("  {outcome}");
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
        Command::Seed { opts, partial } => {
            let meta = load_torrent(&opts.torrent)?;
            seed(&meta, &opts, partial)
        }
    }
}

fn load_torrent(path: &Path) -> Result<Metainfo, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
    Metainfo::from_bytes(&bytes).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))
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

fn os_seed() -> u64 {
    let mut buf = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            return u64::from_le_bytes(buf);
        }
    }
    // No /dev/urandom: the process id and the time are enough for a peer id.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}

fn peer_id(rng: &mut Rng) -> [u8; 20] {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut id = *b"-RL0001-............";
    for b in &mut id[8..] {
        *b = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
    }
    id
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
    let have = restore(meta, &mut storage, &geometry, recheck, ui_mode)?;
    let swarm = Swarm::new(geometry, have, wanted, sequential);
    let mut rng = Rng::seeded(os_seed());
    let id = peer_id(&mut rng);
    let config = run_config(opts, ui_mode, seed);
    run_loop(meta, swarm, storage, config, id, rng, opts)
}

/// What is already on disk: pieces the resume file vouches for, plus every other piece whose data is
/// present and hashes right. Shows progress while hashing.
fn restore(
    meta: &Metainfo,
    storage: &mut Storage,
    geometry: &Geometry,
    recheck: bool,
    ui_mode: UiMode,
) -> Result<Bitfield, Failure> {
    let resume = if recheck {
        None
    } else {
        storage.load_resume(&meta.info_hash.0, geometry.piece_count()).map_err(|e| Failure::Runtime(e.to_string()))?
    };
    let mut last_shown = u64::MAX;
    let restored = verify::restore(storage, geometry, &meta.piece_hashes, resume.as_ref(), recheck, |done, total| {
        let pct = u64::from(done) * 100 / u64::from(total.max(1));
        let shown = if ui_mode == UiMode::Live { pct } else { pct / 10 * 10 };
        if shown != last_shown {
            if ui_mode == UiMode::Live {
                print!("\rchecking existing data {pct:3}%");
                let _ = std::io::stdout().flush();
            } else {
                println!("checking existing data {shown}%");
            }
            last_shown = shown;
        }
    })
    .map_err(|e| Failure::Runtime(e.to_string()))?;
    if ui_mode == UiMode::Live && restored.checked > 0 {
        println!();
    }
    if restored.trusted > 0 || restored.checked > 0 {
        println!(
            "{} of {} pieces already here ({} from the resume file, {} checked)",
            restored.have.count_ones(),
            geometry.piece_count(),
            restored.trusted,
            restored.checked
        );
    }
    Ok(restored.have)
}

fn run_config(opts: &TransferOptions, ui: UiMode, keep_seeding: bool) -> RunConfig {
    RunConfig {
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
    id: [u8; 20],
    rng: Rng,
    opts: &TransferOptions,
) -> Result<(), Failure> {
    let event_loop =
        EventLoop::new(meta, swarm, storage, config, id, rng).map_err(|e| Failure::Runtime(e.to_string()))?;
    if let Some(port) = event_loop.listen_port() {
        if opts.port == Some(0) {
            println!("listening on port {port}");
        }
    }
    let outcome = event_loop.run().map_err(|e| Failure::Runtime(e.to_string()))?;
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

/// `rill seed`: check the data piece by piece (with progress), refuse if pieces are missing unless
/// `--partial`, then seed.
fn seed(meta: &Metainfo, opts: &TransferOptions, partial: bool) -> Result<(), Failure> {
    let geometry = Geometry::new(meta.piece_length, meta.total_length);
    let n = geometry.piece_count();
    let mut storage = Storage::open(&opts.dir, meta, |_| false).map_err(|e| Failure::Runtime(e.to_string()))?;
    let ui_mode = UiMode::detect(opts.no_ui);
    let have = restore(meta, &mut storage, &geometry, false, ui_mode)?;
    let missing = n - have.count_ones();
    if missing > 0 && !partial {
        let root = meta.files.first().map(|f| f.path.clone()).unwrap_or_default();
        let root = root.components().next().map(|c| opts.dir.join(c.as_os_str())).unwrap_or_default();
        return Err(Failure::Runtime(format!(
            "{}: {missing} of {n} pieces are missing or damaged; use --partial to seed what is there",
            root.display()
        )));
    }
    println!("{} of {n} pieces present; seeding", have.count_ones());
    let wanted = have.clone();
    let swarm = Swarm::new(geometry, have, wanted, false);
    let mut rng = Rng::seeded(os_seed());
    let id = peer_id(&mut rng);
    let config = run_config(opts, ui_mode, true);
    run_loop(meta, swarm, storage, config, id, rng, opts)
}
