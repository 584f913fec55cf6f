#!/usr/bin/env bash
# demo.sh — the Realm Gateway demo: installs what is missing, builds rgw,
# creates the netns testbed (client, NSD parent zone, unbound resolver,
# gateway, two private hosts), starts rgw with the shipped configuration and
# shows a public client reaching private hosts by name. Cleans up on exit.
#   ./testbed/demo.sh          run the demo and tear everything down
#   ./testbed/demo.sh --keep   leave the testbed and rgw running (prints how to stop)
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
keep=0; [ "${1:-}" = "--keep" ] && keep=1
[ "$(id -u)" = 0 ] || { echo "demo.sh: must run as root (network namespaces, nftables)" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

say "installing what is missing"
"$repo/testbed/install-deps.sh"
say "building rgw (release)"
(cd "$repo" && cargo build --release --locked -p rgw)
rgw="$repo/target/release/rgw"

state=$(mktemp -d /tmp/rgw-demo-XXXX)
export RGW_PREFIX="rgwdemo$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')-"
cleanup() {
    if [ -n "${rgw_pid:-}" ] && kill -0 "$rgw_pid" 2>/dev/null; then kill "$rgw_pid"; wait "$rgw_pid" 2>/dev/null || true; fi
    "$repo/testbed/topology.sh" down "$state" >/dev/null 2>&1 || true
}
if [ "$keep" = 0 ]; then trap cleanup EXIT; fi

say "creating the testbed (prefix $RGW_PREFIX)"
"$repo/testbed/topology.sh" up "$state"
# shellcheck disable=SC1091
. "$state/env"

config="$state/rgw.toml"
sed -e "s|^socket = .*|socket = \"$state/rgw.sock\"|" \
    -e "s|^path = \".*bindings.log\"|path = \"$state/bindings.log\"|" \
    "$repo/testbed/config/rgw.toml" > "$config"
say "starting rgw in $NS_GW with the shipped configuration (log: $state/rgw.log)"
"$rgw" check --config "$config"
ip netns exec "$NS_GW" "$rgw" run --config "$config" > "$state/rgw.log" 2>&1 &
rgw_pid=$!
for _ in $(seq 100); do [ -S "$state/rgw.sock" ] && break; sleep 0.05; done
grep -E "gate|installed|ready" "$state/rgw.log" | sed 's/^/   /'

client() { ip netns exec "$NS_CLI" "$@"; }

say "public client resolves hosta.gwa.demo through unbound ($RES_IP) -> NSD parent -> rgw"
show "dig @$RES_IP hosta.gwa.demo A"
answer=$(client dig +noall +answer @"$RES_IP" hosta.gwa.demo A)
echo "$answer"
R=$(echo "$answer" | awk '$4 == "A" { a = $5 } END { print a }')
say "and connects to it by name: hosta's port-8 server says who it is and who it sees"
show "socat - TCP:$R:8"
client socat -T 2 - "TCP:$R:8" </dev/null
show "socat - TCP:$R:8   (again, without a new DNS query)"
if client socat -T 2 - "TCP:$R:8,connect-timeout=2" </dev/null >/dev/null 2>&1; then
    echo "   UNEXPECTED: admitted twice"
else
    echo "   not admitted: the reservation was single use (dropped in the kernel)"
fi

say "service FQDNs reserve only (address, protocol, port): several share one address"
declare -A addr
for n in tcp22.hosta.gwa.demo ssh.hostb.gwa.demo tcp80.hostb.gwa.demo; do
    addr[$n]=$(client dig +short @"$RES_IP" "$n" A | tail -1)
    printf '   %-24s -> %s\n' "$n" "${addr[$n]}"
done
for n in tcp22.hosta.gwa.demo ssh.hostb.gwa.demo tcp80.hostb.gwa.demo; do
    port=22; [ "${n%%.*}" = tcp80 ] && port=80
    show "socat - TCP:${addr[$n]}:$port   ($n)"
    client socat -T 2 - "TCP:${addr[$n]}:$port" </dev/null
done

say "private hosts go out through NAT44"
show "curl http://$WEB_IP/   (from hosta)"
ip netns exec "$NS_HA" curl -s -m 3 "http://$WEB_IP/"

say "rgw status"
ip netns exec "$NS_GW" "$rgw" status --socket "$state/rgw.sock" > "$state/status.txt"
head -12 "$state/status.txt"

if [ "$keep" = 1 ]; then
    say "left running: rgw pid $rgw_pid, state $state"
    echo "   stop with: kill $rgw_pid; $repo/testbed/topology.sh down $state"
    trap - EXIT
else
    say "done; tearing the testbed down"
fi
