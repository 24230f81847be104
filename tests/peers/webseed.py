#!/usr/bin/env python3
"""A small HTTP/1.1 web seed for tests (BEP 19): serves the files under --root with single `Range` requests
(206 with Content-Range), on 127.0.0.1 (or ::1 with --ipv6) only.

    webseed.py --root DIR --port P --status FILE.json [--corrupt] [--no-range] [--not-found] [--redirect-loop]
               [--rate BYTES_PER_S] [--max-life SECS]

--corrupt flips every byte it serves (so every piece it delivers fails its hash); --no-range answers every
request with the whole file (200), as a server without range support; --not-found answers 404; --redirect-loop
answers every request with a 302 to itself. --rate caps what it sends, all connections together, in bytes per
second (bodies go out in 16 KiB chunks, each when the shared budget allows), so that a test with peers as well
sees both sources used. FILE.json is rewritten atomically after every request with
{"requests": N, "bytes": B, "ranges": [[path, first, last], ...] (the last 50)}.
"""
import argparse
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--status", required=True)
ap.add_argument("--corrupt", action="store_true")
ap.add_argument("--no-range", action="store_true")
ap.add_argument("--not-found", action="store_true")
ap.add_argument("--redirect-loop", action="store_true")
ap.add_argument("--ipv6", action="store_true")
ap.add_argument("--rate", type=int, default=0, help="bytes per second, all connections together; 0: unlimited")
ap.add_argument("--max-life", type=float, default=300.0)
args = ap.parse_args()

lock = threading.Lock()
stats = {"requests": 0, "bytes": 0, "ranges": []}
CHUNK = 16 * 1024
# --rate: the time at which the shared budget allows the next chunk out.
next_send = [time.monotonic()]


def pace(n):
    """With --rate, waits until `n` more bytes may go out (all connections share one budget)."""
    if args.rate <= 0:
        return
    with lock:
        at = max(time.monotonic(), next_send[0])
        next_send[0] = at + n / args.rate
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def write_status():
    tmp = args.status + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.replace(tmp, args.status)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        sys.stdout.write("%s\n" % (fmt % a))
        sys.stdout.flush()

    def do_GET(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        with lock:
            stats["requests"] += 1
        if args.redirect_loop:
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:%d%s" % (args.port, self.path))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self.done()
        full = os.path.realpath(os.path.join(args.root, path.lstrip("/")))
        if args.not_found or not full.startswith(os.path.realpath(args.root) + os.sep) or not os.path.isfile(full):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self.done()
        size = os.path.getsize(full)
        first, last = 0, size - 1
        rng = self.headers.get("Range")
        partial = False
        if rng and not args.no_range and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            first = int(a)
            last = min(int(b), size - 1) if b else size - 1
            partial = True
        if first > last:
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self.done()
        with open(full, "rb") as f:
            f.seek(first)
            body = f.read(last - first + 1)
        if args.corrupt:
            body = bytes(b ^ 0xFF for b in body)
        self.send_response(206 if partial else 200)
        if partial:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, size))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        sent = 0
        try:
            for at in range(0, len(body), CHUNK):
                chunk = body[at:at + CHUNK]
                pace(len(chunk))
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with lock:
            stats["bytes"] += sent
            stats["ranges"] = (stats["ranges"] + [[path, first, last]])[-50:]
        self.done()

    def done(self):
        with lock:
            write_status()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6 if args.ipv6 else socket.AF_INET


server = Server(("::1" if args.ipv6 else "127.0.0.1", args.port), Handler)
write_status()
threading.Timer(args.max_life, lambda: os._exit(0)).start()
print("listening on %d" % args.port, flush=True)
server.serve_forever()
