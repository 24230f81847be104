#!/usr/bin/python3
"""Make a .torrent with libtorrent (python3-libtorrent), for rill's integration tests.

    make_torrent.py CONTENT OUT.torrent --tracker URL [--piece-size BYTES] [--v1-only] [--private]

CONTENT is a file or a folder; the torrent's name is its basename. Without --v1-only libtorrent 2.x makes a
hybrid v1+v2 torrent, with BEP 47 padding files (`.pad/N`, attr "p") between files. Prints the v1 info-hash
(hex) on stdout. --private sets `private` = 1 in the info dictionary (BEP 27).
"""
import argparse
import hashlib
import os
import sys

import libtorrent as lt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("content")
    ap.add_argument("out")
    ap.add_argument("--tracker", required=True)
    ap.add_argument("--piece-size", type=int, default=256 * 1024)
    ap.add_argument("--v1-only", action="store_true")
    ap.add_argument("--private", action="store_true")
    args = ap.parse_args()

    content = os.path.abspath(args.content)
    fs = lt.file_storage()
    lt.add_files(fs, content)
    if fs.num_files() == 0:
        sys.exit("make_torrent.py: no files under " + content)
    flags = lt.create_torrent.v1_only if args.v1_only else 0
    t = lt.create_torrent(fs, args.piece_size, flags=flags)
    t.add_tracker(args.tracker)
    if args.private:
        t.set_priv(True)
    t.set_creator("rill integration tests (libtorrent %s)" % lt.__version__)
    lt.set_piece_hashes(t, os.path.dirname(content))
    meta = t.generate()
    data = lt.bencode(meta)
    with open(args.out, "wb") as f:
        f.write(data)
    print(hashlib.sha1(lt.bencode(meta[b"info"])).hexdigest())


if __name__ == "__main__":
    main()
