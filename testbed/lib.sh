# shellcheck shell=bash
# lib.sh - helpers for the Realm Gateway network-namespace testbed.
#
# Source this file from bash:   . "$(dirname "$0")/lib.sh"
#
# Provides:
#   log/info/warn/die            logging to stderr with a timestamp
#   pass/fail/check_summary      PASS/FAIL bookkeeping for check scripts
#   nsx NS cmd...                run a command inside a network namespace
#   ns_exists NS                 true if the named namespace exists
#   wait_port NS PROTO PORT TIMEOUT
#                                wait until something listens on PORT
#   start_bg STATE NS NAME cmd...
#                                start a background daemon inside NS, log to
#                                STATE/log/NAME.log, record its PID in STATE/pids
#   kill_recorded STATE          kill exactly the PIDs recorded in STATE/pids
#   kill_ns_leftovers NS         kill processes still living inside NS (by PID)
#   load_env STATE               source STATE/env
#
# Nothing here touches the root namespace's network configuration.

# Directory containing this file (the testbed directory).
TESTBED_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export TESTBED_DIR

# ---------------------------------------------------------------- logging
_ts() { date +%H:%M:%S; }
log()  { printf '[%s] %s\n' "$(_ts)" "$*" >&2; }
info() { log "INFO  $*"; }
warn() { log "WARN  $*"; }
die()  { log "ERROR $*"; exit 1; }

# PASS/FAIL bookkeeping (used by `topology.sh check`).
CHECK_PASSED=0
CHECK_FAILED=0
pass() { CHECK_PASSED=$((CHECK_PASSED + 1)); printf 'PASS  %s\n' "$*"; }
fail() { CHECK_FAILED=$((CHECK_FAILED + 1)); printf 'FAIL  %s\n' "$*"; }
# check_summary: prints totals; returns non-zero if anything failed.
check_summary() {
    printf -- '---- %d passed, %d failed\n' "$CHECK_PASSED" "$CHECK_FAILED"
    [ "$CHECK_FAILED" -eq 0 ]
}
# expect DESCRIPTION cmd... : run cmd (quietly), PASS if it exits 0.
expect() {
    local desc=$1; shift
    local out
    if out=$("$@" 2>&1); then
        pass "$desc"
    else
        fail "$desc"
        [ -n "$out" ] && printf '      %s\n' "${out//$'\n'/$'\n      '}"
    fi
    return 0
}

# ---------------------------------------------------------------- namespaces
# nsx NS cmd... : run a command inside network namespace NS.
nsx() {
    local ns=$1; shift
    ip netns exec "$ns" "$@"
}

ns_exists() {
    [ -e "/run/netns/$1" ]
}

# wait_port NS PROTO PORT TIMEOUT
#   PROTO is tcp or udp. Waits until a socket is listening/bound on PORT
#   inside NS. Returns non-zero on timeout (TIMEOUT in seconds, may be
#   fractional).
wait_port() {
    local ns=$1 proto=$2 port=$3 timeout=${4:-5}
    local flag
    case "$proto" in
        tcp) flag=-t ;;
        udp) flag=-u ;;
        *) warn "wait_port: unknown protocol '$proto'"; return 2 ;;
    esac
    local deadline
    deadline=$(awk -v t="$timeout" 'BEGIN{printf "%d", t*10}')
    local i=0
    while [ "$i" -le "$deadline" ]; do
        if [ -n "$(ip netns exec "$ns" ss -Hln "$flag" "sport = :$port" 2>/dev/null)" ]; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    warn "wait_port: nothing listening on $proto/$port in $ns after ${timeout}s"
    return 1
}

# ---------------------------------------------------------------- processes
# proc_starttime PID : the process start time (clock ticks since boot),
# used together with the PID to recognise our own processes (PID reuse).
proc_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # Field 22; strip "pid (comm) " first because comm may contain spaces.
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    printf '%s\n' "${20}"
}

# start_bg STATE NS NAME cmd...
#   Starts cmd inside NS in the background (stdin /dev/null, stdout+stderr
#   appended to STATE/log/NAME.log) and records "PID STARTTIME NS NAME" in
#   STATE/pids. `ip netns exec` execs the command, so $! is the daemon's PID.
start_bg() {
    local state=$1 ns=$2 name=$3; shift 3
    mkdir -p "$state/log"
    ip netns exec "$ns" "$@" </dev/null >>"$state/log/$name.log" 2>&1 &
    local pid=$!
    local st
    st=$(proc_starttime "$pid") || st=0
    printf '%s %s %s %s\n' "$pid" "$st" "$ns" "$name" >>"$state/pids"
    # shellcheck disable=SC2034  # for callers
    LAST_BG_PID=$pid
}

# _is_ours PID STARTTIME : the PID still refers to the process we started.
_is_ours() {
    local cur
    [ -d "/proc/$1" ] || return 1
    cur=$(proc_starttime "$1") || return 1
    [ "$2" = 0 ] || [ "$cur" = "$2" ]
}

# kill_recorded STATE : TERM (then KILL after ~3 s) every process recorded in
# STATE/pids that is still alive and still the same process. Never fails.
kill_recorded() {
    local state=$1 pidfile="$1/pids"
    [ -f "$pidfile" ] || return 0
    local pid st ns name alive
    while read -r pid st ns name; do
        [ -n "$pid" ] || continue
        if _is_ours "$pid" "$st"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done <"$pidfile"
    local i
    for i in $(seq 1 30); do
        alive=0
        while read -r pid st ns name; do
            [ -n "$pid" ] || continue
            if _is_ours "$pid" "$st" && ! _is_zombie "$pid"; then alive=1; fi
        done <"$pidfile"
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    while read -r pid st ns name; do
        [ -n "$pid" ] || continue
        if _is_ours "$pid" "$st" && ! _is_zombie "$pid"; then
            warn "PID $pid ($name in $ns) ignored SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done <"$pidfile"
    return 0
}

_is_zombie() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    [ "${stat%% *}" = Z ]
}

# kill_ns_leftovers NS : processes still inside one of *our* per-run
# namespaces (forked socat children, tools started by tests, ...) are killed
# by PID so that the namespace can really go away. Only PIDs reported by
# `ip netns pids NS` are touched.
kill_ns_leftovers() {
    local ns=$1 pids pid i
    ns_exists "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ') || true
    [ -n "${pids// /}" ] || return 0
    info "killing leftover processes in $ns: $pids"
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for i in $(seq 1 20); do
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ') || true
        [ -n "${pids// /}" ] || return 0
        sleep 0.1
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    return 0
}

# load_env STATE : source STATE/env (written by `topology.sh up`).
load_env() {
    local env="$1/env"
    [ -f "$env" ] || return 1
    # shellcheck disable=SC1090
    . "$env"
}
