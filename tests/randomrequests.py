"""
Random requests against a running glancetx, and what must hold for each.

Bad methods, paths, percent escapes, query strings, headers, JSON bodies,
Content-Length and chunked bodies that lie or break off, and uploads near
enough to valid to reach the store.  Whatever arrives, the client gets
exactly one answer (unless it broke off the request itself), never a 5xx,
never a traceback; and afterwards every active image's file holds exactly
its bytes and no other image has a file.  These runs found an upload left
unanswered, answers missing or doubled, and 500s on PostgreSQL.

The trial tests (tests/test_random_requests.py) run a few hundred; for a
long run against a server of your own:

    .venv/bin/python -m tests.randomrequests --requests 5000 --seed 7 \\
        [--keystone] [--clients N] [--data-dir DIR [--sql-connection URL]
        [--images-dir DIR]] PORT[,PORT...]
"""

import argparse
import glob
import hashlib
import json
import os
import random
import re
import socket
import threading
import time
from collections import Counter
from typing import List, Optional, Tuple

WEIRD = ["", " ", "x", "-1", "0", "1", "99999999999999999999999", "1e99", "nan", "true",
         "false", "maybe", "\xff", "%ff", "%00", "%", "a" * 300, "a" * 17000, "../../etc/passwd",
         "\u00e9", "\u2603", "\U0001F600", "None", "null", "[]", "{}", "0x10",
         "2025-01-01T00:00:00", "2025-13-45", "1.5", " 5", "+5",
         "00000000-0000-0000-0000-000000000000", "file:///etc/passwd",
         "http://169.254.169.254/", "http://127.0.0.1:1/x", "s3://a:b@h/c/d",
         "swift+http://u:k@h/v1/c/o", "\r", "\t", ";", ",", "a,b", "queued", "active",
         "killed", "deleted", "raw", "qcow2", "bare", "ovf"]

FIELDS = ["name", "id", "size", "checksum", "status", "is_public", "protected", "min_disk",
          "min_ram", "disk_format", "container_format", "location", "owner", "deleted",
          "created_at", "updated_at", "deleted_at", "virtual_size", "store", "copy_from",
          "property-a", "property-", "property-\u00e9", "property-" + "p" * 300, "bogus"]

OTHER_HEADERS = ["x-glance-api-copy-from", "content-type", "accept", "x-auth-token",
                 "expect", "range", "x-glance-registry-purge-props", "content-md5"]

QUERY_KEYS = ["limit", "marker", "sort_key", "sort_dir", "name", "status", "size_min",
              "size_max", "disk_format", "container_format", "is_public", "changes-since",
              "property-a", "deleted", "owner", "protected", "min_disk", "x", "", "%ff"]

PATHS = ["/v1/images", "/v1/images/detail", "/v1/images/{id}", "/v1/images/{id}/members",
         "/v1/images/{id}/members/{m}", "/v1/shared-images/{m}", "/", "/versions", "/v1",
         "/v1/images/", "/v1/images//members", "/v1/images/{id}/", "//v1/images", "/v2/images"]

JSON_BODIES = ['{"memberships": [{"member_id": "t1", "can_share": false}]}',
               '{"memberships": 5}', '{"member": {"can_share": "x"}}', '{', '[]', 'null',
               '{"memberships": [{"member_id": 5}]}', '{"memberships": [{}]}',
               '{"memberships": [{"member_id": "a\\u0000b"}]}',
               '{"member": {"can_share": true}}',
               '{"memberships": [{"member_id": "' + "m" * 400 + '"}]}']

IDENTITY = ("x-identity-status: Confirmed\r\nx-roles: admin\r\nx-tenant-id: admin\r\n"
            "x-user-id: fuzz\r\n")


def _bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _escapes(r: random.Random) -> str:
    return "".join("%%%02x" % r.randrange(256) for _ in range(r.randrange(1, 5)))


def _chunked(r: random.Random, payload: bytes, broken: bool) -> bytes:
    parts, i = [], 0
    while i < len(payload):
        n = r.randrange(1, 100000)
        parts.append(b"%x\r\n%s\r\n" % (len(payload[i:i + n]), payload[i:i + n]))
        i += n
    body = b"".join(parts) + b"0\r\n\r\n"
    return body[:len(body) // 2] + b"zz\r\n" + body[len(body) // 2:] if broken else body


class RequestMaker:
    """
    Random raw requests; C{images} and C{queued} are ids that exist, so
    some requests reach real records and uploads reach the store.
    """

    def __init__(self, seed: int, identity: bool = False) -> None:
        self.r = random.Random(seed)
        self.identity = identity
        self.images: List[str] = []
        self.queued: List[str] = []

    def weird(self) -> str:
        if self.images and self.r.random() < 0.2:
            return self.r.choice(self.images)
        return self.r.choice(WEIRD)

    def _identity(self) -> List[Tuple[str, str]]:
        if not self.identity or self.r.random() < 0.05:
            return []
        r = self.r
        if r.random() < 0.7:
            return [("x-identity-status", "Confirmed"), ("x-tenant-id", r.choice(["t1", "admin"])),
                    ("x-user-id", "u1"), ("x-roles", r.choice(["admin", "member"]))]
        return [("x-identity-status", r.choice(["Confirmed", "Confirmed", "Invalid", self.weird()])),
                ("x-tenant-id", r.choice(["t1", "t2", "admin", self.weird()])),
                ("x-user-id", r.choice(["u1", "u2", self.weird()])),
                ("x-roles", r.choice(["admin", "member", "member,reader", "", self.weird()]))]

    def _path(self) -> str:
        r = self.r
        iid = r.choice(self.images) if self.images and r.random() < 0.6 else self.weird()
        if r.random() < 0.3:
            iid = _escapes(r)
        path = r.choice(PATHS).replace("{id}", iid).replace("{m}", self.weird())
        if r.random() < 0.5:
            pairs = []
            for _ in range(r.randrange(1, 5)):
                value = _escapes(r) if r.random() < 0.3 else self.weird()
                pairs.append(r.choice(QUERY_KEYS) + "=" + value.replace(" ", "+").replace("#", "%23"))
            path += "?" + "&".join(pairs)
        return path

    def _raw(self, method: str, path: str, headers, body: bytes) -> bytes:
        head = "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" % (method, path)
        return (_bytes(head) + b"".join(_bytes(k) + b": " + _bytes(v) + b"\r\n" for k, v in headers)
                + b"\r\n" + body)

    def upload(self) -> Tuple[bytes, bool]:
        """
        An upload to a queued image, mostly valid: the body may lie about
        its length, break its chunking or stop half way.
        """
        r = self.r
        n = r.choice([0, 1, 1000, 70000, 300000, 2000000])
        payload = os.urandom(n)
        headers = [("content-type", "application/octet-stream")] + self._identity()
        if r.random() < 0.3:
            headers.append(("x-image-meta-checksum",
                            r.choice([hashlib.md5(payload).hexdigest(), "0" * 32])))
        if r.random() < 0.3:
            headers.append(("x-image-meta-size", r.choice([str(n), str(n + 1), str(max(n - 1, 0))])))
        if r.random() < 0.2:
            headers.append(("x-image-meta-" + r.choice(FIELDS), self.weird()))
        kind = r.choice(["whole", "chunked", "longer", "broken", "stopped"])
        if kind in ("whole", "longer", "stopped"):
            headers.append(("content-length", str(n + (10 if kind == "longer" else 0))))
            body = payload[:n // 2] if kind == "stopped" else payload
        else:
            headers.append(("transfer-encoding", "chunked"))
            body = _chunked(r, payload, kind == "broken")
        iid = r.choice(self.queued) if self.queued else "x"
        return (self._raw("PUT", "/v1/images/" + iid, headers, body),
                kind in ("longer", "stopped"))

    def next(self) -> Tuple[bytes, bool]:
        """
        The next request, and whether the client breaks it off (sends less
        body than it announced, then stops writing).
        """
        r = self.r
        if r.random() < 0.25:
            return self.upload()
        method = r.choice(["GET", "HEAD", "POST", "PUT", "DELETE", "GET", "POST", "PUT",
                           "PATCH", "OPTIONS", "FOO", "get"])
        headers = [("x-image-meta-" + r.choice(FIELDS), self.weird())
                   for _ in range(r.randrange(0, 6))]
        headers += [(r.choice(OTHER_HEADERS), self.weird()) for _ in range(r.randrange(0, 2))]
        headers += self._identity()
        body, short = b"", False
        if method in ("POST", "PUT") or r.random() < 0.1:
            payload = os.urandom(r.choice([0, 1, 5, 1000, 70000, 300000]))
            kind = r.choice(["length", "length", "chunked", "json", "broken", "short", "both"])
            if kind == "json":
                payload = _bytes(r.choice(JSON_BODIES))
                headers.append(("content-type", "application/json"))
                kind = "length"
            if kind in ("length", "short", "both"):
                headers.append(("content-length", str(len(payload) + (10 if kind == "short" else 0))))
                body, short = payload, kind == "short"
            if kind in ("chunked", "broken", "both"):
                headers.append(("transfer-encoding", "chunked"))
                body = payload if kind == "both" else _chunked(r, payload, kind == "broken")
        return self._raw(method, self._path(), headers, body), short


def exchange(port: int, raw: bytes, short: bool, timeout: float = 15) -> bytes:
    """
    Send one request on its own connection and read until the server closes.
    """
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(timeout)
    out = []
    try:
        try:
            s.sendall(raw)
            if short:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before taking it all
        while True:
            data = s.recv(65536)
            if not data:
                break
            out.append(data)
    except socket.timeout:
        out.append(b"<no answer within %ds>" % (timeout,))
    except OSError:
        pass  # reset after an early answer: what arrived is kept
    finally:
        s.close()
    return b"".join(out)


_STATUS = re.compile(rb"HTTP/1\.[01] (\d\d\d) ")


def problems(raw: bytes, answer: bytes, short: bool) -> List[str]:
    """
    What is wrong with this answer to this request, if anything.
    """
    found = []
    statuses = _STATUS.findall(answer)
    finals = [s for s in statuses if s != b"100"]
    if not answer.startswith(b"HTTP/1.1 ") and not short:
        found.append("no answer")
    if len(finals) > 1:
        found.append("%d answers" % (len(finals),))
    if any(s.startswith(b"5") for s in finals):
        found.append("a %s" % (finals[0].decode(),))
    if b"Traceback" in answer:
        found.append("a traceback")
    if found:
        return ["%s to %r -> %r" % (", ".join(found), raw[:300], answer[:300])]
    return []


def seed(port: int, maker: RequestMaker) -> None:
    """
    Five active images and forty queued ones for the requests to reach.
    """
    auth = IDENTITY if maker.identity else ""
    head = ("POST /v1/images HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth +
            "x-image-meta-name: seed\r\nx-image-meta-disk_format: raw\r\n"
            "x-image-meta-container_format: bare\r\ncontent-type: application/octet-stream\r\n")
    for ids, body in [(maker.images, b"abc")] * 5 + [(maker.queued, b"")] * 40:
        answer = exchange(port, head.encode() + b"content-length: %d\r\n\r\n" % (len(body),)
                          + body, False)
        if not answer.startswith(b"HTTP/1.1 201 "):
            raise AssertionError("seeding an image was answered %r" % (answer[:500],))
        ids.append(json.loads(answer.partition(b"\r\n\r\n")[2])["image"]["id"])


def run(port: int, seedValue: int, count: int, identity: bool = False
        ) -> Tuple[Counter, List[str]]:
    """
    Seed the server, send C{count} random requests; the status counts and
    the problems found.
    """
    return runMany([port], seedValue, count, 1, identity)


def runMany(ports: List[int], seedValue: int, count: int, clients: int,
            identity: bool = False) -> Tuple[Counter, List[str]]:
    """
    The same from C{clients} threads at once, each sending C{count}
    requests, each request to one of C{ports} (servers that share a
    database and a store) at random.  Each client seeds images of its own,
    and also reaches the first client's.
    """
    first = RequestMaker(seedValue, identity)
    seed(ports[0], first)
    counts: Counter = Counter()
    found: List[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        maker = first
        if n:
            # Images of its own to upload to, and the first client's too.
            maker = RequestMaker(seedValue * 1000 + n, identity)
            seed(ports[n % len(ports)], maker)
            maker.images += first.images
            maker.queued += first.queued
        for _ in range(count):
            raw, short = maker.next()
            port = ports[0] if len(ports) == 1 else maker.r.choice(ports)
            answer = exchange(port, raw, short)
            m = _STATUS.match(answer)
            wrong = problems(raw, answer, short)
            with lock:
                counts[m.group(1).decode() if m else "none"] += 1
                found.extend(wrong)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts, found


def _imageRows(dataDir: str, sqlConnection: Optional[str]) -> List[Tuple]:
    """
    Every image's id, status, size and checksum, once no upload is in
    flight: an upload the client broke off ends a moment after its last
    byte.
    """
    from sqlalchemy import create_engine
    engine = create_engine(sqlConnection or
                           "sqlite:///" + os.path.join(dataDir, "glance.sqlite"))
    try:
        with engine.connect() as db:
            for _ in range(100):
                rows = [tuple(r) for r in
                        db.execute("SELECT id, status, size, checksum FROM images").fetchall()]
                if all(status != "saving" for _, status, _, _ in rows):
                    break
                time.sleep(0.1)
    finally:
        engine.dispose()
    return rows


def storeProblems(dataDir: str, sqlConnection: Optional[str] = None,
                  imagesDir: Optional[str] = None) -> List[str]:
    """
    Every active image's file holds its size and checksum; no other image,
    and nothing unknown, has a file.  The registry is the data dir's
    SQLite unless C{sqlConnection} names another; the files are in the
    data dir's C{images} unless C{imagesDir} says where.
    """
    rows = _imageRows(dataDir, sqlConnection)
    imagesDir = imagesDir or os.path.join(dataDir, "images")
    files = {os.path.basename(p): p for p in glob.glob(os.path.join(imagesDir, "*"))}
    found = []
    for iid, status, size, checksum in rows:
        path = files.pop(iid, None)
        if status != "active":
            if path is not None:
                found.append("%s image %s has a file" % (status, iid))
            continue
        if path is None:
            found.append("active image %s has no file" % (iid,))
            continue
        md5 = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                md5.update(block)
        if os.path.getsize(path) != size or md5.hexdigest() != checksum:
            found.append("active image %s: file does not match its size and checksum" % (iid,))
    found += ["file %s belongs to no image" % (name,) for name in files]
    return found


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.randomrequests", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", help="a port, or several sharing a database and a store: 9292,9293")
    p.add_argument("--requests", type=int, default=2000, help="per client")
    p.add_argument("--clients", type=int, default=1, help="parallel clients")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keystone", action="store_true",
                   help="send identity headers (for auth_strategy = keystone)")
    p.add_argument("--data-dir", help="check the filesystem store afterwards: the images in "
                   "DIR/images, the registry in DIR/glance.sqlite")
    p.add_argument("--sql-connection", help="the registry the servers share, if not SQLite "
                   "(with --data-dir)")
    p.add_argument("--images-dir", help="the filesystem store's directory, if not "
                   "DATA_DIR/images (with --data-dir)")
    args = p.parse_args(argv)
    ports = [int(p) for p in args.port.split(",")]
    counts, found = runMany(ports, args.seed, args.requests, args.clients, args.keystone)
    print("answers:", dict(sorted(counts.items())))
    if args.data_dir:
        found += storeProblems(args.data_dir, args.sql_connection, args.images_dir)
    for problem in found:
        print(problem)
    print("%d problems" % (len(found),))
    raise SystemExit(1 if found else 0)


if __name__ == "__main__":
    main()
