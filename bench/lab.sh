#!/usr/bin/env bash
# Lab benchmark: how long `kz lab up`, a first `kz apply --lab`, a no-op `kz plan --lab` and
# `kz lab down` take for the hosts of stacks/lab (five), against a floor measured in the same run:
# as many bare `podman run -d` of the same image, waited for until their sshd answers, then removed.
#
#   bash bench/lab.sh            # 5 runs each, the image reused when present
#   RUNS=9 bash bench/lab.sh
#   bash bench/lab.sh --cold     # first remove the image, so the first `lab up` builds it
#
# Needs root, podman, runc, debootstrap (see README). CARGO_TARGET_DIR picks the build directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
RUNS="${RUNS:-5}"
export CONTAINERS_CONF=/var/cache/kz-lab/containers.conf

echo "== cargo build --release" >&2
cargo build --release --quiet --bin kz
KZ="$(cd "$CARGO_TARGET_DIR" && pwd)/release/kz"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kz-lab-bench.XXXXXX")
NAME="kzbench$$"
cleanup() {
    "$KZ" lab down "$TMP/stack" >/dev/null 2>&1 || true
    for h in $(seq "${NHOSTS:-5}"); do podman rm -f -t 0 floor-$NAME-$h >/dev/null 2>&1 || true; done
    podman network rm -f floor-$NAME >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir "$TMP/stack"
cp stacks/lab/*.toml "$TMP/stack/"
sed -i "s/^name = \"lab\"/name = \"$NAME\"/" "$TMP/stack/stack.toml"
NHOSTS=$(grep -c '^\[hosts\.' "$TMP/stack/stack.toml")

now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }

if [ "${1:-}" = "--cold" ]; then
    podman rmi -f kz-debian:12 >/dev/null 2>&1 || true
    t0=$(now)
    "$KZ" lab up "$TMP/stack" >/dev/null 2>&1
    t1=$(now)
    echo "cold kz lab up (image build + $NHOSTS hosts): $(ms "$t0" "$t1") ms"
    "$KZ" lab down "$TMP/stack" >/dev/null
fi

declare -a floor up apply plan down
for i in $(seq "$RUNS"); do
    # The floor: what podman alone takes to give as many hosts answering on port 22.
    t0=$(now)
    podman network create floor-$NAME >/dev/null
    for h in $(seq "$NHOSTS"); do
        podman run -d --name floor-$NAME-$h --network floor-$NAME --cap-add NET_ADMIN kz-debian:12 >/dev/null
    done
    for h in $(seq "$NHOSTS"); do
        ip=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' floor-$NAME-$h)
        until (exec 3<>"/dev/tcp/$ip/22") 2>/dev/null; do sleep 0.05; done
    done
    for h in $(seq "$NHOSTS"); do podman rm -f -t 0 floor-$NAME-$h >/dev/null; done
    podman network rm -f floor-$NAME >/dev/null
    t1=$(now); floor+=("$(ms "$t0" "$t1")")

    t0=$(now); "$KZ" lab up "$TMP/stack" >/dev/null 2>&1; t1=$(now); up+=("$(ms "$t0" "$t1")")
    t0=$(now); "$KZ" apply "$TMP/stack" --lab --yes >/dev/null 2>&1; t1=$(now); apply+=("$(ms "$t0" "$t1")")
    t0=$(now); "$KZ" plan "$TMP/stack" --lab --detailed-exitcode >/dev/null 2>&1; t1=$(now); plan+=("$(ms "$t0" "$t1")")
    t0=$(now); "$KZ" lab down "$TMP/stack" >/dev/null 2>&1; t1=$(now); down+=("$(ms "$t0" "$t1")")
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
f=$(median "${floor[@]}")
echo "medians of $RUNS runs (ms):"
printf '  %-38s %6s\n' "floor: 3x podman run + sshd up + rm" "$f"
for row in "kz lab up ($NHOSTS hosts, image cached):up" "kz apply --lab (14 changes):apply" \
           "kz plan --lab (no changes):plan" "kz lab down:down"; do
    label=${row%%:*}; var=${row##*:}
    eval "vals=(\"\${${var}[@]}\")"
    m=$(median "${vals[@]}")
    printf '  %-38s %6s\n' "$label" "$m"
done
u=$(median "${up[@]}"); d=$(median "${down[@]}")
echo "  kz lab up + down vs the floor: $(awk -v a=$((u + d)) -v b="$f" 'BEGIN { printf "%.2fx", a / b }')"
