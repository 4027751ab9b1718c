"""
Load generation: throughput at N connections (wrk, or a Python fallback
spread over one process per core), and latency of a sequential loop over
one keep-alive connection.

The fallback is run as: python -m bench.load URL METHOD CONNECTIONS SECONDS
and prints "requests errors" on one line.
"""

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
               seconds: float = 5.0, headers: Optional[Dict[str, str]] = None,
               tool: str = "auto", procs: Optional[int] = None) -> Dict:
    """
    Requests per second at C{connections} keep-alive connections, with wrk
    (tool "auto" when it is installed, or "wrk") or the Python generator
    ("python", or "auto" without wrk).  wrk cannot measure HEAD answers
    that carry no Content-Length (its parser then waits for a body until
    the connection closes), so HEAD goes through the Python generator.
    """
    wrk = shutil.which("wrk")
    if tool == "auto" and method == "HEAD":
        tool = "python"
    if wrk and tool in ("auto", "wrk"):
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
    return _pythonThroughput(url, method, connections, seconds, procs)


def _pythonThroughput(url: str, method: str, connections: int, seconds: float,
                      procs: Optional[int] = None) -> Dict:
    procs = max(1, min(procs or os.cpu_count() or 1, connections))
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


def _run(url, method, n, seconds):
    """
    C{n} keep-alive connections on one selector loop, each sending its next
    request as soon as the last answer is complete.  Answers are framed by
    Content-Length (none for HEAD) or chunked encoding.
    """
    import selectors
    import socket
    u = urlsplit(url)
    path = u.path + ("?" + u.query if u.query else "")
    req = ("%s %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (method, path, u.hostname, u.port)).encode()
    head = method == "HEAD"
    sel = selectors.DefaultSelector()
    ok = bad = 0
    bufs = {}
    for _ in range(n):
        s = socket.create_connection((u.hostname, u.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
        s.send(req)
    deadline = time.monotonic() + seconds
    clRe = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
    while time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            data = s.recv(262144)
            if not data:
                raise SystemExit("server closed a connection")
            buf = bufs[s] + data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                total = end + 4
                if not head:
                    m = clRe.search(buf, 0, end + 2)
                    if m:
                        total += int(m.group(1))
                    elif b"chunked" in buf[:end].lower():
                        z = buf.find(b"\r\n0\r\n\r\n", end)
                        if z < 0:
                            break
                        total = z + 7
                if len(buf) < total:
                    break
                status = int(buf[9:12])
                if 200 <= status < 400:
                    ok += 1
                else:
                    bad += 1
                buf = buf[total:]
                s.send(req)
            bufs[s] = buf
    return ok, bad


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
    ok, bad = _run(url, method, n, seconds)
    print(ok, bad)
