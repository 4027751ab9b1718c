"""
Removing the rows of images deleted long ago, as Glance's
C{glance-manage db purge} did.

A delete keeps the image's row (C{deleted}, with its properties and
members), so that lists with C{changes-since} can tell caches what went;
without a purge the tables only grow, and every such list pages through
them.  Only images in C{deleted} go: one in C{pending_delete}, or
C{deleted} with its location still set (a removal under way, or one whose
server died), still has bytes in a store for a scrubber to remove, and one with an upload lease
or a sweep reminder still has a store to be cleaned, and both need their
row to find them.

This blocks: it runs from C{glancetx-manage}, never in the server.
"""

import datetime
from typing import Dict

import sqlalchemy
from sqlalchemy import and_, exists, select

from glancetx.registry.schema import image_members, image_properties, image_uploads, images
from glancetx.registry.timeouts import connectArgs

#: Rows removed in one transaction, so that a large purge holds no lock
#: for long.
BATCH = 500


def purge(url: str, ageInDays: int, maxRows: int,
          now: datetime.datetime = None) -> Dict[str, int]:
    """
    Remove images deleted more than C{ageInDays} days ago, at most
    C{maxRows} of them (-1: all), with their properties and members; and
    as many properties and members that were themselves deleted that long
    ago from images that remain.

    @return: how many rows went, by table.
    """
    cutoff = (now or datetime.datetime.utcnow()) - datetime.timedelta(days=ageInDays)
    removed = {"images": 0, "image_properties": 0, "image_members": 0}
    engine = sqlalchemy.create_engine(url, connect_args=connectArgs(url))
    try:
        for child in (image_properties, image_members):
            _purgeChildren(engine, child, cutoff, maxRows, removed)
        _purgeImages(engine, cutoff, maxRows, removed)
    finally:
        engine.dispose()
    return removed


def _batches(maxRows: int):
    left = maxRows
    while left != 0:
        size = BATCH if left < 0 else min(BATCH, left)
        yield size
        if left > 0:
            left -= size


def _purgeImages(engine, cutoff, maxRows: int, removed: Dict[str, int]) -> None:
    due = and_(images.c.deleted == True,  # noqa: E712 (SQL, not Python)
               images.c.status == "deleted",
               images.c.deleted_at < cutoff,
               images.c.location.is_(None),
               ~exists().where(image_uploads.c.image_id == images.c.id))

    def remove(conn, ids):
        for child in (image_properties, image_members):
            removed[child.name] += conn.execute(
                child.delete().where(child.c.image_id.in_(ids))).rowcount
        removed["images"] += conn.execute(images.delete().where(images.c.id.in_(ids))).rowcount
    _inBatches(engine, select([images.c.id]).where(due).order_by(images.c.deleted_at),
               remove, maxRows)


def _purgeChildren(engine, table, cutoff, maxRows: int, removed: Dict[str, int]) -> None:
    due = and_(table.c.deleted == True,  # noqa: E712
               table.c.deleted_at < cutoff)

    def remove(conn, ids):
        removed[table.name] += conn.execute(table.delete().where(table.c.id.in_(ids))).rowcount
    _inBatches(engine, select([table.c.id]).where(due).order_by(table.c.id), remove, maxRows,
               after=table.c.id)


def _inBatches(engine, due, remove, maxRows: int, after=None) -> None:
    """
    C{remove(conn, ids)} the rows whose ids C{due} selects, a batch per
    transaction, C{maxRows} in all (-1: every one).

    @param after: the column C{due} is ordered by, if each batch should
        start past the last one's (ids): deleted rows among many live
        ones, which each batch would otherwise read again from the start
        (at 3.5 million properties, each batch took longer than the last).
    """
    last = None
    for size in _batches(maxRows):
        with engine.begin() as conn:
            page = due if last is None else due.where(after > last)
            ids = [r[0] for r in conn.execute(page.limit(size))]
            if not ids:
                return
            remove(conn, ids)
        if len(ids) < size:
            return
        if after is not None:
            last = ids[-1]
