#!/usr/bin/env bash
# Interrupted uploads: a file of SIZE_MB MiB (default 200) replaces a 4-byte one, and kz is
# interrupted in the middle of the upload, TRIALS times (default 20) in each of these ways:
#   local-kill9   local transport, kz killed with SIGKILL
#   local-ctrlc2  local transport, two Ctrl-C (SIGINT) 0.2 s apart: kz kills the upload's shell
#   ssh-kill9     over SSH (a real sshd on 127.0.21.1, this machine), kz killed with SIGKILL
#   ssh-drop      over SSH, the session dropped: its sshd processes killed with SIGKILL
# After each trial (once kz and the upload's shell have ended) the target must hold the old or
# the new content (sha256), never a mix. The table counts old, new and mixed outcomes and the
# `.kz-upload.*` files left right after a trial (a SIGKILLed shell cannot remove its own: the
# next upload into the directory does); a last clean apply must leave none.
#
#   bash bench/upload_interrupt.sh                   # build kz (release), 20 trials each
#   TRIALS=5 SIZE_MB=50 bash bench/upload_interrupt.sh
#   KZ=/path/to/kz bash bench/upload_interrupt.sh    # an existing binary, no build
#   SCENARIOS="local-kill9 ssh-drop" bash bench/upload_interrupt.sh
#
# Needs root (the sshd logs in as root), /usr/sbin/sshd and ssh-keygen (Debian: apt-get install
# openssh-server openssh-client), sha256sum, python3 (a free port), cargo unless KZ is given, and
# twice SIZE_MB of free space in TMPDIR. Nothing is installed; traffic stays on 127.0.21.1.
# Exit status: 0 no mix and no leftover at the end, 1 otherwise, 2 setup failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRIALS="${TRIALS:-20}"
SIZE_MB="${SIZE_MB:-200}"
SCENARIOS="${SCENARIOS:-local-kill9 local-ctrlc2 ssh-kill9 ssh-drop}"
ADDR=127.0.21.1

die() { echo "upload_interrupt.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root: the benchmark's sshd logs in as root"
[ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null ||
    die "/usr/sbin/sshd and ssh-keygen are needed: apt-get install openssh-server openssh-client"

if [ -z "${KZ:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    echo "== cargo build --release (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
    (cd "$ROOT" && cargo build --release --quiet -p kz --bin kz)
    KZ="$(cd "$CARGO_TARGET_DIR" && pwd)/release/kz"
fi
[ -x "$KZ" ] || die "no kz binary at $KZ"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kz-upload-bench.XXXXXX")
SSHD_PID=
KZ_PID=
cleanup() {
    if [ -n "$KZ_PID" ]; then kill -9 "$KZ_PID" 2>/dev/null || true; fi
    if [ -n "$SSHD_PID" ]; then kill "$SSHD_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== $SIZE_MB MiB of new content, $TRIALS trials per scenario: $SCENARIOS" >&2
head -c "$((SIZE_MB * 1024 * 1024))" /dev/urandom > "$TMP/new.bin"
NEW_SHA=$(sha256sum < "$TMP/new.bin" | cut -d' ' -f1)
OLD_SHA=$(printf 'old\n' | sha256sum | cut -d' ' -f1)

# One stack per transport, one file resource each.
module() { # STACK_DIR HOST TARGET
    mkdir -p "$1/files"
    ln -f "$TMP/new.bin" "$1/files/new.bin"
    printf '[[file]]\nname = "blob"\non = ["%s"]\npath = "%s"\nsource = "files/new.bin"\n' \
        "$2" "$3" > "$1/01_files.toml"
}
mkdir -p "$TMP/local" "$TMP/local-target" "$TMP/ssh" "$TMP/ssh-target" "$TMP/home" "$TMP/sshd"
printf '[stack]\nname = "upl"\n\n[hosts.local]\ntransport = "local"\n' > "$TMP/local/stack.toml"
module "$TMP/local" local "$TMP/local-target/blob.bin"

ssh-keygen -q -t ed25519 -N '' -C client -f "$TMP/client_key"
ssh-keygen -q -t ed25519 -N '' -C host -f "$TMP/sshd/host_key"
PORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('$ADDR', 0)); print(s.getsockname()[1])")
cp "$TMP/client_key.pub" "$TMP/sshd/authorized_keys"
cat > "$TMP/sshd/sshd_config" <<EOF
ListenAddress $ADDR:$PORT
HostKey $TMP/sshd/host_key
AuthorizedKeysFile $TMP/sshd/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile $TMP/sshd/sshd.pid
LogLevel ERROR
MaxStartups 50
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$TMP/sshd/sshd_config" 2>>"$TMP/sshd/log" &
SSHD_PID=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/$ADDR/$PORT") 2>/dev/null && break
    sleep 0.05
done
(exec 3<>"/dev/tcp/$ADDR/$PORT") 2>/dev/null || die "sshd did not start: $(cat "$TMP/sshd/log")"
echo "[$ADDR]:$PORT $(cut -d' ' -f1,2 "$TMP/sshd/host_key.pub")" > "$TMP/known_hosts"
cat > "$TMP/ssh/stack.toml" <<EOF
[stack]
name = "upl"

[ssh]
user = "root"
identity = "$TMP/client_key"
known_hosts = "$TMP/known_hosts"
command_timeout = "300s"

[hosts.web]
address = "$ADDR"
ssh = { port = $PORT }
EOF
module "$TMP/ssh" web "$TMP/ssh-target/blob.bin"

kz() { HOME="$TMP/home" SSH_AUTH_SOCK='' "$KZ" --color never "$@"; }

# The `.kz-upload.*` files of DIR.
leftovers() { find "$1" -maxdepth 1 -name '.kz-upload.*' | wc -l; }

# Whether a `.kz-upload.*` file of DIR still belongs to a running process (not a zombie).
upload_running() {
    local f pid st
    for f in "$1"/.kz-upload.*; do
        [ -e "$f" ] || continue
        pid=${f##*/.kz-upload.}
        pid=${pid%%.*}
        st=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null || true)
        if [ -n "$st" ] && [ "$st" != Z ]; then return 0; fi
    done
    return 1
}

# Waits (at most 120 s) for data to reach a temporary file of DIR.
wait_upload_started() {
    local i f
    for i in $(seq 12000); do
        for f in "$1"/.kz-upload.*; do
            [ -s "$f" ] && return 0
        done
        kill -0 "$KZ_PID" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# Waits (at most 120 s) for PID to end.
wait_gone() {
    local i
    for i in $(seq 12000); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.01
    done
    return 1
}

drop_sessions() {
    local p c
    for p in $(ps -o pid= --ppid "$SSHD_PID"); do
        for c in $(ps -o pid= --ppid "$p"); do
            [ "$(cat "/proc/$c/comm" 2>/dev/null)" = sshd ] && kill -9 "$c" 2>/dev/null
        done
        kill -9 "$p" 2>/dev/null || true
    done
}

declare -A OLD NEW MIX LEFT NOTSTARTED
run_scenario() {
    local sc=$1 stack dir target n sha delay
    case $sc in
        local-*) stack="$TMP/local"; dir="$TMP/local-target" ;;
        ssh-*) stack="$TMP/ssh"; dir="$TMP/ssh-target" ;;
        *) die "unknown scenario $sc" ;;
    esac
    target="$dir/blob.bin"
    OLD[$sc]=0 NEW[$sc]=0 MIX[$sc]=0 LEFT[$sc]=0 NOTSTARTED[$sc]=0
    for n in $(seq "$TRIALS"); do
        printf 'old\n' > "$target"
        # A simple command, so that $! is kz itself (not a subshell running it).
        HOME="$TMP/home" SSH_AUTH_SOCK='' "$KZ" --color never apply "$stack" --yes \
            > "$TMP/out" 2>&1 &
        KZ_PID=$!
        if ! wait_upload_started "$dir"; then
            NOTSTARTED[$sc]=$((NOTSTARTED[$sc] + 1))
            wait_gone "$KZ_PID" || kill -9 "$KZ_PID" 2>/dev/null || true
            KZ_PID=
            continue
        fi
        # Somewhere in the transfer: 0 to 0.4 s after the first bytes arrived.
        delay=$((RANDOM % 400))
        sleep "$(printf '0.%03d' "$delay")"
        case $sc in
            *-kill9) kill -9 "$KZ_PID" 2>/dev/null || true ;;
            *-ctrlc2)
                kill -INT "$KZ_PID" 2>/dev/null || true
                sleep 0.2
                kill -INT "$KZ_PID" 2>/dev/null || true
                ;;
            ssh-drop) drop_sessions ;;
        esac
        wait_gone "$KZ_PID" || { kill -9 "$KZ_PID" 2>/dev/null || true; }
        { wait "$KZ_PID"; } 2>/dev/null || true
        KZ_PID=
        # The upload's shell goes on alone (over SSH: on the host) until its input ends.
        for _ in $(seq 12000); do upload_running "$dir" || break; sleep 0.01; done
        sha=$(sha256sum < "$target" | cut -d' ' -f1)
        if [ "$sha" = "$OLD_SHA" ]; then
            OLD[$sc]=$((OLD[$sc] + 1))
        elif [ "$sha" = "$NEW_SHA" ]; then
            NEW[$sc]=$((NEW[$sc] + 1))
        else
            MIX[$sc]=$((MIX[$sc] + 1))
            echo "  $sc trial $n: MIX, $(stat -c %s "$target") bytes" >&2
        fi
        LEFT[$sc]=$((LEFT[$sc] + $(leftovers "$dir")))
    done
    echo "  $sc: done" >&2
}

for sc in $SCENARIOS; do run_scenario "$sc"; done

# A clean run on each target removes what SIGKILLed shells left.
final_left=0
for t in local ssh; do
    case " $SCENARIOS " in *" $t-"*) ;; *) continue ;; esac
    printf 'old\n' > "$TMP/$t-target/blob.bin"
    kz apply "$TMP/$t" --yes > "$TMP/out" 2>&1 || die "the clean apply ($t) failed: $(tail -5 "$TMP/out")"
    [ "$(sha256sum < "$TMP/$t-target/blob.bin" | cut -d' ' -f1)" = "$NEW_SHA" ] ||
        die "the clean apply ($t) did not write the new content"
    final_left=$((final_left + $(leftovers "$TMP/$t-target")))
done

printf '\n%-14s %6s %5s %5s %5s %12s %11s\n' scenario trials old new mixed not-started leftovers
mixed=0
for sc in $SCENARIOS; do
    printf '%-14s %6s %5s %5s %5s %12s %11s\n' "$sc" "$TRIALS" "${OLD[$sc]}" "${NEW[$sc]}" \
        "${MIX[$sc]}" "${NOTSTARTED[$sc]}" "${LEFT[$sc]}"
    mixed=$((mixed + MIX[$sc]))
done
echo
echo "leftovers: .kz-upload.* files right after the trials (summed); after one clean apply per target: $final_left"
if [ "$mixed" = 0 ] && [ "$final_left" = 0 ]; then
    echo "Result: PASS: every target held the old or the new content"
    exit 0
fi
echo "Result: FAIL: $mixed mixed targets, $final_left leftovers after a clean run"
exit 1
