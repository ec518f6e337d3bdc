#!/usr/bin/env python3
"""Generate a stack for measuring `depends_on` resolution: H hosts, R resources per module on
every host, and a second module whose resources depend on the first module's.

    python3 bench/gen-deps.py --hosts 10000 --out DIR [--resources 2] [--no-deps] [--force]

Module `10_base` declares R `[[file]]` resources on every host (`on = { env = "bench" }`);
module `20_app` declares R more, each with `depends_on` on its counterpart in `10_base` (once
`MODULE.file.NAME`, once `MODULE.file.NAME[HOST]` for the first host, and a `file.NAME` in its
own module), so every instance has dependencies resolved on its own host. With `--no-deps` the
same stack has no `depends_on`: the difference is the cost of resolving them. Nothing is ever
contacted (addresses are in 127.0.0.0/8; `kz validate` opens no connection).
"""

import argparse
import os
import shutil


def address(i):
    n = i - 1
    return "127.%d.%d.%d" % (n // (254 * 254), 1 + (n // 254) % 254, 1 + n % 254)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", type=int, required=True)
    p.add_argument("--resources", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument("--no-deps", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    if os.path.exists(a.out):
        if not a.force:
            raise SystemExit("%s exists (use --force)" % a.out)
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    width = len(str(a.hosts))
    first = "h%0*d" % (width, 1)
    with open(os.path.join(a.out, "stack.toml"), "w") as f:
        f.write('[stack]\nname = "deps"\n\n')
        for i in range(1, a.hosts + 1):
            f.write('[hosts.h%0*d]\naddress = "%s"\nlabels = { env = "bench" }\n'
                    % (width, i, address(i)))
    with open(os.path.join(a.out, "10_base.toml"), "w") as f:
        for r in range(a.resources):
            f.write('[[file]]\nname = "base%d"\non = { env = "bench" }\n'
                    'path = "/tmp/kz-bench/base%d"\ncontent = "${host.name}\\n"\n\n' % (r, r))
    with open(os.path.join(a.out, "20_app.toml"), "w") as f:
        f.write('[module]\ndepends_on = ["10_base"]\n\n')
        for r in range(a.resources):
            f.write('[[file]]\nname = "app%d"\non = { env = "bench" }\n'
                    'path = "/tmp/kz-bench/app%d"\ncontent = "${host.address}\\n"\n' % (r, r))
            if not a.no_deps:
                deps = ['"10_base.file.base%d"' % r, '"10_base.file.base%d[%s]"' % (r, first)]
                if r > 0:
                    deps.append('"file.app%d"' % (r - 1))
                f.write("depends_on = [%s]\n" % ", ".join(deps))
            f.write("\n")


if __name__ == "__main__":
    main()
