#!/usr/bin/env python3
"""SSH benchmark of kz: N hosts = N real sshd on loopback addresses, 4 `file` resources each.

    bench/ssh_bench.py --kz BIN --floor BIN --dir TMPDIR [--hosts 50] [--runs 5] [--json FILE]

Called by bench/ssh.sh, which builds the binaries and owns TMPDIR (its EXIT trap stops any sshd
left behind, by the pids in TMPDIR/hosts/*/sshd.pid, then removes TMPDIR). This script:

1. makes a client ed25519 key, then starts one `sshd -D` per host on 127.0.20.1, 127.0.20.2, ...
   (--net), one free port each, each with its own ed25519 host key; config as in
   tests/support/sshd.rs (root by key only, StrictModes no, UsePAM no, MaxStartups 200);
2. writes known_hosts (every host key, `[addr]:port` form), the targets file of the floor, and a
   stack: [ssh] identity/known_hosts/user root, one [hosts.hNN] per server with its port, and one
   module of 4 `[[file]]` resources on every host, under FILES/${host.name}/f1..f4 (every sshd runs
   on this machine as root, so the files land locally);
3. after one warm-up round, runs --runs rounds of, in this order:
     (a) floor:  `ssh_floor --key K --targets FILE`   (one connection per host at once, `true`)
     (b) apply:  `kz apply STACK --yes`, from scratch (STACK/.kz and FILES deleted first, untimed)
     (c) plan:   `kz plan STACK` with nothing to change (right after (b))
   Each is timed with time.perf_counter() around subprocess.run (stdout to /dev/null) and must
   exit 0. Interleaving the three keeps slow drifts of the machine out of the ratios;
4. checks once that `kz plan STACK --json` reads every host with one connection and one round trip
   (read.hosts == read.round_trips == read.connections == N), has no change and no error, and that
   the files hold what the stack says;
5. reads the peak RSS of `kz plan` (and of the floor) with `/usr/bin/time -f %M`, in extra runs;
6. prints median/min/max and the ratios to the floor's median against the targets: plan <= 1.5x,
   apply <= 3x.

Exit status: 0 every target met, 1 a target missed, 2 a command failed or the setup is wrong.
Every sshd it started is stopped before it returns (and on SIGTERM/SIGINT). Python 3 stdlib only.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

SSHD = "/usr/sbin/sshd"
TIME_BIN = "/usr/bin/time"
FILES_PER_HOST = 4


class Failure(Exception):
    pass


def sh(argv, **kw):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if p.returncode != 0:
        raise Failure("`%s` exited %d:\n%s" % (" ".join(argv), p.returncode,
                                               p.stderr.decode(errors="replace")[-2000:]))
    return p.stdout.decode()


def keygen(path, comment):
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    with open(path + ".pub") as f:
        return f.read().split()


def free_port(address):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Fleet:
    """N sshd processes, each on its own loopback address; stop() kills them all by pid."""

    def __init__(self, base, n, net, user_rc):
        self.base = base
        self.n = n
        self.net = net
        self.user_rc = user_rc
        self.hosts = []  # (name, address, port, host key line, dir)
        self.procs = []

    def start(self, client_pub):
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        hosts_dir = os.path.join(self.base, "hosts")
        os.makedirs(hosts_dir)
        width = len(str(self.n))
        for i in range(1, self.n + 1):
            name = "h%0*d" % (width, i)
            address = "%s.%d" % (self.net, i)
            d = os.path.join(hosts_dir, name)
            os.makedirs(d)
            kind, key = keygen(os.path.join(d, "host_key"), name)[:2]
            auth = os.path.join(d, "authorized_keys")
            with open(auth, "w") as f:
                f.write(client_pub + "\n")
            port = free_port(address)
            config = os.path.join(d, "sshd_config")
            with open(config, "w") as f:
                if not self.user_rc:
                    # Debian's bash sources ~/.bashrc for `bash -c` run by sshd when SHLVL < 2;
                    # a heavy root ~/.bashrc (pyenv init: ~100 processes) would then cost every
                    # exec, the floor's and kz's alike. See --user-rc.
                    f.write("SetEnv SHLVL=1\n")
                f.write(
                    "ListenAddress %s:%d\nHostKey %s\nAuthorizedKeysFile %s\n"
                    "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nPidFile %s\n"
                    "LogLevel ERROR\nMaxStartups 200\nMaxSessions 20\n"
                    % (address, port, os.path.join(d, "host_key"), auth, os.path.join(d, "sshd.pid")))
            log = open(os.path.join(d, "sshd.log"), "w")
            self.procs.append(subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=log))
            log.close()
            self.hosts.append((name, address, port, "[%s]:%d %s %s" % (address, port, kind, key), d))
        deadline = time.monotonic() + 20
        for (name, address, port, _, d), p in zip(self.hosts, self.procs):
            while True:
                try:
                    socket.create_connection((address, port), timeout=1).close()
                    break
                except OSError:
                    pass
                if p.poll() is not None:
                    with open(os.path.join(d, "sshd.log")) as f:
                        raise Failure("sshd of %s (%s:%d) exited %d: %s" % (name, address, port, p.returncode, f.read()))
                if time.monotonic() > deadline:
                    raise Failure("sshd of %s did not listen on %s:%d" % (name, address, port))
                time.sleep(0.02)

    def alive(self):
        return sum(1 for p in self.procs if p.poll() is None)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []


def write_stack(stack, files_root, hosts, key, known_hosts, parallelism):
    os.makedirs(stack)
    t = ['[stack]\nname = "sshbench"\n']
    if parallelism:
        t.append("parallelism = %d\n" % parallelism)
    t.append('\n[ssh]\nuser = "root"\nidentity = "%s"\nknown_hosts = "%s"\n' % (key, known_hosts))
    for name, address, port, _, _ in hosts:
        t.append('\n[hosts.%s]\naddress = "%s"\nlabels = { role = "bench" }\nssh = { port = %d }\n'
                 % (name, address, port))
    with open(os.path.join(stack, "stack.toml"), "w") as f:
        f.write("".join(t))
    m = []
    for i in range(1, FILES_PER_HOST + 1):
        m.append('[[file]]\nname = "f%d"\non = { role = "bench" }\npath = "%s/${host.name}/f%d"\n'
                 'content = """\n# file %d of ${host.name} (${host.address})\nkey%d = value%d\n"""\n'
                 'mode = "0644"\n\n' % (i, files_root, i, i, i, i))
    with open(os.path.join(stack, "files.toml"), "w") as f:
        f.write("".join(m))


def timed(argv, env=None):
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise Failure("`%s` exited %d:\n%s" % (" ".join(argv), p.returncode,
                                               p.stderr.decode(errors="replace")[-3000:]))
    return dt * 1000


def peak_rss_kib(argv):
    p = subprocess.run([TIME_BIN, "-f", "%M"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        raise Failure("`%s` exited %d:\n%s" % (" ".join(argv), p.returncode, p.stderr.decode(errors="replace")[-2000:]))
    return int(p.stderr.decode().split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kz", required=True)
    ap.add_argument("--floor", required=True, help="the ssh_floor example binary")
    ap.add_argument("--dir", required=True, help="an empty scratch directory (ssh.sh owns it)")
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--net", default="127.0.20", help="hosts get NET.1 .. NET.N (127.0.0.0/8 only)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--parallelism", type=int, default=50,
                    help="[stack] parallelism of the bench stack (0: leave it unset, kz's default 10)")
    ap.add_argument("--plan-ratio", type=float, default=1.5)
    ap.add_argument("--apply-ratio", type=float, default=3.0)
    ap.add_argument("--user-rc", action="store_true",
                    help="let bash source root's ~/.bashrc in every command (by default the sshd set "
                         "SHLVL=1, which skips it)")
    ap.add_argument("--keep", action="store_true",
                    help="at the end, leave the sshd running until SIGTERM or Ctrl-C (to investigate)")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    if not a.net.startswith("127.") or a.net.count(".") != 2 or not 1 <= a.hosts <= 254:
        ap.error("--net must be 127.X.Y and --hosts 1..254: loopback addresses only")
    for tool in (SSHD, shutil.which("ssh-keygen")):
        if not tool or not os.access(tool, os.X_OK):
            print("ssh_bench: %s is missing; install it with: apt-get install openssh-server openssh-client"
                  % (tool or "ssh-keygen"), file=sys.stderr)
            return 2
    if not os.access(TIME_BIN, os.X_OK):
        print("ssh_bench: %s missing: no peak RSS (apt-get install time)" % TIME_BIN, file=sys.stderr)

    base = os.path.abspath(a.dir)
    kz, floor = os.path.abspath(a.kz), os.path.abspath(a.floor)
    key = os.path.join(base, "client_key")
    known_hosts = os.path.join(base, "known_hosts")
    targets = os.path.join(base, "targets")
    stack = os.path.join(base, "stack")
    files_root = os.path.join(base, "files")
    fleet = Fleet(base, a.hosts, a.net, a.user_rc)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        client_pub = " ".join(keygen(key, "kz-bench-client"))
        fleet.start(client_pub)
        with open(known_hosts, "w") as f:
            f.write("".join(h[3] + "\n" for h in fleet.hosts))
        with open(targets, "w") as f:
            f.write("".join("%s:%d\n" % (h[1], h[2]) for h in fleet.hosts))
        write_stack(stack, files_root, fleet.hosts, key, known_hosts, a.parallelism)
        status = run(a, kz, floor, key, targets, stack, files_root, fleet)
        if a.keep:
            print("--keep: stack %s, floor targets %s; sshd run until SIGTERM or Ctrl-C (pid %d)"
                  % (stack, targets, os.getpid()), file=sys.stderr)
            sys.stderr.flush()
            try:
                signal.pause()
            except (SystemExit, KeyboardInterrupt):
                pass
        return status
    except Failure as e:
        print("ssh_bench: %s" % e, file=sys.stderr)
        return 2
    finally:
        fleet.stop()


def reset(stack, files_root):
    shutil.rmtree(os.path.join(stack, ".kz"), ignore_errors=True)
    shutil.rmtree(files_root, ignore_errors=True)


def run(a, kz, floor, key, targets, stack, files_root, fleet):
    n = a.hosts
    floor_cmd = [floor, "--key", key, "--targets", targets]
    apply_cmd = [kz, "apply", stack, "--yes"]
    plan_cmd = [kz, "plan", stack]
    times = {"floor": [], "apply": [], "plan": []}

    print("kz:      %s" % kz)
    print("floor:   %s" % floor)
    print("hosts:   %d sshd on %s.1-%d, %d files each (%d instances); [stack] parallelism = %s"
          % (n, a.net, n, FILES_PER_HOST, n * FILES_PER_HOST, a.parallelism or "unset (10)"))
    sshd_version = subprocess.run([SSHD, "-V"], capture_output=True, text=True).stderr.strip()
    print("machine: %s, %d CPUs, %s, %s" % (platform.node(), os.cpu_count(), platform.release(), sshd_version))
    print("rc:      %s" % ("bash sources root's ~/.bashrc in every command (--user-rc)" if a.user_rc
                           else "sshd SetEnv SHLVL=1: bash -c skips root's ~/.bashrc"))
    print("runs:    %d rounds of floor / apply from scratch / plan (+%d warm-up round)" % (a.runs, a.warmup))
    sys.stdout.flush()

    for r in range(a.warmup + a.runs):
        f = timed(floor_cmd)
        reset(stack, files_root)
        ap_ms = timed(apply_cmd)
        pl_ms = timed(plan_cmd)
        if r >= a.warmup:
            times["floor"].append(f)
            times["apply"].append(ap_ms)
            times["plan"].append(pl_ms)
            print("  round %d: floor %.1f ms, apply %.1f ms, plan %.1f ms" % (r - a.warmup + 1, f, ap_ms, pl_ms))
            sys.stdout.flush()
    if fleet.alive() != n:
        raise Failure("only %d of %d sshd still run" % (fleet.alive(), n))

    # The plan after an apply: one connection and one round trip per host, nothing to change.
    p = subprocess.run(plan_cmd + ["--json"], capture_output=True)
    if p.returncode != 0:
        raise Failure("`kz plan --json` exited %d:\n%s" % (p.returncode, p.stderr.decode(errors="replace")[-2000:]))
    doc = json.loads(p.stdout)
    read = doc.get("read", {})
    checks = [
        ("read.hosts == %d" % n, read.get("hosts") == n, read.get("hosts")),
        ("read.round_trips == %d" % n, read.get("round_trips") == n, read.get("round_trips")),
        ("read.connections == %d" % n, read.get("connections") == n, read.get("connections")),
        ("no change", not doc.get("changes"), len(doc.get("changes", []))),
        ("no error", not doc.get("errors"), len(doc.get("errors", []))),
    ]
    written = sum(1 for h in fleet.hosts for i in range(1, FILES_PER_HOST + 1)
                  if os.path.isfile(os.path.join(files_root, h[0], "f%d" % i)))
    checks.append(("%d files written" % (n * FILES_PER_HOST), written == n * FILES_PER_HOST, written))
    sample = os.path.join(files_root, fleet.hosts[0][0], "f1")
    with open(sample) as fh:
        ok = fh.read() == "# file 1 of %s (%s)\nkey1 = value1\n" % (fleet.hosts[0][0], fleet.hosts[0][1])
    checks.append(("content of FILES/%s/f1" % fleet.hosts[0][0], ok, "ok" if ok else "wrong"))

    rss = {}
    if os.access(TIME_BIN, os.X_OK):
        rss["plan"] = max(peak_rss_kib(plan_cmd) for _ in range(a.runs)) / 1024
        rss["floor"] = max(peak_rss_kib(floor_cmd) for _ in range(a.runs)) / 1024

    med = {k: statistics.median(v) for k, v in times.items()}
    targets = {"plan": a.plan_ratio, "apply": a.apply_ratio}
    names = {"floor": "floor: ssh_floor (connect+auth+`true`)", "apply": "kz apply STACK --yes (from scratch)",
             "plan": "kz plan STACK (no changes)"}
    header = ("command", "median ms", "min ms", "max ms", "x floor", "peak RSS MB", "target", "result")
    rows, failed = [], False
    for k in ("floor", "plan", "apply"):
        ratio = med[k] / med["floor"]
        if k in targets:
            ok = ratio <= targets[k]
            failed |= not ok
            target, result = "<= %.1fx floor" % targets[k], "PASS" if ok else "FAIL"
        else:
            target, result = "-", "-"
        rows.append((names[k], "%.1f" % med[k], "%.1f" % min(times[k]), "%.1f" % max(times[k]),
                     "%.2f" % ratio, "%.1f" % rss[k] if k in rss else "-", target, result))
    for text, ok, got in checks:
        failed |= not ok
        rows.append(("check: " + text, "", "", "", "", "", "got %s" % got, "PASS" if ok else "FAIL"))
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    right = {1, 2, 3, 4, 5}

    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    print()
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))
    print()
    print("Result: %s" % ("FAIL" if failed else "PASS: every target met"))

    if a.json:
        with open(a.json, "w") as f:
            json.dump({
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), "hosts": n,
                "runs": a.runs, "parallelism": a.parallelism, "times_ms": times, "median_ms": med,
                "ratios": {k: med[k] / med["floor"] for k in ("plan", "apply")},
                "peak_rss_mb": rss, "read": read,
                "checks": [{"check": t, "pass": ok} for t, ok, _ in checks], "pass": not failed,
            }, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
