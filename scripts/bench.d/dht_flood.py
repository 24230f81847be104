#!/usr/bin/python3
"""Fill a DHT node's routing table and peer store from 127.0.0.1, for the dht case of scripts/bench.

    dht_flood.py --target PORT --ready FILE --result FILE [--nodes 2560] [--rate 19] [--duration 180]
                 [--hashes 500] [--peers-per-hash 50] [--burst 300] [--progress FILE] [--max-life SECS]

A main socket (its port written to --ready as JSON, to be the target's --dht-bootstrap) learns the target's node
id with a ping, then --nodes fake nodes are made, each a UDP socket of its own on 127.0.0.1 with an id chosen for
the target's routing table: 16 per depth d (8 for the bucket, 8 for its replacement cache), sharing exactly d
leading bits with the target's id, depth by depth from 0 so the table splits as far as it can (depths past 155
have fewer than 16 such ids). Every fake node answers the target's queries as a node would: ping, find_node and
get_peers with the 8 fake nodes closest to the target, a token, announce_peer with an empty reply.

Then, for --duration seconds, at most --rate queries a second leave 127.0.0.1 (all sockets share one source
address, so this is the sending rate the target's per-source limiter sees): an announce_peer for info-hash i and
peer port 20000+k (i over --hashes, then k over --peers-per-hash: every info-hash first), each from the next fake
node in turn, so the first --nodes announces also bring a new node each (the target adds a querying node and pings
it; the fake node answers). A get_peers from the main socket gets the token first and again every 120 s (tokens
live 5 to 10 minutes).

At the end, --burst pings leave the main socket back to back and the answers in the next 3 s are counted: what
a per-source limiter lets through. --result (JSON) gets the counts: queries sent and answered by kind, error
replies, queries the target sent us by kind, the burst figures. --progress (JSON, every second) has the running
counts.
"""
import argparse
import hashlib
import heapq
import json
import os
import random
import selectors
import socket
import struct
import sys
import time


def benc(v, out):
    if isinstance(v, int):
        out += b"i%de" % v
    elif isinstance(v, (bytes, bytearray)):
        out += b"%d:" % len(v) + bytes(v)
    elif isinstance(v, str):
        benc(v.encode(), out)
    elif isinstance(v, list):
        out += b"l"
        for x in v:
            benc(x, out)
        out += b"e"
    elif isinstance(v, dict):
        out += b"d"
        for k, x in sorted(((k.encode() if isinstance(k, str) else k), x) for k, x in v.items()):
            benc(k, out)
            benc(x, out)
        out += b"e"
    else:
        raise TypeError(type(v))
    return out


def bencode(v):
    return bytes(benc(v, bytearray()))


def bdec(b, i=0, depth=0):
    if depth > 16:
        raise ValueError("too deep")
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i, depth + 1)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdec(b, i, depth + 1)
            v, i = bdec(b, i, depth + 1)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    if n < 0 or j + 1 + n > len(b):
        raise ValueError("short string")
    return b[j + 1:j + 1 + n], j + 1 + n


def bdecode(b):
    try:
        v, _ = bdec(b)
        return v if isinstance(v, dict) else None
    except (ValueError, IndexError):
        return None


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def ids_for(own, count, rnd):
    """Up to `count` ids, 16 per depth from 0, each sharing exactly d leading bits with `own` (an int)."""
    out = []
    seen = {own}
    for d in range(160):
        low_bits = 159 - d
        base = (own >> (low_bits + 1) << (low_bits + 1)) | ((((own >> low_bits) & 1) ^ 1) << low_bits)
        want = min(16, 1 << low_bits)
        tries = 0
        got = 0
        while got < want and tries < 200:
            tries += 1
            i = base | (rnd.getrandbits(low_bits) if low_bits else 0)
            if i not in seen:
                seen.add(i)
                out.append(i)
                got += 1
            if len(out) >= count:
                return out
    return out


def id_bytes(i):
    return i.to_bytes(20, "big")


class Flood:
    def __init__(self, args):
        self.args = args
        self.target = ("127.0.0.1", args.target)
        self.sel = selectors.DefaultSelector()
        self.main = self.udp()
        self.main_id = random.getrandbits(160)
        self.rnd = random.Random(0x5EED)
        self.target_id = None
        self.nodes = []  # (id int, socket)
        self.by_sock = {}
        self.tx = 0
        self.pending = {}  # tx -> (kind, sent time)
        self.token = None
        self.sent = {}
        self.ok = {}
        self.errors = {}
        self.asked = {}  # queries the target sent us, by kind
        self.answered_to_target = 0
        self.burst_answers = 0
        self.burst_tx = set()
        self.sel.register(self.main, selectors.EVENT_READ, self.main_id)
        self.by_sock[self.main.fileno()] = (self.main_id, self.main)

    def udp(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        return s

    def next_tx(self):
        self.tx = (self.tx + 1) & 0xFFFFFFFF
        return struct.pack(">I", self.tx)

    def query(self, sock, nid, name, a, kind=None):
        t = self.next_tx()
        a = dict(a)
        a["id"] = id_bytes(nid)
        msg = bencode({"t": t, "y": "q", "q": name, "a": a})
        try:
            sock.sendto(msg, self.target)
        except OSError:
            return None
        kind = kind or name
        self.pending[t] = (kind, time.monotonic())
        self.sent[kind] = self.sent.get(kind, 0) + 1
        return t

    def closest(self, target, n=8):
        return heapq.nsmallest(n, self.nodes, key=lambda x: x[0] ^ target)

    def compact(self, nodes):
        out = bytearray()
        for nid, s in nodes:
            out += id_bytes(nid) + socket.inet_aton("127.0.0.1") + struct.pack(">H", s.getsockname()[1])
        return bytes(out)

    def on_datagram(self, sock, nid, data, addr):
        msg = bdecode(data)
        if msg is None:
            return
        y = msg.get(b"y")
        t = msg.get(b"t", b"")
        if y == b"r" or y == b"e":
            p = self.pending.pop(t, None)
            if t in self.burst_tx:
                self.burst_tx.discard(t)
                if y == b"r":
                    self.burst_answers += 1
                return
            if p is None:
                return
            kind = p[0]
            if y == b"r":
                self.ok[kind] = self.ok.get(kind, 0) + 1
                r = msg.get(b"r") or {}
                if isinstance(r, dict):
                    rid = r.get(b"id")
                    if isinstance(rid, bytes) and len(rid) == 20 and self.target_id is None:
                        self.target_id = int.from_bytes(rid, "big")
                    tok = r.get(b"token")
                    if kind == "get_peers" and isinstance(tok, bytes):
                        self.token = tok
            else:
                e = msg.get(b"e")
                code = e[0] if isinstance(e, list) and e else "?"
                key = "%s %s" % (kind, code)
                self.errors[key] = self.errors.get(key, 0) + 1
            return
        if y != b"q":
            return
        q = msg.get(b"q", b"?").decode("ascii", "replace")
        self.asked[q] = self.asked.get(q, 0) + 1
        a = msg.get(b"a") or {}
        if self.target_id is None and isinstance(a, dict) and isinstance(a.get(b"id"), bytes) \
                and len(a[b"id"]) == 20:
            self.target_id = int.from_bytes(a[b"id"], "big")
        r = {"id": id_bytes(nid)}
        if q == "ping" or q == "announce_peer":
            pass
        elif q in ("find_node", "get_peers"):
            want = a.get(b"target" if q == "find_node" else b"info_hash") if isinstance(a, dict) else None
            tgt = int.from_bytes(want, "big") if isinstance(want, bytes) and len(want) == 20 else 0
            r["nodes"] = self.compact(self.closest(tgt))
            if q == "get_peers":
                r["token"] = b"tk"
        else:
            reply = {"t": t, "y": "e", "e": [204, "method unknown"]}
            sock.sendto(bencode(reply), addr)
            return
        try:
            sock.sendto(bencode({"t": t, "y": "r", "r": r}), addr)
            self.answered_to_target += 1
        except OSError:
            pass

    def pump(self, timeout):
        for key, _ in self.sel.select(timeout):
            sock = key.fileobj
            nid = key.data
            for _ in range(64):
                try:
                    data, addr = sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                self.on_datagram(sock, nid, data, addr)

    def progress(self, phase, started):
        return {"phase": phase, "elapsed": time.monotonic() - started, "sent": self.sent, "ok": self.ok,
                "errors": self.errors, "asked": self.asked, "nodes_made": len(self.nodes),
                "answered_to_target": self.answered_to_target}

    def run(self):
        args = self.args
        write_json(args.ready, {"port": self.main.getsockname()[1], "pid": os.getpid()})
        started = time.monotonic()
        end_of_life = started + args.max_life
        # The target's id: from a ping answer, or from its own first query (its bootstrap find_node).
        last = 0.0
        while self.target_id is None:
            now = time.monotonic()
            if now > started + 60 or now > end_of_life:
                sys.exit("dht_flood: the target never answered a ping")
            if now - last >= 0.5:
                self.query(self.main, self.main_id, "ping", {}, kind="id ping")
                last = now
            self.pump(0.05)
        made = time.monotonic()
        for nid in ids_for(self.target_id, args.nodes, self.rnd):
            s = self.udp()
            self.nodes.append((nid, s))
            self.sel.register(s, selectors.EVENT_READ, nid)
        print("dht_flood: target id %040x, %d fake nodes made in %.2f s" % (
            self.target_id, len(self.nodes), time.monotonic() - made), flush=True)
        hashes = [hashlib.sha1(b"rill bench flood %d" % i).digest() for i in range(args.hashes)]
        gap = 1.0 / args.rate
        next_send = time.monotonic()
        flood_start = time.monotonic()
        flood_end = flood_start + args.duration
        token_at = -1e9
        seq = 0
        total = args.hashes * args.peers_per_hash
        last_progress = 0.0
        while time.monotonic() < min(flood_end, end_of_life):
            now = time.monotonic()
            if now >= next_send:
                next_send = max(next_send + gap, now - gap)
                if self.token is None or now - token_at >= 120:
                    if now - token_at >= 2:
                        token_at = now
                        self.query(self.main, self.main_id, "get_peers", {"info_hash": hashes[0]})
                elif seq < total:
                    k, h = divmod(seq, args.hashes)
                    nid, s = self.nodes[seq % len(self.nodes)]
                    self.query(s, nid, "announce_peer", {"info_hash": hashes[h], "port": 20000 + k,
                                                         "token": self.token, "implied_port": 0})
                    seq += 1
            if args.progress and now - last_progress >= 1.0:
                last_progress = now
                write_json(args.progress, self.progress("flood", flood_start))
            self.pump(max(0.0, min(next_send, flood_end) - time.monotonic()))
        flood_s = time.monotonic() - flood_start
        # Let the last answers in, then the burst.
        drain = time.monotonic() + 3
        while time.monotonic() < drain:
            self.pump(0.1)
        burst_start = time.monotonic()
        for _ in range(args.burst):
            t = self.next_tx()
            self.burst_tx.add(t)
            try:
                self.main.sendto(bencode({"t": t, "y": "q", "q": "ping", "a": {"id": id_bytes(self.main_id)}}),
                                 self.target)
            except OSError:
                pass
        burst_sent_s = time.monotonic() - burst_start
        drain = time.monotonic() + 3
        while time.monotonic() < drain:
            self.pump(0.1)
        unanswered = {}
        for kind, _ in self.pending.values():
            unanswered[kind] = unanswered.get(kind, 0) + 1
        res = self.progress("done", flood_start)
        res.update({
            "target_id": "%040x" % self.target_id, "flood_s": flood_s, "rate": args.rate,
            "announces_planned": total, "announces_sent": seq, "unanswered": unanswered,
            "burst": args.burst, "burst_sent_s": burst_sent_s, "burst_answered": self.burst_answers,
            "hashes": args.hashes, "peers_per_hash": args.peers_per_hash,
        })
        write_json(args.result, res)
        print("dht_flood: " + json.dumps(res), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=int, required=True, help="the target's DHT port on 127.0.0.1")
    ap.add_argument("--ready", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--progress")
    ap.add_argument("--nodes", type=int, default=2560)
    ap.add_argument("--rate", type=float, default=19.0)
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--hashes", type=int, default=500)
    ap.add_argument("--peers-per-hash", type=int, default=50)
    ap.add_argument("--burst", type=int, default=300)
    ap.add_argument("--max-life", type=float, default=3600.0)
    args = ap.parse_args()
    Flood(args).run()


if __name__ == "__main__":
    main()
