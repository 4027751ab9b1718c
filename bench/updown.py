"""
updown: upload (Content-Length and chunked) and download of one image over
loopback to the filesystem store, against nginx and twisted.web ceilings,
with the server's peak RSS for each size.

Per run and size: a fresh glancetx (fresh data dir), then pairs measured
A/B on even runs and B/A on odd ones:
  upload CL       nginx DAV PUT (written to disk)   vs glancetx POST
  upload chunked  nginx DAV PUT chunked             vs glancetx POST chunked
  upload sendfile the same CL pair, from a client that sends with sendfile
                  (almost no client CPU, as if the client were another machine)
  download        nginx sendfile                    vs glancetx GET (both files cached;
                  the median of 3 pairs, alternating within the run too)
  download cold   the same, neither file cached
plus, once per run, the other ceilings: nginx upload discarded, twisted.web
MD5-as-it-arrives, hashlib's MD5 alone over bytes in memory (no upload can
be verified faster), the disk alone (no upload can be made durable faster),
nginx download without sendfile, and the fsync that nginx does not do
(glancetx fsyncs before it answers; reported, not a target).
"""

import hashlib
import os
import time
from typing import Dict, List

from bench import transfer
from bench.common import (
    GiB, MiB, diskAlone, dropDirty, fsyncSeconds, log, median, procStatus, resetPeak,
    setCached, testFile, waitQuiet, withFsync,
)
from bench.servers import Glance, Nginx, Tiny


def _md5Alone(size: int) -> float:
    """
    MiB/s of hashlib's MD5 over C{size} bytes already in memory, on one
    core: no single upload can be verified faster, since MD5 is one serial
    chain (the v1 API's checksum).
    """
    block = os.urandom(MiB)
    h = hashlib.md5()
    t0 = time.perf_counter()
    for _ in range(size // MiB):
        h.update(block)
    return size / MiB / (time.perf_counter() - t0)


def _checkImage(r: Dict, size: int, md5: str, errors: List[str], what: str) -> None:
    img = transfer.imageOf(r)
    if r["status"] != 201 or img.get("status") != "active" or img.get("checksum") != md5 \
            or img.get("size") != size:
        errors.append("%s: HTTP %s status=%s checksum=%s size=%s %s" % (
            what, r["status"], img.get("status"), img.get("checksum"), img.get("size"),
            r.get("text") or r.get("curl_error") or ""))


#: Cached download pairs per run (they are short, so noisy).
DOWN_REPEATS = 3


def oneRun(i: int, size: int, nginx: Nginx, md5sink: Tiny, extras: bool = True) -> Dict:
    path, md5 = testFile(size)
    name = os.path.basename(path)
    flip = i % 2 == 1
    s: Dict = {"size": size, "run": i, "order": "B/A" if flip else "A/B", "errors": []}
    errors = s["errors"]
    headers = dict(transfer.UPLOAD_HEADERS, **{"x-image-meta-name": "bench-%d" % i})
    dropDirty()
    g = Glance(label="updown")
    try:
        s["glance_startup_hwm"] = g.startupPeak
        s["glance_startup_rss"] = procStatus(g.pid, "VmRSS")
        resetPeak(g.pid)
        phasePeaks = {}
        images = {}

        def nginxUp(chunked, sendfile=False):
            if sendfile:
                r = transfer.sendfileUpload(nginx.url("/dav/up"), path, "PUT")
            else:
                r = transfer.upload(nginx.url("/dav/up"), path, "PUT", chunked)
            if r["status"] not in (201, 204):
                errors.append("nginx dav PUT: HTTP %s" % r["status"])
            if os.path.exists(nginx.davPath("up")):
                s.setdefault("nginx_fsync_s", []).append(fsyncSeconds(nginx.davPath("up")))
            nginx.cleanDav()
            dropDirty()
            return r["upload_mib_s"]

        def glanceUp(chunked, sendfile=False):
            if sendfile:
                r = transfer.sendfileUpload(g.url("/v1/images"), path, "POST", headers)
                _checkImage(r, size, md5, errors, "glance upload, sendfile client")
            else:
                r = transfer.upload(g.url("/v1/images"), path, "POST", chunked, headers)
                _checkImage(r, size, md5, errors, "glance upload chunked=%s" % chunked)
                images[chunked] = transfer.imageOf(r).get("id")
            dropDirty()
            waitQuiet(g.pid)
            return r["upload_mib_s"]

        def cached(yes):
            dropDirty()
            setCached(path, yes)
            setCached(os.path.join(g.dataDir, "images", images.get(False) or ""), yes)

        def nginxDown():
            r = transfer.download(nginx.url("/files/" + name))
            if r["status"] != 200 or r["size_download"] != size:
                errors.append("nginx download: HTTP %s, %s bytes" % (r["status"], r["size_download"]))
            return r["download_mib_s"]

        def glanceDown():
            r = transfer.download(g.url("/v1/images/%s" % images.get(False)))
            if r["status"] != 200 or r["size_download"] != size:
                errors.append("glance download: HTTP %s, %s bytes" % (r["status"], r["size_download"]))
            return r["download_mib_s"]

        def pair(key, a, b):
            if flip:
                s[key + "_glance"] = b()
                s[key + "_nginx"] = a()
            else:
                s[key + "_nginx"] = a()
                s[key + "_glance"] = b()

        # uploads: the peak RSS of the upload phase
        pair("up_cl", lambda: nginxUp(False), lambda: glanceUp(False))
        pair("up_chunked", lambda: nginxUp(True), lambda: glanceUp(True))
        if extras:
            pair("up_sendfile", lambda: nginxUp(False, True), lambda: glanceUp(False, True))
            s["disk_alone"] = diskAlone(size)
        phasePeaks["upload"] = procStatus(g.pid, "VmHWM")
        resetPeak(g.pid)
        # Warm: both files wholly in the page cache, so the pair compares
        # the two servers' sending paths.  Cold: neither is, as for the first
        # download of an image glancetx has just written (it writes around
        # the page cache).
        # A cached 1 GiB download takes half a second, and one such
        # transfer swung by up to 1.9x between runs on the tenth machine:
        # each run takes the median of DOWN_REPEATS alternating pairs.
        cached(True)
        for k in range(DOWN_REPEATS):
            pair("down_%d" % k, nginxDown, glanceDown)
            flip = not flip
        flip = i % 2 == 1
        for side in ("nginx", "glance"):
            s["down_%s_all" % side] = [s.pop("down_%d_%s" % (k, side)) for k in range(DOWN_REPEATS)]
            s["down_" + side] = median(s["down_%s_all" % side])
        cached(False)
        pair("down_cold", nginxDown, glanceDown)
        phasePeaks["download"] = procStatus(g.pid, "VmHWM")
        s["glance_phase_hwm"] = phasePeaks
        s["glance_datapath_hwm"] = max(v for v in phasePeaks.values() if v)
        s["glance_hwm"] = max(s["glance_datapath_hwm"], g.startupPeak or 0)
        s["glance_rss_end"] = procStatus(g.pid, "VmRSS")
    finally:
        g.stop()
    if extras:
        s["md5_alone"] = _md5Alone(size)
        r = transfer.upload(nginx.url("/sink"), path, "POST")
        s["sink_nginx"] = r["upload_mib_s"] if r["size_upload"] >= size else None
        r = transfer.upload(md5sink.url("/md5"), path, "POST")
        s["md5_twisted"] = r["upload_mib_s"]
        if (r.get("json") or {}).get("checksum") != md5:
            errors.append("twisted md5 sink: wrong checksum %s" % (r.get("json"),))
        r = transfer.download(nginx.urlNoSendfile("/files/" + name))
        s["down_nginx_nosendfile"] = r["download_mib_s"]
    s["nginx_fsync_s"] = median(s.get("nginx_fsync_s", []))
    if errors:
        log("updown run %d size %d: %s" % (i, size, "; ".join(errors)))
    return s


def run(results, runs: int, sizes=(64 * MiB, GiB), extras: bool = True) -> Dict:
    for size in sizes:
        testFile(size)
    nginx = Nginx(os.path.dirname(testFile(sizes[0])[0]))
    md5sink = Tiny("md5")
    samples: List[Dict] = []
    try:
        for i in range(runs):
            for size in sizes:
                log("updown run %d/%d, %d MiB" % (i + 1, runs, size // MiB))
                samples.append(oneRun(i, size, nginx, md5sink, extras))
    finally:
        nginx.stop()
        md5sink.stop()
    summary = report(results, samples, sizes)
    results.setRaw("updown", {"samples": samples, "summary": summary})
    return summary


def _med(samples, size, key):
    return median([s.get(key) for s in samples if s["size"] == size])


def report(results, samples, sizes) -> Dict:
    out = {}
    big = max(sizes)
    for size in sizes:
        label = "%s" % ("%d GiB" % (size // GiB) if size >= GiB else "%d MiB" % (size // MiB))
        isBig = size == big and size >= GiB
        up = _med(samples, size, "up_cl_glance")
        upN = _med(samples, size, "up_cl_nginx")
        r = results.add("updown", "upload %s Content-Length" % label, up, "MiB/s", upN,
                        "nginx written", ">= 0.80" if isBig else "",
                        (up / upN >= 0.80) if isBig and up and upN else None)
        out["upload_ratio_%d" % size] = r["ratio"]
        upc = _med(samples, size, "up_chunked_glance")
        upcN = _med(samples, size, "up_chunked_nginx")
        results.add("updown", "upload %s chunked" % label, upc, "MiB/s", upcN, "nginx written chunked")
        upS = _med(samples, size, "up_sendfile_glance")
        upSN = _med(samples, size, "up_sendfile_nginx")
        if upS:
            results.add("updown", "upload %s CL, sendfile client" % label, upS, "MiB/s", upSN,
                        "nginx written, sendfile client")
        for key, name in (("sink_nginx", "nginx discarded"), ("md5_twisted", "twisted.web md5"),
                          ("md5_alone", "MD5 alone, one core"),
                          ("disk_alone", "disk alone, direct+fsync")):
            c = _med(samples, size, key)
            if c:
                results.add("updown", "upload %s CL vs %s" % (label, name), up, "MiB/s", c, name)
        fs = _med(samples, size, "nginx_fsync_s")
        if fs is not None and upN:
            # nginx's time plus the fsync glancetx does and nginx does not
            withSync = withFsync(upN, size, fs)
            results.add("updown", "upload %s CL vs nginx + fsync" % label, up, "MiB/s", withSync,
                        "nginx written+fsync", note="fsync %.2fs" % fs)
        down = _med(samples, size, "down_glance")
        downN = _med(samples, size, "down_nginx")
        r = results.add("updown", "download %s" % label, down, "MiB/s", downN, "nginx sendfile",
                        ">= 0.90" if isBig else "", (down / downN >= 0.90) if isBig and down and downN else None)
        out["download_ratio_%d" % size] = r["ratio"]
        downC = _med(samples, size, "down_cold_glance")
        downCN = _med(samples, size, "down_cold_nginx")
        results.add("updown", "download %s, not cached" % label, downC, "MiB/s", downCN,
                    "nginx sendfile, not cached")
        c = _med(samples, size, "down_nginx_nosendfile")
        if c:
            results.add("updown", "download %s vs nginx no sendfile" % label, down, "MiB/s", c,
                        "nginx no-sendfile")
        hwm = _med(samples, size, "glance_hwm")
        out["hwm_%d" % size] = hwm
        dp = _med(samples, size, "glance_datapath_hwm")
        st = _med(samples, size, "glance_startup_hwm")
        results.add("updown", "peak RSS %s up+down (VmHWM, MiB)" % label, hwm / MiB if hwm else None,
                    "MiB", target="<= 64 MiB" if isBig else "",
                    ok=(hwm <= 64 * MiB) if isBig and hwm else None,
                    note="startup %.1f, data path %.1f" % ((st or 0) / MiB, (dp or 0) / MiB))
        out["datapath_hwm_%d" % size] = dp
        errs = [e for s in samples if s["size"] == size for e in s["errors"]]
        if errs:
            results.add("updown", "errors %s" % label, len(errs), "", ok=False, note=errs[0][:120])
    if len(sizes) > 1:
        small, big = min(sizes), max(sizes)
        a, b = out.get("hwm_%d" % big), out.get("hwm_%d" % small)
        if a and b:
            results.add("updown", "peak RSS growth %d MiB -> %d MiB" % (small // MiB, big // MiB),
                        (a - b) / MiB, "MiB", target="<= 8 MiB", ok=(a - b) <= 8 * MiB,
                        note="data path only: %+.1f MiB" % (
                            ((out["datapath_hwm_%d" % big] or 0) - (out["datapath_hwm_%d" % small] or 0)) / MiB))
    return out
