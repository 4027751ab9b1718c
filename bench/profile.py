"""
Where the server's CPU goes: py-spy on the twistd process while one workload
runs.  py-spy is not a dependency; install it into a separate venv:

  python3 -m venv /tmp/pyspy-venv && /tmp/pyspy-venv/bin/pip install py-spy
  python -m bench.profile upload|download|head|list|list1|create [--py-spy PATH] [--out DIR]

Writes OUT/WORKLOAD.txt (collapsed stacks, py-spy's raw format; feed it to
any flame-graph tool) and prints the top functions by own time and by total
time.  py-spy's idle filter does not catch epoll_wait / Condition.wait here:
read doPoll and Condition.wait as idle time.
"""

import argparse
import collections
import os
import shutil
import subprocess
import time

from bench import catalogue, cload, load, transfer
from bench.common import GiB, benchDir, testFile
from bench.servers import Glance


def _workload(name: str, g: Glance, seconds: float):
    ids = catalogue.fill(g.dbPath, 1000, storeDir=os.path.join(g.dataDir, "images"))
    if name in ("upload", "download"):
        path, _ = testFile(GiB)
        headers = dict(transfer.UPLOAD_HEADERS, **{"x-image-meta-name": "profile"})
        if name == "upload":
            return lambda: transfer.upload(g.url("/v1/images"), path, "POST", False, headers)
        r = transfer.upload(g.url("/v1/images"), path, "POST", False, headers)
        iid = transfer.imageOf(r)["id"]
        return lambda: [transfer.download(g.url("/v1/images/" + iid)) for _ in range(3)]
    if name == "head":
        return lambda: cload.throughput(g.url("/v1/images/" + ids[7]), "HEAD", 16, seconds)
    if name in ("list", "list1"):
        # list1: one connection, so the profile is of one request's latency
        # (the target) rather than of contention between 16.
        conns = 1 if name == "list1" else 16
        return lambda: load.throughput(g.url("/v1/images/detail?limit=25"), "GET", conns,
                                       seconds)
    if name == "create":
        from bench.create import HEADERS
        return lambda: load.latency(g.port, "POST", "/v1/images", 3000, headers=HEADERS,
                                    expect=201)
    raise SystemExit("unknown workload %r" % (name,))


def summarise(raw: str, top: int = 25) -> str:
    own = collections.Counter()
    total = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        n = int(n)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = ["%d samples" % samples, "", "own time:"]
    for f, n in own.most_common(top):
        out.append("  %5.1f%%  %s" % (100.0 * n / samples, f))
    out += ["", "total time (inclusive):"]
    for f, n in total.most_common(top):
        out.append("  %5.1f%%  %s" % (100.0 * n / samples, f))
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workload")
    p.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy-venv/bin/py-spy")
    p.add_argument("--out", default=benchDir("profiles"))
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rate", type=int, default=250)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    g = Glance(label="profile")
    try:
        job = _workload(args.workload, g, args.seconds)
        raw = os.path.join(args.out, args.workload + ".txt")
        spy = subprocess.Popen([args.py_spy, "record", "--pid", str(g.pid), "--rate",
                                str(args.rate), "--format", "raw", "--output", raw,
                                "--nonblocking", "--threads"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        t0 = time.time()
        result = job()
        elapsed = time.time() - t0
        spy.send_signal(2)
        spy.wait(30)
        with open(raw) as f:
            text = f.read()
        print("workload %s: %.1fs, result %s" % (args.workload, elapsed,
                                                 {k: v for k, v in (result if isinstance(result, dict) else {}).items()
                                                  if k != "json"}))
        print(summarise(text))
        print("\nraw stacks: %s" % (raw,))
    finally:
        g.stop()


if __name__ == "__main__":
    main()
