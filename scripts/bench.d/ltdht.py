#!/usr/bin/python3
"""python3-libtorrent on a private loopback DHT, for the dht case of scripts/bench.

Swarm (one process, N sessions, each on its own 127.0.0.1 port):
    ltdht.py swarm --nodes N --status FILE.json [--seed T:DATADIR] [--max-life SECS]
  Session 0 is the bootstrap node (no torrent); every other session add_dht_node()s it (again every 2 s while its
  routing table is empty: a first ping that went unanswered drops the node for good). With --seed, session 1 also
  seeds T (full data check first) and calls force_dht_announce() every 3 s until at least 3 of the other nodes
  have stored it (dht_announce_alert; its own node does not count), as libtorrent would otherwise wait its
  15-minute announce interval.
  FILE.json is replaced every 0.2 s: "ports" (session 0 first), "tables" (nodes in each routing table, from
  dht_stats_alert), "seeder" (its port, whether it is seeding, forced announces, nodes that stored it) and
  "ready" (every table has at least min(N-1, 8) - 1 nodes, and the seeder, if any, is seeding and stored).

Leecher (one session):
    ltdht.py leech --magnet M --save DIR --dht-node IP:PORT [--port P] [--max-life SECS]
  Adds the magnet link with nothing but the DHT to find peers (add_dht_node of --dht-node, again every 2 s while
  the routing table is empty). Prints on stdout, as they happen: "FIRST_DHT_PEER n" at the first dht_reply_alert
  that brought peers, "METADATA" when the metadata arrived, "FIRST_PEER" once the torrent has a connected peer
  (status().num_peers, polled every 20 ms at most), and
  "RESULT {json}" once every piece is verified; then it exits 0 (1 after --max-life).

Settings common to both (see PROTOCOL-NOTES "DHT (BEP 5, 32, 42) on loopback"): listen_interfaces names
127.0.0.1:PORT explicitly (0.0.0.0 marks loopback local and starts no DHT on it), dht_bootstrap_nodes empty
(never the public router), dht_restrict_routing_ips/dht_restrict_search_ips off (every node is 127.0.0.1), the
per-IP DHT blocker and the DHT reply rate limit lifted (every node shares one address). LSD, UPnP, NAT-PMP and
uTP are off; several connections per IP are allowed.
"""
import argparse
import json
import os
import socket
import sys
import time

import libtorrent as lt

DHT_SETTINGS = {
    "enable_dht": True,
    "dht_bootstrap_nodes": "",
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "dht_block_ratelimit": 1000000,
    "dht_upload_rate_limit": 1000000,
}

MAX_FORCED_ANNOUNCES = 100


def log(*a):
    print("%.3f" % time.time(), *a, file=sys.stderr, flush=True)


def out(*a):
    print(*a, flush=True)


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 (libtorrent's DHT uses the UDP side of its listen port)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise SystemExit("no free port")


def make_session(port, extra_mask=0):
    settings = dict(DHT_SETTINGS)
    settings.update({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
        | lt.alert.category_t.dht_notification | extra_mask,
    })
    return lt.session(settings)


class Node:
    """One session's DHT: its routing table size (dht_stats_alert) and the first node it starts from."""

    def __init__(self, ses, port, first=None):
        self.ses = ses
        self.port = port
        self.first = first
        self.table = 0
        self.next_add = 0.0
        self.asked_at = 0.0
        self.asked = False

    def tick(self, now):
        if self.first and self.table == 0 and now >= self.next_add:
            self.ses.add_dht_node(self.first)
            self.next_add = now + 2.0
        if not self.asked and now - self.asked_at >= 0.2:
            self.ses.post_dht_stats()
            self.asked = True
            self.asked_at = now

    def on_alert(self, a):
        if isinstance(a, lt.dht_stats_alert):
            self.asked = False
            self.table = sum(b.get("num_nodes", 0) for b in (a.routing_table or []))
            return True
        return False


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def swarm(args):
    n = max(2, args.nodes)
    ports = [free_port() for _ in range(n)]
    nodes = []
    for i, port in enumerate(ports):
        ses = make_session(port)
        nodes.append(Node(ses, port, None if i == 0 else ("127.0.0.1", ports[0])))
    log("swarm of %d DHT nodes on ports %s (bootstrap %d)" % (n, ports, ports[0]))
    seed_handle = None
    seed_hash = None
    if args.seed:
        t, data = args.seed.rsplit(":", 1)
        info = lt.torrent_info(t)
        atp = lt.add_torrent_params()
        atp.ti = info
        atp.save_path = data
        seed_handle = nodes[1].ses.add_torrent(atp)
        seed_hash = str(info.info_hash()).lower()
        log("seeding", info.name(), seed_hash, "from port", ports[1])
    stored_by = set()
    forced = 0
    last_force = 0.0
    last_status = 0.0
    started = time.monotonic()
    want = max(1, min(n - 1, 8) - 1)
    while time.monotonic() - started < args.max_life:
        nodes[0].ses.wait_for_alert(50)
        now = time.monotonic()
        for i, node in enumerate(nodes):
            for a in node.ses.pop_alerts():
                if node.on_alert(a):
                    continue
                if isinstance(a, lt.dht_announce_alert):
                    if seed_hash and i != 1 and str(a.info_hash).lower() == seed_hash and a.port == ports[1]:
                        stored_by.add(i)
                    continue
                if isinstance(a, (lt.dht_get_peers_alert, lt.dht_reply_alert, lt.dht_outgoing_get_peers_alert)):
                    continue
                log("node %d:" % i, type(a).__name__, a.message())
            node.tick(now)
        seeding = False
        if seed_handle is not None:
            st = seed_handle.status()
            seeding = bool(st.is_seeding)
            if seeding and nodes[1].table > 0 and len(stored_by) < min(3, n - 1) and forced < MAX_FORCED_ANNOUNCES \
                    and now - last_force >= 3.0:
                seed_handle.force_dht_announce()
                forced += 1
                last_force = now
                log("force_dht_announce", forced, "table", nodes[1].table, "stored by", sorted(stored_by))
        if now - last_status >= 0.2:
            last_status = now
            tables = [node.table for node in nodes]
            ready = all(t >= want for t in tables)
            status = {"pid": os.getpid(), "ports": ports, "tables": tables}
            if seed_handle is not None:
                status["seeder"] = {"port": ports[1], "seeding": seeding, "forced_announces": forced,
                                    "stored_by": sorted(stored_by)}
                ready = ready and seeding and len(stored_by) >= min(3, n - 1)
            status["ready"] = ready
            write_json(args.status, status)
    log("max life reached, exiting")


def leech(args):
    host, port = args.dht_node.rsplit(":", 1)
    ses = make_session(args.port or free_port(), lt.alert.category_t.tracker_notification)
    node = Node(ses, args.port, (host.strip("[]"), int(port)))
    atp = lt.parse_magnet_uri(args.magnet)
    atp.save_path = args.save
    started = time.monotonic()
    h = ses.add_torrent(atp)
    first_dht = first_peer = metadata = None
    while True:
        now = time.monotonic()
        if now - started > args.max_life:
            log("max life reached before completion")
            sys.exit(1)
        ses.wait_for_alert(20)
        for a in ses.pop_alerts():
            if node.on_alert(a):
                continue
            if isinstance(a, lt.dht_reply_alert):
                if a.num_peers > 0 and first_dht is None:
                    first_dht = time.monotonic() - started
                    out("FIRST_DHT_PEER", a.num_peers)
                continue
            if isinstance(a, lt.metadata_received_alert):
                metadata = time.monotonic() - started
                out("METADATA")
            if isinstance(a, (lt.dht_get_peers_alert, lt.dht_outgoing_get_peers_alert, lt.dht_announce_alert)):
                continue
            log(type(a).__name__, a.message())
        node.tick(now)
        st = h.status()
        if first_peer is None and st.num_peers > 0:
            first_peer = time.monotonic() - started
            out("FIRST_PEER")
        if st.has_metadata and st.is_seeding:
            out("RESULT " + json.dumps({
                "elapsed": time.monotonic() - started, "first_dht_peer": first_dht, "first_peer": first_peer,
                "metadata": metadata, "payload_down": st.total_payload_download, "wanted": st.total_wanted,
            }))
            break
    ses.pause()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("swarm")
    s.add_argument("--nodes", type=int, default=8)
    s.add_argument("--status", required=True)
    s.add_argument("--seed", help="T:DATADIR")
    s.add_argument("--max-life", type=float, default=3600.0)
    l = sub.add_parser("leech")
    l.add_argument("--magnet", required=True)
    l.add_argument("--save", required=True)
    l.add_argument("--dht-node", required=True)
    l.add_argument("--port", type=int, default=0)
    l.add_argument("--max-life", type=float, default=600.0)
    args = ap.parse_args()
    if args.mode == "swarm":
        swarm(args)
    else:
        leech(args)


if __name__ == "__main__":
    main()
