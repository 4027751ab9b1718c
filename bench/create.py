"""
create: latency of POST /v1/images that reserves a queued image (no body),
a sequential loop over one keep-alive connection, against the latency of a
Klein JSON route (GET) measured in the same run, alternating.
"""

from typing import Dict

from bench import load
from bench.common import median, runJobs
from bench.servers import Glance, Tiny

HEADERS = {
    "x-image-meta-name": "reserved",
    "x-image-meta-disk_format": "raw",
    "x-image-meta-container_format": "bare",
}


def run(results, runs: int, n: int = 500) -> Dict:
    g = Glance(label="create")
    klein = Tiny("klein")
    try:
        jobs = [
            ("klein", lambda: load.latency(klein.port, "GET", "/json", n)),
            ("create", lambda: load.latency(g.port, "POST", "/v1/images", n,
                                            headers=HEADERS, expect=201)),
        ]
        samples = runJobs("create", jobs, runs)
    finally:
        g.stop()
        klein.stop()
    lat = median([s["create"]["median_ms"] for s in samples])
    p95 = median([s["create"]["p95_ms"] for s in samples])
    bad = sum(s["create"]["bad"] for s in samples)
    ceiling = median([s["klein"]["median_ms"] for s in samples])
    results.add("create", "POST reserve (queued), sequential median", lat, "ms", ceiling,
                "Klein JSON GET", "<= 3 ms", (lat <= 3.0 and not bad) if lat else None,
                note="p95 %.2f ms%s" % (p95, ", %d not 201" % bad if bad else ""))
    out = {"create_ms": lat, "create_p95_ms": p95}
    results.setRaw("create", {"samples": samples, "summary": out})
    return out
