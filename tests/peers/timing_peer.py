#!/usr/bin/python3
"""A scripted leecher that times how fast rill answers requests (python standard library only): the peer of the
slow-disk test (issue 16), which asks whether a stalled disk stalls every peer.

    timing_peer.py --torrent T --connect 127.0.0.1:PORT --status FILE.json [--interval-ms 20]
                   [--max-outstanding 4] [--seed N] [--max-life SECS]

Dials rill (retrying until it listens), handshakes (no extension bits: plain BEP 3, so a choke silently drops
our requests), has no pieces, and says it is interested. Every --interval-ms, while rill unchokes it and has
announced pieces (`bitfield` or `have`), and fewer than --max-outstanding requests are unanswered, it requests
one 16 KiB block of a piece rill has (chosen at random) and records when the answer (`piece`) arrived. A choke
drops the outstanding requests (counted). It reads everything rill sends, always, so rill never waits on it.

FILE.json is replaced atomically every 0.2 s and at the end: {"pid", "connected_at", "handshake_at",
"unchoked", "chokes", "unchokes", "dropped_by_choke", "first_have_at", "haves", "keepalives", "sent",
"answered", "outstanding", "oldest_outstanding_ms", "samples": [[sent_at, answer_ms], ...], "closed_at",
"closed_by", "error"}. Times are wall-clock seconds (time.time()); answer_ms is the time from sending the
request to receiving the whole `piece` message. Exits when rill closes the connection, or after --max-life.
"""
import argparse
import collections
import json
import os
import random
import socket
import struct
import threading
import time

from peerkit import bdecode, load_torrent, log, recv_exact

BLOCK = 16 * 1024
MAX_MESSAGE = 1 << 20


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.connected_at = None
        self.handshake_at = None
        self.unchoked = False
        self.chokes = 0
        self.unchokes = 0
        self.dropped_by_choke = 0
        self.first_have_at = None
        self.have = set()
        self.keepalives = 0
        self.sent = 0
        self.answered = 0
        self.outstanding = collections.OrderedDict()  # (piece, offset, len) -> [sent_at, ...]
        self.samples = []
        self.closed_at = None
        self.closed_by = None
        self.error = None

    def doc(self):
        with self.lock:
            now = time.time()
            oldest = min((t for ts in self.outstanding.values() for t in ts), default=None)
            return {
                "pid": os.getpid(),
                "connected_at": self.connected_at,
                "handshake_at": self.handshake_at,
                "unchoked": self.unchoked,
                "chokes": self.chokes,
                "unchokes": self.unchokes,
                "dropped_by_choke": self.dropped_by_choke,
                "first_have_at": self.first_have_at,
                "haves": len(self.have),
                "keepalives": self.keepalives,
                "sent": self.sent,
                "answered": self.answered,
                "outstanding": sum(len(ts) for ts in self.outstanding.values()),
                "oldest_outstanding_ms": None if oldest is None else round((now - oldest) * 1000.0, 1),
                "samples": list(self.samples),
                "closed_at": self.closed_at,
                "closed_by": self.closed_by,
                "error": self.error,
            }


def write_status(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state.doc(), f)
    os.replace(tmp, path)


def torrent_geometry(path):
    meta, _ = bdecode(open(path, "rb").read())
    info = meta[b"info"]
    piece_len = info[b"piece length"]
    total = info[b"length"] if b"length" in info else sum(f[b"length"] for f in info[b"files"])
    return piece_len, total


def reader(sock, state, num_pieces):
    """Reads every message rill sends until the connection ends."""
    try:
        while True:
            (length,) = struct.unpack(">I", recv_exact(sock, 4))
            if length == 0:
                with state.lock:
                    state.keepalives += 1
                continue
            if length > MAX_MESSAGE:
                raise ValueError("message too long: %d" % length)
            body = recv_exact(sock, length)
            now = time.time()
            kind, payload = body[0], body[1:]
            with state.lock:
                if kind == 0:
                    state.unchoked = False
                    state.chokes += 1
                    state.dropped_by_choke += sum(len(ts) for ts in state.outstanding.values())
                    state.outstanding.clear()
                elif kind == 1:
                    state.unchoked = True
                    state.unchokes += 1
                elif kind == 4 and len(payload) == 4:
                    (piece,) = struct.unpack(">I", payload)
                    if piece < num_pieces:
                        state.have.add(piece)
                        state.first_have_at = state.first_have_at or now
                elif kind == 5:
                    for i in range(min(num_pieces, len(payload) * 8)):
                        if payload[i // 8] & (0x80 >> (i % 8)):
                            state.have.add(i)
                    if state.have:
                        state.first_have_at = state.first_have_at or now
                elif kind == 7 and len(payload) >= 8:
                    piece, offset = struct.unpack(">II", payload[:8])
                    key = (piece, offset, len(payload) - 8)
                    sent = state.outstanding.get(key)
                    if sent:
                        t = sent.pop(0)
                        if not sent:
                            del state.outstanding[key]
                        state.answered += 1
                        state.samples.append([round(t, 4), round((now - t) * 1000.0, 2)])
        # not reached
    except (EOFError, ConnectionResetError, BrokenPipeError):
        with state.lock:
            state.closed_by = state.closed_by or "remote"
    except Exception as e:  # noqa: BLE001
        with state.lock:
            state.error = state.error or "%s: %s" % (type(e).__name__, e)
    finally:
        with state.lock:
            state.closed_at = state.closed_at or time.time()


def connect(addr, until):
    while True:
        try:
            return socket.create_connection(addr, timeout=2)
        except OSError:
            if time.monotonic() > until:
                raise
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--connect", required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--interval-ms", type=float, default=20.0)
    ap.add_argument("--max-outstanding", type=int, default=4)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--max-life", type=float, default=120.0)
    args = ap.parse_args()
    started = time.monotonic()
    rng = random.Random(args.seed)
    info_hash, num_pieces = load_torrent(args.torrent)
    piece_len, total = torrent_geometry(args.torrent)
    host, port = args.connect.rsplit(":", 1)
    state = State()

    def piece_size(p):
        return min(piece_len, total - p * piece_len)

    try:
        sock = connect((host, int(port)), started + 20)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state.connected_at = time.time()
        log("connected to", args.connect)
        sock.sendall(b"\x13BitTorrent protocol" + bytes(8) + info_hash + b"-TP0001-" + os.urandom(6).hex().encode())
        sock.settimeout(30)
        hs = recv_exact(sock, 68)
        if hs[0] != 19 or hs[1:20] != b"BitTorrent protocol" or hs[28:48] != info_hash:
            raise ValueError("bad handshake from rill: %r" % hs[:48])
        sock.settimeout(None)
        state.handshake_at = time.time()
        sock.sendall(struct.pack(">IB", 1, 2))  # interested
        log("handshake done; interested")
        threading.Thread(target=reader, args=(sock, state, num_pieces), daemon=True).start()
        last_status = 0.0
        next_at = time.monotonic()
        while time.monotonic() - started < args.max_life:
            with state.lock:
                if state.closed_at is not None:
                    break
                request = None
                busy = sum(len(ts) for ts in state.outstanding.values())
                if state.unchoked and state.have and busy < args.max_outstanding:
                    piece = rng.choice(tuple(state.have))
                    size = piece_size(piece)
                    offset = rng.randrange(0, (size + BLOCK - 1) // BLOCK) * BLOCK
                    request = (piece, offset, min(BLOCK, size - offset))
                    state.outstanding.setdefault(request, []).append(time.time())
                    state.sent += 1
            if request is not None:
                sock.sendall(struct.pack(">IBIII", 13, 6, *request))
            if time.monotonic() - last_status >= 0.2:
                write_status(args.status, state)
                last_status = time.monotonic()
            next_at += args.interval_ms / 1000.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        else:
            with state.lock:
                state.closed_by = state.closed_by or "max-life"
    except (EOFError, ConnectionResetError, BrokenPipeError):
        with state.lock:
            state.closed_by = state.closed_by or "remote"
    except Exception as e:  # noqa: BLE001
        with state.lock:
            state.error = state.error or "%s: %s" % (type(e).__name__, e)
    with state.lock:
        state.closed_at = state.closed_at or time.time()
    write_status(args.status, state)
    d = state.doc()
    log("done: sent %d answered %d closed by %s error %s" % (d["sent"], d["answered"], d["closed_by"], d["error"]))


if __name__ == "__main__":
    main()
