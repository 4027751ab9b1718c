"""
Load generation: throughput at N connections (wrk, or a Python fallback
spread over one process per core), and latency of a sequential loop over
one keep-alive connection.

The fallback is run as: python -m bench.load URL METHOD CONNECTIONS SECONDS
and prints "requests errors" on one line.
"""

import asyncio
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional
from urllib.parse import urlsplit

from bench.common import VENV_BIN, REPO, median, percentile

_WRK_UNITS = {"k": 1e3, "M": 1e6, "": 1.0}


def _parseWrk(out: str) -> Dict:
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    rps = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in m.groups()) if m else 0
    lat = {}
    for p in ("50", "90", "99"):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % p, out)
        if m:
            v = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            lat["p" + p + "_ms"] = v
    return dict(rps=rps, requests=total, non2xx=non2xx, errors=errors, **lat)


def throughput(url: str, method: str = "GET", connections: int = 16,
               seconds: float = 5.0, headers: Optional[Dict[str, str]] = None) -> Dict:
    """
    Requests per second at C{connections} keep-alive connections.
    """
    wrk = shutil.which("wrk")
    if wrk:
        script = None
        args = [wrk, "-t1", "-c%d" % connections, "-d%ds" % max(1, int(round(seconds))),
                "--latency"]
        if method != "GET":
            fd, script = tempfile.mkstemp(suffix=".lua")
            with os.fdopen(fd, "w") as f:
                f.write('wrk.method = "%s"\n' % (method,))
            args += ["-s", script]
        for k, v in (headers or {}).items():
            args += ["-H", "%s: %s" % (k, v)]
        try:
            out = subprocess.run(args + [url], capture_output=True, text=True,
                                 timeout=seconds + 30).stdout
        finally:
            if script:
                os.unlink(script)
        r = _parseWrk(out)
        r["tool"] = "wrk -t1 -c%d" % connections
        return r
    return _pythonThroughput(url, method, connections, seconds)


def _pythonThroughput(url: str, method: str, connections: int, seconds: float) -> Dict:
    procs = max(1, min(os.cpu_count() or 1, connections))
    per = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    children = [subprocess.Popen(
        [os.path.join(VENV_BIN, "python"), "-m", "bench.load", url, method, str(n), str(seconds)],
        cwd=REPO, stdout=subprocess.PIPE, text=True) for n in per]
    total = errors = 0
    for c in children:
        out, _ = c.communicate(timeout=seconds + 30)
        a, b = out.split()
        total += int(a)
        errors += int(b)
    return dict(rps=total / seconds, requests=total, non2xx=errors, errors=0,
                tool="python fallback, %d procs, %d conns" % (procs, connections))


async def _worker(host, port, path, method, deadline, counts):
    reader, writer = await asyncio.open_connection(host, port)
    req = ("%s %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (method, path, host, port)).encode()
    while time.monotonic() < deadline:
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if method != "HEAD" and m:
            await reader.readexactly(int(m.group(1)))
        counts[0 if 200 <= status < 400 else 1] += 1
    writer.close()


async def _run(url, method, n, seconds):
    u = urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    counts = [0, 0]
    deadline = time.monotonic() + seconds
    await asyncio.gather(*[_worker(u.hostname, u.port, path, method, deadline, counts)
                           for _ in range(n)])
    return counts


def latency(port: int, method: str, path: str, n: int,
            headers: Optional[Dict[str, str]] = None, body: Optional[bytes] = None,
            expect: int = 200, warmup: int = 20) -> Dict:
    """
    A sequential loop of C{n} requests over one keep-alive connection:
    median and p95 in ms.
    """
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times: List[float] = []
    bad = 0
    for i in range(warmup + n):
        t0 = time.perf_counter()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        dt = (time.perf_counter() - t0) * 1000.0
        if r.status != expect:
            bad += 1
        if r.getheader("connection", "").lower() == "close":
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        if i >= warmup:
            times.append(dt)
    c.close()
    return dict(median_ms=median(times), p95_ms=percentile(times, 95), n=n, bad=bad)


if __name__ == "__main__":
    url, method, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    ok, bad = asyncio.run(_run(url, method, n, seconds))
    print(ok, bad)
