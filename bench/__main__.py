"""
glancetx benchmarks.  From the repo root, with the venv's python:

  python -m bench [updown] [meta] [create] [concurrent] [scale]
                  [--runs N] [--quick] [--json FILE] [--keep-files]
  python -m bench million [--million-db postgresql|mariadb|both]
                  [--million-images N] [--json FILE] [--keep-files]

No sub-benchmark named runs them all.  Every figure is printed beside a
ceiling measured in the same run (alternating A/B), as a median of --runs
runs.  --quick runs a reduced set in under a minute and ends with one line
of ratios.  Work files go to $BENCH_DIR (default /tmp/glancetx-bench); the
big test files are removed at the end unless --keep-files.

Opt-in, never in the default set: peer (the real Glance side by side) and
million (every list shape on a million images in PostgreSQL and MariaDB,
bench/million.py; --keep-files keeps its databases).
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time

from bench import common
from bench.common import GiB, MiB, Results, header, log
from bench.servers import checkTools

ALL = ("updown", "meta", "create", "concurrent", "scale")


def parseArgs(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmarks", nargs="*", metavar="BENCH",
                   help="any of: " + ", ".join(ALL))
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median; default 3)")
    p.add_argument("--quick", action="store_true", help="reduced set, < 60 s, one line of ratios")
    p.add_argument("--json", metavar="FILE", help="write every figure and raw sample here")
    p.add_argument("--keep-files", action="store_true", help="keep the big test files")
    p.add_argument("--million-db", choices=("postgresql", "mariadb", "both"), default="both",
                   help="million: the database(s) to fill (default both)")
    p.add_argument("--million-images", type=int, default=1000000, metavar="N",
                   help="million: images in the catalogue (default 1000000)")
    args = p.parse_args(argv)
    for b in args.benchmarks:
        # Opt-in: peer, real Glance side by side (installs it); million, the
        # million-image databases.
        if b not in ALL + ("peer", "million"):
            p.error("unknown benchmark %r (choose from %s)" % (b, ", ".join(ALL)))
    return args


def quickLine(s) -> str:
    def f(key, fmt="%.2f"):
        v = s.get(key)
        return "-" if v is None else fmt % v
    return ("QUICK up64/nginx=%s down64/nginx=%s head/klein=%s list25=%sms create=%sms "
            "scale100k/1k=%s conc=%s rss64=%sMiB conc_rss=%sMiB" % (
                f("upload_ratio_%d" % (64 * MiB)), f("download_ratio_%d" % (64 * MiB)),
                f("head_ratio"), f("list_ms"), f("create_ms"), f("scale_ratio"),
                {True: "ok", False: "FAIL", None: "-"}[s.get("concurrent_ok")],
                f("hwm_%d" % (64 * MiB), "%.0f") if s.get("hwm_%d" % (64 * MiB)) is None
                else "%.0f" % (s["hwm_%d" % (64 * MiB)] / MiB),
                "-" if s.get("concurrent_hwm") is None else "%.0f" % (s["concurrent_hwm"] / MiB)))


def main(argv=None) -> int:
    args = parseArgs(sys.argv[1:] if argv is None else argv)
    chosen = args.benchmarks or list(ALL)
    runs = 1 if args.quick else args.runs
    if not args.quick and runs < 3:
        log("--runs %d: fewer than 3 runs, medians are weak" % runs)
    tools = checkTools()
    os.makedirs(common.BENCH_DIR, exist_ok=True)
    results = Results()
    summary = {}
    started = time.time()
    print("glancetx bench: %s, %d cores, python %s, runs=%d%s, load=%s, bench dir %s" % (
        time.strftime("%Y-%m-%d %H:%M:%S"), os.cpu_count(), platform.python_version(), runs,
        " (quick)" if args.quick else "", "wrk" if tools["wrk"] else "python fallback",
        common.BENCH_DIR))
    header()
    try:
        for name in chosen:
            t0 = time.time()
            ticks0 = common.cpuTicks()
            if name == "updown":
                from bench import updown
                sizes = (64 * MiB,) if args.quick else (64 * MiB, GiB)
                summary.update(updown.run(results, runs, sizes, extras=True))
            elif name == "meta":
                from bench import meta
                summary.update(meta.run(results, runs, seconds=2 if args.quick else 5,
                                        latencyN=200 if args.quick else 500))
            elif name == "create":
                from bench import create
                summary.update(create.run(results, runs, n=200 if args.quick else 500))
            elif name == "concurrent":
                from bench import concurrent
                summary.update(concurrent.run(results, runs, count=32,
                                              size=16 * MiB if args.quick else 64 * MiB))
            elif name == "scale":
                from bench import scale
                if args.quick:
                    summary.update(scale.run(results, runs, (1000, 100000), n=100,
                                             queries=["detail"]))
                else:
                    summary.update(scale.run(results, runs))
            elif name == "peer":
                from bench import glance_peer
                summary.update(glance_peer.run(results, runs))
            elif name == "million":
                from bench import million
                dbs = (("postgresql", "mariadb") if args.million_db == "both"
                       else (args.million_db,))
                summary.update(million.run(results, dbs, args.million_images,
                                           keep=args.keep_files))
            steal = common.stealShare(ticks0, common.cpuTicks())
            summary["steal_" + name] = steal
            log("%s took %.0fs%s" % (name, time.time() - t0, "" if steal is None else
                                      "; the host took back %.1f%% of CPU time" % (100 * steal)))
    finally:
        if not args.keep_files:
            common.cleanBigFiles()
        shutil.rmtree(os.path.join(common.BENCH_DIR, "data"), ignore_errors=True)
    elapsed = time.time() - started
    misses = [r for r in results.rows if r["ok"] is False]
    print("-" * 150)
    print("%d targets: %d PASS, %d MISS; %.0fs" % (
        sum(1 for r in results.rows if r["ok"] is not None),
        sum(1 for r in results.rows if r["ok"]), len(misses), elapsed))
    steals = ["%s %.1f%%" % (n, 100 * summary["steal_" + n]) for n in chosen
              if summary.get("steal_" + n) is not None]
    if steals:
        print("steal (CPU time the host took back): " + ", ".join(steals))
    if args.quick:
        print(quickLine(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs,
                       "quick": args.quick, "tools": tools, "elapsed_s": elapsed,
                       "rows": results.rows, "summary": summary, "raw": results.raw},
                      f, indent=1, default=str)
    if summary.get("million_failures"):
        return 1  # printed by million: answers that were not 200 or not what was asked
    return 0


if __name__ == "__main__":
    sys.exit(main())
