#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/seed-*, from the byte-exact fixtures of the unit tests
(and tests/data). Run from anywhere: python3 fuzz/make_seeds.py. Each target's input layout is described at the
top of its fuzz_targets/<target>.rs."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def data_file(name):
    with open(os.path.join(ROOT, "tests", "data", name), "rb") as f:
        return f.read()


# bencode: scanner fixtures (src/bencode.rs tests) and tracker bodies.
for name, b in {
    "ints": b"li0ei-7ei9223372036854775807ei-9223372036854775808ee",
    "nested": b"d1:ad1:bl1:cd1:di1eeeee4:spam4:eggse",
    "strings": b"l0:3:abc03:xyze",
    "dup-key": b"d1:ai1e1:ai2ee",
    "bad-int": b"i03e",
    "trailing": b"d8:intervali60ee\n",
}.items():
    write("bencode", name, b)

# metainfo: the real torrents of tests/data (libtorrent, Transmission).
for name in ["libtorrent-v1-single", "libtorrent-v1-multi", "transmission-multi", "libtorrent-hybrid"]:
    write("metainfo", name, data_file(name + ".torrent"))

# wire: 4-byte limit selector (piece count 64), then frames / a handshake (src/wire tests).
limit = struct.pack(">I", 64)
frames = b"".join([
    b"\0\0\0\0",                                    # keep-alive
    b"\0\0\0\x01\x01",                              # unchoke
    b"\0\0\0\x05\x04" + struct.pack(">I", 7),       # have 7
    b"\0\0\0\x09\x05" + b"\xff" * 7 + b"\xf0",      # bitfield
    b"\0\0\0\x0d\x06" + struct.pack(">III", 1, 16384, 16384),  # request
    b"\0\0\0\x03\x09\x1a\xe1",                      # port
    b"\0\0\0\x01\x0e",                              # have all
])
write("wire", "frames", limit + frames)
write("wire", "piece", limit + b"\0\0\0\x0d\x07" + struct.pack(">II", 2, 0) + b"data")
write("wire", "extended", limit + b"\0\0\0\x0b\x14\x00d1:mdee" + b"\0\0\0\x02\x63\x00")
hs = b"\x13BitTorrent protocol" + bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04]) + b"\x42" * 20 + b"-TR3000-abcdefghijkl"
write("wire", "handshake", limit + hs + b"\0\0\0\x01\x02")
write("wire", "too-long", struct.pack(">I", 0x8000_0010) + b"\0\0\0\xff\x07")

# extension: reqq 250, port 6881, then payloads (src/wire/extension.rs tests).
pre = struct.pack(">IH", 250, 6881)
write("extension", "libtorrent",
      pre + b"d1:md11:ut_metadatai3e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v16:libtorrent 2.0.8e")
write("extension", "negative-reqq", pre + b"d4:reqqi-5ee")
write("extension", "not-dict", pre + b"li1ee")

# mse: raw mode (flags 0): Ya = 2 ... ; cooperative mode (flags 1), PadA 2×3 bytes, then the header plaintext:
# VC, crypto_provide = plaintext|rc4, len(PadC) = 3, PadC, len(IA), IA (src/wire/mse.rs tests).
ia = b"\x13BitTorrent protocol-and-the-rest"
header = b"\0" * 8 + struct.pack(">IH", 3, 3) + b"\x01\x02\x03" + struct.pack(">H", len(ia)) + ia + b"PLAIN"
write("mse", "coop-whole", bytes([1, 3]) + header)
write("mse", "coop-bytewise", bytes([1 | 2, 0]) + header)
write("mse", "coop-rc4-only", bytes([1, 0]) + b"\0" * 8 + struct.pack(">IHH", 2, 0, 0))
write("mse", "raw-ya", bytes([0]) + b"\x07" * 96 + b"\x09" * 7)
write("mse", "raw-too-big", bytes([0]) + b"\xff" * 96)

# tracker_http: flag 0 = whole response (cut into 7-byte reads: flag 3 << 1), flag 1 = body only
# (src/tracker/http_tests.rs).
compact = (b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali900e10:tracker id3:abc"
           b"15:warning message9:slow down5:peers12:" + bytes([127, 0, 0, 1, 0x1a, 0xe1, 10, 1, 2, 3, 0, 80])
           + b"6:peers618:" + bytes([0] * 15 + [1, 0x1a, 0xe2]) + b"e")
write("tracker_http", "body-compact", b"\x01" + compact)
write("tracker_http", "body-dict-peers", b"\x01" + b"d8:intervali60e5:peersl"
      b"d2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881ee"
      b"d2:ip3:::14:porti7eed2:ip11:example.org4:porti1ee"
      b"d2:ip8:10.0.0.14:porti70000eed4:porti5eeee")
write("tracker_http", "body-scrape", b"\x01" + b"d5:filesd20:xxxxxxxxxxxxxxxxxxxxd8:completei4e10:downloadedi9e"
      b"10:incompletei2ee20:yyyyyyyyyyyyyyyyyyyyd8:completei1eeee")
write("tracker_http", "length", bytes([3 << 1]) + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(compact)
      + compact)
write("tracker_http", "chunked", bytes([0]) + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
      b"5;x=y\r\nd8:in\r\na\r\ntervali1ee\r\n0\r\nX-Trailer: 1\r\n\r\n")
write("tracker_http", "close", bytes([1 << 1]) + b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nd5:peers0:e")
write("tracker_http", "url", b"\x01http://Tracker.Example:8080/x/announce.php?passkey=abc#frag")
write("tracker_http", "url-udp", b"\x01udp://[::1]:6969/announce")
write("tracker_http", "redirect", bytes([2 << 1]) + b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 302 Found\r\n"
      b"Location: http://b.example/x?y=1\r\nContent-Length: 0\r\n\r\n")

# tracker_udp: connect, announce (IPv4 peers), scrape, error (src/tracker/udp_tests.rs).
write("tracker_udp", "connect", struct.pack(">IIQ", 0, 0x1234, 0x0417_2710_1980))
write("tracker_udp", "announce", struct.pack(">IIIII", 1, 0x1234, 1800, 3, 7)
      + bytes([127, 0, 0, 1, 0x1a, 0xe1, 10, 1, 2, 3, 0, 80]))
write("tracker_udp", "scrape", struct.pack(">IIIII", 2, 0x1234, 4, 9, 2))
write("tracker_udp", "error", struct.pack(">II", 3, 0x1234) + b"unregistered torrent")

# resume: shape (2 bitfield bytes, 2 files), then the unit test's sample file (src/storage/resume.rs).
def bstr(b):
    return b"%d:" % len(b) + b


sample = (b"d5:filesl" + b"li100ei1700000000ei12ee" + b"li-1ei0ei0ee" + b"e"
          + b"9:info-hash" + bstr(b"\x09" * 20) + b"6:pieces" + bstr(bytes([0b1010_0000, 0xff]))
          + b"7:versioni1ee")
write("resume", "sample", b"\x02\x02" + sample)
write("resume", "future-version", b"\x02\x02" + sample.replace(b"7:versioni1e", b"7:versioni2e"))
write("resume", "truncated", b"\x02\x02" + sample[:-3])

# utp: records [op][len][datagram] (fuzz_targets/utp.rs); op & 4 stamps the live connection's id, op & 8
# advances time. A's first data packet is seq 1000 (the target's handshake answers with seq_nr 1000).
def utp(kind, seq, ack, payload=b"", ext=b"", ext_type=0, conn=0, wnd=1 << 20):
    return struct.pack(">BBHIIIHH", kind << 4 | 1, ext_type, conn, 1000, 50, wnd, seq, ack) + ext + payload


def rec(op, dgram):
    return bytes([op, len(dgram)]) + dgram


write("utp", "data-fin", rec(4, utp(0, 1000, 0, b"hello")) + rec(4, utp(0, 1001, 0, b"world"))
      + rec(0x84, utp(1, 1002, 0)))
write("utp", "reorder-sack", rec(4, utp(0, 1002, 0, b"later")) + rec(4, utp(2, 1000, 0, ext=b"\0\4\1\0\0\0", ext_type=1))
      + rec(4, utp(0, 1000, 0, b"first")) + rec(4 | 8 | 0x30, utp(0, 1001, 0, b"middle")))
write("utp", "syn-reset", rec(2, utp(4, 9, 0, conn=77)) + rec(5, utp(3, 0, 0)) + rec(8 | 0xf0, b""))
write("utp", "zero-window", rec(4, utp(2, 1000, 0, wnd=0)) + rec(8 | 0xf0, b"") + rec(4, utp(2, 1000, 0))
      + rec(0x81, utp(0, 78, 0, b"x" * 40)))

# dht: the whole input goes to krpc::decode and load_nodes (BEP 5's examples, src/dht/krpc.rs tests), then
# drives one Dht as a script (fuzz_targets/dht.rs): flags byte, then ops.
for name, b in {
    "ping-q": b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    "find-node-q": b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
    "get-peers-r-values": b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re",
    "announce-implied": b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e"
                        b"5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
    "error": b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
    "nodes6-want": b"d2:ip6:\x01\x02\x03\x04\x1a\xe11:rd2:id20:abcdefghij01234567895:nodes26:" + b"n" * 20
                   + b"\x0a\x00\x00\x01\x1a\xe16:nodes638:" + b"m" * 20 + b"\x20\x01\x0d\xb8" + b"\x00" * 11
                   + b"\x01\x1a\xe1e1:t4:abcd1:v4:RL011:y1:re",
    "saved-nodes": b"d2:id20:abcdefghij01234567895:nodes26:" + b"n" * 20 + b"\x0a\x00\x00\x01\x1a\xe16:nodes60:e",
}.items():
    write("dht", name, b)
# Scripts. Ops: kind = op & 7, arg = op >> 3 (see the target's doc).
ADD_NODE, GET_PEERS, ANNOUNCE, SAVE = 4 | 2 << 3, 4 | 0 << 3, 4 | 1 << 3, 4 | 5 << 3
TIME = 3


def answer(i, shape, *operands):
    return bytes([2 | i << 3, shape] + list(operands))


def query(src, shape, idb, operand):
    return bytes([1 | src << 3, shape, idb, operand])


# Bootstrap from one node, which answers with 7 nodes and a token; they answer a get_peers with values.
script = bytes([0, ADD_NODE, 0x00]) + answer(0, 1 | 7 << 2 | 0x40, 0x81, 1, 2, 3, 4, 0x21, 0x41, 0x61)
script += bytes([TIME, 10, GET_PEERS, 0xab])
for i in range(1, 6):
    script += answer(i, 1 | 7 << 2 | 0x20 | 0x40 | 0x80, 0x82 + i, 5, 6, 7, 8, 9, 10, 11, 3, 0x11, 0x12, 0x13, 3)
script += bytes([TIME, 150, ANNOUNCE, 0x20, TIME, 200, SAVE, 0, TIME, 255])
write("dht", "script-lookup", script)
# Serving with the small config: ping, get_peers, announce with the token we gave, a flood, expiry.
script = bytes([1]) + query(0, 0, 5, 0) + query(0, 2, 5, 0x30) + query(0, 3, 5, 0x30) + query(5, 3 | 4 | 8, 6, 0x32)
script += query(5, 2 | 4 | 8, 6, 0x30) + query(5, 3, 6, 0x30) + query(4, 0 | 6 << 5, 7, 0) + query(1, 1 | 16, 0x90, 9)
script += bytes([TIME, 255, TIME, 255])
write("dht", "script-serve", script)

# rpc: flag byte bit 0 = an RPC body alone; else a client's bytes on one connection (bits 1-3 the read size,
# bit 4 Basic credentials "u:p").
for i, body in enumerate([
    b'{"method":"session-get","tag":1}',
    b'{"method":"torrent-get","arguments":{"fields":["id","name","files","fileStats","peers","trackers"],"ids":[1,"' + b"ab" * 20 + b'"]}}',
    b'{"method":"torrent-get","arguments":{"fields":["id","name"],"format":"table","ids":"recently-active"}}',
    b'{"method":"torrent-add","arguments":{"metainfo":"ZDQ6aW5mb2Q0Om5hbWUzOm5ld2Vl","paused":true}}',
    b'{"method":"torrent-set","arguments":{"ids":[1],"files-unwanted":[0],"uploadLimited":true,"uploadLimit":5}}',
    b'{"method":"session-set","arguments":{"speed-limit-down":100,"speed-limit-down-enabled":true}}',
    b'{"method":"torrent-remove","arguments":{"ids":[2],"delete-local-data":true}}',
]):
    write("rpc", "body-%d" % i, bytes([1]) + body)
    req = (b"POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1:9091\r\nX-Transmission-Session-Id: SID\r\n"
           b"Authorization: Basic dTpw\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    write("rpc", "http-%d" % i, bytes([(i % 8) << 1 | (16 if i % 2 else 0)]) + req + req)
write("rpc", "http-409", bytes([2]) + b"POST /transmission/rpc HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
write("rpc", "http-continue", bytes([4]) + b"POST /transmission/rpc HTTP/1.1\r\nExpect: 100-continue\r\n"
      b"X-Transmission-Session-Id: SID\r\nContent-Length: 24\r\n\r\n{\"method\":\"session-get\"}")
write("rpc", "http-page", bytes([6]) + b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nHEAD / HTTP/1.0\r\n\r\n")
write("rpc", "state", bytes([32]) + b'{"version":1,"torrents":[{"hash":"' + b"ab" * 20 +
      b'","magnet":null,"name":"x","dir":"/d","stopped":true,"unwanted":[1],"added":5,"done":0,"have":3,'
      b'"wanted":9,"downloaded":4,"uploaded":1}]}')
