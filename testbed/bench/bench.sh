#!/usr/bin/env bash
# bench.sh - the whole benchmark suite, one command (as root):
#
#   ./testbed/bench/bench.sh [--rounds N] [--quick] [--only LIST]
#
#   --rounds N   rounds per scenario (default 3); peers and rgw run back to back
#                in every round, in alternating order
#   --quick      1 round with shorter runs (about 2 minutes without capacity/micro)
#   --only LIST  comma-separated subset of: alloc dns_peers datapath alg capacity micro
#                (the other fragments in results/ are kept and reported too)
#
# Runs alloc.sh, dns_peers.sh, datapath.sh, alg.sh, then capacity.sh and micro.sh if
# they exist (they get BENCH_ROUNDS and BENCH_QUICK in the environment), then
# report.py, which writes docs/benchmarks.md and docs/benchmarks.csv from the
# fragments in testbed/bench/results/. Installs the peers first
# (install-deps.sh bench) and builds rgw once (cargo build --release --locked).
#
# Every scenario brings up its own netns testbed (prefix rgwbn<hex>-) and
# removes it, also on failure or Ctrl-C. A failed scenario is reported and the
# others still run; the exit status is then 1.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
ONLY=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --only) [ $# -ge 2 ] || usage; ONLY=$2; shift 2 ;;
        --only=*) ONLY=${1#--only=}; shift ;;
        -h|--help) usage ;;
        --rounds) [ $# -ge 2 ] || usage; args+=("$1" "$2"); shift 2 ;;
        --quick|--rounds=*) args+=("$1"); shift ;;
        *) warn "unknown option '$1'"; usage ;;
    esac
done
bench_args ${args[@]+"${args[@]}"}

ALL="alloc dns_peers datapath alg capacity micro"
OURS="alloc dns_peers datapath alg"
selected=$ALL
if [ -n "$ONLY" ]; then
    selected=${ONLY//,/ }
    for s in $selected; do
        case " $ALL " in *" $s "*) ;; *) die "--only: unknown scenario '$s' (one of: $ALL)" ;; esac
    done
fi
# a scenario's time limit (seconds): a hung run must not hold the machine
declare -A LIMIT=([alloc]=600 [dns_peers]=1200 [datapath]=900 [alg]=2400 [capacity]=2400 [micro]=1800)

t_start=$(date +%s)
options="--rounds $ROUNDS"
[ "$QUICK" = 1 ] && options="--quick"
[ -n "$ONLY" ] && options="$options --only $ONLY"
info "benchmark suite: $options"

"$REPO/testbed/install-deps.sh" bench >&2 || die "install-deps.sh bench failed"
rgw_build
export BENCH_ROUNDS=$ROUNDS BENCH_QUICK=$QUICK BENCH_BUILT=1 RGW_BIN

mkdir -p "$RESULTS_DIR"
if [ -z "$ONLY" ]; then
    rm -f "$RESULTS_DIR"/*.csv "$RESULTS_DIR/meta.json"   # a full run reports only itself
fi

failed=0
meta_rows=()
for s in $selected; do
    script="$BENCH_DIR/$s.sh"
    if [ ! -f "$script" ]; then
        info "== $s: testbed/bench/$s.sh not present - skipped"
        rm -f "$RESULTS_DIR/$s.csv"
        meta_rows+=("$s.sh|not present|0")
        continue
    fi
    info "== $s"
    t0=$(date +%s)
    status=ok
    # ours take the options; capacity.sh and micro.sh read BENCH_ROUNDS/BENCH_QUICK
    case " $OURS " in
        *" $s "*) set -- "--rounds" "$ROUNDS" ;;
        *) set -- ;;
    esac
    if ! timeout "${LIMIT[$s]}" bash "$script" "$@"; then
        status=failed
        failed=1
        warn "$s.sh failed (see above); continuing"
    fi
    t1=$(date +%s)
    info "== $s: $status in $((t1 - t0)) s"
    meta_rows+=("$s.sh|$status|$((t1 - t0))")
done

t_end=$(date +%s)
total=$((t_end - t_start))
{
    printf '{"options": "%s", "rounds": %s, "quick": %s,\n' "$options" "$ROUNDS" "$([ "$QUICK" = 1 ] && echo true || echo false)"
    printf ' "started": "%s", "finished": "%s",\n' \
        "$(date -u -d "@$t_start" '+%Y-%m-%d %H:%M UTC')" "$(date -u -d "@$t_end" '+%Y-%m-%d %H:%M UTC')"
    printf ' "total_seconds": %s, "total_human": "%dm %02ds",\n' "$total" $((total / 60)) $((total % 60))
    printf ' "rgw_commit": "%s",\n' "$(git -C "$REPO" log -1 --format='%h (%D)' --abbrev=12 2>/dev/null | sed 's/HEAD -> //; s/,.*)/)/' || echo unknown)"
    printf ' "scenarios": ['
    sep=""
    for row in "${meta_rows[@]}"; do
        IFS='|' read -r name st secs <<<"$row"
        printf '%s\n   {"script": "%s", "status": "%s", "seconds": %s}' "$sep" "$name" "$st" "$secs"
        sep=","
    done
    printf ']}\n'
} >"$RESULTS_DIR/meta.json"

"$PY" "$BENCH_DIR/report.py" || failed=1

left=$(ip netns list | awk '{print $1}' | grep -c '^rgwbn' || true)
[ "$left" = 0 ] || warn "$left rgwbn* namespaces are still there (ip netns list)"
info "benchmark suite done in $((total / 60))m $((total % 60))s: docs/benchmarks.md, docs/benchmarks.csv"
exit "$failed"
