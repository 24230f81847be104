#!/usr/bin/env bash
# Regenerates the real-tool torrent fixtures in this directory (tests/metainfo_fixtures.rs reads them).
#
# Needs: transmission-cli (transmission-create, transmission-show) and python3-libtorrent (2.x), e.g.
#   apt-get install -y transmission-cli python3-libtorrent
#
# The content is generated deterministically into a temporary directory and deleted afterwards; only the
# .torrent files and their `.expected` sidecars are kept. Each sidecar records what the *creating tool*
# says about its torrent, written at creation time:
#   tool <name and version>
#   info_hash_v1 <hex>            (absent for the v2-only torrent)
#   info_hash_v2 <hex>            (hybrid and v2-only only)
#   file <length> <pad 0|1> <path>   one line per file in layout order, as libtorrent lists them
# For the transmission torrent the v1 info-hash is transmission-show's, and it is cross-checked against
# libtorrent's reading of the same file.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PY=/usr/bin/python3
tracker1="http://127.0.0.1:6969/announce"
tracker2="http://127.0.0.1:6970/announce"

# 1. Content: a multi-file tree with nested folders, a zero-length file, a non-ASCII name and a short last
#    piece (38,005 bytes in 16 KiB pieces), and one single file of 40,000 bytes.
timeout 60 "$PY" - "$work" <<'PY'
import os, sys
root = sys.argv[1]
def put(rel, size, seed):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes((i * 31 + seed * 7 + (i >> 8)) & 0xFF for i in range(size)))
put("multi/readme.txt", 1000, 1)
put("multi/empty.dat", 0, 2)
put("multi/a/one.bin", 20000, 3)
put("multi/a/b/two.bin", 17000, 4)
put("multi/a/b/c/na\u00efve.txt", 5, 5)
put("single.bin", 40000, 6)
PY

# 2. transmission-create: multi-file, nested folders. transmission-create 3.00 leaves zero-length files out
#    of the torrent (empty.dat is absent from its file list), so the zero-length file is covered by the
#    libtorrent v1 multi-file and hybrid torrents below.
out="$here/transmission-multi.torrent"
rm -f "$out"
timeout 60 transmission-create -s 16 -t "$tracker1" -t "$tracker2" -c "made by transmission-create" \
    -o "$out" "$work/multi" >/dev/null
tr_hash="$(timeout 60 transmission-show "$out" | sed -n 's/^ *Hash: *\([0-9a-f]\{40\}\).*/\1/p')"
{
    echo "tool $(transmission-create --version 2>&1 | head -n1)"
    echo "info_hash_v1 $tr_hash"
} >"$out.expected"

# 3. libtorrent: v1-only single file, v1-only multi-file, hybrid v1+v2 multi-file (with BEP 47 pad files),
#    v2-only multi-file;
#    then the sidecars, including the file list of the transmission torrent as libtorrent reads it.
timeout 120 "$PY" - "$work" "$here" "$tracker1" "$tracker2" <<'PY'
import os, sys
import libtorrent as lt
work, here, t1, t2 = sys.argv[1:5]

def make(src, out, flags, comment):
    fs = lt.file_storage()
    lt.add_files(fs, os.path.join(work, src))
    ct = lt.create_torrent(fs, 16384, flags=flags)
    ct.add_tracker(t1, 0)
    ct.add_tracker(t2, 1)
    ct.set_comment(comment)
    ct.set_creator("libtorrent " + lt.__version__)
    lt.set_piece_hashes(ct, work)
    entry = ct.generate()
    # A key nobody decodes, inside `info`: a parser that re-serialises `info` gets a different hash.
    entry[b"info"][b"x-rill-unknown"] = b"keep me in the hash"
    with open(os.path.join(here, out), "wb") as f:
        f.write(lt.bencode(entry))

def sidecar(name, tool_line, prefix_lines=()):
    path = os.path.join(here, name)
    ti = lt.torrent_info(path)
    hashes = ti.info_hashes()
    lines = list(prefix_lines) if prefix_lines else ["tool " + tool_line]
    if not prefix_lines and hashes.has_v1():
        lines.append("info_hash_v1 %s" % hashes.v1)
    if hashes.has_v2():
        lines.append("info_hash_v2 %s" % hashes.v2)
    fs = ti.files()
    for i in range(fs.num_files()):
        pad = 1 if fs.file_flags(i) & lt.file_storage.flag_pad_file else 0
        lines.append("file %d %d %s" % (fs.file_size(i), pad, fs.file_path(i)))
    return path, lines, hashes

tool = "libtorrent " + lt.__version__
make("single.bin", "libtorrent-v1-single.torrent", lt.create_torrent.v1_only, "v1-only single file")
make("multi", "libtorrent-v1-multi.torrent", lt.create_torrent.v1_only, "v1-only multi-file")
make("multi", "libtorrent-hybrid.torrent", 0, "hybrid v1+v2 with pad files")
make("multi", "libtorrent-v2-only.torrent", lt.create_torrent.v2_only, "v2-only")
for name in ["libtorrent-v1-single.torrent", "libtorrent-v1-multi.torrent", "libtorrent-hybrid.torrent", "libtorrent-v2-only.torrent"]:
    path, lines, _ = sidecar(name, tool)
    with open(path + ".expected", "w") as f:
        f.write("\n".join(lines) + "\n")

# transmission: keep transmission-show's lines, add libtorrent's file list, cross-check the hash.
name = "transmission-multi.torrent"
with open(os.path.join(here, name + ".expected")) as f:
    head = f.read().split("\n")
head = [l for l in head if l]
path, lines, hashes = sidecar(name, None, head)
tr_hash = [l.split()[1] for l in head if l.startswith("info_hash_v1 ")][0]
if str(hashes.v1) != tr_hash:
    sys.exit("transmission-show and libtorrent disagree on %s: %s vs %s" % (name, tr_hash, hashes.v1))
with open(path + ".expected", "w") as f:
    f.write("\n".join(lines) + "\n")
PY

chmod 644 "$here"/*.torrent "$here"/*.expected
ls -l "$here"/*.torrent
