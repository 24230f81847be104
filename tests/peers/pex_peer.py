#!/usr/bin/python3
"""A scripted peer-exchange (BEP 11) source for rill's integration tests (python standard library only).

    pex_peer.py --torrent T --port P --status FILE.json --tell IP:PORT [--tell IP:PORT]... [--max-life SECS]

Listens on 127.0.0.1:P. For every connection that handshakes with the torrent's info-hash it answers the
handshake with the extension-protocol bit (BEP 10) set, sends its extended handshake ({"m": {"ut_pex": 1}}), has
no pieces and never unchokes. Once the other side's extended handshake assigns `ut_pex` an id, it sends one
`ut_pex` message with the --tell addresses in `added`/`added6` (flags: seed, reachable), with that id. Unlike
libtorrent it does so for private torrents too: that is what a test of BEP 27 (no PEX on private torrents) needs.
It also decodes every `ut_pex` message the other side sends, so a test can see what rill tells its peers.

FILE.json is replaced atomically (at most every 0.1 s, and at once on every change of a connection) with
{"pid", "port", "info_hash", "accepted", "connections": [{"peer", "peer_id" (hex), "extension_bit",
"their_m" (name -> id from their extended handshake, or null), "pex_sent", "pex_received" (list of
{"added": ["ip:port"...], "dropped": [...]}), "closed_by", "error"}]}. Exits after --max-life seconds.
"""
import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import threading
import time

from peerkit import bdecode, bencode, load_torrent, log, recv_exact

MAX_MESSAGE = 1 << 20
PEX_FLAGS = 0x02 | 0x10  # seed, reachable
OUR_UT_PEX = 1


def compact(addrs, v6):
    out = b""
    for host, port in addrs:
        ip = ipaddress.ip_address(host)
        if (ip.version == 6) == v6:
            out += ip.packed + struct.pack(">H", port)
    return out


def uncompact(buf, size):
    out = []
    for k in range(0, len(buf) - len(buf) % size, size):
        ip = ipaddress.ip_address(buf[k : k + size - 2])
        (port,) = struct.unpack(">H", buf[k + size - 2 : k + size])
        out.append(("[%s]:%d" if ip.version == 6 else "%s:%d") % (ip, port))
    return out


def pex_payload(tell):
    added, added6 = compact(tell, False), compact(tell, True)
    return bencode(
        {
            "added": added,
            "added.f": bytes([PEX_FLAGS]) * (len(added) // 6),
            "added6": added6,
            "added6.f": bytes([PEX_FLAGS]) * (len(added6) // 18),
            "dropped": b"",
            "dropped6": b"",
        }
    )


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
                "connections": [json.loads(json.dumps(c)) for c in self.connections],
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


def serve(state, sock, addr, tell):
    rec = {
        "peer": "%s:%d" % addr,
        "peer_id": None,
        "extension_bit": None,
        "their_m": None,
        "pex_sent": 0,
        "pex_received": [],
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
        state.update(rec, peer_id=hs[48:68].hex(), extension_bit=bool(hs[25] & 0x10))
        reserved = bytearray(8)
        reserved[5] |= 0x10
        my_id = b"-PX0001-" + os.urandom(6).hex().encode()
        sock.sendall(b"\x13BitTorrent protocol" + bytes(reserved) + state.info_hash + my_id)
        hello = bencode({"m": {"ut_pex": OUR_UT_PEX}, "v": "rill-tests/pex_peer"})
        sock.sendall(struct.pack(">IBB", 2 + len(hello), 20, 0) + hello)
        log("handshake with", rec["peer"], "extension bit", rec["extension_bit"])
        sock.settimeout(20)
        while True:
            try:
                (length,) = struct.unpack(">I", recv_exact(sock, 4))
            except socket.timeout:
                sock.sendall(bytes(4))  # keep-alive
                continue
            if length == 0:
                continue
            if length > MAX_MESSAGE:
                raise ValueError("message too long: %d" % length)
            body = recv_exact(sock, length)
            if body[0] != 20 or length < 2:
                continue
            sub, payload = body[1], body[2:]
            if sub == 0:
                d, _ = bdecode(payload)
                m = {k.decode("latin-1"): v for k, v in (d.get(b"m") or {}).items() if isinstance(v, int)}
                state.update(rec, their_m=m)
                log("extended handshake from", rec["peer"], m)
                their_id = m.get("ut_pex", 0)
                if their_id > 0 and rec["pex_sent"] == 0:
                    msg = pex_payload(tell)
                    sock.sendall(struct.pack(">IBB", 2 + len(msg), 20, their_id) + msg)
                    state.update(rec, pex_sent=rec["pex_sent"] + 1)
                    log("sent ut_pex to", rec["peer"], "added", tell)
            elif sub == OUR_UT_PEX:
                d, _ = bdecode(payload)
                got = {
                    "added": uncompact(d.get(b"added", b""), 6) + uncompact(d.get(b"added6", b""), 18),
                    "dropped": uncompact(d.get(b"dropped", b""), 6) + uncompact(d.get(b"dropped6", b""), 18),
                }
                with state.lock:
                    rec["pex_received"].append(got)
                    state.dirty = True
                log("ut_pex from", rec["peer"], got)
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
    state.update(rec, closed_by=closed_by, error=error)
    state.write(force=True)
    log("closed", rec["peer"], "by", closed_by, error or "")


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--tell", action="append", default=[], type=parse_addr)
    ap.add_argument("--max-life", type=float, default=300.0)
    args = ap.parse_args()
    started = time.monotonic()
    info_hash, _ = load_torrent(args.torrent)
    state = State(args, info_hash)

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    srv.settimeout(0.1)
    log("listening on 127.0.0.1:%d for %s, telling %s" % (args.port, info_hash.hex(), args.tell))
    state.write(force=True)
    while time.monotonic() - started < args.max_life:
        try:
            sock, addr = srv.accept()
        except socket.timeout:
            state.write()
            continue
        threading.Thread(target=serve, args=(state, sock, addr, args.tell), daemon=True).start()
    log("max life reached, exiting")
    state.write(force=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
