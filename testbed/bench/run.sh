#!/usr/bin/env bash
# bench/run.sh — baseline measurements of the gateway's DNS path in the netns
# testbed (not a test: numbers, no assertions). Bounded in count and time.
#   1. allocation latency: 10k sequential SFQDN queries on a /16 pool
#      (query in -> pool reservation -> nftables element -> answer out),
#      next to the same client's static-SOA round trip;
#   2. static answer throughput: dnsperf, apex SOA, against rgw and against
#      the testbed's NSD (parent zone) from the same client namespace.
# Usage: ./testbed/bench/run.sh [LOG_LEVEL]   (default "warn"; "info" logs every decision)
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)
level=${1:-warn}
[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root" >&2; exit 1; }
"$repo/testbed/install-deps.sh" >/dev/null
(cd "$repo" && cargo build --release --locked -p rgw >/dev/null 2>&1)
rgw="$repo/target/release/rgw"

state=$(mktemp -d /tmp/rgw-bench-XXXX)
export RGW_PREFIX="rgwb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')-"
cleanup() {
    if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    "$repo/testbed/topology.sh" down "$state" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$repo/testbed/topology.sh" up "$state" >/dev/null
. "$state/env"

sed -e "s|^socket = .*|socket = \"$state/rgw.sock\"|" \
    -e 's|^addresses = .*|addresses = ["100.64.0.0/16"]|' \
    -e 's|^max_pending = 3|max_pending = 0|' \
    "$repo/testbed/config/rgw.toml" > "$state/rgw.toml"
ip netns exec "$NS_GW" "$rgw" run --config "$state/rgw.toml" --log "$level" > "$state/rgw.log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -S "$state/rgw.sock" ] && break; sleep 0.05; done
sleep 0.3

echo "# machine: $(nproc) vCPU, $(uname -r), $(date -u +%F)  rgw log level: $level"
echo "## sequential round trip (Python client in $NS_CLI, one query in flight)"
ip netns exec "$NS_CLI" timeout 120 python3 "$repo/testbed/bench/dns_latency.py" "$GW_WAN_IP" soa 10000
ip netns exec "$NS_CLI" timeout 120 python3 "$repo/testbed/bench/dns_latency.py" "$GW_WAN_IP" sfqdn 10000
ip netns exec "$NS_GW" "$rgw" status --json --socket "$state/rgw.sock" \
    | python3 -c 'import json,sys; v=json.load(sys.stdin); c=v["counters"]; print("rgw counters: reservations", c["reservations"], "denied", c["denied_exhausted"]+c["denied_host_limit"]+c["denied_dataplane"], "dataplane_errors", c["dataplane_errors"])'

echo "## dnsperf, static SOA, 10 s, -c 4 -T 2 (client on the same 2 cores: client-bound)"
printf 'gwa.demo SOA\n' > "$state/q-rgw"; printf 'demo SOA\n' > "$state/q-nsd"
for target in "rgw $GW_WAN_IP q-rgw" "nsd $PAR_IP q-nsd"; do
    set -- $target
    qps=$(ip netns exec "$NS_CLI" timeout 60 dnsperf -s "$2" -d "$state/$3" -c 4 -T 2 -l 10 -q 500 2>&1 \
          | awk '/Queries per second/ {print $4} /Queries lost/ {lost=$3" "$4} END {}')
    echo "$1: $qps QPS"
done
echo "## dnsperf, allocating SFQDN answers (tcp1..tcp60000.hosta), 10 s"
seq 1 60000 | sed 's/^/tcp/; s/$/.hosta.gwa.demo A/' > "$state/q-alloc"
ip netns exec "$NS_CLI" timeout 60 dnsperf -s "$GW_WAN_IP" -d "$state/q-alloc" -c 4 -T 2 -l 10 -q 500 2>&1 \
    | grep -E "Queries (sent|completed|lost|per second)|Average Latency|Latency StdDev" | sed 's/^ */   /'
