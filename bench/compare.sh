#!/usr/bin/env bash
# Compares this tree's kz with another revision's, in one run, on the same inputs: the plan-time
# benchmark (bench/measure.py on one generated 500-host / 10,000-file stack) and the SSH benchmark
# (bench/ssh_bench.py, 50 sshd on loopback), old then new, each against its own floor.
#
#   bash bench/compare.sh REV                # e.g. c6b6fe9
#   SKIP_SSH=1 bash bench/compare.sh REV     # the plan-time part only
#   SKIP_PLAN=1 bash bench/compare.sh REV    # the SSH part only
#   RUNS=9 bash bench/compare.sh REV
#
# REV is built in a detached worktree (/tmp/kz-compare-REV) with its own target directory
# (BASE_TARGET, default /tmp/kz-compare-target); this tree builds in CARGO_TARGET_DIR (default
# target/). The figures of each run print as the benchmarks print them; compare the ratios.
# Needs what bench/plan.sh and bench/ssh.sh need (python3, cargo; root and sshd for the SSH part).
set -euo pipefail

REV="${1:?usage: bench/compare.sh REV}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BASE_TREE="${BASE_TREE:-/tmp/kz-compare-$REV}"
BASE_TARGET="${BASE_TARGET:-/tmp/kz-compare-target}"
RUNS="${RUNS:-7}"
SSH_RUNS="${SSH_RUNS:-5}"
HOSTS="${HOSTS:-50}"

if [ ! -d "$BASE_TREE" ]; then
    git worktree add --detach "$BASE_TREE" "$REV" >&2
fi
echo "== building $REV (in $BASE_TARGET) and this tree (in $CARGO_TARGET_DIR)" >&2
(cd "$BASE_TREE" && CARGO_TARGET_DIR="$BASE_TARGET" cargo build --release --quiet -p kz -p kz-providers --bin kz --example ssh_floor)
cargo build --release --quiet -p kz -p kz-providers --bin kz --example ssh_floor
OLD="$BASE_TARGET/release"
NEW="$(cd "$CARGO_TARGET_DIR" && pwd)/release"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kz-compare.XXXXXX")
# Stops every sshd a run started, even if ssh_bench.py was killed, then removes the scratch.
cleanup() {
    local f
    for f in "$TMP"/ssh-*/hosts/*/sshd.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
python3 "$ROOT/bench/gen-stack.py" --hosts 500 --files 10000 --out "$TMP/stack"
if [ -z "${SKIP_PLAN:-}" ]; then
    for side in old new; do
        bin=$OLD; [ "$side" = new ] && bin=$NEW
        echo "== plan-time, $side ($bin/kz)"
        python3 "$ROOT/bench/measure.py" --kz "$bin/kz" --stack "$TMP/stack" \
            --demo "$ROOT/stacks/demo" --runs "$RUNS" --json "$TMP/plan-$side.json" || true
    done
fi
if [ -z "${SKIP_SSH:-}" ]; then
    for side in old new; do
        bin=$OLD; [ "$side" = new ] && bin=$NEW
        mkdir -p "$TMP/ssh-$side"
        echo "== ssh, $side ($bin/kz)"
        python3 "$ROOT/bench/ssh_bench.py" --kz "$bin/kz" --floor "$NEW/examples/ssh_floor" \
            --dir "$TMP/ssh-$side" --hosts "$HOSTS" --runs "$SSH_RUNS" --json "$TMP/ssh-$side.json" || true
    done
fi
