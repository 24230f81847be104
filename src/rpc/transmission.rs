//! Transmission's RPC methods (rpc-spec, RPC version 15, as Transmission 3.00 speaks it) over a
//! [`Backend`].
//!
//! Owns: decoding a request's JSON (`method`, `arguments`, `tag`), the `ids` forms (numbers, hash strings,
//! `recently-active`, none = all), the torrent field names of `torrent-get` and how each is computed from a
//! [`TorrentInfo`], the session fields, status codes, and the `result` strings. Unknown methods get an
//! error result; unknown fields are left out, as Transmission does.
//! Must not: touch the engine or the disk (the backend does), or know about HTTP (that is `rpc`).

use serde_json::{json, Map, Value};

use super::base64;

/// RPC version we answer to; Transmission 3.00 is 16, and its clients need at least 15 for what we have.
pub const RPC_VERSION: u32 = 16;
/// The oldest RPC version a client may assume.
pub const RPC_VERSION_MINIMUM: u32 = 1;
/// Most ids in one request (Transmission has no limit; ours keeps a hostile list from costing time).
const MAX_IDS: usize = 10_000;

/// Transmission's torrent status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Stopped = 0,
    CheckWait = 1,
    Check = 2,
    DownloadWait = 3,
    Download = 4,
    SeedWait = 5,
    Seed = 6,
}

/// How much of a torrent `torrent-get` needs beyond the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    pub files: bool,
    pub peers: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileInfo {
    pub name: String,
    pub length: u64,
    pub bytes_completed: u64,
    pub wanted: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerInfo {
    pub address: String,
    pub port: u16,
    pub client: String,
    pub rate_to_client: u64,
    pub rate_to_peer: u64,
    pub progress: f64,
    pub encrypted: bool,
    pub utp: bool,
    pub incoming: bool,
    pub choked_by_peer: bool,
    pub choking_peer: bool,
    pub interested: bool,
    pub peer_interested: bool,
}

/// What the backend knows of one torrent, in Transmission's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TorrentInfo {
    pub id: u32,
    pub hash: String,
    pub name: String,
    pub status: Option<Status>,
    /// The torrent stopped with this error.
    pub error: Option<String>,
    pub total_size: u64,
    pub size_when_done: u64,
    pub left_until_done: u64,
    pub have_valid: u64,
    pub downloaded_ever: u64,
    pub uploaded_ever: u64,
    pub corrupt_ever: u64,
    pub rate_download: u64,
    pub rate_upload: u64,
    pub peers_connected: u32,
    pub peers_sending_to_us: u32,
    pub peers_getting_from_us: u32,
    /// Seconds, when it can be told.
    pub eta: Option<u64>,
    pub download_dir: String,
    pub added_date: u64,
    pub start_date: u64,
    pub done_date: u64,
    pub activity_date: u64,
    pub piece_count: u32,
    pub piece_size: u64,
    pub is_private: bool,
    pub comment: String,
    pub creator: String,
    pub date_created: u64,
    pub magnet_link: String,
    /// 0..1 while checking.
    pub recheck_progress: f64,
    /// 0..1: 1 once the metadata is there.
    pub metadata_percent: f64,
    pub trackers: Vec<TrackerInfo>,
    pub web_seeds: Vec<String>,
    pub files: Vec<FileInfo>,
    pub peers: Vec<PeerInfo>,
    pub seconds_downloading: u64,
    pub seconds_seeding: u64,
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
    /// Transmission's `seedRatioMode`: 0 the session's limit, 1 its own (`seed_ratio_limit`), 2 none.
    pub seed_ratio_mode: u8,
    pub seed_ratio_limit: f64,
    /// Stopped because it reached its seed ratio.
    pub finished: bool,
}

impl TorrentInfo {
    fn percent_done(&self) -> f64 {
        if self.size_when_done == 0 {
            return if self.metadata_percent >= 1.0 { 1.0 } else { 0.0 };
        }
        (self.size_when_done - self.left_until_done.min(self.size_when_done)) as f64 / self.size_when_done as f64
    }

    fn is_finished(&self) -> bool {
        // Transmission: stopped after reaching its seed ratio.
        self.finished
    }
}

/// One tracker of a torrent, for `trackers` and `trackerStats`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackerInfo {
    pub announce: String,
    /// 0-based tier (BEP 12).
    pub tier: usize,
    /// An announce is in flight.
    pub announcing: bool,
    /// Unix seconds of its last answer; 0: none yet.
    pub last_announce_time: u64,
    /// It was asked and answered or failed.
    pub has_announced: bool,
    pub last_announce_succeeded: bool,
    /// "Success", or the last error.
    pub last_announce_result: String,
    pub last_announce_peer_count: u64,
    /// Unix seconds of its next announce; 0: none planned.
    pub next_announce_time: u64,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
}

/// `torrent-add`'s arguments, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddTorrent {
    pub source: AddSource,
    pub download_dir: Option<String>,
    pub paused: bool,
    pub files_unwanted: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddSource {
    /// A .torrent's bytes (`metainfo`).
    Metainfo(Vec<u8>),
    /// `filename`: a path on the daemon's machine, or a magnet link.
    Filename(String),
}

/// A torrent `torrent-add` took, or found already there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added {
    pub id: u32,
    pub name: String,
    pub hash: String,
    pub duplicate: bool,
}

/// `torrent-set`'s arguments we act on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TorrentSet {
    pub files_wanted: Vec<usize>,
    pub files_unwanted: Vec<usize>,
    /// `Some(None)`: no limit; bytes/s.
    pub download_limit: Option<Option<u64>>,
    pub upload_limit: Option<Option<u64>>,
    /// `seedRatioMode` (0, 1 or 2, as in `TorrentInfo`) and `seedRatioLimit`.
    pub seed_ratio_mode: Option<u8>,
    pub seed_ratio_limit: Option<f64>,
    /// The whole tracker list after `trackerAdd`, `trackerRemove`, `trackerReplace` or `trackerList`: tiers
    /// of URLs, first tier first.
    pub trackers: Option<Vec<Vec<String>>>,
}

/// The session settings `session-get` shows and `session-set` changes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionInfo {
    pub download_dir: String,
    pub peer_port: u16,
    pub peer_limit_global: u32,
    /// bytes/s; `None`: unlimited.
    pub speed_limit_down: Option<u64>,
    pub speed_limit_up: Option<u64>,
    pub encryption: &'static str,
    pub dht_enabled: bool,
    pub utp_enabled: bool,
    pub pex_enabled: bool,
    pub config_dir: String,
    /// The session's seed ratio (`seedRatioLimit`), applied to torrents in mode 0 when `seed_ratio_limited`.
    pub seed_ratio_limit: f64,
    pub seed_ratio_limited: bool,
    /// Transmission's alternative speed limits ("turtle mode"), bytes/s: in force instead of the speed limits
    /// while enabled.
    pub alt_speed_enabled: bool,
    pub alt_speed_down: u64,
    pub alt_speed_up: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionSet {
    pub speed_limit_down: Option<Option<u64>>,
    pub speed_limit_up: Option<Option<u64>>,
    pub seed_ratio_limit: Option<f64>,
    pub seed_ratio_limited: Option<bool>,
    pub alt_speed_enabled: Option<bool>,
    /// bytes/s.
    pub alt_speed_down: Option<u64>,
    pub alt_speed_up: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub download_speed: u64,
    pub upload_speed: u64,
    pub active_torrents: u32,
    pub paused_torrents: u32,
    pub torrent_count: u32,
    pub downloaded_bytes: u64,
    pub uploaded_bytes: u64,
    pub seconds_active: u64,
}

/// What the daemon offers the RPC: every call is answered at once (the loop is single-threaded).
pub trait Backend {
    /// Every torrent's RPC id, oldest first.
    fn torrent_ids(&self) -> Vec<u32>;
    /// Ids of torrents with traffic (or a change) lately.
    fn recently_active(&self) -> Vec<u32>;
    /// Ids of torrents removed lately (for `recently-active`'s `removed` list).
    fn recently_removed(&self) -> Vec<u32>;
    fn id_by_hash(&self, hash: &str) -> Option<u32>;
    fn torrent(&self, id: u32, detail: Detail) -> Option<TorrentInfo>;
    fn add(&mut self, add: AddTorrent) -> Result<Added, String>;
    fn start(&mut self, id: u32);
    fn stop(&mut self, id: u32);
    fn verify(&mut self, id: u32);
    /// Ask the torrent's trackers for peers now.
    fn reannounce(&mut self, id: u32);
    fn remove(&mut self, id: u32, delete_local_data: bool);
    fn set_torrent(&mut self, id: u32, set: &TorrentSet) -> Result<(), String>;
    /// Where the torrent's files are: moved there (`move_data`), or to be found there.
    fn set_location(&mut self, id: u32, location: &str, move_data: bool) -> Result<(), String>;
    fn session(&self) -> SessionInfo;
    fn set_session(&mut self, set: &SessionSet) -> Result<(), String>;
    fn stats(&self) -> SessionStats;
    /// Free bytes under `path`, if it can be told.
    fn free_space(&self, path: &str) -> Option<u64>;
}

/// Answers one RPC request body with the JSON response body: Transmission's own form (`method`, `arguments`,
/// `tag`) or, when the request says `"jsonrpc": "2.0"`, Transmission 4's JSON-RPC 2.0 form.
pub fn handle(body: &[u8], backend: &mut dyn Backend) -> Vec<u8> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return reply(None, "invalid JSON request", Map::new()),
    };
    if request.get("jsonrpc").and_then(Value::as_str) == Some("2.0") {
        return jsonrpc(&request, backend);
    }
    let tag = request.get("tag").filter(|t| t.is_u64() || t.is_i64()).cloned();
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return reply(tag, "no method name", Map::new());
    };
    let empty = Map::new();
    let args = request.get("arguments").and_then(Value::as_object).unwrap_or(&empty);
    let (result, arguments) = match call(method, args, backend) {
        Ok(arguments) => ("success".to_string(), arguments),
        Err(e) => (e, Map::new()),
    };
    reply(tag, &result, arguments)
}

/// Transmission 4's JSON-RPC 2.0 form: snake_case method names (`torrent_get`), `params`, snake_case keys
/// and field names, `result` or `error`, and `id`. Mapped onto the same methods: every parameter key and
/// field name is offered in its kebab and camel spellings (unknown ones are ignored anyway), and every key
/// of the answer is turned into snake_case.
fn jsonrpc(request: &Value, backend: &mut dyn Backend) -> Vec<u8> {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let answer = |body: (&str, Value)| {
        let mut top = Map::new();
        top.insert("jsonrpc".into(), "2.0".into());
        top.insert(body.0.into(), body.1);
        top.insert("id".into(), id.clone());
        serde_json::to_vec(&Value::Object(top)).unwrap_or_default()
    };
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return answer(("error", json!({"code": -32600, "message": "Invalid Request"})));
    };
    let mut args = Map::new();
    if let Some(params) = request.get("params").and_then(Value::as_object) {
        for (key, value) in params {
            let value = match (key.as_str(), value) {
                ("fields", Value::Array(list)) => Value::Array(
                    list.iter()
                        .filter_map(Value::as_str)
                        .take(256)
                        .flat_map(|f| [f.to_string(), kebab(f), camel(f)])
                        .map(Value::from)
                        .collect(),
                ),
                _ => value.clone(),
            };
            for spelling in [key.clone(), kebab(key), camel(key)] {
                args.insert(spelling, value.clone());
            }
        }
    }
    match call(&kebab(method), &args, backend) {
        Ok(result) => answer(("result", snake_keys(Value::Object(result)))),
        Err(e) if e.starts_with("method name not recognized") => {
            answer(("error", json!({"code": -32601, "message": "Method not found"})))
        }
        Err(e) => answer(("error", json!({"code": -32000, "message": e, "data": {"error_string": e}}))),
    }
}

/// `percent_done` → `percent-done` (the old method and argument spelling).
fn kebab(s: &str) -> String {
    s.replace('_', "-")
}

/// `percent_done` → `percentDone` (the old field spelling).
fn camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' || c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `percentDone` and `peer-limit` → `percent_done` and `peer_limit`.
fn snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

fn snake_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (snake(&k), snake_keys(v))).collect()),
        Value::Array(list) => Value::Array(list.into_iter().map(snake_keys).collect()),
        other => other,
    }
}

fn reply(tag: Option<Value>, result: &str, arguments: Map<String, Value>) -> Vec<u8> {
    let mut top = Map::new();
    top.insert("result".into(), Value::from(result));
    top.insert("arguments".into(), Value::Object(arguments));
    if let Some(tag) = tag {
        top.insert("tag".into(), tag);
    }
    serde_json::to_vec(&Value::Object(top)).unwrap_or_default()
}

type Answer = Result<Map<String, Value>, String>;

fn call(method: &str, args: &Map<String, Value>, backend: &mut dyn Backend) -> Answer {
    match method {
        "torrent-get" => torrent_get(args, backend),
        "torrent-add" => torrent_add(args, backend),
        "torrent-start" | "torrent-start-now" => each(args, backend, |b, id| b.start(id)),
        "torrent-stop" => each(args, backend, |b, id| b.stop(id)),
        "torrent-verify" => each(args, backend, |b, id| b.verify(id)),
        "torrent-reannounce" => each(args, backend, |b, id| b.reannounce(id)),
        "torrent-remove" => {
            let delete = args.get("delete-local-data").is_some_and(truthy);
            each(args, backend, |b, id| b.remove(id, delete))
        }
        "torrent-set" => torrent_set(args, backend),
        "torrent-set-location" => {
            let location =
                args.get("location").and_then(Value::as_str).ok_or("torrent-set-location needs a location")?;
            let move_data = args.get("move").is_some_and(truthy);
            for id in select(args, backend)? {
                backend.set_location(id, location, move_data)?;
            }
            Ok(Map::new())
        }
        "session-get" => Ok(session_get(backend)),
        "session-set" => session_set(args, backend),
        "session-stats" => Ok(session_stats(backend)),
        "session-close" => Ok(Map::new()),
        "free-space" => {
            let path = args.get("path").and_then(Value::as_str).ok_or("free-space needs a path")?;
            let free = backend.free_space(path).ok_or_else(|| format!("cannot read the free space of {path}"))?;
            let mut m = Map::new();
            m.insert("path".into(), path.into());
            m.insert("size-bytes".into(), free.into());
            Ok(m)
        }
        "port-test" => {
            // Testing the port needs a server on the internet; rill does not call one.
            let mut m = Map::new();
            m.insert("port-is-open".into(), false.into());
            Ok(m)
        }
        "blocklist-update" => Err("rill has no blocklist".into()),
        "torrent-rename-path" | "queue-move-top" | "queue-move-up" | "queue-move-down" | "queue-move-bottom" => {
            Err(format!("{method} is not supported by rill"))
        }
        _ => Err(format!("method name not recognized: {}", truncate(method, 64))),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn truthy(v: &Value) -> bool {
    v.as_bool().unwrap_or_else(|| v.as_i64().is_some_and(|n| n != 0))
}

/// The torrents `ids` names: absent = all; a number, a hash string, a list of those, or
/// `recently-active`. Unknown ids are skipped, as Transmission does.
fn select(args: &Map<String, Value>, backend: &dyn Backend) -> Result<Vec<u32>, String> {
    let Some(ids) = args.get("ids") else {
        return Ok(backend.torrent_ids());
    };
    let one = |v: &Value| -> Option<u32> {
        if let Some(n) = v.as_u64() {
            return u32::try_from(n).ok();
        }
        v.as_str().and_then(|s| backend.id_by_hash(s))
    };
    match ids {
        Value::String(s) if s == "recently-active" => Ok(backend.recently_active()),
        Value::Array(list) => {
            if list.len() > MAX_IDS {
                return Err("too many ids".into());
            }
            let known = backend.torrent_ids();
            let mut out: Vec<u32> = list.iter().filter_map(one).filter(|id| known.contains(id)).collect();
            out.dedup();
            Ok(out)
        }
        single => Ok(one(single).filter(|id| backend.torrent_ids().contains(id)).into_iter().collect()),
    }
}

fn each(args: &Map<String, Value>, backend: &mut dyn Backend, mut f: impl FnMut(&mut dyn Backend, u32)) -> Answer {
    for id in select(args, backend)? {
        f(backend, id);
    }
    Ok(Map::new())
}

fn torrent_get(args: &Map<String, Value>, backend: &mut dyn Backend) -> Answer {
    let fields: Vec<&str> = match args.get("fields") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).take(256).collect(),
        _ => return Err("torrent-get needs fields".into()),
    };
    let table = args.get("format").and_then(Value::as_str) == Some("table");
    let detail = Detail {
        files: fields.iter().any(|f| matches!(*f, "files" | "fileStats" | "wanted" | "priorities")),
        peers: fields.iter().any(|f| matches!(*f, "peers" | "peersFrom")),
    };
    let recent = args.get("ids").and_then(Value::as_str) == Some("recently-active");
    let mut torrents = Vec::new();
    if table {
        torrents.push(Value::Array(fields.iter().map(|f| Value::from(*f)).collect()));
    }
    for id in select(args, backend)? {
        let Some(info) = backend.torrent(id, detail) else {
            continue;
        };
        if table {
            torrents.push(Value::Array(fields.iter().map(|f| field(f, &info).unwrap_or(Value::Null)).collect()));
        } else {
            let mut t = Map::new();
            for f in &fields {
                if let Some(v) = field(f, &info) {
                    t.insert((*f).to_string(), v);
                }
            }
            torrents.push(Value::Object(t));
        }
    }
    let mut m = Map::new();
    m.insert("torrents".into(), Value::Array(torrents));
    if recent {
        m.insert("removed".into(), Value::from(backend.recently_removed()));
    }
    Ok(m)
}

/// One `torrent-get` field of a torrent, `None` for a name we do not know.
fn field(name: &str, t: &TorrentInfo) -> Option<Value> {
    let status = t.status.map_or(0, |s| s as i64);
    let (error, error_string) = match &t.error {
        Some(e) => (3, e.as_str()),
        None => (0, ""),
    };
    let ratio = if t.downloaded_ever > 0 {
        t.uploaded_ever as f64 / t.downloaded_ever as f64
    } else if t.uploaded_ever > 0 {
        -2.0 // Transmission's TR_RATIO_INF
    } else {
        -1.0 // TR_RATIO_NA
    };
    let v = match name {
        "id" => t.id.into(),
        "hashString" => t.hash.clone().into(),
        "name" => t.name.clone().into(),
        "status" => status.into(),
        "error" => error.into(),
        "errorString" => error_string.into(),
        "totalSize" => t.total_size.into(),
        "sizeWhenDone" => t.size_when_done.into(),
        "leftUntilDone" => t.left_until_done.into(),
        "haveValid" => t.have_valid.into(),
        "haveUnchecked" => 0.into(),
        "desiredAvailable" => t.left_until_done.into(),
        "downloadedEver" => t.downloaded_ever.into(),
        "uploadedEver" => t.uploaded_ever.into(),
        "corruptEver" => t.corrupt_ever.into(),
        "rateDownload" => t.rate_download.into(),
        "rateUpload" => t.rate_upload.into(),
        "percentDone" => t.percent_done().into(),
        "percentComplete" => t.percent_done().into(),
        "metadataPercentComplete" => t.metadata_percent.into(),
        "recheckProgress" => t.recheck_progress.into(),
        "uploadRatio" => ratio.into(),
        "eta" => t.eta.map_or(-1, |e| e as i64).into(),
        "etaIdle" => (-1).into(),
        "isFinished" => t.is_finished().into(),
        "isStalled" => false.into(),
        "isPrivate" => t.is_private.into(),
        "peersConnected" => t.peers_connected.into(),
        "peersSendingToUs" => t.peers_sending_to_us.into(),
        "peersGettingFromUs" => t.peers_getting_from_us.into(),
        "webseedsSendingToUs" => 0.into(),
        "peer-limit" => 50.into(),
        "downloadDir" => t.download_dir.clone().into(),
        "addedDate" => t.added_date.into(),
        "startDate" => t.start_date.into(),
        "doneDate" => t.done_date.into(),
        "activityDate" => t.activity_date.into(),
        "dateCreated" => t.date_created.into(),
        "pieceCount" => t.piece_count.into(),
        "pieceSize" => t.piece_size.into(),
        "comment" => t.comment.clone().into(),
        "creator" => t.creator.clone().into(),
        "magnetLink" => t.magnet_link.clone().into(),
        "secondsDownloading" => t.seconds_downloading.into(),
        "secondsSeeding" => t.seconds_seeding.into(),
        "queuePosition" => 0.into(),
        "bandwidthPriority" => 0.into(),
        "honorsSessionLimits" => true.into(),
        "seedRatioMode" => t.seed_ratio_mode.into(),
        "seedRatioLimit" => t.seed_ratio_limit.into(),
        "seedIdleMode" => 0.into(),
        "seedIdleLimit" => 30.into(),
        "downloadLimited" => t.download_limit.is_some().into(),
        "downloadLimit" => (t.download_limit.unwrap_or(0) / 1000).into(),
        "uploadLimited" => t.upload_limit.is_some().into(),
        "uploadLimit" => (t.upload_limit.unwrap_or(0) / 1000).into(),
        "labels" => Value::Array(Vec::new()),
        "manualAnnounceTime" => (-1).into(),
        "startedPaused" | "isStopped" => (t.status == Some(Status::Stopped)).into(),
        "webseeds" => Value::from(t.web_seeds.clone()),
        "trackers" => Value::Array(
            t.trackers
                .iter()
                .enumerate()
                .map(|(i, tr)| json!({"announce": tr.announce, "id": i, "scrape": "", "tier": tr.tier}))
                .collect(),
        ),
        "trackerStats" => Value::Array(t.trackers.iter().enumerate().map(|(i, tr)| tracker_stats(i, tr)).collect()),
        "files" => Value::Array(
            t.files
                .iter()
                .map(|f| json!({"name": f.name, "length": f.length, "bytesCompleted": f.bytes_completed}))
                .collect(),
        ),
        "fileStats" => Value::Array(
            t.files
                .iter()
                .map(|f| json!({"bytesCompleted": f.bytes_completed, "wanted": f.wanted, "priority": 0}))
                .collect(),
        ),
        "wanted" => Value::Array(t.files.iter().map(|f| Value::from(i64::from(f.wanted))).collect()),
        "priorities" => Value::Array(t.files.iter().map(|_| Value::from(0)).collect()),
        "peers" => Value::Array(t.peers.iter().map(peer_json).collect()),
        "peersFrom" => {
            json!({"fromCache": 0, "fromDht": 0, "fromIncoming": t.peers.iter().filter(|p| p.incoming).count(),
                              "fromLpd": 0, "fromLtep": 0, "fromPex": 0,
                              "fromTracker": t.peers.iter().filter(|p| !p.incoming).count()})
        }
        _ => return None,
    };
    Some(v)
}

fn peer_json(p: &PeerInfo) -> Value {
    // Transmission's flag letters: D downloading from, U uploading to, d/u interested but choked,
    // E encrypted, I incoming, T uTP.
    let mut flags = String::new();
    if !p.choked_by_peer && p.interested {
        flags.push('D');
    } else if p.interested {
        flags.push('d');
    }
    if !p.choking_peer && p.peer_interested {
        flags.push('U');
    } else if p.peer_interested {
        flags.push('u');
    }
    if p.encrypted {
        flags.push('E');
    }
    if p.utp {
        flags.push('T');
    }
    if p.incoming {
        flags.push('I');
    }
    json!({
        "address": p.address, "port": p.port, "clientName": p.client, "flagStr": flags,
        "progress": p.progress, "rateToClient": p.rate_to_client, "rateToPeer": p.rate_to_peer,
        "isEncrypted": p.encrypted, "isUTP": p.utp, "isIncoming": p.incoming,
        // Transmission's "client" is us: `clientIsChoked` = the peer chokes us; `peerIsChoked` = we choke it.
        "clientIsChoked": p.choked_by_peer, "clientIsInterested": p.interested,
        "peerIsChoked": p.choking_peer, "peerIsInterested": p.peer_interested,
        "isDownloadingFrom": !p.choked_by_peer && p.interested, "isUploadingTo": !p.choking_peer && p.peer_interested,
    })
}

/// One `trackerStats` entry, with every key Transmission's clients read (`transmission-remote -it` skips
/// an entry that lacks one). rill does not scrape from the daemon: the scrape keys say "never".
fn tracker_stats(id: usize, tr: &TrackerInfo) -> Value {
    // Transmission's tr_tracker_state: 0 inactive, 1 waiting, 2 queued, 3 active.
    let announce_state = if tr.announcing {
        3
    } else if tr.next_announce_time > 0 {
        1
    } else {
        0
    };
    let count = |n: Option<u32>| n.map_or(-1, i64::from);
    json!({
        "id": id, "announce": tr.announce, "host": host_of(&tr.announce), "scrape": "", "tier": tr.tier,
        "isBackup": false, "announceState": announce_state, "hasAnnounced": tr.has_announced,
        "lastAnnounceTime": tr.last_announce_time, "lastAnnounceStartTime": 0,
        "lastAnnounceSucceeded": tr.last_announce_succeeded, "lastAnnounceTimedOut": false,
        "lastAnnounceResult": tr.last_announce_result, "lastAnnouncePeerCount": tr.last_announce_peer_count,
        "nextAnnounceTime": tr.next_announce_time,
        "seederCount": count(tr.seeders), "leecherCount": count(tr.leechers), "downloadCount": -1,
        "hasScraped": false, "scrapeState": 0, "lastScrapeTime": 0, "lastScrapeStartTime": 0,
        "lastScrapeSucceeded": false, "lastScrapeTimedOut": false, "lastScrapeResult": "", "nextScrapeTime": 0,
    })
}

/// A tracker URL's scheme, host and port (Transmission's `host`), e.g. `http://tracker.example:6969`.
fn host_of(url: &str) -> &str {
    let rest = url.find("://").map_or(0, |i| i + 3);
    match url[rest..].find('/') {
        Some(slash) => &url[..rest + slash],
        None => url,
    }
}

/// A list of file indices (`files-wanted` and the like).
fn indices(v: Option<&Value>) -> Vec<usize> {
    match v {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_u64).map(|n| n as usize).take(MAX_IDS).collect(),
        _ => Vec::new(),
    }
}

fn torrent_add(args: &Map<String, Value>, backend: &mut dyn Backend) -> Answer {
    let source = if let Some(b64) = args.get("metainfo").and_then(Value::as_str) {
        AddSource::Metainfo(base64::decode(b64.as_bytes()).ok_or("invalid or corrupt torrent file")?)
    } else if let Some(name) = args.get("filename").and_then(Value::as_str) {
        AddSource::Filename(name.to_string())
    } else {
        return Err("torrent-add needs metainfo or filename".into());
    };
    let add = AddTorrent {
        source,
        download_dir: args.get("download-dir").and_then(Value::as_str).map(str::to_string),
        paused: args.get("paused").is_some_and(truthy),
        files_unwanted: indices(args.get("files-unwanted")),
    };
    let added = backend.add(add)?;
    let mut m = Map::new();
    let key = if added.duplicate { "torrent-duplicate" } else { "torrent-added" };
    m.insert(key.into(), json!({"id": added.id, "name": added.name, "hashString": added.hash}));
    Ok(m)
}

/// A limit change from Transmission's `…Limited` flag and `…Limit` in kB/s (1000 bytes): `Some(None)`
/// removes the limit, `Some(Some(bytes/s))` sets one, `None` leaves it (a value for a disabled limit is
/// not kept: rill has no disabled limits).
fn limit(enabled: Option<&Value>, kbps: Option<&Value>, current: Option<u64>) -> Option<Option<u64>> {
    let value = kbps.and_then(Value::as_u64).map(|k| k.saturating_mul(1000));
    match enabled.map(truthy) {
        Some(false) => Some(None),
        Some(true) => value.or(current).map(Some),
        None => value.filter(|_| current.is_some()).map(Some),
    }
}

/// A seed ratio (`seedRatioLimit`): a finite number from 0 up.
fn ratio(v: Option<&Value>) -> Result<Option<f64>, String> {
    match v {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(r) if r.is_finite() && r >= 0.0 => Ok(Some(r)),
            _ => Err("seedRatioLimit must be a number from 0 up".into()),
        },
    }
}

/// Most trackers a torrent may have after an edit (a torrent that came with more may keep them).
const MAX_EDITED_TRACKERS: usize = 1000;
/// Longest tracker URL an edit may add.
const MAX_TRACKER_URL: usize = 2048;

/// Applies `torrent-set`'s tracker keys to `current` (the torrent's trackers as `trackers` lists them, whose
/// place is their `id`), as Transmission does: `trackerReplace` (`[id, url, …]`) keeps the tier,
/// `trackerRemove` (`[id, …]`) drops, `trackerAdd` (`[url, …]`) puts each new URL in a tier of its own after
/// the others, and `trackerList` (Transmission 4: one URL a line, a blank line between tiers) replaces the
/// list. Ids name places in `current`, so replace and remove go before add. `None` when no key is given.
fn edit_trackers(args: &Map<String, Value>, current: &[TrackerInfo]) -> Result<Option<Vec<Vec<String>>>, String> {
    const KEYS: [&str; 4] = ["trackerAdd", "trackerRemove", "trackerReplace", "trackerList"];
    if !KEYS.iter().any(|k| args.contains_key(*k)) {
        return Ok(None);
    }
    let known = |url: &str| current.iter().any(|t| t.announce == url);
    // A URL new to the torrent must be one rill can announce to; one it already has (from its metainfo) may stay.
    let usable = |url: &str| -> Result<String, String> {
        let url = url.trim();
        if known(url) {
            return Ok(url.to_string());
        }
        if url.len() > MAX_TRACKER_URL {
            return Err(format!("tracker URL longer than {MAX_TRACKER_URL} bytes"));
        }
        crate::tracker::TrackerUrl::parse(url)
            .map_err(|e| format!("invalid tracker URL {}: {e}", truncate(url, 128)))?;
        Ok(url.to_string())
    };
    let array = |key: &str| -> Result<Option<&Vec<Value>>, String> {
        match args.get(key) {
            None => Ok(None),
            Some(Value::Array(list)) if list.len() <= 2 * MAX_EDITED_TRACKERS => Ok(Some(list)),
            Some(Value::Array(_)) => Err(format!("{key}: too many entries")),
            Some(_) => Err(format!("{key} must be a list")),
        }
    };
    let id_of = |v: &Value| -> Result<usize, String> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n < current.len())
            .ok_or_else(|| format!("no tracker with id {}", truncate(&v.to_string(), 32)))
    };
    // (tier, url) in list order; `None` once removed.
    let mut list: Vec<Option<(usize, String)>> = current.iter().map(|t| Some((t.tier, t.announce.clone()))).collect();
    if let Some(text) = args.get("trackerList") {
        let text = text.as_str().ok_or("trackerList must be a string")?;
        list.clear();
        let mut tier = 0;
        let mut lines = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() {
                if list.last().is_some_and(|t| t.as_ref().is_some_and(|(last, _)| *last == tier)) {
                    tier += 1;
                }
                continue;
            }
            lines += 1;
            if lines > MAX_EDITED_TRACKERS.max(current.len()) {
                return Err("trackerList: too many trackers".into());
            }
            list.push(Some((tier, usable(line)?)));
        }
    }
    if let Some(pairs) = array("trackerReplace")? {
        if pairs.len() % 2 != 0 {
            return Err("trackerReplace must be pairs of id and URL".into());
        }
        for pair in pairs.chunks(2) {
            let id = id_of(&pair[0])?;
            let url = usable(pair[1].as_str().ok_or("trackerReplace: a URL must be a string")?)?;
            if let Some(entry) = list.get_mut(id).and_then(Option::as_mut) {
                entry.1 = url;
            }
        }
    }
    if let Some(ids) = array("trackerRemove")? {
        for v in ids {
            let id = id_of(v)?;
            if let Some(entry) = list.get_mut(id) {
                *entry = None;
            }
        }
    }
    let mut list: Vec<(usize, String)> = list.into_iter().flatten().collect();
    if let Some(urls) = array("trackerAdd")? {
        let mut added = 0;
        for v in urls {
            let url = usable(v.as_str().ok_or("trackerAdd: a URL must be a string")?)?;
            if list.iter().any(|(_, u)| *u == url) {
                continue; // already there: Transmission skips it too
            }
            let tier = list.iter().map(|(t, _)| t + 1).max().unwrap_or(0);
            list.push((tier, url));
            added += 1;
        }
        if added == 0 && !urls.is_empty() {
            return Err("every tracker to add is there already".into());
        }
    }
    if list.len() > MAX_EDITED_TRACKERS.max(current.len()) {
        return Err(format!("at most {MAX_EDITED_TRACKERS} trackers"));
    }
    // Tiers in their order, each tier's URLs in list order; a repeated URL is kept once.
    let mut tiers: Vec<(usize, Vec<String>)> = Vec::new();
    let mut ordered = list;
    ordered.sort_by_key(|(tier, _)| *tier);
    for (tier, url) in ordered {
        if tiers.iter().any(|(_, urls)| urls.contains(&url)) {
            continue;
        }
        match tiers.last_mut() {
            Some((t, urls)) if *t == tier => urls.push(url),
            _ => tiers.push((tier, vec![url])),
        }
    }
    Ok(Some(tiers.into_iter().map(|(_, urls)| urls).collect()))
}

fn torrent_set(args: &Map<String, Value>, backend: &mut dyn Backend) -> Answer {
    let location = match args.get("location") {
        None => None,
        Some(v) => Some(v.as_str().ok_or("location must be a string")?),
    };
    let ids = select(args, backend)?;
    for id in ids {
        let current = backend.torrent(id, Detail::default());
        let trackers = edit_trackers(args, current.as_ref().map_or(&[][..], |t| &t.trackers))?;
        let set = TorrentSet {
            files_wanted: indices(args.get("files-wanted")),
            files_unwanted: indices(args.get("files-unwanted")),
            download_limit: limit(
                args.get("downloadLimited"),
                args.get("downloadLimit"),
                current.as_ref().and_then(|t| t.download_limit),
            ),
            upload_limit: limit(
                args.get("uploadLimited"),
                args.get("uploadLimit"),
                current.as_ref().and_then(|t| t.upload_limit),
            ),
            seed_ratio_mode: match args.get("seedRatioMode") {
                None => None,
                Some(v) => Some(v.as_u64().filter(|&m| m <= 2).ok_or("seedRatioMode must be 0, 1 or 2")? as u8),
            },
            seed_ratio_limit: ratio(args.get("seedRatioLimit"))?,
            trackers,
        };
        backend.set_torrent(id, &set)?;
        if let Some(location) = location {
            // Transmission's `torrent-set` `location`: where the files are, not moved.
            backend.set_location(id, location, false)?;
        }
    }
    Ok(Map::new())
}

fn session_get(backend: &dyn Backend) -> Map<String, Value> {
    let s = backend.session();
    let kb = |l: Option<u64>| l.unwrap_or(0) / 1000;
    let mut m = Map::new();
    let pairs: [(&str, Value); 49] = [
        ("rpc-version", Value::from(RPC_VERSION)),
        ("rpc-version-minimum", Value::from(RPC_VERSION_MINIMUM)),
        ("rpc-version-semver", Value::from("5.3.0")),
        ("version", Value::from(format!("3.00 (rill {})", env!("CARGO_PKG_VERSION")))),
        ("session-id", Value::from("")),
        ("download-dir", Value::from(s.download_dir.clone())),
        ("incomplete-dir", Value::from(s.download_dir)),
        ("incomplete-dir-enabled", Value::from(false)),
        ("config-dir", Value::from(s.config_dir)),
        ("peer-port", Value::from(s.peer_port)),
        ("peer-port-random-on-start", Value::from(false)),
        ("port-forwarding-enabled", Value::from(false)),
        ("peer-limit-global", Value::from(s.peer_limit_global)),
        ("peer-limit-per-torrent", Value::from(s.peer_limit_global)),
        ("speed-limit-down", Value::from(kb(s.speed_limit_down))),
        ("speed-limit-down-enabled", Value::from(s.speed_limit_down.is_some())),
        ("speed-limit-up", Value::from(kb(s.speed_limit_up))),
        ("speed-limit-up-enabled", Value::from(s.speed_limit_up.is_some())),
        ("alt-speed-enabled", Value::from(s.alt_speed_enabled)),
        ("alt-speed-down", Value::from(s.alt_speed_down / 1000)),
        ("alt-speed-up", Value::from(s.alt_speed_up / 1000)),
        ("alt-speed-time-enabled", Value::from(false)),
        ("alt-speed-time-begin", Value::from(0)),
        ("alt-speed-time-end", Value::from(0)),
        ("alt-speed-time-day", Value::from(0)),
        ("encryption", Value::from(s.encryption)),
        ("dht-enabled", Value::from(s.dht_enabled)),
        ("utp-enabled", Value::from(s.utp_enabled)),
        ("pex-enabled", Value::from(s.pex_enabled)),
        ("lpd-enabled", Value::from(false)),
        ("blocklist-enabled", Value::from(false)),
        ("blocklist-size", Value::from(0)),
        ("blocklist-url", Value::from("")),
        ("cache-size-mb", Value::from(0)),
        ("seedRatioLimit", Value::from(s.seed_ratio_limit)),
        ("seedRatioLimited", Value::from(s.seed_ratio_limited)),
        ("idle-seeding-limit", Value::from(30)),
        ("idle-seeding-limit-enabled", Value::from(false)),
        ("download-queue-enabled", Value::from(false)),
        ("download-queue-size", Value::from(0)),
        ("seed-queue-enabled", Value::from(false)),
        ("seed-queue-size", Value::from(0)),
        ("queue-stalled-enabled", Value::from(false)),
        ("queue-stalled-minutes", Value::from(30)),
        ("start-added-torrents", Value::from(true)),
        ("trash-original-torrent-files", Value::from(false)),
        ("rename-partial-files", Value::from(false)),
        ("script-torrent-done-enabled", Value::from(false)),
        ("script-torrent-done-filename", Value::from("")),
    ];
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    m.insert(
        "units".into(),
        json!({
            "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"], "speed-bytes": 1000,
            "size-units": ["kB", "MB", "GB", "TB"], "size-bytes": 1000,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"], "memory-bytes": 1024,
        }),
    );
    m
}

fn session_set(args: &Map<String, Value>, backend: &mut dyn Backend) -> Answer {
    // Keys rill has no use for are ignored (a front-end's settings dialog sends them all at once), but a
    // schedule for the alternative limits would be a promise rill does not keep.
    if args.get("alt-speed-time-enabled").is_some_and(truthy) {
        return Err("rill has no schedule for the alternative speed limits (alt-speed-time)".into());
    }
    let kbps = |key: &str| -> Result<Option<u64>, String> {
        match args.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_u64().map(|k| Some(k.saturating_mul(1000))).ok_or_else(|| format!("{key} must be a number"))
            }
        }
    };
    let s = backend.session();
    let set = SessionSet {
        speed_limit_down: limit(args.get("speed-limit-down-enabled"), args.get("speed-limit-down"), s.speed_limit_down),
        speed_limit_up: limit(args.get("speed-limit-up-enabled"), args.get("speed-limit-up"), s.speed_limit_up),
        seed_ratio_limit: ratio(args.get("seedRatioLimit"))?,
        seed_ratio_limited: args.get("seedRatioLimited").map(truthy),
        alt_speed_enabled: args.get("alt-speed-enabled").map(truthy),
        alt_speed_down: kbps("alt-speed-down")?,
        alt_speed_up: kbps("alt-speed-up")?,
    };
    backend.set_session(&set)?;
    Ok(Map::new())
}

fn session_stats(backend: &dyn Backend) -> Map<String, Value> {
    let s = backend.stats();
    let totals = json!({
        "uploadedBytes": s.uploaded_bytes, "downloadedBytes": s.downloaded_bytes, "filesAdded": s.torrent_count,
        "sessionCount": 1, "secondsActive": s.seconds_active,
    });
    let v = json!({
        "activeTorrentCount": s.active_torrents,
        "pausedTorrentCount": s.paused_torrents,
        "torrentCount": s.torrent_count,
        "downloadSpeed": s.download_speed,
        "uploadSpeed": s.upload_speed,
        "current-stats": totals.clone(),
        "cumulative-stats": totals,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
