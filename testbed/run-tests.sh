#!/usr/bin/env bash
# run-tests.sh — the whole test suite: lint, unit tests, end-to-end tests in
# network namespaces with real peers (NSD, unbound, dig, socat, curl, ping,
# traceroute). Installs what is missing first. Run as root from anywhere.
# Exits non-zero when any step or test fails.
set -euo pipefail
repo=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$repo"

[ "$(id -u)" = 0 ] || { echo "run-tests.sh: must run as root (network namespaces, nftables)" >&2; exit 1; }

step() { printf '\n=== %s\n' "$*"; }

step "installing missing packages"
./testbed/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit tests (cargo test)"
cargo test --workspace --locked

step "building rgw and netem-lite for the end-to-end tests"
cargo build --locked -p rgw -p rgw-testbed-tools
export RGW_BIN="$repo/target/debug/rgw"

step "end-to-end tests in network namespaces (pytest)"
cd "$repo/testbed"
/usr/bin/python3 -m pytest -p no:cacheprovider -q tests/
