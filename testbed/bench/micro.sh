#!/usr/bin/env bash
# bench/micro.sh — criterion micro-benchmarks of the sans-IO parts (no root,
# no netns): the Circular Pool (rgw/benches/pool.rs) and the DNS path
# (dns/benches/answer.rs), with settings short enough for a 2-vCPU machine.
# Writes testbed/bench/results/micro.csv:
#   scenario,system,metric,unit,round,value
#   micro,rgw,<group>/<bench> median|ci_low|ci_high,ns,1,<value>
# (median point estimate and its 95% confidence interval from criterion).
# Usage: ./testbed/bench/micro.sh [extra criterion args, e.g. a name filter]
# Honours CARGO_TARGET_DIR (and CRITERION_HOME) like cargo and criterion do.
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/../.." && pwd)

# A relative CARGO_TARGET_DIR means relative to where we were started.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$PWD/$CARGO_TARGET_DIR ;; esac
    export CARGO_TARGET_DIR
fi
if [ -n "${CRITERION_HOME:-}" ]; then
    case $CRITERION_HOME in /*) ;; *) CRITERION_HOME=$PWD/$CRITERION_HOME ;; esac
    export CRITERION_HOME
fi
cd "$repo"

if [ -n "${CRITERION_HOME:-}" ]; then
    crit=$CRITERION_HOME
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    crit=$CARGO_TARGET_DIR/criterion
else
    # Where criterion itself looks: the target dir cargo reports (it follows
    # build.target-dir in .cargo/config.toml), else ./target.
    crit=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' \
        2>/dev/null || echo "$repo/target")/criterion
fi

out=$repo/testbed/bench/results/micro.csv
mkdir -p "$(dirname "$out")"
start=$(date +%s)
stamp=$(mktemp /tmp/rgw-micro-XXXX)
trap 'rm -f "$stamp"' EXIT

# `cargo bench -p rgw --bench pool` and `cargo bench -p rgw-dns --bench
# answer`, as one cargo call: run separately, `-p rgw-dns` alone unifies
# dependency features differently and rebuilds half the dependency tree.
# Build first so compile time is not mixed with the measurements.
benches=(-p rgw -p rgw-dns --bench pool --bench answer)
cargo bench --locked --no-run "${benches[@]}"
built=$(date +%s)

cargo bench --locked "${benches[@]}" -- --warm-up-time 1 --measurement-time 3 --noplot "$@"

# Only results written by this run (older groups may still lie around).
python3 - "$crit" "$stamp" "$out" <<'EOF'
import csv, json, os, sys

crit, stamp, out = sys.argv[1], sys.argv[2], sys.argv[3]
since = os.stat(stamp).st_mtime
rows = []
for root, _dirs, files in os.walk(crit):
    if os.path.basename(root) != "new" or "estimates.json" not in files:
        continue
    est_path = os.path.join(root, "estimates.json")
    if os.stat(est_path).st_mtime < since:
        continue
    with open(est_path) as f:
        median = json.load(f)["median"]
    # benchmark.json names the bench as "<group>/<bench>"; fall back to the path.
    try:
        with open(os.path.join(root, "benchmark.json")) as f:
            bench = json.load(f)["full_id"]
    except (OSError, KeyError, ValueError):
        bench = os.path.relpath(os.path.dirname(root), crit)
    ci = median["confidence_interval"]
    for stat, value in (("median", median["point_estimate"]),
                        ("ci_low", ci["lower_bound"]),
                        ("ci_high", ci["upper_bound"])):
        rows.append((bench, stat, value))
if not rows:
    sys.exit(f"micro.sh: no criterion results newer than this run under {crit}")
order = {"median": 0, "ci_low": 1, "ci_high": 2}
rows.sort(key=lambda r: (r[0], order[r[1]]))
with open(out, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["scenario", "system", "metric", "unit", "round", "value"])
    for bench, stat, value in rows:
        w.writerow(["micro", "rgw", f"{bench} {stat}", "ns", 1, f"{value:.3f}"])
print(f"micro.sh: {len(rows) // 3} benches -> {out}")
EOF
end=$(date +%s)
echo "micro.sh: build $((built - start)) s, benches $((end - built)) s, total $((end - start)) s"
