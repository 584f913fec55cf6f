#!/usr/bin/env bash
# alloc.sh - allocating DNS answers: what a reservation costs rgw.
#
# rgw with a /16 Circular Pool (addresses = ["100.64.0.0/16"]) and no
# per-host limit (max_pending = 0), --log warn. Every query for
# tcp<N>.hosta.gwa.demo A reserves (R, tcp, N) in the pool and adds the
# element to the kernel's resv_svc set over netlink before the answer leaves.
# No other server allocates, so there is no peer: the reference is rgw's own
# static SOA answer on the same path.
#
#   seq     dns_latency.py from the client namespace, one query in flight:
#           10k SFQDN queries and 10k static SOA queries, interleaved ->
#           median and p99 round trip of each; alloc_cost = the median over
#           the pairs of (SFQDN round trip - SOA round trip just before it).
#   dnsperf -c 4 -T 2 -q 500, 10 s: tcp1..tcp60000.hosta.gwa.demo A
#           (allocations/s, average latency, lost) next to gwa.demo SOA;
#           rgw's `reservations` counter must grow by exactly the number of
#           answered allocating queries; alloc_over_static = the QPS ratio.
# The order of the two dnsperf runs alternates every round.
# Usage: alloc.sh [--rounds N] [--quick]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
bench_args "$@"
bench_open alloc

SECS=$(quick_or 4 10)
SEQ=10000
TMAX_WAIT=2.5     # Tmax (2 s) + margin: every reservation of the last run has expired

tb_up
rgw_config -e 's|^addresses = .*|addresses = ["100.64.0.0/16"]|' \
           -e 's|^tmax = .*|&\ndefault_max_pending = 0|' \
           -e 's|^max_pending = .*|max_pending = 0|'
rgw_start

printf 'gwa.demo SOA\n' >"$STATE/q-soa"
seq 1 60000 | sed 's/^/tcp/; s/$/.hosta.gwa.demo A/' >"$STATE/q-alloc"

declare -A QPS    # per query kind (soa, alloc), of the current round

# seq_run ROUND: dns_latency.py pair mode - SOA and SFQDN queries interleaved,
# one in flight, so both kinds see the same load on the shared CPUs
seq_run() {
    local round=$1 out kind
    out=$(nsx "$NS_CLI" timeout 300 "$PY" "$BENCH_DIR/dns_latency.py" "$GW_WAN_IP" pair "$SEQ")
    echo "$out" >"$STATE/seq-$round.json"
    for kind in soa alloc; do
        local answered median p99
        read -r answered median p99 < <("$PY" -c \
            'import json,sys; j=json.loads(sys.argv[1])[sys.argv[2]]; print(j["answered"], j["median_us"], j["p99_us"])' \
            "$out" "$([ "$kind" = alloc ] && echo sfqdn || echo soa)")
        [ "$answered" = "$SEQ" ] || warn "seq $kind: only $answered of $SEQ queries answered: $out"
        emit rgw "seq_$kind.median_rtt" µs "$round" "$median"
        emit rgw "seq_$kind.p99_rtt" µs "$round" "$p99"
    done
    emit rgw alloc_cost.median µs "$round" \
        "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["paired_diff_median_us"])' "$out")"
    sleep "$TMAX_WAIT"
}

# counters KEY...: "KEY=value ..." for the given rgw counters
counters() {
    rgw_status_json | "$PY" -c 'import json,sys; c=json.load(sys.stdin)["counters"]; print(" ".join(f"{k}={c[k]}" for k in sys.argv[1:]))' "$@"
}
# delta BEFORE AFTER KEY: the growth of one counter between two `counters` lines
delta() {
    local b a
    b=$(tr ' ' '\n' <<<"$1" | sed -n "s/^$3=//p"); a=$(tr ' ' '\n' <<<"$2" | sed -n "s/^$3=//p")
    echo $((a - b))
}

dnsperf_kind() {
    local kind=$1 round=$2 u0 s0 u1 s1 c0 c1 k
    local keys=(reservations denied_exhausted denied_host_limit denied_dataplane dataplane_errors)
    read -r u0 s0 < <(cpu_ticks rgw)
    c0=$(counters "${keys[@]}")
    dnsperf_run 53 "$STATE/q-$kind" "$SECS"
    read -r u1 s1 < <(cpu_ticks rgw)
    sleep "$TMAX_WAIT"
    c1=$(counters "${keys[@]}")
    emit rgw "$kind.qps" queries/s "$round" "$DP_QPS"
    emit rgw "$kind.latency_avg" ms "$round" "$DP_LAT_MS"
    emit rgw "$kind.lost" queries "$round" "$DP_LOST"
    emit rgw "$kind.cpu_per_query" µs "$round" "$(us_per $((u1 - u0 + s1 - s0)) "$DP_COMPLETED")"
    if [ "$kind" = alloc ]; then
        local made
        made=$(delta "$c0" "$c1" reservations)
        if [ "$made" = "$DP_NOERROR" ]; then
            info "reservations counter +$made = $DP_NOERROR answered allocating queries"
        else
            warn "reservations counter +$made but $DP_NOERROR allocating queries answered NOERROR"
        fi
        emit rgw alloc.reservations count "$round" "$made"
        # a denied query is dropped (on_exhausted = "drop"): dnsperf counts it lost
        emit rgw alloc.denied count "$round" \
            $(( $(delta "$c0" "$c1" denied_exhausted) + $(delta "$c0" "$c1" denied_host_limit) + $(delta "$c0" "$c1" denied_dataplane) ))
        emit rgw alloc.dataplane_errors count "$round" "$(delta "$c0" "$c1" dataplane_errors)"
        for k in "${keys[@]:1}"; do
            [ "$(delta "$c0" "$c1" "$k")" = 0 ] || warn "rgw counter $k grew by $(delta "$c0" "$c1" "$k") during the run"
        done
    fi
    QPS[$kind]=$DP_QPS
}

for round in $(seq 1 "$ROUNDS"); do
    info "round $round/$ROUNDS: sequential round trips ($SEQ queries of each kind, interleaved)"
    seq_run "$round"
    info "round $round/$ROUNDS: dnsperf ${SECS} s each"
    for kind in $(rotate "$round" soa alloc); do dnsperf_kind "$kind" "$round"; done
    emit rgw alloc_over_static ratio "$round" "$(ratio "${QPS[alloc]}" "${QPS[soa]}")"
done
info "alloc: results in $RESULT_FILE"
