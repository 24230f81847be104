#!/usr/bin/python3
"""A userspace UDP delay line for scripts/bench (uTP at a longer round trip; this kernel has no `tc netem`).

    udp_delay_proxy.py --listen PORT --target PORT --delay-ms 25 [--ready-file F] [--stats F] [--max-life SECS]
                       [--max-clients N] [--socket-buffer BYTES]

Listens on 127.0.0.1:LISTEN (UDP) and forwards every datagram to 127.0.0.1:TARGET, each held DELAY_MS
milliseconds, and every answer back the same way, so the round trip grows by 2 x DELAY_MS. Each client address
gets its own upstream socket (bound to 127.0.0.1, an ephemeral port), so the target sees one peer per client, as
it would without the proxy. Order is kept (one FIFO: every datagram waits the same time); reading never waits for
the delay and there is no rate limit of its own: what it cannot do is its own CPU ceiling, which scripts/bench
measures at 0 ms. A datagram is dropped only when a socket's send buffer is full (as a network queue would),
and counted. The sockets ask for --socket-buffer bytes of SO_RCVBUF/SO_SNDBUF (capped by net.core.rmem_max)
so that the proxy does not drop the bursts it is there to carry.

Writes the port to --ready-file once it receives. With --stats, writes a JSON summary there every second and at
exit: datagrams and bytes each way, drops, clients. Exits after --max-life seconds (or on SIGTERM).
Nothing leaves 127.0.0.1.
"""
import argparse
import collections
import json
import os
import select
import signal
import socket
import sys
import time

MAX_DATAGRAM = 65535


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--ready-file")
    ap.add_argument("--stats")
    ap.add_argument("--max-life", type=float, default=3600.0)
    ap.add_argument("--max-clients", type=int, default=64)
    ap.add_argument("--socket-buffer", type=int, default=4 << 20)
    args = ap.parse_args()
    delay = args.delay_ms / 1000.0
    target = ("127.0.0.1", args.target)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def make_socket(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, opt, args.socket_buffer)
            except OSError:
                pass
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        return s

    listen = make_socket(args.listen)
    port = listen.getsockname()[1]
    ep = select.epoll()
    ep.register(listen.fileno(), select.EPOLLIN)
    upstream = {}  # client address -> upstream socket
    client_of = {}  # upstream fd -> (socket, client address)
    # (due, socket, destination or None for a connected upstream socket, data), in due order.
    line = collections.deque()
    stats = {"to_target": [0, 0], "to_client": [0, 0], "dropped": 0, "refused_clients": 0, "clients": 0,
             "delay_ms": args.delay_ms, "port": port, "target": args.target,
             "rcvbuf": listen.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}

    def write_stats():
        if not args.stats:
            return
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, args.stats)

    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.ready_file)
    print("udp delay proxy 127.0.0.1:%d -> 127.0.0.1:%d, %.1f ms each way, SO_RCVBUF %d" % (
        port, args.target, args.delay_ms, stats["rcvbuf"]), flush=True)

    def send(sock, dest, data, counter):
        try:
            if dest is None:
                sock.send(data)
            else:
                sock.sendto(data, dest)
            stats[counter][0] += 1
            stats[counter][1] += len(data)
        except (BlockingIOError, ConnectionRefusedError):
            # A full send buffer (or the far end not listening yet): lost, as on a network.
            stats["dropped"] += 1

    def forward(sock, dest, data, counter, now):
        if delay <= 0:
            send(sock, dest, data, counter)
        else:
            line.append((now + delay, sock, dest, data, counter))

    end = time.monotonic() + args.max_life
    next_stats = 0.0
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        while line and line[0][0] <= now:
            _, sock, dest, data, counter = line.popleft()
            send(sock, dest, data, counter)
        if now >= next_stats:
            next_stats = now + 1.0
            write_stats()
        timeout = min(1.0, max(0.0, line[0][0] - now)) if line else 1.0
        try:
            events = ep.poll(timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in events:
            if fd == listen.fileno():
                # From clients: to the target through the client's own upstream socket.
                while True:
                    try:
                        data, addr = listen.recvfrom(MAX_DATAGRAM)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        continue
                    up = upstream.get(addr)
                    if up is None:
                        if len(upstream) >= args.max_clients:
                            stats["refused_clients"] += 1
                            continue
                        up = make_socket(0)
                        up.connect(target)
                        upstream[addr] = up
                        client_of[up.fileno()] = (up, addr)
                        ep.register(up.fileno(), select.EPOLLIN)
                        stats["clients"] = len(upstream)
                    forward(up, None, data, "to_target", now)
            else:
                up, addr = client_of[fd]
                # From the target: back to the client from the listening socket.
                while True:
                    try:
                        data = up.recv(MAX_DATAGRAM)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        # ICMP port unreachable (the target not up yet) queued on the connected socket.
                        continue
                    forward(listen, addr, data, "to_client", now)
    write_stats()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        pass
