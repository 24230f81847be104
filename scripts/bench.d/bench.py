#!/usr/bin/python3
"""The orchestrator behind scripts/bench (which installs tools, builds rill and runs this under a total timeout).

    bench.py [download] [memory] [latency] [utp] [encryption] [upload] [endgame] [many] [daemon] [dht] [view] [trace]
             [peers] [pair] [writes] [sizes] [swarm] [soak]                          (none: all but soak)

Everything runs on 127.0.0.1. Every process is started in its own process group, wrapped in `timeout` (an
absolute bound even if this script dies), and its group is killed by id on exit. Readiness is polled with
deadlines. Per-run logs go to target/bench/logs/, the tables to target/bench/results.txt, raw runs to
target/bench/runs.jsonl. See scripts/bench for the environment variables.
"""
import atexit
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

# Everything here stays on this machine: rill never uses its built-in DHT routers, even when bench.py is
# run directly rather than through scripts/bench.
os.environ["RILL_FORBID_DHT_ROUTERS"] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
LTPEER = os.path.join(HERE, "ltpeer.py")
PROXY = os.path.join(HERE, "delay_proxy.py")
UDP_PROXY = os.path.join(HERE, "udp_delay_proxy.py")
MKTORRENT = os.path.join(HERE, "mktorrent.py")
RILL = os.environ.get("RILL_BIN") or os.path.join(ROOT, "target", "release", "rill")


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name, default):
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


BENCH = os.environ.get("BENCH_DIR") or os.path.join(ROOT, "target", "bench")
WORK = os.path.join(BENCH, "work")
LOGS = os.path.join(BENCH, "logs")
RESULTS = os.path.join(BENCH, "results.txt")
RUNS = os.path.join(BENCH, "runs.jsonl")

ROUNDS = env_int("ROUNDS", 3)
PAIR_MIN_ROUNDS = 5
TOTAL = env_float("BENCH_TIMEOUT", 5400)
RUN_TIMEOUT = env_float("RUN_TIMEOUT", 300)
SIZE = env_int("SIZE_MIB", 1024) << 20
BIG = env_int("BIG_MIB", 4096) << 20
PIECE = env_int("PIECE_KIB", 1024) << 10
CACHE = os.environ.get("BENCH_CACHE", "hot")
KEEP = os.environ.get("BENCH_KEEP", "0") == "1"
DELAY_MS = env_float("DELAY_MS", 25)
UTP_LT_SOCKET_BUFFER = env_int("UTP_LT_SOCKET_BUFFER", 2 << 20)
ENDGAME_FAST = env_int("ENDGAME_FAST", 50_000_000)
ENDGAME_SLOW = env_int("ENDGAME_SLOW", 500_000)
CLIENTS = os.environ.get("CLIENTS", "rill aria2c libtorrent transmission rqbit").split()
MEMORY_CLIENTS = os.environ.get("MEMORY_CLIENTS", "rill libtorrent").split()
LATENCY_CLIENTS = os.environ.get("LATENCY_CLIENTS", "rill libtorrent").split()
ENDGAME_CLIENTS = os.environ.get("ENDGAME_CLIENTS", "rill libtorrent").split()
SEEDER_PROFILE = os.environ.get("SEEDER_PROFILE", "default")
QUIET_WAIT = env_float("BENCH_QUIET_WAIT", 20)
QUIET_CORES = env_float("BENCH_QUIET_CORES", 0.3)
GIB = float(1 << 30)

START = time.monotonic()
DEADLINE = START + TOTAL - 15  # leave time to clean up inside the wrapper's bound

ALL_CASES = ["download", "memory", "latency", "utp", "encryption", "upload", "endgame", "many", "daemon", "dht", "view",
             "trace", "peers", "pair", "writes", "sizes", "swarm"]
EXTRA_CASES = ["soak"]  # benchmark only, not in the default "all" list: run by name


def remaining():
    return DEADLINE - time.monotonic()


def say(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Processes


PROCS = []  # every Popen we started; each is the leader of its own process group


def spawn(name, cmd, life=None, env=None, cwd=None, stdout=None):
    """Start `cmd` in a new process group under `timeout` (life seconds, at most what the whole bench has left)."""
    life = max(1, int(min(life if life is not None else remaining(), remaining())))
    log = open(os.path.join(LOGS, name + ".log"), "ab")
    full = ["timeout", "-k", "5", str(life)] + [str(c) for c in cmd]
    p = subprocess.Popen(full, stdout=stdout or log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                         env=env, cwd=cwd)
    p.bench_name = name
    PROCS.append(p)
    return p


def stop(p, grace=5.0, sig=signal.SIGTERM, pid=None):
    """Ask politely (the client's own pid first when given, so it can shut down cleanly), then kill the group."""
    if p.poll() is not None:
        return
    try:
        if pid:
            os.kill(pid, sig)
        else:
            os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass
    try:
        p.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass


def cleanup():
    for p in reversed(PROCS):
        if p.poll() is None:
            stop(p, grace=3)
    # The content is GiBs: remove it even when the bench is interrupted (BENCH_KEEP=1 keeps it).
    if not KEEP and os.path.isdir(WORK):
        shutil.rmtree(WORK, ignore_errors=True)


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


atexit.register(cleanup)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on_signal)


def ppid_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        return int(s[s.rindex(")") + 2:].split()[1])
    except (OSError, ValueError):
        return None


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and ppid_of(int(d)) == pid:
            out.append(int(d))
    return out


def leaf(pid, depth):
    """The process `depth` levels below `pid` (timeout -> time -> client), or None while it is not there yet."""
    for _ in range(depth):
        c = children(pid)
        if not c:
            return None
        pid = c[0]
    return pid


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon"):
                    out[k] = int(v.split()[0])  # KiB
    except OSError:
        pass
    return out


TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """user+sys seconds of a live process (its own threads; not its children)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError):
        return None


def cpu_busy():
    """Seconds of CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / TICK  # user nice system irq softirq (not idle, iowait, steal)


def ours_cpu():
    """CPU seconds used so far by this script and the live processes of every group it started."""
    groups = {p.pid for p in PROCS if p.poll() is None}
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[2]) in groups:
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            pass
    t = os.times()
    return total / TICK + t.user + t.system


class Load:
    """How much CPU everything else on the machine used over an interval (other users' builds and tests)."""

    def __init__(self):
        self.busy0 = cpu_busy()
        self.ours0 = ours_cpu()
        self.t0 = time.monotonic()

    def others(self, client_cpu=0.0):
        """Average cores used by processes that are not ours since the start (client_cpu: the CPU of our
        processes that ended in between, e.g. the leecher as GNU time reports it)."""
        dt = max(1e-3, time.monotonic() - self.t0)
        other = (cpu_busy() - self.busy0) - (ours_cpu() - self.ours0) - client_cpu
        return max(0.0, other / dt)


BUSY_STARTS = [0, 0]  # runs started on a busy machine, all runs


def wait_quiet():
    """Wait (up to BENCH_QUIET_WAIT s) until the rest of the machine has used less than BENCH_QUIET_CORES cores for
    two 0.5 s windows in a row: other sessions' builds would skew the figures. Returns the last level seen."""
    BUSY_STARTS[1] += 1
    if QUIET_WAIT <= 0:
        return None
    end = time.monotonic() + min(QUIET_WAIT, max(0.0, remaining() - 60))
    calm = 0
    level = 0.0
    while True:
        l = Load()
        time.sleep(0.5)
        level = l.others()
        calm = calm + 1 if level < QUIET_CORES else 0
        if calm >= 2:
            return level
        if time.monotonic() > end:
            BUSY_STARTS[0] += 1
            return level


def wait_until(what, fn, timeout, interval=0.05, procs=()):
    """Poll fn() until it returns something truthy; fail after timeout or if one of procs exits."""
    end = time.monotonic() + min(timeout, max(0, remaining()))
    while True:
        v = fn()
        if v:
            return v
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError("%s: %s exited (code %s) while waiting; see %s" % (
                    what, p.bench_name, p.returncode, os.path.join(LOGS, p.bench_name + ".log")))
        if time.monotonic() > end:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# Measured runs


class Run:
    pass


def measured(name, cmd, timeout, env=None, cwd=None, done_file=None, on_tick=None, on_done=None, err_lines=False,
             sample=None):
    """Run a leecher under GNU time, sampling its /proc status. Returns a Run with wall, cpu, rss, lines, and
    oublock (GNU time's %O: the kernel's write_bytes of the client and its children, in 512-byte units).

    Exit-on-complete clients: wall = process start to exit. Daemons (done_file): wall = start to the epoch written
    into done_file by the client's completion hook; the client is then sent SIGTERM. err_lines: stderr is read as
    it comes too, into r.err_lines as (seconds since start, line), like stdout into r.lines. sample(pid, t): called
    about every 0.1 s with the client's pid while it runs (its errors are ignored)."""
    timefile = os.path.join(LOGS, name + ".time")
    errpath = os.path.join(LOGS, name + ".stderr")
    outpath = os.path.join(LOGS, name + ".stdout")
    if os.path.exists(timefile):
        os.unlink(timefile)
    timeout = min(timeout, remaining())
    if timeout < 5:
        raise RuntimeError("no time left in the bench budget")
    full = ["timeout", "-k", "5", str(int(timeout) + 5), "/usr/bin/time", "-f", "%e %U %S %M %O", "-o", timefile]
    full += [str(c) for c in cmd]
    r = Run()
    r.name = name
    r.lines = []
    r.timed_out = False
    r.peak_anon = 0
    r.peak_rss_sampled = 0
    r.done_epoch = None
    r.tick_error = None
    r.notes = []
    r.err_lines = []
    err = subprocess.PIPE if err_lines else open(errpath, "wb")
    load = Load()
    e0 = r.epoch0 = time.time()
    t0 = time.monotonic()
    p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=env, cwd=cwd)
    p.bench_name = name
    PROCS.append(p)
    exit_at = []

    def reader():
        with open(outpath, "w") as out:
            for raw in p.stdout:
                t = time.monotonic() - t0
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                r.lines.append((t, line))
                out.write("%8.3f %s\n" % (t, line))

    def err_reader():
        with open(errpath, "wb") as out:
            for raw in p.stderr:
                r.err_lines.append((time.monotonic() - t0, raw.decode("utf-8", "replace").rstrip("\r\n")))
                out.write(raw)

    def waiter():
        p.wait()
        exit_at.append(time.monotonic())

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=waiter, daemon=True)]
    if err_lines:
        threads.append(threading.Thread(target=err_reader, daemon=True))
    for th in threads:
        th.start()
    client = None
    sent_term = 0.0
    sampled = 0.0
    while not exit_at:
        now = time.monotonic()
        if client is None and not sent_term:
            client = leaf(p.pid, 2)
        if client is not None:
            st = proc_status(client)
            r.peak_anon = max(r.peak_anon, st.get("RssAnon", 0))
            r.peak_rss_sampled = max(r.peak_rss_sampled, st.get("VmHWM", 0))
            if sample is not None and now - sampled >= 0.1:
                sampled = now
                try:
                    sample(client, now - t0)
                except Exception:  # noqa: BLE001 - a sampler's failure must not fail the run
                    pass
        if on_tick is not None and client is not None and r.tick_error is None and r.done_epoch is None:
            try:
                on_tick(now - t0)
            except Exception as e:  # noqa: BLE001 - report it as a failed run, stop the client below
                r.tick_error = "%s: %s" % (type(e).__name__, e)
                r.notes.append("bench: %s" % r.tick_error)
                timeout = 0
        if done_file and r.done_epoch is None and os.path.exists(done_file):
            try:
                with open(done_file) as f:
                    r.done_epoch = float(f.read().strip())
            except (OSError, ValueError):
                pass
            if r.done_epoch is not None and client is not None and not sent_term:
                # Ask the daemon to quit (on_done, e.g. an RPC), else SIGTERM; SIGKILL the client alone (so GNU
                # time still reports) if it has not gone 15 s later.
                sent_term = now
                try:
                    if on_done is not None:
                        on_done()
                    else:
                        os.kill(client, signal.SIGTERM)
                except Exception as e:  # noqa: BLE001
                    r.notes.append("bench: stopping the client: %s" % e)
                    try:
                        os.kill(client, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        if sent_term and now - sent_term > 15 and client is not None:
            r.notes.append("bench: client still running 15 s after completion: SIGKILL")
            try:
                os.kill(client, signal.SIGKILL)
            except ProcessLookupError:
                pass
            client = None
        if now - t0 > timeout:
            r.timed_out = True
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    p.wait()
    for th in threads:
        th.join(5)
    t_exit = exit_at[0] if exit_at else time.monotonic()
    r.exit_code = p.returncode
    if r.done_epoch is not None:
        r.wall = r.done_epoch - e0
    else:
        r.wall = t_exit - t0
    r.user = r.sys = r.maxrss = r.oublock = None
    try:
        with open(timefile) as f:
            last = [l for l in f.read().splitlines() if l.strip()][-1].split()
        r.time_wall, r.user, r.sys, r.maxrss = float(last[0]), float(last[1]), float(last[2]), int(last[3])
        r.oublock = int(last[4]) if len(last) > 4 else None
    except (OSError, IndexError, ValueError):
        pass
    r.others = load.others((r.user or 0) + (r.sys or 0))
    with open(errpath, "rb") as f:
        r.stderr_tail = f.read()[-2000:].decode("utf-8", "replace")
    if r.notes:
        r.stderr_tail += "\n" + "\n".join(r.notes)
        with open(errpath, "a") as f:
            f.write("\n".join(r.notes) + "\n")
    return r


def record(case, client, variant, r, size, ok, extra=None):
    row = {
        "case": case, "client": client, "variant": variant, "size": size, "ok": ok,
        "wall": r.wall, "user": r.user, "sys": r.sys, "maxrss_kib": r.maxrss, "peak_anon_kib": r.peak_anon,
        "exit": r.exit_code, "timed_out": r.timed_out, "others_cores": r.others,
    }
    if extra:
        row.update(extra)
    with open(RUNS, "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


# ---------------------------------------------------------------------------------------------------------------
# Data, torrents, page cache


def drop_caches():
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


DROP_OK = None


def prepare_cache(files):
    """Same starting point for every run: nothing dirty, and the seeder's data hot (default) or cold."""
    global DROP_OK
    os.sync()
    if CACHE == "cold":
        DROP_OK = drop_caches()
        return
    buf = bytearray(4 << 20)
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def same_content(a, b, size):
    try:
        if os.path.getsize(a) != size:
            return False
    except OSError:
        return False
    return subprocess.run(["cmp", "-s", a, b], timeout=max(10, remaining())).returncode == 0


class Content:
    def __init__(self, label, size, tracker_url):
        self.label = label
        self.size = size
        self.dir = os.path.join(WORK, "seed-" + label)
        self.name = "bench-%s.bin" % label
        self.path = os.path.join(self.dir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        if not (os.path.exists(self.path) and os.path.getsize(self.path) == size):
            t = time.monotonic()
            with open(self.path, "wb") as out:
                subprocess.run(["head", "-c", str(size), "/dev/urandom"], stdout=out, check=True,
                               timeout=max(10, remaining()))
            say("  generated %s (%d MiB) in %.1f s" % (self.path, size >> 20, time.monotonic() - t))
        self.torrent = os.path.join(WORK, "bench-%s.torrent" % label)
        self.torrent_nt = os.path.join(WORK, "bench-%s-direct.torrent" % label)  # no announce: peers given directly
        t = time.monotonic()
        self.infohash = subprocess.run([PY, MKTORRENT, self.path, str(PIECE), self.torrent, tracker_url],
                                       capture_output=True, text=True, check=True,
                                       timeout=max(10, remaining())).stdout.strip()
        subprocess.run([PY, MKTORRENT, self.path, str(PIECE), self.torrent_nt], capture_output=True, check=True,
                       timeout=max(10, remaining()))
        say("  torrent %s: info-hash %s, %d KiB pieces (%.1f s to hash)" % (
            self.label, self.infohash, PIECE >> 10, time.monotonic() - t))


# ---------------------------------------------------------------------------------------------------------------
# Bencode (tracker answers) and the tracker


def bdecode(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def pct(raw):
    return "".join("%%%02X" % x for x in raw)


class Tracker:
    def __init__(self):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/announce" % self.port
        self.proc = None

    def start(self, infohashes):
        root = os.path.join(WORK, "opentracker")
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)
        with open(os.path.join(root, "whitelist"), "w") as f:
            f.write("".join(h + "\n" for h in infohashes))
        os.chmod(os.path.join(root, "whitelist"), 0o644)
        cmd = ["opentracker", "-i", "127.0.0.1", "-p", self.port, "-P", self.port, "-d", root, "-w", "whitelist"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        self.proc = spawn("opentracker", cmd)
        for h in infohashes:
            wait_until("opentracker to accept " + h, lambda: self.authorized(h), 20, 0.1, [self.proc])

    def announce(self, infohash, event, port=1, numwant=0):
        q = ("info_hash=%s&peer_id=-BENCHPROBE-00000000&port=%d&uploaded=0&downloaded=0&left=1&compact=1"
             "&numwant=%d&event=%s" % (pct(bytes.fromhex(infohash)), port, numwant, event))
        with urllib.request.urlopen("http://127.0.0.1:%d/announce?%s" % (self.port, q), timeout=2) as r:
            return bdecode(r.read())[0]

    def authorized(self, infohash):
        try:
            d = self.announce(infohash, "started")
            self.announce(infohash, "stopped")
            return b"failure reason" not in d
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def lists(self, infohash, port):
        """True once the tracker hands out 127.0.0.1:port for infohash."""
        try:
            d = self.announce(infohash, "started", numwant=200)
            self.announce(infohash, "stopped")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        peers = d.get(b"peers", b"")
        if isinstance(peers, bytes):
            return any(peers[i + 4:i + 6] == port.to_bytes(2, "big") for i in range(0, len(peers) - 5, 6))
        return any(p.get(b"port") == port for p in peers)


# ---------------------------------------------------------------------------------------------------------------
# Seeders


class LtSeeder:
    """The reference seeder: python3-libtorrent, one session, one or more torrents. utp_only: uTP on, TCP off
    both ways (a TCP connect to its port is refused); encryption: ltpeer.py's --encryption (default, disabled,
    rc4)."""

    def __init__(self, name, torrents, upload_limit=0, utp_only=False, encryption="default", socket_buffer=0,
                 payload_limit=False):
        self.name = name
        self.utp_only = utp_only
        self.port = free_port()
        self.status = os.path.join(WORK, name + ".status.json")
        self.dial = os.path.join(WORK, name + ".dial")
        shutil.rmtree(self.dial, ignore_errors=True)
        os.makedirs(self.dial)
        if os.path.exists(self.status):
            os.unlink(self.status)
        cmd = [PY, LTPEER, "seed", "--port", self.port, "--status", self.status, "--dial-dir", self.dial,
               "--max-life", int(max(10, remaining())), "--profile", SEEDER_PROFILE]
        for t, d in torrents:
            cmd += ["--torrent", "%s:%s" % (t, d)]
        if upload_limit:
            cmd += ["--upload-limit", upload_limit]
        if payload_limit:
            cmd += ["--payload-limit"]
        if utp_only:
            cmd += ["--utp-only"]
        if socket_buffer:
            cmd += ["--socket-buffer", socket_buffer]
        if encryption != "default":
            cmd += ["--encryption", encryption]
        self.proc = spawn(name, cmd)

    def wait_ready(self, timeout=300):
        # A uTP-only seeder has no TCP listener: its status says when its (UDP) socket is up.
        wait_until(self.name + " (libtorrent seeder) to check its data and listen",
                   lambda: (read_json(self.status) or {}).get("ready") and (self.utp_only or port_open(self.port)),
                   timeout, 0.1, [self.proc])

    def dial_to(self, infohash, port):
        tmp = os.path.join(self.dial, "%d.tmp" % port)
        with open(tmp, "w") as f:
            f.write("%s 127.0.0.1:%d\n" % (infohash, port))
        os.replace(tmp, os.path.join(self.dial, "%d" % port))

    def payload_up(self):
        return (read_json(self.status) or {}).get("payload_up", 0)

    def up_by_transport(self):
        """Payload sent so far per "utp|tcp/rc4|plain" (only with utp_only or an encryption setting)."""
        return (read_json(self.status) or {}).get("up_by_transport") or {}

    def stop(self):
        stop(self.proc)


# ---------------------------------------------------------------------------------------------------------------
# Transmission (daemon) helpers


class Transmission:
    def __init__(self, name, download_dir, done_file=None):
        self.name = name
        self.conf = os.path.join(WORK, name + ".conf")
        shutil.rmtree(self.conf, ignore_errors=True)
        os.makedirs(self.conf)
        self.peer_port = free_port()
        self.rpc_port = free_port()
        self.session = None
        settings = {
            "download-dir": download_dir, "incomplete-dir-enabled": False, "watch-dir-enabled": False,
            "peer-port": self.peer_port, "peer-port-random-on-start": False,
            "rpc-enabled": True, "rpc-bind-address": "127.0.0.1", "rpc-port": self.rpc_port,
            "rpc-authentication-required": False, "rpc-whitelist-enabled": True, "rpc-whitelist": "127.0.0.1",
            "rpc-host-whitelist-enabled": False,
            "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "utp-enabled": False,
            "port-forwarding-enabled": False, "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
            "rename-partial-files": False, "start-added-torrents": True, "trash-original-torrent-files": False,
            "speed-limit-down-enabled": False, "speed-limit-up-enabled": False, "alt-speed-enabled": False,
            "ratio-limit-enabled": False, "idle-seeding-limit-enabled": False, "queue-stalled-enabled": False,
            "download-queue-enabled": False, "seed-queue-enabled": False, "message-level": 2,
            "blocklist-enabled": False,
        }
        if done_file:
            script = os.path.join(self.conf, "done.sh")
            with open(script, "w") as f:
                f.write("#!/bin/sh\ndate +%%s.%%N > '%s.tmp' && mv '%s.tmp' '%s'\n" % (done_file, done_file, done_file))
            os.chmod(script, 0o755)
            settings["script-torrent-done-enabled"] = True
            settings["script-torrent-done-filename"] = script
        with open(os.path.join(self.conf, "settings.json"), "w") as f:
            json.dump(settings, f, indent=1)

    def cmd(self):
        return ["transmission-daemon", "-f", "-g", self.conf]

    def rpc(self, method, arguments=None):
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()
        for _ in range(3):
            req = urllib.request.Request("http://127.0.0.1:%d/transmission/rpc" % self.rpc_port, data=body,
                                         headers={"Content-Type": "application/json"})
            if self.session:
                req.add_header("X-Transmission-Session-Id", self.session)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    self.session = e.headers.get("X-Transmission-Session-Id")
                    continue
                raise
        raise RuntimeError("transmission rpc: no session id")

    def rpc_up(self):
        try:
            self.rpc("session-get")
            return True
        except (OSError, urllib.error.URLError, RuntimeError, ValueError):
            return False


# ---------------------------------------------------------------------------------------------------------------
# BitTorrent probe: does a seeder advertise every piece?


def probe_complete(port, infohash, pieces):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
    except OSError:
        return False
    try:
        s.settimeout(1.0)
        reserved = bytearray(8)
        reserved[7] |= 0x04  # fast extension: a seeder may answer with have_all
        s.sendall(b"\x13BitTorrent protocol" + bytes(reserved) + bytes.fromhex(infohash) + b"-BP0001-benchprobe00")
        buf = b""

        def need(n):
            nonlocal buf
            while len(buf) < n:
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError("closed")
                buf += chunk

        need(68)
        buf = buf[68:]
        have = set()
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            need(4)
            n = int.from_bytes(buf[:4], "big")
            need(4 + n)
            msg, buf = buf[4:4 + n], buf[4 + n:]
            if n == 0:
                continue
            mid = msg[0]
            if mid == 14:  # have_all
                return True
            if mid == 15:  # have_none
                return False
            if mid == 5:
                bits = msg[1:]
                for i in range(pieces):
                    if bits[i >> 3] & (0x80 >> (i & 7)):
                        have.add(i)
            elif mid == 4:
                have.add(int.from_bytes(msg[1:5], "big"))
            if len(have) >= pieces:
                return True
        return False
    except (OSError, ValueError, IndexError):
        return False
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------------------------
# Leecher commands


def have(cmd):
    return shutil.which(cmd) is not None


def lt_available():
    return subprocess.run([PY, "-c", "import libtorrent"], capture_output=True).returncode == 0


def aria2_leech_cmd(torrent, out):
    return ["aria2c", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", "--seed-time=0", "--dir=" + out, "--listen-port=%d" % free_port(),
            "--file-allocation=falloc", "--disable-ipv6=true", "--summary-interval=0", "--console-log-level=warn",
            "--download-result=hide", "--check-integrity=false", "--auto-file-renaming=false",
            "--allow-overwrite=true", "--bt-tracker-connect-timeout=10", "--bt-tracker-timeout=10", torrent]


def rqbit_leech_cmd(torrent, out):
    return ["rqbit", "--disable-dht", "--disable-dht-persistence", "--disable-upnp-port-forward", "--disable-lsd",
            "--listen-ip", "127.0.0.1", "--listen-port", str(free_port()), "download", "--disable-http-api",
            "--exit-on-finish", "-o", out, torrent]


def run_leecher(case, client, content, torrent, out, tag, peers=(), seeder=None, extra=(), sample=None, wrap=()):
    """One download by `client`; returns a Run (with .ok). `peers`: direct peer addresses; `seeder`: an LtSeeder
    (or anything with dial_to) that must dial the client itself (Transmission); `extra`: more arguments for the
    client (rill, libtorrent); `sample`: measured()'s sampler; `wrap`: a command prefix (e.g. strace ... --)."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    name = "%s-%s-%s" % (case, client, tag)
    done_file = None
    on_tick = None
    env = dict(os.environ)
    if client == "rill":
        cmd = [RILL, "download", torrent, "-d", out, "--no-ui", "--port", "0"] + list(extra)
        for p in peers:
            cmd += ["--peer", p]
    elif client == "aria2c":
        cmd = aria2_leech_cmd(torrent, out)
    elif client == "libtorrent":
        cmd = [PY, LTPEER, "leech", "--torrent", torrent, "--save", out, "--max-life", int(RUN_TIMEOUT)]
        for p in peers:
            cmd += ["--peer", p]
        cmd += list(extra)
    elif client == "rqbit":
        cmd = rqbit_leech_cmd(torrent, out)
        if peers:
            cmd[-1:-1] = ["--initial-peers", ",".join(peers)]
        env.setdefault("RUST_LOG", "warn")
    elif client == "transmission":
        done_file = os.path.join(WORK, name + ".done")
        if os.path.exists(done_file):
            os.unlink(done_file)
        tr = Transmission(name, out, done_file)
        cmd = tr.cmd()
        state = {"added": False, "dialled": 0.0, "polled": 0.0}

        def on_tick(t):
            if not state["added"]:
                if tr.rpc_up():
                    r = tr.rpc("torrent-add", {"filename": torrent, "download-dir": out})
                    if r.get("result") != "success":
                        raise RuntimeError("transmission torrent-add: %s" % r)
                    state["added"] = True
                return
            if seeder is None or t - state["polled"] < 0.1:
                return
            state["polled"] = t
            # Dial once the torrent is downloading (a connection during its initial check is refused), and again
            # every 2 s while it has no peer.
            got = tr.rpc("torrent-get", {"fields": ["status", "peersConnected"]})
            ts = got.get("arguments", {}).get("torrents", [])
            if ts and ts[0].get("status") == 4 and ts[0].get("peersConnected", 0) == 0 \
                    and t - state["dialled"] > 2.0:
                seeder.dial_to(content.infohash, tr.peer_port)
                state["dialled"] = t
    else:
        raise ValueError(client)
    on_done = (lambda: tr.rpc("session-close")) if client == "transmission" else None
    wait_quiet()
    r = measured(name, list(wrap) + cmd, RUN_TIMEOUT, env=env, done_file=done_file, on_tick=on_tick, on_done=on_done,
                 sample=sample)
    got = os.path.join(out, content.name)
    r.ok = (not r.timed_out) and (r.exit_code == 0 or done_file is not None and r.done_epoch is not None) \
        and same_content(got, content.path, content.size)
    if not r.ok:
        say("    %s run %s FAILED: exit %s%s; stderr tail:\n%s" % (
            client, tag, r.exit_code, " (timed out)" if r.timed_out else "",
            "\n".join("      " + l for l in r.stderr_tail.strip().splitlines()[-12:])))
    shutil.rmtree(out, ignore_errors=True)
    return r


# ---------------------------------------------------------------------------------------------------------------
# Tables


def fmt_table(headers, rows):
    cols = [headers] + rows
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(headers))]
    line = lambda r: "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def mib(kib):
    return "%.1f" % (kib / 1024.0) if kib else "-"


def summarize(runs, size):
    """Median wall, MB/s of the median, median CPU s/GiB, max peak RSS over the ok runs."""
    ok = [r for r in runs if r.ok]
    if not ok:
        return None
    walls = sorted(r.wall for r in ok)
    wall = statistics.median(walls)
    cpus = [(r.user + r.sys) / (size / GIB) for r in ok if r.user is not None]
    rss = max((r.maxrss or 0) for r in ok)
    anon = max(r.peak_anon for r in ok)
    return {
        "n": "%d/%d" % (len(ok), len(runs)),
        "wall": "%.2f" % wall,
        "range": "%.2f-%.2f" % (walls[0], walls[-1]),
        "mbs": "%.0f" % (size / 1e6 / wall),
        "cpu": "%.2f" % statistics.median(cpus) if cpus else "-",
        "rss": mib(rss),
        "anon": mib(anon),
        "others": "%.2f" % statistics.median(r.others for r in ok),
    }


REPORT = []


def emit(text=""):
    say(text)
    REPORT.append(text)
    write_results()


def write_results():
    with open(RESULTS + ".tmp", "w") as f:
        f.write("\n".join(REPORT) + "\n")
    os.replace(RESULTS + ".tmp", RESULTS)


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def rotate(seq, k):
    k %= max(1, len(seq))
    return seq[k:] + seq[:k]


def rill_summary(r):
    for _, line in reversed(r.lines):
        if line.startswith("done:"):
            return line
    return ""


# ---------------------------------------------------------------------------------------------------------------
# Cases


OUT_OF_TIME = set()


def out_of_time(case, need):
    """True (and one line in the report) once the bench's budget cannot fit another run of `case`."""
    if remaining() >= need:
        return False
    if case not in OUT_OF_TIME:
        OUT_OF_TIME.add(case)
        emit("   (bench time budget BENCH_TIMEOUT=%g s exhausted: the %s case stops here)" % (TOTAL, case))
    return True


def available_clients(names=None):
    out, missing = [], []
    for c in (CLIENTS if names is None else names):
        ok = {"rill": os.path.exists(RILL), "aria2c": have("aria2c"), "libtorrent": lt_available(),
              "transmission": have("transmission-daemon"), "rqbit": have("rqbit")}.get(c, False)
        (out if ok else missing).append(c)
    return out, missing


def case_download(ctx):
    content = ctx["c1"]
    emit("== download: %d MiB torrent from one python3-libtorrent seeder on loopback, via opentracker" % (
        content.size >> 20))
    clients, missing = available_clients()
    for m in missing:
        emit("   %s: not installed, skipped%s" % (m, " (rqbit: put it on PATH, or BENCH_INSTALL_RQBIT=1)"
                                                   if m == "rqbit" else ""))
    seeder = LtSeeder("dl-seeder", [(content.torrent, content.dir)])
    seeder.wait_ready()
    wait_until("opentracker to list the seeder", lambda: ctx["tracker"].lists(content.infohash, seeder.port),
               30, 0.2, [seeder.proc])
    runs = {c: [] for c in clients}
    summaries = {}
    for rnd in range(ROUNDS):
        for c in rotate(clients, rnd):
            if out_of_time("download", 60):
                break
            prepare_cache([content.path])
            r = run_leecher("download", c, content, content.torrent, os.path.join(WORK, "out"), "r%d" % (rnd + 1),
                            seeder=seeder)
            runs[c].append(r)
            record("download", c, "1 seeder", r, content.size, r.ok)
            say("    round %d %-12s %s" % (rnd + 1, c, ("%.2f s  %.0f MB/s  cpu %.2f s  rss %s MiB" % (
                r.wall, content.size / 1e6 / r.wall, (r.user or 0) + (r.sys or 0), mib(r.maxrss))) if r.ok
                else "FAILED"))
            if c == "rill" and r.ok:
                summaries["rill"] = rill_summary(r)
    seeder.stop()
    rows = []
    for c in clients:
        s = summarize(runs[c], content.size)
        if s is None:
            rows.append([c, "0/%d" % len(runs[c]), "failed" if runs[c] else "not run", "-", "-", "-", "-", "-", "-"])
        else:
            rows.append([c, s["n"], s["wall"], s["range"], s["mbs"], s["cpu"], s["rss"], s["anon"], s["others"]])
    emit(fmt_table(["client", "ok", "wall s (median)", "min-max", "MB/s", "CPU s/GiB", "peak RSS MiB",
                    "peak anon MiB", "other load"], rows))
    emit("   path: every leecher announces to opentracker and dials the seeder it lists, except transmission:")
    emit("   Transmission 3.00 never dials 127.x peers a tracker hands it, so the seeder dials transmission-daemon")
    emit("   (an incoming connection for it). transmission wall = daemon start to its torrent-done script.")
    if "rill" in summaries:
        emit("   rill's own summary (last ok run): " + summaries["rill"])
    emit()
    ctx["download_runs"] = runs


def case_trace(ctx):
    """The same download with and without `--trace` (alternating): what tracing costs in MB/s and CPU."""
    content = ctx["c1"]
    emit("== trace: %d MiB torrent from one python3-libtorrent seeder, rill without and with --trace FILE" % (
        content.size >> 20))
    seeder = LtSeeder("trace-seeder", [(content.torrent, content.dir)])
    seeder.wait_ready()
    wait_until("opentracker to list the seeder", lambda: ctx["tracker"].lists(content.infohash, seeder.port),
               30, 0.2, [seeder.proc])
    variants = ["rill", "rill --trace"]
    runs = {v: [] for v in variants}
    sizes, lines = [], []
    trace_path = os.path.join(WORK, "bench-trace.jsonl")
    for rnd in range(ROUNDS):
        for v in rotate(variants, rnd):
            if out_of_time("trace", 60):
                break
            prepare_cache([content.path])
            extra = ["--trace", trace_path] if v != "rill" else []
            r = run_leecher("trace", "rill", content, content.torrent, os.path.join(WORK, "out"),
                            "%s-r%d" % ("traced" if extra else "plain", rnd + 1), extra=extra)
            runs[v].append(r)
            record("trace", "rill", v, r, content.size, r.ok)
            note = ""
            if extra and os.path.exists(trace_path):
                size = os.path.getsize(trace_path)
                with open(trace_path, "rb") as f:
                    n = sum(1 for _ in f)
                sizes.append(size)
                lines.append(n)
                note = "  trace %.1f MiB, %d lines" % (size / 1048576.0, n)
                os.unlink(trace_path)
            say("    round %d %-13s %s%s" % (rnd + 1, v, ("%.2f s  %.0f MB/s  cpu %.2f s  rss %s MiB" % (
                r.wall, content.size / 1e6 / r.wall, (r.user or 0) + (r.sys or 0), mib(r.maxrss))) if r.ok
                else "FAILED", note))
    seeder.stop()
    rows = []
    cpu = {}
    for v in variants:
        s = summarize(runs[v], content.size)
        if s is None:
            rows.append([v, "0/%d" % len(runs[v]), "failed" if runs[v] else "not run", "-", "-", "-", "-", "-"])
        else:
            cpu[v] = float(s["cpu"]) if s["cpu"] != "-" else None
            rows.append([v, s["n"], s["wall"], s["range"], s["mbs"], s["cpu"], s["rss"], s["others"]])
    emit(fmt_table(["rill", "ok", "wall s (median)", "min-max", "MB/s", "CPU s/GiB", "peak RSS MiB", "other load"],
                   rows))
    if sizes:
        emit("   trace file: %.1f MiB, %d lines (median over rounds): %.0f bytes per line, %.1f MiB per GiB" % (
            statistics.median(sizes) / 1048576.0, statistics.median(lines),
            statistics.median(sizes) / max(1, statistics.median(lines)),
            statistics.median(sizes) / 1048576.0 / (content.size / GIB)))
    if cpu.get("rill") and cpu.get("rill --trace"):
        emit("   tracing cost: %+.1f %% CPU per GiB" % (100.0 * (cpu["rill --trace"] / cpu["rill"] - 1.0)))
    emit()


def case_memory(ctx):
    emit("== memory vs size: peak RSS of %s on %d MiB and %d MiB torrents (same seeder, same %d KiB pieces)" % (
        ", ".join(MEMORY_CLIENTS), ctx["c1"].size >> 20, ctx["c4"].size >> 20, PIECE >> 10))
    contents = [ctx["c1"], ctx["c4"]]
    seeder = LtSeeder("mem-seeder", [(c.torrent, c.dir) for c in contents])
    seeder.wait_ready(600)
    for c in contents:
        wait_until("opentracker to list the seeder", lambda: ctx["tracker"].lists(c.infohash, seeder.port),
                   30, 0.2, [seeder.proc])
    clients = [c for c in MEMORY_CLIENTS if c in available_clients(MEMORY_CLIENTS)[0]]
    runs = {(cl, c.label): [] for cl in clients for c in contents}
    for rnd in range(ROUNDS):
        for cl in clients:
            for c in rotate(contents, rnd):
                if out_of_time("memory", 90):
                    break
                prepare_cache([c.path])
                r = run_leecher("memory", cl, c, c.torrent, os.path.join(WORK, "out"), "%s-r%d" % (c.label, rnd + 1),
                                seeder=seeder)
                runs[(cl, c.label)].append(r)
                record("memory", cl, c.label, r, c.size, r.ok)
                say("    round %d %-10s %-5s %s" % (rnd + 1, cl, c.label, ("%.2f s  %.0f MB/s  rss %s MiB" % (
                    r.wall, c.size / 1e6 / r.wall, mib(r.maxrss))) if r.ok else "FAILED"))
    seeder.stop()
    rows = []
    for cl in clients:
        for c in contents:
            s = summarize(runs[(cl, c.label)], c.size)
            if s is None:
                rows.append([cl, "%d MiB" % (c.size >> 20), "0/%d" % len(runs[(cl, c.label)]),
                             "failed" if runs[(cl, c.label)] else "not run", "-", "-", "-", "-", "-"])
            else:
                rows.append([cl, "%d MiB" % (c.size >> 20), s["n"], s["wall"], s["mbs"], s["cpu"], s["rss"],
                             s["anon"], s["others"]])
    emit(fmt_table(["client", "torrent", "ok", "wall s", "MB/s", "CPU s/GiB", "peak RSS MiB", "peak anon MiB",
                    "other load"], rows))
    emit("   on the larger torrent every client's sys time grows: the kernel throttles a writer with more than")
    emit("   vm.dirty_background_ratio (%s%%) of memory dirty and makes it do writeback work; compare rows of one size." % (
        open("/proc/sys/vm/dirty_background_ratio").read().strip()))
    emit()


def case_latency(ctx):
    content = ctx["c1"]
    emit("== latency: %d MiB, one libtorrent seeder behind a userspace delay proxy (%.0f ms each way, so ~%.0f ms "
         "added round trip)" % (content.size >> 20, DELAY_MS, 2 * DELAY_MS))
    emit("   (no tc netem in this kernel: `tc qdisc ... netem` says 'Specified qdisc kind is unknown'; the proxy")
    emit("   delays data, not TCP itself, so it is the application's pipelining that the delay tests)")
    seeder = LtSeeder("lat-seeder", [(content.torrent_nt, content.dir)])
    proxies = {}
    for label, delay in (("proxy 0 ms", 0.0), ("proxy %g+%g ms" % (DELAY_MS, DELAY_MS), DELAY_MS)):
        ready = os.path.join(WORK, "proxy-%g.port" % delay)
        if os.path.exists(ready):
            os.unlink(ready)
        p = spawn("delay-proxy-%g" % delay, [PY, PROXY, "--listen", "0", "--target", seeder.port,
                                              "--delay-ms", delay, "--ready-file", ready,
                                              "--max-life", int(max(10, remaining()))])
        port = int(wait_until("delay proxy", lambda: read_json(ready), 20, 0.05, [p]))
        proxies[label] = (p, port)
    seeder.wait_ready()
    paths = [("direct", None, seeder.port)] + [(label, p, port) for label, (p, port) in proxies.items()]
    clients = [c for c in LATENCY_CLIENTS if c in available_clients(LATENCY_CLIENTS)[0] and c in ("rill", "libtorrent", "rqbit")]
    runs = {(c, path[0]): [] for c in clients for path in paths}
    proxy_util = {path[0]: [] for path in paths}
    for rnd in range(ROUNDS):
        for label, proc, port in paths:
            for c in rotate(clients, rnd):
                if out_of_time("latency", 60):
                    break
                prepare_cache([content.path])
                pid = leaf(proc.pid, 1) if proc else None
                c0 = proc_cpu(pid) if pid else None
                r = run_leecher("latency", c, content, content.torrent_nt, os.path.join(WORK, "out"),
                                "%s-r%d" % (label.replace(" ", "").replace("+", "p"), rnd + 1),
                                peers=["127.0.0.1:%d" % port])
                if c0 is not None and r.wall > 0:
                    proxy_util[label].append((proc_cpu(pid) - c0) / r.wall)
                runs[(c, label)].append(r)
                record("latency", c, label, r, content.size, r.ok)
                say("    round %d %-11s %-10s %s" % (rnd + 1, label, c, ("%.2f s  %.0f MB/s" % (
                    r.wall, content.size / 1e6 / r.wall)) if r.ok else "FAILED"))
    seeder.stop()
    for p, _ in proxies.values():
        stop(p)
    rows = []
    for label, _, _ in paths:
        util = proxy_util[label]
        for c in clients:
            s = summarize(runs[(c, label)], content.size)
            u = "%.0f%%" % (100 * max(util)) if util else "-"
            if s is None:
                rows.append([label, c, "0/%d" % len(runs[(c, label)]), "failed" if runs[(c, label)] else "not run",
                             "-", "-", "-", "-", u, "-"])
            else:
                rows.append([label, c, s["n"], s["wall"], s["range"], s["mbs"], s["cpu"], s["rss"], u, s["others"]])
    emit(fmt_table(["path", "client", "ok", "wall s", "min-max", "MB/s", "CPU s/GiB", "peak RSS MiB",
                    "proxy CPU (max)", "other load"], rows))
    emit("   both clients get the seeder (or proxy) as a direct peer: the torrent has no tracker here. 'proxy 0 ms'")
    emit("   measures the proxy's own ceiling; proxy CPU near 100% means the proxy, not the client, was the limit.")
    emit()


def sysctl(path):
    try:
        with open("/proc/sys/" + path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def udp_drops():
    """The kernel's UDP receive-buffer drops so far (RcvbufErrors in /proc/net/snmp, every socket of the
    machine): a uTP receiver that drains its socket too slowly, or has too small a buffer, shows here."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [l.split() for l in f if l.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def lt_result(r):
    """The libtorrent leecher's RESULT line, as a dict ({} when missing)."""
    for _, line in r.lines:
        if line.startswith("RESULT "):
            try:
                return json.loads(line[len("RESULT "):])
            except ValueError:
                return {}
    return {}


def start_proxy(name, script, target, delay, extra=()):
    """A delay proxy (TCP: delay_proxy.py, UDP: udp_delay_proxy.py) in front of 127.0.0.1:target: (proc, port)."""
    ready = os.path.join(WORK, name + ".port")
    if os.path.exists(ready):
        os.unlink(ready)
    p = spawn(name, [PY, script, "--listen", "0", "--target", target, "--delay-ms", delay, "--ready-file", ready,
                     "--max-life", int(max(10, remaining()))] + list(extra))
    return p, int(wait_until(name, lambda: read_json(ready), 20, 0.05, [p]))


def utp_table(paths, runs, proxy_util, drops, size):
    rows = []
    for label, client, transport, _, _ in paths:
        key = (label, client, transport)
        s = summarize(runs[key], size)
        util = proxy_util.get(key) or []
        u = "%.0f%%" % (100 * max(util)) if util else "-"
        d = drops.get(key) or []
        dr = "%d" % statistics.median(d) if d else "-"
        if s is None:
            rows.append([label, "%s %s" % (client, transport), "0/%d" % len(runs[key]),
                         "failed" if runs[key] else "not run", "-", "-", "-", "-", u, dr, "-"])
        else:
            rows.append([label, "%s %s" % (client, transport), s["n"], s["wall"], s["range"], s["mbs"], s["cpu"],
                         s["rss"], u, dr, s["others"]])
    return fmt_table(["path", "client", "ok", "wall s", "min-max", "MB/s", "CPU s/GiB", "peak RSS MiB",
                      "proxy CPU (max)", "UDP drops", "other load"], rows)


def case_utp(ctx):
    content = ctx["c1"]
    emit("== utp: %d MiB from one uTP-only python3-libtorrent seeder (TCP off both ways), direct and through a "
         "userspace UDP delay line (%.0f ms each way, ~%.0f ms added round trip)" % (
             content.size >> 20, DELAY_MS, 2 * DELAY_MS))
    if not lt_available():
        emit("   python3-libtorrent missing: the utp case needs it")
        return
    useed = LtSeeder("utp-seeder", [(content.torrent_nt, content.dir)], utp_only=True,
                     socket_buffer=UTP_LT_SOCKET_BUFFER)
    tseed = LtSeeder("utp-tcp-seeder", [(content.torrent_nt, content.dir)])
    useed.wait_ready()
    tseed.wait_ready()
    procs = []
    u0, u0_port = start_proxy("udp-proxy-0", UDP_PROXY, useed.port, 0)
    ud, ud_port = start_proxy("udp-proxy-%g" % DELAY_MS, UDP_PROXY, useed.port, DELAY_MS)
    td, td_port = start_proxy("tcp-proxy-%g" % DELAY_MS, PROXY, tseed.port, DELAY_MS)
    procs += [u0, ud, td]
    lt_extra = ["--utp-only"] + (["--socket-buffer", UTP_LT_SOCKET_BUFFER] if UTP_LT_SOCKET_BUFFER else [])
    rill_extra = ["--no-dht"]
    lat = "%g+%g ms" % (DELAY_MS, DELAY_MS)
    # (path, client, transport, port the leecher dials, proxy process or None)
    paths = [("direct", "rill", "uTP", useed.port, None), ("direct", "libtorrent", "uTP", useed.port, None),
             ("direct", "rill", "TCP", tseed.port, None),
             ("udp proxy 0 ms", "rill", "uTP", u0_port, u0), ("udp proxy 0 ms", "libtorrent", "uTP", u0_port, u0),
             ("proxy " + lat, "rill", "uTP", ud_port, ud), ("proxy " + lat, "libtorrent", "uTP", ud_port, ud),
             ("proxy " + lat, "rill", "TCP", td_port, td)]
    clients = available_clients(["rill", "libtorrent"])[0]
    paths = [p for p in paths if p[1] in clients]
    runs = {p[:3]: [] for p in paths}
    proxy_util, drops = {}, {}
    for rnd in range(ROUNDS):
        for label, client, transport, port, proc in rotate(paths, rnd):
            if out_of_time("utp", 120):
                break
            key = (label, client, transport)
            prepare_cache([content.path])
            before = useed.up_by_transport()
            pid = leaf(proc.pid, 1) if proc else None
            c0 = proc_cpu(pid) if pid else None
            d0 = udp_drops()
            tag = "%s-%s-%s-r%d" % (label.replace(" ", "").replace("+", "p"), client, transport, rnd + 1)
            r = run_leecher("utp", client, content, content.torrent_nt, os.path.join(WORK, "out"), tag,
                            peers=["127.0.0.1:%d" % port],
                            extra=rill_extra if client == "rill" else lt_extra if transport == "uTP" else [])
            d1 = udp_drops()
            if d0 is not None and d1 is not None:
                drops.setdefault(key, []).append(d1 - d0)
            if c0 is not None and r.wall > 0:
                proxy_util.setdefault(key, []).append((proc_cpu(pid) - c0) / r.wall)
            extra = {"transport": transport,
                     "udp_rcvbuf_drops": (d1 - d0) if d0 is not None and d1 is not None else None}
            if transport == "uTP":
                # The seeder's own account: the bytes left over uTP, none over TCP.
                time.sleep(0.3)  # its status is written every 0.1 s
                after = useed.up_by_transport()
                moved = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                extra["seeder_sent"] = moved
                utp_sent = moved.get("utp/plain", 0) + moved.get("utp/rc4", 0)
                tcp_sent = moved.get("tcp/plain", 0) + moved.get("tcp/rc4", 0)
                if r.ok and (tcp_sent > 0 or utp_sent < content.size * 0.5):
                    r.ok = False
                    say("    %s run %s: the seeder sent %d B over uTP and %d B over TCP: not counted" % (
                        client, tag, utp_sent, tcp_sent))
            if client == "libtorrent":
                res = lt_result(r)
                extra["lt_result"] = res
                if r.ok and transport == "uTP" and res.get("utp_peers", 0) < 1:
                    r.ok = False
                    say("    libtorrent run %s: no uTP peer in its RESULT (%s): not counted" % (tag, res))
            runs[key].append(r)
            record("utp", client, "%s %s" % (label, transport), r, content.size, r.ok, extra)
            say("    round %d %-15s %-10s %-3s %s" % (rnd + 1, label, client, transport, (
                "%.2f s  %.0f MB/s  cpu %.2f s  udp drops %s" % (
                    r.wall, content.size / 1e6 / r.wall, (r.user or 0) + (r.sys or 0), extra["udp_rcvbuf_drops"]))
                if r.ok else "FAILED"))
    useed.stop()
    tseed.stop()
    for p in procs:
        stop(p)
    emit(utp_table(paths, runs, proxy_util, drops, content.size))
    emit("   every leecher gets the seeder (or a proxy) as its one direct peer (no tracker). The uTP seeder is")
    emit("   python3-libtorrent with enable_incoming_tcp/enable_outgoing_tcp false: it closes a TCP connection at")
    emit("   once, so rill's TCP handshakes are refused and its dial ladder walks on to uTP. A uTP run counts only")
    emit("   if the seeder's own per-connection totals (polled every 0.1 s, so a connection's last moments are")
    emit("   missed) say more than half the bytes left over uTP and none over TCP (the libtorrent leecher has TCP")
    emit("   off too, and its RESULT must count a uTP peer).")
    emit("   The TCP rows come from an ordinary libtorrent seeder of the same content (TCP delay_proxy.py at %s)." % lat)
    if UTP_LT_SOCKET_BUFFER:
        emit("   The libtorrent leecher and the uTP seeder ask for %d-byte socket buffers (recv/send_socket_buffer_size)"
             % UTP_LT_SOCKET_BUFFER)
        emit("   as rill asks for on its UDP socket (rill: 2 MiB receive, 1 MiB send; the kernel caps both at")
        emit("   net.core.rmem_max/wmem_max, here %s/%s, and doubles what it grants)." % (
            sysctl("net/core/rmem_max"), sysctl("net/core/wmem_max")))
        emit("   With the OS default (UTP_LT_SOCKET_BUFFER=0) the kernel drops the tail of each")
        emit("   burst and libtorrent's uTP ran at ~4.5 MB/s here (so did rill before it raised SO_RCVBUF).")
    emit("   UDP drops = the kernel's UDP RcvbufErrors during the run (whole machine; median); proxy CPU = the")
    emit("   proxy process's CPU / wall: near 100% means the proxy, not the client, set the pace ('udp proxy 0 ms'")
    emit("   is the UDP proxy's own ceiling).")
    direct = {k[1:]: summarize(v, content.size) for k, v in runs.items() if k[0] == "direct"}
    ru, rt, lu = direct.get(("rill", "uTP")), direct.get(("rill", "TCP")), direct.get(("libtorrent", "uTP"))
    if ru and rt and ru["cpu"] != "-" and rt["cpu"] != "-":
        emit("   rill: uTP CPU / TCP CPU (direct, per GiB) = %.2f (aim: at most 2)" % (float(ru["cpu"]) / float(rt["cpu"])))
    if ru and lu:
        emit("   rill uTP / libtorrent uTP (direct, MB/s) = %.2f (aim: at least 1)" % (float(ru["mbs"]) / float(lu["mbs"])))
    far = {k[1:]: summarize(v, content.size) for k, v in runs.items() if k[0] == "proxy " + lat}
    ru, lu = far.get(("rill", "uTP")), far.get(("libtorrent", "uTP"))
    if ru and lu:
        emit("   rill uTP / libtorrent uTP (%s, MB/s) = %.2f" % (lat, float(ru["mbs"]) / float(lu["mbs"])))
    emit()


def case_encryption(ctx):
    content = ctx["c1"]
    emit("== encryption: %d MiB over TCP from a python3-libtorrent seeder that forces RC4 (MSE, RC4 only, both ways),"
         % (content.size >> 20))
    emit("   beside a plaintext one (encryption disabled): RC4's CPU cost")
    if not lt_available():
        emit("   python3-libtorrent missing: the encryption case needs it")
        return
    rc4 = LtSeeder("enc-rc4-seeder", [(content.torrent_nt, content.dir)], encryption="rc4")
    plain = LtSeeder("enc-plain-seeder", [(content.torrent_nt, content.dir)], encryption="disabled")
    rc4.wait_ready()
    plain.wait_ready()
    clients = available_clients(["rill", "libtorrent"])[0]
    # (seeder label, client, seeder, client arguments)
    combos = []
    if "rill" in clients:
        combos += [("plaintext", "rill", plain, ["--no-dht"]),
                   ("RC4 forced", "rill", rc4, ["--no-dht", "--encryption", "require"])]
    if "libtorrent" in clients:
        combos += [("plaintext", "libtorrent", plain, ["--encryption", "disabled"]),
                   ("RC4 forced", "libtorrent", rc4, ["--encryption", "rc4"])]
    runs = {c[:2]: [] for c in combos}
    for rnd in range(ROUNDS):
        for label, client, seeder, extra in rotate(combos, rnd):
            if out_of_time("encryption", 60):
                break
            prepare_cache([content.path])
            tag = "%s-%s-r%d" % (label.split()[0].lower(), client, rnd + 1)
            r = run_leecher("encryption", client, content, content.torrent_nt, os.path.join(WORK, "out"), tag,
                            peers=["127.0.0.1:%d" % seeder.port], extra=extra)
            rec = {}
            if client == "libtorrent":
                res = lt_result(r)
                rec["lt_result"] = res
                want_rc4 = label != "plaintext"
                if r.ok and (res.get("rc4_peers", 0) > 0) != want_rc4:
                    r.ok = False
                    say("    libtorrent run %s: RC4 peers %s, expected %s: not counted" % (
                        tag, res.get("rc4_peers"), "some" if want_rc4 else "none"))
            runs[(label, client)].append(r)
            record("encryption", client, label, r, content.size, r.ok, rec)
            say("    round %d %-10s %-10s %s" % (rnd + 1, label, client, ("%.2f s  %.0f MB/s  cpu %.2f s" % (
                r.wall, content.size / 1e6 / r.wall, (r.user or 0) + (r.sys or 0))) if r.ok else "FAILED"))
    rc4.stop()
    plain.stop()
    rows = []
    for label, client, _, _ in combos:
        s = summarize(runs[(label, client)], content.size)
        if s is None:
            rows.append([label, client, "0/%d" % len(runs[(label, client)]), "failed", "-", "-", "-", "-", "-"])
        else:
            rows.append([label, client, s["n"], s["wall"], s["range"], s["mbs"], s["cpu"], s["rss"], s["others"]])
    emit(fmt_table(["seeder", "client", "ok", "wall s", "min-max", "MB/s", "CPU s/GiB", "peak RSS MiB",
                    "other load"], rows))
    emit("   RC4 seeder: out_enc_policy/in_enc_policy forced, allowed_enc_level rc4, prefer_rc4 (it drops plaintext")
    emit("   and plaintext-inside-MSE connections, so a completed run was RC4 both ways); rill runs with")
    emit("   --encryption require there, its default (prefer) against the plaintext seeder (pe_disabled: plain")
    emit("   BitTorrent). The libtorrent leecher's RESULT counts its RC4 connections (checked). Direct peers, TCP.")
    s_plain = summarize(runs.get(("plaintext", "rill"), []), content.size)
    s_rc4 = summarize(runs.get(("RC4 forced", "rill"), []), content.size)
    if s_plain and s_rc4 and s_plain["cpu"] != "-" and s_rc4["cpu"] != "-":
        emit("   rill: RC4 costs %.2f CPU s/GiB over plaintext (%.2fx)" % (
            float(s_rc4["cpu"]) - float(s_plain["cpu"]), float(s_rc4["cpu"]) / float(s_plain["cpu"])))
    emit()


def remove_rill_resume(content):
    """rill keeps `.rill-<info-hash>.resume` beside the data (older versions: `.<name>.rill-resume`); a seeder
    run without it checks every piece."""
    remove_rill_resume_in(content.dir)


def remove_rill_resume_in(directory):
    for name in os.listdir(directory):
        new_style = name.startswith(".rill-") and (name.endswith(".resume") or name.endswith(".resume.tmp"))
        if new_style or name.endswith(".rill-resume") or name.endswith(".rill-resume.tmp"):
            os.unlink(os.path.join(directory, name))


def rill_seed_available(content):
    """Run `rill seed` briefly: it either reports that seeding is not available yet, or starts (then we stop it)."""
    port = free_port()
    p = spawn("upload-rill-seed-probe", [RILL, "seed", content.torrent_nt, "-d", content.dir, "--no-ui", "--port",
                                          port], life=60)
    try:
        wait_until("rill seed to start or refuse",
                   lambda: p.poll() is not None or port_open(port), 30, 0.1)
    except RuntimeError:
        pass
    alive = p.poll() is None
    stop(p)
    remove_rill_resume(content)
    with open(os.path.join(LOGS, "upload-rill-seed-probe.log"), errors="replace") as f:
        text = f.read().strip()
    return alive, text.splitlines()[-1] if text else ""


def case_upload(ctx):
    content = ctx["c1"]
    emit("== upload: each seeder in turn serves one python3-libtorrent leecher (%d MiB, leecher dials the seeder)" % (
        content.size >> 20))
    seeders = []
    ok, why = rill_seed_available(content)
    if ok:
        seeders.append("rill")
    else:
        emit("   rill seed not available (it said: %s): rill skipped in this case" % why)
    if have("aria2c"):
        seeders.append("aria2c")
    if have("transmission-daemon"):
        seeders.append("transmission")
    seeders.append("libtorrent")
    if not lt_available():
        emit("   python3-libtorrent missing: the upload case needs it as the leecher")
        return
    pieces = (content.size + PIECE - 1) // PIECE
    runs = {s: [] for s in seeders}
    for rnd in range(ROUNDS):
        for sname in rotate(seeders, rnd):
            if out_of_time("upload", 90):
                break
            prepare_cache([content.path])
            tag = "%s-r%d" % (sname, rnd + 1)
            port = free_port()
            tr = None
            if sname == "rill":
                # Like the others (aria2c -V, transmission verify, libtorrent's check), rill checks the data
                # itself: remove the resume file an earlier rill run left beside it.
                remove_rill_resume(content)
                cmd = [RILL, "seed", content.torrent_nt, "-d", content.dir, "--no-ui", "--port", port]
            elif sname == "aria2c":
                cmd = ["aria2c", "-V", "--seed-ratio=0.0", "--enable-dht=false", "--enable-dht6=false",
                       "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--listen-port=%d" % port,
                       "--dir=" + content.dir, "--disable-ipv6=true", "--summary-interval=0",
                       "--console-log-level=warn", "--file-allocation=none", content.torrent_nt]
            elif sname == "transmission":
                tr = Transmission("upload-transmission-" + tag, content.dir)
                port = tr.peer_port
                cmd = tr.cmd()
            else:
                cmd = [PY, LTPEER, "seed", "--port", port, "--torrent", "%s:%s" % (content.torrent_nt, content.dir),
                       "--status", os.path.join(WORK, "upload-lt.status.json"), "--max-life",
                       int(max(10, remaining()))]
            sp = spawn("upload-seeder-" + tag, cmd)
            try:
                if tr is not None:
                    wait_until("transmission rpc", tr.rpc_up, 30, 0.05, [sp])
                    tr.rpc("torrent-add", {"filename": content.torrent_nt, "download-dir": content.dir})
                    tr.rpc("torrent-verify", {})
                wait_until("%s to advertise every piece" % sname,
                           lambda: probe_complete(port, content.infohash, pieces), 300, 0.2, [sp])
            except RuntimeError as e:
                emit("   %s round %d: seeder not ready: %s" % (sname, rnd + 1, e))
                stop(sp)
                continue
            spid = leaf(sp.pid, 1)
            c0 = proc_cpu(spid)
            r = run_leecher("upload", "libtorrent", content, content.torrent_nt, os.path.join(WORK, "out"), tag,
                            peers=["127.0.0.1:%d" % port])
            c1 = proc_cpu(spid)
            st = proc_status(spid)
            r.seed_cpu = (c1 - c0) if (c0 is not None and c1 is not None) else None
            r.seed_total_cpu = c1
            r.seed_hwm = st.get("VmHWM", 0)
            r.seed_anon = st.get("RssAnon", 0)
            stop(sp, pid=spid)
            runs[sname].append(r)
            record("upload", sname, "seeder", r, content.size, r.ok,
                   {"seed_cpu": r.seed_cpu, "seed_total_cpu": c1, "seed_hwm_kib": r.seed_hwm})
            say("    round %d %-12s %s" % (rnd + 1, sname, ("%.2f s  %.0f MB/s  seeder cpu %.2f s  rss %s MiB" % (
                r.wall, content.size / 1e6 / r.wall, r.seed_cpu or 0, mib(r.seed_hwm))) if r.ok else "FAILED"))
    rows = []
    for sname in seeders:
        ok = [r for r in runs[sname] if r.ok]
        if not ok:
            rows.append([sname, "0/%d" % len(runs[sname]), "failed" if runs[sname] else "not run", "-", "-", "-", "-",
                         "-"])
            continue
        wall = statistics.median(r.wall for r in ok)
        cpu = statistics.median(r.seed_cpu / (content.size / GIB) for r in ok if r.seed_cpu is not None)
        tot = statistics.median(r.seed_total_cpu for r in ok if r.seed_total_cpu is not None)
        rows.append([sname, "%d/%d" % (len(ok), len(runs[sname])), "%.2f" % wall, "%.0f" % (content.size / 1e6 / wall),
                     "%.2f" % cpu, "%.1f" % tot, mib(max(r.seed_hwm for r in ok)),
                     "%.2f" % statistics.median(r.others for r in ok)])
    emit(fmt_table(["seeder", "ok", "leecher wall s", "MB/s", "seeder CPU s/GiB (serving)",
                    "seeder CPU s total (incl. check)", "seeder peak RSS MiB", "other load"], rows))
    emit("   wall = libtorrent leecher process start to exit; seeder CPU from /proc between leecher start and end;")
    emit("   peak RSS = the seeder's VmHWM (whole life, including its initial data check).")
    emit()


def crossing(points, level):
    """First time at which a (t, bytes) series reaches level, interpolated between samples."""
    prev = None
    for t, b in points:
        if b >= level:
            if prev is None or b == prev[1]:
                return t
            return prev[0] + (t - prev[0]) * (level - prev[1]) / (b - prev[1])
        prev = (t, b)
    return None


def completion_time(r):
    """When the leecher said it was complete: rill's summary line, the libtorrent script's RESULT line, or exit."""
    for t, line in r.lines:
        if line.startswith("done:") or line.startswith("RESULT "):
            return t
    return r.wall


def case_endgame(ctx):
    content = ctx["c1"]
    emit("== endgame: %d MiB from a fast (%.1f MB/s) and a slow (%.2f MB/s) libtorrent seeder, both given directly" % (
        content.size >> 20, ENDGAME_FAST / 1e6, ENDGAME_SLOW / 1e6))
    fast = LtSeeder("eg-fast", [(content.torrent_nt, content.dir)], upload_limit=ENDGAME_FAST)
    slow = LtSeeder("eg-slow", [(content.torrent_nt, content.dir)], upload_limit=ENDGAME_SLOW)
    # A 0 ms proxy in front of each seeder counts the bytes it passes with 50 ms resolution (libtorrent's own
    # counters, torrent and per peer, move once a second).
    counters = {}
    for s in (fast, slow):
        ready = os.path.join(WORK, s.name + ".proxy.port")
        stats = os.path.join(WORK, s.name + ".proxy.stats")
        for f in (ready, stats):
            if os.path.exists(f):
                os.unlink(f)
        p = spawn(s.name + "-counter", [PY, PROXY, "--listen", "0", "--target", s.port, "--delay-ms", 0,
                                        "--ready-file", ready, "--stats", stats,
                                        "--max-life", int(max(10, remaining()))])
        counters[s.name] = (p, int(wait_until("counting proxy", lambda: read_json(ready), 20, 0.05, [p])), stats)
    fast.wait_ready()
    slow.wait_ready()
    clients = [c for c in ENDGAME_CLIENTS
               if c in available_clients(ENDGAME_CLIENTS)[0] and c in ("rill", "libtorrent", "rqbit")]
    rows = []
    per_client = {c: [] for c in clients}
    size = content.size

    def read_stats(path):
        out = []
        try:
            with open(path) as f:
                for line in f:
                    a = line.split()
                    if len(a) == 3:
                        out.append((float(a[0]), int(a[1])))
        except OSError:
            pass
        return out

    for rnd in range(ROUNDS):
        for c in rotate(clients, rnd):
            if out_of_time("endgame", 120):
                break
            prepare_cache([content.path])
            up0 = {s.name: s.payload_up() for s in (fast, slow)}
            r = run_leecher("endgame", c, content, content.torrent_nt, os.path.join(WORK, "out"), "r%d" % (rnd + 1),
                            peers=["127.0.0.1:%d" % counters[fast.name][1], "127.0.0.1:%d" % counters[slow.name][1]])
            e0 = r.epoch0
            # The seeders' payload counters move once a second: let them settle before reading the totals.
            time.sleep(1.5)
            totals = {s.name: s.payload_up() - up0[s.name] for s in (fast, slow)}
            live = {}
            for name, (_, _, stats) in counters.items():
                pts = read_stats(stats)
                before = [p for p in pts if p[0] <= e0]
                base = before[-1][1] if before else 0
                live[name] = [(t - e0, b - base) for t, b in pts if t > e0]
            # Bytes on the wire to the leecher from both seeders over time (step functions, 50 ms samples).
            times = sorted(set(t for v in live.values() for t, _ in v))
            idx = {k: 0 for k in live}
            cur = {k: 0 for k in live}
            series = []
            for t in times:
                for k, v in live.items():
                    while idx[k] < len(v) and v[idx[k]][0] <= t:
                        cur[k] = v[idx[k]][1]
                        idx[k] += 1
                series.append((t, sum(cur.values())))
            t10, t90, t95 = (crossing(series, f * size) for f in (0.10, 0.90, 0.95))
            done_t = completion_time(r)
            steady = 0.8 * size / (t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else None
            last5 = done_t - t95 if t95 is not None else None
            ideal = 0.05 * size / steady if steady else None
            # rill's own progress lines (every few seconds): first one at or past 95%.
            line95 = None
            waste_line = ""
            lt_redundant = None
            for t, line in r.lines:
                head = line.replace("[stopping]", "").strip().split("%")[0]
                try:
                    if line95 is None and float(head) >= 95.0:
                        line95 = t
                except ValueError:
                    pass
                m = re.search(r"wasted: .*\((\d+) bytes\)", line)
                if m:
                    waste_line = "%s B" % m.group(1)
                if line.startswith("RESULT "):
                    lt_redundant = json.loads(line[7:]).get("redundant")
            over = sum(totals.values()) - size
            res = {
                "ok": r.ok, "wall": r.wall, "done": done_t, "t95": t95, "last5": last5, "steady": steady,
                "ideal": ideal, "fast": totals.get(fast.name, 0), "slow": totals.get(slow.name, 0), "over": over,
                "line95": line95, "waste_line": waste_line, "lt_redundant": lt_redundant, "others": r.others,
            }
            per_client[c].append(res)
            record("endgame", c, "fast+slow", r, size, r.ok, res)
            say("    round %d %-10s %s" % (rnd + 1, c, (
                "complete at %.2f s, last 5%% %.2f s (%.2f s at the steady rate), slow seeder sent %.1f MB, "
                "seeders sent %+d B beyond the size" % (done_t, last5 if last5 is not None else -1,
                                                        ideal or -1, res["slow"] / 1e6, over))
                if r.ok else "FAILED"))
    fast.stop()
    slow.stop()
    for p, _, _ in counters.values():
        stop(p)
    for c in clients:
        for i, res in enumerate(per_client[c]):
            if not res["ok"]:
                rows.append([c, i + 1, "failed"] + ["-"] * 9)
                continue
            if res["waste_line"]:
                waste = res["waste_line"]
            elif res["lt_redundant"] is not None:
                waste = "%s B redundant" % res["lt_redundant"]
            elif c == "rill" and any(x["waste_line"] for x in per_client[c]):
                waste = "0 (no line)"
            else:
                waste = "-"
            f = lambda v, fmt: (fmt % v) if v is not None else "-"
            rows.append([c, i + 1, "%.2f" % res["done"], f(res["steady"] and res["steady"] / 1e6, "%.0f"),
                         f(res["last5"], "%.2f"), f(res["ideal"], "%.2f"),
                         f(res["last5"] / res["ideal"] if res["last5"] is not None and res["ideal"] else None,
                           "%.1fx"),
                         "%.1f" % (res["slow"] / 1e6), "%d" % res["over"], f(res["line95"], "%.1f"), waste,
                         "%.2f" % res["others"]])
    emit(fmt_table(["client", "round", "complete at s", "steady MB/s", "last 5% s", "at steady rate s", "ratio",
                    "slow sent MB", "sent beyond size B", "95% line at s", "waste (client's own)", "other load"],
                   rows))
    emit("   steady MB/s = rate between 10% and 90% of the bytes, counted on the wire by a 0 ms proxy in front of each")
    emit("   seeder (50 ms samples); last 5% = from the moment those reach 95% of the size to the leecher's completion line")
    emit("   (rill's summary, the libtorrent script's RESULT); ratio = last 5% / (5% at the steady rate): 1.0x means")
    emit("   no tail. 'sent beyond size' = both seeders' payload counters minus the size (endgame duplicates,")
    emit("   cancelled blocks already sent). '95% line at' = first rill --no-ui progress line at >= 95%: those come")
    emit("   every 5 s, too coarse for the tail, hence the seeder-side timing.")
    if "rill" in per_client and not any(res["waste_line"] for res in per_client["rill"]):
        emit("   rill printed no 'wasted: ... (N bytes)' line in any round (none yet, or none wasted).")
    else:
        emit("   waste (client's own) = rill's 'wasted: ... (N bytes)' summary line (printed only when it wasted")
        emit("   something); libtorrent's total_redundant_bytes.")
    emit()


# ---------------------------------------------------------------------------------------------------------------
# Many torrents: what 1, 10 and 100 small torrents loaded cost an idle `rill seed`, and that it still serves them


MANY_COUNTS = [int(x) for x in os.environ.get("MANY_COUNTS", "1 10 100").split()]
MANY_IDLE = env_float("MANY_IDLE", 30)
MANY_SETTLE = env_float("MANY_SETTLE", 3)
MANY_LEECHERS = env_int("MANY_LEECHERS", 4)
MANY_PIECE_KIB = env_int("MANY_PIECE_KIB", 0)
MANY_LEECH_TIMEOUT = env_float("MANY_LEECH_TIMEOUT", 60)
MANY_READY_TIMEOUT = env_float("MANY_READY_TIMEOUT", 120)


def info_hash_of(data):
    """SHA-1 (hex) of the raw bytes of a .torrent's info dict, and the number of pieces."""
    if data[:1] != b"d":
        raise ValueError("not a bencoded dict")
    i = 1
    while data[i:i + 1] != b"e":
        key, j = bdecode(data, i)
        value, end = bdecode(data, j)
        if key == b"info":
            return hashlib.sha1(data[j:end]).hexdigest(), len(value[b"pieces"]) // 20
        i = end
    raise ValueError("no info dict")


class Small:
    """One small single-file torrent of the many case: data at DATA/<name>, its .torrent beside the others."""


def make_small_torrents(n, data, tdir):
    """n files of 1-4 MiB (most with a short last piece) and a torrent each, made with `rill create` (without a
    tracker: the leechers are given rill's address; nothing is announced). Falls back to libtorrent's creator
    when this rill has no `create`."""
    shutil.rmtree(tdir, ignore_errors=True)
    os.makedirs(tdir)
    os.makedirs(data, exist_ok=True)
    t0 = time.monotonic()
    creator = "rill create" + (" --piece-size %dk" % MANY_PIECE_KIB if MANY_PIECE_KIB else " (default piece size)")
    use_rill = True
    out = []
    for i in range(n):
        s = Small()
        s.name = "many-%03d.bin" % i
        s.path = os.path.join(data, s.name)
        s.size = ((1 + i % 4) << 20) + 1000 * i
        s.torrent = os.path.join(tdir, "many-%03d.torrent" % i)
        if not (os.path.exists(s.path) and os.path.getsize(s.path) == s.size):
            with open(s.path, "wb") as f:
                f.write(os.urandom(s.size))
        if use_rill:
            cmd = [RILL, "create", s.path, "-o", s.torrent]
            if MANY_PIECE_KIB:
                cmd += ["--piece-size", "%dk" % MANY_PIECE_KIB]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10, min(120, remaining())))
            if r.returncode != 0:
                if i > 0:
                    raise RuntimeError("rill create %s failed: %s" % (s.path, r.stderr.strip()))
                use_rill = False
                creator = "libtorrent's creator, %d KiB pieces (rill create said: %s)" % (
                    MANY_PIECE_KIB or 64, (r.stderr.strip().splitlines() or ["?"])[-1])
        if not use_rill:
            subprocess.run([PY, MKTORRENT, s.path, str((MANY_PIECE_KIB or 64) << 10), s.torrent], capture_output=True,
                           check=True, timeout=max(10, min(120, remaining())))
        with open(s.torrent, "rb") as f:
            s.infohash, s.pieces = info_hash_of(f.read())
        out.append(s)
    say("  %d small torrents (%.0f MiB in all) made with %s in %.1f s" % (
        n, sum(s.size for s in out) / 1048576.0, creator, time.monotonic() - t0))
    return out, creator


def idle_window(p, pid, seconds, what, name, load, res):
    """Samples process `pid` (started as `p`) over `seconds` of idleness into `res`: CPU (% of a core, from
    utime+stime and from schedstat), wakeups a second, other load, peak/current/anonymous RSS."""
    a = task_sample(pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if p.poll() is not None:
            raise RuntimeError("%s exited during the idle window; see %s.log" % (what, name))
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
    b = task_sample(pid)
    dt = b[0] - a[0]
    res["idle_s"] = dt
    res["idle_cpu_pct"] = 100.0 * (b[1] - a[1]) / dt if a[1] is not None and b[1] is not None else None
    res["idle_sched_pct"] = 100.0 * (b[2] - a[2]) / 1e9 / dt if a[2] is not None and b[2] is not None else None
    res["idle_wakeups"] = (b[3] - a[3]) / dt if a[3] is not None and b[3] is not None else None
    res["idle_others"] = load.others()
    st = proc_status(pid)
    res["hwm_idle_kib"] = st.get("VmHWM", 0)
    res["rss_idle_kib"] = st.get("VmRSS", 0)
    res["anon_idle_kib"] = st.get("RssAnon", 0)


def task_sample(pid):
    """(monotonic time, utime+stime s of the whole process, on-CPU ns summed over its threads or None,
    context switches summed over its threads): the process's cost since it started."""
    now = time.monotonic()
    cpu = proc_cpu(pid)
    ns = 0
    switches = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return now, cpu, None, None
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            ns = None if ns == 0 else ns
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split(":")[1])
        except (OSError, ValueError):
            pass
    return now, cpu, (ns or None), switches


def seed_help_has(flag):
    try:
        r = subprocess.run([RILL, "seed", "--help"], capture_output=True, text=True, timeout=10)
        return flag in r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired):
        return False


def many_run(smalls, n, data):
    """One `rill seed` with the first n small torrents: its data check, an idle window, then a few libtorrent
    leechers at once. Returns a dict of figures, or one with "skipped" (why) when rill refused to start."""
    loaded = smalls[:n]
    res = {"count": n, "bytes": sum(s.size for s in loaded), "leechers": [], "ok": False}
    remove_rill_resume_in(data)  # every count checks all its data, the same work per byte
    prepare_cache([s.path for s in loaded])
    wait_quiet()
    port = free_port()
    name = "many-%d-rill-seed" % n
    cmd = [RILL, "seed"] + [s.torrent for s in loaded] + ["-d", data, "--no-ui", "--port", port, "--bind",
                                                          "127.0.0.1"]
    if seed_help_has("--no-dht"):
        cmd.append("--no-dht")
    t0 = time.monotonic()
    p = spawn(name, cmd, life=MANY_READY_TIMEOUT + MANY_SETTLE + MANY_IDLE + MANY_LEECH_TIMEOUT + 60)
    try:
        wait_until("rill seed (%d torrents) to listen" % n, lambda: p.poll() is not None or port_open(port),
                   60, 0.05)
        if p.poll() is not None:
            with open(os.path.join(LOGS, name + ".log"), errors="replace") as f:
                lines = f.read().strip().splitlines()
            res["skipped"] = "exit %s: %s" % (p.returncode, lines[-1] if lines else "no output")
            return res
        pid = wait_until("rill's pid", lambda: leaf(p.pid, 1), 10, 0.02, [p])
        ready_by = t0 + MANY_READY_TIMEOUT
        for s in loaded:
            wait_until("rill seed to advertise every piece of %s (MANY_READY_TIMEOUT=%g s)" % (
                s.name, MANY_READY_TIMEOUT), lambda: probe_complete(port, s.infohash, s.pieces),
                max(1.0, ready_by - time.monotonic()), 0.05, [p])
        res["ready_s"] = time.monotonic() - t0
        st = proc_status(pid)
        res["hwm_check_kib"] = st.get("VmHWM", 0)
        # The probes' connections are closed; let rill see them go before the window opens.
        time.sleep(MANY_SETTLE)
        load = Load()
        idle_window(p, pid, MANY_IDLE, "rill seed", name, load, res)

        # A few leechers at once (the same number whatever the count), spread over the loaded torrents: each on
        # its own torrent when there are enough, several on one otherwise.
        k = max(1, MANY_LEECHERS)
        picks = [loaded[(j * n) // k] for j in range(k)]
        c0 = proc_cpu(pid)
        leechers = []
        for j, s in enumerate(picks):
            out = os.path.join(WORK, "many", "out-%d" % j)
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            lname = "many-%d-leecher-%d" % (n, j)
            lp = spawn(lname, [PY, LTPEER, "leech", "--torrent", s.torrent, "--save", out, "--peer",
                               "127.0.0.1:%d" % port, "--max-life", int(MANY_LEECH_TIMEOUT)],
                       life=MANY_LEECH_TIMEOUT + 10)
            leechers.append((lp, lname, s, out))
        try:
            wait_until("the leechers to finish", lambda: all(x[0].poll() is not None for x in leechers),
                       MANY_LEECH_TIMEOUT + 15, 0.1)
        except RuntimeError as e:
            say("    %s" % e)
        for lp, lname, s, out in leechers:
            stop(lp)
            elapsed = None
            with open(os.path.join(LOGS, lname + ".log"), errors="replace") as f:
                for line in f:
                    if line.startswith("RESULT "):
                        try:
                            elapsed = float(json.loads(line[7:])["elapsed"])
                        except (ValueError, KeyError):
                            pass
            same = same_content(os.path.join(out, s.name), s.path, s.size)
            ok = lp.returncode == 0 and elapsed is not None and elapsed > 0 and same
            res["leechers"].append({"torrent": s.name, "size": s.size, "exit": lp.returncode, "elapsed": elapsed,
                                    "identical": same, "ok": ok})
            if not ok:
                say("    leecher of %s FAILED: exit %s, %s; see %s.log" % (
                    s.name, lp.returncode, "byte-identical" if same else "data differs or is missing", lname))
            shutil.rmtree(out, ignore_errors=True)
        c1 = proc_cpu(pid)
        res["serve_cpu_s"] = (c1 - c0) if c0 is not None and c1 is not None else None
        st = proc_status(pid)
        res["hwm_end_kib"] = st.get("VmHWM", 0)
        res["alive"] = p.poll() is None
        res["ok"] = res["alive"] and all(x["ok"] for x in res["leechers"])
        stop(p, pid=pid)
    finally:
        stop(p)
        remove_rill_resume_in(data)
    return res


def case_many(ctx):
    emit("== many: rill seed with %s small torrents loaded (1-4 MiB each, loopback, no tracker), idle %g s, then "
         "%d libtorrent leechers at once" % ("/".join(str(c) for c in MANY_COUNTS), MANY_IDLE, MANY_LEECHERS))
    if not lt_available():
        emit("   python3-libtorrent missing: the many case needs it for the leechers")
        return
    root = os.path.join(WORK, "many")
    data = os.path.join(root, "data")
    smalls, creator = make_small_torrents(max(MANY_COUNTS), data, os.path.join(root, "torrents"))
    rows = []
    for n in MANY_COUNTS:
        if out_of_time("many", MANY_IDLE + MANY_SETTLE + 60):
            break
        try:
            res = many_run(smalls, n, data)
        except RuntimeError as e:
            emit("   %d torrents: FAILED: %s" % (n, e))
            rows.append([n, "%.0f" % (sum(s.size for s in smalls[:n]) / 1048576.0), "failed"] + ["-"] * 7)
            continue
        record_many(res)
        mb = "%.0f" % (res["bytes"] / 1048576.0)
        if "skipped" in res:
            emit("   %d torrents: rill seed did not start (%s)" % (n, res["skipped"]))
            rows.append([n, mb, "not available"] + ["-"] * 7)
            continue
        done = [x for x in res["leechers"] if x["ok"]]
        rates = [x["size"] / 1e6 / x["elapsed"] for x in done]
        f = lambda v, fmt: (fmt % v) if v is not None else "-"
        rows.append([n, mb, "%.1f" % res["ready_s"], mib(res["hwm_idle_kib"]), mib(res["hwm_end_kib"]),
                     f(res["idle_cpu_pct"], "%.3f"), f(res["idle_sched_pct"], "%.4f"), f(res["idle_wakeups"], "%.1f"),
                     "%.1f" % statistics.median(rates) if rates else "-",
                     "%d/%d" % (len(done), len(res["leechers"]))])
        say("    %d torrents: ready %.1f s, peak RSS %s MiB, idle CPU %s%% (schedstat %s%%), leechers %d/%d" % (
            n, res["ready_s"], mib(res["hwm_end_kib"]), f(res["idle_cpu_pct"], "%.3f"),
            f(res["idle_sched_pct"], "%.4f"), len(done), len(res["leechers"])))
    emit(fmt_table(["torrents", "data MiB", "ready s", "peak RSS MiB (idle)", "peak RSS MiB (end)", "idle CPU %",
                    "idle CPU % (sched)", "wakeups/s", "leecher MB/s", "leechers ok"], rows))
    emit("   torrents made with %s; data hot in the page cache; every count checks all its data (no resume file)." %
         creator)
    emit("   ready = rill start to every torrent advertising all its pieces (a handshake probe per torrent).")
    emit("   peak RSS = rill's VmHWM: (idle) after the check and the idle window, (end) after serving the leechers.")
    emit("   idle CPU = rill's utime+stime over a %g s window %g s after ready, as %% of one core (one clock tick is" % (
        MANY_IDLE, MANY_SETTLE))
    emit("   %.3f%% of it); (sched) = the same from /proc/PID/task/*/schedstat (ns); wakeups/s = context switches." % (
        100.0 / TICK / MANY_IDLE))
    emit("   leecher MB/s = median over the leechers of size / libtorrent's own time from adding the torrent to")
    emit("   every piece verified (small torrents: connection set-up and request ramp-up dominate); leechers ok =")
    emit("   exited 0 with byte-identical data. Aim (issue 10): 100 torrents under 16 MiB RSS, under 0.1% idle.")
    emit()


def record_many(res):
    row = {"case": "many", "client": "rill", "variant": "%d torrents" % res["count"]}
    row.update(res)
    with open(RUNS, "a") as f:
        f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# daemon: `rill daemon` beside transmission-daemon with the same 1, 10 and 100 small torrents loaded and seeding
# (no peers, no tracker): peak and current RSS, idle CPU, and how long a `torrent-get` of every torrent takes


DAEMON_COUNTS = [int(x) for x in os.environ.get("DAEMON_COUNTS", "1 10 100").split()]
DAEMON_IDLE = env_float("DAEMON_IDLE", 30)
DAEMON_SETTLE = env_float("DAEMON_SETTLE", 3)
DAEMON_REQUESTS = env_int("DAEMON_REQUESTS", 50)
DAEMON_READY_TIMEOUT = env_float("DAEMON_READY_TIMEOUT", 180)
DAEMONS = ["rill", "transmission"]
# What `transmission-remote -l` asks for (Transmission 3.00's list keys, as it sends them).
LIST_FIELDS = ["error", "errorString", "eta", "id", "isFinished", "leftUntilDone", "name", "peersGettingFromUs",
               "peersSendingToUs", "rateDownload", "rateUpload", "sizeWhenDone", "status", "uploadRatio"]


class RpcClient:
    """Transmission RPC over one keep-alive HTTP/1.1 connection, with the X-Transmission-Session-Id handshake.
    `connects` counts the TCP connections it opened (a server that closes a kept-alive connection shows here)."""

    def __init__(self, port):
        self.port = port
        self.conn = None
        self.session = None
        self.connects = 0
        self.last_bytes = 0

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, method, arguments=None, timed=None):
        """One request; its `arguments`. timed: a list to append the seconds from sending the request (from
        connecting, when this request opened the connection) to the last byte of the answer to (the answer that
        counted, after any 409)."""
        body = json.dumps({"method": method, "arguments": arguments or {}}).encode()
        for _ in range(4):
            t0 = time.perf_counter()
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self.conn.connect()
                self.connects += 1
            else:
                t0 = time.perf_counter()
            headers = {"Content-Type": "application/json"}
            if self.session:
                headers["X-Transmission-Session-Id"] = self.session
            try:
                self.conn.request("POST", "/transmission/rpc", body, headers)
                resp = self.conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
            except (http.client.HTTPException, OSError):
                self.close()  # a kept-alive connection the server closed: open another
                continue
            if resp.will_close:
                self.close()
            if resp.status == 409:
                self.session = resp.getheader("X-Transmission-Session-Id")
                continue
            if resp.status != 200:
                raise RuntimeError("RPC %s on port %d: HTTP %d: %s" % (method, self.port, resp.status, data[:200]))
            try:
                j = json.loads(data)
            except ValueError:
                raise RuntimeError("RPC %s on port %d: not JSON: %r" % (method, self.port, data[:200]))
            if j.get("result") != "success":
                raise RuntimeError("RPC %s on port %d: %s" % (method, self.port, j.get("result")))
            if timed is not None:
                timed.append(dt)
            self.last_bytes = len(data)
            return j.get("arguments") or {}
        raise RuntimeError("RPC %s on port %d: no answer after 4 tries" % (method, self.port))

    def up(self):
        try:
            self.call("session-get")
            return True
        except (OSError, RuntimeError, http.client.HTTPException):
            self.close()
            return False


def daemon_add_all(rpc, loaded, data):
    """torrent-add of every .torrent (metainfo, base64) into `data`; the ids in the order of `loaded`."""
    ids = []
    for s in loaded:
        with open(s.torrent, "rb") as f:
            meta = base64.b64encode(f.read()).decode()
        a = rpc.call("torrent-add", {"metainfo": meta, "download-dir": data, "paused": False})
        added = a.get("torrent-added") or a.get("torrent-duplicate")
        if not added or "id" not in added:
            raise RuntimeError("torrent-add of %s answered %s" % (s.name, a))
        ids.append(added["id"])
    return ids


def daemon_seeding(rpc, n):
    """True once the daemon lists n torrents, each seeding (status 6) with all its data (percentDone 1)."""
    ts = rpc.call("torrent-get", {"fields": ["id", "name", "status", "percentDone", "error", "errorString"]}).get(
        "torrents", [])
    for t in ts:
        if t.get("error"):
            raise RuntimeError("%s: error %s: %s" % (t.get("name"), t.get("error"), t.get("errorString")))
    return len(ts) == n and all(t.get("status") == 6 and t.get("percentDone") == 1 for t in ts)


def daemon_run(daemon, loaded, data, rnd):
    """One daemon with the torrents of `loaded` added over its RPC: the time until all seed, then an idle window
    (CPU, RSS), then DAEMON_REQUESTS torrent-get requests of LIST_FIELDS for all torrents on one connection."""
    n = len(loaded)
    res = {"case": "daemon", "client": daemon, "variant": "%d torrents" % n, "count": n, "round": rnd,
           "bytes": sum(s.size for s in loaded), "ok": False}
    name = "daemon-%d-%s-r%d" % (n, daemon, rnd)
    remove_rill_resume_in(data)  # every run checks all its data: no rill resume file, a fresh Transmission config
    prepare_cache([s.path for s in loaded])
    wait_quiet()
    life = DAEMON_READY_TIMEOUT + DAEMON_SETTLE + DAEMON_IDLE + 180
    if daemon == "rill":
        state = os.path.join(WORK, "daemon", "state-" + name)
        shutil.rmtree(state, ignore_errors=True)
        port = free_port()
        cmd = [RILL, "daemon", "-d", data, "--state-dir", state, "--rpc-bind", "127.0.0.1:%d" % port, "--port", "0",
               "--bind", "127.0.0.1", "--no-dht"]
    else:
        tr = Transmission(name, data)
        port = tr.rpc_port
        cmd = tr.cmd()
    t0 = time.monotonic()
    p = spawn(name, cmd, life=life)
    rpc = RpcClient(port)
    try:
        wait_until("%s's RPC on port %d" % (daemon, port), rpc.up, 60, 0.05, [p])
        pid = wait_until("%s's pid" % daemon, lambda: leaf(p.pid, 1), 10, 0.02, [p])
        t_up = time.monotonic()
        daemon_add_all(rpc, loaded, data)
        res["add_s"] = time.monotonic() - t_up
        wait_until("%s to seed all %d torrents (DAEMON_READY_TIMEOUT=%g s)" % (daemon, n, DAEMON_READY_TIMEOUT),
                   lambda: daemon_seeding(rpc, n), DAEMON_READY_TIMEOUT, 0.2, [p])
        res["ready_s"] = time.monotonic() - t0
        res["hwm_ready_kib"] = proc_status(pid).get("VmHWM", 0)
        rpc.close()  # no RPC client during the idle window
        time.sleep(DAEMON_SETTLE)
        load = Load()
        idle_window(p, pid, DAEMON_IDLE, daemon, name, load, res)
        try:
            res["threads"] = len(os.listdir("/proc/%d/task" % pid))
        except OSError:
            res["threads"] = None

        # torrent-get latency: the handshake (and one untimed full answer) first, then the timed requests.
        rpc = RpcClient(port)
        rpc.call("torrent-get", {"fields": LIST_FIELDS})
        c0 = rpc.connects
        load = Load()
        timed = []
        for _ in range(DAEMON_REQUESTS):
            got = rpc.call("torrent-get", {"fields": LIST_FIELDS}, timed=timed)
            if len(got.get("torrents", [])) != n:
                raise RuntimeError("torrent-get listed %d torrents, not %d" % (len(got.get("torrents", [])), n))
        res["get_reconnects"] = rpc.connects - c0
        # The same with a new connection for each request (the session id known), as transmission-remote does.
        fresh = []
        for _ in range(DAEMON_REQUESTS):
            rpc.close()
            rpc.call("torrent-get", {"fields": LIST_FIELDS}, timed=fresh)
        rpc.close()
        res["get_ms"] = [1000.0 * x for x in timed]
        res["get_new_conn_ms"] = [1000.0 * x for x in fresh]
        res["get_bytes"] = rpc.last_bytes
        res["get_others"] = load.others()
        st = proc_status(pid)
        res["hwm_end_kib"] = st.get("VmHWM", 0)
        res["rss_end_kib"] = st.get("VmRSS", 0)
        res["alive"] = p.poll() is None
        res["ok"] = res["alive"]
        stop(p, pid=pid)
    finally:
        rpc.close()
        stop(p)
        remove_rill_resume_in(data)
    return res


def quantile(values, q):
    """The q-quantile of values, interpolated between the two nearest ranks."""
    v = sorted(values)
    if not v:
        return None
    x = q * (len(v) - 1)
    i = int(x)
    return v[i] if i + 1 >= len(v) else v[i] + (v[i + 1] - v[i]) * (x - i)


def case_daemon(ctx):
    emit("== daemon: rill daemon beside transmission-daemon, %s small torrents added over the RPC and seeding (1-4 "
         "MiB each, loopback, no tracker, no peers), idle %g s, then %d torrent-get of every torrent" % (
             "/".join(str(c) for c in DAEMON_COUNTS), DAEMON_IDLE, DAEMON_REQUESTS))
    daemons = [d for d in DAEMONS if d != "transmission" or have("transmission-daemon")]
    if "transmission" not in daemons:
        emit("   transmission-daemon: not installed, only rill is measured")
    root = os.path.join(WORK, "daemon")
    data = os.path.join(root, "data")
    smalls, creator = make_small_torrents(max(DAEMON_COUNTS), data, os.path.join(root, "torrents"))
    rows = []
    for n in DAEMON_COUNTS:
        runs = {d: [] for d in daemons}
        for rnd in range(ROUNDS):
            for d in rotate(daemons, rnd):
                if out_of_time("daemon", DAEMON_IDLE + DAEMON_SETTLE + 60):
                    break
                try:
                    res = daemon_run(d, smalls[:n], data, rnd)
                except (RuntimeError, OSError, http.client.HTTPException) as e:
                    emit("   %s, %d torrents, round %d: FAILED: %s" % (d, n, rnd + 1, e))
                    record_row({"case": "daemon", "client": d, "variant": "%d torrents" % n, "count": n,
                                "round": rnd, "ok": False, "error": str(e)})
                    continue
                record_row(res)
                runs[d].append(res)
                g = res["get_ms"]
                f = res["get_new_conn_ms"]
                say("    %s, %d torrents, round %d: ready %.1f s, peak RSS %s MiB, RSS %s MiB, idle CPU %s%% "
                    "(sched %s%%), torrent-get median %.2f ms p90 %.2f ms (new connection each: %.2f / %.2f; %d "
                    "bytes)" % (
                        d, n, rnd + 1, res["ready_s"], mib(res["hwm_idle_kib"]), mib(res["rss_idle_kib"]),
                        fmt_opt(res["idle_cpu_pct"], "%.3f"), fmt_opt(res["idle_sched_pct"], "%.4f"),
                        statistics.median(g), quantile(g, 0.9), statistics.median(f), quantile(f, 0.9),
                        res["get_bytes"]))
        for d in daemons:
            ok = [r for r in runs[d] if r["ok"]]
            label = "rill daemon" if d == "rill" else "transmission-daemon"
            if not ok:
                rows.append([label, n, "%d/%d" % (0, ROUNDS)] + ["-"] * 11)
                continue
            med = lambda k: statistics.median(r[k] for r in ok if r.get(k) is not None) \
                if any(r.get(k) is not None for r in ok) else None
            g = [x for r in ok for x in r["get_ms"]]
            f = [x for r in ok for x in r["get_new_conn_ms"]]
            rows.append([label, n, "%d/%d" % (len(ok), ROUNDS), "%.2f" % med("ready_s"),
                         mib(max(r["hwm_idle_kib"] for r in ok)), mib(max(r["hwm_end_kib"] for r in ok)),
                         mib(med("rss_idle_kib")), fmt_opt(med("idle_cpu_pct"), "%.3f"),
                         fmt_opt(med("idle_sched_pct"), "%.4f"), fmt_opt(med("idle_wakeups"), "%.1f"),
                         "%.2f / %.2f" % (statistics.median(g), quantile(g, 0.9)),
                         "%.2f / %.2f" % (statistics.median(f), quantile(f, 0.9)),
                         "%.0f" % statistics.median(r["get_bytes"] for r in ok), "%.2f" % med("idle_others")])
    emit(fmt_table(["daemon", "torrents", "runs ok", "ready s", "peak RSS MiB", "peak RSS MiB (end)", "RSS now MiB",
                    "idle CPU %", "idle CPU % (sched)", "wakeups/s", "torrent-get ms median / p90",
                    "new conn. ms median / p90",
                    "answer bytes", "other load"], rows))
    emit("   torrents made with %s, data hot in the page cache; each run adds them all over the RPC (torrent-add," %
         creator)
    emit("   metainfo in base64, download-dir = the data's folder) to a fresh daemon (no rill resume file, a new")
    emit("   Transmission config dir), which checks all the data; ready = daemon start to every torrent at status 6")
    emit("   (seeding) and percentDone 1. rill: `rill daemon --port 0 --bind 127.0.0.1 --no-dht`; transmission-daemon")
    emit("   -f -g CONF with DHT, LPD, PEX, uTP and port forwarding off, bound to 127.0.0.1. Daemons alternate, the")
    emit("   order rotated each round; %d round(s) per count." % ROUNDS)
    emit("   peak RSS = VmHWM after the idle window (worst round), and (end) after the torrent-get requests; RSS")
    emit("   now = VmRSS at the end of the idle window (median). idle CPU = utime+stime over a %g s window %g s after" %
         (DAEMON_IDLE, DAEMON_SETTLE))
    emit("   ready, all threads, as %% of one core (one clock tick is %.3f%% of it); (sched) = the same from" % (
        100.0 / TICK / DAEMON_IDLE))
    emit("   /proc/PID/task/*/schedstat (ns); wakeups/s = context switches, all threads (medians over rounds).")
    emit("   torrent-get = %d requests, one after the other on one kept-alive HTTP/1.1 connection (the session-id" %
         DAEMON_REQUESTS)
    emit("   handshake and one untimed request first), of every torrent with the fields transmission-remote -l asks")
    emit("   for (its 14 list keys): request sent to the last byte of the answer, in ms, median and 90th percentile")
    emit("   over all rounds' requests (python's http.client on the same machine); answer = its body's size. new")
    emit("   conn. = %d more, each on a new connection (connect to last byte; the session id already known), as" %
         DAEMON_REQUESTS)
    emit("   transmission-remote does (one connection per run).")
    emit("   other load = cores used by other processes on the machine during the idle window (median).")
    emit("   Aim (issue 15): below transmission-daemon on all of them.")
    emit()


def fmt_opt(v, fmt):
    return (fmt % v) if v is not None else "-"


# ---------------------------------------------------------------------------------------------------------------
# dht: a private loopback DHT of python3-libtorrent sessions; rill's time to its first DHT peer and to complete
# beside libtorrent's, its memory with a full routing table and peer store, and its idle DHT traffic.


LTDHT = os.path.join(HERE, "ltdht.py")
FLOOD = os.path.join(HERE, "dht_flood.py")
DHT_NODES = env_int("DHT_NODES", 8)
DHT_MIB = env_int("DHT_MIB", 64)
DHT_IDLE = env_float("DHT_IDLE", 120)
DHT_SETTLE = env_float("DHT_SETTLE", 20)
DHT_FLOOD_S = env_float("DHT_FLOOD_S", 180)
DHT_FLOOD_RATE = env_float("DHT_FLOOD_RATE", 19)
DHT_FLOOD_NODES = env_int("DHT_FLOOD_NODES", 2560)
DHT_HASHES = 500  # rill's peer store: 500 info-hashes x 50 peers (src/dht/mod.rs, Config::default)
DHT_PEERS_PER_HASH = 50
DHT_RUST_LOG = "warn,rill::engine::dht=debug"
DHT_PEERS_RE = re.compile(r": DHT: (\d+) peers")
DHT_NODES_RE = re.compile(r"  dht (\d+) nodes (\d+) peers")


def free_port_both():
    """A port free for TCP and UDP on 127.0.0.1 (rill's DHT shares its UDP socket with the listen port)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free for both TCP and UDP")


def record_row(row):
    with open(RUNS, "a") as f:
        f.write(json.dumps(row) + "\n")


def rill_dht_nodes(logname):
    """The DHT node count on rill's last --no-ui status line in logs/<logname>.log (None before the first)."""
    try:
        with open(os.path.join(LOGS, logname + ".log"), errors="replace") as f:
            found = DHT_NODES_RE.findall(f.read())
    except OSError:
        return None
    return int(found[-1][0]) if found else None


class LtDhtSwarm:
    """DHT_NODES python3-libtorrent sessions in one process (scripts/bench.d/ltdht.py swarm); session 1 seeds."""

    def __init__(self, name, n, torrent, data):
        self.name = name
        self.status_path = os.path.join(WORK, name + ".status.json")
        if os.path.exists(self.status_path):
            os.unlink(self.status_path)
        self.proc = spawn(name, [PY, LTDHT, "swarm", "--nodes", n, "--status", self.status_path, "--seed",
                                 "%s:%s" % (torrent, data), "--max-life", int(max(10, remaining()))])

    def status(self):
        return read_json(self.status_path) or {}

    def wait_ready(self, timeout=180):
        wait_until(self.name + " (libtorrent DHT swarm) to fill its tables and store the seeder",
                   lambda: self.status().get("ready"), timeout, 0.2, [self.proc])
        return self.status()

    def bootstrap(self):
        return "127.0.0.1:%d" % self.status()["ports"][0]


def first_time(lines, match):
    for t, line in lines:
        if match(line):
            return t
    return None


def dht_download_run(client, content, magnet, boot, tag):
    out = os.path.join(WORK, "dht", "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    name = "dht-%s-%s" % (client, tag)
    port = free_port_both()
    env = dict(os.environ)
    if client == "rill":
        state = os.path.join(WORK, "dht", "state-" + name)
        shutil.rmtree(state, ignore_errors=True)
        cmd = [RILL, "download", magnet, "-d", out, "--no-ui", "--port", port, "--bind", "127.0.0.1",
               "--dht-bootstrap", boot, "--state-dir", state]
        env["RUST_LOG"] = DHT_RUST_LOG
    else:
        cmd = [PY, LTDHT, "leech", "--magnet", magnet, "--save", out, "--dht-node", boot, "--port", port,
               "--max-life", int(RUN_TIMEOUT)]
    wait_quiet()
    r = measured(name, cmd, RUN_TIMEOUT, env=env, err_lines=client == "rill")
    if client == "rill":
        r.first_dht = first_time(r.err_lines, lambda l: DHT_PEERS_RE.search(l) is not None)
        r.metadata = first_time(r.lines, lambda l: l.startswith("metadata:"))
    else:
        r.first_dht = first_time(r.lines, lambda l: l.startswith("FIRST_DHT_PEER"))
        r.metadata = first_time(r.lines, lambda l: l.startswith("METADATA"))
    r.complete = completion_time(r)
    r.ok = (not r.timed_out) and r.exit_code == 0 and r.first_dht is not None \
        and same_content(os.path.join(out, content.name), content.path, content.size)
    if not r.ok:
        say("    %s run %s FAILED: exit %s%s%s; stderr tail:\n%s" % (
            client, tag, r.exit_code, " (timed out)" if r.timed_out else "",
            " (no DHT peer seen)" if r.first_dht is None else "",
            "\n".join("      " + l for l in r.stderr_tail.strip().splitlines()[-12:])))
    shutil.rmtree(out, ignore_errors=True)
    return r


def dht_download(content, boot):
    magnet = "magnet:?xt=urn:btih:" + content.infohash
    clients = ["rill", "libtorrent"]
    runs = {c: [] for c in clients}
    for rnd in range(ROUNDS):
        for c in rotate(clients, rnd):
            if out_of_time("dht", 120):
                break
            prepare_cache([content.path])
            r = dht_download_run(c, content, magnet, boot, "r%d" % (rnd + 1))
            runs[c].append(r)
            record("dht", c, "trackerless magnet, %d MiB" % (content.size >> 20), r, content.size, r.ok,
                   {"first_dht_peer_s": r.first_dht, "metadata_s": r.metadata, "complete_s": r.complete})
            f = lambda v: "%.2f" % v if v is not None else "-"
            say("    round %d %-10s first DHT peer %s s, metadata %s s, complete %s s, cpu %.2f s, rss %s MiB%s" % (
                rnd + 1, c, f(r.first_dht), f(r.metadata), f(r.complete), (r.user or 0) + (r.sys or 0),
                mib(r.maxrss), "" if r.ok else "  FAILED"))
    rows = []
    for c in clients:
        ok = [r for r in runs[c] if r.ok]
        if not ok:
            rows.append([c, "0/%d" % len(runs[c])] + ["-"] * 8)
            continue
        firsts = sorted(r.first_dht for r in ok)
        done = sorted(r.complete for r in ok)
        metas = [r.metadata for r in ok if r.metadata is not None]
        rows.append([c, "%d/%d" % (len(ok), len(runs[c])), "%.2f" % statistics.median(firsts),
                     "%.2f-%.2f" % (firsts[0], firsts[-1]),
                     "%.2f" % statistics.median(metas) if metas else "-",
                     "%.2f" % statistics.median(done), "%.2f-%.2f" % (done[0], done[-1]),
                     "%.2f" % statistics.median((r.user or 0) + (r.sys or 0) for r in ok),
                     mib(max(r.maxrss or 0 for r in ok)), mib(max(r.peak_anon for r in ok))])
    emit(fmt_table(["leecher", "ok", "first DHT peer s", "min-max", "metadata s", "complete s", "min-max",
                    "CPU s", "peak RSS MiB", "peak anon MiB"], rows))
    emit("   each leecher is given only `magnet:?xt=urn:btih:<hash>` and the bootstrap node; times from process start")
    emit("   (median of %d rounds, the two alternating): first DHT peer = rill's first `<name>: DHT: N peers` log" %
         ROUNDS)
    emit("   line (read as it is written), libtorrent's first dht_reply_alert with peers; metadata = rill's")
    emit("   `metadata:` line, libtorrent's metadata_received_alert; complete = rill's `done:` line, libtorrent's")
    emit("   every piece verified. rill starts each run with an empty --state-dir (no saved nodes), libtorrent")
    emit("   with a new session. Data byte-identical in every ok run. CPU = user+sys (GNU time); peak RSS = GNU")
    emit("   time max RSS (libtorrent's includes the file pages it maps); peak anon = sampled RssAnon.")
    emit("   Earlier rounds' leechers stay in the DHT's peer stores (30 minutes), so later rounds also get their")
    emit("   stale addresses beside the seeder's; 'first DHT peer' is the first answer carrying any address.")


def parse_strace(path, w0, w1):
    """UDP datagrams rill sent and received between epochs w0 and w1, from `strace -f -ttt -yy -xx` output:
    {"out"/"in": {"packets", "bytes", "kinds": {what: count}}}. Bytes are UDP payload (return values)."""
    res = {d: {"packets": 0, "bytes": 0, "kinds": {}} for d in ("out", "in")}
    call_re = re.compile(r'^(?:(\d+)\s+)?(\d+\.\d+)\s+(sendto|recvfrom|sendmsg|recvmsg)\((\d+)<UDP:')
    ret_re = re.compile(r'\)\s+=\s+(-?\d+)')
    unfinished = {}
    try:
        f = open(path, errors="replace")
    except OSError:
        return res
    with f:
        for line in f:
            m = call_re.match(line)
            if m:
                pid, ts, call = m.group(1), float(m.group(2)), m.group(3)
                if line.rstrip().endswith("<unfinished ...>"):
                    unfinished[pid] = (ts, call, line)
                    continue
                text = line
            else:
                m2 = re.match(r'^(?:(\d+)\s+)?\d+\.\d+\s+<\.\.\. (\w+) resumed>', line)
                if not m2 or m2.group(1) not in unfinished:
                    continue
                ts, call, first = unfinished.pop(m2.group(1))
                text = first.rstrip().replace("<unfinished ...>", "") + line.split("resumed>", 1)[1]
            rm = ret_re.search(text.rsplit("<UDP:", 1)[-1]) or ret_re.search(text)
            if not rm or int(rm.group(1)) < 0 or not (w0 <= ts <= w1):
                continue
            d = res["out" if call.startswith("send") else "in"]
            d["packets"] += 1
            d["bytes"] += int(rm.group(1))
            sm = re.search(r'"((?:\\x[0-9a-f]{2})*)"', text)
            kind = "?"
            if sm:
                try:
                    msg = bdecode(bytes.fromhex(sm.group(1).replace("\\x", "")))[0]
                    y = msg.get(b"y")
                    if y == b"q":
                        kind = "query " + msg.get(b"q", b"?").decode("ascii", "replace")
                    elif y == b"r":
                        kind = "response"
                    elif y == b"e":
                        kind = "error"
                except (ValueError, IndexError, AttributeError, TypeError):
                    kind = "not KRPC"
            d["kinds"][kind] = d["kinds"].get(kind, 0) + 1
    return res


def rill_seed_cmd(small, port, extra):
    return [RILL, "seed", small.torrent_nt, "-d", small.dir, "--no-ui", "--port", port, "--bind", "127.0.0.1"] + extra


def dht_idle(small, swarm):
    """rill seed of a small torrent in the libtorrent DHT: its table as full as that DHT allows, then its DHT
    datagrams over DHT_IDLE s, counted by strace on its UDP socket. Returns its memory figures for the memory
    table (or None)."""
    if not have("strace"):
        emit("   idle traffic: strace not installed; skipped")
        return None
    port = free_port_both()
    name = "dht-idle-rill-seed"
    state = os.path.join(WORK, "dht", "state-idle")
    shutil.rmtree(state, ignore_errors=True)
    env = dict(os.environ, RUST_LOG=DHT_RUST_LOG)
    remove_rill_resume_in(small.dir)
    p = spawn(name, rill_seed_cmd(small, port, ["--dht-bootstrap", swarm.bootstrap(), "--state-dir", state]),
              life=DHT_IDLE + DHT_SETTLE + 240, env=env)
    try:
        wait_until("rill seed to listen", lambda: port_open(port), 30, 0.05, [p])
        pid = wait_until("rill's pid", lambda: leaf(p.pid, 1), 10, 0.02, [p])
        # As full as this DHT allows: the node count on rill's status line (every 5 s) unchanged for DHT_SETTLE s.
        t0 = time.monotonic()
        seen = {"n": None, "since": time.monotonic()}

        def settled():
            n = rill_dht_nodes(name)
            if n != seen["n"]:
                seen["n"], seen["since"] = n, time.monotonic()
            return n is not None and n > 0 and time.monotonic() - seen["since"] >= DHT_SETTLE

        try:
            wait_until("rill's DHT table to stop changing", settled, 150, 0.5, [p])
            settled_note = ""
        except RuntimeError:
            if p.poll() is not None:
                raise
            settled_note = " (it was still changing after 150 s: measured anyway)"
        settle_s = time.monotonic() - t0
        nodes_before = seen["n"]
        trace = os.path.join(LOGS, "dht-idle.strace")
        if os.path.exists(trace):
            os.unlink(trace)
        sp = spawn("dht-idle-strace", ["strace", "-f", "-qq", "-ttt", "-yy", "-xx", "-s", "4096", "-e",
                                       "trace=sendto,recvfrom,sendmsg,recvmsg", "-o", trace, "-p", pid],
                   life=DHT_IDLE + 60)
        time.sleep(1.0)  # strace attaches
        if sp.poll() is not None:
            emit("   idle traffic: strace could not attach to rill (exit %s; see dht-idle-strace.log)" % sp.returncode)
            return None
        w0 = time.time()
        c0 = proc_cpu(pid)
        end = time.monotonic() + DHT_IDLE
        while time.monotonic() < end:
            if p.poll() is not None:
                raise RuntimeError("rill seed exited during the idle window; see %s.log" % name)
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
        w1 = time.time()
        c1 = proc_cpu(pid)
        stop(sp, sig=signal.SIGINT, pid=leaf(sp.pid, 1))
        st = proc_status(pid)
        nodes_after = rill_dht_nodes(name)
        traffic = parse_strace(trace, w0, w1)
        minutes = (w1 - w0) / 60.0
        stop(p, pid=pid)
    finally:
        stop(p)
        remove_rill_resume_in(small.dir)
    row = {"case": "dht", "client": "rill", "variant": "idle traffic", "window_s": w1 - w0, "settle_s": settle_s,
           "table_nodes": nodes_after, "table_nodes_at_start": nodes_before, "traffic": traffic,
           "cpu_s_traced": (c1 - c0) if c0 is not None and c1 is not None else None,
           "hwm_kib": st.get("VmHWM", 0), "rss_kib": st.get("VmRSS", 0), "anon_kib": st.get("RssAnon", 0)}
    record_row(row)
    rows = []
    for d, label in (("out", "sent"), ("in", "received")):
        t = traffic[d]
        kinds = ", ".join("%s %d" % (k, v) for k, v in sorted(t["kinds"].items(), key=lambda kv: -kv[1]))
        rows.append([label, "%.1f" % (t["packets"] / minutes), "%.0f" % (t["bytes"] / minutes),
                     "%.0f" % ((t["bytes"] + 28 * t["packets"]) / minutes), t["packets"], kinds or "-"])
    emit()
    emit("-- idle DHT traffic: rill seed of one %d MiB torrent in the %d-node libtorrent DHT, table settled at %s "
         "nodes" % (small.size >> 20, DHT_NODES, nodes_after))
    emit(fmt_table(["rill's UDP socket", "packets/min", "payload B/min", "IPv4 B/min", "packets", "what"], rows))
    emit("   counted by strace (-e sendto,recvfrom,sendmsg,recvmsg -yy, logs/dht-idle.strace) attached to rill for")
    emit("   %.0f s, once the node count on its status line had stayed the same for %g s (%.0f s after start%s)." % (
        w1 - w0, DHT_SETTLE, settle_s, settled_note))
    emit("   Only calls on its UDP socket that moved data count; 'what' decodes each datagram (KRPC). IPv4 B/min")
    emit("   adds 28 B of IP and UDP header per packet. The seed torrent is not the swarm's, so no peer connects.")
    emit("   The window holds the other nodes' queries (libtorrent refreshes its table with get_peers) and rill's")
    emit("   answers and pings; rill's own periodic work is slower than the window: a bucket refresh after 15")
    emit("   minutes without change, the seed's DHT announce every 15 minutes (the first one ran before the")
    emit("   window), the node file every 15 minutes (a file, not traffic).")
    return row


def dht_memory(small, idle_row):
    rows = []
    # rill seed with the DHT off.
    port = free_port_both()
    remove_rill_resume_in(small.dir)
    name = "dht-mem-nodht"
    p = spawn(name, rill_seed_cmd(small, port, ["--no-dht"]), life=DHT_SETTLE + 60)
    try:
        wait_until("rill seed --no-dht to listen", lambda: port_open(port), 30, 0.05, [p])
        pid = wait_until("rill's pid", lambda: leaf(p.pid, 1), 10, 0.02, [p])
        time.sleep(DHT_SETTLE)
        st = proc_status(pid)
        stop(p, pid=pid)
    finally:
        stop(p)
        remove_rill_resume_in(small.dir)
    record_row({"case": "dht", "client": "rill", "variant": "memory, DHT off", "hwm_kib": st.get("VmHWM", 0),
                "rss_kib": st.get("VmRSS", 0), "anon_kib": st.get("RssAnon", 0)})
    rows.append(["DHT off (--no-dht)", "-", "-", mib(st.get("VmHWM", 0)), mib(st.get("VmRSS", 0)),
                 mib(st.get("RssAnon", 0)), "-"])
    if idle_row:
        rows.append(["DHT on, in the %d-node libtorrent DHT (after the idle window)" % DHT_NODES,
                     idle_row["table_nodes"], "-", mib(idle_row["hwm_kib"]), mib(idle_row["rss_kib"]),
                     mib(idle_row["anon_kib"]), "-"])
    # The flood: rill's only bootstrap node is the flooder.
    port = free_port_both()
    d = os.path.join(WORK, "dht")
    ready, result, progress = (os.path.join(d, "flood." + x) for x in ("ready", "result", "progress"))
    for f in (ready, result, progress):
        if os.path.exists(f):
            os.unlink(f)
    fp = spawn("dht-flooder", [PY, FLOOD, "--target", port, "--ready", ready, "--result", result, "--progress",
                               progress, "--nodes", DHT_FLOOD_NODES, "--rate", DHT_FLOOD_RATE, "--duration",
                               DHT_FLOOD_S, "--hashes", DHT_HASHES, "--peers-per-hash", DHT_PEERS_PER_HASH,
                               "--max-life", int(DHT_FLOOD_S + 120)], life=DHT_FLOOD_S + 130)
    name = "dht-mem-flooded"
    state = os.path.join(d, "state-flood")
    shutil.rmtree(state, ignore_errors=True)
    remove_rill_resume_in(small.dir)
    p = None
    try:
        main_port = wait_until("the flooder's socket", lambda: (read_json(ready) or {}).get("port"), 20, 0.05, [fp])
        p = spawn(name, rill_seed_cmd(small, port, ["--dht-bootstrap", "127.0.0.1:%d" % main_port, "--state-dir",
                                                     state]), life=DHT_FLOOD_S + 120)
        wait_until("rill seed to listen", lambda: port_open(port), 30, 0.05, [p])
        pid = wait_until("rill's pid", lambda: leaf(p.pid, 1), 10, 0.02, [p])
        st0 = proc_status(pid)
        c0 = proc_cpu(pid)
        t0 = time.monotonic()
        next_sample = 0.0
        samples = []
        while fp.poll() is None:
            if p.poll() is not None:
                raise RuntimeError("rill seed exited during the flood; see %s.log" % name)
            if time.monotonic() > t0 + DHT_FLOOD_S + 110:
                raise RuntimeError("the flooder did not finish")
            el = time.monotonic() - t0
            if el >= next_sample:
                next_sample += 30
                pr = read_json(progress) or {}
                s = proc_status(pid)
                sample = {"t": round(el, 1), "announces_ok": (pr.get("ok") or {}).get("announce_peer", 0),
                          "table_nodes": rill_dht_nodes(name), "rss_kib": s.get("VmRSS", 0)}
                samples.append(sample)
                say("    flood %3.0f s: %d announces stored, %s nodes in rill's table, rill RSS %s MiB" % (
                    el, sample["announces_ok"], sample["table_nodes"], mib(sample["rss_kib"])))
            time.sleep(0.5)
        res = read_json(result)
        if not res:
            raise RuntimeError("the flooder wrote no result (exit %s); see dht-flooder.log" % fp.returncode)
        time.sleep(6)  # one more status line
        c1 = proc_cpu(pid)
        st = proc_status(pid)
        nodes = rill_dht_nodes(name)
        alive = p.poll() is None
        stop(p, pid=pid)
    finally:
        if p is not None:
            stop(p)
        stop(fp)
        remove_rill_resume_in(small.dir)
    stored = (res.get("ok") or {}).get("announce_peer", 0)
    hashes = min(stored, DHT_HASHES)
    row = {"case": "dht", "client": "rill", "variant": "memory, flooded", "flood": res, "samples": samples,
           "table_nodes": nodes, "peers_stored": stored, "hwm_kib": st.get("VmHWM", 0), "rss_kib": st.get("VmRSS", 0),
           "anon_kib": st.get("RssAnon", 0), "hwm_at_start_kib": st0.get("VmHWM", 0),
           "cpu_s": (c1 - c0) if c0 is not None and c1 is not None else None, "alive": alive}
    record_row(row)
    rows.append(["DHT on, flooded (%.0f s at %g queries/s)" % (res["flood_s"], res["rate"]), nodes,
                 "%d (%d hashes)" % (stored, hashes), mib(st.get("VmHWM", 0)), mib(st.get("VmRSS", 0)),
                 mib(st.get("RssAnon", 0)), "%.2f" % row["cpu_s"] if row["cpu_s"] is not None else "-"])
    emit()
    emit("-- memory: rill seed of one %d MiB torrent, idle, peak RSS (VmHWM) with the DHT off, on, and flooded" % (
        small.size >> 20))
    emit(fmt_table(["rill seed", "table nodes", "peers stored", "VmHWM MiB", "VmRSS MiB", "RssAnon MiB",
                    "CPU s (flood)"], rows))
    asked = res.get("asked") or {}
    emit("   flooded: rill's only bootstrap node is scripts/bench.d/dht_flood.py: %d fake nodes, each a UDP socket on" %
         res.get("nodes_made", 0))
    emit("   127.0.0.1 with an id placed for rill's table (16 per depth: 8 for the bucket, 8 for its replacement")
    emit("   cache), answering rill's queries as a node would (rill asked: %s)." % (
        ", ".join("%s %d" % kv for kv in sorted(asked.items())) or "nothing"))
    emit("   Only 8, 4, 2 and 1 ids share exactly 156..159 bits with rill's: 1,263 is the most an IPv4 table holds.")
    emit("   For %.0f s it sent %g queries/s from 127.0.0.1 (under rill's per-source limit of 20/s, burst 50):" % (
        res["flood_s"], res["rate"]))
    emit("   announce_peer of %d info-hashes x %d peer ports, each from the next fake node (so the first %d also" % (
        DHT_HASHES, DHT_PEERS_PER_HASH, res.get("nodes_made", 0)))
    emit("   fill the table: rill adds a node that queries it and pings it). Answered: %s;" % (
        ", ".join("%s %d/%d" % (k, (res.get("ok") or {}).get(k, 0), v) for k, v in sorted(res["sent"].items())
                  if k != "id ping")))
    emit("   error replies: %s." % (
        ", ".join("%s %d" % kv for kv in sorted((res.get("errors") or {}).items())) or "none"))
    emit("   peers stored = announces rill accepted (token good; it stores every one within its bounds).")
    full_s = DHT_HASHES * DHT_PEERS_PER_HASH / res["rate"]
    emit("   A full store (%d x %d = %d peers) takes %.0f s at this rate from one address; DHT_FLOOD_S sets the" % (
        DHT_HASHES, DHT_PEERS_PER_HASH, DHT_HASHES * DHT_PEERS_PER_HASH, full_s))
    emit("   flood's length. Per-source limit: %d pings sent back to back from one socket after the flood, %d" % (
        res["burst"], res["burst_answered"]))
    emit("   answered (rill drops queries beyond its burst of 50 unanswered); CPU s = rill's over the flood.")
    emit("   table nodes = rill's status line (nodes in buckets, not counting replacement caches).")


def case_dht(ctx):
    emit("== dht: a private DHT of %d python3-libtorrent sessions on 127.0.0.1 (one bootstrap node, one seeding a "
         "%d MiB torrent)" % (DHT_NODES, DHT_MIB))
    if not lt_available():
        emit("   python3-libtorrent missing: the dht case needs it")
        return
    d = os.path.join(WORK, "dht")
    os.makedirs(d, exist_ok=True)
    content = Content("dht%dM" % DHT_MIB, DHT_MIB << 20, ctx["tracker"].url)
    small = Content("dht1M", 1 << 20, ctx["tracker"].url)
    swarm = LtDhtSwarm("dht-swarm", DHT_NODES, content.torrent_nt, content.dir)
    idle_row = None
    try:
        t = time.monotonic()
        st = swarm.wait_ready()
        say("    swarm ready in %.1f s: tables %s, seeder stored by nodes %s" % (
            time.monotonic() - t, st["tables"], st["seeder"]["stored_by"]))
        boot = swarm.bootstrap()
        dht_download(content, boot)
        if not out_of_time("dht", DHT_IDLE + DHT_SETTLE + 120):
            try:
                idle_row = dht_idle(small, swarm)
            except RuntimeError as e:
                emit("   idle traffic: FAILED: %s" % e)
    finally:
        stop(swarm.proc)
    if not out_of_time("dht", DHT_FLOOD_S + DHT_SETTLE + 120):
        try:
            dht_memory(small, idle_row)
        except RuntimeError as e:
            emit("   memory: FAILED: %s" % e)
    emit()


# ---------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------
# view: what the full-screen live view costs while nothing happens (rill seed of a small torrent, idle), against
# --no-ui, both in panes of one private tmux server at the same time.


VIEW_IDLE = env_float("VIEW_IDLE", 60)
VIEW_SETTLE = env_float("VIEW_SETTLE", 5)


def case_view(ctx):
    emit("== view: rill seed of a 4 MiB torrent, idle, in a 120x40 tmux pane: the full-screen view against --no-ui, "
         "%g s window" % VIEW_IDLE)
    if not have("tmux"):
        emit("   tmux missing: the view case needs it (apt-get install tmux)")
        emit()
        return
    root = os.path.join(WORK, "view")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    data = os.path.join(root, "view.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(4 << 20))
    torrent = os.path.join(root, "view.torrent")
    subprocess.run([RILL, "create", data, "-o", torrent], check=True, capture_output=True, timeout=60)
    sock = "rill-bench-view-%d" % os.getpid()
    env = dict(os.environ)
    env.pop("TMUX", None)

    def tmux(*args):
        return subprocess.run(["tmux", "-u", "-L", sock, "-f", "/dev/null"] + list(args), capture_output=True,
                              text=True, timeout=10, env=env, stdin=subprocess.DEVNULL)

    life = int(VIEW_IDLE + VIEW_SETTLE + 90)
    variants = (("view", ""), ("--no-ui", "--no-ui"))
    server, pids = None, {}
    try:
        for i, (variant, extra) in enumerate(variants):
            script = os.path.join(root, "pane%d.sh" % i)
            with open(script, "w") as f:
                # timeout --foreground: rill stays in the terminal's foreground process group (the view needs it).
                f.write("cd '%s'\nexport RILL_FORBID_DHT_ROUTERS=1\n"
                        "sh -c 'echo $$ > pane%d.pid; exec timeout --foreground -k 3 %d \"$0\" \"$@\" 2> pane%d.err' "
                        "'%s' seed view.torrent -d . --port %d --bind 127.0.0.1 --no-dht %s\nexec sleep %d\n" % (
                            root, i, life, i, RILL, free_port(), extra, life))
            r = tmux("new-session", "-d", "-s", "p%d" % i, "-x", "120", "-y", "40", "sh " + script)
            if r.returncode != 0:
                raise RuntimeError("tmux new-session: " + r.stderr.strip())
            if server is None:
                server = int(tmux("display-message", "-p", "#{pid}").stdout.strip() or 0) or None
        for i, (variant, _) in enumerate(variants):
            pidfile = os.path.join(root, "pane%d.pid" % i)

            def rill_pid():
                try:
                    with open(pidfile) as f:
                        return leaf(int(f.read().strip()), 1)  # timeout -> rill
                except (OSError, ValueError):
                    return None
            pids[variant] = wait_until("rill seed (%s) to start" % variant, rill_pid, 30)
            wait_until("rill seed (%s) to seed" % variant,
                       lambda: "seeding" in tmux("capture-pane", "-p", "-t", "p%d" % i).stdout, 60)
        screen = tmux("capture-pane", "-p", "-t", "p0").stdout
        if "q quit" not in screen:
            raise RuntimeError("the full-screen view is not up:\n" + screen)
        time.sleep(VIEW_SETTLE)
        first = {v: task_sample(p) for v, p in pids.items()}
        time.sleep(VIEW_IDLE)
        last = {v: task_sample(p) for v, p in pids.items()}
        rows = []
        for variant, _ in variants:
            (t0, c0, n0, w0), (t1, c1, n1, w1) = first[variant], last[variant]
            dt = t1 - t0
            per_min = 60.0 / dt
            cpu_ms = (c1 - c0) * 1000 * per_min if c0 is not None and c1 is not None else None
            sched_ms = (n1 - n0) / 1e6 * per_min if n0 is not None and n1 is not None else None
            wake = (w1 - w0) / dt if w0 is not None and w1 is not None else None
            rss = proc_status(pids[variant]).get("VmRSS")
            f = lambda v, fmt: (fmt % v) if v is not None else "-"
            rows.append([variant, f(cpu_ms, "%.0f"), f(sched_ms, "%.1f"), f(wake, "%.1f"), mib(rss) if rss else "-"])
            record_row({"case": "view", "client": "rill", "variant": variant, "cpu_ms_per_min": cpu_ms,
                        "sched_ms_per_min": sched_ms, "wakeups_per_s": wake, "rss_kib": rss})
            say("    %s: %s ms CPU a minute (schedstat %s ms), %s wakeups/s" % (
                variant, f(cpu_ms, "%.0f"), f(sched_ms, "%.1f"), f(wake, "%.1f")))
        emit(fmt_table(["rill seed", "CPU ms/min", "CPU ms/min (sched)", "wakeups/s", "RSS MiB"], rows))
        emit("   CPU = utime+stime over the window (one clock tick is %.0f ms); (sched) = on-CPU ns summed over the "
             "threads from /proc/PID/task/*/schedstat; wakeups = context switches." % (1000.0 / TICK))
        emit()
    finally:
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        tmux("kill-server")
        if server:
            try:
                os.kill(server, signal.SIGKILL)
            except ProcessLookupError:
                pass


MANY_PEERS = os.path.join(ROOT, "tests", "peers", "many_peers.py")
PEERS_COUNTS = [int(x) for x in os.environ.get("PEERS_COUNTS", "40 120 200").split()]
PEERS_WINDOW = env_float("PEERS_WINDOW", 10)
PEERS_CLIENTS = os.environ.get("PEERS_CLIENTS", "rill libtorrent").split()


def peers_run(client, mode, n, torrent, data):
    """One seeder (rill seed, or a python3-libtorrent seeder) and n scripted peers (tests/peers/many_peers.py),
    idle (handshake, interested, nothing more) or busy (requesting blocks without end). Returns a dict of
    figures: RSS before the peers, RSS and VmHWM with them after PEERS_WINDOW s, descriptors."""
    port = free_port()
    name = "peers-%s-%s-%d" % (client, mode, n)
    status = os.path.join(WORK, "peers", name + ".json")
    if client == "rill":
        cmd = [RILL, "seed", torrent, "-d", data, "--no-ui", "--no-dht", "--no-utp", "--port", port, "--bind",
               "127.0.0.1", "--max-peers", max(250, n + 50), "--max-upload-slots", max(4, n)]
    else:
        lt_status = os.path.join(WORK, "peers", name + "-lt.json")
        cmd = [PY, LTPEER, "seed", "--port", port, "--torrent", "%s:%s" % (torrent, data), "--status", lt_status]
    res = {"client": client, "mode": mode, "count": n, "ok": False}
    p = spawn(name, cmd, life=120)
    q = None
    try:
        if client == "rill":
            wait_until("rill seed to listen", lambda: port_open(port), 60, 0.05, [p])
            pid = wait_until("rill's pid", lambda: leaf(p.pid, 1), 10, 0.02, [p])
            wait_until("rill seed to seed", lambda: "seeding" in open(os.path.join(LOGS, name + ".log"),
                                                                      errors="replace").read(), 60, 0.1, [p])
        else:
            wait_until("the libtorrent seeder to be ready", lambda: (read_json(lt_status) or {}).get("ready"), 60,
                       0.1, [p])
            pid = wait_until("its pid", lambda: leaf(p.pid, 1), 10, 0.02, [p])
        time.sleep(1)
        res["base_kib"] = proc_status(pid).get("VmRSS", 0)
        res["fds_before"] = len(os.listdir("/proc/%d/fd" % pid))
        args = [PY, MANY_PEERS, "--port", port, "--torrent", torrent, "--count", n, "--status", status,
                "--max-life", 100, "--pending", 32]
        args += ["--busy"] if mode == "busy" else ["--pieces-each", 0]
        q = spawn(name + "-peers", args, life=110)
        handshaken = lambda: ((read_json(status) or {}).get("peers") or {}).get("handshaken", 0)
        try:
            wait_until("%d peers to handshake" % n, lambda: handshaken() >= n, 60, 0.1, [p, q])
        except RuntimeError as e:
            say("    %s (%s of %d)" % (e, handshaken(), n))
        time.sleep(PEERS_WINDOW)
        st = proc_status(pid)
        res.update(rss_kib=st.get("VmRSS", 0), hwm_kib=st.get("VmHWM", 0), handshaken=handshaken(),
                   fds=len(os.listdir("/proc/%d/fd" % pid)))
        peers = (read_json(status) or {}).get("peers") or {}
        res["bytes"] = peers.get("bytes", 0)
        res["bad"] = peers.get("pieces_bad", 0)
        stop(q)
        q = None
        try:
            wait_until("the seeder to close the peers' connections",
                       lambda: len(os.listdir("/proc/%d/fd" % pid)) <= res["fds_before"], 20, 0.1, [p])
        except RuntimeError:
            pass
        res["fds_after"] = len(os.listdir("/proc/%d/fd" % pid))
        res["ok"] = res["handshaken"] >= n and res["bad"] == 0
        stop(p, pid=pid)
    finally:
        if q is not None:
            stop(q)
        stop(p)
    return res


def case_peers(ctx):
    emit("== peers: a seeder's memory with %s scripted peers connected (tests/peers/many_peers.py, one python "
         "process), idle (handshake + interested) and busy (requesting blocks without end); RSS after a %g s window"
         % ("/".join(str(n) for n in PEERS_COUNTS), PEERS_WINDOW))
    root = os.path.join(WORK, "peers")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    data = os.path.join(root, "data")
    os.makedirs(data)
    content = os.path.join(data, "peers.bin")
    with open(content, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    torrent = os.path.join(root, "peers.torrent")
    subprocess.run([RILL, "create", content, "-o", torrent, "--piece-size", "256k", "--tracker",
                    "http://127.0.0.1:1/announce"], check=True, capture_output=True, timeout=60)
    clients = [c for c in PEERS_CLIENTS if c == "rill" or (c == "libtorrent" and lt_available())]
    rows = []
    for client in clients:
        for mode in ("idle", "busy"):
            for n in PEERS_COUNTS:
                if out_of_time("peers", 60):
                    break
                wait_quiet()
                try:
                    r = peers_run(client, mode, n, torrent, data)
                except RuntimeError as e:
                    say("    %s %s %d: %s" % (client, mode, n, e))
                    continue
                record_row(dict(r, case="peers"))
                per = (r["rss_kib"] - r["base_kib"]) / float(n) if r.get("rss_kib") else None
                rows.append([client, mode, "%d" % n, "%d" % r.get("handshaken", 0), mib(r["base_kib"]),
                             mib(r["rss_kib"]), mib(r["hwm_kib"]), "%.1f" % per if per is not None else "-",
                             "%d/%d/%d" % (r["fds_before"], r["fds"], r["fds_after"]),
                             "%.0f" % (r.get("bytes", 0) / 1e6), "ok" if r["ok"] else "FAILED"])
                say("    %s %s %d: RSS %s MiB (peak %s), %s KiB a peer" % (client, mode, n, mib(r["rss_kib"]),
                                                                       mib(r["hwm_kib"]), rows[-1][7]))
    emit(fmt_table(["seeder", "peers", "N", "connected", "RSS before", "RSS with", "peak RSS", "KiB/peer",
                    "fds before/with/after", "MB served", "check"], rows))
    emit("   RSS in MiB. KiB/peer = (RSS with - RSS before) / N. rill seed: --max-upload-slots N (every busy peer is "
         "served at once, the worst case for its send buffers); libtorrent: python3-libtorrent (ltpeer.py, its "
         "default unchoke slots and connection limit, so not every peer may get in: check = every peer connected and no bad "
         "piece; RSS includes the python interpreter and, busy, the data file's pages that libtorrent maps).")
    emit()

# ---------------------------------------------------------------------------------------------------------------
# Issue 16's cases: rill → rill (pair), the write pattern (writes), 1 vs 4 GiB (sizes), a seeding soak (soak) and
# a 20-seeder swarm (swarm).

SOAK_SECONDS = env_float("SOAK_SECONDS", 3600)
SOAK_LEECHERS = env_int("SOAK_LEECHERS", 4)
SOAK_RATE = env_int("SOAK_RATE", 4_000_000)
SWARM_SEEDERS = env_int("SWARM_SEEDERS", 20)
SWARM_MIB = env_int("SWARM_MIB", 256)
SWARM_RATE = env_int("SWARM_RATE", 1_000_000)
SWARM_PROBE_MIB = env_int("SWARM_PROBE_MIB", 32)
# Transmission 3.00 keeps one connection per IP address, and every seeder here is 127.0.0.1: it would download
# from one seeder at 1 MB/s. It runs only when named here.
SWARM_CLIENTS = os.environ.get("SWARM_CLIENTS", "rill aria2c libtorrent rqbit").split()
CHURN = os.path.join(HERE, "churn.py")
STRACE_WRITES = "write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,sync_file_range,msync"


def thread_cpu(pid):
    """{tid: (name, utime+stime s)} for every live thread of process pid."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                s = f.read()
            name = s[s.index("(") + 1:s.rindex(")")]
            fields = s[s.rindex(")") + 2:].split()
            out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
        except (OSError, ValueError):
            pass
    return out


def cpu_shares():
    """(busy ticks, all ticks) of the whole machine from /proc/stat's first line."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6], sum(v)


def busy_cores(a, b):
    """Cores busy between two cpu_shares() samples: the busy share of all ticks times the cores (robust to a
    virtual machine's jumps in the tick counts)."""
    total = b[1] - a[1]
    return (os.cpu_count() or 1) * (b[0] - a[0]) / total if total > 0 else 0.0


def meminfo_dirty():
    """Dirty + Writeback of the whole machine, KiB."""
    v = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(("Dirty:", "Writeback:")):
                    v += int(line.split()[1])
    except (OSError, ValueError):
        pass
    return v


class Sampler:
    """measured()'s sample hook: the leecher's per-thread CPU (last sample), the machine's Dirty+Writeback peak,
    and optionally another process's RSS (a rill seeder beside it)."""

    def __init__(self, other_pid=None):
        self.threads = {}
        self.dirty_peak = 0
        self.other_pid = other_pid
        self.other_rss = 0

    def __call__(self, pid, _t):
        th = thread_cpu(pid)
        if th:
            self.threads = th
        self.dirty_peak = max(self.dirty_peak, meminfo_dirty())
        if self.other_pid:
            self.other_rss = max(self.other_rss, proc_status(self.other_pid).get("VmRSS", 0))

    def busiest_share(self):
        """The busiest thread's share of the process's CPU at the last sample (None if unknown)."""
        total = sum(c for _, c in self.threads.values())
        if total <= 0:
            return None
        return max(c for _, c in self.threads.values()) / total


def start_rill_seed(name, content, torrent=None, extra=()):
    """`rill seed` of content (no resume file: it hashes everything first); returns (Popen, rill's pid, port) once
    it advertises every piece."""
    remove_rill_resume(content)
    port = free_port()
    cmd = [RILL, "seed", torrent or content.torrent_nt, "-d", content.dir, "--no-ui", "--port", port, "--bind",
           "127.0.0.1", "--no-dht"] + list(extra)
    sp = spawn(name, cmd)
    pieces = (content.size + PIECE - 1) // PIECE
    wait_until("%s to advertise every piece" % name, lambda: probe_complete(port, content.infohash, pieces), 300, 0.2,
               [sp])
    return sp, leaf(sp.pid, 1), port


def case_pair(ctx):
    content = ctx["c1"]
    gib = content.size / GIB
    emit("== pair: rill seed -> rill download, %d MiB on loopback, no other peer (leecher given the seeder)" % (
        content.size >> 20))
    ok, why = rill_seed_available(content)
    if not ok:
        emit("   rill seed not available (it said: %s): case skipped" % why)
        emit()
        return
    sp, spid, port = start_rill_seed("pair-seeder", content)
    seed_hwm_check = proc_status(spid).get("VmHWM", 0)
    rows_raw = []
    # A round takes about two seconds, and this virtual machine's pace varies from one second to the next: at
    # least 5 rounds, however few the other cases run.
    for rnd in range(max(ROUNDS, PAIR_MIN_ROUNDS)):
        if out_of_time("pair", 60):
            break
        prepare_cache([content.path])
        smp = Sampler(other_pid=spid)
        s0, st0 = proc_cpu(spid), thread_cpu(spid)
        busy0 = cpu_shares()
        r = run_leecher("pair", "rill", content, content.torrent_nt, os.path.join(WORK, "out"), "r%d" % (rnd + 1),
                        peers=["127.0.0.1:%d" % port], sample=smp)
        busy1 = cpu_shares()
        s1, st1 = proc_cpu(spid), thread_cpu(spid)
        seed_cpu = (s1 - s0) if s0 is not None and s1 is not None else None
        seed_threads = {t: st1[t][1] - st0.get(t, ("", 0.0))[1] for t in st1}
        seed_busiest = max(seed_threads.values()) if seed_threads else None
        leech_cpu = (r.user or 0) + (r.sys or 0)
        share = smp.busiest_share()
        row = {"ok": r.ok, "wall": r.wall, "leech_cpu": leech_cpu, "leech_busiest": leech_cpu * share if share else None,
               "leech_threads": len(smp.threads), "seed_cpu": seed_cpu, "seed_busiest": seed_busiest,
               "seed_threads": len(st1), "leech_rss": r.maxrss, "seed_rss": smp.other_rss,
               "busy_cores": busy_cores(busy0, busy1), "others": r.others,
               "machine_cpu": max(0.0, (busy_cores(busy0, busy1) - r.others) * r.wall)}
        rows_raw.append(row)
        record("pair", "rill", "rill seed", r, content.size, r.ok,
               {k: v for k, v in row.items() if k not in ("ok", "wall")})
        say("    round %d  %s" % (rnd + 1, ("%.2f s  %.0f MB/s  leecher cpu %.2f s  seeder cpu %.2f s"
                                            % (r.wall, content.size / 1e6 / r.wall, leech_cpu, seed_cpu or 0))
                                           if r.ok else "FAILED"))
    stop(sp, pid=spid)
    remove_rill_resume(content)
    ok = [x for x in rows_raw if x["ok"]]
    if not ok:
        emit("   no successful run")
        emit()
        return
    med = lambda k: statistics.median(x[k] for x in ok if x[k] is not None) if any(
        x[k] is not None for x in ok) else None
    wall = med("wall")
    lc, sc = med("leech_cpu") / gib, med("seed_cpu") / gib
    lb = (med("leech_busiest") or med("leech_cpu")) / gib
    sb = (med("seed_busiest") or med("seed_cpu")) / gib
    limit_sum = 2.0 / (lc + sc)
    limit_thread = 1.0 / max(lb, sb)
    limit = min(limit_sum, limit_thread)
    # Each round against its own limit too: a round the machine slowed has its CPU and its wall both
    # inflated, so the per-round share is steadier than the share of the medians.
    shares = []
    for x in ok:
        xl = (x["leech_busiest"] or x["leech_cpu"]) / gib
        xs = (x["seed_busiest"] or x["seed_cpu"] or 0) / gib
        if x["seed_cpu"] is not None and x["leech_cpu"] > 0:
            xlimit = min(2.0 / ((x["leech_cpu"] + x["seed_cpu"]) / gib), 1.0 / max(xl, xs))
            shares.append(content.size / x["wall"] / (xlimit * GIB))
    rows = [["rill download (leecher)", "%.2f" % lc, "%.2f" % lb, "%d" % max(x["leech_threads"] for x in ok),
             mib(max(x["leech_rss"] or 0 for x in ok))],
            ["rill seed (seeder)", "%.2f" % sc, "%.2f" % sb, "%d" % max(x["seed_threads"] for x in ok),
             "%s (%s with its check)" % (mib(max(x["seed_rss"] for x in ok)), mib(seed_hwm_check))]]
    emit("   %d/%d ok, wall %.2f s (median; %.2f-%.2f), %.0f MB/s; other load %.2f cores" % (
        len(ok), len(rows_raw), wall, min(x["wall"] for x in ok), max(x["wall"] for x in ok),
        content.size / 1e6 / wall, med("others")))
    emit(fmt_table(["side", "CPU s/GiB", "busiest thread CPU s/GiB", "threads", "peak RSS MiB"], rows))
    emit("   two-core pair limit (estimate) = min(2 cores / (leecher + seeder CPU s/GiB), 1 / busiest thread's CPU")
    emit("   s/GiB) = min(%.0f, %.0f) = %.0f MB/s; measured %.0f MB/s = %.2f of it. It assumes CPU is the only limit,"
         % (limit_sum * GIB / 1e6, limit_thread * GIB / 1e6, limit * GIB / 1e6, content.size / 1e6 / wall,
            content.size / wall / (limit * GIB)))
    if shares:
        emit("   each round against its own limit: median %.2f (%.2f-%.2f over %d rounds)" % (
            statistics.median(shares), min(shares), max(shares), len(shares)))
    emit("   the work spreads perfectly over both cores and one thread cannot use more than one; kernel work charged")
    emit("   to no process (softirq, write-back kworkers) is left out, so it is an upper bound. CPU = utime+stime")
    emit("   from /proc (all threads): the leecher's from GNU time, the seeder's the difference over the leecher's")
    emit("   run; busiest thread from /proc/PID/task (runs.jsonl also has the machine's busy cores from /proc/stat,")
    emit("   which this virtual machine's tick counts make unreliable).")
    emit("   seeder RSS = VmRSS sampled while serving (its VmHWM including the initial data check in brackets).")
    emit()


class StraceWrites:
    """Write-family syscalls on the data files of one strace -f -y -s 0 log."""

    CALL = re.compile(r'^(\d+)\s+(\w+)\((\d+)<([^>]*)>')
    RESUMED = re.compile(r'^(\d+)\s+<\.\.\. (\w+) resumed>')
    RET = re.compile(r'\)\s+=\s+(-?\d+)')

    def __init__(self, path, out_dir, data_name):
        self.sizes = []  # bytes per successful write call on the data file(s)
        self.calls = {}  # call name -> count, data files
        self.other_files = 0  # write calls on other files in the download directory (resume, control files)
        self.syncs = {}  # fsync/fdatasync/sync_file_range/msync on data files
        self.syncs_any = {}  # the same on any file
        self.threads = set()  # tids that wrote to the data file
        pending = {}
        prefix = out_dir.rstrip("/") + "/"
        try:
            f = open(path, errors="replace")
        except OSError:
            return
        with f:
            for line in f:
                m = self.CALL.match(line)
                if m:
                    tid, call, fdpath = m.group(1), m.group(2), m.group(4)
                    if line.rstrip().endswith("<unfinished ...>"):
                        pending[tid] = (call, fdpath)
                        continue
                    text = line
                else:
                    m2 = self.RESUMED.match(line)
                    if not m2 or m2.group(1) not in pending:
                        continue
                    tid = m2.group(1)
                    call, fdpath = pending.pop(tid)
                    text = line
                rets = self.RET.findall(text)
                ret = int(rets[-1]) if rets else -1
                data = fdpath.startswith(prefix) and os.path.basename(fdpath) == data_name
                if call in ("fsync", "fdatasync", "sync_file_range", "msync"):
                    self.syncs_any[call] = self.syncs_any.get(call, 0) + 1
                    if data:
                        self.syncs[call] = self.syncs.get(call, 0) + 1
                    continue
                if data:
                    self.calls[call] = self.calls.get(call, 0) + 1
                    self.threads.add(tid)
                    if ret > 0:
                        self.sizes.append(ret)
                elif fdpath.startswith(prefix):
                    self.other_files += 1


def case_writes(ctx):
    content = ctx["c1"]
    gib = content.size / GIB
    emit("== writes: how each leecher writes %d MiB (one python3-libtorrent seeder via opentracker, as download)" % (
        content.size >> 20))
    if not have("strace"):
        emit("   strace missing: case skipped")
        emit()
        return
    clients, missing = available_clients()
    for m in missing:
        emit("   %s: not installed, skipped" % m)
    seeder = LtSeeder("wr-seeder", [(content.torrent, content.dir)])
    seeder.wait_ready()
    wait_until("opentracker to list the seeder", lambda: ctx["tracker"].lists(content.infohash, seeder.port),
               30, 0.2, [seeder.proc])
    res = {c: [] for c in clients}
    out = os.path.join(WORK, "out")
    for rnd in range(ROUNDS):
        for c in rotate(clients, rnd):
            if out_of_time("writes", 120):
                break
            # A plain run: MB/s and the kernel's write_bytes (GNU time's %O), fresh directory.
            prepare_cache([content.path])
            smp = Sampler()
            r = run_leecher("writes", c, content, content.torrent, out, "plain-r%d" % (rnd + 1), seeder=seeder,
                            sample=smp)
            # An untimed run under strace: the write calls themselves.
            prepare_cache([content.path])
            slog = os.path.join(LOGS, "writes-%s-r%d.strace" % (c, rnd + 1))
            wrap = ["strace", "-f", "-y", "-s", "0", "-e", "trace=" + STRACE_WRITES, "-o", slog, "--"]
            rs = run_leecher("writes", c, content, content.torrent, out, "strace-r%d" % (rnd + 1), seeder=seeder,
                             wrap=wrap)
            sw = StraceWrites(slog, out, content.name)
            x = {"ok": r.ok and rs.ok, "wall": r.wall, "others": r.others, "dev": (r.oublock or 0) * 512.0 / content.size,
                 "dev_strace": (rs.oublock or 0) * 512.0 / content.size, "dirty_peak": smp.dirty_peak,
                 "calls": sum(sw.calls.values()), "by_call": sw.calls, "bytes": sum(sw.sizes),
                 "median": statistics.median(sw.sizes) if sw.sizes else None,
                 "max": max(sw.sizes) if sw.sizes else None, "syncs": sw.syncs, "syncs_any": sw.syncs_any,
                 "other_files": sw.other_files, "threads": len(sw.threads)}
            res[c].append(x)
            record("writes", c, "plain", r, content.size, r.ok, {"device_per_byte": x["dev"],
                                                                 "dirty_peak_kib": smp.dirty_peak})
            record("writes", c, "strace", rs, content.size, rs.ok, {k: v for k, v in x.items() if k != "ok"})
            try:
                os.unlink(slog)  # tens of MB for some clients; the figures are in runs.jsonl
            except OSError:
                pass
            say("    round %d %-12s %s" % (rnd + 1, c, "%.0f MB/s  %d write calls (%s)  median %s B  max %s B  "
                                          "device %.3f B/B" % (content.size / 1e6 / r.wall, x["calls"],
                                                               ",".join("%s %d" % kv for kv in sorted(sw.calls.items())),
                                                               x["median"], x["max"], x["dev"])
                                          if x["ok"] else "FAILED"))
    seeder.stop()
    rows = []
    for c in clients:
        ok = [x for x in res[c] if x["ok"]]
        if not ok:
            rows.append([c, "0/%d" % len(res[c])] + ["-"] * 10)
            continue
        x = ok[-1] if len(ok) == 1 else sorted(ok, key=lambda v: v["calls"])[len(ok) // 2]
        syncs = ", ".join("%s %d" % kv for kv in sorted(x["syncs"].items())) or "0"
        calls = x["calls"]
        rows.append([c, "%d/%d" % (len(ok), len(res[c])),
                     "%.0f" % (content.size / 1e6 / statistics.median(v["wall"] for v in ok)),
                     "%.0f" % (calls / gib) if calls else "0 (mmap)",
                     "/".join(sorted(x["by_call"])) or "-",
                     "%d" % x["median"] if x["median"] else "-", "%d" % x["max"] if x["max"] else "-",
                     syncs, "%d" % x["other_files"],
                     "%.3f" % statistics.median(v["dev"] for v in ok),
                     "%.0f" % (max(v["dirty_peak"] for v in ok) / 1024.0),
                     "%.2f" % statistics.median(v["others"] for v in ok)])
    emit(fmt_table(["client", "ok", "MB/s", "data-file write calls/GiB", "calls", "median write B", "largest write B",
                    "syncs on data file", "writes to other files", "device bytes/byte", "Dirty+Writeback peak MiB",
                    "other load"], rows))
    emit("   write calls: a second, untimed run under `strace -f -y -e trace=%s`; -y names each" % STRACE_WRITES)
    emit("   fd's path, so only calls on the torrent's data file count (socket, pipe, log writes do not); sizes are")
    emit("   the calls' return values; 'other files' = resume/control files in the download directory. A client that")
    emit("   writes through mmap would make no write calls (its data reaches the file by page faults): see device B/B.")
    emit("   device bytes/byte = the kernel's write_bytes for the client process (GNU time %O x 512, all threads and")
    emit("   children) / torrent size, from the plain run. write_bytes counts page-cache pages the process dirtied")
    emit("   (4 KiB each, counted when a clean page becomes dirty, whether by write() or through a mapping): data that")
    emit("   will go to the device. A page re-dirtied before write-back counts once, after write-back again;")
    emit("   truncated dirty pages are not subtracted; the filesystem's journal and metadata writes by kernel threads")
    emit("   are not in it. Dirty+Writeback peak: /proc/meminfo, whole machine (other sessions' builds included).")
    emit()


def case_sizes(ctx):
    contents = [ctx["c1"], ctx["c4"]]
    emit("== sizes: %d MiB and %d MiB torrents (one python3-libtorrent seeder, both torrents, via opentracker)" % (
        contents[0].size >> 20, contents[1].size >> 20))
    clients, missing = available_clients()
    for m in missing:
        emit("   %s: not installed, skipped" % m)
    seeder = LtSeeder("sizes-seeder", [(c.torrent, c.dir) for c in contents])
    seeder.wait_ready(600)
    for c in contents:
        wait_until("opentracker to list the seeder", lambda: ctx["tracker"].lists(c.infohash, seeder.port),
                   30, 0.2, [seeder.proc])
    runs = {(cl, c.label): [] for cl in clients for c in contents}
    for rnd in range(ROUNDS):
        for cl in rotate(clients, rnd):
            for c in rotate(contents, rnd):
                if out_of_time("sizes", 120):
                    break
                prepare_cache([c.path])
                smp = Sampler()
                r = run_leecher("sizes", cl, c, c.torrent, os.path.join(WORK, "out"), "%s-r%d" % (c.label, rnd + 1),
                                seeder=seeder, sample=smp)
                r.dirty_peak = smp.dirty_peak
                runs[(cl, c.label)].append(r)
                record("sizes", cl, c.label, r, c.size, r.ok, {"dirty_peak_kib": smp.dirty_peak,
                                                               "device_per_byte": (r.oublock or 0) * 512.0 / c.size})
                say("    round %d %-12s %-5s %s" % (rnd + 1, cl, c.label, (
                    "%.2f s  %.0f MB/s  cpu %.2f s/GiB  dirty peak %.0f MiB" % (
                        r.wall, c.size / 1e6 / r.wall, ((r.user or 0) + (r.sys or 0)) / (c.size / GIB),
                        smp.dirty_peak / 1024.0)) if r.ok else "FAILED"))
    rows = []
    for cl in clients:
        cpus = {}
        for c in contents:
            s = summarize(runs[(cl, c.label)], c.size)
            ok = [r for r in runs[(cl, c.label)] if r.ok]
            if s is None:
                rows.append([cl, "%d MiB" % (c.size >> 20), "0/%d" % len(runs[(cl, c.label)])] + ["-"] * 7)
                continue
            sys_gib = statistics.median(r.sys / (c.size / GIB) for r in ok if r.sys is not None)
            cpus[c.label] = float(s["cpu"]) if s["cpu"] != "-" else None
            ratio = ""
            if c is contents[1] and cpus.get(contents[0].label) and cpus.get(c.label):
                ratio = "x%.2f" % (cpus[c.label] / cpus[contents[0].label])
            rows.append([cl, "%d MiB" % (c.size >> 20), s["n"], s["mbs"], s["cpu"], ratio, "%.2f" % sys_gib,
                         "%.0f" % (max(r.dirty_peak for r in ok) / 1024.0), s["rss"], s["others"]])
    emit(fmt_table(["client", "torrent", "ok", "MB/s", "CPU s/GiB", "vs 1 GiB", "of it sys s/GiB",
                    "Dirty+Writeback peak MiB", "peak RSS MiB", "other load"], rows))
    # Where rill's CPU goes on the larger torrent (the growth is system time): one run under perf.
    if "rill" in clients and have("perf") and os.environ.get("SIZES_PERF", "1") == "1" \
            and not out_of_time("sizes", 180):
        big = contents[1]
        data = os.path.join(LOGS, "sizes-rill-big.perf.data")
        prepare_cache([big.path])
        r = run_leecher("sizes", "rill", big, big.torrent, os.path.join(WORK, "out"), "%s-perf" % big.label,
                        seeder=seeder, wrap=["perf", "record", "-F", "499", "-q", "-o", data, "--"])
        top = perf_top(data)
        if top:
            emit("   rill on %d MiB under perf record -F 499 (%s), symbols over 0.7 %% of samples:" % (
                big.size >> 20, "%.0f MB/s" % (big.size / 1e6 / r.wall) if r.ok else "FAILED"))
            for line in top:
                emit(line)
    emit("   Dirty+Writeback: /proc/meminfo sampled every 0.1 s during the run (whole machine). The kernel starts")
    emit("   background write-back at vm.dirty_background_ratio (%s%%) / dirty_background_bytes (%s) of available" % (
        sysctl("vm/dirty_background_ratio"), sysctl("vm/dirty_background_bytes")))
    emit("   memory and throttles writers at vm.dirty_ratio (%s%%)." % sysctl("vm/dirty_ratio"))
    emit()
    seeder.stop()


_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def seed_status(log_path):
    """(bytes uploaded, peers) from the last status line of a `rill seed --no-ui` log ("seeding  up 5.32 GiB
    (11.3 MiB/s)  peers 3"), or (None, None) before the first one. Three significant figures."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None, None
    for line in reversed(tail.splitlines()):
        m = re.search(r"\bup ([0-9.]+) (B|KiB|MiB|GiB|TiB) \(.*\bpeers (\d+)", line)
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2)]), int(m.group(3))
    return None, None


def case_soak(ctx):
    content = ctx["c1"]
    window = min(300.0, SOAK_SECONDS / 2.0)
    emit("== soak: rill seed of %d MiB for %.0f s with churning leechers (%d python3-libtorrent at a time, %.1f MB/s "
         "each%s)" % (content.size >> 20, SOAK_SECONDS, SOAK_LEECHERS, SOAK_RATE / 1e6,
                      ", plus short aria2c runs" if have("aria2c") else ""))
    if not lt_available():
        emit("   python3-libtorrent missing: case skipped")
        emit()
        return
    if out_of_time("soak", SOAK_SECONDS + 120):
        emit()
        return
    # A plain seed, as a device would run it: no --stats-json, whose aggregator keeps every closed peer (up to
    # 1,000, the point of a profile) and so grows with the churn by design. Bytes served and peers are read from
    # the status line rill prints every few seconds.
    seed_log = os.path.join(LOGS, "soak-seeder.log")
    sp, spid, port = start_rill_seed("soak-seeder", content, torrent=content.torrent)
    wait_until("opentracker to list rill seed", lambda: ctx["tracker"].lists(content.infohash, port), 60, 0.5, [sp])
    churn_status = os.path.join(WORK, "churn.status.json")
    cmd = [PY, CHURN, "--torrent", content.torrent_nt, "--peer", "127.0.0.1:%d" % port,
           "--work", os.path.join(WORK, "churn"), "--seconds", int(SOAK_SECONDS), "--status", churn_status,
           "--leechers", SOAK_LEECHERS, "--rate", SOAK_RATE]
    if have("aria2c"):
        cmd += ["--aria2-torrent", content.torrent, "--aria2-rate", SOAK_RATE]
    load = Load()
    cp = spawn("soak-churn", cmd, life=SOAK_SECONDS + 60)
    t0 = time.monotonic()
    samples = []  # (t, rss KiB, fds, cpu s, uploaded, peers)

    def sample():
        st = proc_status(spid)
        try:
            fds = len(os.listdir("/proc/%d/fd" % spid))
        except OSError:
            fds = None
        up, peers = seed_status(seed_log)
        samples.append((time.monotonic() - t0, st.get("VmRSS", 0), fds, proc_cpu(spid), up, peers or 0))

    err = None
    while time.monotonic() - t0 < SOAK_SECONDS:
        if sp.poll() is not None:
            err = "rill seed exited (code %s) after %.0f s; see soak-seeder.log" % (sp.returncode, time.monotonic() - t0)
            break
        if cp.poll() is not None and time.monotonic() - t0 < SOAK_SECONDS - 10:
            err = "churn.py exited (code %s) after %.0f s; see soak-churn.log" % (cp.returncode, time.monotonic() - t0)
            break
        sample()
        time.sleep(min(5.0, max(0.1, SOAK_SECONDS - (time.monotonic() - t0))))
    sample()
    others = load.others()
    stop(cp, grace=20)
    left_at = time.monotonic()
    # rill prints its status line every few seconds: wait (bounded) until it shows the leechers gone.
    try:
        wait_until("rill seed's status to show no peer", lambda: seed_status(seed_log)[1] == 0, 15, 0.5, [sp])
    except RuntimeError:
        pass
    sample()
    churn = read_json(churn_status) or {}
    hwm = max([proc_status(spid).get("VmHWM", 0)] + [x[1] for x in samples])
    stop(sp, pid=spid)
    remove_rill_resume(content)
    shutil.rmtree(os.path.join(WORK, "churn"), ignore_errors=True)
    with open(RUNS, "a") as f:
        f.write(json.dumps({"case": "soak", "samples": samples, "churn": churn, "hwm_kib": hwm, "err": err}) + "\n")
    if err:
        emit("   ERROR: " + err)
    run = [s for s in samples if s[0] <= SOAK_SECONDS + 0.5]
    if len(run) < 4:
        emit("   too few samples")
        emit()
        return
    end_t = run[-1][0]

    def win(a, b):
        w = [s for s in run if a - 0.01 <= s[0] <= b + 0.01]
        if len(w) < 2:
            return None
        cpu = (w[-1][3] - w[0][3]) / max(1e-3, w[-1][0] - w[0][0]) * 100.0 if w[0][3] is not None else None
        up = (w[-1][4] or 0) - (w[0][4] or 0)
        fds = [s[2] for s in w if s[2] is not None]
        return {"t": "%.0f-%.0f s" % (w[0][0], w[-1][0]), "rss": statistics.median(s[1] for s in w),
                "rss_max": max(s[1] for s in w), "fds": "%d-%d" % (min(fds), max(fds)) if fds else "-",
                "cpu": cpu, "up": up, "mbs": up / 1e6 / max(1e-3, w[-1][0] - w[0][0]),
                "peers": statistics.median(s[5] for s in w)}

    rows = []
    for label, w in (("start (first %.0f s)" % window, win(0, window)),
                     ("end (last %.0f s)" % window, win(end_t - window, end_t))):
        if w is None:
            continue
        rows.append([label, w["t"], mib(w["rss"]), mib(w["rss_max"]), w["fds"],
                     "%.2f" % w["cpu"] if w["cpu"] is not None else "-", "%.0f" % (w["up"] / 1e6),
                     "%.1f" % w["mbs"], "%.0f" % w["peers"]])
    emit(fmt_table(["window", "t", "RSS MiB (median)", "RSS MiB (max)", "open fds", "CPU % of a core",
                    "MB served", "MB/s served", "peers (median)"], rows))
    # The curve, not only its ends: a leak keeps climbing, an allocator's high-water mark levels off.
    marks = []
    for k in range(11):
        t = end_t * k / 10.0
        near = min(run, key=lambda s: abs(s[0] - t))
        marks.append("%.0f s %s" % (near[0], mib(near[1])))
    emit("   RSS MiB over the soak: " + ", ".join(marks))
    after = samples[-1]
    total_up = (run[-1][4] or 0)
    emit("   whole soak: %.0f s, %.1f GB served (%.2f x the torrent), rill peak RSS (VmHWM or samples, with its check) "
         "%s MiB; other load %.2f cores" % (end_t, total_up / 1e9, total_up / float(content.size), mib(hwm), others))
    emit("   leechers: %s started, %s got what they wanted, %s left early on purpose, %s stayed their maximum; %s "
         "aria2c runs; %.1f GB received by libtorrent leechers" % (
             churn.get("started", "?"), churn.get("finished", "?"), churn.get("abandoned", "?"),
             churn.get("timed_out", "?"), churn.get("aria2_runs", "?"), (churn.get("payload_total") or 0) / 1e9))
    emit("   %.0f s after every leecher left: %s open fds, RSS %s MiB, %s peers" % (
        after[0] - (left_at - t0), after[2], mib(after[1]), after[5]))
    emit("   sampled every 5 s: VmRSS and /proc/PID/fd of rill; CPU = utime+stime (all threads) over the window;")
    emit("   bytes served and peers from rill's status line (no --stats-json: see the README). Leechers: churn.py (each its own")
    emit("   libtorrent session, capped at SOAK_RATE, fetching a random 2-30 % run of pieces or all of it, 30 % leave")
    emit("   after 5-60 s) given rill directly; aria2c runs find rill through opentracker.")
    emit()


class SeederGroup:
    def __init__(self, seeders):
        self.seeders = seeders

    def dial_to(self, infohash, port):
        for s in self.seeders:
            s.dial_to(infohash, port)

    def payload_up(self):
        return sum(s.payload_up() for s in self.seeders)


def analyze_swarm_trace(path, size, cap):
    """What a rill --trace of a swarm download says about where the time goes; returns report lines."""
    t_first = None
    peers = {}  # peer -> dict
    rates = {}  # peer -> [(t, down, in_flight, target)]
    trate = []  # (t, down)
    blocks = []  # (t, len)
    pieces = {}  # piece -> [(offset, peer)] in arrival order (fresh blocks)
    requests = {}  # piece -> set of peers asked for its blocks
    completed = None
    read_back_bytes = None  # the last loop event's bytes_read_back
    with open(path, errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            ev, t = e.get("ev"), e.get("t", 0) / 1e6
            if ev == "header":
                continue
            p = e.get("peer")
            if ev in ("connect_attempt", "accepted"):
                peers[p] = {"addr": e.get("addr"), "attempt": t, "down": 0}
            elif p in peers:
                d = peers[p]
                if ev in ("connected", "handshake") and ev not in d:
                    d[ev] = t
                elif ev == "unchoke" and e.get("by") == "peer" and "unchoke" not in d:
                    d["unchoke"] = t
                elif ev == "request":
                    requests.setdefault(e.get("piece"), set()).add(p)
                elif ev == "block":
                    if e.get("fresh", True):
                        pieces.setdefault(e.get("piece"), []).append((e.get("offset", 0), p))
                    d.setdefault("first_block", t)
                    d["last_block"] = t
                    d["down"] += e.get("len", 0)
                    blocks.append((t, e.get("len", 0)))
                    d.setdefault("lat", []).append((t, e.get("latency_us", 0)))
                elif ev == "rate":
                    rates.setdefault(p, []).append((t, e.get("down", 0), e.get("in_flight", 0), e.get("target", 0)))
                elif ev == "peer_dropped":
                    d["dropped"] = (t, e.get("reason"))
                elif ev == "connect_failed":
                    d["failed"] = (t, e.get("reason"))
            if ev == "torrent_rate":
                trate.append((t, e.get("down", 0)))
            elif ev == "loop" and "bytes_read_back" in e:
                read_back_bytes = e["bytes_read_back"]
            elif ev == "completed" and completed is None:
                completed = t
    out = []
    if not blocks:
        return ["   trace: no blocks"]
    useful = {p: d for p, d in peers.items() if d["down"] > 0}
    unch = sorted(d["unchoke"] for d in useful.values() if "unchoke" in d)
    first = blocks[0][0]
    end = completed or blocks[-1][0]
    out.append("   trace: %d connections (%d delivered data); first block at %.2f s; %d seeders unchoked us by %.2f s "
               "(first %.2f s); complete at %.2f s" % (len(peers), len(useful), first, len(unch),
                                                       unch[-1] if unch else float("nan"),
                                                       unch[0] if unch else float("nan"), end))
    # Cumulative bytes: time to 5 % and to 95 %, steady rate in between, and the tail.
    total = 0
    t5 = t40 = t95 = None
    for t, n in blocks:
        total += n
        if t5 is None and total >= 0.05 * size:
            t5 = t
        if t40 is None and total >= 0.40 * size:
            t40 = t
        if t95 is None and total >= 0.95 * size:
            t95 = t
    if t5 is not None and t95 is not None and t95 > t5:
        steady = 0.90 * size / (t95 - t5)
        out.append("   steady (5 %%->95 %% of bytes): %.2f MB/s = %.3f of the %.0f MB/s cap; start (0 -> 5 %%) %.2f s; "
                   "tail (95 %% -> complete) %.2f s at %.2f MB/s" % (
                       steady / 1e6, steady / cap, cap / 1e6, t5, end - t95, 0.05 * size / 1e6 / max(1e-3, end - t95)))
        ideal = size / cap
        out.append("   at the cap the %d MiB would take %.2f s; the trace's complete time is %.2f s: %.2f s lost, of "
                   "which start-up (first block) %.2f s" % (size >> 20, ideal, end, end - ideal, first))
    # Per-peer rates over the steady window.
    per = []
    # From 40 % of the bytes (slow start's deep early queues have drained by then) to 95 %.
    lo = max((unch[-1] if unch else first) + 1.0, t40 or 0.0)
    hi = (t95 or end) - 0.5
    for p, d in useful.items():
        rs = [r for r in rates.get(p, []) if lo <= r[0] <= hi]
        if not rs:
            continue
        down = statistics.mean(r[1] for r in rs)
        per.append((down, p, d, statistics.median(r[2] for r in rs), statistics.median(r[3] for r in rs),
                    sum(1 for r in rs if r[1] < 0.5 * cap / SWARM_SEEDERS), len(rs),
                    statistics.median([l for tl, l in d.get("lat", []) if lo <= tl <= hi] or [0]) / 1000.0))
    if per:
        per.sort(key=lambda x: x[0])
        downs = [x[0] for x in per]
        out.append("   per seeder over %.1f-%.1f s (40 %% -> 95 %% of bytes): mean down %.3f-%.3f MB/s (median %.3f); "
                   "in_flight median %s-%s, target %s-%s; block latency median %.0f-%.0f ms" % (
                       lo, hi, downs[0] / 1e6, downs[-1] / 1e6, statistics.median(downs) / 1e6,
                       min(x[3] for x in per), max(x[3] for x in per), min(x[4] for x in per),
                       max(x[4] for x in per), min(x[7] for x in per), max(x[7] for x in per)))
        slow = [x for x in per if x[5] > 0]
        if slow:
            out.append("   seconds below half a seeder's share: " + ", ".join(
                "%s %d/%d" % (x[2]["addr"], x[5], x[6]) for x in slow[:8]))
        out.append("   slowest seeders: " + ", ".join("%s %.3f MB/s (in_flight %s, target %s)" % (
            x[2]["addr"], x[0] / 1e6, x[3], x[4]) for x in per[:3]) + "; fastest: " + ", ".join(
            "%s %.3f" % (x[2]["addr"], x[0] / 1e6) for x in per[-2:]))
    # Hashing: a piece's running hash takes its blocks in order; one that arrives past a gap is held in
    # memory (32 at most, over all pieces) until the gap fills, or else read back from disk (the trace's
    # `loop` events count those bytes). The replay says how many arrived past a gap.
    if pieces:
        blocks_total = early = 0
        multi = 0
        for piece, arr in pieces.items():
            hashed = 0
            for off, _ in arr:
                if off // 16384 == hashed:
                    hashed += 1
            blocks_total += len(arr)
            early += len(arr) - hashed
            if len({q for _, q in arr}) > 1:
                multi += 1
        asked = [len(v) for v in requests.values()]
        out.append("   hashing: %d of %d pieces got blocks from more than one peer (peers asked per piece: median %s, "
                   "max %s); %.0f %% of the blocks (%.0f MiB of %.0f) arrived past a gap in their piece; %s" % (
                       multi, len(pieces), statistics.median(asked) if asked else "-", max(asked) if asked else "-",
                       100.0 * early / max(1, blocks_total), early / 64.0, blocks_total / 64.0,
                       "%.1f MiB (%.0f %%) were read back from disk to hash" % (
                           read_back_bytes / 2**20, 100.0 * read_back_bytes / max(1, blocks_total * 16384))
                       if read_back_bytes is not None else "the trace has no loop event with bytes_read_back"))
    if trate:
        gaps = [(t, d) for t, d in trate if first + 1 <= t <= (t95 or end) and d < 0.8 * cap]
        out.append("   torrent_rate seconds under 0.8 of the cap between the first block and 95 %%: %d of %d%s" % (
            len(gaps), sum(1 for t, _ in trate if first + 1 <= t <= (t95 or end)),
            (" (" + ", ".join("%.0f s: %.1f MB/s" % (t, d / 1e6) for t, d in gaps[:8]) + ")") if gaps else ""))
    return out


def perf_top(data, n=14):
    """The top symbols of a perf.data, as report lines."""
    try:
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
                            "--percent-limit", "0.7"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = [l for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")]
    return ["     " + l.strip() for l in lines[:n]]


def strace_summary(path):
    """{syscall: calls} from strace -c -f output."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1].isidentifier() \
                        and parts[-1] != "total":
                    try:
                        out[parts[-1]] = int(parts[3])
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def case_swarm(ctx):
    content = ctx["cs"]
    gib = content.size / GIB
    cap = SWARM_SEEDERS * SWARM_RATE
    emit("== swarm: %d MiB from %d python3-libtorrent seeders, each capped at %.1f MB/s upload (%.0f MB/s in all), "
         "via opentracker" % (content.size >> 20, SWARM_SEEDERS, SWARM_RATE / 1e6, cap / 1e6))
    clients, missing = available_clients(SWARM_CLIENTS)
    if "transmission" not in SWARM_CLIENTS:
        emit("   transmission: left out (SWARM_CLIENTS): Transmission 3.00 accepts one connection per IP address and")
        emit("   every seeder is 127.0.0.1, so it gets one seeder (it downloaded at 1.0 MB/s when tried)")
    for m in missing:
        emit("   %s: not installed, skipped" % m)
    seeders = [LtSeeder("swarm-seeder-%02d" % i, [(content.torrent, content.dir)], upload_limit=SWARM_RATE,
                        payload_limit=True)
               for i in range(SWARM_SEEDERS)]
    for s in seeders:
        s.wait_ready(600)
    for s in seeders:
        wait_until("opentracker to list " + s.name, lambda: ctx["tracker"].lists(content.infohash, s.port), 30, 0.2,
                   [s.proc])
    group = SeederGroup(seeders)
    single = LtSeeder("swarm-single", [(content.torrent_nt, content.dir)])
    single.wait_ready()
    # The same aggregate rate from one seeder: separates what 20 peers cost from what a 14 s download at
    # 20 MB/s costs (wake-ups spread over the time, the seeders' processes sharing the cores).
    single_capped = LtSeeder("swarm-single-capped", [(content.torrent_nt, content.dir)], upload_limit=cap,
                             payload_limit=True)
    single_capped.wait_ready()
    variants = clients + (["rill, 1 seeder uncapped", "rill, 1 seeder at the cap"] if "rill" in clients else [])
    runs = {v: [] for v in variants}
    out = os.path.join(WORK, "out")
    for rnd in range(ROUNDS):
        for v in rotate(variants, rnd):
            if out_of_time("swarm", 90):
                break
            prepare_cache([content.path])
            if v.startswith("rill, 1 seeder"):
                one = single if v.endswith("uncapped") else single_capped
                r = run_leecher("swarm", "rill", content, content.torrent_nt, out,
                                "%s-r%d" % ("single" if one is single else "single-capped", rnd + 1),
                                peers=["127.0.0.1:%d" % one.port])
            else:
                r = run_leecher("swarm", v, content, content.torrent, out, "r%d" % (rnd + 1), seeder=group)
            runs[v].append(r)
            record("swarm", v, "%d seeders" % SWARM_SEEDERS, r, content.size, r.ok)
            say("    round %d %-24s %s" % (rnd + 1, v, ("%.2f s  %.2f MB/s  cpu %.2f s/GiB  rss %s MiB" % (
                r.wall, content.size / 1e6 / r.wall, ((r.user or 0) + (r.sys or 0)) / gib, mib(r.maxrss)))
                if r.ok else "FAILED"))
    rows = []
    single_cpu = capped_cpu = None
    for v in variants:
        s = summarize(runs[v], content.size)
        if s is None:
            rows.append([v, "0/%d" % len(runs[v])] + ["-"] * 7)
            continue
        mbs = content.size / 1e6 / float(s["wall"])
        frac = "%.3f" % (mbs * 1e6 / cap) if v != "rill, 1 seeder uncapped" else "(uncapped)"
        if v == "rill, 1 seeder uncapped":
            single_cpu = float(s["cpu"])
        elif v == "rill, 1 seeder at the cap":
            capped_cpu = float(s["cpu"])
        rows.append([v, s["n"], s["wall"], s["range"], "%.2f" % mbs, frac, s["cpu"], s["rss"], s["others"]])
    emit(fmt_table(["client", "ok", "wall s (median)", "min-max", "MB/s", "of the cap", "CPU s/GiB", "peak RSS MiB",
                    "other load"], rows))
    rs = summarize(runs.get("rill", []), content.size)
    if rs and single_cpu:
        emit("   rill CPU per GiB: %.2f in the swarm against %.2f from one uncapped seeder (x%.2f; aim <= x1.3)" % (
            float(rs["cpu"]), single_cpu, float(rs["cpu"]) / single_cpu))
    if rs and capped_cpu:
        emit("   rill CPU per GiB: %.2f in the swarm against %.2f from one seeder capped at %.0f MB/s (x%.2f): what"
             " the 20 peers cost beyond the slower download" % (float(rs["cpu"]), capped_cpu, cap / 1e6,
                                                                 float(rs["cpu"]) / capped_cpu))
    emit("   wall = process start to exit (transmission, when named: to its torrent-done script; every seeder dials")
    emit("   it). The seeders' cap counts what they send (payload and the 13-byte message headers); their estimate")
    emit("   of TCP/IP overhead is left out (rate_limit_ip_overhead off), so the cap is what a leecher can get.")
    # Diagnosis: rill with --trace, under strace -c and under perf, from the swarm and from the single uncapped
    # seeder, to see where the time and the CPU go.
    if "rill" in clients:
        for label, torrent, kw, rate_cap in (
                ("%d capped seeders" % SWARM_SEEDERS, content.torrent, {"seeder": group}, cap),
                ("1 uncapped seeder", content.torrent_nt, {"peers": ["127.0.0.1:%d" % single.port]}, None)):
            if out_of_time("swarm", 120):
                break
            tag = "diag-%s" % ("swarm" if rate_cap else "single")
            trace = os.path.join(WORK, "swarm-trace.jsonl")
            prepare_cache([content.path])
            r = run_leecher("swarm", "rill", content, torrent, out, tag + "-trace", extra=["--trace", trace], **kw)
            emit("   rill, %s, with --trace: %s" % (label, "%.2f s, %.2f MB/s" % (r.wall, content.size / 1e6 / r.wall)
                                                     if r.ok else "FAILED"))
            if os.path.exists(trace):
                for line in analyze_swarm_trace(trace, content.size, rate_cap or 1e12):
                    if rate_cap or "hashing:" in line or "trace:" in line:
                        emit(line)
                shutil.copy(trace, os.path.join(LOGS, "%s.trace.jsonl" % tag))
                os.unlink(trace)
            sc = os.path.join(LOGS, "%s.strace-c" % tag)
            prepare_cache([content.path])
            r = run_leecher("swarm", "rill", content, torrent, out, tag + "-strace-c",
                            wrap=["strace", "-c", "-f", "-o", sc, "--"], **kw)
            calls = strace_summary(sc)
            if calls:
                sock = calls.get("recvfrom", 0) + calls.get("recvmsg", 0)
                disk = calls.get("pread64", 0) + calls.get("preadv", 0)
                emit("   under strace -c -f (%s), per GiB: %.0f syscalls; %.0f socket reads (recvfrom: %s bytes each "
                     "on average), %.0f disk reads (pread64: piece read-backs), %.0f disk writes, %.0f sends, %.0f "
                     "epoll_wait; all calls: %s" % (
                         "%.2f MB/s" % (content.size / 1e6 / r.wall) if r.ok else "FAILED",
                         sum(calls.values()) / gib, sock / gib, "%.0f" % (content.size * 1.0 / sock) if sock else "-",
                         disk / gib, sum(v for k, v in calls.items() if k.startswith(("write", "pwrite"))) / gib,
                         (calls.get("sendto", 0) + calls.get("sendmsg", 0) + calls.get("writev", 0)) / gib,
                         calls.get("epoll_wait", 0) / gib,
                         ", ".join("%s %d" % kv for kv in sorted(calls.items(), key=lambda kv: -kv[1])[:8])))
            if have("perf") and not out_of_time("swarm", 120):
                data = os.path.join(LOGS, "%s.perf.data" % tag)
                prepare_cache([content.path])
                r = run_leecher("swarm", "rill", content, torrent, out, tag + "-perf",
                                wrap=["perf", "record", "-F", "999", "-q", "-o", data, "--"], **kw)
                top = perf_top(data)
                if top:
                    emit("   perf record -F 999 (%s), symbols over 0.7 %% of samples:" % (
                        "%.2f MB/s" % (content.size / 1e6 / r.wall) if r.ok else "FAILED"))
                    for line in top:
                        emit(line)
    for s in seeders:
        s.stop()
    single.stop()
    single_capped.stop()
    # What one capped seeder lets through when it is the only one: the steady payload rate each of the 20 could
    # give, against which the swarm's per-seeder rates above compare (SWARM_PROBE_MIB=0: not run).
    probe = ctx.get("cp")
    if probe is not None and not out_of_time("swarm", 3 * probe.size / SWARM_RATE + 60):
        capped = LtSeeder("swarm-probe-seeder", [(probe.torrent_nt, probe.dir)], upload_limit=SWARM_RATE,
                        payload_limit=True)
        capped.wait_ready()
        for c in [c for c in ("rill", "libtorrent") if c in clients]:
            trace = os.path.join(WORK, "swarm-probe.jsonl")
            prepare_cache([probe.path])
            r = run_leecher("swarm", c, probe, probe.torrent_nt, out, "probe",
                            peers=["127.0.0.1:%d" % capped.port],
                            extra=["--trace", trace] if c == "rill" else [])
            line = "   one seeder capped at %.1f MB/s alone, %d MiB, %s: %s" % (
                SWARM_RATE / 1e6, probe.size >> 20, c,
                "%.3f MB/s start to exit" % (probe.size / 1e6 / r.wall) if r.ok else "FAILED")
            if c == "rill" and os.path.exists(trace):
                got = [l for l in analyze_swarm_trace(trace, probe.size, SWARM_RATE)
                       if "steady" in l or "per seeder" in l]
                emit(line)
                for l in got:
                    emit("  " + l)
                shutil.copy(trace, os.path.join(LOGS, "swarm-probe-rill.trace.jsonl"))
                os.unlink(trace)
            else:
                emit(line)
        capped.stop()
    emit()


def main():
    cases = sys.argv[1:] or list(ALL_CASES)
    for c in cases:
        if c not in ALL_CASES + EXTRA_CASES:
            sys.exit("bench: unknown case '%s' (cases: %s)" % (c, " ".join(ALL_CASES + EXTRA_CASES)))
    shutil.rmtree(LOGS, ignore_errors=True)
    os.makedirs(LOGS)
    os.makedirs(WORK, exist_ok=True)
    if os.path.exists(RUNS):
        os.unlink(RUNS)
    t_start = time.monotonic()
    global DROP_OK
    DROP_OK = drop_caches()
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) >> 20
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    emit("rill scripts/bench  %s" % time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    emit("machine: %s, %d cores, %d GiB RAM, kernel %s" % (cpu, os.cpu_count(), mem, os.uname().release))
    rill_label = ("%s (RILL_BIN)" % RILL) if os.environ.get("RILL_BIN") else "%s%s target/release" % (
        rev, "+uncommitted src changes" if dirty else "")
    emit("%s, %s; %s; libtorrent %s; %s; %s" % (
        version([RILL, "--version"]), rill_label, version(["aria2c", "--version"]),
        subprocess.run([PY, "-c", "import libtorrent; print(libtorrent.__version__)"], capture_output=True,
                       text=True).stdout.strip() or "missing",
        version(["transmission-daemon", "--version"]), version(["rqbit", "--version"]) if have("rqbit")
        else "rqbit not installed"))
    emit("settings: ROUNDS=%d (clients alternate, order rotated each round), %d KiB pieces, cache=%s (%s), "
         "drop_caches %s" % (
             ROUNDS, PIECE >> 10, CACHE,
             "seeder data read into the page cache before every run" if CACHE == "hot"
             else "page cache dropped before every run", "works" if DROP_OK else "NOT permitted"))
    emit("figures: wall = median over rounds; MB/s = 10^6 bytes / median wall; CPU = user+sys of the leecher "
         "(GNU time), median; peak RSS = GNU time max RSS, worst round; peak anon = sampled RssAnon (heap, no "
         "file pages), worst round")
    emit("seeders: python3-libtorrent (%s settings; loopback only; DHT/LSD/UPnP/NAT-PMP/uTP/PEX off, except the "
         "utp case's uTP-only seeder; several connections per IP), full data check before serving (not seed_mode: that hashes each piece on its first "
         "upload, which would slow only the first leecher)" % SEEDER_PROFILE)
    emit("note: libtorrent 2.0 maps the files it writes (mmap): its RSS counts those file pages; see peak anon.")
    emit("other load = cores used by processes that are not the bench's own during the run (median; 0 = quiet; "
         "the machine has %d). Before each run the bench waits up to %g s for it to fall below %g cores." % (
             os.cpu_count(), QUIET_WAIT, QUIET_CORES))
    emit()
    tracker = Tracker()
    say("setup: content and torrents under %s" % WORK)
    ctx = {"tracker": tracker}
    if any(c not in ("many", "daemon", "dht", "view", "peers") for c in cases):  # those make their own torrents and need no tracker
        ctx["c1"] = Content("%dM" % (SIZE >> 20), SIZE, tracker.url)
        if "memory" in cases or "sizes" in cases:
            ctx["c4"] = Content("%dM" % (BIG >> 20), BIG, tracker.url)
        if "swarm" in cases:
            ctx["cs"] = Content("swarm%dM" % SWARM_MIB, SWARM_MIB << 20, tracker.url)
            if SWARM_PROBE_MIB > 0:
                ctx["cp"] = Content("probe%dM" % SWARM_PROBE_MIB, SWARM_PROBE_MIB << 20, tracker.url)
        hashes = [ctx["c1"].infohash] + [ctx[k].infohash for k in ("c4", "cs") if k in ctx]
        if have("opentracker"):
            tracker.start(hashes)
        elif "download" in cases or "memory" in cases:
            sys.exit("bench: opentracker missing (scripts/bench installs it)")
    funcs = {"download": case_download, "memory": case_memory, "latency": case_latency, "utp": case_utp,
             "encryption": case_encryption, "upload": case_upload,
             "endgame": case_endgame, "many": case_many, "daemon": case_daemon, "dht": case_dht, "view": case_view,
             "trace": case_trace, "peers": case_peers, "pair": case_pair, "writes": case_writes,
             "sizes": case_sizes, "soak": case_soak, "swarm": case_swarm}
    failed = []
    for c in cases:
        if remaining() < 60:
            emit("== %s: skipped, the bench time budget (BENCH_TIMEOUT=%g s) is spent" % (c, TOTAL))
            continue
        t = time.monotonic()
        try:
            funcs[c](ctx)
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            emit("== %s: ERROR %s" % (c, e))
            emit()
            failed.append(c)
        say("   (%s case took %.0f s)" % (c, time.monotonic() - t))
    if tracker.proc:
        stop(tracker.proc)
    if not KEEP:
        shutil.rmtree(WORK, ignore_errors=True)
    emit("runs that started after waiting %g s for a quiet machine without getting one: %d of %d" % (
        QUIET_WAIT, BUSY_STARTS[0], BUSY_STARTS[1]))
    emit("bench took %.0f s; table in %s, raw runs in %s, logs in %s" % (
        time.monotonic() - t_start, os.path.relpath(RESULTS, ROOT), os.path.relpath(RUNS, ROOT),
        os.path.relpath(LOGS, ROOT)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
