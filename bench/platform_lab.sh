#!/usr/bin/env bash
# Issue 15's budget: stacks/prod in the lab, from `kz lab up` (lab image cached) to a green
# `kz verify --lab`, within 10 minutes on 2 cores and 12 GB. Measures each step's wall time and
# the machine's memory in use (MemTotal - MemAvailable, sampled every second) above what it was
# before the lab, at its peak and at the end; then the drills' times. Module 10's load balancers
# are made on the Hetzner API stand-in (kz-test-hcloud --keybuzz, on loopback).
#
#   bash bench/platform_lab.sh            # one run (each takes minutes)
#   RUNS=3 bash bench/platform_lab.sh     # medians of three
#   DRILLS=0 bash bench/platform_lab.sh   # without the drills
#
# Needs root, podman, runc and debootstrap. CARGO_TARGET_DIR picks the build directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RUNS="${RUNS:-1}"
DRILLS="${DRILLS:-1}"

echo "== cargo build --release" >&2
cargo build --release --quiet -p kz -p kz-test-hcloud
KZ="$(cd "$CARGO_TARGET_DIR" && pwd)/release/kz"
HCLOUD="$(cd "$CARGO_TARGET_DIR" && pwd)/release/kz-test-hcloud"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kz-platform-bench.XXXXXX")
NAME="kzprodbench$$"
SAMPLER=""
API=""
cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
    [ -n "$API" ] && kill "$API" 2>/dev/null || true
    "$KZ" lab down "$TMP/stack" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir "$TMP/stack"
(cd stacks/prod && tar --exclude=.kz -cf - .) | (cd "$TMP/stack" && tar -xf -)
sed -i "s/^name = \"keybuzz\"/name = \"$NAME\"/" "$TMP/stack/stack.toml"
for s in PG_SUPERUSER_PASSWORD PG_REPLICATION_PASSWORD PATRONI_RAFT_PASSWORD REDIS_PASSWORD \
    RABBITMQ_ERLANG_COOKIE RABBITMQ_ADMIN_PASSWORD MINIO_ROOT_PASSWORD MARIADB_ROOT_PASSWORD \
    MARIADB_SST_PASSWORD MARIADB_ERPNEXT_PASSWORD PROXYSQL_ADMIN_PASSWORD \
    PROXYSQL_MONITOR_PASSWORD K3S_TOKEN; do
    export "KZ_SECRET_$s=bench${s//_/}x9"
done

# The stand-in prints KZ_HCLOUD_ENDPOINT (loopback) and HCLOUD_TOKEN once it serves.
unset HCLOUD_TOKEN KZ_HCLOUD_ENDPOINT
"$HCLOUD" --keybuzz > "$TMP/hcloud.env" &
API=$!
for _ in $(seq 50); do grep -q '^HCLOUD_TOKEN=' "$TMP/hcloud.env" && break; sleep 0.2; done
set -a; . "$TMP/hcloud.env"; set +a
case "$KZ_HCLOUD_ENDPOINT" in http://127.*) ;; *) echo "the stand-in is not on loopback" >&2; exit 1;; esac

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
used_mib() { awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { print int((t - a) / 1024) }' /proc/meminfo; }

DRILL_NAMES=(redis-master-loss postgres-leader-loss rabbitmq-node-loss galera-node-loss)
ups=(); applies=(); verifies=(); totals=(); peaks=(); ends=()
declare -A drill_times=()
for run in $(seq "$RUNS"); do
    "$KZ" lab down "$TMP/stack" >/dev/null 2>&1 || true
    base=$(used_mib)
    echo 0 > "$TMP/peak"
    ( peak=0; while :; do u=$(used_mib); [ "$u" -gt "$peak" ] && { peak=$u; echo "$peak" > "$TMP/peak"; }; sleep 1; done ) &
    SAMPLER=$!
    echo "== run $run: kz lab up" >&2
    t0=$(now)
    "$KZ" lab up "$TMP/stack" > "$TMP/up.txt"
    t1=$(now)
    echo "== run $run: kz apply --lab --yes" >&2
    "$KZ" apply "$TMP/stack" --lab --yes > "$TMP/apply.txt"
    t2=$(now)
    echo "== run $run: kz verify --lab" >&2
    "$KZ" verify "$TMP/stack" --lab > "$TMP/verify.txt"
    t3=$(now)
    ends+=($(( $(used_mib) - base )))
    kill "$SAMPLER"; SAMPLER=""
    peaks+=($(( $(cat "$TMP/peak") - base )))
    ups+=("$(secs "$t0" "$t1")"); applies+=("$(secs "$t1" "$t2")"); verifies+=("$(secs "$t2" "$t3")")
    totals+=("$(secs "$t0" "$t3")")
    echo "   up ${ups[-1]} s, apply ${applies[-1]} s, verify ${verifies[-1]} s, total ${totals[-1]} s; memory +${peaks[-1]} MiB at peak, +${ends[-1]} MiB at the end" >&2
    # What apply and verify said, for the README's examples.
    grep -E '^Apply:' "$TMP/apply.txt" | sed 's/^/   /' >&2 || true
    sed -n '/^Summary:/,$p' "$TMP/verify.txt" | sed 's/^/   /' >&2 || true
    if [ "$DRILLS" = 1 ]; then
        for d in "${DRILL_NAMES[@]}"; do
            t4=$(now)
            "$KZ" drill "$TMP/stack" "$d" --lab > "$TMP/$d.txt"
            t5=$(now)
            drill_times[$d]="${drill_times[$d]:-} $(secs "$t4" "$t5")"
            echo "   drill $d: $(secs "$t4" "$t5") s" >&2
            grep -E "expect|restore" "$TMP/$d.txt" | sed 's/^/     /' >&2 || true
        done
    fi
done

echo
echo "stacks/prod in the lab ($(grep -c running "$TMP/up.txt") lab hosts; medians of $RUNS run(s)):"
echo "  kz lab up:          $(median "${ups[@]}") s"
echo "  kz apply --lab:     $(median "${applies[@]}") s"
echo "  kz verify --lab:    $(median "${verifies[@]}") s"
echo "  up to green verify: $(median "${totals[@]}") s (budget 600 s)"
echo "  memory in use:      +$(median "${peaks[@]}") MiB at peak, +$(median "${ends[@]}") MiB at the end (budget 12288 MiB)"
if [ "$DRILLS" = 1 ]; then
    for d in "${DRILL_NAMES[@]}"; do
        # shellcheck disable=SC2086 # the times are words
        printf '  drill %-21s %s s\n' "$d:" "$(median ${drill_times[$d]})"
    done
fi
