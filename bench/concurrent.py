"""
concurrent: 32 simultaneous 64 MiB uploads (one curl each) to a fresh
glancetx; every image must end active with the right checksum (checked in
the answers and again with HEAD), and the server's peak RSS must stay under
128 MiB.  Aggregate throughput is set against nginx DAV PUT with the same
32 simultaneous uploads, alternating which goes first.
"""

import http.client
import os
import time
from typing import Dict, List

from bench import transfer
from bench.common import (
    alternating, MiB, dropDirty, log, median, procStatus, resetPeak, testFile, waitQuiet,
)
from bench.servers import Glance, Nginx


def _burst(starts) -> (float, List[Dict]):
    t0 = time.perf_counter()
    handles = [s() for s in starts]
    res = [transfer.finishUpload(h) for h in handles]
    return time.perf_counter() - t0, res


def _verifyHead(port: int, ids: List[str], md5: str) -> List[str]:
    bad = []
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for iid in ids:
        if not iid:
            bad.append("no id")
            continue
        c.request("HEAD", "/v1/images/" + iid)
        r = c.getresponse()
        r.read()
        if r.status != 200 or r.getheader("x-image-meta-status") != "active" \
                or r.getheader("x-image-meta-checksum") != md5:
            bad.append("%s: HEAD %s status=%s checksum=%s" % (
                iid, r.status, r.getheader("x-image-meta-status"),
                r.getheader("x-image-meta-checksum")))
    c.close()
    return bad


def oneRun(i: int, count: int, size: int, nginx: Nginx) -> Dict:
    path, md5 = testFile(size)
    total = count * size / MiB
    s: Dict = {"run": i, "count": count, "size": size, "errors": []}
    dropDirty()
    g = Glance(label="concurrent")
    try:
        s["glance_startup_hwm"] = g.startupPeak
        resetPeak(g.pid)

        def glanceBurst():
            starts = [lambda k=k: transfer.startUpload(
                g.url("/v1/images"), path, "POST", False,
                dict(transfer.UPLOAD_HEADERS, **{"x-image-meta-name": "conc-%d" % k}))
                for k in range(count)]
            secs, res = _burst(starts)
            s["glance_datapath_hwm"] = procStatus(g.pid, "VmHWM")
            s["glance_mib_s"] = total / secs
            ids = []
            for r in res:
                img = transfer.imageOf(r)
                ids.append(img.get("id"))
                if r["status"] != 201 or img.get("status") != "active" or img.get("checksum") != md5:
                    s["errors"].append("POST: HTTP %s status=%s checksum=%s %s" % (
                        r["status"], img.get("status"), img.get("checksum"),
                        r.get("text") or r.get("curl_error") or ""))
            s["errors"].extend(_verifyHead(g.port, ids, md5))
            s["active_ok"] = count - len(s["errors"])
            dropDirty()
            waitQuiet(g.pid)

        def nginxBurst():
            starts = [lambda k=k: transfer.startUpload(nginx.url("/dav/c%d" % k), path, "PUT")
                      for k in range(count)]
            secs, res = _burst(starts)
            s["nginx_mib_s"] = total / secs
            if any(r["status"] not in (201, 204) for r in res):
                s["errors"].append("nginx PUT failed")
            nginx.cleanDav()
            dropDirty()

        for job in alternating((nginxBurst, glanceBurst), i):
            job()
        s["glance_hwm"] = max(s["glance_datapath_hwm"] or 0, g.startupPeak or 0)
    finally:
        g.stop()
    if s["errors"]:
        log("concurrent run %d: %d errors, first: %s" % (i, len(s["errors"]), s["errors"][0]))
    return s


def run(results, runs: int, count: int = 32, size: int = 64 * MiB) -> Dict:
    path, _ = testFile(size)
    nginx = Nginx(os.path.dirname(path))
    samples: List[Dict] = []
    try:
        for i in range(runs):
            log("concurrent run %d/%d: %d x %d MiB" % (i + 1, runs, count, size // MiB))
            samples.append(oneRun(i, count, size, nginx))
    finally:
        nginx.stop()
    agg = median([s["glance_mib_s"] for s in samples])
    aggN = median([s["nginx_mib_s"] for s in samples])
    hwm = median([s["glance_hwm"] for s in samples])
    dp = median([s["glance_datapath_hwm"] for s in samples])
    errs = sum(len(s["errors"]) for s in samples)
    label = "%d x %d MiB" % (count, size // MiB)
    results.add("concurrent", "%s uploads, aggregate" % label, agg, "MiB/s", aggN,
                "nginx written, same burst")
    results.add("concurrent", "%s all active, right checksums" % label,
                sum(s.get("active_ok", 0) for s in samples), "images",
                target="%d of %d" % (count * runs, count * runs), ok=errs == 0,
                note=(samples[0]["errors"] or [""])[0][:100] if errs else "")
    results.add("concurrent", "%s peak RSS (VmHWM, MiB)" % label, hwm / MiB if hwm else None,
                "MiB", target="<= 128 MiB", ok=(hwm <= 128 * MiB) if hwm else None,
                note="data path %.1f" % ((dp or 0) / MiB))
    out = {"concurrent_ok": errs == 0, "concurrent_hwm": hwm, "concurrent_ratio": agg / aggN if aggN else None}
    results.setRaw("concurrent", {"samples": samples, "summary": out})
    return out
