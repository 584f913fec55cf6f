#!/usr/bin/env bash
# install-deps.sh - install (idempotently) everything the rgw testbed and the
# end-to-end tests need. Skips apt entirely when all packages are present.
#
# - never lets nsd/unbound/knot/ssh start as system services during installation
#   (temporary /usr/sbin/policy-rc.d returning 101, unless one already exists)
# - if an nsd/unbound/knotd daemon nevertheless appears in the root namespace during
#   this run, it is stopped again (only daemons that were not running before)
# - checks that cargo is available
# - ALG peers (tests/test_alg.py): pyftpdlib + lftp/curl (FTP), sipp (SIP),
#   GStreamer RTSP server + ffmpeg (RTSP), tcpdump
#
# Usage: install-deps.sh          the testbed and the tests
#        install-deps.sh bench    also the benchmark suite's peers and tools
#                                 (knot, iperf3, tayga, python3-matplotlib, linux-perf,
#                                 valgrind), see testbed/bench/bench.sh
set -euo pipefail

PKGS=(
    iproute2 nftables iptables conntrack
    dnsutils knot-dnsutils unbound nsd dnsperf
    socat ncat traceroute iputils-ping curl
    openssh-server openssh-client
    python3 python3-pytest python3-yaml
    libnftnl-dev libmnl-dev pkg-config build-essential
    procps psmisc
    python3-pyftpdlib lftp sip-tester tcpdump ffmpeg
    python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    python3-scapy hping3
)
BENCH_PKGS=(knot iperf3 tayga python3-matplotlib linux-perf valgrind)

case "${1:-}" in
    "") ;;
    bench) PKGS+=("${BENCH_PKGS[@]}") ;;
    *) printf 'usage: %s [bench]\n' "$0" >&2; exit 2 ;;
esac

log() { printf '[install-deps] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

missing=()
for p in "${PKGS[@]}"; do
    is_installed "$p" || missing+=("$p")
done

# PIDs of nsd/unbound/knotd daemons running in the root network namespace
root_dns_daemons() {
    local pid root_ns
    root_ns=$(readlink /proc/1/ns/net)
    for pid in $(pgrep -x nsd 2>/dev/null; pgrep -x unbound 2>/dev/null; pgrep -x knotd 2>/dev/null); do
        [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$root_ns" ] && echo "$pid"
    done
    return 0
}

if [ ${#missing[@]} -eq 0 ]; then
    log "all ${#PKGS[@]} packages already installed - skipping apt"
else
    log "missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    before=" $(root_dns_daemons | tr '\n' ' ') "

    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# temporary, created by rgw testbed install-deps.sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    cleanup() {
        if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    }
    trap cleanup EXIT

    APT=(apt-get -o DPkg::Lock::Timeout=900 -y --no-install-recommends)
    # apt-get update once, only when the package lists are empty or a
    # missing package has no install candidate
    need_update=0
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        need_update=1
    else
        for p in "${missing[@]}"; do
            cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
            if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then need_update=1; break; fi
        done
    fi
    if [ "$need_update" = 1 ]; then
        log "apt-get update"
        apt-get -o DPkg::Lock::Timeout=900 update
    fi
    log "apt-get install ${missing[*]}"
    "${APT[@]}" install "${missing[@]}"

    # stop system-wide nsd/unbound/knotd that this installation started
    for pid in $(root_dns_daemons); do
        case "$before" in *" $pid "*) continue ;; esac
        name=$(cat "/proc/$pid/comm" 2>/dev/null || echo '?')
        log "stopping system $name (PID $pid) started by the installation"
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
            systemctl stop "$name" 2>/dev/null || true
        fi
        kill -TERM "$pid" 2>/dev/null || true
    done

    still=()
    for p in "${PKGS[@]}"; do is_installed "$p" || still+=("$p"); done
    if [ ${#still[@]} -gt 0 ]; then
        log "ERROR: still missing after installation: ${still[*]}"
        exit 1
    fi
    log "all packages installed"
fi

if command -v cargo >/dev/null 2>&1; then
    log "cargo: $(command -v cargo)"
elif [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    log "cargo found at ${HOME:-/root}/.cargo/bin/cargo but not on PATH - add it: export PATH=\"\$HOME/.cargo/bin:\$PATH\""
else
    log "ERROR: cargo not found. Install a Rust toolchain (https://rustup.rs), e.g.:"
    log "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y"
    exit 1
fi
