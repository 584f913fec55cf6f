#!/usr/bin/env bash
# rgw64.sh - NAT64 throughput: our translator (rgw's TUN shell + rgw-xlat)
# against TAYGA (Debian's userspace NAT64, also over TUN), same testbed, same
# prefix and pool, back to back.
#
#   path   hostc (IPv6-only, fd00:192:168::103) -> fd64:64::203.0.113.80
#          (the proxy ULA of web's IPv4 address) -> translator on a TUN in the
#          gateway namespace -> 10.64.0.1 (hostc's static proxy IPv4) -> the
#          gateway's SNAT to 198.51.100.2 -> web (iperf3 -s on 203.0.113.80).
#   rgw64  rgw with testbed/config/rgw64.toml appended (TUN "rgw64").
#   tayga  rgw stopped (its TUN, routes and tables go with it); TAYGA on TUN
#          "nat64t" with the same prefix64 fd64:64::/96, dynamic pool
#          10.64.0.0/24, the same static map 10.64.0.1 <-> hostc and
#          ipv4-addr 192.0.0.8; routes to nat64t and a bench nft table
#          `ip t64nat` with the same SNAT of 10.64.0.0/24. Removed afterwards.
#
# Per round and system (order alternates per round), iperf3 -t T from hostc:
#   udp64    -u -b 0 -l 16: 64-byte IPv6 packets (40 + 8 + 16), translated to 44-byte IPv4
#   udp1400  -u -b 0 -l 1400: 1448-byte IPv6 packets
#   tcp      one TCP stream (MSS from the 1500 MTU)
# Received packets/s and Mbit/s (UDP, with loss %) and Mbit/s (TCP) at web;
# packets/s the translator wrote into its TUN and its CPU time per packet
# (user + system of the rgw or tayga process over the run).
# Results: results/rgw64.csv; the report (bench.sh) shows ours/TAYGA ratios.
# Usage: rgw64.sh [--rounds N] [--quick]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_args "$@"
bench_open rgw64

command -v tayga >/dev/null || die "tayga missing: testbed/install-deps.sh bench"
command -v iperf3 >/dev/null || die "iperf3 missing: testbed/install-deps.sh bench"
SECS=$(quick_or 3 10)
PORT=5201
DST6=fd64:64::203.0.113.80

export RGW_TESTBED_RGW64=1
tb_up
rgw_config
cat "$REPO/testbed/config/rgw64.toml" >>"$STATE/rgw.toml"
"$RGW_BIN" check --config "$STATE/rgw.toml" >/dev/null || die "rgw check rejected $STATE/rgw.toml"
start_bg "$STATE" "$NS_WEB" iperf3 iperf3 -s -B "$WEB_IP" -p "$PORT"
wait_port "$NS_WEB" tcp "$PORT" 5 || die "iperf3 server did not start"

TAYGA_PID=
tayga_conf() {
    mkdir -p "$STATE/tayga"
    cat >"$STATE/tayga/tayga.conf" <<EOF
tun-device nat64t
ipv4-addr 192.0.0.8
prefix fd64:64::/96
dynamic-pool 10.64.0.0/24
map 10.64.0.1 $HC_IP6
data-dir $STATE/tayga
EOF
}
tayga_up() {
    tayga_conf
    nsx "$NS_GW" tayga -c "$STATE/tayga/tayga.conf" --mktun >/dev/null
    nsx "$NS_GW" ip link set dev nat64t up
    nsx "$NS_GW" sh -c 'echo 0 > /proc/sys/net/ipv6/conf/nat64t/disable_ipv6'
    nsx "$NS_GW" ip route replace 10.64.0.0/24 dev nat64t
    nsx "$NS_GW" ip -6 route replace fd64:64::/96 dev nat64t
    nsx "$NS_GW" nft -f - <<EOF
table ip t64nat {
    chain srcnat {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "$GW_WAN_IF" ip saddr 10.64.0.0/24 snat to $GW_WAN_IP
    }
}
EOF
    start_bg "$STATE" "$NS_GW" tayga tayga -c "$STATE/tayga/tayga.conf" --nodetach
    TAYGA_PID=$LAST_BG_PID
    sleep 0.5
    kill -0 "$TAYGA_PID" 2>/dev/null || die "tayga exited (see $STATE/log/tayga.log)"
}
tayga_down() {
    if [ -n "$TAYGA_PID" ]; then
        kill -TERM "$TAYGA_PID" 2>/dev/null || true
        wait "$TAYGA_PID" 2>/dev/null || true
        TAYGA_PID=
    fi
    nsx "$NS_GW" nft delete table ip t64nat 2>/dev/null || true
    nsx "$NS_GW" ip link del nat64t 2>/dev/null || true
}
on_cleanup tayga_down

use() {
    case "$1" in
        rgw64) tayga_down; [ -n "$RGW_PID" ] || rgw_start ;;
        tayga)
            rgw_stop
            if nsx "$NS_GW" ip link show rgw64 >/dev/null 2>&1; then die "rgw's TUN is still there"; fi
            tayga_down; tayga_up ;;
    esac
    # the path works before measuring
    nsx "$NS_HC" ping -6 -n -c 1 -W 2 "$DST6" >/dev/null || die "$1: no path to $DST6"
}

iperf3_json() {
    local out=$1; shift
    nsx "$NS_HC" timeout $((SECS + 20)) iperf3 -c "$DST6" -p "$PORT" -t "$SECS" \
        --connect-timeout 3000 -J "$@" >"$out" 2>&1
}

# udp_stats FILE: "Mbit/s pps lost%" received at web
udp_stats() {
    "$PY" - "$1" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))["end"]["sum"]
secs = s["seconds"] or 1
recv = s["packets"] - s["lost_packets"]
share = recv / s["packets"] if s["packets"] else 0
print(f'{s["bits_per_second"] / 1e6 * share:.1f} {recv / secs:.0f} {s["lost_percent"]:.2f}')
PYEOF
}
tcp_mbps() {
    "$PY" - "$1" <<'PYEOF'
import json, sys
print(f'{json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6:.1f}')
PYEOF
}

# The translator's side of a run: packets it wrote back into its TUN (the
# device's rx counter) and the CPU its process used, so the cost per packet
# can be compared even when the machine is shared.
tun_of() { case "$1" in rgw64) echo rgw64 ;; tayga) echo nat64t ;; esac; }
comm_of() { case "$1" in rgw64) echo rgw ;; tayga) echo tayga ;; esac; }
tun_rx() { nsx "$NS_GW" cat "/sys/class/net/$1/statistics/rx_packets"; }
# measure SYS NAME ROUND ARGS...: one iperf3 run with the translator's share
measure() {
    local sys=$1 name=$2 round=$3; shift 3
    local f="$STATE/$sys-$name-$round.json" tun comm p0 p1 u0 s0 u1 s1
    tun=$(tun_of "$sys"); comm=$(comm_of "$sys")
    p0=$(tun_rx "$tun"); read -r u0 s0 < <(cpu_ticks "$comm")
    iperf3_json "$f" "$@" || { cat "$f" >&2; die "iperf3 $name failed ($sys)"; }
    p1=$(tun_rx "$tun"); read -r u1 s1 < <(cpu_ticks "$comm")
    emit "$sys" "${name}_xlat_pps" "pkt/s" "$round" "$(awk -v n=$((p1 - p0)) -v t="$SECS" 'BEGIN { printf "%.0f", n / t }')"
    emit "$sys" "${name}_cpu_us_per_pkt" "us" "$round" "$(us_per $((u1 + s1 - u0 - s0)) $((p1 - p0)))"
    LAST_JSON=$f
}

for round in $(seq 1 "$ROUNDS"); do
    info "round $round/$ROUNDS"
    for sys in $(rotate "$round" rgw64 tayga); do
        use "$sys"
        for len in 16 1400; do
            name=$([ "$len" = 16 ] && echo udp64 || echo udp1400)
            measure "$sys" "$name" "$round" -u -b 0 -l "$len"
            read -r mbps pps loss < <(udp_stats "$LAST_JSON")
            emit "$sys" "${name}_rx_pps" "pkt/s" "$round" "$pps"
            emit "$sys" "${name}_rx_mbps" "Mbit/s" "$round" "$mbps"
            emit "$sys" "${name}_loss" "%" "$round" "$loss"
        done
        measure "$sys" tcp "$round"
        emit "$sys" "tcp_rx_mbps" "Mbit/s" "$round" "$(tcp_mbps "$LAST_JSON")"
    done
done

# ours / TAYGA per metric (medians over rounds)
"$PY" - "$RESULT_FILE" <<'PYEOF' >&2
import csv, statistics, sys
by = {}
for r in csv.DictReader(open(sys.argv[1])):
    by.setdefault((r["metric"], r["unit"]), {}).setdefault(r["system"], []).append(float(r["value"]))
print(f'{"metric":<26} {"rgw64":>12} {"tayga":>12} {"ours/tayga":>10}')
for (m, unit), v in sorted(by.items()):
    a, b = statistics.median(v.get("rgw64", [0])), statistics.median(v.get("tayga", [0]))
    print(f'{m:<26} {a:>12.3f} {b:>12.3f} {a / b if b else float("nan"):>10.3f}  {unit}')
PYEOF
info "results in $RESULT_FILE"
