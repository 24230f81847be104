#!/usr/bin/env python3
"""A tiny HTTP tracker for tests of IPv6 peers (BEP 7): every announce is answered with the same peers, given on
the command line, as a compact `peers6` string (18 bytes each: 16 of address, 2 of port) and no `peers` key at all
(opentracker cannot be made to hand out an IPv6 peer to an IPv4 announce).

    tracker6.py --port P --status FILE.json --peer6 [ADDR]:PORT... [--interval SECS] [--max-life SECS]

Listens on 127.0.0.1:P only. Serves GET /announce; anything else is a 404. FILE.json is rewritten atomically after
every announce with {"announces": [{"info_hash": hex, "port": N, "event": "...", "compact": "..."}, ...]} (the
first 100).
"""
import argparse
import ipaddress
import json
import os
import struct
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--status", required=True)
ap.add_argument("--peer6", action="append", default=[], help="[ADDR]:PORT of an IPv6 peer to hand out")
ap.add_argument("--interval", type=int, default=60)
ap.add_argument("--max-life", type=float, default=300.0)
args = ap.parse_args()

compact = b""
for spec in args.peer6:
    host, _, port = spec.rpartition(":")
    if not (host.startswith("[") and host.endswith("]")) or not port.isdigit() or not 0 < int(port) < 65536:
        ap.error("--peer6 wants [ADDR]:PORT, got %r" % spec)
    compact += ipaddress.IPv6Address(host[1:-1]).packed + struct.pack(">H", int(port))

lock = threading.Lock()
announces = []


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


def write_status():
    tmp = args.status + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"announces": announces}, f)
    os.replace(tmp, args.status)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        sys.stdout.write("%s\n" % (fmt % a))
        sys.stdout.flush()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/announce":
            return self.reply(404, b"")
        # info_hash is raw bytes, percent-encoded: parse it as latin-1 to keep every byte.
        query = urllib.parse.parse_qs(url.query, encoding="latin-1")
        info_hash = query.get("info_hash", [""])[0].encode("latin-1")
        with lock:
            if len(announces) < 100:
                announces.append({
                    "info_hash": info_hash.hex(),
                    "port": int(query.get("port", ["0"])[0] or 0),
                    "event": query.get("event", [""])[0],
                    "compact": query.get("compact", [""])[0],
                })
            write_status()
        if len(info_hash) != 20:
            return self.reply(200, bencode({"failure reason": "bad info_hash"}))
        self.reply(200, bencode({"interval": args.interval, "complete": len(args.peer6), "incomplete": 0,
                                 "peers6": compact}))

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", args.port), Handler)
with lock:
    write_status()
threading.Timer(args.max_life, lambda: os._exit(0)).start()
print("listening on %d, peers6 %s" % (args.port, " ".join(args.peer6)), flush=True)
server.serve_forever()
