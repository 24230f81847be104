#!/usr/bin/python3
"""python3-libtorrent peer for scripts/bench: a seeder (one or more torrents) or a leecher.

Seeder:
    ltpeer.py seed --port P --torrent T:DATADIR [--torrent ...] --status FILE.json
                   [--dial-dir DIR] [--upload-limit B/s [--payload-limit]] [--seed-mode] [--profile P] [--utp-only] [--encryption E]
  Checks the data in full (unless --seed-mode), then seeds. FILE.json is replaced every 0.1 s; it holds
  "ready": true once every torrent is seeding, and with --utp-only or --encryption "up_by_transport": payload
  bytes sent per "utp|tcp/rc4|plain", summed over connections (each one's highest total seen, polled every
  0.1 s: the last 0.1 s of a connection may be missed). Every 0.05 s, files in --dial-dir named anything and holding
  "INFOHASH IP:PORT" make the seeder connect to that peer (then the file is removed): that is how a leecher which
  will not dial loopback addresses (Transmission 3.00) gets its seeder. libtorrent's payload counters move
  once a second (hence the counting proxy in the endgame case).

Leecher:
    ltpeer.py leech --torrent T --save DIR [--peer IP:PORT]... [--max-life SECS] [--utp-only] [--encryption E]
  Downloads, exits 0 as soon as every piece is verified, printing one line "RESULT {json}" on stdout (with the
  number of connections it had over uTP and with RC4, so the bench can check how the bytes came).

Both bind 127.0.0.1 only, with DHT, LSD, UPnP, NAT-PMP, uTP and PEX off and several connections per IP allowed
(every peer is 127.0.0.1). --utp-only turns uTP on and TCP off both ways (enable_incoming_tcp and
enable_outgoing_tcp false, as tests/peers/lt_peer.py): a TCP connect to the port is accepted by the kernel and
closed at once, so a leecher's TCP handshake is refused. --encryption rc4 forces
MSE with RC4 both ways (out_enc_policy and in_enc_policy forced, allowed_enc_level rc4, prefer_rc4, as
tests/peers/lt_peer.py): plaintext and plaintext-inside-MSE connections are dropped. --encryption disabled speaks
plain BitTorrent only, both ways (pe_disabled). default: libtorrent's own (MSE offered, plaintext accepted). --upload-limit applies to loopback peers too (libtorrent puts local peers in an
unthrottled class by default; we map every address to the global class instead). --payload-limit turns off
rate_limit_ip_overhead, so the limit is on the bytes the seeder sends rather than those plus an estimate of
TCP/IP headers.
"""
import argparse
import json
import os
import sys
import time

import libtorrent as lt


def log(*a):
    print("%.3f" % time.time(), *a, flush=True)


# peer_info::utp_socket and peer_info::rc4_encrypted flags (libtorrent 2.0's peer_info.hpp; the 2.0.8 Python
# bindings export rc4_encrypted but not utp_socket).
UTP_SOCKET = int(getattr(lt.peer_info, "utp_socket", 1 << 17))
RC4_ENCRYPTED = int(getattr(lt.peer_info, "rc4_encrypted", 1 << 19))


def make_session(port, upload_limit=0, download_limit=0, profile="default", utp_only=False, encryption="default",
                 socket_buffer=0, payload_limit=False):
    settings = {}
    if profile == "high_performance_seed":
        settings.update(lt.high_performance_seed())
    settings.update({
        "listen_interfaces": "127.0.0.1:%d" % port,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "upload_rate_limit": upload_limit,
        "download_rate_limit": download_limit,
        # --payload-limit: the limit is on what the peer sends (payload and protocol headers), without
        # libtorrent's estimate of TCP/IP overhead on top (on loopback there are few, large packets).
        "rate_limit_ip_overhead": not payload_limit,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.tracker_notification,
    })
    if utp_only:
        settings.update({
            "enable_incoming_utp": True,
            "enable_outgoing_utp": True,
            "enable_incoming_tcp": False,
            "enable_outgoing_tcp": False,
        })
    if socket_buffer:
        settings.update({"recv_socket_buffer_size": socket_buffer, "send_socket_buffer_size": socket_buffer})
    if encryption == "rc4":
        settings.update({
            "out_enc_policy": int(lt.enc_policy.pe_forced),
            "in_enc_policy": int(lt.enc_policy.pe_forced),
            "allowed_enc_level": int(lt.enc_level.pe_rc4),
            "prefer_rc4": True,
        })
    elif encryption == "disabled":
        settings.update({
            "out_enc_policy": int(lt.enc_policy.pe_disabled),
            "in_enc_policy": int(lt.enc_policy.pe_disabled),
        })
    # flags=0: no default plugins (no ut_pex). ut_metadata back on: harmless.
    ses = lt.session(settings, 0)
    ses.add_extension("ut_metadata")
    if upload_limit or download_limit:
        pcf = lt.ip_filter()
        pcf.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        pcf.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id)
        ses.set_peer_class_filter(pcf)
    return ses


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def seed(args):
    ses = make_session(args.port, upload_limit=args.upload_limit, profile=args.profile, utp_only=args.utp_only,
                       encryption=args.encryption, socket_buffer=args.socket_buffer,
                       payload_limit=args.payload_limit)
    handles = {}
    for spec in args.torrent:
        t, data = spec.rsplit(":", 1)
        info = lt.torrent_info(t)
        atp = lt.add_torrent_params()
        atp.ti = info
        atp.save_path = data
        if args.seed_mode:
            atp.flags |= lt.torrent_flags.seed_mode
        h = ses.add_torrent(atp)
        handles[str(info.info_hash()).lower()] = h
        log("added", info.name(), str(info.info_hash()), "port", args.port)
    started = time.monotonic()
    last_status = 0.0
    listening = False
    seen = {(t, e): {} for t in ("utp", "tcp") for e in ("rc4", "plain")}
    while time.monotonic() - started < args.max_life:
        ses.wait_for_alert(50)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert):
                listening = True
            log(type(a).__name__, a.message())
        if args.dial_dir:
            for name in sorted(os.listdir(args.dial_dir)):
                path = os.path.join(args.dial_dir, name)
                if name.endswith(".tmp"):
                    continue
                try:
                    with open(path) as f:
                        ih, addr = f.read().split()
                    os.unlink(path)
                except (OSError, ValueError):
                    continue
                host, port = addr.rsplit(":", 1)
                h = handles.get(ih.lower())
                if h is None:
                    log("dial: unknown info-hash", ih)
                    continue
                log("dialling", addr)
                h.connect_peer((host, int(port)), 0)
        now = time.monotonic()
        if now - last_status >= 0.1:
            last_status = now
            torrents = {}
            up = 0
            for ih, h in handles.items():
                st = h.status()
                up += st.total_payload_upload
                if args.utp_only or args.encryption != "default":
                    # How the bytes left, by peer: the highest payload total seen per connection, by transport.
                    for p in h.get_peer_info():
                        flags = int(p.flags)
                        key = "%s:%d" % (p.ip[0], p.ip[1])
                        how = ("utp" if flags & UTP_SOCKET else "tcp", "rc4" if flags & RC4_ENCRYPTED else "plain")
                        seen[how][key] = max(seen[how].get(key, 0), p.total_upload)
                torrents[ih] = {
                    "state": str(st.state),
                    "seeding": bool(st.is_seeding),
                    "payload_up": st.total_payload_upload,
                    "up_rate": st.upload_payload_rate,
                    "peers": st.num_peers,
                    "error": str(st.errc.message()) if st.errc and st.errc.value() != 0 else "",
                }
            # Ready: every torrent checked and seeding, and the listen socket open (libtorrent opens it
            # asynchronously, after add_torrent may already report seeding).
            ready = listening and all(t["seeding"] for t in torrents.values())
            write_json(args.status, {"pid": os.getpid(), "ready": ready, "payload_up": up, "torrents": torrents,
                                     "up_by_transport": {"%s/%s" % k: sum(v.values()) for k, v in seen.items()}})
    log("max life reached, exiting")


def leech(args):
    ses = make_session(args.port, utp_only=args.utp_only, encryption=args.encryption, socket_buffer=args.socket_buffer)
    info = lt.torrent_info(args.torrent)
    atp = lt.add_torrent_params()
    atp.ti = info
    atp.save_path = args.save
    h = ses.add_torrent(atp)
    started = time.monotonic()
    dialled = 0.0
    seen = {}  # "ip:port" -> (utp, rc4), of every peer seen connected
    polled = 0.0
    while True:
        now = time.monotonic()
        if now - started > args.max_life:
            log("max life reached before completion")
            sys.exit(1)
        ses.wait_for_alert(20)
        for a in ses.pop_alerts():
            if isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                log(type(a).__name__, a.message())
        if now - polled > 0.5:
            polled = now
            for p in h.get_peer_info():
                flags = int(p.flags)
                seen["%s:%d" % (p.ip[0], p.ip[1])] = (bool(flags & UTP_SOCKET), bool(flags & RC4_ENCRYPTED))
        if args.peer and now - dialled > 2.0:
            dialled = now
            current = {"%s:%d" % (p.ip[0], p.ip[1]) for p in h.get_peer_info()}
            for spec in args.peer:
                if spec not in current:
                    host, port = spec.rsplit(":", 1)
                    h.connect_peer((host, int(port)), 0)
        st = h.status()
        if st.is_seeding:
            elapsed = time.monotonic() - started
            for p in h.get_peer_info():
                flags = int(p.flags)
                seen["%s:%d" % (p.ip[0], p.ip[1])] = (bool(flags & UTP_SOCKET), bool(flags & RC4_ENCRYPTED))
            print("RESULT " + json.dumps({
                "elapsed": elapsed,
                "payload_down": st.total_payload_download,
                "wanted": st.total_wanted,
                "failed": st.total_failed_bytes,
                "redundant": st.total_redundant_bytes,
                "peers": len(seen),
                "utp_peers": sum(1 for u, _ in seen.values() if u),
                "rc4_peers": sum(1 for _, r in seen.values() if r),
            }), flush=True)
            break
    # Leave quickly: pause (sends the tracker its 'stopped' within stop_tracker_timeout) and return.
    ses.pause()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--torrent", action="append", required=True, help="T:DATADIR")
    s.add_argument("--status", required=True)
    s.add_argument("--dial-dir")
    s.add_argument("--upload-limit", type=int, default=0)
    s.add_argument("--payload-limit", action="store_true",
                   help="the upload limit counts what is sent, not libtorrent's IP overhead estimate")
    s.add_argument("--seed-mode", action="store_true")
    s.add_argument("--profile", choices=["default", "high_performance_seed"], default="default",
                   help="libtorrent settings preset underneath ours")
    s.add_argument("--max-life", type=float, default=3600.0)
    s.add_argument("--utp-only", action="store_true", help="uTP on, TCP off both ways")
    s.add_argument("--encryption", choices=["default", "disabled", "rc4"], default="default")
    s.add_argument("--socket-buffer", type=int, default=0, help="SO_RCVBUF/SO_SNDBUF bytes (0: the OS default)")
    l = sub.add_parser("leech")
    l.add_argument("--torrent", required=True)
    l.add_argument("--save", required=True)
    l.add_argument("--port", type=int, default=0)
    l.add_argument("--peer", action="append", default=[])
    l.add_argument("--max-life", type=float, default=600.0)
    l.add_argument("--utp-only", action="store_true", help="uTP on, TCP off both ways")
    l.add_argument("--encryption", choices=["default", "disabled", "rc4"], default="default")
    l.add_argument("--socket-buffer", type=int, default=0, help="SO_RCVBUF/SO_SNDBUF bytes (0: the OS default)")
    args = ap.parse_args()
    if args.mode == "seed":
        seed(args)
    else:
        leech(args)


if __name__ == "__main__":
    main()
