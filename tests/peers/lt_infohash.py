#!/usr/bin/python3
"""The v1 info-hash libtorrent (python3-libtorrent) computes for a file list, to compare with `rill create`.

    lt_infohash.py PARENT NAME PIECE_SIZE REL_PATH:LENGTH...

The files are added in the order given (the order rill lays them out), under the top folder NAME in PARENT;
libtorrent hashes the data itself (set_piece_hashes) and builds a v1-only torrent with no tracker, creator or
date, so only `info` matters. Prints the info-hash (hex).
"""
import hashlib
import sys

import libtorrent as lt


def main():
    parent, name, piece_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fs = lt.file_storage()
    for spec in sys.argv[4:]:
        rel, length = spec.rsplit(":", 1)
        fs.add_file(name + "/" + rel, int(length))
    t = lt.create_torrent(fs, piece_size, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(t, parent)
    meta = t.generate()
    print(hashlib.sha1(lt.bencode(meta[b"info"])).hexdigest())


if __name__ == "__main__":
    main()
