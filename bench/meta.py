"""
meta: metadata requests with 1,000 images registered.

  throughput at 16 connections (wrk -t1, or the Python fallback; HEAD with
  httpload, bench/httpload.c, since wrk cannot frame a HEAD answer that
  carries the GET body's Content-Length -- the Klein ceiling is taken with
  both C tools and the higher one counts):
    HEAD /v1/images/{id}                   vs a Klein JSON route, a bare twisted.web resource
      (default: access log in the twistd log; and with access_log = a file)
    GET /v1/images/detail?limit=25         vs the same ceilings
  latency, a sequential loop over one keep-alive connection:
    GET /v1/images/detail?limit=25         vs the bare twisted.web resource's latency

Each run measures every server once, in reversed order on odd runs.
"""

from typing import Dict

from bench import catalogue, cload, load
from bench.common import median, runJobs
from bench.servers import Glance, Tiny

IMAGES = 1000
CONNECTIONS = 16


def run(results, runs: int, seconds: float = 5.0, latencyN: int = 500) -> Dict:
    g = Glance(label="meta")
    gFile = Glance({"access_log": "access.log"}, label="meta-accesslog")
    klein, bare = Tiny("klein"), Tiny("bare")
    try:
        ids = catalogue.fill(g.dbPath, IMAGES)
        idsFile = catalogue.fill(gFile.dbPath, IMAGES)
        one = ids[IMAGES // 2]
        listPath = "/v1/images/detail?limit=25"
        jobs = [
            ("klein_json", lambda: load.throughput(klein.url("/json"), "GET", CONNECTIONS, seconds)),
            ("klein_json_c", lambda: cload.throughput(klein.url("/json"), "GET", CONNECTIONS,
                                                      seconds)),
            ("bare_twisted", lambda: load.throughput(bare.url("/"), "GET", CONNECTIONS, seconds)),
            ("glance_head", lambda: cload.throughput(g.url("/v1/images/" + one), "HEAD",
                                                     CONNECTIONS, seconds)),
            ("glance_head_file", lambda: cload.throughput(
                gFile.url("/v1/images/" + idsFile[IMAGES // 2]), "HEAD", CONNECTIONS, seconds)),
            ("glance_list", lambda: load.throughput(g.url(listPath), "GET", CONNECTIONS, seconds)),
            ("lat_bare", lambda: load.latency(bare.port, "GET", "/", latencyN)),
            ("lat_list", lambda: load.latency(g.port, "GET", listPath, latencyN)),
        ]
        samples = runJobs("meta", jobs, runs)
    finally:
        g.stop()
        gFile.stop()
        klein.stop()
        bare.stop()
    out = report(results, samples)
    results.setRaw("meta", {"samples": samples, "summary": out,
                            "tool": samples[0]["klein_json"].get("tool") if samples else None})
    return out


def _rps(samples, key):
    bad = sum((s[key].get("non2xx") or 0) + (s[key].get("errors") or 0) for s in samples)
    return median([s[key]["rps"] for s in samples]), bad


def report(results, samples) -> Dict:
    out = {}
    kleinWrk, _ = _rps(samples, "klein_json")
    kleinC, _ = _rps(samples, "klein_json_c")
    klein = max(kleinWrk or 0, kleinC or 0) or None
    bare, _ = _rps(samples, "bare_twisted")
    head, badHead = _rps(samples, "glance_head")
    headFile, badHeadFile = _rps(samples, "glance_head_file")
    lst, badList = _rps(samples, "glance_list")
    r = results.add("meta", "HEAD one image, 16 conns", head, "req/s", klein, "Klein JSON",
                    ">= 0.25", (head / klein >= 0.25) if head and klein else None,
                    note="errors %d" % badHead if badHead else "")
    out["head_ratio"] = r["ratio"]
    r = results.add("meta", "HEAD one image, access_log to a file", headFile, "req/s", klein,
                    "Klein JSON", ">= 0.25",
                    (headFile / klein >= 0.25) if headFile and klein else None,
                    note="errors %d" % badHeadFile if badHeadFile else "")
    out["head_file_ratio"] = r["ratio"]
    results.add("meta", "Klein JSON, httpload vs wrk", kleinC, "req/s", kleinWrk, "Klein (wrk)")
    results.add("meta", "HEAD one image, 16 conns vs bare", head, "req/s", bare, "bare twisted.web")
    results.add("meta", "Klein JSON vs bare twisted.web", kleinWrk, "req/s", bare,
                "bare twisted.web")
    results.add("meta", "list detail 25 of 1k, 16 conns", lst, "req/s", klein, "Klein JSON",
                note="errors %d" % badList if badList else "")
    lat = median([s["lat_list"]["median_ms"] for s in samples])
    p95 = median([s["lat_list"]["p95_ms"] for s in samples])
    latBare = median([s["lat_bare"]["median_ms"] for s in samples])
    results.add("meta", "list detail 25 of 1k, sequential median", lat, "ms", latBare,
                "bare twisted.web", "<= 3 ms", (lat <= 3.0) if lat else None,
                note="p95 %.2f ms" % p95)
    out["list_ms"] = lat
    return out
