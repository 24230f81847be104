#!/usr/bin/python3
"""Many scripted peers in one process, for rill's many-peer test and benchmark (python standard library only).

    many_peers.py --port P --torrent T.torrent --count N --status FILE.json [--max-life SECS]
                  [--pieces-each K | --busy] [--pending M] [--silent S] [--partial Q] [--dribble D]

Peers (`--count N`): each connects to 127.0.0.1:P (at most M connects and handshakes in flight at once, as a
client's half-open limit; one refused or closed before its handshake is tried again after a short back-off),
sends a plain BitTorrent handshake (no extension bits), checks the answer's info-hash, says `interested` and,
once unchoked, requests K pieces (peer i takes pieces i*K .. i*K+K-1, modulo the piece count), 16 KiB blocks with
up to 8 requests in flight, and checks each piece against its SHA-1 in the torrent. A peer that got its K pieces
says `not interested` and stays connected, sending a keep-alive every 20 s. With `--busy` a peer never stops:
it cycles through the torrent's pieces for as long as it runs. `--pieces-each 0`: handshake, `interested`, idle.

Flood connections (no peer behaviour at all): `--silent S` connect and never send a byte; `--partial Q`
connect and send 30 of the handshake's 68 bytes, then nothing; `--dribble D` connect and send an MSE opening
(a 96-byte Ya that is a valid public key, then random padding) one byte a second. They are opened once, at the
start, 640 a second (FLOOD_BATCH below says why); none is reopened.

FILE.json is replaced atomically every 0.2 s with {"pid", "peers": {"open", "handshaken", "served",
"pieces_ok", "pieces_bad", "bytes", "connects", "closed_by_remote", "closed_after_handshake"}, "flood":
{"opened", "connected", "open", "closed_by_remote", "refused", "last_closed_at", "first_connected_at",
"max_held"}}:
`served` peers that verified all their pieces, `closed_after_handshake` peers closed by the other side after
their handshake (rill must not drop a working peer); `max_held` the longest a flood connection stayed open
from its connect to the other side's close. Exits after --max-life, or at SIGTERM.
"""
import argparse
import errno
import hashlib
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerkit import bdecode  # noqa: E402

BLOCK = 16 * 1024
PIPELINE = 8
KEEPALIVE_EVERY = 20.0
RETRY_AFTER = 0.2
# Flood connects go out FLOOD_BATCH at a time every FLOOD_EVERY s (640 a second): a burst beyond the listener's
# accept queue (128) would be dropped by the kernel before the server sees it (with SYN cookies the client then
# believes a connection open that the server never had), which tests the kernel, not the server.
FLOOD_BATCH = 32
FLOOD_EVERY = 0.05
# MSE (BEP 8 draft): the 768-bit prime; any 2 <= Ya < P-1 is a well-formed public key.
MSE_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    16,
)


def load(path):
    raw = open(path, "rb").read()
    spans = {}
    meta, _ = bdecode(raw, 0, spans)
    start, end = spans[(b"info",)]
    info = meta[b"info"]
    piece_len = info[b"piece length"]
    if b"length" in info:
        total = info[b"length"]
    else:
        total = sum(f[b"length"] for f in info[b"files"])
    hashes = info[b"pieces"]
    return hashlib.sha1(raw[start:end]).digest(), piece_len, total, [hashes[i : i + 20] for i in range(0, len(hashes), 20)]


class Peer:
    def __init__(self, index, pieces):
        self.index = index
        self.todo = list(pieces)  # pieces still to fetch, in order
        self.sock = None
        self.connected = False
        self.handshaken = False
        self.unchoked = False
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.requests = []  # (piece, offset, len) not yet sent
        self.in_flight = 0
        self.piece = None  # the piece being fetched
        self.got = {}
        self.served = False
        self.retry_at = 0.0
        self.last_sent = 0.0


class Flood:
    def __init__(self, kind):
        self.kind = kind
        self.sock = None
        self.connected = False
        self.sent = 0
        self.payload = b""
        self.connected_at = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--status", required=True)
    ap.add_argument("--max-life", type=float, default=120.0)
    ap.add_argument("--pieces-each", type=int, default=2)
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--pending", type=int, default=32)
    ap.add_argument("--silent", type=int, default=0)
    ap.add_argument("--partial", type=int, default=0)
    ap.add_argument("--dribble", type=int, default=0)
    args = ap.parse_args()
    info_hash, piece_len, total, hashes = load(args.torrent)
    num_pieces = len(hashes)
    ends = time.time() + args.max_life
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))

    def piece_size(p):
        return min(piece_len, total - p * piece_len)

    sel = selectors.DefaultSelector()
    peers = []
    for i in range(args.count):
        if args.busy:
            start = (i * 7) % num_pieces
            pieces = [(start + j) % num_pieces for j in range(num_pieces)]
        else:
            pieces = [(i * args.pieces_each + j) % num_pieces for j in range(args.pieces_each)]
        peers.append(Peer(i, pieces))
    st = {"open": 0, "handshaken": 0, "served": 0, "pieces_ok": 0, "pieces_bad": 0, "bytes": 0, "connects": 0,
          "closed_by_remote": 0, "closed_after_handshake": 0}
    fl = {"opened": 0, "connected": 0, "open": 0, "closed_by_remote": 0, "refused": 0, "last_closed_at": None,
          "first_connected_at": None, "max_held": 0.0}
    hello = b"\x13BitTorrent protocol" + bytes(8) + info_hash

    def connect(obj):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", args.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            return False
        obj.sock = s
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, obj)
        return True

    def close_peer(p, remote):
        if p.sock is not None:
            sel.unregister(p.sock)
            p.sock.close()
            p.sock = None
        if remote:
            st["closed_by_remote"] += 1
            if p.handshaken:
                st["closed_after_handshake"] += 1
        p.connected = p.handshaken = p.unchoked = False
        p.inbuf = bytearray()
        p.outbuf = bytearray()
        p.in_flight = 0
        p.requests = []
        p.piece = None
        p.retry_at = time.time() + RETRY_AFTER * (1 + random.random())

    def close_flood(f, remote):
        if f.sock is not None:
            sel.unregister(f.sock)
            f.sock.close()
            f.sock = None
        if remote:
            fl["closed_by_remote"] += 1
            fl["last_closed_at"] = time.time()
            if f.connected_at is not None:
                fl["max_held"] = max(fl["max_held"], fl["last_closed_at"] - f.connected_at)

    def send(p, data):
        p.outbuf += data
        p.last_sent = time.time()

    def flush(p):
        while p.outbuf:
            try:
                n = p.sock.send(p.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            del p.outbuf[:n]
        mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if p.outbuf else 0)
        sel.modify(p.sock, mask, p)

    def next_piece(p):
        if not p.todo:
            return False
        p.piece = p.todo.pop(0)
        if args.busy:
            p.todo.append(p.piece)
        size = piece_size(p.piece)
        p.got = {}
        p.requests = [(p.piece, off, min(BLOCK, size - off)) for off in range(0, size, BLOCK)]
        return True

    def pump_requests(p):
        while p.unchoked and p.in_flight < PIPELINE:
            if not p.requests:
                if p.piece is not None or not next_piece(p):
                    return
            if not p.requests:
                return
            piece, off, ln = p.requests.pop(0)
            send(p, struct.pack(">IBIII", 13, 6, piece, off, ln))
            p.in_flight += 1

    def on_message(p, msg):
        if not msg:
            return
        mid = msg[0]
        if mid == 0:  # choke: requests in flight are void
            p.unchoked = False
            if p.piece is not None:
                size = piece_size(p.piece)
                p.requests = [(p.piece, off, min(BLOCK, size - off)) for off in range(0, size, BLOCK) if off not in p.got]
            p.in_flight = 0
        elif mid == 1:
            p.unchoked = True
            pump_requests(p)
        elif mid == 7:
            piece, off = struct.unpack(">II", msg[1:9])
            data = bytes(msg[9:])
            if piece != p.piece or off in p.got:
                return
            p.got[off] = data
            p.in_flight = max(0, p.in_flight - 1)
            st["bytes"] += len(data)
            size = piece_size(piece)
            if sum(len(b) for b in p.got.values()) >= size:
                whole = b"".join(p.got[o] for o in sorted(p.got))
                if hashlib.sha1(whole).digest() == hashes[piece]:
                    st["pieces_ok"] += 1
                else:
                    st["pieces_bad"] += 1
                p.piece = None
                p.got = {}
                if not p.todo and not p.served:
                    p.served = True
                    st["served"] += 1
                    send(p, struct.pack(">IB", 1, 3))  # not interested
            pump_requests(p)

    def on_peer_readable(p):
        try:
            data = p.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            close_peer(p, True)
            return
        if not data:
            close_peer(p, True)
            return
        p.inbuf += data
        if not p.handshaken:
            if len(p.inbuf) < 68:
                return
            if p.inbuf[28:48] != info_hash:
                close_peer(p, False)
                return
            del p.inbuf[:68]
            p.handshaken = True
            if p.todo or args.pieces_each == 0:
                send(p, struct.pack(">IB", 1, 2))  # interested
        while len(p.inbuf) >= 4:
            (n,) = struct.unpack(">I", p.inbuf[:4])
            if len(p.inbuf) < 4 + n:
                break
            msg = bytes(p.inbuf[4 : 4 + n])
            del p.inbuf[: 4 + n]
            on_message(p, msg)
        if p.sock is not None:
            flush(p)

    def on_peer_event(p, mask):
        if not p.connected:
            if not mask & selectors.EVENT_WRITE:
                return
            err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                close_peer(p, True)
                return
            p.connected = True
            send(p, hello + b"-MP0001-" + os.urandom(12))
            flush(p)
            return
        if mask & selectors.EVENT_READ:
            on_peer_readable(p)
        elif p.sock is not None and mask & selectors.EVENT_WRITE:
            flush(p)

    def on_flood_event(f, mask):
        if not f.connected:
            err = f.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fl["refused"] += 1
                close_flood(f, False)
                return
            f.connected = True
            f.connected_at = time.time()
            fl["connected"] += 1
            if fl["first_connected_at"] is None:
                fl["first_connected_at"] = time.time()
            if f.kind == "partial":
                f.sock.send(hello[:30])
            sel.modify(f.sock, selectors.EVENT_READ, f)
            return
        try:
            data = f.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            close_flood(f, True)
            return
        if not data:
            close_flood(f, True)

    floods = []
    to_flood = []
    for kind, n in (("silent", args.silent), ("partial", args.partial), ("dribble", args.dribble)):
        to_flood += [kind] * n

    def open_floods(n):
        for kind in to_flood[:n]:
            f = Flood(kind)
            if kind == "dribble":
                ya = random.randrange(2, MSE_P - 1).to_bytes(96, "big")
                f.payload = ya + os.urandom(200)
            if connect(f):
                fl["opened"] += 1
                floods.append(f)
            else:
                fl["refused"] += 1
        del to_flood[:n]

    next_status = 0.0
    next_dribble = time.time() + 1.0
    next_flood = 0.0
    while time.time() < ends and not stopping:
        now = time.time()
        if to_flood and now >= next_flood:
            open_floods(FLOOD_BATCH)
            next_flood = now + FLOOD_EVERY
        in_flight = sum(1 for p in peers if p.sock is not None and not p.handshaken)
        for p in peers:
            if in_flight >= args.pending:
                break
            if p.sock is None and now >= p.retry_at:
                if connect(p):
                    st["connects"] += 1
                    in_flight += 1
                else:
                    p.retry_at = now + RETRY_AFTER
        for key, mask in sel.select(timeout=0.1):
            obj = key.data
            if isinstance(obj, Peer):
                on_peer_event(obj, mask)
            else:
                on_flood_event(obj, mask)
        now = time.time()
        if now >= next_dribble:
            next_dribble = now + 1.0
            for f in floods:
                if f.kind == "dribble" and f.sock is not None and f.connected and f.sent < len(f.payload):
                    try:
                        f.sock.send(f.payload[f.sent : f.sent + 1])
                        f.sent += 1
                    except OSError:
                        close_flood(f, True)
        for p in peers:
            if p.handshaken and p.sock is not None and now - p.last_sent >= KEEPALIVE_EVERY:
                send(p, b"\x00\x00\x00\x00")
                flush(p)
        if now >= next_status:
            next_status = now + 0.2
            st["open"] = sum(1 for p in peers if p.connected)
            st["handshaken"] = sum(1 for p in peers if p.handshaken)
            fl["open"] = sum(1 for f in floods if f.sock is not None and f.connected)
            status = {"pid": os.getpid(), "peers": st, "flood": fl}
            tmp = args.status + ".tmp"
            with open(tmp, "w") as out:
                json.dump(status, out)
            os.replace(tmp, args.status)


if __name__ == "__main__":
    main()
