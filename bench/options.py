"""
Two configurations side by side: what an option costs or buys on this
machine.  Each round starts one fresh server per side, and each upload is
followed by a download of the same image (the first download a compute
node would make), at once or --wait seconds later, the sides taking
turns to go first.

  python -m bench.options --b filesystem_store_direct_io=false
  python -m bench.options --a disk_threads=8 --b disk_threads=2 --chunked
  python -m bench.options --a filesystem_store_warm_cache=false --wait 3

Fresh servers matter: a process keeps some of its luck (where its memory
landed, which core its threads settled on) for as long as it runs.
"""

import argparse
import time
from typing import Dict, List, Optional

from bench import transfer
from bench.common import GiB, MiB, median, testFile, waitQuiet
from bench.servers import Glance


def _options(pairs: List[str]) -> Optional[Dict[str, str]]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit("expected OPTION=VALUE, got %r" % (pair,))
        out[key.strip()] = value.strip()
    return out or None


def compare(sides: Dict[str, Optional[Dict[str, str]]], servers: int, uploads: int,
            size: int, chunked: bool, wait: float = 0) -> Dict[str, Dict[str, List[float]]]:
    path, _ = testFile(size)
    headers = dict(transfer.UPLOAD_HEADERS, **{"x-image-meta-name": "options"})
    results = {name: {"upload": [], "download": []} for name in sides}
    turn = 0
    when = "%.0f s after" % (wait,) if wait else "right after"
    for _ in range(servers):
        running = {name: Glance(opts, label="options-" + name) for name, opts in sides.items()}
        try:
            for _ in range(uploads):
                order = sorted(running) if turn % 2 == 0 else sorted(running, reverse=True)
                turn += 1
                for name in order:
                    g = running[name]
                    up = transfer.upload(g.url("/v1/images"), path, "POST", chunked, headers)
                    if up["status"] != 201:
                        raise SystemExit("%s: upload answered %s" % (name, up["status"]))
                    time.sleep(wait)
                    down = transfer.download(g.url("/v1/images/" + transfer.imageOf(up)["id"]))
                    if down["status"] != 200 or down["size_download"] != size:
                        raise SystemExit("%s: download answered %s with %s bytes"
                                         % (name, down["status"], down["size_download"]))
                    waitQuiet(g.pid)
                    results[name]["upload"].append(up["upload_mib_s"])
                    results[name]["download"].append(down["download_mib_s"])
                    print("  %s  upload %6.0f MiB/s  download %s %6.0f MiB/s"
                          % (name, up["upload_mib_s"], when, down["download_mib_s"]),
                          flush=True)
        finally:
            for g in running.values():
                g.stop()
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.options", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", action="append", default=[], metavar="OPTION=VALUE",
                   help="an option of side A (default: none, the defaults)")
    p.add_argument("--b", action="append", default=[], metavar="OPTION=VALUE",
                   help="an option of side B")
    p.add_argument("--servers", type=int, default=3, help="fresh servers per side")
    p.add_argument("--uploads", type=int, default=2, help="uploads per server")
    p.add_argument("--size-mib", type=int, default=GiB // MiB)
    p.add_argument("--chunked", action="store_true")
    p.add_argument("--wait", type=float, default=0,
                   help="seconds between an upload's answer and its download")
    args = p.parse_args(argv)
    sides = {"A": _options(args.a), "B": _options(args.b)}
    results = compare(sides, args.servers, args.uploads, args.size_mib * MiB, args.chunked,
                      args.wait)
    for name, figures in results.items():
        print("%s %s" % (name, sides[name] or "(defaults)"))
        for what, xs in figures.items():
            print("    %-9s median %6.0f MiB/s (%.0f-%.0f, %d runs)"
                  % (what, median(xs), min(xs), max(xs), len(xs)))


if __name__ == "__main__":
    main()
