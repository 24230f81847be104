"""What the scripted peers of rill's tests share: a small bencode codec (recording raw spans, to hash a
torrent's `info`), a torrent's info-hash and piece count, exact socket reads, and timestamped log lines.
Standard library only; imported by the scripts beside it (`hostile_peer.py`, `pex_peer.py`)."""
import hashlib
import time


def bdecode(buf, i=0, spans=None, path=()):
    """Decodes one bencoded value at buf[i:]; returns (value, end). Records the byte span of every
    dictionary value in `spans` keyed by its key path (to hash the raw `info`)."""
    c = buf[i : i + 1]
    if c == b"i":
        end = buf.index(b"e", i)
        return int(buf[i + 1 : end]), end + 1
    if c == b"l":
        i += 1
        out = []
        while buf[i : i + 1] != b"e":
            v, i = bdecode(buf, i, spans, path)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while buf[i : i + 1] != b"e":
            k, i = bdecode(buf, i, spans, path)
            start = i
            v, i = bdecode(buf, i, spans, path + (k,))
            if spans is not None:
                spans[path + (k,)] = (start, i)
            out[k] = v
        return out, i + 1
    if c.isdigit():
        colon = buf.index(b":", i)
        n = int(buf[i:colon])
        return buf[colon + 1 : colon + 1 + n], colon + 1 + n
    raise ValueError("bad bencode at %d" % i)


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def load_torrent(path):
    """(info-hash, piece count) of a .torrent file."""
    raw = open(path, "rb").read()
    spans = {}
    meta, _ = bdecode(raw, 0, spans)
    start, end = spans[(b"info",)]
    num_pieces = len(meta[b"info"][b"pieces"]) // 20
    return hashlib.sha1(raw[start:end]).digest(), num_pieces


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def log(*a):
    print("%.3f" % time.time(), *a, flush=True)
