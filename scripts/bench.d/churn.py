#!/usr/bin/python3
"""Churning leechers for scripts/bench soak: python3-libtorrent leechers that join a seeder, fetch a random subset
of the torrent (or all of it), leave, and are replaced, a few at a time; optionally short-lived aria2c runs too.

    churn.py --torrent T --peer IP:PORT --work DIR --seconds S --status FILE.json
             [--leechers N] [--rate B/s] [--whole 0.3] [--abandon 0.3] [--max-stay S] [--seed N]
             [--aria2-torrent T2] [--aria2-every S] [--aria2-rate B/s]

Each libtorrent leecher is its own session (its own port on 127.0.0.1, DHT/LSD/UPnP/NAT-PMP/uTP/PEX off, as
ltpeer.py), downloading into a fresh directory under --work with --rate as its download cap. It wants the whole
torrent (probability --whole) or a random contiguous run of 2-30 % of the pieces; with probability --abandon it
leaves after a random 5-60 s whatever it got, else when it has what it wanted (or after --max-stay s). On leaving
it removes the torrent and its files and its session ends (its connections close); a new one takes its place
at once. aria2c (with --aria2-torrent, which must announce to a tracker that lists the seeder) runs every
--aria2-every s for a random 10-40 s under `timeout`, capped at --aria2-rate, and is stopped by its pid.

FILE.json is replaced every second: counts of leechers started, finished (got what they wanted), abandoned,
timed out, aria2c runs, and the payload bytes the leechers received. Loopback only; the whole script ends after
--seconds (and kills what it started).
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import libtorrent as lt


def log(*a):
    print("%.3f" % time.time(), *a, flush=True)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def make_session(rate):
    ses = lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "download_rate_limit": rate,
        "alert_mask": lt.alert.category_t.error_notification,
    }, 0)
    if rate:
        # Loopback peers are in libtorrent's unthrottled local class by default: map every address to the
        # global class so the cap applies (as ltpeer.py).
        pcf = lt.ip_filter()
        pcf.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        ses.set_peer_class_filter(pcf)
    return ses


class Leecher:
    def __init__(self, n, args, info, rng):
        self.n = n
        self.dir = os.path.join(args.work, "lt-%d" % n)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.ses = make_session(args.rate)
        atp = lt.add_torrent_params()
        atp.ti = info
        atp.save_path = self.dir
        self.h = self.ses.add_torrent(atp)
        pieces = info.num_pieces()
        if rng.random() < args.whole:
            self.kind = "whole"
            self.wanted = pieces
        else:
            self.kind = "subset"
            count = max(1, int(pieces * rng.uniform(0.02, 0.30)))
            first = rng.randrange(0, pieces - count + 1)
            prio = [0] * pieces
            for i in range(first, first + count):
                prio[i] = 4
            self.h.prioritize_pieces(prio)
            self.wanted = count
        self.started = time.monotonic()
        self.leave_at = self.started + (rng.uniform(5, 60) if rng.random() < args.abandon else args.max_stay)
        self.abandoning = self.leave_at - self.started < args.max_stay
        host, port = args.peer.rsplit(":", 1)
        self.peer = (host, int(port))
        self.dialled = 0.0
        log("leecher %d joins: %s, %d pieces%s" % (n, self.kind, self.wanted, ", will leave early" if self.abandoning
                                                    else ""))

    def poll(self, now):
        """None while it stays, else why it leaves."""
        for a in self.ses.pop_alerts():
            log("leecher %d: %s" % (self.n, a.message()))
        st = self.h.status()
        if st.num_peers == 0 and now - self.dialled > 2.0:
            self.dialled = now
            self.h.connect_peer(self.peer, 0)
        if st.is_finished or st.is_seeding:
            return "finished"
        if now >= self.leave_at:
            return "abandoned" if self.abandoning else "timed_out"
        return None

    def payload(self):
        return self.h.status().total_payload_download

    def leave(self):
        got = self.payload()
        self.ses.remove_torrent(self.h, lt.session.delete_files)
        self.ses.pause()
        del self.h
        del self.ses
        shutil.rmtree(self.dir, ignore_errors=True)
        return got


def aria2_cmd(args, out, life):
    return ["timeout", "-k", "3", str(life), "aria2c", "--enable-dht=false", "--enable-dht6=false",
            "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--seed-time=0", "--dir=" + out,
            "--listen-port=%d" % random.randint(20000, 60000), "--file-allocation=none", "--disable-ipv6=true",
            "--summary-interval=0", "--console-log-level=warn", "--download-result=hide",
            "--max-download-limit=%d" % args.aria2_rate, "--bt-tracker-connect-timeout=5",
            "--bt-tracker-timeout=5", args.aria2_torrent]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--leechers", type=int, default=4)
    ap.add_argument("--rate", type=int, default=4_000_000)
    ap.add_argument("--whole", type=float, default=0.3)
    ap.add_argument("--abandon", type=float, default=0.3)
    ap.add_argument("--max-stay", type=float, default=400.0)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--aria2-torrent")
    ap.add_argument("--aria2-every", type=float, default=60.0)
    ap.add_argument("--aria2-rate", type=int, default=4_000_000)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    info = lt.torrent_info(args.torrent)
    os.makedirs(args.work, exist_ok=True)
    counts = {"started": 0, "finished": 0, "abandoned": 0, "timed_out": 0, "aria2_runs": 0, "payload": 0}
    live = []
    aria = None  # (Popen, dir)
    next_aria = time.monotonic() + 10.0
    end = time.monotonic() + args.seconds
    last_status = 0.0
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while time.monotonic() < end and not stopping:
            now = time.monotonic()
            while len(live) < args.leechers:
                counts["started"] += 1
                live.append(Leecher(counts["started"], args, info, rng))
            for lc in list(live):
                why = lc.poll(now)
                if why:
                    counts[why] += 1
                    got = lc.leave()
                    counts["payload"] += got
                    live.remove(lc)
                    log("leecher %d leaves (%s) after %.0f s with %d bytes" % (lc.n, why, now - lc.started, got))
            if args.aria2_torrent:
                if aria is not None and aria[0].poll() is not None:
                    log("aria2c run ends (exit %s)" % aria[0].returncode)
                    shutil.rmtree(aria[1], ignore_errors=True)
                    aria = None
                if aria is None and now >= next_aria:
                    counts["aria2_runs"] += 1
                    out = os.path.join(args.work, "aria2-%d" % counts["aria2_runs"])
                    shutil.rmtree(out, ignore_errors=True)
                    os.makedirs(out)
                    life = rng.randint(10, 40)
                    p = subprocess.Popen(aria2_cmd(args, out, life), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
                    aria = (p, out)
                    next_aria = now + args.aria2_every
                    log("aria2c run %d starts for %d s (pid %d)" % (counts["aria2_runs"], life, p.pid))
            if now - last_status >= 1.0:
                last_status = now
                live_payload = sum(lc.payload() for lc in live)
                write_json(args.status, dict(counts, live=len(live), payload_total=counts["payload"] + live_payload))
            time.sleep(0.2)
    finally:
        for lc in live:
            counts["payload"] += lc.leave()
        if aria is not None:
            try:
                os.killpg(aria[0].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            aria[0].wait()
            shutil.rmtree(aria[1], ignore_errors=True)
        write_json(args.status, dict(counts, live=0, payload_total=counts["payload"], done=True))
        log("done", json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
