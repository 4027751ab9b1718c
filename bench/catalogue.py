"""
Registering many images fast: rows inserted straight into the SQLite file
whose schema the running server has already created (the server holds no
write lock between requests; SQLite serialises us against it).

Each image is active, 1 KiB, owned by the noauth tenant ("admin"), half of
them public, with two properties, created 1 ms apart.
"""

import datetime
import sqlite3
import uuid
from typing import List

START = datetime.datetime(2020, 1, 1)


def fill(dbPath: str, count: int, start: int = 0, properties: int = 2,
         storeDir: str = "/nonexistent") -> List[str]:
    """
    Insert images number C{start} .. C{start+count-1}; returns their ids.
    """
    db = sqlite3.connect(dbPath, timeout=60)
    ids = []
    rows = []
    props = []
    for i in range(start, start + count):
        iid = str(uuid.UUID(int=(0xbe << 120) + i))
        ids.append(iid)
        t = (START + datetime.timedelta(milliseconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
        rows.append((iid, "bench-%07d" % i, "raw", "bare", 1024, None, "active",
                     i % 2, "%032x" % i, 0, 0, "admin", 0,
                     "file://%s/%s" % (storeDir, iid), t, t, None, 0))
        for p in range(properties):
            props.append((iid, "prop%d" % p, "value-%d-%d" % (p, i), t, t, None, 0))
    with db:
        db.executemany(
            "INSERT INTO images (id, name, disk_format, container_format, size,"
            " virtual_size, status, is_public, checksum, min_disk, min_ram, owner,"
            " protected, location, created_at, updated_at, deleted_at, deleted)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        db.executemany(
            "INSERT INTO image_properties (image_id, name, value, created_at,"
            " updated_at, deleted_at, deleted) VALUES (?,?,?,?,?,?,?)", props)
    # What an operator does after a bulk load (the server itself refreshes
    # the planner's statistics every few minutes).
    db.execute("ANALYZE")
    db.close()
    return ids


def count(dbPath: str) -> int:
    db = sqlite3.connect(dbPath, timeout=60)
    try:
        return db.execute("SELECT count(*) FROM images").fetchone()[0]
    finally:
        db.close()
