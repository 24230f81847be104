# shellcheck shell=bash
# Shared by scripts/test and scripts/demo: install Debian packages, but only when something is missing.
#
#   ensure_packages PKG...   installs the missing ones: `apt-get update`, then `apt-get install -y`.
#                            Returns at once when every package is already installed.
#
# Services shipped by these packages (transmission-daemon, opentracker) must not start on install: they would run
# with their default settings (DHT, LPD, UPnP on, listening on every interface). While installing we put a
# policy-rc.d in place that forbids starting services, unless one is there already.

rill_pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

ensure_packages() {
  local missing=() p
  for p in "$@"; do
    rill_pkg_installed "$p" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "[deps] already installed: $*"
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "[deps] need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  echo "[deps] installing: ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, from rill scripts/lib/deps.sh: do not start services on install\nexit 101\n' \
      | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added_policy=1
  fi
  local rc=0
  "${sudo[@]}" apt-get update || rc=$?
  if [ $rc -eq 0 ]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || rc=$?
  fi
  if [ $added_policy -eq 1 ]; then
    "${sudo[@]}" rm -f "$policy"
  fi
  if [ $rc -ne 0 ]; then
    echo "[deps] apt-get failed (exit $rc) installing: ${missing[*]}" >&2
    return $rc
  fi
  for p in "${missing[@]}"; do
    rill_pkg_installed "$p" || { echo "[deps] $p is still not installed" >&2; return 1; }
  done
}

# The packages the integration tests drive (real trackers, seeders, leechers, torrent makers).
RILL_TEST_PACKAGES=(
  opentracker          # Debian's opentracker (info-hash whitelist build)
  transmission-daemon  # seeder with RPC
  transmission-cli     # transmission-create, transmission-show
  aria2                # aria2c seeder/leecher with JSON-RPC
  python3              # /usr/bin/python3 for the libtorrent helper scripts
  python3-libtorrent   # tests/peers/lt_peer.py, tests/peers/make_torrent.py
  qbittorrent-nox      # seeder with Web API
  curl                 # scripts/demo's waits and checks
  python3-matplotlib   # scripts/plot-trace (tests/trace_stats.rs draws the charts of its trace)
  coreutils            # timeout(1): every test process has a hard lifetime
  procps               # ps/kill in scripts
  chromium             # headless browser for the web page test (tests/interop_daemon_web.rs)
  chromium-driver      # chromedriver: W3C WebDriver for that test
  fonts-dejavu-core    # a font for its screenshots (chromium only recommends one)
  tmux                 # tests/live_view.rs: rill's full-screen view in a pseudo-terminal
  python3-fusepy       # tests/peers/slowfs.py: the slow disk of tests/slow_disk.rs (a FUSE filesystem)
  libfuse2             # the libfuse that fusepy loads
  fuse                 # fusermount: mounting as a user, and the rig's fallback unmount (fusermount -u -z)
)
