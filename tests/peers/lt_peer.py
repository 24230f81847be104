#!/usr/bin/python3
"""A python3-libtorrent peer for rill's integration tests: a seeder or a leecher on loopback.

    lt_peer.py (--torrent T | --magnet URI) --save DIR --port P --status FILE.json [--seed] [--upload-limit B/s]
               [--download-limit B/s] [--peer IP:PORT]... [--no-tracker] [--exit-when-done] [--max-life SECS]
               [--encryption default|disabled|forced|rc4] [--utp-only] [--pex] [--choke-cycle SECS]
               [--log-peer-messages] [--dht [--dht-node IP:PORT]... [--force-dht-announce] [--dht-log]] [--bind6]
    lt_peer.py --dht-only-node --port P --status FILE.json [--dht-node IP:PORT]... [--max-life SECS] [--dht-log]

Binds 127.0.0.1:P only (with --bind6: [::1]:P only, for IPv6 peers, BEP 7); DHT (unless --dht), LSD, UPnP, NAT-PMP, uTP and PEX (unless --pex) are off; several
connections per IP are allowed (every peer is 127.0.0.1). Rate limits are in bytes per second and apply to loopback peers too (libtorrent puts
local peers in an unthrottled peer class by default; we map every address to the global class instead).
Every 0.2 s FILE.json is replaced atomically with the torrent's state, payload totals and per-peer totals
(`peers_seen` keeps the highest totals of every peer ever connected, keyed "ip:port"). Alerts go to stdout.
Each peer record also carries its `peer_id` (hex of the 20 bytes, "" when unknown), so that a peer can be recognised
whichever side dialled, `num_pieces`, how many pieces the peer has as far as we know, and how the connection is
carried: `rc4` (an MSE handshake selected RC4: the stream is encrypted) or `plaintext_encrypted` (an MSE handshake
selected plaintext); neither is a plain BitTorrent handshake; and `utp`, the connection is over uTP, not TCP (in
`peers_seen`, each is true once it was seen true).
`peer_ids` maps "ip:port" to the peer id of every connection that got past the handshake, from the peer alerts too:
it also lists connections that opened and closed between two status writes (which `peers_seen` misses). With
--no-tracker the torrent's trackers are dropped before it is added: the session never announces, and its only peers
are the --peer addresses (and whoever dials it).
--encryption rc4 is forced with RC4 as the only crypto method inside (the stream is encrypted both ways).
--encryption disabled speaks plain BitTorrent only (no MSE handshake either way); forced makes every connection,
incoming and outgoing, start with the MSE/PE handshake and drops plaintext ones, while still allowing the plaintext
crypto method inside it (rill's responder selects plaintext); default is libtorrent's own (MSE offered, plaintext
accepted).
--magnet starts from a magnet link instead of a .torrent (its `tr` trackers and `x.pe` peers as libtorrent parses
them; --no-tracker drops the trackers): the metadata is fetched over ut_metadata first. The status then also says
`has_metadata`, and `metadata_at`, the seconds from adding the torrent to libtorrent's metadata_received alert (the
loop waits on alerts rather than sleeping until then, so the figure is not rounded to the 0.2 s status period).
--pex turns libtorrent's ut_pex plugin on (BEP 11): it tells each peer about its other connected peers about a
second after the extended handshake, then once a minute, and connects to the peers it is told about (never for a
private torrent: libtorrent leaves PEX off there).
--choke-cycle SECS makes the session keep every peer choked until SECS seconds after the first one connects, then
unchoke them, choke them again, and so on every SECS seconds (it sets `unchoke_slots_limit` to 0, then back to its default; libtorrent applies it at its
next choking round): a seeder whose peers are choked mid-transfer, which with the fast extension (BEP 6) rejects
their queued requests. Each switch is logged ("choke cycle: ...").
--log-peer-messages also logs every peer-wire message in and out (libtorrent's peer log alerts, e.g.
"<== HAVE_ALL").
--dht turns libtorrent's mainline DHT (BEP 5) on, as a private DHT on loopback: its node uses the UDP side of
127.0.0.1:P (P is both the peer-wire and the DHT port), `dht_bootstrap_nodes` is empty (never the public router),
`dht_restrict_routing_ips`/`dht_restrict_search_ips` are off (every node shares 127.0.0.1), and the per-IP DoS
blocker and the DHT upload limit are raised so that a busy loopback DHT is neither banned nor throttled.
--dht-node IP:PORT (repeatable) adds a node to the routing table (`add_dht_node`): every session of a test swarm
gets the same first node. It is added again every 2 s while the routing table is empty: a node that missed its
first ping (not listening yet: the sessions of a test start together) is dropped for good.
--force-dht-announce makes the torrent announce (get_peers, then announce_peer to the closest nodes) as soon as
its routing table has a node, then every 2 s while it has no peer (libtorrent's own interval is 15 minutes), at
most 150 times; each is logged ("force_dht_announce N").
--dht-only-node starts a session with no torrent at all, just a DHT node (e.g. the bootstrap node of a test
swarm); --save is then not needed.
With --dht the status gains `dht_running`, `dht_nodes` (nodes in the routing table, from the dht_stats alert
asked for at every status write), `dht_nodes_seen` (the highest value so far), `dht_announces_in` (every
announce_peer this node accepted, in order, the first 1000: {"peer": "ip:port", "info_hash": hex}),
`dht_get_peers_in` (get_peers queries it answered) and, with a torrent, `dht_forced_announces`.
--dht-log also logs libtorrent's DHT log lines and packets (dht_log_notification): verbose, for debugging.
A magnet with only `xt` (no `tr`, no `x.pe`) is accepted: its peers can then only come from the DHT or --peer.
Exits by itself after --max-life seconds, or once the download is complete with --exit-when-done.
"""
import argparse
import json
import os
import sys
import time

import libtorrent as lt


# peer_info::utp_socket (bit 17 of peer_flags_t in libtorrent 2.0's peer_info.hpp, between i2p_socket and
# ssl_socket); the 2.0.8 Python bindings do not export it.
UTP_SOCKET = int(getattr(lt.peer_info, "utp_socket", 1 << 17))


def log(*a):
    print("%.3f" % time.time(), *a, flush=True)


def peer_id_hex(sha1):
    """A peer id (sha1_hash) as hex; "" when it is not known (all zeros: no handshake yet)."""
    try:
        pid = sha1.to_bytes()
    except Exception:  # noqa: BLE001
        return ""
    return "" if pid == bytes(20) else pid.hex()


def main():
    ap = argparse.ArgumentParser()
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--torrent")
    source.add_argument("--magnet", help="a magnet link: fetch the metadata from peers first")
    source.add_argument("--dht-only-node", action="store_true", help="no torrent: only a DHT node")
    ap.add_argument("--save")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--seed", action="store_true", help="data is complete in --save: check it, then seed")
    ap.add_argument("--upload-limit", type=int, default=0)
    ap.add_argument("--download-limit", type=int, default=0)
    ap.add_argument("--peer", action="append", default=[])
    ap.add_argument("--no-tracker", action="store_true", help="never announce: peers only from --peer")
    ap.add_argument("--exit-when-done", action="store_true")
    ap.add_argument("--max-life", type=float, default=300.0)
    ap.add_argument("--encryption", choices=["default", "disabled", "forced", "rc4"], default="default")
    ap.add_argument("--pex", action="store_true", help="peer exchange (ut_pex) on")
    ap.add_argument("--utp-only", action="store_true", help="uTP on, TCP off both ways (incoming and outgoing)")
    ap.add_argument("--choke-cycle", type=float, default=0.0)
    ap.add_argument("--log-peer-messages", action="store_true")
    ap.add_argument("--dht", action="store_true", help="the mainline DHT on, set up for a private loopback DHT")
    ap.add_argument("--dht-node", action="append", default=[], help="IP:PORT of a DHT node to start from")
    ap.add_argument("--force-dht-announce", action="store_true", help="announce every 2 s while there is no peer")
    ap.add_argument("--dht-log", action="store_true", help="log libtorrent's DHT log lines and packets")
    ap.add_argument("--bind6", action="store_true", help="listen on [::1]:P (and dial from ::1) instead of 127.0.0.1")
    args = ap.parse_args()
    if args.dht_only_node:
        args.dht = True
    elif not args.save:
        ap.error("--save is required with --torrent or --magnet")
    if (args.dht_node or args.force_dht_announce or args.dht_log) and not args.dht:
        ap.error("--dht-node, --force-dht-announce and --dht-log need --dht")
    if args.bind6 and args.dht:
        ap.error("--bind6 and --dht do not go together (the loopback DHT is IPv4)")
    dht_nodes_arg = []
    for spec in args.dht_node:
        host, _, port = spec.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            ap.error("--dht-node wants HOST:PORT, got %r" % spec)
        dht_nodes_arg.append((host.strip("[]"), int(port)))
    started = time.monotonic()

    settings = {
        "listen_interfaces": ("[::1]:%d" if args.bind6 else "127.0.0.1:%d") % args.port,
        "outgoing_interfaces": "::1" if args.bind6 else "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "upload_rate_limit": args.upload_limit,
        "download_rate_limit": args.download_limit,
        "user_agent": "rill-tests/lt_peer libtorrent/" + lt.__version__,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.connect_notification,
    }
    if args.utp_only:
        settings.update({
            "enable_incoming_utp": True,
            "enable_outgoing_utp": True,
            "enable_incoming_tcp": False,
            "enable_outgoing_tcp": False,
        })
    if args.dht:
        settings.update(DHT_SETTINGS)
        settings["alert_mask"] |= lt.alert.category_t.dht_notification
        if args.dht_log:
            settings["alert_mask"] |= lt.alert.category_t.dht_log_notification
    if args.choke_cycle > 0:
        settings["unchoke_slots_limit"] = 0
    if args.log_peer_messages:
        settings["alert_mask"] |= lt.alert.category_t.peer_log_notification
    if args.encryption == "disabled":
        settings["out_enc_policy"] = int(lt.enc_policy.pe_disabled)
        settings["in_enc_policy"] = int(lt.enc_policy.pe_disabled)
    elif args.encryption == "forced":
        settings["out_enc_policy"] = int(lt.enc_policy.pe_forced)
        settings["in_enc_policy"] = int(lt.enc_policy.pe_forced)
        settings["allowed_enc_level"] = int(lt.enc_level.pe_both)
    elif args.encryption == "rc4":
        settings["out_enc_policy"] = int(lt.enc_policy.pe_forced)
        settings["in_enc_policy"] = int(lt.enc_policy.pe_forced)
        settings["allowed_enc_level"] = int(lt.enc_level.pe_rc4)
        settings["prefer_rc4"] = True
    # flags=0: no default plugins, so no ut_pex (PEX off). ut_metadata back on: harmless, and some leechers ask.
    ses = lt.session(settings, 0)
    ses.add_extension("ut_metadata")
    if args.pex:
        ses.add_extension("ut_pex")
    # Apply rate limits to local (loopback) peers as well.
    pcf = lt.ip_filter()
    pcf.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    pcf.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
    ses.set_peer_class_filter(pcf)
    dht = DhtState(ses, dht_nodes_arg) if args.dht else None
    if args.dht_only_node:
        dht_only_node(args, ses, dht, started)
        return

    if args.magnet:
        atp = lt.parse_magnet_uri(args.magnet)
        if args.no_tracker:
            atp.trackers = []
        name = atp.name or "(magnet)"
    elif args.no_tracker:
        # Drop the top-level announce keys only: the info dict, and so the info-hash, stays the same.
        with open(args.torrent, "rb") as f:
            meta = lt.bdecode(f.read())
        meta.pop(b"announce", None)
        meta.pop(b"announce-list", None)
        info = lt.torrent_info(meta)
    else:
        info = lt.torrent_info(args.torrent)
    if not args.magnet:
        atp = lt.add_torrent_params()
        atp.ti = info
        name = info.name()
    atp.save_path = args.save
    h = ses.add_torrent(atp)
    added_at = time.monotonic()
    log("added", name, str(h.info_hash()), "seed" if args.seed else "leech", "port", args.port,
        "encryption", args.encryption, "pex", args.pex, "dht", args.dht)

    peers_seen = {}
    peer_ids = {}
    connected_to = set()
    done_at = None
    metadata_at = None
    default_slots = lt.default_settings()["unchoke_slots_limit"]
    choking = True
    next_switch = None  # the cycle starts when the first peer connects
    announces = 0
    next_announce = time.monotonic()
    while True:
        now = time.monotonic()
        if args.choke_cycle > 0 and next_switch is None and h.status().num_peers > 0:
            log("choke cycle: first peer connected, choked")
            next_switch = now + args.choke_cycle
        if next_switch is not None and now >= next_switch:
            choking = not choking
            ses.apply_settings({"unchoke_slots_limit": 0 if choking else default_slots})
            log("choke cycle:", "choking every peer" if choking else "unchoking again")
            next_switch = now + args.choke_cycle
        if now - started > args.max_life:
            log("max life reached, exiting")
            break
        for a in ses.pop_alerts():
            if dht is not None and dht.on_alert(a):
                continue
            log(type(a).__name__, a.message())
            if isinstance(a, lt.metadata_received_alert) and metadata_at is None:
                metadata_at = time.monotonic() - added_at
            if isinstance(a, lt.peer_alert):
                pid = peer_id_hex(a.pid)
                if pid:
                    peer_ids["%s:%d" % (a.endpoint[0], a.endpoint[1])] = pid
        st = h.status()
        checking = st.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
        # Only once the routing table has a node: an announce with none reaches nobody.
        if (args.force_dht_announce and not checking and st.num_peers == 0 and dht.nodes > 0
                and now >= next_announce and announces < MAX_FORCED_ANNOUNCES):
            h.force_dht_announce()
            announces += 1
            log("force_dht_announce", announces, "dht nodes", dht.nodes)
            next_announce = now + 2.0
        # Explicit peers: (re)connect whenever we are not connected to them.
        if args.peer and st.state not in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
            current = {"%s:%d" % (p.ip[0], p.ip[1]) for p in h.get_peer_info()}
            for spec in args.peer:
                if spec not in current and (spec not in connected_to or int(now) % 3 == 0):
                    host, port = spec.rsplit(":", 1)
                    try:
                        h.connect_peer((host, int(port)), 0)
                        connected_to.add(spec)
                    except Exception as e:  # noqa: BLE001
                        log("connect_peer failed", spec, e)
        peers = []
        for p in h.get_peer_info():
            key = "%s:%d" % (p.ip[0], p.ip[1])
            rec = {
                "ip": p.ip[0],
                "port": p.ip[1],
                "client": p.client.decode("utf-8", "replace") if isinstance(p.client, bytes) else str(p.client),
                "total_upload": p.total_upload,
                "total_download": p.total_download,
                "payload_up_speed": p.payload_up_speed,
                "payload_down_speed": p.payload_down_speed,
                "seed": bool(p.flags & lt.peer_info.seed),
                "outgoing": bool(p.flags & lt.peer_info.local_connection),
                "peer_id": peer_id_hex(p.pid),
                "num_pieces": p.num_pieces,
                "rc4": bool(p.flags & lt.peer_info.rc4_encrypted),
                "plaintext_encrypted": bool(p.flags & lt.peer_info.plaintext_encrypted),
                "utp": bool(p.flags & UTP_SOCKET),
            }
            peers.append(rec)
            if rec["peer_id"]:
                peer_ids[key] = rec["peer_id"]
            old = peers_seen.get(key)
            if old is None:
                peers_seen[key] = dict(rec)
            else:
                old["total_upload"] = max(old["total_upload"], rec["total_upload"])
                old["total_download"] = max(old["total_download"], rec["total_download"])
                old["client"] = rec["client"]
                old["peer_id"] = rec["peer_id"] or old.get("peer_id", "")
                old["rc4"] = old["rc4"] or rec["rc4"]
                old["plaintext_encrypted"] = old["plaintext_encrypted"] or rec["plaintext_encrypted"]
                old["utp"] = old["utp"] or rec["utp"]
        status = {
            "pid": os.getpid(),
            "state": str(st.state),
            "checking": st.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data),
            "progress": st.progress,
            "is_seeding": st.is_seeding,
            "is_finished": st.is_finished,
            "total_done": st.total_done,
            "total_wanted": st.total_wanted,
            "total_payload_upload": st.total_payload_upload,
            "total_payload_download": st.total_payload_download,
            "all_time_upload": st.all_time_upload,
            "all_time_download": st.all_time_download,
            "upload_rate": st.upload_payload_rate,
            "download_rate": st.download_payload_rate,
            "num_peers": st.num_peers,
            "error": str(st.errc.message()) if st.errc and st.errc.value() != 0 else "",
            "peers": peers,
            "peers_seen": peers_seen,
            "peer_ids": peer_ids,
            "elapsed": now - started,
            "has_metadata": st.has_metadata,
            "metadata_at": metadata_at,
        }
        if dht is not None:
            status.update(dht.status())
            status["dht_forced_announces"] = announces
            dht.ask()
            dht.add_first_nodes()
        write_status(args.status, status)
        if args.exit_when_done and st.is_seeding:
            if done_at is None:
                log("download complete")
                done_at = now
            elif now - done_at > 0.5:  # one more status write with final totals
                break
        if args.magnet and metadata_at is None:
            ses.wait_for_alert(200)
        else:
            time.sleep(0.2)
    ses.pause()
    sys.exit(0)


# A private DHT on loopback (libtorrent 2.0.8; see PROTOCOL-NOTES "DHT (BEP 5, 32, 42) on loopback").
DHT_SETTINGS = {
    "enable_dht": True,
    # Its default is dht.libtorrent.org:25401: never leave loopback. Nodes come from --dht-node only.
    "dht_bootstrap_nodes": "",
    # Every node is 127.0.0.1: by default only one node per IP (and per /24) enters the routing table or a lookup.
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    # The DoS blocker bans for dht_block_timeout s an address that sends more than dht_block_ratelimit messages a
    # second (averaged over 10 s): every node of the swarm shares 127.0.0.1.
    "dht_block_ratelimit": 1000000,
    # Default 8000 B/s of DHT replies, shared by every node on 127.0.0.1 that asks.
    "dht_upload_rate_limit": 1000000,
}

# Forced announces while the torrent has no peer: every 2 s, 5 minutes at most.
MAX_FORCED_ANNOUNCES = 150


class DhtState:
    """What the status file says about the DHT, from the alerts: the routing table's size (dht_stats_alert, asked
    for with post_dht_stats), the announces accepted and the get_peers queries answered."""

    def __init__(self, ses, first_nodes):
        self.ses = ses
        self.first_nodes = first_nodes
        self.next_add = 0.0
        self.nodes = 0
        self.nodes_seen = 0
        self.replacements = 0
        self.announces_in = []
        self.get_peers_in = 0
        self.asked = False
        self.asked_at = 0.0

    def add_first_nodes(self):
        """add_dht_node of every --dht-node, at start and again every 2 s while the routing table is empty: a node
        that did not answer its first ping (not listening yet: the sessions of a test start together) is dropped
        for good, and with no bootstrap router libtorrent has nothing else to start from."""
        now = time.monotonic()
        if self.first_nodes and self.nodes == 0 and now >= self.next_add:
            for node in self.first_nodes:
                self.ses.add_dht_node(node)
                log("add_dht_node", "%s:%d" % node)
            self.next_add = now + 2.0

    def ask(self):
        """Asks for a dht_stats alert, unless one is on its way; at most every 0.2 s (the alert wakes the loop)."""
        now = time.monotonic()
        if not self.asked and now - self.asked_at >= 0.2:
            self.ses.post_dht_stats()
            self.asked = True
            self.asked_at = now

    def on_alert(self, a):
        """Consumes the alerts it counts (True: nothing more to do with it)."""
        if isinstance(a, lt.dht_stats_alert):
            self.asked = False
            table = a.routing_table or []
            self.nodes = sum(b.get("num_nodes", 0) for b in table)
            self.replacements = sum(b.get("num_replacements", 0) for b in table)
            self.nodes_seen = max(self.nodes_seen, self.nodes)
            return True
        if isinstance(a, lt.dht_announce_alert):
            entry = {"peer": "%s:%d" % (a.ip, a.port), "info_hash": str(a.info_hash)}
            if len(self.announces_in) < 1000:
                self.announces_in.append(entry)
            log(type(a).__name__, a.message())
            return True
        if isinstance(a, lt.dht_get_peers_alert):
            self.get_peers_in += 1
            return True
        return False

    def status(self):
        return {
            "dht_running": self.ses.is_dht_running(),
            "dht_nodes": self.nodes,
            "dht_nodes_seen": self.nodes_seen,
            "dht_replacements": self.replacements,
            "dht_announces_in": self.announces_in,
            "dht_get_peers_in": self.get_peers_in,
        }


def write_status(path, status):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def dht_only_node(args, ses, dht, started):
    """A session with no torrent: a DHT node serving the others, until --max-life."""
    log("dht-only node on port", args.port)
    while True:
        now = time.monotonic()
        if now - started > args.max_life:
            log("max life reached, exiting")
            break
        for a in ses.pop_alerts():
            if not dht.on_alert(a):
                log(type(a).__name__, a.message())
        status = {"pid": os.getpid(), "elapsed": now - started, "dht_only_node": True}
        status.update(dht.status())
        dht.ask()
        dht.add_first_nodes()
        write_status(args.status, status)
        time.sleep(0.2)
    sys.exit(0)


if __name__ == "__main__":
    main()
