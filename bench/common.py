"""
Shared helpers: the bench directory, test files, statistics, peak memory,
result rows and their printing.
"""

import hashlib
import os
import shutil
import socket
import statistics
import sys
import time
from typing import Dict, List, Optional, Tuple

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.environ.get("BENCH_DIR", "/tmp/glancetx-bench")
VENV_BIN = os.path.join(REPO, ".venv", "bin")


def benchDir(*parts: str) -> str:
    path = os.path.join(BENCH_DIR, *parts)
    os.makedirs(path, exist_ok=True)
    return path


def freePort() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def waitForPort(port: int, timeout: float = 30.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s before listening on %d"
                               % (proc.returncode, port))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on port %d after %ss" % (port, timeout))


def testFile(size: int) -> (str, str):
    """
    A file of C{size} random bytes in the bench dir (made once, reused), and
    its MD5 hex.  The MD5 is cached beside it.
    """
    d = benchDir("files")
    path = os.path.join(d, "random-%d" % (size,))
    sumPath = path + ".md5"
    if os.path.exists(path) and os.path.getsize(path) == size and os.path.exists(sumPath):
        with open(sumPath) as f:
            return path, f.read().strip()
    h = hashlib.md5()
    block = 8 * MiB
    with open(path + ".tmp", "wb") as f:
        left = size
        while left:
            data = os.urandom(min(block, left))
            h.update(data)
            f.write(data)
            left -= len(data)
    os.rename(path + ".tmp", path)
    with open(sumPath, "w") as f:
        f.write(h.hexdigest())
    return path, h.hexdigest()


def cleanBigFiles() -> None:
    shutil.rmtree(os.path.join(BENCH_DIR, "files"), ignore_errors=True)


def fsyncSeconds(path: str) -> float:
    """
    Seconds an fsync of C{path} takes: what a server that answers before
    its bytes are durable (nginx, Glance) leaves for later.
    """
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def withFsync(rate: float, size: int, fsync: float) -> float:
    """
    The MiB/s of a server that moved C{size} bytes at C{rate} MiB/s, had it
    also waited C{fsync} seconds for them to be durable, as glancetx does.
    """
    return size / MiB / (size / MiB / rate + fsync)


def writeDirect(path: str, size: int) -> None:
    """
    Write C{size} bytes of random data to a new file at C{path} the way
    glancetx's filesystem store writes an image: 1 MiB direct writes from
    an aligned buffer on a huge page, then fsync.
    """
    from glancetx.store.appendfile import hugePageRegion
    buf = hugePageRegion(MiB)[:MiB]
    buf[:] = os.urandom(MiB)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_DIRECT", 0)
    fd = os.open(path, flags, 0o600)
    try:
        for _ in range(size // MiB):
            os.write(fd, buf)
        os.fsync(fd)
    finally:
        os.close(fd)


def diskAlone(size: int) -> float:
    """
    MiB/s of L{writeDirect} to a new file in the bench dir, from memory,
    with nothing else to do: no durable upload can be faster.  On a virtual
    disk this swings by run, so it is measured beside the uploads it
    explains.
    """
    path = os.path.join(benchDir("data"), "disk-alone")
    t0 = time.perf_counter()
    try:
        writeDirect(path, size)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return size / MiB / (time.perf_counter() - t0)


def median(xs: List[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(xs: List[float], p: float) -> Optional[float]:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def procStatus(pid: int, field: str) -> Optional[int]:
    """
    A memory field (VmHWM, VmRSS) of a process, in bytes.
    """
    try:
        with open("/proc/%d/status" % (pid,)) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * KiB
    except OSError:
        return None
    return None


def _busyCounters(pid: int) -> Optional[Tuple[int, int]]:
    """
    The CPU ticks a process has used and the bytes it has read, so far.
    """
    try:
        with open("/proc/%d/stat" % (pid,)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/%d/io" % (pid,)) as f:
            rchar = next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return None
    return int(fields[11]) + int(fields[12]), rchar


def waitQuiet(pid: int, quiet: float = 0.3, timeout: float = 30.0) -> float:
    """
    Wait until the process has neither read nor used more than a tick of
    CPU for C{quiet} seconds, so that what a server does after it answers
    does not run beside the next measurement: with
    C{filesystem_store_warm_cache} on, glancetx reads each new image into
    the page cache after its upload.  Returns the seconds waited.
    """
    start = time.monotonic()
    last = _busyCounters(pid)
    stillSince = start
    while last is not None and time.monotonic() - start < timeout:
        time.sleep(0.05)
        now = _busyCounters(pid)
        if now is None:
            break
        if now[1] != last[1] or now[0] - last[0] > 1:
            last, stillSince = now, time.monotonic()
        elif time.monotonic() - stillSince >= quiet:
            break
    return time.monotonic() - start


def cpuTicks() -> Optional[List[int]]:
    """
    The machine's CPU time so far, by kind, from the first line of
    /proc/stat (user, nice, system, idle, iowait, irq, softirq, steal...).
    """
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def stealShare(before: Optional[List[int]], after: Optional[List[int]]) -> Optional[float]:
    """
    The share of the machine's CPU time that the host took back (steal)
    between two L{cpuTicks}: on these virtual machines, the likeliest cause
    of a slow spell in which every server, ceilings too, runs slower.
    """
    if not before or not after:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta)
    return delta[7] / total if total > 0 else None


def resetPeak(pid: int) -> bool:
    """
    Reset VmHWM to the current RSS (Linux: write 5 to clear_refs).
    """
    try:
        with open("/proc/%d/clear_refs" % (pid,), "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def dropDirty() -> None:
    """
    Flush dirty pages so that one measurement does not pay for the last
    one's writeback.
    """
    os.sync()


def setCached(path: str, cached: bool) -> None:
    """
    Put a whole file in the page cache, or take it out (it must be clean:
    call L{dropDirty} first), so that both sides of a download pair start
    from the same place.  Needs no privileges, unlike drop_caches.  A path
    that is not a file (an upload that failed) is left alone; the failure
    is reported where it happened.
    """
    if not os.path.isfile(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if cached:
            while os.read(fd, 8 * MiB):
                pass
        else:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def alternating(items, run: int):
    """
    The items in order on even runs and reversed on odd ones, so that no side
    of an A/B comparison always goes first.
    """
    items = list(items)
    return items if run % 2 == 0 else items[::-1]


def runJobs(name: str, jobs, runs: int) -> List[Dict]:
    """
    Every C{(key, job)} once per run, in L{alternating} order: a sample per
    run, mapping each key to what its job returned.
    """
    samples = []
    for i in range(runs):
        log("%s run %d/%d" % (name, i + 1, runs))
        sample = {"run": i}
        for key, job in alternating(jobs, i):
            sample[key] = job()
        samples.append(sample)
    return samples


def log(msg: str) -> None:
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class Results:
    """
    Rows of figures (each with its ceiling and target) plus raw samples, for
    printing and for --json.
    """

    def __init__(self) -> None:
        self.rows: List[Dict] = []
        self.raw: Dict[str, Dict] = {}

    def add(self, bench: str, name: str, value, unit: str, ceiling=None,
            ceilingName: str = "", target: str = "", ok: Optional[bool] = None,
            ratio: Optional[float] = None, note: str = "") -> Dict:
        if ratio is None and ceiling and value is not None:
            ratio = value / ceiling
        row = dict(bench=bench, name=name, value=value, unit=unit,
                   ceiling=ceiling, ceiling_name=ceilingName, ratio=ratio,
                   target=target, ok=ok, note=note)
        self.rows.append(row)
        printRow(row)
        return row

    def setRaw(self, bench: str, data: Dict) -> None:
        self.raw[bench] = data


def fmt(v, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "MiB/s":
        return "%.0f MiB/s" % (v,)
    if unit == "MiB":
        return "%.1f MiB" % (v,)
    if unit == "req/s":
        return "%.0f req/s" % (v,)
    if unit == "ms":
        return "%.2f ms" % (v,)
    if unit == "x":
        return "%.2fx" % (v,)
    if isinstance(v, float):
        return "%.3g %s" % (v, unit)
    return "%s %s" % (v, unit)


def printRow(row: Dict) -> None:
    verdict = "" if row["ok"] is None else ("PASS" if row["ok"] else "MISS")
    ratio = "" if row["ratio"] is None else "%.2f" % (row["ratio"],)
    ceiling = ""
    if row["ceiling"] is not None:
        ceiling = "%s %s" % (row["ceiling_name"], fmt(row["ceiling"], row["unit"]))
    line = "%-9s %-44s %14s | %-40s | %5s | %-16s %s" % (
        row["bench"], row["name"], fmt(row["value"], row["unit"]), ceiling,
        ratio, row["target"], verdict)
    if row["note"]:
        line += "  (" + row["note"] + ")"
    print(line.rstrip())
    sys.stdout.flush()


def header() -> None:
    print("%-9s %-44s %14s | %-40s | %5s | %-16s %s" % (
        "bench", "figure (median)", "value", "ceiling (same run, median)", "ratio",
        "target", "verdict"))
    print("-" * 150)
