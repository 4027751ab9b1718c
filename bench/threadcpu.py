"""
Where the server's CPU time goes, thread by thread, for one workload: the
user and system seconds each thread of the twistd process used, read from
/proc/PID/task/*/stat before and after, and the load generator's own.

  python -m bench.threadcpu upload [--runs N] [--chunked]
                                                  one 1 GiB curl upload (Content-Length)
  python -m bench.threadcpu head [--seconds S]    HEAD of one image at 16 connections (httpload)

Threads are listed by id; the reactor thread is the one whose id is the
process id.  On an upload the other busy threads are the MD5 workers
(user time) and the disk writers (with O_DIRECT, little: the copy into
the staging buffer and the write calls); on HEAD, the registry's database
threads.  This is how the README's account of the
upload's CPU budget was measured.
"""

import argparse
import glob
import os
import resource
import time
from typing import Dict, Tuple

from bench import catalogue, cload, transfer
from bench.common import GiB, testFile
from bench.servers import Glance

_TICK = os.sysconf("SC_CLK_TCK")


def threadTimes(pid: int) -> Dict[int, Tuple[float, float]]:
    """
    User and system CPU seconds of every thread of C{pid}, by thread id.
    """
    out = {}
    for task in glob.glob("/proc/%d/task/*" % (pid,)):
        try:
            with open(task + "/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.rsplit("/", 1)[1])] = (int(fields[11]) / _TICK, int(fields[12]) / _TICK)
    return out


def report(pid: int, before, after, what: str) -> None:
    print(what)
    total = 0.0
    for tid in sorted(after):
        user = after[tid][0] - before.get(tid, (0.0, 0.0))[0]
        system = after[tid][1] - before.get(tid, (0.0, 0.0))[1]
        total += user + system
        if user + system >= 0.01:
            role = "reactor" if tid == pid else "thread"
            print("  %-8s %7d  user %6.2f s  sys %6.2f s" % (role, tid, user, system))
    print("  server total %.2f CPU-seconds" % (total,))


def upload(g: Glance, runs: int, chunked: bool = False) -> None:
    path, _ = testFile(GiB)
    for i in range(runs):
        before, children = threadTimes(g.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        r = transfer.upload(g.url("/v1/images"), path, "POST", chunked,
                            dict(transfer.UPLOAD_HEADERS, **{"x-image-meta-name": "cpu-%d" % i}))
        wall = time.time() - start
        after, childrenAfter = threadTimes(g.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        report(g.pid, before, after, "upload 1 GiB%s: %.0f MiB/s, %.2f s wall; curl user %.2f s"
               " sys %.2f s" % (" chunked" if chunked else "", r["upload_mib_s"], wall,
                               childrenAfter.ru_utime - children.ru_utime,
                               childrenAfter.ru_stime - children.ru_stime))


def head(g: Glance, seconds: float) -> None:
    one = catalogue.fill(g.dbPath, 1000)[500]
    url = g.url("/v1/images/" + one)
    cload.throughput(url, "HEAD", 16, 1)
    before = threadTimes(g.pid)
    r = cload.throughput(url, "HEAD", 16, seconds)
    after = threadTimes(g.pid)
    report(g.pid, before, after, "HEAD at 16 connections: %.0f req/s, %d requests"
           % (r["rps"], r["requests"]))
    n = r["requests"] or 1
    reactor = after[g.pid][0] + after[g.pid][1] - sum(before.get(g.pid, (0.0, 0.0)))
    print("  reactor thread %.0f us per request" % (1e6 * reactor / n,))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.threadcpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=("upload", "head"))
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--chunked", action="store_true", help="upload: chunked, not Content-Length")
    p.add_argument("--option", action="append", default=[],
                   help="a glance option for the server, NAME=VALUE (repeatable)")
    args = p.parse_args()
    options = dict(o.split("=", 1) for o in args.option) or None
    g = Glance(options, label="threadcpu")
    try:
        if args.workload == "upload":
            upload(g, args.runs, args.chunked)
        else:
            head(g, args.seconds)
    finally:
        g.stop()


if __name__ == "__main__":
    main()
