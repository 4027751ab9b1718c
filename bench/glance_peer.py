"""
peer: glancetx side by side with the real OpenStack Glance 33 (v2 API,
uWSGI, 2 workers, filesystem store, SQLite, no keystone), started with
bench/glance-standalone.sh.  Not in the default set: the first run
pip-installs glance and builds uWSGI (several minutes) into
$BENCH_DIR/glance-peer/glance-venv, which later runs reuse.

Per run, both servers fresh (fresh data dirs), each pair measured
glancetx first on even runs and Glance first on odd ones:
  upload 1 GiB    glancetx POST /v1/images (headers + body)
                  vs Glance POST /v2/images (JSON) + PUT /v2/images/{id}/file
  download 1 GiB  GET /v1/images/{id} vs GET /v2/images/{id}/file
  metadata        HEAD /v1/images/{id} (httpload, as in meta)
                  vs GET /v2/images/{id} (wrk; Glance closes every connection)
                  at 16 connections
  peak RSS        twistd's VmHWM vs the sum of the uWSGI workers' VmHWM,
                  at the end of the run (startup included for both)
plus, for the upload, what Glance leaves undone (the time an fsync of its
image file takes right after it answered: glancetx answers only once the
image is durable) and the disk alone (bench.common.diskAlone), both from
the same run.
Figures are glancetx's, the "ceiling" column is Glance's, ratio is
glancetx/Glance.  Target: upload >= 2x Glance.
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time
from typing import Dict, List, Optional

from bench import cload, load, transfer
from bench.common import (GiB, MiB, benchDir, diskAlone, dropDirty, freePort, fsyncSeconds,
                          log, median, procStatus, setCached, testFile, waitQuiet,
                          withFsync)
from bench.servers import Glance

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "glance-standalone.sh")
SIZE = GiB
CONNECTIONS = 16
SECONDS = 5.0
WORKERS = 2


class GlancePeer:
    """
    The real Glance under uWSGI, started by glance-standalone.sh on a free
    port with a fresh data dir.  The uWSGI master is not our child (the
    script backgrounds it with nohup); it is stopped by its pid.
    """

    def __init__(self) -> None:
        self.base = benchDir("glance-peer")
        self.port = freePort()
        self.logs = os.path.join(self.base, "logs")
        shutil.rmtree(os.path.join(self.base, "glance-data"), ignore_errors=True)
        pidFile = os.path.join(self.logs, "glance-uwsgi.pid")
        if os.path.exists(pidFile):
            os.unlink(pidFile)
        installed = os.access(os.path.join(self.base, "glance-venv", "bin", "uwsgi"), os.X_OK)
        if not installed:
            log("installing glance==33.0.0 + uWSGI into %s (several minutes)" % self.base)
        t0 = time.monotonic()
        p = subprocess.run(["bash", SCRIPT, self.base, str(self.port), str(WORKERS)],
                           capture_output=True, text=True, timeout=3600)
        self.startSeconds = time.monotonic() - t0
        self.pid = None
        m = re.search(r"uwsgi master pid: (\d+)", p.stdout)
        if m:
            self.pid = int(m.group(1))
        elif os.path.exists(pidFile):
            with open(pidFile) as f:
                self.pid = int(f.read().strip() or 0) or None
        if p.returncode or not self.pid or "-> HTTP 200" not in p.stdout:
            tail = self._tail("uwsgi.log") + self._tail("glance-api.log") + self._tail("db_sync.log")
            self.stop()
            raise RuntimeError("glance-standalone.sh failed (rc %s): %s %s\n%s" % (
                p.returncode, p.stdout.strip()[-500:], p.stderr.strip()[-1500:], tail))
        # lazy-apps: each worker loads the application itself; touch both
        for _ in range(4 * WORKERS):
            self.request("GET", "/v2/images")

    def _tail(self, name: str, n: int = 1500) -> str:
        try:
            with open(os.path.join(self.logs, name), errors="replace") as f:
                return "--- %s\n%s\n" % (name, f.read()[-n:])
        except OSError:
            return ""

    def url(self, path: str = "") -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def request(self, method: str, path: str, body: Optional[Dict] = None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
        finally:
            c.close()
        try:
            return r.status, json.loads(raw) if raw else {}
        except ValueError:
            return r.status, {"text": raw[:300].decode("latin-1")}

    def workers(self) -> List[int]:
        """
        The pids of the uWSGI master's children (its workers).
        """
        out = []
        try:
            for tid in os.listdir("/proc/%d/task" % self.pid):
                with open("/proc/%d/task/%s/children" % (self.pid, tid)) as f:
                    out += [int(x) for x in f.read().split()]
        except OSError:
            pass
        if not out:  # no /proc/*/task/*/children: scan for our children
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open("/proc/%s/stat" % d) as f:
                            if int(f.read().rsplit(")", 1)[1].split()[1]) == self.pid:
                                out.append(int(d))
                    except (OSError, IndexError, ValueError):
                        pass
        return sorted(set(out))

    def memory(self) -> Dict:
        hwm = {w: procStatus(w, "VmHWM") for w in self.workers()}
        return dict(workers_hwm=sum(v for v in hwm.values() if v),
                    worker_hwm_max=max((v for v in hwm.values() if v), default=None),
                    workers=len(hwm), master_hwm=procStatus(self.pid, "VmHWM"))

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.1)
            if _alive(self.pid):
                log("uWSGI master %d ignored SIGTERM: SIGKILL" % self.pid)
                for w in self.workers():
                    try:
                        os.kill(w, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.pid = None
        shutil.rmtree(os.path.join(self.base, "glance-data"), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        return False
    return False


def oneRun(i: int, path: str, md5: str) -> Dict:
    flip = i % 2 == 1
    s: Dict = {"run": i, "order": "Glance first" if flip else "glancetx first", "errors": []}
    errors = s["errors"]
    dropDirty()
    g = Glance(label="peer")
    peer = None
    try:
        peer = GlancePeer()
        s["glance_peer_start_s"] = peer.startSeconds
        ids = {}

        def txUp():
            headers = dict(transfer.UPLOAD_HEADERS, **{"x-image-meta-name": "peer-%d" % i})
            r = transfer.upload(g.url("/v1/images"), path, "POST", False, headers)
            img = transfer.imageOf(r)
            if r["status"] != 201 or img.get("status") != "active" \
                    or img.get("checksum") != md5 or img.get("size") != SIZE:
                errors.append("glancetx upload: HTTP %s status=%s checksum=%s size=%s %s" % (
                    r["status"], img.get("status"), img.get("checksum"), img.get("size"),
                    r.get("text") or r.get("curl_error") or ""))
            ids["tx"] = img.get("id")
            dropDirty()
            return r["upload_mib_s"]

        def peerUp():
            # the create is not timed: the figure is the body's transfer rate
            # as curl sees it, as for glancetx
            status, img = peer.request("POST", "/v2/images", {
                "name": "peer-%d" % i, "disk_format": "raw", "container_format": "bare"})
            if status != 201 or "id" not in img:
                errors.append("Glance create: HTTP %s %s" % (status, img))
                return None
            iid = ids["peer"] = img["id"]
            r = transfer.upload(peer.url("/v2/images/%s/file" % iid), path, "PUT", False,
                                {"Content-Type": "application/octet-stream"})
            status, img = peer.request("GET", "/v2/images/%s" % iid)
            if r["status"] != 204 or img.get("status") != "active" \
                    or img.get("checksum") != md5 or img.get("size") != SIZE:
                errors.append("Glance upload: HTTP %s status=%s checksum=%s size=%s %s" % (
                    r["status"], img.get("status"), img.get("checksum"), img.get("size"),
                    r.get("text") or r.get("curl_error") or ""))
            s["peer_upload_total_s"] = r["seconds"]
            stored = os.path.join(peer.base, "glance-data", "images", iid)
            if os.path.exists(stored):
                # Glance answers before its bytes are durable; glancetx
                # fsyncs first.  What Glance left for later:
                s["peer_fsync_s"] = fsyncSeconds(stored)
            dropDirty()
            return r["upload_mib_s"]

        def down(url, what):
            r = transfer.download(url)
            if r["status"] != 200 or r["size_download"] != SIZE:
                errors.append("%s download: HTTP %s, %s bytes %s" % (
                    what, r["status"], r["size_download"], r.get("curl_error") or ""))
            return r["download_mib_s"]

        def txMeta():
            return cload.throughput(g.url("/v1/images/%s" % ids.get("tx")), "HEAD",
                                    CONNECTIONS, SECONDS)

        def peerMeta():
            return load.throughput(peer.url("/v2/images/%s" % ids.get("peer")), "GET",
                                   CONNECTIONS, SECONDS)

        def pair(key, tx, gl):
            if flip:
                s[key + "_peer"] = gl()
                s[key + "_tx"] = tx()
            else:
                s[key + "_tx"] = tx()
                s[key + "_peer"] = gl()

        def txDown():
            return down(g.url("/v1/images/%s" % ids.get("tx")), "glancetx")

        def peerDown():
            return down(peer.url("/v2/images/%s/file" % ids.get("peer")), "Glance")

        def txUpDown():
            # The download follows its upload at once.  Glance's image is
            # in the page cache, as it wrote it; glancetx writes around the
            # cache, so its first download fills the cache (unless
            # filesystem_store_warm_cache is on).  Then glancetx must be
            # quiet before Glance's turn.
            up, down = txUp(), txDown()
            waitQuiet(g.pid)
            return up, down

        def peerUpDown():
            return peerUp(), peerDown()

        pair("updown", txUpDown, peerUpDown)
        for side in ("tx", "peer"):
            s["up_" + side], s["down_" + side] = s.pop("updown_" + side)
        s["disk_alone"] = diskAlone(SIZE)
        # Both cached: the two servers' sending paths.
        dropDirty()
        setCached(os.path.join(g.dataDir, "images", ids.get("tx") or ""), True)
        setCached(os.path.join(peer.base, "glance-data", "images", ids.get("peer") or ""), True)
        pair("down_cached", txDown, peerDown)
        s["tx_datapath_hwm"] = procStatus(g.pid, "VmHWM")
        s["peer_datapath"] = peer.memory()
        pair("meta", txMeta, peerMeta)
        s["tx_hwm"] = procStatus(g.pid, "VmHWM")
        s["tx_startup_hwm"] = g.startupPeak
        s["peer_mem"] = peer.memory()
        s["peer_hwm"] = s["peer_mem"]["workers_hwm"]
        if s["peer_mem"]["workers"] != WORKERS:
            errors.append("Glance: %d uWSGI workers, expected %d"
                          % (s["peer_mem"]["workers"], WORKERS))
    finally:
        g.stop()
        if peer is not None:
            peer.stop()
    if errors:
        log("peer run %d: %s" % (i, "; ".join(errors)))
    return s


def run(results, runs: int) -> Dict:
    path, md5 = testFile(SIZE)
    samples: List[Dict] = []
    for i in range(runs):
        log("peer run %d/%d (1 GiB, glancetx vs Glance 33)" % (i + 1, runs))
        samples.append(oneRun(i, path, md5))
    out = report(results, samples)
    results.setRaw("peer", {"samples": samples, "summary": out})
    return out


def _med(samples, key, sub=None):
    if sub is None:
        return median([s.get(key) for s in samples])
    return median([(s.get(key) or {}).get(sub) for s in samples])


def report(results, samples) -> Dict:
    out = {}
    G = "Glance 33 uWSGI x2"
    mb = MiB / 1e6
    up, upP = _med(samples, "up_tx"), _med(samples, "up_peer")
    r = results.add("peer", "upload 1 GiB (v1 POST vs v2 PUT file)", up, "MiB/s", upP, G,
                    ">= 2.00", (up / upP >= 2.0) if up and upP else None,
                    note="MB/s: glancetx %.0f, Glance %.0f" % ((up or 0) * mb, (upP or 0) * mb))
    out["peer_upload_ratio"] = r["ratio"]
    fs = _med(samples, "peer_fsync_s")
    if fs is not None and upP:
        withSync = withFsync(upP, SIZE, fs)
        results.add("peer", "upload 1 GiB vs Glance + fsync", up, "MiB/s", withSync,
                    "Glance 33 + the fsync it skips", note="fsync %.2fs" % fs)
    disk = _med(samples, "disk_alone")
    if disk:
        results.add("peer", "upload 1 GiB vs disk alone", up, "MiB/s", disk,
                    "disk alone, direct+fsync")
    dn, dnP = _med(samples, "down_tx"), _med(samples, "down_peer")
    r = results.add("peer", "download 1 GiB right after upload", dn, "MiB/s", dnP, G,
                    note="MB/s: glancetx %.0f, Glance %.0f" % ((dn or 0) * mb, (dnP or 0) * mb))
    out["peer_download_ratio"] = r["ratio"]
    dn, dnP = _med(samples, "down_cached_tx"), _med(samples, "down_cached_peer")
    results.add("peer", "download 1 GiB, both cached", dn, "MiB/s", dnP, G,
                note="MB/s: glancetx %.0f, Glance %.0f" % ((dn or 0) * mb, (dnP or 0) * mb))
    hwm, hwmP = _med(samples, "tx_hwm"), _med(samples, "peer_hwm")
    wmax = _med(samples, "peer_mem", "worker_hwm_max")
    master = _med(samples, "peer_mem", "master_hwm")
    dp, dpP = _med(samples, "tx_datapath_hwm"), _med(samples, "peer_datapath", "workers_hwm")
    r = results.add("peer", "peak RSS (twistd vs sum of uWSGI workers)",
                    hwm / MiB if hwm else None, "MiB", hwmP / MiB if hwmP else None,
                    "Glance workers VmHWM",
                    note="Glance max worker %.1f, master %.1f; after up+down only: %.1f vs %.1f" % (
                        (wmax or 0) / MiB, (master or 0) / MiB, (dp or 0) / MiB, (dpP or 0) / MiB))
    out["peer_rss_ratio"] = r["ratio"]
    m = median([s["meta_tx"]["rps"] for s in samples if s.get("meta_tx")])
    mP = median([s["meta_peer"]["rps"] for s in samples if s.get("meta_peer")])
    bad = sum((s[k].get("non2xx") or 0) + (s[k].get("errors") or 0)
              for s in samples for k in ("meta_tx", "meta_peer") if s.get(k))
    tool = next((s["meta_peer"].get("tool") for s in samples if s.get("meta_peer")), "")
    r = results.add("peer", "HEAD /v1/images/{id} vs GET /v2/images/{id}, 16c", m, "req/s", mP,
                    G, note="glancetx: httpload; Glance: %s, Connection: close%s" % (
                        tool, ", %d errors/non-2xx" % bad if bad else ""))
    out["peer_meta_ratio"] = r["ratio"]
    st = _med(samples, "glance_peer_start_s")
    if st:
        log("Glance db_sync + uWSGI start: median %.1fs" % st)
    errs = [e for s in samples for e in s["errors"]]
    if errs:
        results.add("peer", "errors", len(errs), "", ok=False, note=errs[0][:160])
    return out
