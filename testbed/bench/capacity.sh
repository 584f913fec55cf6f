#!/usr/bin/env bash
# capacity.sh - the Circular Pool capacity experiment (seed "Realm Gateway
# Scalability", Fig. 3/4: 50 ms delay, 60 conn/s), in the netns testbed.
#
#   ./testbed/bench/capacity.sh [options]            (as root)
#
#   --rates LIST     offered conn/s (default 10,20,40,60,80,120,160,240,320)
#   --duration S     seconds of arrivals per point (default 10)
#   --tests LIST     which traffic mixes (default 1,2,3,4; see capacity.py)
#   --rounds N       repetitions of the whole sweep (default $BENCH_ROUNDS or 1;
#                    lowered if the run would exceed --budget)
#   --budget S       planned measuring time limit in seconds (default 1500)
#   --quick          rates 20,60,120,240, 5 s per point, 1 round (~2 minutes)
#   --delay MS       one-way delay on the router, both directions (default 25 -> RTT 50 ms)
#   --pool RANGE     the Circular Pool (default 198.51.100.17-198.51.100.19: 3 addresses)
#   --seed N         arrivals and netem-lite PRNG seed (default 1)
#   --names-per-host N  DNS names per private host, 1..100 (default 100): the host
#                    and N-1 aliases hostX-001.. (see "names" below)
#   --csv FILE       default testbed/bench/results/capacity.csv
#   --png FILE       default docs/bench/capacity.png
#   --keep-state     keep the state directory (logs) afterwards
#   --allow-tuple-reuse  let the client reuse the 5-tuple of a flow from the last
#                    200 s (see capacity.py: such a flow bypasses the gateway's
#                    first-packet gate through the old conntrack entry)
#   --nice N         niceness of the experiment's processes (rgw, unbound, NSD, the
#                    host servers, the client), default -5; netem-lite runs SCHED_FIFO
#                    (--rt-priority 10) so a busy machine does not stretch the delay
#   --rgw-log LEVEL  rgw's log level (default warn; info logs every decision)
#   --on-exhausted M rgw's pool.on_exhausted: drop (shipped default), servfail, refused
#   --unbound-log    keep the testbed resolver's per-query log (log-queries,
#                    log-replies). By default they are switched off at run time
#                    (unbound-control set_option): one synchronous write per query
#                    and reply, and on a busy disk a stalled write stalls the
#                    resolver's only thread.
#
# What it does:
#   1. brings up the testbed (testbed/topology.sh up) with prefix rgwcap<hex>-;
#   2. starts listeners on both private hosts so every SFQDN service answers
#      with the host's name: TCP 7101-7105 ("hostX-<port>", capacity.py
#      --serve: one process, no fork per connection, unlike the testbed's
#      socat listeners) and UDP 7101-7105 (testbed/udp_server.py). Ports of
#      their own, so they never collide with the testbed's servers;
#   3. starts rgw in the gateway namespace with the shipped config, changed to:
#      per-run control socket and binding log, the small pool, max_pending = 0
#      for every host (unlimited), Tmax 2 s, `--log warn`;
#   4. starts netem-lite (testbed/tools) in the router namespace: --delay MS on
#      FORWARD, i.e. each way between the public segment and the gateway. The
#      client's path to the pool and the resolver's path to the gateway (the
#      DNS delegation) both see RTT = 2 x MS; client <-> resolver does not
#      (same bridge), as in the paper's setting;
#   5. runs capacity.py in the client namespace (real resolver 203.0.113.54,
#      33 client source addresses), which writes the CSV fragment, the PNG and
#      a markdown summary (also saved as STATE/summary.md);
#   6. prints netem-lite's counters and tears everything down (trap), then
#      checks that no namespace with the run's prefix is left.
#
# Names: a recursive resolver answers identical questions that are in flight
# at the same time with one upstream query (unbound's "mesh"), so two clients
# asking hosta.gwa.demo within the same ~50 ms get the SAME pool address and
# only one of them can claim it. With 2 names that dominates everything
# (measured: 68% success at 20 conn/s, all failures shared answers). To
# measure the pool rather than the resolver, every host gets aliases:
# hosta-001 .. hosta-099 (192.168.0.2 .. .100, added to hosta's eth0) and
# hostb-001 .. hostb-099 (192.168.0.103 .. .201), each one more [[hosts]]
# entry in rgw's config. The client picks a name uniformly; the banner still
# names hosta / hostb. --names-per-host 1 shows the resolver effect.
#
# Run it on an otherwise idle machine. Past the knee the system is
# metastable (dropped queries -> resolver retries -> answers that arrive after
# the client gave up -> reservations held for Tmax -> more drops), and CPU
# contention (other builds, benchmarks) stretches the resolver's and the
# client's timing enough to tip it over earlier: on a 2-CPU VM at load 5-8 the
# same sweep collapsed at rates the idle run handled at 99%.
#
# Environment: RGW_BIN, NETEM_LITE_BIN (skip the build), BENCH_ROUNDS,
# BENCH_QUICK (as set by bench.sh), CARGO_TARGET_DIR.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
REPO="$(cd "$BENCH_DIR/../.." && pwd)"
# shellcheck source=../lib.sh
. "$REPO/testbed/lib.sh"
PY=/usr/bin/python3   # Debian's python: matplotlib, no pyenv shims inside netns

RATES=10,20,40,60,80,120,160,240,320
DURATION=10
TESTS=1,2,3,4
ROUNDS=${BENCH_ROUNDS:-1}
QUICK=${BENCH_QUICK:-0}
BUDGET=1500
DELAY=25
POOL=198.51.100.17-198.51.100.19
SEED=1
CSV_OUT="$BENCH_DIR/results/capacity.csv"
PNG_OUT="$REPO/docs/bench/capacity.png"
KEEP_STATE=0
NAMES=100
NICE=-5
RGW_LOG=warn
UNBOUND_LOG=0
PY_EXTRA=()
ON_EXHAUSTED=

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) RATES=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --tests) TESTS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --delay) DELAY=$2; shift 2 ;;
        --pool) POOL=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --names-per-host) NAMES=$2; shift 2 ;;
        --csv) CSV_OUT=$2; shift 2 ;;
        --png) PNG_OUT=$2; shift 2 ;;
        --keep-state) KEEP_STATE=1; shift ;;
        --nice) NICE=$2; shift 2 ;;
        --rgw-log) RGW_LOG=$2; shift 2 ;;
        --on-exhausted) ON_EXHAUSTED=$2; shift 2 ;;
        --unbound-log) UNBOUND_LOG=1; shift ;;
        --allow-tuple-reuse) PY_EXTRA+=(--allow-tuple-reuse); shift ;;
        -h|--help) usage ;;
        *) warn "unknown option '$1'"; usage ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    RATES=20,60,120,240; DURATION=5; ROUNDS=1
fi
[ "$(id -u)" = 0 ] || die "capacity.sh must run as root (network namespaces)"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive integer"
[[ "$DURATION" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--duration wants seconds"
[[ "$RATES" =~ ^[0-9.]+(,[0-9.]+)*$ ]] || die "--rates wants a comma-separated list"
[[ "$TESTS" =~ ^[1-4](,[1-4])*$ ]] || die "--tests wants a list of 1..4"
[[ "$DELAY" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--delay wants milliseconds"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "--seed wants an unsigned integer"
[[ "$NICE" =~ ^-?[0-9]+$ ]] || die "--nice wants an integer"
[[ "$ON_EXHAUSTED" =~ ^(|drop|servfail|refused)$ ]] || die "--on-exhausted: drop, servfail or refused"
[[ "$RGW_LOG" =~ ^(error|warn|info|debug|trace)$ ]] || die "--rgw-log: error, warn, info, debug or trace"
[[ "$NAMES" =~ ^[0-9]+$ ]] && [ "$NAMES" -ge 1 ] && [ "$NAMES" -le 100 ] || die "--names-per-host wants 1..100"

# planned time: every point is its duration plus ~4 s of draining and settling
n_rates=$(tr ',' '\n' <<<"$RATES" | grep -c .)
n_tests=$(tr ',' '\n' <<<"$TESTS" | grep -c .)
est() { awk -v r="$1" -v t="$n_tests" -v n="$n_rates" -v d="$DURATION" 'BEGIN { printf "%d", r * t * n * (d + 4) + 20 }'; }
while [ "$(est "$ROUNDS")" -gt "$BUDGET" ] && [ "$ROUNDS" -gt 1 ]; do
    ROUNDS=$((ROUNDS - 1))
    info "capacity: fewer rounds to stay within the ${BUDGET} s budget: $ROUNDS"
done
EST=$(est "$ROUNDS")
POOL_SIZE=$("$PY" -c '
import ipaddress, sys
a, _, b = sys.argv[1].partition("-")
print(int(ipaddress.IPv4Address(b or a)) - int(ipaddress.IPv4Address(a)) + 1)' "$POOL") ||
    die "--pool: expected A or A-B, got '$POOL'"

# ------------------------------------------------------------------ dependencies and binaries
for tool in socat unbound unbound-control nsd iptables-nft dig; do
    command -v "$tool" >/dev/null || { "$REPO/testbed/install-deps.sh" >&2; break; }
done
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    "$REPO/testbed/install-deps.sh" bench >&2 || true
    "$PY" -c 'import matplotlib' 2>/dev/null || warn "python3-matplotlib missing: no PNG"
fi
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
if [ -z "${RGW_BIN:-}" ] || [ -z "${NETEM_LITE_BIN:-}" ]; then
    info "cargo build --release --locked -p rgw -p rgw-testbed-tools"
    (cd "$REPO" && cargo build --release --locked -p rgw -p rgw-testbed-tools >&2) || die "cargo build failed"
fi
RGW_BIN=${RGW_BIN:-$TARGET/release/rgw}
NETEM_LITE_BIN=${NETEM_LITE_BIN:-$TARGET/release/netem-lite}
[ -x "$RGW_BIN" ] || die "no rgw binary at $RGW_BIN"
[ -x "$NETEM_LITE_BIN" ] || die "no netem-lite binary at $NETEM_LITE_BIN"

# ------------------------------------------------------------------ testbed, with teardown
STATE=$(mktemp -d /tmp/rgw-capacity-XXXXXX)
RGW_PREFIX="rgwcap$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')-"
export RGW_PREFIX
RGW_PID=
NETEM_PID=
OK=0

stop_pid() {   # stop_pid PID SIGNAL: signal, wait up to 10 s, then KILL
    local pid=$1 sig=$2 i
    [ -n "$pid" ] || return 0
    kill "-$sig" "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$NETEM_PID" ]; then
        stop_pid "$NETEM_PID" INT   # removes its iptables rule, prints its counters
        NETEM_PID=
        info "netem-lite: $(tail -1 "$STATE/log/netem-lite.log" 2>/dev/null)"
    fi
    stop_pid "$RGW_PID" TERM
    RGW_PID=
    "$REPO/testbed/topology.sh" down "$STATE" >/dev/null 2>&1 || true
    if ip netns list | awk '{print $1}' | grep -q -- "^$RGW_PREFIX"; then
        warn "namespaces with prefix $RGW_PREFIX are still there: $(ip netns list | grep -- "$RGW_PREFIX" | tr '\n' ' ')"
        rc=1
    fi
    if [ "$KEEP_STATE" = 1 ] || [ "$OK" != 1 ]; then
        info "state and logs kept in $STATE"
    else
        rm -rf "$STATE"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

info "capacity: tests $TESTS, rates $RATES conn/s, ${DURATION} s per point, $ROUNDS round(s): about $((EST / 60)) min $((EST % 60)) s of measuring"
"$REPO/testbed/topology.sh" up "$STATE" >"$STATE/topology.log" 2>&1 ||
    { cat "$STATE/topology.log" >&2; die "topology.sh up failed"; }
load_env "$STATE"
info "testbed $RGW_PREFIX up (state $STATE)"

if [ "$UNBOUND_LOG" = 0 ]; then
    for opt in log-queries log-replies; do
        unbound-control -c "$UNBOUND_CONF" set_option "$opt:" no >/dev/null ||
            warn "could not switch off unbound's $opt"
    done
fi

# extra listeners: every SFQDN port must answer with the host's name
TCP_PORTS=7101,7102,7103,7104,7105
UDP_PORTS=7101,7102,7103,7104,7105
servers=()
for h in hosta hostb; do
    ns=$NS_HA; [ "$h" = hostb ] && ns=$NS_HB
    for p in ${TCP_PORTS//,/ }; do
        [ -z "$(nsx "$ns" ss -Hlnt "sport = :$p")" ] || die "tcp/$p is already in use in $ns"
    done
    for p in ${UDP_PORTS//,/ }; do
        [ -z "$(nsx "$ns" ss -Hlnu "sport = :$p")" ] || die "udp/$p is already in use in $ns"
    done
    start_bg "$STATE" "$ns" "$h-capacity-tcp" "$PY" -u "$BENCH_DIR/capacity.py" --serve "$h" --tcp-ports "$TCP_PORTS"
    servers+=("$LAST_BG_PID")
    # shellcheck disable=SC2046
    start_bg "$STATE" "$ns" "$h-capacity-udp" "$PY" -u "$REPO/testbed/udp_server.py" "$h" \
        $(printf '%s:name ' ${UDP_PORTS//,/ })
    servers+=("$LAST_BG_PID")
done
for ns in "$NS_HA" "$NS_HB"; do
    for p in ${TCP_PORTS//,/ }; do wait_port "$ns" tcp "$p" 5 || die "tcp/$p listener in $ns"; done
    for p in ${UDP_PORTS//,/ }; do wait_port "$ns" udp "$p" 5 || die "udp/$p listener in $ns"; done
done
for pid in "${servers[@]}"; do kill -0 "$pid" 2>/dev/null || die "a capacity listener exited (see $STATE/log)"; done

# host aliases: alias i of hosta is 192.168.0.(1+i), of hostb 192.168.0.(102+i)
alias_hosts() {
    local i
    for i in $(seq 1 $((NAMES - 1))); do
        printf '\n[[hosts]]\nname = "hosta-%03d"\nipv4 = "192.168.0.%d"\nmax_pending = 0\n' "$i" $((1 + i))
        printf '\n[[hosts]]\nname = "hostb-%03d"\nipv4 = "192.168.0.%d"\nmax_pending = 0\n' "$i" $((102 + i))
    done
}
if [ "$NAMES" -gt 1 ]; then
    for i in $(seq 1 $((NAMES - 1))); do echo "addr add 192.168.0.$((1 + i))/24 dev eth0"; done |
        ip -n "$NS_HA" -batch -
    for i in $(seq 1 $((NAMES - 1))); do echo "addr add 192.168.0.$((102 + i))/24 dev eth0"; done |
        ip -n "$NS_HB" -batch -
fi

# rgw: the shipped config with a small pool and no per-host limit
{ sed -e "s|^socket = .*|socket = \"$STATE/rgw.sock\"|" \
    -e "s|^addresses = .*|addresses = [\"$POOL\"]|" \
    -e 's|^tmax = .*|tmax = "2s"\ndefault_max_pending = 0|' \
    -e 's|^max_pending = .*|max_pending = 0|' \
    -e "s|^path = \".*bindings.log\"|path = \"$STATE/bindings.log\"|" \
    ${ON_EXHAUSTED:+-e "s|^on_exhausted = .*|on_exhausted = \"$ON_EXHAUSTED\"|"} \
    "$REPO/testbed/config/rgw.toml"; alias_hosts; } >"$STATE/rgw.toml"
"$RGW_BIN" check --config "$STATE/rgw.toml" >&2 || die "rgw check rejected $STATE/rgw.toml"
start_bg "$STATE" "$NS_GW" rgw "$RGW_BIN" run --config "$STATE/rgw.toml" --log "$RGW_LOG"
RGW_PID=$LAST_BG_PID
for i in $(seq 1 150); do
    kill -0 "$RGW_PID" 2>/dev/null || { tail -20 "$STATE/log/rgw.log" >&2; RGW_PID=; die "rgw exited during start"; }
    if [ -S "$STATE/rgw.sock" ] && [ -n "$(nsx "$NS_GW" ss -Hlnu "sport = :53")" ]; then break; fi
    [ "$i" = 150 ] && die "rgw not ready after 15 s (see $STATE/log/rgw.log)"
    sleep 0.1
done

# the delay: netem-lite in the router, both directions of FORWARD
NETEM_DURATION=$((EST * 2 + 300)); [ "$NETEM_DURATION" -gt 3600 ] && NETEM_DURATION=3600
start_bg "$STATE" "$NS_RTR" netem-lite "$NETEM_LITE_BIN" --duration "$NETEM_DURATION" \
    --delay "$DELAY" --seed "$SEED" --queue-num 100 --rt-priority 10
NETEM_PID=$LAST_BG_PID
sleep 0.3
kill -0 "$NETEM_PID" 2>/dev/null || { cat "$STATE/log/netem-lite.log" >&2; NETEM_PID=; die "netem-lite did not start"; }

# the machine may be shared: keep the experiment's own processes ahead of
# unrelated work (only PIDs this run started: the testbed's record + rgw)
if [ "$NICE" != 0 ]; then
    while read -r pid _st _ns name; do
        case "$name" in netem-lite) continue ;; esac
        renice -n "$NICE" -p "$pid" >/dev/null 2>&1 || true
    done <"$STATE/pids"
fi

# sanity: the delay is there, and a name leads to the right host
rtt=$(nsx "$NS_CLI" ping -n -c 5 -i 0.2 -q "$GW_WAN_IP" | awk -F/ '/^rtt/ {print $5}')
info "client -> gateway RTT: ${rtt:-?} ms (want $((2 * ${DELAY%.*})))"
addr=$(nsx "$NS_CLI" dig +short +time=2 +tries=1 @"$RES_IP" tcp7102.hosta.gwa.demo A || true)
got=$(nsx "$NS_CLI" socat -T 2 - "TCP:$addr:7102,connect-timeout=2" </dev/null 2>/dev/null || true)
[ "$got" = hosta-7102 ] || die "sanity check failed: tcp7102.hosta.gwa.demo -> '$addr' -> '$got'"
info "sanity: tcp7102.hosta.gwa.demo -> $addr -> $got"

# ------------------------------------------------------------------ measure
t0=$(date +%s)
nsx "$NS_CLI" timeout $((EST * 2 + 300)) nice -n "$NICE" "$PY" "$BENCH_DIR/capacity.py" \
    --resolver "$RES_IP" --zone gwa.demo --rates "$RATES" --duration "$DURATION" \
    --tests "$TESTS" --rounds "$ROUNDS" --seed "$SEED" --pool-size "$POOL_SIZE" \
    --names-per-host "$NAMES" --tcp-ports "$TCP_PORTS" --udp-ports "$UDP_PORTS" --fqdn-service tcp/7101 \
    --delay-ms "$DELAY" --tmax 2 --rgw-socket "$STATE/rgw.sock" --unbound-conf "$UNBOUND_CONF" \
    --csv "$CSV_OUT" --png "$PNG_OUT" ${PY_EXTRA[@]+"${PY_EXTRA[@]}"} | tee "$STATE/summary.md"
t1=$(date +%s)
info "capacity: measured in $((t1 - t0)) s; CSV $CSV_OUT; plot $PNG_OUT"
nsx "$NS_GW" "$RGW_BIN" status --socket "$STATE/rgw.sock" >"$STATE/rgw-status.txt" 2>&1 || true
OK=1
