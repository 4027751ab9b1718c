"""A deleted image keeps its location only while its bytes are removed.

From this revision on, a scrubber takes an image from C{pending_delete} to
C{deleted} with its location, and clears the location once the bytes are
gone.  So a C{deleted} image with a location is a removal under way, or
one whose process died part way, which a later scrubber puts back in
C{pending_delete}.  Before, the location stayed for good, and the bytes
of a removal that died or failed stayed in the store for good.

The images deleted before this revision had their removals tried; their
locations are cleared here, so that no scrubber tries them all again.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE images SET location = NULL"
               " WHERE status = 'deleted' AND location IS NOT NULL")


def downgrade():
    pass
