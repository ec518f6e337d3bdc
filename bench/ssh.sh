#!/usr/bin/env bash
# SSH benchmark of kz: 50 real OpenSSH sshd on loopback addresses (127.0.20.1-50), 4 `file`
# resources per host. Measures in one run, 5 times each: the floor (providers/examples/ssh_floor.rs:
# russh, one connection per host at once, auth, `true`), `kz apply --yes` from scratch and `kz plan`
# with no changes; checks plan <= 1.5x floor, apply <= 3x floor, and one connection and one read
# round trip per host. The work is done by bench/ssh_bench.py.
#
#   bash bench/ssh.sh                      # 50 hosts, 5 runs each
#   RUNS=9 HOSTS=20 bash bench/ssh.sh      # other sizes
#   bash bench/ssh.sh --parallelism 0      # bench stack without [stack] parallelism (kz's 10)
#   bash bench/ssh.sh --json /tmp/ssh.json # extra arguments go to bench/ssh_bench.py
#
# Needs root (sshd logs in as root, the files land on this machine), /usr/sbin/sshd and ssh-keygen
# (Debian: apt-get install openssh-server openssh-client), python3, cargo. Nothing is installed.
# CARGO_TARGET_DIR picks the build directory (default: the workspace's target/).
# Exit status: 0 every target met, 1 a target missed, 2 a command failed or a tool is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
HOSTS="${HOSTS:-50}"
RUNS="${RUNS:-5}"

if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
    echo "ssh.sh: /usr/sbin/sshd and ssh-keygen are needed; install them with:" >&2
    echo "    apt-get install openssh-server openssh-client" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "ssh.sh: run as root: the benchmark's sshd log in as root with their own configs" >&2
    exit 2
fi

echo "== cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
# One invocation, so kz and the floor link the very same russh build (same features).
cargo build --release --quiet -p kz -p kz-providers --bin kz --example ssh_floor
OUT="$(cd "$CARGO_TARGET_DIR" && pwd)/release"
KZ="$OUT/kz"
FLOOR="$OUT/examples/ssh_floor"
[ -x "$KZ" ] && [ -x "$FLOOR" ] || { echo "ssh.sh: missing $KZ or $FLOOR" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kz-ssh-bench.XXXXXX")
PY=
# Stops every sshd this run started, even if ssh_bench.py was killed: by the pids sshd wrote.
cleanup() {
    local f pid
    if [ -n "$PY" ] && kill -0 "$PY" 2>/dev/null; then
        kill -TERM "$PY" 2>/dev/null || true
        wait "$PY" 2>/dev/null || true
    fi
    for f in "$TMP"/hosts/*/sshd.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null || true)
        if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== $HOSTS sshd, $RUNS runs each" >&2
# In the background so that a TERM reaches the trap at once (it forwards it to ssh_bench.py).
python3 "$ROOT/bench/ssh_bench.py" --kz "$KZ" --floor "$FLOOR" --dir "$TMP" \
    --hosts "$HOSTS" --runs "$RUNS" "$@" &
PY=$!
status=0
wait "$PY" || status=$?
PY=
exit "$status"
