#!/usr/bin/python3
"""A passthrough FUSE filesystem whose writes stall now and then, like an SD card or USB stick: the slow disk
of rill's tests (issue 16). Needs python3-fusepy (Debian; libfuse2) and /dev/fuse.

    slowfs.py --backing DIR --mount DIR --status FILE.json [--delay-ms 200]
              [--period-ms 1000 --window-ms 500 | --every N] [--fsync-delay-ms 0] [--max-life SECS]

Mounts --mount (an empty directory) showing --backing (a real directory), in the foreground: the caller owns
this PID. Every operation passes through to the backing directory (lookups, getattr, readdir, mkdir, create
with the caller's flags such as O_EXCL, open, read and write at offsets, truncate, rename, unlink, symlink,
readlink, fsync/fdatasync, fsyncdir, statfs, utimens...), except that some writes are delayed by --delay-ms:

- by default each write that arrives during the first --window-ms of every --period-ms (counted from the
  mount) is delayed: a device that stalls for half of every second;
- with --every N, every Nth write is delayed instead.

Writes go to "the device" one at a time (a lock held across the delay and the pwrite), so a stall holds up
every write behind it, whichever thread sends it; reads, lookups and everything else never wait for it.
fsync and fdatasync are delayed by --fsync-delay-ms (default 0) under the same lock. The kernel hands the
filesystem at most 128 KiB per write (big_writes): a larger pwrite/pwritev is several writes, each of which may
stall. Reads are mostly answered from the kernel's page cache and never reach the script. fallocate is not
offered (fusepy has no hook; glibc's posix_fallocate falls back to writing); posix_fadvise and sync_file_range
succeed and do nothing here (no write-back cache: every write reaches the script before the call returns).

FILE.json (outside the mount) is replaced atomically every 0.2 s: {"pid", "mounted", "mount", "writes",
"delayed_writes", "bytes_written", "write_wait_ms" (time spent stalled, in all), "reads", "bytes_read",
"fsyncs", "creates", "renames", "errors" (operation -> how many failed, other than ENOENT)}. "mounted" turns
true once the kernel has mounted the filesystem.

SIGTERM, SIGINT or SIGHUP (or --max-life) ends it: libfuse leaves its loop and unmounts (lazily), then the
script exits 0. A filesystem still mounted after a crash is removed with `fusermount -u -z MOUNT`.
"""
import argparse
import errno
import json
import logging
import os
import sys
import threading
import time

try:
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:  # pragma: no cover - the rig checks this before mounting
    try:
        from fuse import FUSE, FuseOSError, Operations
    except ImportError:
        sys.stderr.write("slowfs.py: python3-fusepy is not installed (Debian package python3-fusepy)\n")
        sys.exit(2)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.mounted = False
        self.writes = 0
        self.delayed_writes = 0
        self.bytes_written = 0
        self.write_wait_ms = 0.0
        self.reads = 0
        self.bytes_read = 0
        self.fsyncs = 0
        self.creates = 0
        self.renames = 0
        self.errors = {}

    def doc(self, args):
        with self.lock:
            return {
                "pid": os.getpid(),
                "mount": args.mount,
                "mounted": self.mounted,
                "writes": self.writes,
                "delayed_writes": self.delayed_writes,
                "bytes_written": self.bytes_written,
                "write_wait_ms": round(self.write_wait_ms, 1),
                "reads": self.reads,
                "bytes_read": self.bytes_read,
                "fsyncs": self.fsyncs,
                "creates": self.creates,
                "renames": self.renames,
                "errors": dict(self.errors),
            }


def write_status(args, stats):
    tmp = args.status + ".tmp"
    with open(tmp, "w") as f:
        json.dump(stats.doc(args), f)
    os.replace(tmp, args.status)


class SlowFs(Operations):
    """Path-based passthrough to `root`; file handles are the backing file descriptors."""

    use_ns = True
    # Not offered (libfuse answers ENOSYS, and the kernel stops asking: no round trip per write for
    # security.capability).
    getxattr = setxattr = listxattr = removexattr = lock = ioctl = bmap = None

    def __init__(self, args, stats):
        self.root = os.path.realpath(args.backing)
        self.args = args
        self.stats = stats
        self.device = threading.Lock()
        self.started = time.monotonic()

    def _real(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _should_delay(self):
        a = self.args
        if a.delay_ms <= 0:
            return False
        if a.every > 0:
            return self.stats.writes % a.every == 0
        elapsed_ms = (time.monotonic() - self.started) * 1000.0
        return elapsed_ms % a.period_ms < a.window_ms

    def __call__(self, op, *args):
        if not hasattr(self, op):
            raise FuseOSError(errno.ENOSYS)
        try:
            return getattr(self, op)(*args)
        except OSError as e:
            # A missing path is an everyday answer (lookups of names not there yet); count the rest.
            if e.errno != errno.ENOENT:
                with self.stats.lock:
                    self.stats.errors[op] = self.stats.errors.get(op, 0) + 1
            raise FuseOSError(e.errno or errno.EIO) from e

    # ---- lifecycle

    def init(self, path):
        with self.stats.lock:
            self.stats.mounted = True
        write_status(self.args, self.stats)

    def destroy(self, path):
        with self.stats.lock:
            self.stats.mounted = False

    # ---- metadata

    def getattr(self, path, fh=None):
        st = os.fstat(fh.fh) if path is None and fh is not None else os.lstat(self._real(path))
        return {
            "st_mode": st.st_mode,
            "st_ino": st.st_ino,
            "st_nlink": st.st_nlink,
            "st_uid": st.st_uid,
            "st_gid": st.st_gid,
            "st_size": st.st_size,
            "st_blocks": st.st_blocks,
            "st_blksize": st.st_blksize,
            "st_atime": st.st_atime_ns,
            "st_mtime": st.st_mtime_ns,
            "st_ctime": st.st_ctime_ns,
        }

    def access(self, path, amode):
        if not os.access(self._real(path), amode, follow_symlinks=False):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._real(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        if times is None:
            os.utime(self._real(path), follow_symlinks=False)
        else:
            os.utime(self._real(path), ns=times, follow_symlinks=False)

    def statfs(self, path):
        s = os.statvfs(self._real(path))
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail")
        out = {k: getattr(s, k) for k in keys}
        out["f_flag"] = s.f_flag
        out["f_namemax"] = s.f_namemax
        return out

    # ---- directories

    def opendir(self, path):
        return 0

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def releasedir(self, path, fh):
        return 0

    def fsyncdir(self, path, datasync, fh):
        fd = os.open(self._real(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)

    def rmdir(self, path):
        os.rmdir(self._real(path))

    def unlink(self, path):
        os.unlink(self._real(path))

    def rename(self, old, new):
        os.rename(self._real(old), self._real(new))
        with self.stats.lock:
            self.stats.renames += 1

    def symlink(self, target, source):
        # fusepy's order: make `target` (the link's path) pointing at `source` (its text).
        os.symlink(source, self._real(target))

    def readlink(self, path):
        return os.readlink(self._real(path))

    def link(self, target, source):
        os.link(self._real(source), self._real(target))

    def mknod(self, path, mode, dev):
        os.mknod(self._real(path), mode, dev)

    # ---- files (raw_fi: `fi` is the fuse_file_info; its fh is the backing descriptor)

    def create(self, path, mode, fi):
        fi.fh = os.open(self._real(path), fi.flags | os.O_CREAT, mode)
        with self.stats.lock:
            self.stats.creates += 1
        return 0

    def open(self, path, fi):
        fi.fh = os.open(self._real(path), fi.flags & ~os.O_CREAT)
        return 0

    def read(self, path, size, offset, fi):
        data = os.pread(fi.fh, size, offset)
        with self.stats.lock:
            self.stats.reads += 1
            self.stats.bytes_read += len(data)
        return data

    def write(self, path, data, offset, fi):
        with self.device:
            with self.stats.lock:
                self.stats.writes += 1
                delay = self._should_delay()
            if delay:
                stalled = time.monotonic()
                time.sleep(self.args.delay_ms / 1000.0)
                waited = (time.monotonic() - stalled) * 1000.0
            n = os.pwrite(fi.fh, data, offset)
        with self.stats.lock:
            self.stats.bytes_written += n
            if delay:
                self.stats.delayed_writes += 1
                self.stats.write_wait_ms += waited
        return n

    def truncate(self, path, length, fi=None):
        if fi is not None:
            os.ftruncate(fi.fh, length)
        else:
            os.truncate(self._real(path), length)

    def flush(self, path, fi):
        return 0

    def release(self, path, fi):
        os.close(fi.fh)
        return 0

    def fsync(self, path, datasync, fi):
        with self.device:
            if self.args.fsync_delay_ms > 0:
                time.sleep(self.args.fsync_delay_ms / 1000.0)
            if datasync:
                os.fdatasync(fi.fh)
            else:
                os.fsync(fi.fh)
        with self.stats.lock:
            self.stats.fsyncs += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backing", required=True)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--delay-ms", type=float, default=200.0)
    ap.add_argument("--period-ms", type=float, default=1000.0)
    ap.add_argument("--window-ms", type=float, default=500.0)
    ap.add_argument("--every", type=int, default=0, help="delay every Nth write instead of a time window")
    ap.add_argument("--fsync-delay-ms", type=float, default=0.0)
    ap.add_argument("--max-life", type=float, default=300.0)
    args = ap.parse_args()
    if args.period_ms <= 0 or not 0 <= args.window_ms <= args.period_ms:
        ap.error("need 0 <= --window-ms <= --period-ms and --period-ms > 0")
    if not os.path.isdir(args.backing) or not os.path.isdir(args.mount):
        ap.error("--backing and --mount must be directories")
    if os.listdir(args.mount):
        ap.error("--mount must be empty")
    if not os.path.exists("/dev/fuse"):
        sys.stderr.write("slowfs.py: /dev/fuse is missing: this machine (or container) cannot mount FUSE\n")
        sys.exit(3)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s slowfs %(levelname)s %(message)s")

    stats = Stats()
    done = threading.Event()

    def status_loop():
        started = time.monotonic()
        while not done.wait(0.2):
            try:
                write_status(args, stats)
            except OSError as e:
                sys.stderr.write("slowfs.py: status: %s\n" % e)
            if time.monotonic() - started > args.max_life:
                sys.stderr.write("slowfs.py: max life reached, unmounting\n")
                fuse_exit_from_outside()

    def fuse_exit_from_outside():
        # fuse_exit() needs a FUSE context; from another thread, a signal to ourselves does the same.
        os.kill(os.getpid(), 15)

    threading.Thread(target=status_loop, daemon=True).start()
    print("%.3f slowfs: mounting %s over %s" % (time.time(), args.backing, args.mount), flush=True)
    # Options: foreground (we own the PID); multithreaded, so reads and lookups never wait behind a stalled
    # write; big_writes (writes up to 128 KiB, not 4 KiB pages); use_ino (inode numbers of the backing files:
    # rill compares device and inode to notice a replaced file); no attribute cache beyond libfuse's default 1 s.
    try:
        FUSE(
            SlowFs(args, stats),
            args.mount,
            raw_fi=True,
            foreground=True,
            big_writes=True,
            use_ino=True,
            fsname="slowfs",
            subtype="slowfs",
        )
    except RuntimeError as e:
        sys.stderr.write("slowfs.py: cannot mount %s: FUSE returned %s\n" % (args.mount, e))
        sys.exit(3)
    finally:
        done.set()
        with stats.lock:
            stats.mounted = False
        write_status(args, stats)
    print("%.3f slowfs: unmounted %s" % (time.time(), args.mount), flush=True)


if __name__ == "__main__":
    main()
