"""
scale: list latency as the catalogue grows (1k, 10k, 100k images).  One
glancetx per size, all running at once, catalogues filled by inserting rows
into their SQLite files; each run measures every size in turn (reversed on
odd runs), so the ratio to the 1k figure is measured side by side.

Latency is a sequential loop over one keep-alive connection.  The target is
the default detailed list; the other queries are reported for information.
"""

from typing import Dict, List

from bench import catalogue, load
from bench.common import alternating, log, median
from bench.servers import Glance

QUERIES = [
    ("detail", "/v1/images/detail?limit=25"),
    ("brief", "/v1/images?limit=25"),
    ("detail_page2", None),  # marker = last id of page 1, filled in per server
    ("detail_sort_name", "/v1/images/detail?limit=25&sort_key=name&sort_dir=asc"),
    ("detail_name_filter", "/v1/images/detail?limit=25&name=bench-0000500"),
]


def _page2(port: int) -> str:
    import http.client
    import json
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/v1/images?limit=25")
    ids = [i["id"] for i in json.loads(c.getresponse().read())["images"]]
    c.close()
    return "/v1/images/detail?limit=25&marker=" + ids[-1]


def run(results, runs: int, sizes=(1000, 10000, 100000), n: int = 300,
        queries=None) -> Dict:
    queries = queries or [q for q, _ in QUERIES]
    servers = {}
    samples: List[Dict] = []
    try:
        for size in sizes:
            g = Glance(label="scale%d" % size)
            servers[size] = g
            log("scale: registering %d images" % size)
            catalogue.fill(g.dbPath, size)
            g.restart()
        paths = {}
        for size, g in servers.items():
            paths[size] = {q: (p if p else _page2(g.port)) for q, p in QUERIES}
        for i in range(runs):
            log("scale run %d/%d" % (i + 1, runs))
            order = alternating(sizes, i)
            s = {"run": i}
            for q in queries:
                for size in order:
                    s["%s_%d" % (q, size)] = load.latency(servers[size].port, "GET",
                                                          paths[size][q], n)
            samples.append(s)
    finally:
        for g in servers.values():
            g.stop()
    out = {}
    base = min(sizes)
    for q in queries:
        b = median([s["%s_%d" % (q, base)]["median_ms"] for s in samples])
        for size in sizes:
            v = median([s["%s_%d" % (q, size)]["median_ms"] for s in samples])
            p95 = median([s["%s_%d" % (q, size)]["p95_ms"] for s in samples])
            bad = sum(s["%s_%d" % (q, size)]["bad"] for s in samples)
            isTarget = q == "detail" and size == max(sizes) and size != base
            results.add("scale", "%s at %dk (median, ms)" % (q, size // 1000), v, "ms",
                        b if size != base else None, "same at %dk" % (base // 1000),
                        "<= 1.5x" if isTarget else "",
                        (v / b <= 1.5) if isTarget and v and b else None,
                        note="p95 %.2f ms%s" % (p95, ", %d bad" % bad if bad else ""))
            out["%s_%d_ms" % (q, size)] = v
    if max(sizes) != base:
        out["scale_ratio"] = out["detail_%d_ms" % max(sizes)] / out["detail_%d_ms" % base]
    results.setRaw("scale", {"samples": samples, "summary": out})
    return out
