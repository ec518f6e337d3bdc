#!/usr/bin/env python3
"""Generate a synthetic kz stack for benchmarks.

    bench/gen-stack.py --hosts 500 --files 10000 --out DIR

Writes DIR/stack.toml (H hosts, addresses in 127.0.0.0/8, never contacted by `kz validate` or
`kz plan --refresh=false`), about ten module files chained by `[module] depends_on`, and a few
`files/*` for `source =`. The module files declare `[[file]]` resources whose instance count
(resources x hosts selected) is exactly --files. Selectors mix every form kz knows:

  * on = { env = "bench" }                 every host
  * on = { role = "gN" }                   one group of hosts
  * on = { role = "gN", zone = "zM" }      a group within a zone
  * on = ["h0001", "h0042", ...]           explicit host lists (1-8 hosts)

Contents are multi-line and use ${host.name}, ${host.address}, ${host.labels.*},
${hosts.NAME.address}, plain `$` and the `$${` escape; some paths are interpolated too.
Some resources depend on earlier ones (same module `file.NAME`, another module
`MODULE.file.NAME`, or one instance `MODULE.file.NAME[HOST]`), always on a resource that has an
instance on every host the dependent runs on, so each dependency is one edge per instance.

Output is deterministic for a given --seed. Python 3 standard library only.
"""

import argparse
import os
import random
import shutil
import sys

MODULE_NAMES = [
    "base_os", "users", "network", "monitoring", "logging",
    "redis", "postgres", "app", "workers", "proxy",
    "lb", "backup", "security", "dns", "mail", "cache",
]

STEMS = {
    "sysctl": "sysctl", "limits": "limits", "logrotate": "logrotate", "unit": "systemd",
    "app": "ini", "upstream": "nginx", "cron": "cron", "script": "script", "env": "env",
    "exporter": "yaml",
}


def host_name(i, width):
    return "h%0*d" % (width, i)


def host_address(i):
    """h0001 -> 127.0.1.1, h0254 -> 127.0.1.254, h0255 -> 127.0.2.1, ..."""
    n = i - 1
    d = 1 + n % 254
    c = 1 + (n // 254) % 254
    b = n // (254 * 254)
    if b > 255:
        raise SystemExit("too many hosts for 127.0.0.0/8")
    return "127.%d.%d.%d" % (b, c, d)


class Host:
    def __init__(self, i, width, groups, zones):
        self.name = host_name(i, width)
        self.address = host_address(i)
        self.role = "g%d" % ((i - 1) % groups)
        self.zone = "z%d" % (((i - 1) // groups) % zones)


class Resource:
    def __init__(self, kind, selector, hosts):
        self.kind = kind            # "all" | "role" | "rz" | "list"
        self.selector = selector    # TOML text of `on`
        self.hosts = hosts          # names of selected hosts (for bookkeeping)
        self.role = None
        self.module = None
        self.index = None           # position within its module
        self.name = None
        self.depends_on = []


def plan_resources(hosts, files, rng):
    """Choose selectors so that the instance count is exactly `files`."""
    by_role, by_rz = {}, {}
    for h in hosts:
        by_role.setdefault(h.role, []).append(h.name)
        by_rz.setdefault((h.role, h.zone), []).append(h.name)
    all_names = [h.name for h in hosts]

    resources = []
    remaining = files

    def fill(budget, candidates):
        nonlocal remaining
        if not candidates:
            return
        used, k, misses = 0, 0, 0
        while misses < len(candidates):
            kind, sel, names, role = candidates[k % len(candidates)]
            k += 1
            if used + len(names) > budget or len(names) > remaining:
                misses += 1
                continue
            misses = 0
            r = Resource(kind, sel, names)
            r.role = role
            resources.append(r)
            used += len(names)
            remaining -= len(names)

    fill(int(files * 0.30), [("all", '{ env = "bench" }', all_names, None)])
    fill(int(files * 0.40), [
        ("role", '{ role = "%s" }' % role, names, role)
        for role, names in sorted(by_role.items(), key=lambda kv: int(kv[0][1:]))
    ])
    fill(int(files * 0.15), [
        ("rz", '{ role = "%s", zone = "%s" }' % (role, zone), names, role)
        for (role, zone), names in sorted(by_rz.items(), key=lambda kv: (int(kv[0][0][1:]), kv[0][1]))
    ])
    while remaining > 0:
        k = min(remaining, rng.randint(1, 8), len(all_names))
        names = sorted(rng.sample(all_names, k))
        sel = "[" + ", ".join('"%s"' % n for n in names) + "]"
        resources.append(Resource("list", sel, names))
        remaining -= k
    assert sum(len(r.hosts) for r in resources) == files
    return resources


def content_for(stem, module, name, rng, host_names):
    """A multi-line content body (TOML-safe: no backslashes, no triple quotes)."""
    peers = rng.sample(host_names, min(3, len(host_names)))
    n = rng.randint(1, 9999)
    head = "# Managed by kz: %s/%s on ${host.name} (${host.address}). Do not edit." % (module, name)
    style = STEMS[stem]
    if style == "sysctl":
        lines = [head,
                 "net.core.somaxconn = %d" % (1024 + n),
                 "net.ipv4.tcp_max_syn_backlog = %d" % (2048 + n),
                 "vm.swappiness = %d" % (n % 60),
                 "vm.overcommit_memory = 1",
                 "fs.file-max = %d" % (100000 + n)]
    elif style == "limits":
        lines = [head] + ["%s  %s  nofile  %d" % (u, t, 65536 + n)
                          for u in ("root", "app", "redis") for t in ("soft", "hard")]
    elif style == "logrotate":
        lines = [head,
                 "/var/log/%s/*.log {" % name,
                 "    daily",
                 "    rotate %d" % (7 + n % 30),
                 "    compress",
                 "    missingok",
                 "    postrotate",
                 "        systemctl kill -s HUP %s.service || true" % name,
                 "    endscript",
                 "}"]
    elif style == "systemd":
        lines = [head,
                 "[Unit]",
                 "Description=%s on ${host.name}" % name,
                 "After=network-online.target",
                 "",
                 "[Service]",
                 "Environment=BIND=${host.address} ROLE=${host.labels.role}",
                 "ExecStart=/usr/local/bin/%s --listen ${host.address}:%d" % (name, 1024 + n % 60000),
                 "Restart=on-failure",
                 "",
                 "[Install]",
                 "WantedBy=multi-user.target"]
    elif style == "ini":
        lines = [head,
                 "[server]",
                 "name = ${host.name}",
                 "listen = ${host.address}:%d" % (1024 + n % 60000),
                 "role = ${host.labels.role}",
                 "zone = ${host.labels.zone}",
                 "",
                 "[cluster]",
                 "seeds = " + ", ".join("${hosts.%s.address}" % p for p in peers),
                 "price = $%d.00 per month" % (n % 100)]
    elif style == "nginx":
        lines = [head, "upstream %s {" % name.replace("-", "_")]
        lines += ["    server ${hosts.%s.address}:%d max_fails=3;" % (p, 8000 + n % 1000) for p in peers]
        lines += ["}", "", "server {", "    listen ${host.address}:80;",
                  "    server_name ${host.name}.bench.internal;",
                  "    location / { proxy_pass http://%s; }" % name.replace("-", "_"), "}"]
    elif style == "cron":
        lines = [head, "SHELL=/bin/sh", "MAILTO=ops@bench.internal",
                 "%d %d * * * root /usr/local/bin/%s --host ${host.name} >/dev/null 2>&1" % (n % 60, n % 24, name)]
    elif style == "script":
        lines = ["#!/bin/sh",
                 "# ${host.name} (${host.labels.role}/${host.labels.zone}), from module %s" % module,
                 "set -eu",
                 'LOG_DIR="$${LOG_DIR:-/var/log/bench}"',
                 'mkdir -p "$LOG_DIR"',
                 'echo "%s starting on $(hostname) at ${host.address}" >> "$LOG_DIR/%s.log"' % (name, name),
                 'for peer in %s; do' % " ".join("${hosts.%s.address}" % p for p in peers),
                 '    ping -c1 -W1 "$peer" >/dev/null || echo "peer $peer down" >&2',
                 "done"]
    elif style == "env":
        lines = [head, "HOST=${host.name}", "ADDR=${host.address}", "ROLE=${host.labels.role}",
                 "ZONE=${host.labels.zone}", "PRIMARY=${hosts.%s.address}" % peers[0],
                 "WORKERS=%d" % (1 + n % 16)]
    else:  # yaml
        lines = [head, "listen: ${host.address}:%d" % (9100 + n % 100), "labels:",
                 "  host: ${host.name}", "  role: ${host.labels.role}", "  zone: ${host.labels.zone}",
                 "targets:"] + ["  - ${hosts.%s.address}:9100" % p for p in peers]
    return "\n".join(lines) + "\n"


def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--files", type=int, default=10000, help="file instances in total")
    ap.add_argument("--modules", type=int, default=10, help="module files (1-%d)" % len(MODULE_NAMES))
    ap.add_argument("--groups", type=int, default=10, help="distinct role labels")
    ap.add_argument("--zones", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="stack directory to create")
    ap.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    a = ap.parse_args()
    if a.hosts < 1 or a.files < 0 or not 1 <= a.modules <= len(MODULE_NAMES):
        ap.error("need --hosts >= 1, --files >= 0, 1 <= --modules <= %d" % len(MODULE_NAMES))
    groups = max(1, min(a.groups, a.hosts))
    zones = max(1, a.zones)

    if os.path.exists(a.out) and os.listdir(a.out):
        if not a.force:
            ap.error("%s exists and is not empty (use --force)" % a.out)
        shutil.rmtree(a.out)
    os.makedirs(os.path.join(a.out, "files"), exist_ok=True)

    rng = random.Random(a.seed)
    width = max(4, len(str(a.hosts)))
    hosts = [Host(i, width, groups, zones) for i in range(1, a.hosts + 1)]
    host_names = [h.name for h in hosts]

    # stack.toml
    out = ['# Generated by bench/gen-stack.py --hosts %d --files %d --seed %d' % (a.hosts, a.files, a.seed),
           "[stack]", 'name = "bench"',
           'description = "Synthetic stack: %d hosts, %d file instances"' % (a.hosts, a.files),
           "parallelism = 50", "", "[state]", 'backend = "local"', "",
           "[ssh]", 'user = "kz"', "port = 22", 'connect_timeout = "5s"', 'command_timeout = "60s"', ""]
    for h in hosts:
        out.append("[hosts.%s]" % h.name)
        out.append('address = "%s"' % h.address)
        out.append('labels = { role = "%s", zone = "%s", env = "bench" }' % (h.role, h.zone))
        out.append("")
    with open(os.path.join(a.out, "stack.toml"), "w") as f:
        f.write("\n".join(out))

    # Resources, shuffled then dealt to modules round-robin.
    resources = plan_resources(hosts, a.files, rng)
    rng.shuffle(resources)
    modules = ["%02d_%s" % (i, MODULE_NAMES[i]) for i in range(a.modules)]
    per_module = {m: [] for m in modules}
    for i, r in enumerate(resources):
        m = modules[i % len(modules)]
        r.module = m
        r.index = len(per_module[m])
        per_module[m].append(r)
    stems = sorted(STEMS)
    for m in modules:
        for r in per_module[m]:
            r.stem = stems[rng.randrange(len(stems))]
            r.name = "%s-%04d" % (r.stem, r.index)

    # Dependencies: only on resources declared earlier that cover every host of the dependent.
    earlier_all = []          # (module, name) of every-host resources seen so far
    for m in modules:
        same_role = {}        # role -> names of role resources earlier in this module
        for r in per_module[m]:
            if earlier_all and rng.random() < 0.35:
                dm, dn = earlier_all[rng.randrange(len(earlier_all))]
                r.depends_on.append("file.%s" % dn if dm == m else "%s.file.%s" % (dm, dn))
            if r.role and same_role.get(r.role) and rng.random() < 0.3:
                r.depends_on.append("file.%s" % rng.choice(same_role[r.role]))
            if earlier_all and rng.random() < 0.03:
                dm, dn = earlier_all[rng.randrange(len(earlier_all))]
                r.depends_on.append("%s.file.%s[%s]" % (dm, dn, rng.choice(host_names)))
            r.depends_on = list(dict.fromkeys(r.depends_on))
            if r.kind == "all":
                earlier_all.append((m, r.name))
            if r.kind == "role":
                same_role.setdefault(r.role, []).append(r.name)

    # Module files.
    sources = 0
    for mi, m in enumerate(modules):
        deps = []
        if mi >= 1:
            deps.append(modules[mi - 1])
        if mi >= 2 and mi % 3 == 0:
            deps.append(modules[mi - 2])
        out = ["# Generated by bench/gen-stack.py", "[module]",
               "description = %s" % toml_str("Synthetic module %s (%d resources)" % (m, len(per_module[m])))]
        if deps:
            out.append("depends_on = [%s]" % ", ".join(toml_str(d) for d in deps))
        out.append("")
        for r in per_module[m]:
            out.append("[[file]]")
            out.append("name = %s" % toml_str(r.name))
            out.append("on = %s" % r.selector)
            if r.depends_on:
                out.append("depends_on = [%s]" % ", ".join(toml_str(d) for d in r.depends_on))
            roll = rng.random()
            if roll < 0.15:
                out.append('path = "/srv/${host.labels.role}/%s/%s.conf"' % (m, r.name))
            else:
                out.append('path = "/etc/bench/%s/%s.conf"' % (m, r.name))
            roll = rng.random()
            if roll < 0.01:
                out.append('ensure = "absent"')
            elif roll < 0.03:
                src = "files/%s-%s.txt" % (m, r.name)
                with open(os.path.join(a.out, src), "w") as f:
                    f.write("Static file %s of module %s.\nServed as is, without interpolation: ${host.name}\n"
                            % (r.name, m))
                sources += 1
                out.append("source = %s" % toml_str(src))
                out.append('mode = "0644"')
            else:
                body = content_for(r.stem, m, r.name, rng, host_names)
                if rng.random() < 0.5 and "'''" not in body:
                    out.append("content = '''\n%s'''" % body)
                else:
                    out.append('content = """\n%s"""' % body)
                out.append('mode = "%s"' % ("0755" if r.stem == "script" else rng.choice(["0644", "0640", "0600"])))
                if rng.random() < 0.2:
                    out.append('owner = "root"')
                    out.append('group = "%s"' % rng.choice(["root", "adm", "www-data"]))
            out.append("")
        with open(os.path.join(a.out, m + ".toml"), "w") as f:
            f.write("\n".join(out))

    kinds = {}
    for r in resources:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    ndeps = sum(len(r.depends_on) for r in resources)
    print("gen-stack: %s: %d hosts, %d modules, %d file resources (%s), %d file instances, "
          "%d depends_on entries, %d source files"
          % (a.out, a.hosts, len(modules), len(resources),
             ", ".join("%s %d" % kv for kv in sorted(kinds.items())), a.files, ndeps, sources),
          file=sys.stderr)


if __name__ == "__main__":
    main()
