"""A deleted image keeps its location only while its bytes are removed.

From this revision on, a scrubber takes an image from C{pending_delete} to
C{deleted} with its location, and clears the location once the bytes are
gone.  So a C{deleted} image with a location is a removal under way, or
one whose process died part way, which a later scrubber puts back in
C{pending_delete}.  Before, the location stayed for good, and the bytes
of a removal that died or failed stayed in the store for good.

The images deleted before this revision keep their locations, so those
leaked bytes are removed too: a scrubber puts them back in
C{pending_delete} as it would any removal that died, and a store that
answers that the bytes are gone (the removals that worked) counts as
done.  That is one delete sent to the store per image deleted before.
Except where an image that is not deleted may record the same bytes (an
admin registered those of a deleted image again): removing them would
take another image's, so those deleted images forget theirs here.  One
object has several spellings (C{s3://} and C{s3+http://}, a Swift
location with an old key), so it is matched by its own name, the last
part of its path: two objects of one name in different places only make
a deleted image forget its bytes (leave them, as before this revision),
never remove another image's.

Revision ID: 0005
Revises: 0004
"""
import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Rows cleared in one statement.
BATCH = 500


def _key(location: str) -> bytes:
    # A digest of the object's name, not the name: the set of every live
    # image's stays small on a large catalogue.
    name = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return hashlib.sha256(name.encode("utf-8")).digest()


def upgrade():
    # Two scans and a set, rather than one UPDATE that joins images to
    # itself on the location, which no index covers (a TEXT column).
    bind = op.get_bind()
    live = {_key(row[0]) for row in bind.execute(
        "SELECT location FROM images WHERE location IS NOT NULL"
        " AND status NOT IN ('deleted', 'pending_delete')")}
    if not live:
        return
    shared = [row[0] for row in bind.execute(
        "SELECT id, location FROM images WHERE status = 'deleted'"
        " AND location IS NOT NULL") if _key(row[1]) in live]
    forget = sa.text("UPDATE images SET location = NULL WHERE status = 'deleted'"
                     " AND id IN :ids").bindparams(sa.bindparam("ids", expanding=True))
    for start in range(0, len(shared), BATCH):
        bind.execute(forget, ids=shared[start:start + BATCH])


def downgrade():
    pass
