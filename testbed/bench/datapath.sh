#!/usr/bin/env bash
# datapath.sh - the data path after the claim: iperf3 through rgw vs through a
# plain kernel NAT router, in the same testbed, back to back.
#
#   rgw    rgw runs in the gateway namespace with a one-address pool R0. The
#          client asks rgw directly (dig @198.51.100.2) for
#          tcp5201.hosta.gwa.demo (and udp5201.hosta.gwa.demo for the UDP
#          run), gets R0, and runs iperf3 to R0:5201. Once the first packet
#          is claimed, conntrack carries the flow: it never reaches rgw again.
#   plain  rgw stopped (its table is gone); our own minimal nft table
#          `ip plainnat` in the gateway namespace: dnat R0 -> hosta and the
#          same snat for 192.168.0.0/24 -> 198.51.100.2. Removed afterwards.
#
# iperf3 opens two TCP connections to the same port (control, then data), and a
# reservation admits exactly one flow. So the TCP run asks for tcp5201 again
# once the control connection has claimed the first reservation; the data
# connection's SYN is admitted by that second reservation (at the latest by
# its 1 s retransmission, before iperf3's clock starts). The UDP run reserves
# tcp5201 (control) and udp5201 (data), which share R0.
#
# Per round and system: TCP -t T (received Mbit/s, retransmits) and UDP
# -b 2G -l 1400 -t T (received Mbit/s, loss %). The system order alternates.
# Usage: datapath.sh [--rounds N] [--quick]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_args "$@"
bench_open datapath

SECS=$(quick_or 4 10)
R0=198.51.100.17
PORT=5201

tb_up
rgw_config -e "s|^addresses = .*|addresses = [\"$R0\"]|" \
           -e 's|^on_exhausted = .*|on_exhausted = "refused"|'
start_bg "$STATE" "$NS_HA" iperf3 iperf3 -s -B "$HA_IP" -p "$PORT" --idle-timeout 30
wait_port "$NS_HA" tcp "$PORT" 5 || die "iperf3 server did not start"

plainnat_up() {
    nsx "$NS_GW" nft -f - <<EOF
table ip plainnat {
    chain dstnat {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $R0 dnat to $HA_IP
    }
    chain srcnat {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "$GW_WAN_IF" ip saddr $LAN_NET snat to $GW_WAN_IP
    }
}
EOF
}
plainnat_down() { nsx "$NS_GW" nft delete table ip plainnat 2>/dev/null || true; }
on_cleanup plainnat_down

# use SYSTEM: make SYSTEM the gateway for the next runs
use() {
    case "$1" in
        rgw) plainnat_down; [ -n "$RGW_PID" ] || rgw_start ;;
        plain)
            rgw_stop
            if nsx "$NS_GW" nft list table ip rgw >/dev/null 2>&1; then
                die "rgw's table is still there after it stopped"
            fi
            plainnat_down; plainnat_up ;;
    esac
}

# reserve SERVICE: ask rgw for SERVICE.hosta.gwa.demo; prints the address (or nothing)
reserve() {
    nsx "$NS_CLI" dig +short +time=1 +tries=1 @"$GW_WAN_IP" "$1.hosta.gwa.demo" A 2>/dev/null | head -1
}

# iperf3_json OUT ARGS...: run the client (bounded) with JSON output into OUT
iperf3_json() {
    local out=$1; shift
    nsx "$NS_CLI" timeout $((SECS + 20)) iperf3 -c "$R0" -p "$PORT" -t "$SECS" \
        --connect-timeout 3000 -J "$@" >"$out" 2>&1
}

# json_get FILE EXPR: evaluate EXPR on the iperf3 JSON object `j`
json_get() {
    "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

run_tcp() {
    local sys=$1 round=$2 out="$STATE/iperf3-tcp-$1-$2.json" claims0=
    if [ "$sys" = rgw ]; then
        claims0=$(rgw_counter claims)
        [ "$(reserve "tcp$PORT")" = "$R0" ] || die "rgw did not answer tcp$PORT.hosta.gwa.demo with $R0"
        iperf3_json "$out" &
        local ip=$! got=""
        # the control connection claims the first reservation; then the
        # same name is free again: reserve it for the data connection
        for _ in $(seq 1 40); do
            sleep 0.1
            got=$(reserve "tcp$PORT")
            [ "$got" = "$R0" ] && break
        done
        [ "$got" = "$R0" ] || warn "no second reservation for the data connection"
        wait "$ip" || { cat "$out" >&2; die "iperf3 TCP through rgw failed"; }
        local claims=$(( $(rgw_counter claims) - claims0 ))
        info "rgw claims during the TCP run: $claims (control + data); every other packet stayed in the kernel"
    else
        iperf3_json "$out" || { cat "$out" >&2; die "iperf3 TCP through plain NAT failed"; }
    fi
    emit "$sys" tcp_throughput Mbit/s "$round" \
        "$(json_get "$out" 'round(j["end"]["sum_received"]["bits_per_second"] / 1e6, 1)')"
    emit "$sys" tcp_retransmits count "$round" \
        "$(json_get "$out" 'j["end"]["sum_sent"].get("retransmits", 0)')"
}

run_udp() {
    local sys=$1 round=$2 out="$STATE/iperf3-udp-$1-$2.json"
    if [ "$sys" = rgw ]; then
        [ "$(reserve "tcp$PORT")" = "$R0" ] || die "rgw did not answer tcp$PORT.hosta.gwa.demo with $R0"
        [ "$(reserve "udp$PORT")" = "$R0" ] || die "rgw did not answer udp$PORT.hosta.gwa.demo with $R0"
    fi
    iperf3_json "$out" -u -b 2G -l 1400 || { cat "$out" >&2; die "iperf3 UDP through $sys failed"; }
    # the receiver's view: what arrived, and the datagrams lost on the way
    emit "$sys" udp_sent Mbit/s "$round" \
        "$(json_get "$out" 'round(j["end"]["sum_sent"]["bits_per_second"] / 1e6, 1)')"
    emit "$sys" udp_received Mbit/s "$round" \
        "$(json_get "$out" 'round(j["end"]["sum_received"]["bits_per_second"] / 1e6, 1)')"
    emit "$sys" udp_loss % "$round" \
        "$(json_get "$out" 'round(j["end"]["sum_received"]["lost_percent"], 2)')"
}

for round in $(seq 1 "$ROUNDS"); do
    for sys in $(rotate "$round" rgw plain); do
        info "round $round/$ROUNDS: $sys"
        use "$sys"
        run_tcp "$sys" "$round"
        run_udp "$sys" "$round"
    done
done

plainnat_down
info "datapath: results in $RESULT_FILE"
