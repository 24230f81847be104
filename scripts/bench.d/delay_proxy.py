#!/usr/bin/python3
"""A userspace TCP delay line for scripts/bench: listen on 127.0.0.1:LISTEN, forward every connection to
127.0.0.1:TARGET, holding each chunk DELAY_MS milliseconds in each direction (so the round trip grows by
2 x DELAY_MS), without limiting throughput: reading never waits for the delay, chunks wait in a FIFO per
direction (order kept) and leave when due. Back-pressure only when a side's send buffer passes a high-water mark
or a delay line holds more than --max-queue bytes.

    delay_proxy.py --listen PORT --target PORT --delay-ms 25 [--ready-file F] [--max-life SECS] [--stats F]

The kernel here has no `tc netem`, hence this. Its own capacity is measured by scripts/bench (the 0 ms path).
Writes the listening port to --ready-file once it accepts connections. With --stats (and 0 ms) it is a byte
counter with 50 ms resolution: the endgame case puts one in front of each seeder, whose own counters move only
once a second.
"""
import argparse
import asyncio
import collections
import os
import time

HIGH_WATER = 8 << 20
# Bytes delivered: [to the connecting side (client), to the target]. With --stats, sampled every 50 ms.
DELIVERED = [0, 0]


class Side(asyncio.Protocol):
    """One TCP connection of a proxied pair. Data it receives goes through the delay line to `other`."""

    def __init__(self, delay, max_queue, towards_client):
        # towards_client: this side is the target's connection, so what it reads goes to the client.
        self.counter = 0 if towards_client else 1
        self.delay = delay
        self.max_queue = max_queue
        self.transport = None
        self.other = None
        self.line = collections.deque()  # (due, bytes or None for EOF) going to other
        self.queued = 0
        self.timer = None
        self.pending = []  # data that arrived before `other` was connected
        self.paused_by_queue = False
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def attach(self, other):
        self.other = other
        for item in self.pending:
            self._enqueue(item)
        self.pending = []

    def data_received(self, data):
        if self.other is None:
            self.pending.append(data)
            return
        self._enqueue(data)

    def eof_received(self):
        if self.other is None:
            self.pending.append(None)
        else:
            self._enqueue(None)
        return True  # keep our write side open until the other direction ends too

    def connection_lost(self, exc):
        self.closed = True
        if self.other is not None and not self.other.closed:
            if self.line or self.timer is not None:
                self._enqueue(None)
                self.line.append((self.line[-1][0], "close"))
            else:
                self.other.transport.close()

    def _enqueue(self, data):
        loop = asyncio.get_running_loop()
        if self.delay <= 0:
            self._deliver(data)
            return
        self.line.append((loop.time() + self.delay, data))
        if data:
            self.queued += len(data)
            if self.queued > self.max_queue and not self.paused_by_queue:
                self.paused_by_queue = True
                self.transport.pause_reading()
        if self.timer is None:
            self.timer = loop.call_at(self.line[0][0], self._flush)

    def _deliver(self, data):
        out = self.other.transport
        if out.is_closing():
            return
        if data is None:
            if out.can_write_eof():
                out.write_eof()
        elif data == "close":
            out.close()
        else:
            DELIVERED[self.counter] += len(data)
            out.write(data)

    def _flush(self):
        self.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.line and self.line[0][0] <= now:
            _, data = self.line.popleft()
            if isinstance(data, bytes):
                self.queued -= len(data)
            self._deliver(data)
        if self.paused_by_queue and self.queued <= self.max_queue // 2 and not self.closed:
            self.paused_by_queue = False
            self.transport.resume_reading()
        if self.line:
            self.timer = loop.call_at(self.line[0][0], self._flush)

    # Flow control: the peer's send buffer is full, so stop reading from the peer's source (us-as-reader is the
    # other side). asyncio calls these on the protocol whose transport is being written to.
    def pause_writing(self):
        if self.other is not None and not self.other.closed:
            self.other.transport.pause_reading()

    def resume_writing(self):
        if self.other is not None and not self.other.closed and not self.other.paused_by_queue:
            self.other.transport.resume_reading()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--target", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--max-queue", type=int, default=256 << 20)
    ap.add_argument("--ready-file")
    ap.add_argument("--max-life", type=float, default=3600.0)
    ap.add_argument("--stats", help="append 'epoch bytes_to_client bytes_to_target' every 50 ms while it changes")
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    delay = args.delay_ms / 1000.0

    async def connect(client):
        try:
            _, upstream = await loop.create_connection(
                lambda: Side(delay, args.max_queue, True), "127.0.0.1", args.target
            )
        except OSError:
            client.transport.close()
            return
        if client.closed:
            upstream.transport.close()
            return
        client.attach(upstream)
        upstream.attach(client)

    def factory():
        side = Side(delay, args.max_queue, False)
        loop.call_soon(lambda: loop.create_task(connect(side)))
        return side

    server = await loop.create_server(factory, "127.0.0.1", args.listen, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.ready_file)
    print("delay proxy 127.0.0.1:%d -> 127.0.0.1:%d, %.1f ms each way" % (port, args.target, args.delay_ms), flush=True)
    if not args.stats:
        await asyncio.sleep(args.max_life)
        return
    end = loop.time() + args.max_life
    last = None
    with open(args.stats, "a") as f:
        while loop.time() < end:
            now = tuple(DELIVERED)
            if now != last:
                f.write("%.4f %d %d\n" % (time.time(), now[0], now[1]))
                f.flush()
                last = now
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
