//! The daemon's RPC server: `rpc::RpcServer` (HTTP request framing, credentials, Host allow-list, session-id
//! handshake, caps) and `rpc::transmission::handle` (the JSON methods) over a stub backend.
//!
//! Input: one flag byte, then the bytes. Bit 5 set: the bytes are the daemon's state file (`daemon.json`),
//! which must parse or be refused, and round-trip when it parses. Bit 0 set: the bytes are an RPC request
//! body, answered directly.
//! Otherwise they are what a client sends on one connection, fed once in one piece and once cut into reads of
//! a size picked by bits 1–3; bit 4 turns on Basic credentials.
//!
//! Invariants: never a panic; every answer body is JSON with a `result` string (and `arguments`); what the
//! server writes does not depend on how the bytes were cut (leaving out `100 Continue`, which answers a head
//! that arrived before its body); every response is a well-formed status line with a Content-Length that
//! matches; the server never buffers more than its caps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::rpc::transmission::{
    handle, AddSource, AddTorrent, Added, Backend, Detail, FileInfo, SessionInfo, SessionSet, SessionStats, Status,
    TorrentInfo, TorrentSet, TrackerInfo,
};
use rill::daemon::state::SavedState;
use rill::rpc::{http, RpcConfig, RpcServer, MAX_BUFFERED};
use rill::time::Timestamp;

struct Stub {
    ids: Vec<u32>,
}

impl Backend for Stub {
    fn torrent_ids(&self) -> Vec<u32> {
        self.ids.clone()
    }
    fn recently_active(&self) -> Vec<u32> {
        self.ids.iter().copied().take(1).collect()
    }
    fn recently_removed(&self) -> Vec<u32> {
        vec![99]
    }
    fn id_by_hash(&self, hash: &str) -> Option<u32> {
        (hash.len() == 40).then_some(1).filter(|id| self.ids.contains(id))
    }
    fn torrent(&self, id: u32, detail: Detail) -> Option<TorrentInfo> {
        self.ids.contains(&id).then(|| TorrentInfo {
            id,
            name: format!("t\u{1}<{id}>\""),
            status: Some(Status::Seed),
            total_size: 10,
            size_when_done: 10,
            files: if detail.files {
                vec![FileInfo { name: "a".into(), length: 10, bytes_completed: 10, wanted: true }]
            } else {
                Vec::new()
            },
            // Trackers to remove and replace by id (`torrent-set`).
            trackers: ["http://127.0.0.1:1/announce", "udp://127.0.0.1:2", "https://t/a"]
                .iter()
                .enumerate()
                .map(|(tier, url)| TrackerInfo { announce: url.to_string(), tier, ..TrackerInfo::default() })
                .collect(),
            ..TorrentInfo::default()
        })
    }
    fn add(&mut self, add: AddTorrent) -> Result<Added, String> {
        match add.source {
            AddSource::Metainfo(b) if b.len() > 3 => {
                self.ids.push(7);
                Ok(Added { id: 7, name: "x".into(), hash: "00".repeat(20), duplicate: false })
            }
            _ => Err("invalid or corrupt torrent file".into()),
        }
    }
    fn start(&mut self, _: u32) {}
    fn stop(&mut self, _: u32) {}
    fn verify(&mut self, _: u32) {}
    fn reannounce(&mut self, _: u32) {}
    fn remove(&mut self, id: u32, _: bool) {
        self.ids.retain(|&i| i != id);
    }
    fn set_torrent(&mut self, _: u32, _: &TorrentSet) -> Result<(), String> {
        Ok(())
    }
    fn set_location(&mut self, _: u32, _: &str, _: bool) -> Result<(), String> {
        Ok(())
    }
    fn session(&self) -> SessionInfo {
        SessionInfo::default()
    }
    fn set_session(&mut self, _: &SessionSet) -> Result<(), String> {
        Ok(())
    }
    fn stats(&self) -> SessionStats {
        SessionStats::default()
    }
    fn free_space(&self, _: &str) -> Option<u64> {
        None
    }
}

fn check_json_answer(body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("an RPC answer is JSON");
    assert!(v["result"].is_string(), "{v}");
    assert!(v["arguments"].is_object(), "{v}");
}

/// Feeds `bytes` in `chunk`-byte reads to a fresh server; returns everything written, without `100 Continue`.
fn serve(bytes: &[u8], chunk: usize, auth: bool) -> Vec<u8> {
    let config = RpcConfig {
        auth: auth.then(|| ("u".to_string(), "p".to_string())),
        host_allow: vec!["pi.lan".into()],
    };
    let mut server = RpcServer::new(config, "SID".into());
    let mut backend = Stub { ids: vec![1, 2] };
    let now = Timestamp::ZERO;
    let id = server.handle_accept("127.0.0.1:1".parse().unwrap(), now);
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        server.handle_input(id, piece, now, &mut backend);
        let pending = server.pending_output(id).to_vec();
        server.consume_output(id, pending.len());
        out.extend_from_slice(&pending);
    }
    while let Some(start) = find(&out, http::CONTINUE) {
        out.drain(start..start + http::CONTINUE.len());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Every response in `out` is a status line, headers with a matching Content-Length, and its body (none for
/// a HEAD request: then the next response, or the end, follows the head at once).
fn check_responses(mut out: &[u8]) {
    while !out.is_empty() {
        let head_end = find(out, b"\r\n\r\n").expect("a complete head") + 4;
        let head = std::str::from_utf8(&out[..head_end]).expect("an ASCII head");
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("a Content-Length");
        let rest = &out[head_end..];
        if rest.is_empty() || rest.starts_with(b"HTTP/1.1 ") {
            out = rest;
            continue;
        }
        let body = &rest[..len];
        if head.contains("application/json") {
            check_json_answer(body);
        }
        out = &out[head_end + len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else { return };
    if flags & 32 != 0 {
        if let Ok(state) = SavedState::parse(bytes) {
            assert!(state.torrents.len() <= rill::daemon::state::MAX_TORRENTS);
            assert_eq!(SavedState::parse(&state.to_bytes()).ok(), Some(state));
        }
        return;
    }
    if flags & 1 != 0 {
        let mut backend = Stub { ids: vec![1, 2, 3] };
        check_json_answer(&handle(bytes, &mut backend));
        return;
    }
    let chunk = [1, 2, 3, 7, 16, 64, 200, 1500][usize::from(flags >> 1 & 7)];
    let auth = flags & 16 != 0;
    assert!(bytes.len() < MAX_BUFFERED);
    let whole = serve(bytes, bytes.len().max(1), auth);
    let cut = serve(bytes, chunk, auth);
    assert_eq!(whole, cut, "the answers depend on how the bytes were cut ({chunk}-byte reads)");
    check_responses(&whole);
});
