#!/usr/bin/python3
"""A hostile BitTorrent peer for rill's integration tests (python standard library only).

    hostile_peer.py --torrent T --port P --status FILE.json [--max-life SECS]

Listens on 127.0.0.1:P. For every connection that handshakes with the torrent's info-hash it answers the
handshake (no extensions), claims every piece (a full bitfield), unchokes, and answers every `request` at once
with a block of the requested length whose bytes are garbage, so every piece it takes part in fails its hash.

FILE.json is replaced atomically (at most every 0.1 s, and at once on every connect and disconnect) with what
happened: {"pid", "port", "info_hash", "accepted", "connections": [{"peer", "accepted_at", "handshake",
"peer_id", "interested", "requests", "blocks_sent", "bytes_sent", "cancels", "closed_at", "closed_by",
"error"}]}. `closed_by` is "remote" when the other side closed or reset the connection, "us" when this script
did (a bad handshake, or --max-life). Times are time.time() seconds. Exits after --max-life seconds.
"""
import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

from peerkit import load_torrent, log, recv_exact

BLOCK_MAX = 128 * 1024  # drop a peer asking for more than this in one request (16 KiB is the norm)


def full_bitfield(num_pieces):
    bits = bytearray((num_pieces + 7) // 8)
    for p in range(num_pieces):
        bits[p // 8] |= 0x80 >> (p % 8)
    return bytes(bits)


class State:
    def __init__(self, args, info_hash):
        self.lock = threading.Lock()
        self.args = args
        self.info_hash = info_hash
        self.connections = []
        self.dirty = True

    def write(self, force=False):
        with self.lock:
            if not (self.dirty or force):
                return
            doc = {
                "pid": os.getpid(),
                "port": self.args.port,
                "info_hash": self.info_hash.hex(),
                "accepted": len(self.connections),
                "connections": [dict(c) for c in self.connections],
            }
            self.dirty = False
        tmp = self.args.status + ".tmp.%d" % threading.get_ident()
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.args.status)

    def update(self, rec, **kw):
        with self.lock:
            rec.update(kw)
            self.dirty = True


def serve(state, sock, addr, num_pieces):
    rec = {
        "peer": "%s:%d" % addr,
        "accepted_at": time.time(),
        "handshake": False,
        "peer_id": None,
        "interested": False,
        "requests": 0,
        "blocks_sent": 0,
        "bytes_sent": 0,
        "cancels": 0,
        "closed_at": None,
        "closed_by": None,
        "error": None,
    }
    with state.lock:
        state.connections.append(rec)
        state.dirty = True
    state.write(force=True)
    log("accepted", rec["peer"])
    closed_by, error = "us", None
    try:
        sock.settimeout(30)
        hs = recv_exact(sock, 68)
        if hs[0] != 19 or hs[1:20] != b"BitTorrent protocol":
            raise ValueError("not a BitTorrent handshake")
        if hs[28:48] != state.info_hash:
            raise ValueError("handshake for another torrent " + hs[28:48].hex())
        state.update(rec, handshake=True, peer_id=hs[48:68].decode("latin-1"))
        my_id = b"-HS0001-" + os.urandom(6).hex().encode()
        sock.sendall(b"\x13BitTorrent protocol" + bytes(8) + state.info_hash + my_id)
        bitfield = full_bitfield(num_pieces)
        sock.sendall(struct.pack(">IB", 1 + len(bitfield), 5) + bitfield)
        sock.sendall(struct.pack(">IB", 1, 1))  # unchoke
        log("handshake with", rec["peer"], "peer id", rec["peer_id"])
        sock.settimeout(None)
        while True:
            (length,) = struct.unpack(">I", recv_exact(sock, 4))
            if length == 0:
                continue  # keep-alive
            if length > BLOCK_MAX + 13:
                raise ValueError("message too long: %d" % length)
            body = recv_exact(sock, length)
            mid = body[0]
            if mid == 2:
                state.update(rec, interested=True)
            elif mid == 6 and length == 13:
                index, begin, blen = struct.unpack(">III", body[1:])
                if blen > BLOCK_MAX or index >= num_pieces:
                    raise ValueError("bad request %d %d %d" % (index, begin, blen))
                # Garbage of exactly the requested length: it differs from the real data, so the piece fails.
                junk = bytes((index * 7 + begin // 16384 + i) & 0xFF for i in range(256)) * (blen // 256 + 1)
                sock.sendall(struct.pack(">IBII", 9 + blen, 7, index, begin) + junk[:blen])
                with state.lock:
                    rec["requests"] += 1
                    rec["blocks_sent"] += 1
                    rec["bytes_sent"] += blen
                    state.dirty = True
            elif mid == 8:
                with state.lock:
                    rec["cancels"] += 1
                    state.dirty = True
    except (EOFError, ConnectionResetError, BrokenPipeError) as e:
        closed_by = "remote"
        error = type(e).__name__
    except Exception as e:  # noqa: BLE001
        error = "%s: %s" % (type(e).__name__, e)
    finally:
        try:
            sock.close()
        except OSError:
            pass
    state.update(rec, closed_at=time.time(), closed_by=closed_by, error=error)
    state.write(force=True)
    log("closed", rec["peer"], "by", closed_by, error or "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--max-life", type=float, default=300.0)
    args = ap.parse_args()
    started = time.monotonic()
    info_hash, num_pieces = load_torrent(args.torrent)
    state = State(args, info_hash)

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    srv.settimeout(0.1)
    log("listening on 127.0.0.1:%d for %s (%d pieces)" % (args.port, info_hash.hex(), num_pieces))
    state.write(force=True)
    while time.monotonic() - started < args.max_life:
        try:
            sock, addr = srv.accept()
        except socket.timeout:
            state.write()
            continue
        threading.Thread(target=serve, args=(state, sock, addr, num_pieces), daemon=True).start()
    log("max life reached, exiting")
    state.write(force=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
