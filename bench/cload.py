"""
Throughput with httpload (bench/httpload.c), a small C load generator.

It exists because wrk and h2load frame a HEAD answer by its Content-Length
and then wait for a body that HEAD never sends, so they stall on any server
that (correctly) announces the GET body's length on HEAD, as twisted.web
does; and the Python generator in bench.load saturates a core of its own
before the server does on a 2-core machine.  httpload frames answers as
RFC 9112 says and leaves a core to the server.
"""

import json
import os
import shutil
import subprocess
import tempfile
from typing import Dict, Optional

from bench.common import REPO

SOURCE = os.path.join(REPO, "bench", "httpload.c")
# .bench/ is ignored by git.
CACHE_DIR = os.path.join(REPO, ".bench")
BINARY = os.path.join(CACHE_DIR, "httpload")


def binary() -> str:
    """
    The path of an httpload built from the current source.  Built on demand
    (and again whenever the source is newer) so that a checkout needs no
    separate build step; written under a temporary name and renamed, so that
    concurrent benchmarks never run a half-written file.
    """
    try:
        if os.path.getmtime(BINARY) >= os.path.getmtime(SOURCE):
            return BINARY
    except OSError:
        pass
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError(
            "httpload needs a C compiler to build %s, and neither gcc nor cc "
            "is on PATH (apt-get install gcc)" % (SOURCE,))
    os.makedirs(CACHE_DIR, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".httpload-", dir=CACHE_DIR)
    os.close(fd)
    try:
        r = subprocess.run([gcc, "-O2", "-o", tmp, SOURCE],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("building httpload with %s failed:\n%s"
                               % (gcc, r.stderr.strip()))
        os.chmod(tmp, 0o755)
        os.replace(tmp, BINARY)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return BINARY


def throughput(url: str, method: str = "GET", connections: int = 16,
               seconds: float = 5.0,
               headers: Optional[Dict[str, str]] = None) -> Dict:
    """
    Requests per second at C{connections} keep-alive connections, with
    latency percentiles, in the same shape as bench.load.throughput so the
    two can stand in for each other; unlike wrk, HEAD is measured too.
    """
    args = [binary(), "-c", str(connections), "-d", repr(float(seconds)),
            "-m", method]
    for k, v in (headers or {}).items():
        args += ["-H", "%s: %s" % (k, v)]
    args.append(url)
    r = subprocess.run(args, capture_output=True, text=True,
                       timeout=seconds + 30)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise RuntimeError("httpload exited with %d: %s"
                           % (r.returncode, r.stderr.strip()))
    result = json.loads(lines[-1])
    result["tool"] = "httpload -c%d" % (connections,)
    return result
