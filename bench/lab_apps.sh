#!/usr/bin/env bash
# The no-op plan of stacks/lab-apps (two lab hosts, each with a `system`, an image, two containers
# and a file), converged first, against a floor measured in the same run: one bare OpenSSH login
# running `true` on both hosts at once (what one round trip per host cannot beat).
#
#   bash bench/lab_apps.sh          # 7 runs each
#   RUNS=15 bash bench/lab_apps.sh
#
# Needs root, podman, runc, debootstrap and openssh-client. CARGO_TARGET_DIR picks the build directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RUNS="${RUNS:-7}"

echo "== cargo build --release" >&2
cargo build --release --quiet --bin kz
KZ="$(cd "$CARGO_TARGET_DIR" && pwd)/release/kz"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kz-lab-apps-bench.XXXXXX")
NAME="kzappsbench$$"
cleanup() {
    "$KZ" lab down "$TMP/stack" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
cp -r stacks/lab-apps "$TMP/stack"
sed -i "s/^name = \"lab-apps\"/name = \"$NAME\"/" "$TMP/stack/stack.toml"
export KZ_SECRET_WEB_TOKEN=bench-token-0123

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "== kz lab up + first apply" >&2
"$KZ" lab up "$TMP/stack" >/dev/null
t0=$(now)
"$KZ" apply "$TMP/stack" --lab --yes >/dev/null
t1=$(now)
echo "first apply (10 changes, image builds and health waits included): $(ms "$t0" "$t1") ms"

lab="$TMP/stack/.kz/lab"
addrs=$(python3 -c 'import json,sys; print(" ".join(h["address"] for h in json.load(open(sys.argv[1]))["hosts"].values()))' "$lab/lab.json")
ssh_opts=(-q -i "$lab/id_ed25519" -o UserKnownHostsFile="$lab/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes)

declare -a floor plan
for i in $(seq "$RUNS"); do
    t0=$(now)
    for a in $addrs; do ssh "${ssh_opts[@]}" "root@$a" true & done
    wait
    t1=$(now)
    floor+=("$(ms "$t0" "$t1")")
    t0=$(now)
    "$KZ" plan "$TMP/stack" --lab --detailed-exitcode >/dev/null
    t1=$(now)
    plan+=("$(ms "$t0" "$t1")")
done
f=$(median "${floor[@]}")
p=$(median "${plan[@]}")
echo "floor: ssh true on both hosts: median $f ms (runs: ${floor[*]})"
echo "no-op kz plan --lab:          median $p ms (runs: ${plan[*]})"
python3 -c "print('ratio plan/floor: %.2fx' % ($p / max($f, 1)))"
