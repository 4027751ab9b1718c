"""
million: every list a client can ask for, on a catalogue of a million
images in PostgreSQL and MariaDB.  Opt-in (python -m bench million): the
fills take minutes and need both database servers.

It makes README's "A million images on PostgreSQL and MariaDB"
reproducible, and times what that audit left out: a shared image's member
list, a tenant's shared-images and lists with several filters at once.

For each database (--million-db postgresql|mariadb|both, --million-images
N, default 1,000,000):
  a database of its own (glancetx_bench_million), brought to the newest
  revision by `glancetx-manage db sync`, as an operator would, then filled
  by SQL run inside the database server (PostgreSQL's generate_series,
  MariaDB's Sequence engine, or a table of row numbers where it has none),
  then ANALYZE; dropped at the end unless --keep-files.  The data is
  arithmetic on the row number, the same on every run: 20% of the images
  deleted, 1,000 tenants owning them, 5% public, 3.5 properties an image
  (os_distro=plan9 on 0.01% of the images, architecture=aarch64 on 13%),
  200,000 memberships (one image has 999 members, tenant-0007 is shared
  1,000 more images); statuses mostly active, 0.2% queued, some killed,
  saving and pending_delete; disk_format aki on 0.05%; sizes uniform over
  0-50 GiB (so 1 GiB-1 GiB+1 MiB holds about 20 images); a few NULL
  names, formats and sizes; created 4 minutes apart over 7.6 years.
  tenant-0042 owns about 800 live images and is shared about 200.

Then one glancetx (twistd, keystone-style identity headers) on it, and
for every shape the median of 5 requests after one warm-up, once as an
admin (with is_public=none, so every image is a candidate, unless the
shape sets is_public) and once as tenant-0042.  Lists are
/v1/images/detail (default page of 25) unless the shape says brief.  A
page "p70" starts at a marker 70% down that viewer's order.  Every
answer must be 200 and its page must hold what was asked: as many
images as the database counts (up to a page), each matching the filters
and visible to the viewer, in order, past the marker; a member list and
shared-images as long as the database says.  A wrong answer is a MISS
marked WRONG, is listed again after the table, and makes the exit status
1.  A shape over 50 ms for either viewer is a MISS marked SLOW.

Last, with the server stopped, the scrubber's look for stale claims and
`db purge` in batches of 500 images, median of 5 each.
"""

import datetime
import http.client
import json
import os
import subprocess
import time
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlencode

from bench.common import VENV_BIN, benchDir, log, median
from glancetx.registry import registry
from bench.servers import Glance

DB_NAME = "glancetx_bench_million"
TENANT = "tenant-0042"
POPULAR = "tenant-0007"
ADMIN = {"X-Identity-Status": "Confirmed", "X-User-Id": "bench-admin",
         "X-Tenant-Id": "bench-admin", "X-Roles": "admin"}
MEMBER = {"X-Identity-Status": "Confirmed", "X-User-Id": "bench-user",
          "X-Tenant-Id": TENANT, "X-Roles": "member"}
SLOW_MS = 50.0
REQUESTS = 5
#: The server's default page (limit_param_default).
PAGE = 25
GiB = 1 << 30
SORT_KEYS = tuple(registry.SORT_KEYS)
#: The column each sort key orders on, and the index a page walks.
SORT_COLUMNS = {k: column.name for k, column in registry.SORT_KEYS.items()}
SORT_INDEXES = registry.SORT_INDEXES


class Dialect:
    """
    What differs between the two databases: URLs, row numbers, hex and
    time arithmetic.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.short = {"postgresql": "pg", "mariadb": "maria"}[name]
        if name == "postgresql":
            self.admin = "postgresql://postgres@127.0.0.1:5432/postgres"
            self.url = "postgresql://postgres@127.0.0.1:5432/" + DB_NAME
        else:
            self.admin = "mysql+pymysql://root@127.0.0.1:3306/"
            self.url = "mysql+pymysql://root@127.0.0.1:3306/%s?charset=utf8mb4" % DB_NAME
        self.series = None  # set by fill()

    def hex(self, x: str) -> str:
        return "to_hex(%s)" % x if self.name == "postgresql" else "LOWER(HEX(%s))" % x

    def pad(self, x: str, width: int) -> str:
        cast = "TEXT" if self.name == "postgresql" else "CHAR"
        return "LPAD(CAST(%s AS %s), %d, '0')" % (x, cast, width)

    def at(self, seconds: str) -> str:
        if self.name == "postgresql":
            return "(TIMESTAMP '2019-01-01 00:00:00' + (%s) * INTERVAL '1 second')" % seconds
        return "(TIMESTAMP '2019-01-01 00:00:00' + INTERVAL (%s) SECOND)" % seconds

    def engine(self, url: Optional[str] = None, autocommit: bool = False):
        import sqlalchemy
        kw = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
        return sqlalchemy.create_engine(url or self.url, poolclass=sqlalchemy.pool.NullPool, **kw)


class Rows:
    """
    The SQL expressions of an image's fields, as arithmetic on its row
    number n: the same numbers on every run and both databases.  Each
    chance draws on its own prime modulus, so that they are near enough
    independent.
    """

    PRIMES = {"deleted": (7919, 10007), "public": (15485863, 10009),
              "status": (3571, 10037), "format": (6007, 10039), "name": (9931, 10061),
              "updated": (4099, 10067), "arch": (104723, 10069), "distro": (1299709, 10079),
              "bus": (7727, 10091), "member": (48611, 10093)}

    def __init__(self, d: Dialect, count: int) -> None:
        self.d = d
        self.count = count
        step = max(1, 240000000 // count)
        h = self.h
        self.id = ("CONCAT(%s, '-0000-4000-8000-', %s)" % (
            "LPAD(%s, 8, '0')" % d.hex("MOD(n * 2654435761, 4294967296)"),
            "LPAD(%s, 12, '0')" % d.hex("n")))
        self.deleted = "(%s < 2001)" % h("deleted")
        self.live = "(%s >= 2001)" % h("deleted")
        s = h("status")
        self.queued = "(%s AND %s < 20)" % (self.live, s)
        self.status = ("CASE WHEN %s THEN CASE WHEN %s < 502 THEN 'pending_delete'"
                       " ELSE 'deleted' END WHEN %s < 20 THEN 'queued' WHEN %s < 30"
                       " THEN 'killed' WHEN %s < 35 THEN 'saving' ELSE 'active' END"
                       % (self.deleted, s, s, s, s))
        # pending_delete images keep bytes in a store the server has not
        # (swift), so that its scrubber leaves them alone while we time.
        self.location = ("CASE WHEN %s THEN CASE WHEN %s < 502 THEN CONCAT('swift://bench/', %s)"
                         " END WHEN %s < 30 THEN NULL ELSE CONCAT('file:///nonexistent/', %s) END"
                         % (self.deleted, s, self.id, s, self.id))
        f = h("format")
        noFormat = "(%s OR %s < 100)" % (self.queued, f)
        self.disk = ("CASE WHEN %s THEN NULL WHEN %s < 5 THEN 'aki' WHEN %s < 5100 THEN 'qcow2'"
                     " WHEN %s < 8100 THEN 'raw' WHEN %s < 9000 THEN 'vmdk' WHEN %s < 9600"
                     " THEN 'iso' WHEN %s < 9900 THEN 'vhd' ELSE 'vdi' END"
                     % (noFormat, f, f, f, f, f, f))
        self.container = ("CASE WHEN %s THEN NULL WHEN %s < 5 THEN 'aki' WHEN MOD(n, 20) = 0"
                          " THEN 'ovf' ELSE 'bare' END" % (noFormat, f))
        self.size = "CASE WHEN %s THEN NULL ELSE MOD(n * 2654435761, %d) END" % (
            noFormat, 50 * GiB)
        self.checksum = "CASE WHEN %s THEN NULL ELSE %s END" % (
            self.queued, "LPAD(%s, 32, '0')" % d.hex("n"))
        self.name = "CASE WHEN %s < 100 THEN NULL ELSE CONCAT('image-', %s) END" % (
            h("name"), "LPAD(%s, 8, '0')" % d.hex("MOD(n * 3266489917, 4294967296)"))
        self.public = "(%s < 500)" % h("public")
        created = "n * %d + MOD(n * 31, 200)" % step
        self.created = d.at(created)
        changed = d.at("%s + %s * 60" % (created, h("updated")))
        self.updated = "CASE WHEN %s OR %s >= 50 THEN %s END" % (
            self.deleted, h("updated"), changed)
        self.deletedAt = "CASE WHEN %s THEN %s END" % (self.deleted, changed)
        self.owner = "CONCAT('tenant-', %s)" % d.pad("MOD(n * 2246822519, 1000)", 4)
        # 19.8% of the images are shared with one tenant other than their owner.
        self.shared = "(%s < 1998)" % h("member")
        self.member = "CONCAT('tenant-', %s)" % d.pad(
            "MOD(MOD(n * 2246822519, 1000) + 1 + MOD(n * 13, 997), 1000)", 4)

    def h(self, what: str) -> str:
        p, q = self.PRIMES[what]
        return "MOD(n * %d, %d)" % (p, q)

    def images(self) -> str:
        return ("INSERT INTO images (id, name, disk_format, container_format, size, status,"
                " is_public, checksum, min_disk, min_ram, owner, protected, location,"
                " created_at, updated_at, deleted_at, deleted) SELECT %s FROM %s" % (", ".join([
                    self.id, self.name, self.disk, self.container, self.size, self.status,
                    self.public, self.checksum, "0", "0", self.owner, "(1 = 0)", self.location,
                    self.created, self.updated, self.deletedAt, self.deleted]), self.d.series))

    def properties(self) -> List[str]:
        a, o, b = self.h("arch"), self.h("distro"), self.h("bus")
        props = [
            ("architecture", "CASE WHEN %s < 1309 THEN 'aarch64' ELSE 'x86_64' END" % a, "1 = 1"),
            ("os_distro", "CASE WHEN %s < 1 THEN 'plan9' WHEN %s < 4000 THEN 'ubuntu'"
                          " WHEN %s < 6000 THEN 'debian' WHEN %s < 7500 THEN 'centos'"
                          " WHEN %s < 8500 THEN 'rocky' WHEN %s < 9500 THEN 'fedora'"
                          " ELSE 'windows' END" % (o, o, o, o, o, o), "1 = 1"),
            ("os_version", "CONCAT(%s, '.04')" % ("MOD(n, 12) + 14"), "1 = 1"),
            ("hw_disk_bus", "CASE WHEN MOD(n, 3) = 0 THEN 'scsi' ELSE 'virtio' END",
             "%s < 5045" % b),
        ]
        return ["INSERT INTO image_properties (image_id, name, value, created_at, updated_at,"
                " deleted_at, deleted) SELECT %s, '%s', %s, %s, %s, %s, %s FROM %s WHERE %s" % (
                    self.id, name, value, self.created, self.updated, self.deletedAt,
                    self.deleted, self.d.series, where)
                for name, value, where in props]

    def members(self, manyMembers: int) -> List[str]:
        cols = ("INSERT INTO image_members (image_id, member, can_share, status, created_at,"
                " updated_at, deleted_at, deleted) ")
        live = ", 'accepted', %s, %s, NULL, (1 = 0)" % (self.created, self.created)
        return [
            cols + "SELECT %s, %s, (MOD(n, 10) = 0), 'accepted', %s, %s, %s, %s FROM %s"
            " WHERE %s" % (self.id, self.member, self.created, self.updated, self.deletedAt,
                           self.deleted, self.d.series, self.shared),
            # tenant-0007 is shared 1,000 live images more.
            cols + "SELECT %s, '%s', (1 = 0)%s FROM %s WHERE NOT %s AND %s AND %s <> '%s'"
            " AND n <> %d ORDER BY n LIMIT 1000" % (
                self.id, POPULAR, live, self.d.series, self.shared, self.live, self.owner,
                POPULAR, manyMembers),
            # One image of tenant-0042's has every other tenant as a member.
            cols + "SELECT image.id, CONCAT('tenant-', %s), (1 = 0), 'accepted', image.created_at,"
            " image.created_at, NULL, (1 = 0) FROM %s, images image WHERE n <= 1000"
            " AND n - 1 <> 42 AND image.id = (%s)" % (
                self.d.pad("n - 1", 4), self.d.series,
                "SELECT %s FROM %s WHERE n = %d" % (self.id, self.d.series, manyMembers)),
        ]

    def manyMembersImage(self) -> str:
        return ("SELECT n FROM %s WHERE %s = '%s' AND NOT %s AND %s AND %s >= 35"
                " ORDER BY n LIMIT 1" % (self.d.series, self.owner, TENANT, self.shared,
                                         self.live, self.h("status")))


def fill(d: Dialect, count: int) -> Dict:
    """
    A fresh database at the newest revision, filled and analyzed; the
    seconds each step took and the rows made.
    """
    from sqlalchemy import text
    admin = d.engine(d.admin, autocommit=True)
    with admin.connect() as c:
        drop(d, c)
        c.execute(text("CREATE DATABASE %s%s" % (
            DB_NAME, " CHARACTER SET utf8mb4" if d.name == "mariadb" else "")))
    admin.dispose()
    conf = os.path.join(benchDir("data", "million"), d.short + ".conf")
    with open(conf, "w") as f:
        f.write("[DEFAULT]\nsql_connection = %s\n" % d.url)
    t0 = time.monotonic()
    sync = subprocess.run([os.path.join(VENV_BIN, "glancetx-manage"), "--config", conf,
                           "--data-dir", benchDir("data", "million"), "db", "sync"],
                          capture_output=True, text=True)
    if sync.returncode:
        raise RuntimeError("db sync on %s failed: %s" % (d.name, sync.stdout + sync.stderr))
    syncSeconds = time.monotonic() - t0
    log("million %s: %s (%.1fs); filling %d images" % (d.name, sync.stdout.strip(),
                                                       syncSeconds, count))
    engine = d.engine()
    t0 = time.monotonic()
    numbers = None
    with engine.connect() as c:
        if d.name == "postgresql":
            d.series = "generate_series(1::bigint, %d) AS s(n)" % count
        else:
            c.execute(text("SET SESSION unique_checks = 0, foreign_key_checks = 0"))
            try:
                c.execute(text("SELECT 1 FROM seq_1_to_1")).fetchall()
                d.series = "(SELECT seq AS n FROM seq_1_to_%d) AS s" % count
            except Exception:
                log("million: MariaDB has no Sequence engine; row numbers from a table")
                numbers = "glancetx_bench_million_n"
                c.execute(text("CREATE TABLE %s (n BIGINT PRIMARY KEY)" % numbers))
                for lo in range(1, count + 1, 10000):
                    c.execute(text("INSERT INTO %s VALUES (:n)" % numbers),
                              [{"n": n} for n in range(lo, min(count, lo + 9999) + 1)])
                d.series = "%s AS s" % numbers
        rows = Rows(d, count)
        many = c.execute(text(rows.manyMembersImage())).scalar()
        for statement in [rows.images()] + rows.properties() + rows.members(many):
            with c.begin():
                c.execute(text(statement))
        if numbers:
            c.execute(text("DROP TABLE " + numbers))
        fillSeconds = time.monotonic() - t0
        t1 = time.monotonic()
        with c.begin():  # PostgreSQL's statistics roll back with their transaction
            c.execute(text("ANALYZE" if d.name == "postgresql"
                           else "ANALYZE TABLE images, image_properties, image_members"))
        analyzeSeconds = time.monotonic() - t1
        counts = {t: c.execute(text("SELECT count(*) FROM " + t)).scalar()
                  for t in ("images", "image_properties", "image_members")}
    engine.dispose()
    log("million %s: filled in %.1fs (ANALYZE %.1fs): %s" % (
        d.name, fillSeconds, analyzeSeconds,
        ", ".join("%d %s" % (v, k) for k, v in counts.items())))
    return {"sync_s": syncSeconds, "fill_s": fillSeconds, "analyze_s": analyzeSeconds,
            "counts": counts}


def drop(d: Dialect, c) -> None:
    from sqlalchemy import text
    if d.name == "postgresql":
        c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                       " WHERE datname = :n AND pid <> pg_backend_pid()"), n=DB_NAME)
    c.execute(text("DROP DATABASE IF EXISTS " + DB_NAME))


def dropDatabase(d: Dialect) -> None:
    admin = d.engine(d.admin, autocommit=True)
    with admin.connect() as c:
        drop(d, c)
    admin.dispose()


_VISIBLE = ("(is_public = :t OR owner = :tenant OR id IN (SELECT image_id FROM image_members"
            " WHERE member = :tenant AND deleted = :f))")


def facts(d: Dialect) -> Dict:
    """
    What the shapes need from the database: the markers 70% down each
    order for each viewer, the newest change, the ids shared with the
    tenant, the image with many members.
    """
    from sqlalchemy import text
    engine = d.engine()
    out: Dict = {"markers": {}}
    p = {"t": True, "f": False, "tenant": TENANT}
    with engine.connect() as c:
        out["shared_ids"] = {r[0] for r in c.execute(text(
            "SELECT image_id FROM image_members WHERE member = :tenant AND deleted = :f"), **p)}
        out["newest_change"] = c.execute(text("SELECT max(updated_at) FROM images")).scalar()
        out["many_members"] = c.execute(text(
            "SELECT image_id FROM image_members GROUP BY image_id ORDER BY count(*) DESC,"
            " image_id LIMIT 1")).scalar()
        out["member_counts"] = {m: c.execute(text(
            "SELECT count(*) FROM image_members m JOIN images i ON i.id = m.image_id"
            " WHERE m.member = :m AND m.deleted = :f AND i.deleted = :f"), m=m, f=False).scalar()
            for m in (TENANT, POPULAR)}
        out["tenant_owns"] = c.execute(text(
            "SELECT count(*) FROM images WHERE owner = :tenant AND deleted = :f"), **p).scalar()
        # The admin's markers walk each sort key's index (MariaDB is told
        # which); the tenant's few thousand images are sorted here.
        total = c.execute(text("SELECT count(*) FROM images WHERE deleted = :f"), **p).scalar()
        out["visible_admin"] = total
        for key in SORT_KEYS:
            col = SORT_COLUMNS[key]
            hint = "" if d.name == "postgresql" else " FORCE INDEX (%s)" % SORT_INDEXES[key]
            for desc in (False, True):
                order = ", ".join("%s%s" % (x, " DESC" if desc else "")
                                  for x in ([col] if col == "id" else [col, "id"]))
                out["markers"][("admin", key, desc)] = c.execute(text(
                    "SELECT id FROM images%s WHERE deleted = :f ORDER BY %s LIMIT 1 OFFSET %d"
                    % (hint, order, int(total * 0.7))), **p).scalar()
        cols = [SORT_COLUMNS[k] for k in SORT_KEYS]
        rows = c.execute(text("SELECT %s FROM images WHERE deleted = :f AND %s" % (
            ", ".join(cols), _VISIBLE)), **p).fetchall()
        out["visible_tenant"] = len(rows)
        for i, key in enumerate(SORT_KEYS):
            for desc in (False, True):
                ordered = sorted(rows, key=lambda r: (r[i], r[0]), reverse=desc)
                out["markers"][("tenant", key, desc)] = ordered[int(len(rows) * 0.7)][0]
    engine.dispose()
    return out


class Server(Glance):
    """
    glancetx on the bench database, trusting identity headers as behind
    keystonemiddleware.
    """

    def __init__(self, d: Dialect) -> None:
        Glance.__init__(self, {"sql_connection": d.url, "auth_strategy": "keystone"},
                        label="million-" + d.short)

    def _waitReady(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get(self.port, "/v1/images?limit=1", ADMIN)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("glancetx on %d never answered GET /v1/images" % (self.port,))


def get(port: int, path: str, headers: Dict[str, str], conn=None) -> Tuple[int, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, body


def sortValue(key: str, image: Dict):
    v = image.get(key)
    if v is None:
        return {"name": "", "disk_format": "", "container_format": "", "size": -1,
                "updated_at": image.get("created_at")}.get(key, v)
    return v


def shapes(f: Dict) -> List[Tuple[str, Dict, Callable[[Dict], bool]]]:
    """
    (label, query, what each image of the page must satisfy).  Sorting,
    markers and visibility are checked for every page.
    """
    recent = (f["newest_change"] - datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%S")
    props = lambda i, k, v: (i.get("properties") or {}).get(k) == v  # noqa: E731
    sizeIn = lambda i, lo, hi: i.get("size") is not None and lo <= i["size"] <= hi  # noqa: E731
    out = [("default", {}, None), ("default brief", {"brief": True}, None)]
    for key in SORT_KEYS:
        for dir_ in ("asc", "desc"):
            for page in ("", " p70"):
                q = {"sort_key": key, "sort_dir": dir_}
                if page:
                    q["p70"] = True
                out.append(("sort=%s %s%s" % (key, dir_, page), q, None))
    out += [
        ("status=queued (0.2%)", {"status": "queued"}, lambda i: i["status"] == "queued"),
        ("status=active", {"status": "active"}, lambda i: i["status"] == "active"),
        ("disk_format=aki (0.05%)", {"disk_format": "aki"}, lambda i: i["disk_format"] == "aki"),
        ("disk_format=qcow2 (50%)", {"disk_format": "qcow2"},
         lambda i: i["disk_format"] == "qcow2"),
        ("size 1 GiB..+1 MiB", {"size_min": GiB, "size_max": GiB + (1 << 20)},
         lambda i: sizeIn(i, GiB, GiB + (1 << 20))),
        ("size 1 MiB..40 GiB", {"size_min": 1 << 20, "size_max": 40 * GiB},
         lambda i: sizeIn(i, 1 << 20, 40 * GiB)),
        ("os_distro=plan9 (0.01%)", {"property-os_distro": "plan9"},
         lambda i: props(i, "os_distro", "plan9")),
        ("architecture=aarch64 (13%)", {"property-architecture": "aarch64"},
         lambda i: props(i, "architecture", "aarch64")),
        ("is_public=true", {"is_public": "true"}, None),
        ("is_public=false", {"is_public": "false"}, None),
        ("changes-since 2000", {"changes-since": "2000-01-01T00:00:00"}, None),
        ("changes-since newest-6h", {"changes-since": recent},
         lambda i: (i.get("updated_at") or "") >= recent),
        # Several filters at once.
        ("active+qcow2+1-8GiB+aarch64", {"status": "active", "disk_format": "qcow2",
                                         "size_min": GiB, "size_max": 8 * GiB,
                                         "property-architecture": "aarch64"},
         lambda i: i["status"] == "active" and i["disk_format"] == "qcow2"
         and sizeIn(i, GiB, 8 * GiB) and props(i, "architecture", "aarch64")),
        ("x86_64 + aki", {"property-architecture": "x86_64", "disk_format": "aki"},
         lambda i: props(i, "architecture", "x86_64") and i["disk_format"] == "aki"),
        ("sort=size desc + ubuntu", {"sort_key": "size", "sort_dir": "desc",
                                     "property-os_distro": "ubuntu"},
         lambda i: props(i, "os_distro", "ubuntu")),
        ("sort=size asc + aarch64", {"sort_key": "size", "sort_dir": "asc",
                                     "property-architecture": "aarch64"},
         lambda i: props(i, "architecture", "aarch64")),
        ("queued + aarch64 by updated", {"status": "queued", "sort_key": "updated_at",
                                         "property-architecture": "aarch64"},
         lambda i: i["status"] == "queued" and props(i, "architecture", "aarch64")),
    ]
    return out


def expected(c, viewer: str, params: Dict) -> int:
    """
    How many images the first page of a list should hold: the database's
    own count of the matches, stopped at a page.
    """
    from sqlalchemy import text
    p = {"t": True, "f": False, "tenant": TENANT}
    where = ["updated_at >= :cs" if "changes-since" in params else "deleted = :f"]
    p["cs"] = params.get("changes-since")
    if viewer == "tenant":
        where.append(_VISIBLE)
    elif params.get("is_public") in ("true", "false"):
        where.append("is_public = :%s" % params["is_public"][0])
    for name in ("status", "disk_format"):
        if name in params:
            where.append("%s = :%s" % (name, name))
            p[name] = params[name]
    if "size_min" in params:
        where.append("size BETWEEN :size_min AND :size_max")
        p.update(size_min=params["size_min"], size_max=params["size_max"])
    for i, (k, v) in enumerate(sorted(params.items())):
        if k.startswith("property-"):
            where.append("EXISTS (SELECT 1 FROM image_properties p WHERE p.image_id = images.id"
                         " AND p.name = :pn%d AND p.value = :pv%d AND p.deleted = :f)" % (i, i))
            p.update({"pn%d" % i: k[len("property-"):], "pv%d" % i: v})
    return c.execute(text("SELECT count(*) FROM (SELECT 1 FROM images WHERE %s LIMIT %d) m"
                          % (" AND ".join(where), PAGE)), **p).scalar()


def check(viewer: str, q: Dict, test, body: bytes, f: Dict, marker: Optional[str],
          size: int) -> Optional[str]:
    """
    What is wrong with a page, or None.
    """
    page = json.loads(body)["images"]
    if size is not None and len(page) != size:
        return "%d images where the database has %d" % (len(page), size)
    for i in page:
        if test is not None and not test(i):
            return "image %s does not match the filter" % i["id"]
        if q.get("brief"):
            continue
        if viewer == "tenant" and not (i["is_public"] or i["owner"] == TENANT
                                       or i["id"] in f["shared_ids"]):
            return "image %s is not visible to %s" % (i["id"], TENANT)
        if viewer == "admin" and q.get("is_public") in ("true", "false") \
                and i["is_public"] != (q["is_public"] == "true"):
            return "image %s has is_public %s" % (i["id"], i["is_public"])
        if i.get("deleted") and "changes-since" not in q:
            return "deleted image %s listed" % i["id"]
    if q.get("brief"):
        return None
    key, desc = q.get("sort_key", "created_at"), q.get("sort_dir", "desc") == "desc"
    keys = [(sortValue(key, i), i["id"]) for i in page]
    if keys != sorted(keys, reverse=desc):
        return "page not in %s %s order" % (key, "desc" if desc else "asc")
    if marker in [i["id"] for i in page]:
        return "the marker is on its own next page"
    return None


def timeShapes(d: Dialect, g: Server, f: Dict, failures: List[str]) -> Dict:
    out = {}
    engine = d.engine()
    db = engine.connect()
    conns = {"admin": http.client.HTTPConnection("127.0.0.1", g.port, timeout=60),
             "tenant": http.client.HTTPConnection("127.0.0.1", g.port, timeout=60)}
    headers = {"admin": ADMIN, "tenant": MEMBER}
    work = []
    for label, q, test in shapes(f):
        for viewer in ("admin", "tenant"):
            params = {k: v for k, v in q.items() if k not in ("brief", "p70")}
            if viewer == "admin" and "is_public" not in params:
                params["is_public"] = "none"
            marker = None
            size = expected(db, viewer, params)
            if q.get("p70"):
                marker = f["markers"][(viewer, q["sort_key"], q["sort_dir"] == "desc")]
                params["marker"] = marker
                # The page 70% down is full when 30% of the list is.
                size = PAGE if f["visible_" + viewer] * 0.3 > PAGE + 1 else None
            path = "/v1/images%s?%s" % ("" if q.get("brief") else "/detail", urlencode(params))
            work.append((label, viewer, path,
                         lambda body, v=viewer, q=q, t=test, m=marker, n=size:
                         check(v, q, t, body, f, m, n)))
    db.close()
    engine.dispose()
    many = f["many_members"]
    memberCount = lambda body: len(json.loads(body)["members"])  # noqa: E731
    sharedCount = lambda body: len(json.loads(body)["shared_images"])  # noqa: E731
    for viewer in ("admin", "tenant"):
        work.append(("members of 1 image", viewer, "/v1/images/%s/members" % many,
                     lambda body: None if memberCount(body) == 999
                     else "%d members, not 999" % memberCount(body)))
        work.append(("shared-images %s" % TENANT, viewer, "/v1/shared-images/" + TENANT,
                     lambda body: None if sharedCount(body) == f["member_counts"][TENANT]
                     else "%d shared images, not %d" % (sharedCount(body),
                                                       f["member_counts"][TENANT])))
        want = f["member_counts"][POPULAR] if viewer == "admin" else None
        work.append(("shared-images %s" % POPULAR, viewer, "/v1/shared-images/" + POPULAR,
                     lambda body, e=want: None if e is None or sharedCount(body) == e
                     else "%d shared images, not %d" % (sharedCount(body), e)))
    for label, viewer, path, checker in work:
        times: List[float] = []
        out.setdefault(label, {"paths": {}})["paths"][viewer] = path
        try:
            for n in range(REQUESTS + 1):
                t0 = time.perf_counter()
                status, body = get(g.port, path, headers[viewer], conns[viewer])
                ms = (time.perf_counter() - t0) * 1000
                if status != 200:
                    raise RuntimeError("HTTP %d: %s" % (status, body[:200]))
                if n == 0:
                    wrong = checker(body)
                    if wrong:
                        raise RuntimeError(wrong)
                else:
                    times.append(ms)
        except Exception as e:
            failures.append("%s %s %s: %s" % (viewer, label, path, e))
            log("million FAIL %s %s: %s" % (viewer, label, e))
            out[label]["wrong"] = "%s: %s" % (viewer, e)
            conns[viewer].close()
        out[label][viewer] = median(times) if len(times) == REQUESTS else None
        out[label][viewer + "_samples"] = times
    for c in conns.values():
        c.close()
    return out


def timeUpkeep(d: Dialect) -> Dict:
    """
    The two things a server does to the whole catalogue besides lists:
    the scrubber's look for claims a dead process left (the registry's
    own statement, each time rolled back), and
    `glancetx-manage db purge`'s batches of 500 images (glancetx's own
    purge(); it removes what it times, so it runs last).
    """
    from sqlalchemy import text
    from glancetx.registry.purge import BATCH, purge
    engine = d.engine()
    stale = []
    with engine.connect() as c:
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            with c.begin() as tx:
                c.execute(registry.requeueStale(datetime.datetime(2030, 1, 1)))
                tx.rollback()
            stale.append((time.perf_counter() - t0) * 1000)
        deleted = c.execute(text("SELECT count(*) FROM images WHERE status = 'deleted'"
                                 " AND location IS NULL")).scalar()
    engine.dispose()
    batches = []
    for _ in range(REQUESTS if deleted >= REQUESTS * BATCH else 0):
        t0 = time.perf_counter()
        removed = purge(d.url, 30, BATCH)
        batches.append((time.perf_counter() - t0) * 1000)
        if removed["images"] != BATCH:
            raise RuntimeError("db purge removed %d images, not %d" % (removed["images"], BATCH))
    return {"stale_ms": stale, "purge_ms": batches}


def report(results, d: Dialect, timed: Dict) -> Dict:
    slow = []
    for label, t in timed.items():
        a, b = t.get("admin"), t.get("tenant")
        worst = max(x for x in (a, b, 0) if x is not None)
        ok = a is not None and b is not None and worst <= SLOW_MS
        if worst > SLOW_MS:
            slow.append((worst, label))
        results.add("million", "%s %s" % (d.short, label), a, "ms", b, "as " + TENANT,
                    "<= %.0f ms" % SLOW_MS, ok, note="WRONG: " + t["wrong"] if "wrong" in t
                    else "SLOW" if worst > SLOW_MS else "")
    slowest = max(((max(x for x in (t.get("admin"), t.get("tenant"), 0) if x is not None), l)
                   for l, t in timed.items()), default=(None, None))
    print("million   %s: %d shapes timed (admin and %s), %d over %.0f ms; slowest %s %.1f ms"
          % (d.name, len(timed), TENANT, len(slow), SLOW_MS, slowest[1], slowest[0] or 0))
    return {"shapes": len(timed), "over_50ms": [l for _, l in sorted(slow, reverse=True)],
            "slowest": slowest[1], "slowest_ms": slowest[0]}


def run(results, databases=("postgresql", "mariadb"), count: int = 1000000,
        keep: bool = False) -> Dict:
    summary: Dict = {}
    raw: Dict = {}
    failures: List[str] = []
    for name in databases:
        d = Dialect(name)
        try:
            filled = fill(d, count)
            results.add("million", "%s fill %d images (s)" % (d.short, count),
                        filled["fill_s"], "s", note="db sync %.1fs, ANALYZE %.1fs" % (
                            filled["sync_s"], filled["analyze_s"]))
            f = facts(d)
            log("million %s: %s owns %d live images, is shared %d; %s is shared %d;"
                " %d visible to the tenant" % (
                    d.name, TENANT, f["tenant_owns"], f["member_counts"][TENANT], POPULAR,
                    f["member_counts"][POPULAR], f["visible_tenant"]))
            with Server(d) as g:
                timed = timeShapes(d, g, f, failures)
            out = report(results, d, timed)
            upkeep = timeUpkeep(d)
            results.add("million", "%s scrubber's stale-claim check" % d.short,
                        median(upkeep["stale_ms"]), "ms")
            if upkeep["purge_ms"]:
                results.add("million", "%s db purge, a batch of 500 images" % d.short,
                            median(upkeep["purge_ms"]), "ms",
                            note="%.0f-%.0f ms" % (min(upkeep["purge_ms"]),
                                                   max(upkeep["purge_ms"])))
            out["upkeep"] = upkeep
            summary.update({"million_%s_%s" % (d.short, k): v for k, v in out.items()})
            summary["million_%s_fill_s" % d.short] = filled["fill_s"]
            raw[d.name] = {"images": count, "fill": filled, "timed": timed, "summary": out,
                           "facts": {k: v for k, v in f.items() if k not in ("markers",
                                                                             "shared_ids")}}
        finally:
            if keep:
                log("million: keeping database %s on %s" % (DB_NAME, d.name))
            else:
                dropDatabase(d)
    raw["failures"] = failures
    results.setRaw("million", raw)
    if failures:
        summary["million_failures"] = failures
        print("million   FAILED: %d answers were wrong:\n  %s" % (
            len(failures), "\n  ".join(failures)))
    return summary
