#!/usr/bin/env bash
# Plan-time benchmark of kz: builds kz in release, generates a 500-host / 10,000-file stack in a
# temporary directory, and times `kz validate` and `kz plan --refresh=false` on it (plus
# `kz validate stacks/demo` and a cat/true floor) with bench/measure.py.
#
#   bash bench/plan.sh                 # 7 runs per command
#   RUNS=15 bash bench/plan.sh         # more runs
#   bash bench/plan.sh --json out.json # extra arguments go to bench/measure.py
#
# CARGO_TARGET_DIR picks the build directory (default: the workspace's target/).
# Exit status: 0 every target met, 1 a target missed, 2 a command failed; others: build errors.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
HOSTS="${HOSTS:-500}"
FILES="${FILES:-10000}"
RUNS="${RUNS:-7}"

echo "== cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
cargo build --release --quiet --bin kz
KZ="$(cd "$CARGO_TARGET_DIR" && pwd)/release/kz"
[ -x "$KZ" ] || { echo "plan.sh: no kz binary at $KZ" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kz-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "== generating a stack: $HOSTS hosts, $FILES file instances" >&2
python3 "$ROOT/bench/gen-stack.py" --hosts "$HOSTS" --files "$FILES" --out "$TMP/stack"

if [ ! -x /usr/bin/time ]; then
    echo "== /usr/bin/time not found: peak RSS comes from python's getrusage wrapper" >&2
fi
echo "== measuring ($RUNS runs each)" >&2
python3 "$ROOT/bench/measure.py" --kz "$KZ" --stack "$TMP/stack" --demo "$ROOT/stacks/demo" \
    --runs "$RUNS" "$@"
