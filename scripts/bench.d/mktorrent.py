#!/usr/bin/python3
"""Make a v1-only, single-file .torrent with python3-libtorrent for scripts/bench.

    mktorrent.py CONTENT PIECE_BYTES OUT.torrent [TRACKER_URL]

Without TRACKER_URL the torrent has no announce (peers are given directly). The info dict does not depend on
the tracker, so both variants of one content share an info-hash. Prints the info-hash (hex).
"""
import hashlib
import os
import sys

import libtorrent as lt


def main():
    content, piece, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tracker = sys.argv[4] if len(sys.argv) > 4 else None
    content = os.path.abspath(content)
    fs = lt.file_storage()
    lt.add_files(fs, content)
    t = lt.create_torrent(fs, piece, flags=lt.create_torrent.v1_only)
    if tracker:
        t.add_tracker(tracker)
    t.set_creator("rill scripts/bench")
    lt.set_piece_hashes(t, os.path.dirname(content))
    meta = t.generate()
    with open(out, "wb") as f:
        f.write(lt.bencode(meta))
    print(hashlib.sha1(lt.bencode(meta[b"info"])).hexdigest())


if __name__ == "__main__":
    main()
