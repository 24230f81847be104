//! Command line: argv → a typed `Command`, and the help texts.
//!
//! Owns: flag names, defaults, usage errors (exit code 2). Must not: open files or touch the network.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::observe::units::parse_rate;

pub const MAIN_HELP: &str = "\
rill: a low-footprint BitTorrent client

USAGE:
    rill download FILE.torrent... [-d DIR] [OPTIONS]  fetch torrents' content
    rill seed FILE.torrent... [-d DIR] [OPTIONS]      check existing data, then seed it
    rill info FILE.torrent [--scrape]               describe a torrent (and ask its trackers for counts)
    rill create PATH -o OUT.torrent [OPTIONS]       make a torrent of a file or folder
    rill daemon -d DIR [OPTIONS]                    run as a service, driven by Transmission clients

Run `rill download --help` (or seed, info, daemon) for the options of each command.

GLOBAL:
    -h, --help       print help
    -V, --version    print the version
    RUST_LOG=debug   more detail on stderr (per module: RUST_LOG=rill::tracker=debug)

EXIT CODES:
    0 success, 1 runtime failure (network, disk), 2 bad usage or a malformed torrent
";

pub const DOWNLOAD_HELP: &str = "\
rill download: fetch torrents' content, each into DIR/<name>

USAGE:
    rill download FILE.torrent... [OPTIONS]
    rill download 'magnet:?xt=urn:btih:...' [OPTIONS]

    A magnet link's metadata is fetched from peers (its trackers, x.pe peers, --peer) and checked against
    its info-hash; it is kept as DIR/.rill-<info-hash>.torrent, so a restart does not fetch it again.
    Several torrents run at once in one process, on one port, sharing --max-peers and the rate limits;
    rill exits 0 once every one is complete, 1 if any failed (naming it).

OPTIONS:
    -d, --dir DIR          where to put the content (default: current directory)
        --no-ui            plain progress lines every few seconds instead of the live view
        --port N           port to accept peers on (default 6881; 0 picks a free port)
        --bind IP          address to accept peers on (default: all, IPv6 and IPv4)
        --max-peers N      most connections at once (default 50)
        --peer IP:PORT     also connect to this peer (may repeat)
        --seed             keep seeding after the download until Ctrl-C
        --seed-ratio R     with --seed: stop once uploaded/size reaches R
        --up-limit RATE    upload cap in bytes/s, e.g. 500k, 2M (k = 1024)
        --down-limit RATE  download cap in bytes/s
        --files LIST       only these files, numbered as `rill info` prints them: 0,2,5-7
                           (one torrent only)
        --sequential       fetch pieces in order (for playing while downloading)
        --save-torrent FILE  with one magnet link: write the fetched metainfo to FILE as a .torrent
        --recheck          hash existing data in full instead of trusting the resume file
        --encryption MODE  prefer (default): plaintext or RC4, as the peer wants; require: RC4 only
                           (MSE, both ways); off: plaintext only
        --no-utp           TCP only: no uTP connections either way
        --dht-bootstrap HOST:PORT  start the DHT from this node instead of the built-in routers
                           (may repeat)
        --no-dht           no DHT: peers only from trackers, peer exchange and --peer
        --state-dir DIR    where the DHT keeps its node id and nodes between runs
                           (default: $XDG_STATE_HOME/rill, else ~/.local/state/rill)
        --trace FILE       write every event of the run to FILE as JSON Lines (see docs/trace.md)
        --stats-json FILE  keep statistics in FILE as one JSON document, rewritten every few
                           seconds and at exit (per-peer bytes, latency percentiles, failures)
    -h, --help             print this help

DHT:
    Torrents that are not private, and magnet links, find peers through the mainline DHT too (BEP 5),
    and announce there. The status line shows the DHT nodes known and the peers the DHT gave.

CHECKING:
    Data the resume file vouches for (every file it touches has the recorded size and mtime) is not
    hashed at start; it is hashed in the background while the rest downloads (4 MiB per loop turn),
    and the download is never reported complete before all of it is. A piece whose data changed is
    fetched again. Everything else on disk is hashed at start. Ctrl-C or SIGTERM during that check
    stops cleanly (exit 0) and records what was checked.
";

pub const SEED_HELP: &str = "\
rill seed: seed the data at DIR/<name> until Ctrl-C; no piece is served before it is hashed

USAGE:
    rill seed FILE.torrent... [OPTIONS]

    Several torrents are checked one after the other, then seeded from one process on one port.

OPTIONS:
    -d, --dir DIR          where the content is (default: current directory)
        --partial          seed whatever pieces are present instead of refusing
        --recheck          hash all the data before seeding instead of trusting the resume file
        --no-ui            plain progress lines instead of the live view
        --port N           port to accept peers on (default 6881; 0 picks a free port)
        --bind IP          address to accept peers on (default: all, IPv6 and IPv4)
        --max-peers N      most connections at once (default 50)
        --peer IP:PORT     also connect to this peer (may repeat)
        --seed-ratio R     stop once uploaded/size reaches R
        --up-limit RATE    upload cap in bytes/s, e.g. 500k, 2M
        --max-upload-slots N  peers unchoked at once, per torrent (default 4)
        --encryption MODE  prefer (default): plaintext or RC4, as the peer wants; require: RC4 only
                           (MSE, both ways); off: plaintext only
        --no-utp           TCP only: no uTP connections either way
        --dht-bootstrap HOST:PORT  start the DHT from this node instead of the built-in routers
                           (may repeat)
        --no-dht           no DHT: peers only from trackers, peer exchange and --peer
        --state-dir DIR    where the DHT keeps its node id and nodes between runs
                           (default: $XDG_STATE_HOME/rill, else ~/.local/state/rill)
        --trace FILE       write every event of the run to FILE as JSON Lines (see docs/trace.md)
        --stats-json FILE  keep statistics in FILE as one JSON document, rewritten every few
                           seconds and at exit (per-peer bytes, latency percentiles, failures)
    -h, --help             print this help

CHECKING:
    Pieces the resume file does not vouch for are hashed before seeding starts. Pieces it vouches for
    (same file sizes and mtimes) are hashed in the background after start (4 MiB per loop turn, about
    1 s of CPU per GiB) and are neither advertised nor served until they pass; one that fails is
    reported by number and never served. --recheck hashes everything before seeding instead.
";

pub const INFO_HELP: &str = "\
rill info: describe a torrent

USAGE:
    rill info FILE.torrent [--scrape]

OPTIONS:
        --scrape   ask every tracker for its seeder, leecher and completed counts
    -h, --help     print this help
";

pub const CREATE_HELP: &str = "\
rill create: make a v1 torrent of a file or a folder

USAGE:
    rill create PATH -o OUT.torrent [OPTIONS]

OPTIONS:
    -o, --output FILE      where to write the torrent (required)
        --tracker URL      announce URL; may repeat, each its own tier; URLs joined by ',' share a tier
        --web-seed URL     web seed (BEP 19 url-list); may repeat
        --piece-size SIZE  piece length, a power of two from 16k to 16M, e.g. 256k, 1M
                           (default: 1,000 to 2,000 pieces for the content's size)
        --private          private torrent: its trackers only, no DHT or peer exchange
        --comment TEXT     free text shown by clients
        --source TEXT      `source` key (private trackers ask for it; it changes the info-hash)
        --include-hidden   include files and folders whose names start with '.'
        --force            overwrite OUT.torrent if it exists
    -h, --help             print this help

Files are taken in byte order of their paths; symbolic links and special files are left out with a note.
";

pub const DAEMON_HELP: &str = "\
rill daemon: run until SIGTERM, driven over Transmission's RPC and a web page

USAGE:
    rill daemon -d DIR [OPTIONS]

    Torrents are added at run time: with transmission-remote (`transmission-remote 127.0.0.1:9091 -a
    FILE.torrent`, or a magnet link), Transmission's GUIs and web clients, rill's own page at
    http://127.0.0.1:9091/, or the watch folder. They download into DIR (or a folder below it) and seed
    until removed. The list, each torrent's source, folder, stopped or not and file selection are kept
    in the state directory and restored at the next start; progress comes back from each torrent's
    resume file, so nothing verified is fetched again.

OPTIONS:
    -d, --dir DIR          the download root (torrent-add may name a folder below it, nothing outside)
        --state-dir DIR    where the torrent list, kept .torrent files and DHT nodes live
                           (default: $XDG_STATE_HOME/rill, else ~/.local/state/rill)
        --rpc-bind IP:PORT where the RPC and the page listen (default 127.0.0.1:9091; loopback only
                           unless you give another address)
        --rpc-auth USER:PASS  require HTTP Basic credentials (transmission-remote -n USER:PASS)
        --rpc-host NAME    also accept requests for this host name (may repeat; `*.example.org` works);
                           IP addresses and localhost always are (DNS-rebinding guard)
        --watch DIR        add every *.torrent and *.magnet file that appears in DIR (renamed .added,
                           or .invalid when malformed)
        --port N, --bind IP, --max-peers N, --peer IP:PORT, --seed-ratio R, --up-limit RATE,
        --down-limit RATE, --encryption MODE, --no-utp, --dht-bootstrap HOST:PORT, --no-dht,
        --trace FILE, --stats-json FILE
                           as for `rill download`
    -h, --help             print this help
";

/// Where and how `rill daemon` serves its RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcOptions {
    pub bind: SocketAddr,
    pub auth: Option<(String, String)>,
    pub hosts: Vec<String>,
    pub watch: Option<PathBuf>,
}

pub const DEFAULT_RPC_BIND: &str = "127.0.0.1:9091";

/// Options of `rill create`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOptions {
    pub source: PathBuf,
    pub output: PathBuf,
    /// Tiers of announce URLs, in the order given.
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    /// `None`: chosen from the content's size.
    pub piece_size: Option<u32>,
    pub private: bool,
    pub comment: Option<String>,
    pub source_tag: Option<String>,
    pub include_hidden: bool,
    pub force: bool,
}

/// Options shared by `download` and `seed`.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferOptions {
    /// At least one.
    pub torrents: Vec<PathBuf>,
    pub dir: PathBuf,
    pub no_ui: bool,
    /// `None`: the default port, falling back to any free one if it is taken.
    pub port: Option<u16>,
    /// `None`: every address (`[::]`, dual-stack).
    pub bind: Option<std::net::IpAddr>,
    pub max_peers: usize,
    pub peers: Vec<SocketAddr>,
    pub seed_ratio: Option<f64>,
    pub up_limit: Option<u64>,
    pub down_limit: Option<u64>,
    pub max_upload_slots: usize,
    /// `--no-dht`.
    pub no_dht: bool,
    /// `--dht-bootstrap`: empty means the built-in routers.
    pub dht_bootstrap: Vec<HostPort>,
    pub state_dir: Option<PathBuf>,
    pub encryption: crate::peer::encryption::EncryptionPolicy,
    /// `--no-utp`.
    pub no_utp: bool,
    /// `--trace FILE`: every event of the run as JSON Lines (docs/trace.md).
    pub trace: Option<PathBuf>,
    /// `--stats-json FILE`: statistics as one JSON document, rewritten every few seconds and at exit.
    pub stats_json: Option<PathBuf>,
}

/// `HOST:PORT`, `IP:PORT` or `[IPv6]:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// The address, when the host is an IP literal (no DNS needed).
    pub fn addr(&self) -> Option<SocketAddr> {
        let ip: std::net::IpAddr = self.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let bad = || format!("'{s}': expected HOST:PORT, IP:PORT or [IPv6]:PORT");
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(bad());
        }
        return Ok(HostPort { host: addr.ip().to_string(), port: addr.port() });
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?;
    let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if host.is_empty() || host.len() > 253 || !host.chars().all(name_ok) {
        return Err(bad());
    }
    Ok(HostPort { host: host.to_string(), port })
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Download {
        opts: TransferOptions,
        seed: bool,
        files: Option<Vec<usize>>,
        sequential: bool,
        recheck: bool,
        /// `--save-torrent FILE`: where to write a magnet's fetched metainfo.
        save_torrent: Option<PathBuf>,
    },
    Seed {
        opts: TransferOptions,
        partial: bool,
        recheck: bool,
    },
    Info {
        torrent: PathBuf,
        scrape: bool,
    },
    Create(CreateOptions),
    Daemon {
        opts: TransferOptions,
        rpc: RpcOptions,
    },
    Help(&'static str),
    Version,
}

/// A usage error: printed as one line, exit code 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<pico_args::Error> for UsageError {
    fn from(e: pico_args::Error) -> Self {
        UsageError(e.to_string())
    }
}

pub const DEFAULT_PORT: u16 = 6881;
pub const DEFAULT_MAX_PEERS: usize = 50;
pub const DEFAULT_UPLOAD_SLOTS: usize = 4;

pub fn parse(args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut args = pico_args::Arguments::from_vec(args);
    let sub = args.subcommand()?;
    let help = args.contains(["-h", "--help"]);
    let command = match sub.as_deref() {
        None | Some("help") => {
            if args.contains(["-V", "--version"]) {
                return Ok(Command::Version);
            }
            if help || sub.is_some() {
                return Ok(Command::Help(MAIN_HELP));
            }
            return Err(UsageError("missing command: try `rill --help`".into()));
        }
        Some("download") if help => return Ok(Command::Help(DOWNLOAD_HELP)),
        Some("seed") if help => return Ok(Command::Help(SEED_HELP)),
        Some("info") if help => return Ok(Command::Help(INFO_HELP)),
        Some("create") if help => return Ok(Command::Help(CREATE_HELP)),
        Some("daemon") if help => return Ok(Command::Help(DAEMON_HELP)),
        Some("daemon") => {
            let bind = args
                .opt_value_from_fn("--rpc-bind", |s| {
                    s.parse::<SocketAddr>().map_err(|_| format!("--rpc-bind {s}: expected IP:PORT"))
                })?
                .unwrap_or_else(|| DEFAULT_RPC_BIND.parse().expect("a valid default"));
            let auth = args.opt_value_from_fn("--rpc-auth", |s| match s.split_once(':') {
                Some((u, p)) if !u.is_empty() => Ok((u.to_string(), p.to_string())),
                _ => Err("--rpc-auth: expected USER:PASS".to_string()),
            })?;
            let hosts: Vec<String> = args.values_from_str("--rpc-host")?;
            let watch = args.opt_value_from_os_str("--watch", |s| Ok::<_, String>(PathBuf::from(s)))?;
            let opts = transfer_options_for(&mut args, "daemon", false)?;
            Command::Daemon { opts, rpc: RpcOptions { bind, auth, hosts, watch } }
        }
        Some("create") => Command::Create(create_options(&mut args)?),
        Some("download") => {
            let seed = args.contains("--seed");
            let sequential = args.contains("--sequential");
            let recheck = args.contains("--recheck");
            let files = args.opt_value_from_fn("--files", parse_file_list)?;
            let save_torrent: Option<PathBuf> =
                args.opt_value_from_os_str("--save-torrent", |s| Ok::<_, String>(PathBuf::from(s)))?;
            let opts = transfer_options(&mut args, "download")?;
            let one_magnet = opts.torrents.len() == 1 && crate::magnet::is_magnet(&opts.torrents[0].to_string_lossy());
            if save_torrent.is_some() && !one_magnet {
                return Err(UsageError("--save-torrent needs exactly one magnet link".into()));
            }
            if opts.seed_ratio.is_some() && !seed {
                return Err(UsageError("--seed-ratio needs --seed".into()));
            }
            if files.is_some() && opts.torrents.len() > 1 {
                return Err(UsageError("--files needs exactly one torrent".into()));
            }
            Command::Download { opts, seed, files, sequential, recheck, save_torrent }
        }
        Some("seed") => {
            let partial = args.contains("--partial");
            let recheck = args.contains("--recheck");
            let opts = transfer_options(&mut args, "seed")?;
            Command::Seed { opts, partial, recheck }
        }
        Some("info") => {
            let scrape = args.contains("--scrape");
            let torrent = torrent_arg(&mut args, "info")?;
            Command::Info { torrent, scrape }
        }
        Some(other) => return Err(UsageError(format!("unknown command '{other}': try `rill --help`"))),
    };
    let rest = args.finish();
    if let Some(extra) = rest.first() {
        return Err(UsageError(format!("unexpected argument '{}'", extra.to_string_lossy())));
    }
    Ok(command)
}

fn torrent_arg(args: &mut pico_args::Arguments, cmd: &str) -> Result<PathBuf, UsageError> {
    let torrent: Option<PathBuf> = args.opt_free_from_os_str(|s| Ok::<_, String>(PathBuf::from(s)))?;
    match torrent {
        Some(t) if !t.to_string_lossy().starts_with('-') => Ok(t),
        Some(t) => Err(UsageError(format!("unknown option '{}': try `rill {cmd} --help`", t.display()))),
        None => Err(UsageError(format!("missing FILE.torrent: try `rill {cmd} --help`"))),
    }
}

fn transfer_options(args: &mut pico_args::Arguments, cmd: &str) -> Result<TransferOptions, UsageError> {
    transfer_options_for(args, cmd, true)
}

/// The transfer options; `torrents_needed`: at least one torrent argument (not for the daemon, which
/// takes none).
fn transfer_options_for(
    args: &mut pico_args::Arguments,
    cmd: &str,
    torrents_needed: bool,
) -> Result<TransferOptions, UsageError> {
    let dir = args
        .opt_value_from_os_str(["-d", "--dir"], |s| Ok::<_, String>(PathBuf::from(s)))?
        .unwrap_or_else(|| PathBuf::from("."));
    let no_ui = args.contains("--no-ui");
    let port = args.opt_value_from_str("--port")?;
    let bind = args.opt_value_from_str("--bind")?;
    let max_peers = args.opt_value_from_str("--max-peers")?.unwrap_or(DEFAULT_MAX_PEERS);
    if max_peers == 0 {
        return Err(UsageError("--max-peers must be at least 1".into()));
    }
    let peers = args.values_from_str("--peer")?;
    let seed_ratio: Option<f64> = args.opt_value_from_str("--seed-ratio")?;
    if seed_ratio.is_some_and(|r| !(r.is_finite() && r >= 0.0)) {
        return Err(UsageError("--seed-ratio must be a non-negative number".into()));
    }
    let up_limit = args.opt_value_from_fn("--up-limit", parse_rate_arg)?;
    let down_limit = args.opt_value_from_fn("--down-limit", parse_rate_arg)?;
    let max_upload_slots = args.opt_value_from_str("--max-upload-slots")?.unwrap_or(DEFAULT_UPLOAD_SLOTS);
    let no_dht = args.contains("--no-dht");
    let dht_bootstrap =
        args.values_from_fn("--dht-bootstrap", |s| parse_host_port(s).map_err(|e| format!("--dht-bootstrap {e}")))?;
    if no_dht && !dht_bootstrap.is_empty() {
        return Err(UsageError("--no-dht and --dht-bootstrap do not go together".into()));
    }
    let state_dir = args.opt_value_from_os_str("--state-dir", |s| Ok::<_, String>(PathBuf::from(s)))?;
    let encryption = args.opt_value_from_fn("--encryption", parse_encryption)?.unwrap_or_default();
    let no_utp = args.contains("--no-utp");
    let trace = args.opt_value_from_os_str("--trace", |s| Ok::<_, String>(PathBuf::from(s)))?;
    let stats_json = args.opt_value_from_os_str("--stats-json", |s| Ok::<_, String>(PathBuf::from(s)))?;
    if trace.is_some() && trace == stats_json {
        return Err(UsageError("--trace and --stats-json need two different files".into()));
    }
    let mut torrents = if torrents_needed { vec![torrent_arg(args, cmd)?] } else { Vec::new() };
    while let Some(t) = args.opt_free_from_os_str(|s| Ok::<_, String>(PathBuf::from(s)))? {
        if t.to_string_lossy().starts_with('-') {
            return Err(UsageError(format!("unknown option '{}': try `rill {cmd} --help`", t.display())));
        }
        if !torrents_needed {
            return Err(UsageError(format!(
                "unexpected argument '{}': add torrents over the RPC or --watch",
                t.display()
            )));
        }
        torrents.push(t);
    }
    Ok(TransferOptions {
        torrents,
        dir,
        no_ui,
        port,
        bind,
        max_peers,
        peers,
        seed_ratio,
        up_limit,
        down_limit,
        max_upload_slots,
        no_dht,
        dht_bootstrap,
        state_dir,
        encryption,
        no_utp,
        trace,
        stats_json,
    })
}

fn parse_encryption(s: &str) -> Result<crate::peer::encryption::EncryptionPolicy, String> {
    use crate::peer::encryption::EncryptionPolicy;
    match s {
        "prefer" => Ok(EncryptionPolicy::Prefer),
        "require" => Ok(EncryptionPolicy::Require),
        "off" => Ok(EncryptionPolicy::Off),
        _ => Err(format!("--encryption {s}: use prefer, require or off")),
    }
}

fn create_options(args: &mut pico_args::Arguments) -> Result<CreateOptions, UsageError> {
    let output = args
        .opt_value_from_os_str(["-o", "--output"], |s| Ok::<_, String>(PathBuf::from(s)))?
        .ok_or_else(|| UsageError("missing -o OUT.torrent: try `rill create --help`".into()))?;
    let trackers: Vec<Vec<String>> = args
        .values_from_str::<_, String>("--tracker")?
        .into_iter()
        .map(|tier| tier.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect::<Vec<_>>())
        .filter(|tier| !tier.is_empty())
        .collect();
    for url in trackers.iter().flatten() {
        if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("udp://")) {
            return Err(UsageError(format!("--tracker {url}: not an http://, https:// or udp:// URL")));
        }
    }
    let web_seeds: Vec<String> = args.values_from_str("--web-seed")?;
    for url in &web_seeds {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(UsageError(format!("--web-seed {url}: not an http:// or https:// URL")));
        }
    }
    let piece_size = args.opt_value_from_fn("--piece-size", parse_piece_size)?;
    let private = args.contains("--private");
    let comment = args.opt_value_from_str("--comment")?;
    let source_tag = args.opt_value_from_str("--source")?;
    let include_hidden = args.contains("--include-hidden");
    let force = args.contains("--force");
    let source: Option<PathBuf> = args.opt_free_from_os_str(|s| Ok::<_, String>(PathBuf::from(s)))?;
    let source = match source {
        Some(p) if !p.to_string_lossy().starts_with('-') => p,
        Some(p) => return Err(UsageError(format!("unknown option '{}': try `rill create --help`", p.display()))),
        None => return Err(UsageError("missing PATH: try `rill create --help`".into())),
    };
    Ok(CreateOptions {
        source,
        output,
        trackers,
        web_seeds,
        piece_size,
        private,
        comment,
        source_tag,
        include_hidden,
        force,
    })
}

/// `256k`, `1M`, `16384`: a power of two from 16 KiB to 16 MiB.
fn parse_piece_size(s: &str) -> Result<u32, String> {
    use crate::metainfo::create::{MAX_PIECE_LENGTH, MIN_PIECE_LENGTH};
    let n = parse_rate(s)?;
    if !n.is_power_of_two() || n < MIN_PIECE_LENGTH as u64 || n > MAX_PIECE_LENGTH as u64 {
        return Err(format!("--piece-size {s}: must be a power of two from 16k to 16M"));
    }
    Ok(n as u32)
}

fn parse_rate_arg(s: &str) -> Result<u64, String> {
    match parse_rate(s) {
        Ok(0) => Err("a rate limit must be above zero".into()),
        other => other,
    }
}

/// `0,2,5-7` → [0, 2, 5, 6, 7].
pub fn parse_file_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let bad = || format!("bad file list '{s}': use numbers and ranges like 0,2,5-7");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 1_000_000 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn download_with_flags() {
        let cmd =
            parse(args("download a.torrent -d out --no-ui --port 0 --peer 127.0.0.1:5000 --files 0,2-3")).unwrap();
        let Command::Download { opts, files, seed, .. } = cmd else { panic!("{cmd:?}") };
        assert_eq!(opts.torrents, vec![PathBuf::from("a.torrent")]);
        assert_eq!(opts.dir, PathBuf::from("out"));
        assert!(opts.no_ui);
        assert_eq!(opts.port, Some(0));
        assert_eq!(opts.peers, vec!["127.0.0.1:5000".parse().unwrap()]);
        assert_eq!(files, Some(vec![0, 2, 3]));
        assert!(!seed);
    }

    #[test]
    fn several_torrents_in_order() {
        let cmd = parse(args("seed a.torrent b.torrent -d out c.torrent --port 0")).unwrap();
        let Command::Seed { opts, .. } = cmd else { panic!("{cmd:?}") };
        let names: Vec<PathBuf> = ["a.torrent", "b.torrent", "c.torrent"].iter().map(PathBuf::from).collect();
        assert_eq!(opts.torrents, names);
        assert_eq!(opts.dir, PathBuf::from("out"));
    }

    #[test]
    fn usage_errors() {
        assert!(parse(args("")).is_err());
        assert!(parse(args("download")).is_err());
        assert!(parse(args("download a.torrent --bogus")).is_err());
        assert!(parse(args("frobnicate x")).is_err());
        assert!(parse(args("download a.torrent --max-peers x")).is_err());
        assert!(parse(args("download a.torrent --seed-ratio 2")).is_err());
        assert!(parse(args("download a.torrent b.torrent --files 0")).is_err(), "--files with two torrents");
        assert_eq!(parse(args("--help")).unwrap(), Command::Help(MAIN_HELP));
        assert_eq!(parse(args("download --help")).unwrap(), Command::Help(DOWNLOAD_HELP));
        assert!(parse_file_list("3-1").is_err());
    }

    #[test]
    fn dht_flags() {
        let cmd = parse(args(
            "seed a.torrent --dht-bootstrap 127.0.0.1:6881 --dht-bootstrap router.example.org:25401 \
             --dht-bootstrap [::1]:7000 --state-dir st",
        ))
        .unwrap();
        let Command::Seed { opts, .. } = cmd else { panic!("{cmd:?}") };
        assert!(!opts.no_dht);
        let hosts: Vec<(&str, u16)> = opts.dht_bootstrap.iter().map(|h| (h.host.as_str(), h.port)).collect();
        assert_eq!(hosts, [("127.0.0.1", 6881), ("router.example.org", 25401), ("::1", 7000)]);
        assert_eq!(opts.dht_bootstrap[0].addr(), Some("127.0.0.1:6881".parse().unwrap()));
        assert_eq!(opts.dht_bootstrap[1].addr(), None);
        assert_eq!(opts.dht_bootstrap[2].addr(), Some("[::1]:7000".parse().unwrap()));
        assert_eq!(opts.state_dir, Some(PathBuf::from("st")));
        let Command::Download { opts, .. } = parse(args("download a.torrent --no-dht")).unwrap() else { panic!() };
        assert!(opts.no_dht && opts.dht_bootstrap.is_empty());
        for bad in ["host", "host:0", "host:x", ":80", "a b:80", "1.2.3.4:99999"] {
            assert!(parse(args(&format!("download a.torrent --dht-bootstrap {bad}"))).is_err(), "{bad}");
        }
        assert!(parse(args("download a.torrent --no-dht --dht-bootstrap 127.0.0.1:1")).is_err());
    }

    #[test]
    fn encryption_modes() {
        use crate::peer::encryption::EncryptionPolicy;
        let mode = |a: &str| match parse(args(a)).unwrap() {
            Command::Download { opts, .. } | Command::Seed { opts, .. } => opts.encryption,
            other => panic!("{other:?}"),
        };
        assert_eq!(mode("download a.torrent"), EncryptionPolicy::Prefer);
        assert_eq!(mode("seed a.torrent --encryption require"), EncryptionPolicy::Require);
        assert_eq!(mode("download a.torrent --encryption off"), EncryptionPolicy::Off);
        let Command::Seed { opts, .. } = parse(args("seed a.torrent --no-utp")).unwrap() else { panic!() };
        assert!(opts.no_utp);
        assert!(parse(args("download a.torrent --encryption rc4")).is_err());
    }

    #[test]
    fn create_with_tiers_and_options() {
        let cmd = parse(args(
            "create dir -o x.torrent --tracker http://a/ann,udp://b:1 --tracker http://c/ann --piece-size 256k \
             --private --web-seed http://w/ --include-hidden",
        ))
        .unwrap();
        let Command::Create(o) = cmd else { panic!("{cmd:?}") };
        assert_eq!(o.source, PathBuf::from("dir"));
        assert_eq!(o.output, PathBuf::from("x.torrent"));
        assert_eq!(o.trackers, [vec!["http://a/ann".to_string(), "udp://b:1".into()], vec!["http://c/ann".into()]]);
        assert_eq!(o.piece_size, Some(256 * 1024));
        assert!(o.private && o.include_hidden && !o.force);
        assert_eq!(o.web_seeds, ["http://w/"]);
        assert!(parse(args("create dir")).is_err());
        assert!(parse(args("create -o x.torrent")).is_err());
        assert!(parse(args("create dir -o x --piece-size 100k")).is_err());
        assert!(parse(args("create dir -o x --piece-size 32M")).is_err());
        assert!(parse(args("create dir -o x --tracker ftp://x")).is_err());
    }
}
