#!/usr/bin/env bash
# alg.sh - the application layer gateway: SIP calls/s, FTP commands/s and the
# latency an ALG packet adds, rgw's ALG vs the kernel's nf_nat_sip helper vs
# plain NAT, in one netns testbed, back to back.
#
# Systems (rgw runs in every one; the gateway namespace is the only router):
#   rgw         the shipped testbed/config/rgw.toml (ALG on: every packet of a
#               flow on 21, 5060, 554 goes through NFQUEUE to rgw's engine)
#   nf_nat_sip  rgw with `[alg] enabled = false`, and our own nft table
#               `ip bench_sip` in the gateway namespace attaching the kernel's
#               SIP helper to UDP 5060 (`ct helper "sip-5060" { type "sip"
#               protocol udp; }`, `udp dport 5060 ct helper set "sip-5060"` in
#               prerouting): nf_conntrack_sip + nf_nat_sip rewrite instead
#   plain       rgw with `[alg] enabled = false`, no helper: plain SNAT
#               (for FTP: a connection to port 2121, not an ALG port, through
#               the rgw of the `rgw` turn, interleaved with the port-21 one)
# Conntrack of the gateway namespace is flushed at every switch (a helper
# attaches to new entries only).
#
# 1. SIP (sip.*): sipp's built-in uac on hosta (192.168.0.101:5060) calls the
#    built-in uas on web (203.0.113.80:5060) over UDP, -buff_size 4194304
#    (DESIGN.md §3). Each step is a fresh UAS and a UAC run of -m R*T calls at
#    -r R (T = 5 s, 3 s with --quick), -recv_timeout 5 s. A step passes when
#    sipp exits 0 with every call successful, 0 failed, and the calls took no
#    longer than T/0.9 (the rate was sustained); a failed step is tried once
#    more (other work on the machine makes single steps fail now and then).
#    The rate climbs by 1.5x from 200/s until a step fails (at most
#    30000/s), then two bisection steps between the last pass and the first
#    failure. sip.calls_per_s is the
#    highest passing rate; sip.retransmissions is sipp's count in that step.
#    For rgw also: its CPU time per queued packet over the ramp, and the
#    packets the kernel dropped on NFQUEUE (queue full) during the ramp.
#    Every INVITE and 200 OK carries SDP: with rgw each one is rewritten and
#    opens a pinhole, with nf_nat_sip the helper mangles it and sets up
#    expectations. For sipp itself the calls also "succeed" with plain NAT
#    (it sends no media, and the UAS answers to the packet's source).
# 2. FTP (ftp.*): pyftpdlib (testbed/peers/ftp_server.py, /usr/bin/python3)
#    on web:21 and web:2121, alg_client.py on hosta logged in to both: N NOOPs,
#    then N PORT commands on each, one at a time, each answered 200, in blocks
#    of 50 alternating between the two connections (N = 1000, 300 with
#    --quick). Measured in the rgw turn, with the ALG on: port 21 goes through
#    the ALG (reported as rgw), port 2121 is plain NAT (reported as plain), so
#    both share the same moment's machine load. pyftpdlib answers a PORT only
#    after it connected the active data connection, so a PORT is: rewrite +
#    pinhole (rgw), then the server's connect through the gateway to hosta's
#    listening socket. Without an ALG the private PORT is refused (foreign
#    address), so the 2121 connection announces the gateway's address
#    198.51.100.2 instead and our table `ip bench_fwd` forwards that port to
#    hosta (a static port forward: the same kernel work without the ALG).
# 3. Latency (rtt.*): a TCP echo server on cli (203.0.113.10) on ports 21 (an
#    ALG port) and 2121 (not one); alg_client.py rtt on hosta: one connection
#    to each, 5000 round trips of a 32-byte line alternating between them (1000
#    with --quick). rtt.added_* = port 21 - port 2121 (p10, median and p99 of
#    each side; p10 is the least disturbed by other work on the machine); a round trip is two ALG packets (request, echo), so
#    rtt.added_per_packet = added median / 2. With `plain` (ALG off) the same
#    difference is the control (about 0).
#
# The order of the systems rotates every round. Everything is bounded: every
# sipp/client run has a timeout, the servers a duration; only PIDs started
# here are killed, and the testbed is torn down on exit.
# Usage: alg.sh [--rounds N] [--quick]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_args "$@"
bench_open alg

command -v sipp >/dev/null || die "sipp not installed (Debian package sip-tester): run testbed/install-deps.sh"
command -v conntrack >/dev/null || die "conntrack not installed (Debian package conntrack)"
"$PY" -c 'import pyftpdlib' 2>/dev/null || die "$PY lacks pyftpdlib (Debian package python3-pyftpdlib)"

SIP_SECS=$(quick_or 3 5)
SIP_START=200
SIP_MAX=30000
SIP_BUF=4194304
FTP_N=$(quick_or 300 1000)
RTT_N=$(quick_or 1000 5000)
DATA_PORT=40021   # PORT on the ALG connection (hosta's address, rewritten)
FWD_PORT=40022    # PORT on the plain connection (the gateway's address, forwarded)
CLIENT="$BENCH_DIR/alg_client.py"

tb_up
WORK="$STATE/alg"
mkdir -p "$WORK/ftp-root"

# shellcheck disable=SC2119  # the shipped configuration as it is
rgw_config
cp "$STATE/rgw.toml" "$STATE/rgw-alg.toml"
{ cat "$STATE/rgw-alg.toml"; printf '\n[alg]\nenabled = false\n'; } >"$STATE/rgw-noalg.toml"
"$RGW_BIN" check --config "$STATE/rgw-noalg.toml" >/dev/null || die "rgw check rejected $STATE/rgw-noalg.toml"

# ---------------------------------------------------------------- systems
sip_helper_up() {
    nsx "$NS_GW" nft -f - <<EOF
table ip bench_sip {
    ct helper sip-5060 {
        type "sip" protocol udp;
        l3proto ip;
    }
    chain pre {
        type filter hook prerouting priority filter; policy accept;
        udp dport 5060 ct helper set "sip-5060"
    }
}
EOF
}
sip_helper_down() { nsx "$NS_GW" nft delete table ip bench_sip 2>/dev/null || true; }
fwd_up() {
    nsx "$NS_GW" nft -f - <<EOF
table ip bench_fwd {
    chain dstnat {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "$GW_WAN_IF" ip daddr $GW_WAN_IP tcp dport $FWD_PORT dnat to $HA_IP
    }
}
EOF
}
fwd_down() { nsx "$NS_GW" nft delete table ip bench_fwd 2>/dev/null || true; }
on_cleanup sip_helper_down
on_cleanup fwd_down

RGW_MODE=
# rgw_mode alg|noalg: (re)start rgw with that configuration if needed
rgw_mode() {
    [ "$RGW_MODE" = "$1" ] && [ -n "$RGW_PID" ] && return 0
    rgw_stop
    cp "$STATE/rgw-$1.toml" "$STATE/rgw.toml"
    rgw_start
    RGW_MODE=$1
}

use() {
    case "$1" in
        rgw) sip_helper_down; rgw_mode alg ;;
        nf_nat_sip) rgw_mode noalg; sip_helper_down; sip_helper_up ;;
        plain) sip_helper_down; rgw_mode noalg ;;
        *) die "use: unknown system $1" ;;
    esac
    nsx "$NS_GW" conntrack -F >/dev/null 2>&1 || true
}

alg_counter() {
    rgw_status_json | "$PY" -c 'import json,sys; a=json.load(sys.stdin).get("alg") or {}; print((a.get("counters") or {}).get(sys.argv[1], 0))' "$1"
}

# ---------------------------------------------------------------- SIP
# sip_step SYSTEM RATE: 0 if RATE passed; sets STEP_RETRANS, STEP_ACHIEVED
sip_step() {
    local sys=$1 rate=$2 calls d stat t0 t1 rc=0 wall
    calls=$((rate * SIP_SECS))
    d="$WORK/sip-$sys-$rate-$RANDOM"
    mkdir -p "$d"
    start_bg "$STATE" "$NS_WEB" sipp-uas sh -c "cd '$d' && exec sipp -sn uas -i $WEB_IP -p 5060 \
        -buff_size $SIP_BUF -nostdin -timeout 120s"
    local uas=$LAST_BG_PID
    wait_port "$NS_WEB" udp 5060 5 || { kill -TERM "$uas" 2>/dev/null; die "sipp UAS did not start"; }
    t0=$(date +%s.%N)
    (cd "$d" && nsx "$NS_HA" timeout $((SIP_SECS * 4 + 30)) sipp -sn uac "$WEB_IP:5060" -i "$HA_IP" -p 5060 \
        -r "$rate" -m "$calls" -buff_size "$SIP_BUF" -nostdin -recv_timeout 5000 \
        -timeout $((SIP_SECS * 3 + 15))s -timeout_error -trace_stat -stf uac_stat.csv \
        >uac.out 2>&1) || rc=$?
    t1=$(date +%s.%N)
    kill -TERM "$uas" 2>/dev/null || true
    wait "$uas" 2>/dev/null || true
    stat="$d/uac_stat.csv"
    local ok=0 failed="?" retrans="?"
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    if [ -s "$stat" ]; then
        read -r ok failed retrans < <("$PY" -c '
import sys
lines = open(sys.argv[1]).read().splitlines()
v = dict(zip(lines[0].split(";"), lines[-1].split(";")))
print(v.get("SuccessfulCall(C)", "0"), v.get("FailedCall(C)", "?"), v.get("Retransmissions(C)", "?"))' "$stat")
    fi
    STEP_RETRANS=$retrans
    STEP_ACHIEVED=$(awk -v n="$ok" -v w="$wall" 'BEGIN { if (w > 0) printf "%.0f", n / w }')
    local pass=1
    [ "$rc" = 0 ] || pass=0
    [ "$ok" = "$calls" ] && [ "$failed" = 0 ] || pass=0
    awk -v w="$wall" -v t="$SIP_SECS" 'BEGIN { exit !(w <= t / 0.9 + 0.5) }' || pass=0
    printf '      %-10s -r %-6s %6s calls: ok %s failed %s retrans %s, %.1f s, sipp rc %s -> %s\n' \
        "$sys" "$rate" "$calls" "$ok" "$failed" "$retrans" "$wall" "$rc" \
        "$([ "$pass" = 1 ] && echo pass || echo FAIL)" >&2
    [ "$pass" = 1 ] && rm -rf "$d"
    [ "$pass" = 1 ]
}

# sip_try SYSTEM RATE: sip_step, and once more if it failed (other work on the
# machine makes single steps fail now and then, for every system alike)
sip_try() {
    sip_step "$1" "$2" && return 0
    info "    $1: -r $2 failed; one more try"
    sip_step "$1" "$2"
}

# queue_drops: packets the kernel dropped on the gateway's NFQUEUE queues
# (queue full + failed to send to the daemon), summed over all queues
queue_drops() {
    # shellcheck disable=SC2016  # awk's own $6, $7
    nsx "$NS_GW" awk '{ d += $6 + $7 } END { print d + 0 }' /proc/net/netfilter/nfnetlink_queue 2>/dev/null || echo 0
}

sip_ramp() {
    local sys=$1 round=$2 rate=$SIP_START best=0 bad=0 best_retrans="" best_achieved="" i mid p0 p1 n0 n1 c0 c1 q0 q1 d0 d1
    if [ "$sys" = rgw ]; then
        p0=$(alg_counter packets_replaced); n0=$(alg_counter packets); c0=$(cpu_ticks rgw)
        q0=$(queue_drops); d0=$(alg_counter dropped)
    fi
    while [ "$rate" -le "$SIP_MAX" ]; do
        if sip_try "$sys" "$rate"; then
            best=$rate best_retrans=$STEP_RETRANS best_achieved=$STEP_ACHIEVED
            rate=$((rate * 3 / 2))
        else
            bad=$rate
            break
        fi
    done
    if [ "$bad" -gt 0 ] && [ "$best" -gt 0 ]; then
        for i in 1 2; do
            mid=$(awk -v a="$best" -v b="$bad" 'BEGIN { printf "%d", int(sqrt(a * b) / 50 + 0.5) * 50 }')
            if [ "$mid" -le "$best" ] || [ "$mid" -ge "$bad" ]; then break; fi
            if sip_try "$sys" "$mid"; then
                best=$mid best_retrans=$STEP_RETRANS best_achieved=$STEP_ACHIEVED
            else
                bad=$mid
            fi
        done
    fi
    [ "$best" -gt 0 ] || warn "$sys: even $SIP_START calls/s failed"
    emit "$sys" sip.calls_per_s calls/s "$round" "$best"
    [ "$best" -gt 0 ] || return 0
    emit "$sys" sip.achieved_calls_per_s calls/s "$round" "$best_achieved"
    emit "$sys" sip.retransmissions count "$round" "$best_retrans"
    emit "$sys" sip.first_failing_rate calls/s "$round" "$bad"
    if [ "$sys" = rgw ]; then
        p1=$(alg_counter packets_replaced); n1=$(alg_counter packets); c1=$(cpu_ticks rgw)
        q1=$(queue_drops); d1=$(alg_counter dropped)
        info "rgw ALG: $((n1 - n0)) packets queued, $((p1 - p0)) rewritten, $((d1 - d0)) dropped by the engine during the SIP ramp"
        emit "$sys" sip.nfqueue_drops packets "$round" $((q1 - q0))
        [ $((p1 - p0)) -gt 0 ] || die "rgw's ALG rewrote no SIP packet: not measuring the ALG"
        # rgw's CPU time (user + system, all threads) over the whole ramp per queued packet
        # shellcheck disable=SC2086
        set -- $c0 $c1
        emit "$sys" sip.cpu_per_alg_packet µs "$round" "$(us_per $(($3 + $4 - $1 - $2)) $((n1 - n0)))"
    fi
}

# ---------------------------------------------------------------- FTP
JSON=
# j KEY: a field of the JSON line in $JSON
j() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$JSON" "$1"; }

for port in 21 2121; do
    start_bg "$STATE" "$NS_WEB" "ftp-server-$port" "$PY" "$REPO/testbed/peers/ftp_server.py" "$WEB_IP" "$port" \
        "$WORK/ftp-root" --duration 3000
    wait_port "$NS_WEB" tcp "$port" 10 || die "ftp_server.py did not start (see $STATE/log/ftp-server-$port.log)"
done
# the static port forward for the PORT commands on the non-ALG connection
fwd_up

# ftp_run ROUND: in one rgw with the ALG on, port 21 (ALG: emitted as rgw) and
# port 2121 (plain NAT: emitted as plain), interleaved in blocks of 50
ftp_run() {
    local round=$1 out p0 p1
    p0=$(alg_counter pinholes_written)
    out=$(nsx "$NS_HA" timeout $((FTP_N / 5 + 120)) "$PY" "$CLIENT" ftp "$WEB_IP" 21 2121 --count "$FTP_N" \
        --port-addr-a "$HA_IP" --data-port-a "$DATA_PORT" \
        --port-addr-b "$GW_WAN_IP" --data-port-b "$FWD_PORT") || { echo "$out" >&2; die "FTP client failed"; }
    p1=$(alg_counter pinholes_written)
    JSON=$out
    if [ "$(j a_not_200)" != 0 ] || [ "$(j b_not_200)" != 0 ]; then die "FTP: some replies were not 200: $out"; fi
    emit rgw ftp.noop_per_s commands/s "$round" "$(j a_noop_per_s)"
    emit rgw ftp.port_per_s commands/s "$round" "$(j a_port_per_s)"
    emit plain ftp.noop_per_s commands/s "$round" "$(j b_noop_per_s)"
    emit plain ftp.port_per_s commands/s "$round" "$(j b_port_per_s)"
    info "rgw ALG wrote $((p1 - p0)) pinholes for $(j count) PORT commands on port 21"
    [ $((p1 - p0)) -ge "$(j count)" ] || die "rgw's ALG wrote fewer pinholes than PORT commands"
}

# ---------------------------------------------------------------- latency
start_bg "$STATE" "$NS_CLI" echo-server "$PY" "$CLIENT" echo-server "$CLI_IP" 21 2121 --duration 3000
wait_port "$NS_CLI" tcp 2121 10 || die "echo server did not start"

rtt_run() {
    local sys=$1 round=$2 out p0=0 p1
    [ "$sys" = rgw ] && p0=$(alg_counter packets)
    out=$(nsx "$NS_HA" timeout $((RTT_N / 50 + 60)) "$PY" "$CLIENT" rtt "$CLI_IP" 21 2121 --count "$RTT_N" --size 32) ||
        { echo "$out" >&2; die "rtt client failed through $sys"; }
    JSON=$out
    local am ap bm bp
    am=$(j a_median_us); ap=$(j a_p99_us); bm=$(j b_median_us); bp=$(j b_p99_us)
    emit "$sys" rtt.port21_p10 µs "$round" "$(j a_p10_us)"
    emit "$sys" rtt.port2121_p10 µs "$round" "$(j b_p10_us)"
    emit "$sys" rtt.port21_median µs "$round" "$am"
    emit "$sys" rtt.port21_p99 µs "$round" "$ap"
    emit "$sys" rtt.port2121_median µs "$round" "$bm"
    emit "$sys" rtt.port2121_p99 µs "$round" "$bp"
    emit "$sys" rtt.added_p10 µs "$round" "$(awk -v a="$(j a_p10_us)" -v b="$(j b_p10_us)" 'BEGIN { printf "%.1f", a - b }')"
    emit "$sys" rtt.added_median µs "$round" "$(awk -v a="$am" -v b="$bm" 'BEGIN { printf "%.1f", a - b }')"
    emit "$sys" rtt.added_p99 µs "$round" "$(awk -v a="$ap" -v b="$bp" 'BEGIN { printf "%.1f", a - b }')"
    emit "$sys" rtt.added_paired_median µs "$round" "$(j paired_median_diff_us)"
    emit "$sys" rtt.added_per_packet µs "$round" "$(awk -v a="$am" -v b="$bm" 'BEGIN { printf "%.1f", (a - b) / 2 }')"
    if [ "$sys" = rgw ]; then
        p1=$(alg_counter packets)
        [ $((p1 - p0)) -ge $((RTT_N * 2)) ] || die "rgw's ALG saw $((p1 - p0)) packets for $RTT_N round trips on port 21"
    fi
}

# ---------------------------------------------------------------- rounds
for round in $(seq 1 "$ROUNDS"); do
    for sys in $(rotate "$round" rgw nf_nat_sip plain); do
        info "round $round/$ROUNDS: $sys"
        use "$sys"
        sip_ramp "$sys" "$round"
        # FTP and latency: rgw's ALG vs plain NAT (nf_nat_sip is only for SIP)
        case "$sys" in
            rgw)
                ftp_run "$round"
                rtt_run "$sys" "$round"
                ;;
            plain) rtt_run "$sys" "$round" ;;
        esac
    done
done

info "alg: results in $RESULT_FILE"
