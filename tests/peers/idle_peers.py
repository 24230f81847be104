#!/usr/bin/python3
"""Idle peers that hold connection slots, for rill's integration tests (python standard library only).

    idle_peers.py --port P --info-hash HEX --count N --status FILE.json [--max-life SECS]

Opens N connections to 127.0.0.1:P, sends a plain BitTorrent handshake with the given info-hash (no
extensions), reads the answer, and from then on only sends a keep-alive every 20 s and discards whatever
arrives: never a bitfield, never `interested`. A connection the other side closes (or refuses) stays closed.

FILE.json is replaced atomically every 0.2 s with {"pid", "open", "handshaken", "closed_by_remote",
"connects", "first_handshake_at", "last_handshake_at"}: `open` connections now, `handshaken` of them that
got a handshake back with the right info-hash, `closed_by_remote` closes seen so far, `connects` attempts
so far, and when the first and latest handshakes came back (time.time() seconds). Exits after --max-life.
"""
import argparse
import json
import os
import selectors
import socket
import time

KEEPALIVE_EVERY = 20.0


class Conn:
    def __init__(self, sock, hello):
        self.sock = sock
        self.hello = hello
        self.connected = False
        self.got = b""
        self.handshaken = False
        self.last_sent = time.time()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--info-hash", required=True)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--status", required=True)
    ap.add_argument("--max-life", type=float, default=120.0)
    args = ap.parse_args()
    info_hash = bytes.fromhex(args.info_hash)
    assert len(info_hash) == 20
    ends = time.time() + args.max_life
    sel = selectors.DefaultSelector()
    conns = {}
    to_open = args.count
    stats = {"closed_by_remote": 0, "connects": 0, "first_handshake_at": None, "last_handshake_at": None}
    next_status = 0.0

    def close(c, remote):
        sel.unregister(c.sock)
        c.sock.close()
        del conns[id(c)]
        if remote:
            stats["closed_by_remote"] += 1

    def open_one():
        stats["connects"] += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", args.port))
        peer_id = b"-ID0001-" + os.urandom(12)
        c = Conn(s, b"\x13BitTorrent protocol" + bytes(8) + info_hash + peer_id)
        conns[id(c)] = c
        sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ, c)

    while time.time() < ends:
        while to_open > 0:
            open_one()
            to_open -= 1
        for key, mask in sel.select(timeout=0.1):
            c = key.data
            if not c.connected and mask & selectors.EVENT_WRITE:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    close(c, True)
                    continue
                c.connected = True
                try:
                    c.sock.send(c.hello)
                except OSError:
                    close(c, True)
                    continue
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    close(c, True)
                    continue
                if not data:
                    close(c, True)
                    continue
                if not c.handshaken:
                    c.got += data
                    if len(c.got) >= 68:
                        if c.got[28:48] != info_hash:
                            close(c, False)
                            continue
                        c.handshaken = True
                        c.got = b""
                        stats["last_handshake_at"] = time.time()
                        if stats["first_handshake_at"] is None:
                            stats["first_handshake_at"] = stats["last_handshake_at"]
        now = time.time()
        for c in list(conns.values()):
            if c.handshaken and now - c.last_sent >= KEEPALIVE_EVERY:
                try:
                    c.sock.send(b"\x00\x00\x00\x00")
                    c.last_sent = now
                except OSError:
                    close(c, True)
        if now >= next_status:
            next_status = now + 0.2
            status = dict(stats)
            status["pid"] = os.getpid()
            status["open"] = sum(1 for c in conns.values() if c.connected)
            status["handshaken"] = sum(1 for c in conns.values() if c.handshaken)
            tmp = args.status + ".tmp"
            with open(tmp, "w") as f:
                json.dump(status, f)
            os.replace(tmp, args.status)


if __name__ == "__main__":
    main()
