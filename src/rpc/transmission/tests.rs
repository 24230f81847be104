use super::*;

/// A backend with two torrents that records what it was asked.
#[derive(Default)]
pub struct Fake {
    pub torrents: Vec<TorrentInfo>,
    pub calls: Vec<String>,
    pub session: SessionInfo,
    /// The tracker list of the last `set_torrent` that had one.
    pub last_trackers: Option<Vec<Vec<String>>>,
}

impl Fake {
    pub fn two() -> Self {
        let t = |id: u32, name: &str| TorrentInfo {
            id,
            hash: format!("{:040x}", id),
            name: name.into(),
            status: Some(Status::Download),
            total_size: 1000,
            size_when_done: 1000,
            left_until_done: 250,
            files: vec![FileInfo { name: format!("{name}/a"), length: 1000, bytes_completed: 750, wanted: true }],
            ..TorrentInfo::default()
        };
        Fake { torrents: vec![t(1, "one"), t(2, "two")], ..Fake::default() }
    }
}

impl Backend for Fake {
    fn torrent_ids(&self) -> Vec<u32> {
        self.torrents.iter().map(|t| t.id).collect()
    }
    fn recently_active(&self) -> Vec<u32> {
        vec![2]
    }
    fn recently_removed(&self) -> Vec<u32> {
        vec![7]
    }
    fn id_by_hash(&self, hash: &str) -> Option<u32> {
        self.torrents.iter().find(|t| t.hash.eq_ignore_ascii_case(hash)).map(|t| t.id)
    }
    fn torrent(&self, id: u32, detail: Detail) -> Option<TorrentInfo> {
        let mut t = self.torrents.iter().find(|t| t.id == id)?.clone();
        if !detail.files {
            t.files.clear();
        }
        Some(t)
    }
    fn add(&mut self, add: AddTorrent) -> Result<Added, String> {
        match add.source {
            AddSource::Metainfo(bytes) if bytes == b"d4:infod4:name3:newee" => {
                self.calls.push(format!("add paused={}", add.paused));
                Ok(Added { id: 3, name: "new".into(), hash: "ab".repeat(20), duplicate: false })
            }
            AddSource::Filename(f) if f.starts_with("magnet:") => {
                Ok(Added { id: 1, name: "one".into(), hash: format!("{:040x}", 1), duplicate: true })
            }
            _ => Err("invalid or corrupt torrent file".into()),
        }
    }
    fn start(&mut self, id: u32) {
        self.calls.push(format!("start {id}"));
    }
    fn stop(&mut self, id: u32) {
        self.calls.push(format!("stop {id}"));
    }
    fn verify(&mut self, id: u32) {
        self.calls.push(format!("verify {id}"));
    }
    fn reannounce(&mut self, id: u32) {
        self.calls.push(format!("reannounce {id}"));
    }
    fn remove(&mut self, id: u32, delete: bool) {
        self.calls.push(format!("remove {id} {delete}"));
    }
    fn set_torrent(&mut self, id: u32, set: &TorrentSet) -> Result<(), String> {
        self.calls.push(format!("set {id} {set:?}"));
        if set.trackers.is_some() {
            self.last_trackers = set.trackers.clone();
        }
        Ok(())
    }
    fn set_location(&mut self, id: u32, location: &str, move_data: bool) -> Result<(), String> {
        self.calls.push(format!("location {id} {location} move={move_data}"));
        Ok(())
    }
    fn session(&self) -> SessionInfo {
        self.session.clone()
    }
    fn set_session(&mut self, set: &SessionSet) -> Result<(), String> {
        self.calls.push(format!("session {set:?}"));
        Ok(())
    }
    fn stats(&self) -> SessionStats {
        SessionStats { torrent_count: 2, active_torrents: 2, ..SessionStats::default() }
    }
    fn free_space(&self, path: &str) -> Option<u64> {
        (path == "/data").then_some(12345)
    }
}

fn call(backend: &mut Fake, request: Value) -> Value {
    let body = handle(request.to_string().as_bytes(), backend);
    serde_json::from_slice(&body).expect("the response is JSON")
}

#[test]
fn torrent_get_answers_the_fields_asked_with_the_tag() {
    let mut b = Fake::two();
    let r = call(
        &mut b,
        json!({"method": "torrent-get", "tag": 7,
               "arguments": {"fields": ["id", "name", "percentDone", "status", "eta", "fileStats", "bogus"]}}),
    );
    assert_eq!(r["result"], "success");
    assert_eq!(r["tag"], 7);
    let ts = r["arguments"]["torrents"].as_array().unwrap();
    assert_eq!(ts.len(), 2);
    assert_eq!(ts[0]["name"], "one");
    assert_eq!(ts[0]["percentDone"], 0.75);
    assert_eq!(ts[0]["status"], 4);
    assert_eq!(ts[0]["eta"], -1);
    assert_eq!(ts[0]["fileStats"][0]["bytesCompleted"], 750);
    assert!(ts[0].get("bogus").is_none(), "unknown fields are left out");
    assert!(ts[0].get("totalSize").is_none(), "only what was asked");
}

#[test]
fn ids_may_be_numbers_hashes_a_single_value_or_recently_active() {
    let mut b = Fake::two();
    let names = |r: &Value| -> Vec<String> {
        r["arguments"]["torrents"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().into()).collect()
    };
    let get = |ids: Value| json!({"method": "torrent-get", "arguments": {"fields": ["name"], "ids": ids}});
    assert_eq!(names(&call(&mut b, get(json!([2])))), ["two"]);
    assert_eq!(names(&call(&mut b, get(json!(1)))), ["one"]);
    assert_eq!(names(&call(&mut b, get(json!([format!("{:040X}", 2), 99])))), ["two"]);
    let recent = call(&mut b, get(json!("recently-active")));
    assert_eq!(names(&recent), ["two"]);
    assert_eq!(recent["arguments"]["removed"], json!([7]));
    assert!(names(&call(&mut b, get(json!("nonsense")))).is_empty());
}

#[test]
fn the_table_format_puts_field_names_first() {
    let mut b = Fake::two();
    let r = call(&mut b, json!({"method": "torrent-get", "arguments": {"fields": ["id", "name"], "format": "table"}}));
    assert_eq!(r["arguments"]["torrents"], json!([["id", "name"], [1, "one"], [2, "two"]]));
}

#[test]
fn torrent_add_takes_base64_metainfo_or_a_filename_and_says_added_or_duplicate() {
    let mut b = Fake::two();
    let meta = base64::encode(b"d4:infod4:name3:newee");
    let r = call(&mut b, json!({"method": "torrent-add", "arguments": {"metainfo": meta, "paused": true}}));
    assert_eq!(r["result"], "success");
    assert_eq!(r["arguments"]["torrent-added"]["id"], 3);
    assert_eq!(b.calls, ["add paused=true"]);
    let r = call(&mut b, json!({"method": "torrent-add", "arguments": {"filename": "magnet:?xt=urn:btih:x"}}));
    assert_eq!(r["arguments"]["torrent-duplicate"]["name"], "one");
    let r = call(&mut b, json!({"method": "torrent-add", "arguments": {"metainfo": "!!!"}}));
    assert_eq!(r["result"], "invalid or corrupt torrent file");
    let r = call(&mut b, json!({"method": "torrent-add", "arguments": {}}));
    assert_ne!(r["result"], "success");
}

#[test]
fn actions_reach_the_backend_for_each_id() {
    let mut b = Fake::two();
    call(&mut b, json!({"method": "torrent-stop", "arguments": {"ids": [1, 2]}}));
    call(&mut b, json!({"method": "torrent-start-now", "arguments": {"ids": [2]}}));
    call(&mut b, json!({"method": "torrent-verify", "arguments": {"ids": 1}}));
    call(&mut b, json!({"method": "torrent-reannounce", "arguments": {"ids": [1]}}));
    call(&mut b, json!({"method": "torrent-remove", "arguments": {"ids": [2], "delete-local-data": true}}));
    assert_eq!(b.calls, ["stop 1", "stop 2", "start 2", "verify 1", "reannounce 1", "remove 2 true"]);
}

#[test]
fn limits_use_kilobytes_of_1000_and_the_enabled_flags() {
    let mut b = Fake::two();
    call(
        &mut b,
        json!({"method": "session-set", "arguments": {"speed-limit-down": 100, "speed-limit-down-enabled": true,
                                                       "speed-limit-up-enabled": false}}),
    );
    assert_eq!(
        b.calls,
        [format!(
            "session {:?}",
            SessionSet { speed_limit_down: Some(Some(100_000)), speed_limit_up: Some(None), ..SessionSet::default() }
        )]
    );
    b.calls.clear();
    call(
        &mut b,
        json!({"method": "torrent-set", "arguments": {"ids": [1], "files-unwanted": [0], "uploadLimited": true,
                                                               "uploadLimit": 5}}),
    );
    let set = TorrentSet { files_unwanted: vec![0], upload_limit: Some(Some(5000)), ..TorrentSet::default() };
    assert_eq!(b.calls, [format!("set 1 {set:?}")]);
}

#[test]
fn seed_ratios_are_read_checked_and_passed_on_and_tracker_edits_are_refused() {
    let mut b = Fake::two();
    b.torrents[0].seed_ratio_mode = 1;
    b.torrents[0].seed_ratio_limit = 1.5;
    b.session.seed_ratio_limit = 0.5;
    b.session.seed_ratio_limited = true;
    let r = call(
        &mut b,
        json!({"method": "torrent-get", "arguments": {"ids": [1], "fields": ["seedRatioMode", "seedRatioLimit"]}}),
    );
    assert_eq!(r["arguments"]["torrents"][0], json!({"seedRatioMode": 1, "seedRatioLimit": 1.5}));
    let r = call(&mut b, json!({"method": "session-get"}));
    assert_eq!((&r["arguments"]["seedRatioLimit"], &r["arguments"]["seedRatioLimited"]), (&json!(0.5), &json!(true)));

    call(
        &mut b,
        json!({"method": "torrent-set", "arguments": {"ids": [2], "seedRatioMode": 1, "seedRatioLimit": 0.25}}),
    );
    call(&mut b, json!({"method": "session-set", "arguments": {"seedRatioLimit": 3, "seedRatioLimited": false}}));
    let set = TorrentSet { seed_ratio_mode: Some(1), seed_ratio_limit: Some(0.25), ..TorrentSet::default() };
    let session = SessionSet { seed_ratio_limit: Some(3.0), seed_ratio_limited: Some(false), ..SessionSet::default() };
    assert_eq!(b.calls, [format!("set 2 {set:?}"), format!("session {session:?}")]);

    b.calls.clear();
    for bad in [
        json!({"method": "torrent-set", "arguments": {"ids": [1], "seedRatioMode": 3}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "seedRatioLimit": -1}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "seedRatioLimit": "lots"}}),
        json!({"method": "session-set", "arguments": {"seedRatioLimit": null}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerAdd": ["https://t/a"]}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerAdd": ["not a url"]}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerAdd": "http://t/a"}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerRemove": [0]}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerReplace": [0]}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "trackerList": 7}}),
        json!({"method": "torrent-set", "arguments": {"ids": [1], "location": 5}}),
        json!({"method": "torrent-set-location", "arguments": {"ids": [1], "move": true}}),
    ] {
        let r = call(&mut b, bad.clone());
        assert_ne!(r["result"], "success", "{bad}");
    }
    assert!(b.calls.is_empty(), "nothing reached the backend: {:?}", b.calls);
}

#[test]
fn peer_choke_flags_follow_transmission_where_the_client_is_us() {
    let mut b = Fake::two();
    b.torrents[0].peers = vec![PeerInfo {
        address: "127.0.0.1".into(),
        choked_by_peer: true,
        choking_peer: false,
        interested: true,
        peer_interested: true,
        ..PeerInfo::default()
    }];
    let r = call(&mut b, json!({"method": "torrent-get", "arguments": {"ids": [1], "fields": ["peers"]}}));
    let p = &r["arguments"]["torrents"][0]["peers"][0];
    assert_eq!((&p["clientIsChoked"], &p["peerIsChoked"]), (&json!(true), &json!(false)), "{p}");
    assert_eq!((&p["isDownloadingFrom"], &p["isUploadingTo"]), (&json!(false), &json!(true)), "{p}");
    assert_eq!(p["flagStr"], "dU");
}

#[test]
fn session_methods_answer_what_clients_read() {
    let mut b = Fake::two();
    let r = call(&mut b, json!({"method": "session-get"}));
    assert!(r["arguments"]["rpc-version"].as_u64().unwrap() >= 15);
    assert!(r["arguments"]["version"].as_str().unwrap().contains("rill"));
    let r = call(&mut b, json!({"method": "session-stats"}));
    assert_eq!(r["arguments"]["torrentCount"], 2);
    let r = call(&mut b, json!({"method": "free-space", "arguments": {"path": "/data"}}));
    assert_eq!(r["arguments"]["size-bytes"], 12345);
    let r = call(&mut b, json!({"method": "port-test"}));
    assert_eq!(r["arguments"]["port-is-open"], false);
}

#[test]
fn bad_requests_get_an_error_result_never_a_panic() {
    let mut b = Fake::two();
    for body in [&b"not json"[..], b"[]", b"{}", b"{\"method\": 5}", b"\xff\xfe", b"{\"method\":\"torrent-get\"}"] {
        let r: Value = serde_json::from_slice(&handle(body, &mut b)).unwrap();
        assert_ne!(r["result"], "success", "{:?}", String::from_utf8_lossy(body));
    }
    let r = call(&mut b, json!({"method": "no-such-method", "tag": 3}));
    assert!(r["result"].as_str().unwrap().contains("not recognized"));
    assert_eq!(r["tag"], 3);
    let deep = "[".repeat(100_000);
    let r: Value = serde_json::from_slice(&handle(deep.as_bytes(), &mut b)).unwrap();
    assert_eq!(r["result"], "invalid JSON request");
}

#[test]
fn transmission_4_json_rpc_2_0_is_answered_in_its_own_form() {
    let mut b = Fake::two();
    let r = call(
        &mut b,
        json!({"jsonrpc": "2.0", "id": 5, "method": "torrent_get",
               "params": {"fields": ["id", "hash_string", "percent_done", "peer_limit"], "ids": [2]}}),
    );
    assert_eq!(r["jsonrpc"], "2.0");
    assert_eq!(r["id"], 5);
    let t = &r["result"]["torrents"][0];
    assert_eq!(t["id"], 2);
    assert_eq!(t["hash_string"], format!("{:040x}", 2));
    assert_eq!(t["percent_done"], 0.75);
    assert_eq!(t["peer_limit"], 50);
    assert!(t.get("percentDone").is_none(), "answers use snake_case only: {t}");
    let r = call(&mut b, json!({"jsonrpc": "2.0", "id": "x", "method": "session_get"}));
    assert!(r["result"]["rpc_version"].as_u64().unwrap() >= 15);
    let r = call(
        &mut b,
        json!({"jsonrpc": "2.0", "id": 1, "method": "torrent_remove",
                                "params": {"ids": [1], "delete_local_data": true}}),
    );
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(b.calls, ["remove 1 true"]);
    let r = call(&mut b, json!({"jsonrpc": "2.0", "id": 2, "method": "no_such"}));
    assert_eq!(r["error"]["code"], -32601);
    let r = call(&mut b, json!({"jsonrpc": "2.0", "id": 3, "method": "torrent_add", "params": {}}));
    assert!(r["error"]["message"].is_string(), "{r}");
}

fn with_trackers(list: &[(usize, &str)]) -> Vec<TrackerInfo> {
    list.iter()
        .map(|(tier, url)| TrackerInfo { announce: url.to_string(), tier: *tier, ..TrackerInfo::default() })
        .collect()
}

/// What `torrent-set` handed the backend as the new tracker list.
fn edited(b: &mut Fake, args: Value) -> Result<Vec<Vec<String>>, String> {
    b.calls.clear();
    let mut request = json!({"method": "torrent-set", "arguments": {"ids": [1]}});
    for (k, v) in args.as_object().unwrap() {
        request["arguments"][k] = v.clone();
    }
    let r = call(b, request);
    if r["result"] != "success" {
        return Err(r["result"].as_str().unwrap().to_string());
    }
    assert_eq!(b.calls.len(), 1, "{:?}", b.calls);
    Ok(b.last_trackers.take().expect("a tracker list reached the backend"))
}

#[test]
fn tracker_edits_follow_transmission_by_id_tier_and_order() {
    let mut b = Fake::two();
    b.torrents[0].trackers =
        with_trackers(&[(0, "http://a/ann"), (0, "http://b/ann"), (1, "udp://c:1"), (2, "https://d/ann")]);
    let tiers = |list: &[&[&str]]| -> Vec<Vec<String>> {
        list.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect()
    };
    // Added: each URL in a tier of its own, after the others; one already there is skipped.
    assert_eq!(
        edited(&mut b, json!({"trackerAdd": ["http://e/ann", "http://a/ann", "udp://f:2"]})),
        Ok(tiers(&[
            &["http://a/ann", "http://b/ann"],
            &["udp://c:1"],
            &["https://d/ann"],
            &["http://e/ann"],
            &["udp://f:2"]
        ]))
    );
    // Removed and replaced by id (place in `trackers`), in the same call; the replaced one keeps its tier.
    assert_eq!(
        edited(&mut b, json!({"trackerRemove": [1, 3], "trackerReplace": [2, "http://g/ann"]})),
        Ok(tiers(&[&["http://a/ann"], &["http://g/ann"]]))
    );
    // Transmission 4's whole list: blank lines part tiers; an https tracker the torrent already has may stay.
    assert_eq!(
        edited(&mut b, json!({"trackerList": "http://a/ann\nhttp://x/ann\n\n\nhttps://d/ann\n"})),
        Ok(tiers(&[&["http://a/ann", "http://x/ann"], &["https://d/ann"]]))
    );
    assert_eq!(edited(&mut b, json!({"trackerList": ""})), Ok(vec![]));
    // Refused, with what is wrong; nothing reaches the backend.
    for (args, error) in [
        (
            json!({"trackerAdd": ["https://new/ann"]}),
            "invalid tracker URL https://new/ann: unsupported url scheme \"https\"",
        ),
        (json!({"trackerAdd": ["http://a/ann"]}), "every tracker to add is there already"),
        (json!({"trackerRemove": [4]}), "no tracker with id 4"),
        (
            json!({"trackerReplace": [0, "udp://noport"]}),
            "invalid tracker URL udp://noport: udp tracker url has no port",
        ),
        (json!({"trackerReplace": [0]}), "trackerReplace must be pairs of id and URL"),
        (json!({"trackerAdd": [format!("http://h/{}", "a".repeat(3000))]}), "tracker URL longer than 2048 bytes"),
    ] {
        assert_eq!(edited(&mut b, args.clone()), Err(error.to_string()), "{args}");
        assert!(b.calls.is_empty());
    }
    let many: Vec<String> = (0..1001).map(|i| format!("http://t{i}/ann")).collect();
    assert_eq!(edited(&mut b, json!({"trackerAdd": many})), Err("at most 1000 trackers".to_string()));
}

#[test]
fn set_location_moves_or_finds_the_files_of_each_torrent_named() {
    let mut b = Fake::two();
    let r = call(
        &mut b,
        json!({"method": "torrent-set-location", "arguments": {"ids": [1, 2], "location": "/data/new", "move": true}}),
    );
    assert_eq!(r["result"], "success");
    let r = call(&mut b, json!({"method": "torrent-set", "arguments": {"ids": [2], "location": "/data/found"}}));
    assert_eq!(r["result"], "success");
    let expected = [
        "location 1 /data/new move=true",
        "location 2 /data/new move=true",
        "set 2 TorrentSet { files_wanted: [], files_unwanted: [], download_limit: None, upload_limit: None, \
         seed_ratio_mode: None, seed_ratio_limit: None, trackers: None }",
        "location 2 /data/found move=false",
    ];
    assert_eq!(b.calls, expected);
}

#[test]
fn turtle_mode_keys_map_to_bytes_and_a_schedule_is_refused() {
    let mut b = Fake::two();
    b.session.alt_speed_enabled = true;
    b.session.alt_speed_up = 40_000;
    let r = call(&mut b, json!({"method": "session-get"}));
    assert_eq!((&r["arguments"]["alt-speed-enabled"], &r["arguments"]["alt-speed-up"]), (&json!(true), &json!(40)));
    let r = call(
        &mut b,
        json!({"method": "session-set", "arguments": {"alt-speed-enabled": false, "alt-speed-down": 120,
               "alt-speed-time-enabled": false, "download-dir": "/ignored"}}),
    );
    assert_eq!(r["result"], "success");
    let set = SessionSet { alt_speed_enabled: Some(false), alt_speed_down: Some(120_000), ..SessionSet::default() };
    assert_eq!(b.calls, [format!("session {set:?}")]);
    b.calls.clear();
    for bad in [json!({"alt-speed-time-enabled": true}), json!({"alt-speed-up": "fast"})] {
        let r = call(&mut b, json!({"method": "session-set", "arguments": bad}));
        assert_ne!(r["result"], "success", "{r}");
    }
    assert!(b.calls.is_empty());
}
