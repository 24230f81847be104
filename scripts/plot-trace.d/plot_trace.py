#!/usr/bin/env python3
"""Charts from a rill trace (docs/trace.md, schema 1): one PNG per chart in OUT_DIR.

  plot_trace.py TRACE OUT_DIR

throughput.png  payload received per peer over time (stacked, from `block` events)
latency.png     request round trips per peer (distribution, from `block` events)
chokes.png      when each peer choked and unchoked us (from `choke` / `unchoke` events by the peer)
pipeline.png    requests in flight per peer over time (from requests and their answers) and the target depth
                (from `rate` events)

Peers are labelled by address and client. Only the standard library and matplotlib are used.
"""

import collections
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MAX_PEERS = 12  # the busiest peers get their own series; the rest are summed into "others"


def read(path):
    events = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit("plot-trace: %s:%d: not JSON (%s)" % (path, n, e))
    if not events or events[0].get("ev") != "header":
        sys.exit("plot-trace: %s: not a rill trace (no header line)" % path)
    if events[0].get("schema") != 1:
        print("plot-trace: schema %s, this script knows 1; going on" % events[0].get("schema"), file=sys.stderr)
    return events


def labels(events):
    addr, client = {}, {}
    for e in events:
        if e["ev"] in ("connect_attempt", "accepted"):
            addr[e["peer"]] = e["addr"]
        elif e["ev"] == "handshake":
            client[e["peer"]] = e["client"]
    return lambda p: ("%s %s" % (addr.get(p, "peer %s" % p), client.get(p, ""))).strip()


def secs(e):
    return e["t"] / 1e6


def busiest(events):
    down = collections.Counter()
    for e in events:
        if e["ev"] == "block":
            down[e["peer"]] += e["len"]
        elif e["ev"] == "rate":
            down[e["peer"]] += 0  # known, even if it sent nothing
    return [p for p, _ in down.most_common(MAX_PEERS)]


def throughput(events, label, out):
    """Payload received per peer, from `block` events, in 1 s bins (a fiftieth of the run when it is shorter than
    5 s: a fast loopback download takes a fraction of a second)."""
    top = busiest(events)
    span = secs(events[-1]) if events else 0
    width = 1.0 if span >= 5 else max(span / 50.0, 0.001)
    bins = collections.defaultdict(collections.Counter)
    for e in events:
        if e["ev"] == "block":
            key = e["peer"] if e["peer"] in top else "others"
            bins[int(secs(e) / width)][key] += e["len"]
    fig, ax = plt.subplots(figsize=(10, 5))
    if bins:
        idx = range(min(bins), max(bins) + 1)
        times = [(i + 0.5) * width for i in idx]
        keys = top + (["others"] if any("others" in c for c in bins.values()) else [])
        series = [[bins[i][k] / width / 1e6 for i in idx] for k in keys]
        ax.stackplot(times, series, labels=[label(k) if k != "others" else "others" for k in keys])
        ax.legend(loc="upper left", fontsize="small")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("MB/s received (%g s bins)" % round(width, 3))
    ax.set_title("Download throughput per peer (stacked)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "throughput.png"), dpi=100)
    plt.close(fig)


def latency(events, label, out):
    top = busiest(events)
    samples = collections.defaultdict(list)
    for e in events:
        if e["ev"] == "block" and e["peer"] in top:
            samples[e["peer"]].append(e["latency_us"] / 1000.0)
    fig, ax = plt.subplots(figsize=(10, 5))
    peers = [p for p in top if samples[p]]
    if peers:
        ax.boxplot([samples[p] for p in peers], vert=False, labels=[label(p) for p in peers], showfliers=False)
    ax.set_xlabel("request round trip, ms (box: quartiles; whiskers: 1.5 IQR)")
    ax.set_title("Request latency per peer")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency.png"), dpi=100)
    plt.close(fig)


def chokes(events, label, out):
    end = secs(events[-1]) if events else 0
    spans = collections.defaultdict(list)  # peer -> [(start, length)] while it unchoked us
    since, gone = {}, {}
    for e in events:
        if e["ev"] in ("choke", "unchoke") and e.get("by") == "peer":
            p = e["peer"]
            if e["ev"] == "unchoke":
                since.setdefault(p, secs(e))
            elif p in since:
                start = since.pop(p)
                spans[p].append((start, secs(e) - start))
        elif e["ev"] in ("peer_dropped", "connect_failed"):
            gone[e["peer"]] = secs(e)
            if e["peer"] in since:
                start = since.pop(e["peer"])
                spans[e["peer"]].append((start, secs(e) - start))
    for p, start in since.items():
        spans[p].append((start, gone.get(p, end) - start))
    peers = sorted(spans)[: MAX_PEERS * 2]
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.4 * len(peers) + 1)))
    for i, p in enumerate(peers):
        ax.broken_barh(spans[p], (i - 0.35, 0.7), color="tab:green")
    ax.set_yticks(range(len(peers)))
    ax.set_yticklabels([label(p) for p in peers], fontsize="small")
    ax.set_xlabel("seconds since start (green: the peer unchoked us)")
    ax.set_title("When each peer choked and unchoked us")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "chokes.png"), dpi=100)
    plt.close(fig)


def pipeline(events, label, out):
    """Requests in flight per peer (counted from `request`, `block`, our `cancel`s and the peer's `reject`s) and
    the target depth from the once-a-second `rate` events."""
    top = busiest(events)[:6]
    fig, ax = plt.subplots(figsize=(10, 5))
    plotted = False
    for i, p in enumerate(top):
        color = "C%d" % i
        n, pts = 0, []
        for e in events:
            if e.get("peer") != p:
                continue
            if e["ev"] == "request":
                n += 1
            elif e["ev"] == "block" or (e["ev"] == "cancel" and e["by"] == "us") or \
                    (e["ev"] == "reject" and e["by"] == "peer"):
                n = max(0, n - 1)
            elif e["ev"] == "rate":
                n = e["in_flight"]  # resynchronise (timeouts and chokes release requests too)
            else:
                continue
            pts.append((secs(e), n))
        if pts:
            ax.step([t for t, _ in pts], [v for _, v in pts], where="post", color=color, label=label(p) + " in flight")
            plotted = True
        target = [(secs(e), e["target"]) for e in events if e["ev"] == "rate" and e["peer"] == p]
        if target:
            ax.plot([t for t, _ in target], [g for _, g in target], color=color, linestyle="--", marker=".",
                    label="target")
    if plotted:
        ax.legend(loc="upper left", fontsize="x-small", ncol=2)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("requests")
    ax.set_title("Pipeline depth per peer")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "pipeline.png"), dpi=100)
    plt.close(fig)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_trace.py TRACE OUT_DIR")
    trace, out = sys.argv[1], sys.argv[2]
    events = read(trace)
    os.makedirs(out, exist_ok=True)
    label = labels(events)
    for chart in (throughput, latency, chokes, pipeline):
        chart(events, label, out)
    for name in ("throughput", "latency", "chokes", "pipeline"):
        print(os.path.join(out, name + ".png"))


if __name__ == "__main__":
    main()
