# shellcheck shell=bash
# bench/lib.sh - helpers shared by the benchmark scenario scripts.
#
# Source it from a scenario script:   . "$(dirname "$(readlink -f "$0")")/lib.sh"
#
#   bench_args "$@"              --rounds N / --quick (defaults from BENCH_ROUNDS, BENCH_QUICK)
#   bench_open SCENARIO          start results/SCENARIO.csv (header only)
#   emit SYSTEM METRIC UNIT ROUND VALUE
#                                append one row: scenario,system,metric,unit,round,value
#   tb_up                        build rgw (once), bring up a testbed with a per-run
#                                prefix, trap its teardown on exit
#   rgw_config [sed -e ...]      the shipped rgw.toml with a per-run control socket and
#                                binding log, plus the given sed expressions, written
#                                to $STATE/rgw.toml
#   rgw_start / rgw_stop         rgw in the gateway namespace (--log warn), by PID
#   rgw_counter NAME             one counter of `rgw status --json`
#   dnsperf_run PORT QFILE SECONDS [SERVER]
#                                dnsperf from the client namespace; sets DP_* variables
#   cpu_ticks COMM               user and system clock ticks of the gateway-namespace
#                                processes called COMM (all threads, all children)
#   udp_rcvbuf_errors NS         the namespace's count of datagrams dropped on a full
#                                socket receive buffer
#   rotate ROUND ITEM...         the items rotated by ROUND (alternates the order per round)
#
# The scenario scripts only ever touch their own testbed's namespaces: every
# daemon they start runs inside it, every nftables change is made inside its
# gateway namespace, and the teardown kills the recorded PIDs and deletes the
# namespaces.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/../.." && pwd)"
RESULTS_DIR="$BENCH_DIR/results"
PY=/usr/bin/python3     # Debian's python (matplotlib, no pyenv shims inside netns)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$REPO/testbed/lib.sh"

# ------------------------------------------------------------------ options
bench_usage() {
    cat >&2 <<EOF
usage: $(basename "$0") [--rounds N] [--quick]
  --rounds N   measurement rounds per system (default 3); the order of the
               systems alternates from round to round
  --quick      1 round and shorter runs (a smoke test of the whole suite)
EOF
    exit 2
}

bench_args() {
    ROUNDS=${BENCH_ROUNDS:-3}
    QUICK=${BENCH_QUICK:-0}
    while [ $# -gt 0 ]; do
        case "$1" in
            --rounds) [ $# -ge 2 ] || bench_usage; ROUNDS=$2; shift 2 ;;
            --rounds=*) ROUNDS=${1#--rounds=}; shift ;;
            --quick) QUICK=1; shift ;;
            -h|--help) bench_usage ;;
            *) warn "unknown option '$1'"; bench_usage ;;
        esac
    done
    [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive integer, got '$ROUNDS'"
    if [ "$QUICK" = 1 ]; then ROUNDS=1; fi
    [ "$(id -u)" = 0 ] || die "$(basename "$0") must run as root (network namespaces, nftables)"
}

# quick_or QUICK_VALUE FULL_VALUE
quick_or() { if [ "$QUICK" = 1 ]; then echo "$1"; else echo "$2"; fi; }

# ------------------------------------------------------------------ results
bench_open() {
    SCENARIO=$1
    mkdir -p "$RESULTS_DIR"
    RESULT_FILE="$RESULTS_DIR/$SCENARIO.csv"
    echo "scenario,system,metric,unit,round,value" >"$RESULT_FILE"
}

emit() {
    local system=$1 metric=$2 unit=$3 round=$4 value=$5
    [ -n "$value" ] || { warn "no value for $system $metric (round $round)"; return 0; }
    echo "$SCENARIO,$system,$metric,$unit,$round,$value" >>"$RESULT_FILE"
    printf '    %-8s %-28s %12s %s\n' "$system" "$metric" "$value" "$unit" >&2
}

# ------------------------------------------------------------------ testbed
STATE=
RGW_PID=
BENCH_CLEANUPS=()      # extra commands run (in reverse order) before the teardown

on_cleanup() { BENCH_CLEANUPS+=("$*"); }

tb_down() {
    local i
    for ((i = ${#BENCH_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${BENCH_CLEANUPS[$i]}" >/dev/null 2>&1 || true
    done
    BENCH_CLEANUPS=()
    rgw_stop
    if [ -n "$STATE" ]; then
        "$REPO/testbed/topology.sh" down "$STATE" >/dev/null 2>&1 || true
        if [ "${BENCH_KEEP_STATE:-0}" = 1 ]; then
            info "state kept in $STATE"
        else
            rm -rf "$STATE"
        fi
        STATE=
    fi
}

rgw_build() {
    RGW_BIN=${RGW_BIN:-$REPO/target/release/rgw}
    if [ "${BENCH_BUILT:-0}" != 1 ]; then
        info "cargo build --release --locked -p rgw"
        (cd "$REPO" && cargo build --release --locked -p rgw >&2) || die "cargo build failed"
        BENCH_BUILT=1
    fi
    [ -x "$RGW_BIN" ] || die "no rgw binary at $RGW_BIN"
}

tb_up() {
    rgw_build
    STATE=$(mktemp -d "/tmp/rgw-bench-$SCENARIO-XXXXXX")
    RGW_PREFIX="rgwbn$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')-"
    export RGW_PREFIX
    trap tb_down EXIT
    trap 'exit 130' INT TERM HUP
    "$REPO/testbed/topology.sh" up "$STATE" >"$STATE/topology.log" 2>&1 ||
        { cat "$STATE/topology.log" >&2; die "topology.sh up failed"; }
    load_env "$STATE"
    info "testbed $RGW_PREFIX up (state $STATE)"
}

# ------------------------------------------------------------------ rgw
rgw_config() {
    sed -e "s|^socket = .*|socket = \"$STATE/rgw.sock\"|" \
        -e "s|^path = \".*bindings.log\"|path = \"$STATE/bindings.log\"|" "$@" \
        "$REPO/testbed/config/rgw.toml" >"$STATE/rgw.toml"
    "$RGW_BIN" check --config "$STATE/rgw.toml" >/dev/null || die "rgw check rejected $STATE/rgw.toml"
}

rgw_start() {
    [ -z "$RGW_PID" ] || die "rgw_start: rgw already running (PID $RGW_PID)"
    rm -f "$STATE/rgw.sock"
    start_bg "$STATE" "$NS_GW" rgw "$RGW_BIN" run --config "$STATE/rgw.toml" --log warn
    RGW_PID=$LAST_BG_PID
    local i
    for i in $(seq 1 150); do
        if ! kill -0 "$RGW_PID" 2>/dev/null; then
            tail -20 "$STATE/log/rgw.log" >&2
            RGW_PID=
            die "rgw exited during start"
        fi
        if [ -S "$STATE/rgw.sock" ] && [ -n "$(nsx "$NS_GW" ss -Hlnu "sport = :53")" ]; then
            sleep 0.2
            return 0
        fi
        sleep 0.1
    done
    die "rgw not ready after 15 s (see $STATE/log/rgw.log)"
}

rgw_stop() {
    [ -n "$RGW_PID" ] || return 0
    local i
    kill -TERM "$RGW_PID" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$RGW_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$RGW_PID" 2>/dev/null || true
    wait "$RGW_PID" 2>/dev/null || true
    RGW_PID=
}

rgw_status_json() {
    nsx "$NS_GW" "$RGW_BIN" status --json --socket "$STATE/rgw.sock"
}

rgw_counter() {
    rgw_status_json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["counters"][sys.argv[1]])' "$1"
}

# ------------------------------------------------------------------ measuring
# dnsperf_run PORT QFILE SECONDS [SERVER]: -c 4 -T 2 -q 500 from the client
# namespace (DESIGN.md §3), with a 1 s query timeout (-t 1) instead of 5 s: a
# lost query holds one of the 500 slots until it times out, so a server that
# drops dnsperf's opening burst would otherwise run most of the test with
# fewer queries in flight. Answers take milliseconds here. Sets DP_SENT
# DP_COMPLETED DP_LOST DP_QPS DP_LAT_MS DP_RESP_BYTES DP_NOERROR; the full
# output is in $STATE/dnsperf.last.
# shellcheck disable=SC2034  # the DP_* results are read by the callers
dnsperf_run() {
    local port=$1 qfile=$2 secs=$3 server=${4:-$GW_WAN_IP} out
    out=$(nsx "$NS_CLI" timeout $((secs + 30)) dnsperf -s "$server" -p "$port" -d "$qfile" \
        -c 4 -T 2 -l "$secs" -q 500 -t 1 2>&1) || { echo "$out" >&2; die "dnsperf failed"; }
    printf '%s\n' "$out" >"$STATE/dnsperf.last"
    DP_SENT=$(awk '/Queries sent:/ {print $3}' <<<"$out")
    DP_COMPLETED=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    DP_LOST=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    DP_QPS=$(awk '/Queries per second:/ {print $4}' <<<"$out")
    DP_LAT_MS=$(awk '/Average Latency \(s\):/ {printf "%.4f", $4 * 1000}' <<<"$out")
    DP_RESP_BYTES=$(awk '/Average packet size:/ {print $7}' <<<"$out")
    DP_NOERROR=$(awk '/Response codes:/ {for (i = 3; i <= NF; i++) if ($i == "NOERROR") print $(i + 1)}' <<<"$out")
    DP_NOERROR=${DP_NOERROR:-0}
}

# cpu_ticks COMM: "USER SYSTEM" clock ticks summed over the processes named
# COMM (or "COMM: ...") in the gateway namespace (a process's times include
# all its threads).
cpu_ticks() {
    local comm=$1 pid u=0 s=0 stat
    for pid in $(ip netns pids "$NS_GW" 2>/dev/null); do
        # NSD renames its processes "nsd: main", "nsd: server 1", ...
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in "$comm" | "$comm:"*) ;; *) continue ;; esac
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        u=$((u + ${12})); s=$((s + ${13}))
    done
    echo "$u $s"
}
CLK_TCK=$(getconf CLK_TCK)

# udp_rcvbuf_errors NS: datagrams the kernel dropped in NS because a socket's
# receive buffer was full (Udp RcvbufErrors of the namespace)
udp_rcvbuf_errors() {
    # shellcheck disable=SC2016  # awk's own $i
    nsx "$1" awk '/^Udp:/ { if (seen) { for (i = 2; i <= NF; i++) if (name[i] == "RcvbufErrors") print $i; exit }
                           for (i = 2; i <= NF; i++) name[i] = $i; seen = 1 }' /proc/net/snmp
}

# us_per PER_TICKS COUNT: microseconds of CPU per event
us_per() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.3f", t * 1e6 / hz / n }'; }

rotate() {
    local r=$1; shift
    local n=$# i
    local items=("$@")
    for ((i = 0; i < n; i++)); do
        printf '%s ' "${items[$(((i + r - 1) % n))]}"
    done
    echo
}

# ratio A B: A / B with 4 decimals (empty if B is 0)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 != 0) printf "%.4f", a / b }'; }
