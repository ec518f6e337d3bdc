#!/usr/bin/env python3
"""Time kz commands and check them against the performance targets.

    bench/measure.py --kz target/release/kz --stack DIR --demo stacks/demo [--runs 7] [--json FILE]

Called by bench/plan.sh. For each benchmark, runs the command --warmup times (unmeasured), then
--runs times measuring wall time with time.perf_counter() around subprocess.run (stdout to
/dev/null), then --runs more times under an RSS probe for the peak resident set:
`/usr/bin/time -f %M` when it exists, else a python wrapper reporting
resource.getrusage(RUSAGE_CHILDREN).ru_maxrss of its one child. Timing and RSS runs are separate
so the probe's own start-up never counts in the wall times.

Prints: command, median/min/max ms, peak RSS MB, target, PASS/FAIL. Exits 1 when a target fails,
2 when a command fails (non-zero exit) or the setup is wrong. Python 3 standard library only.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TIME_BIN = "/usr/bin/time"

# Peak-RSS probe without GNU time: a fresh, minimal python (-S -E) forks and execs the command
# as its only child, so RUSAGE_CHILDREN is that child's maximum resident set (KiB on Linux).
# Linux counts the forked python's pages before exec too, so the probe has a floor of a few MB
# (measured with `true` and printed): figures at that floor are the probe's, not the command's.
# Fork + exec rather than subprocess/posix_spawn: vfork would charge the whole parent's RSS.
RUSAGE_WRAPPER = r"""
import os, resource, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)
with open(out, "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


class Failure(Exception):
    pass


def run_plain(argv):
    """Wall seconds of one run, stdout to /dev/null."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise Failure("`%s` exited %d:\n%s" % (" ".join(argv), p.returncode,
                                               p.stderr.decode(errors="replace")[-2000:]))
    return dt


def run_rss(argv, probe):
    """Peak RSS in KiB of one run."""
    fd, out = tempfile.mkstemp(prefix="kz-bench-rss-")
    os.close(fd)
    try:
        if probe == "time":
            cmd = [TIME_BIN, "-f", "%M", "-o", out] + argv
        else:
            cmd = [sys.executable, "-S", "-E", "-c", RUSAGE_WRAPPER, out] + argv
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise Failure("`%s` exited %d:\n%s" % (" ".join(argv), p.returncode,
                                                   p.stderr.decode(errors="replace")[-2000:]))
        with open(out) as f:
            # GNU time may prefix "Command exited with non-zero status"; the figure is last.
            return int(f.read().split()[-1])
    finally:
        os.unlink(out)


class Bench:
    """A benchmark: one or more commands run back to back (their times add, their RSS max)."""

    def __init__(self, name, steps, max_ms=None, max_mb=None):
        self.name = name
        self.steps = steps
        self.max_ms = max_ms
        self.max_mb = max_mb
        self.times_ms = []
        self.rss_kib = []

    def measure(self, runs, warmup, probe):
        for _ in range(warmup):
            for argv in self.steps:
                run_plain(argv)
        for _ in range(runs):
            self.times_ms.append(1000 * sum(run_plain(argv) for argv in self.steps))
        for _ in range(runs):
            self.rss_kib.append(max(run_rss(argv, probe) for argv in self.steps))

    @property
    def median(self):
        return statistics.median(self.times_ms)

    @property
    def peak_mb(self):
        return max(self.rss_kib) / 1024

    def verdicts(self):
        """[(text, ok)] for each target this benchmark has."""
        out = []
        if self.max_ms is not None:
            out.append(("median < %d ms" % self.max_ms, self.median < self.max_ms))
        if self.max_mb is not None:
            out.append(("RSS < %d MB" % self.max_mb, self.peak_mb < self.max_mb))
        return out


def stack_files(d):
    files = []
    for root, dirs, names in os.walk(d):
        dirs[:] = sorted(x for x in dirs if x != ".kz")
        files += [os.path.join(root, n) for n in sorted(names)]
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kz", required=True, help="the kz binary")
    ap.add_argument("--stack", required=True, help="the generated stack directory")
    ap.add_argument("--demo", required=True, help="stacks/demo")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--plan-ms", type=int, default=500)
    ap.add_argument("--plan-mb", type=int, default=150)
    ap.add_argument("--demo-ms", type=int, default=50)
    ap.add_argument("--rss-probe", choices=["auto", "time", "python"], default="auto")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be >= 1")

    probe = a.rss_probe
    if probe == "auto":
        probe = "time" if os.access(TIME_BIN, os.X_OK) else "python"
    if probe == "time" and not os.access(TIME_BIN, os.X_OK):
        ap.error("%s is not installed" % TIME_BIN)

    kz = os.path.abspath(a.kz)
    if os.path.isdir(os.path.join(a.stack, ".kz")):
        sys.exit("measure: %s/.kz exists: the benchmark wants an empty state" % a.stack)
    files = stack_files(a.stack)
    true_bin = shutil.which("true") or "/bin/true"
    cat_bin = shutil.which("cat") or "/bin/cat"

    benches = [
        Bench("kz validate STACK", [[kz, "validate", a.stack]]),
        Bench("kz plan --refresh=false STACK", [[kz, "plan", "--refresh=false", a.stack]],
              max_ms=a.plan_ms, max_mb=a.plan_mb),
        Bench("kz plan --refresh=false --json STACK", [[kz, "plan", "--refresh=false", "--json", a.stack]],
              max_ms=a.plan_ms, max_mb=a.plan_mb),
        Bench("kz validate stacks/demo", [[kz, "validate", a.demo]], max_ms=a.demo_ms),
        Bench("baseline: cat STACK files + true", [[cat_bin] + files, [true_bin]]),
    ]

    print("kz:     %s" % kz)
    print("stack:  %s (%d files, %d KiB)" % (a.stack, len(files), sum(os.path.getsize(f) for f in files) // 1024))
    print("runs:   %d measured (+%d warm-up) for wall time, %d for RSS (probe: %s)"
          % (a.runs, a.warmup, a.runs, "/usr/bin/time -f %M" if probe == "time" else "python getrusage wrapper"))
    print("host:   %s, %s CPUs, python %s" % (platform.node(), os.cpu_count(), platform.python_version()))
    try:
        floor = run_rss([true_bin], probe) / 1024
    except Failure as e:
        print("measure: %s" % e, file=sys.stderr)
        return 2
    print("floor:  the RSS probe reads %.1f MB for `true`" % floor)
    sys.stdout.flush()
    try:
        for b in benches:
            b.measure(a.runs, a.warmup, probe)
    except Failure as e:
        print("measure: %s" % e, file=sys.stderr)
        return 2

    if os.path.isdir(os.path.join(a.stack, ".kz")):
        print("measure: warning: a command created %s/.kz" % a.stack, file=sys.stderr)

    header = ("command", "median ms", "min ms", "max ms", "peak RSS MB", "target", "result")
    rows = []
    failed = False
    for b in benches:
        v = b.verdicts()
        ok = all(x for _, x in v)
        failed |= not ok
        rows.append((b.name, "%.1f" % b.median, "%.1f" % min(b.times_ms), "%.1f" % max(b.times_ms),
                     "%.1f" % b.peak_mb, ", ".join(t for t, _ in v) or "-",
                     ("PASS" if ok else "FAIL") if v else "-"))
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    right = {1, 2, 3, 4}

    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    print()
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(fmt(r))
    print()
    for b in benches:
        for text, ok in b.verdicts():
            if not ok:
                got = "%.1f ms" % b.median if "ms" in text else "%.1f MB" % b.peak_mb
                print("FAIL: %s: %s (got %s)" % (b.name, text, got))
    print("Result: %s" % ("FAIL" if failed else "PASS: every target met"))

    if a.json:
        with open(a.json, "w") as f:
            json.dump({
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cpus": os.cpu_count(),
                "runs": a.runs,
                "rss_probe": probe,
                "benches": [{
                    "name": b.name, "times_ms": b.times_ms, "median_ms": b.median,
                    "rss_kib": b.rss_kib, "peak_rss_mb": b.peak_mb,
                    "targets": [{"target": t, "pass": ok} for t, ok in b.verdicts()],
                } for b in benches],
            }, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
