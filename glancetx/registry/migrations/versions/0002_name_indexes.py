"""Indexes for listing by name: the name filter, and sorting by name.

Lists sort on COALESCE(name, '') so that marker paging is one comparison on
every database; an index on that expression lets SQLite and PostgreSQL walk
the sort order instead of sorting the whole catalogue.  MySQL/MariaDB have no
expression indexes; there the name sort stays a sort.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_images_name", "images", ["name"])
    if op.get_bind().dialect.name in ("sqlite", "postgresql"):
        op.execute("CREATE INDEX ix_images_sort_name ON images (COALESCE(name, ''), id)")


def downgrade():
    if op.get_bind().dialect.name in ("sqlite", "postgresql"):
        op.execute("DROP INDEX ix_images_sort_name")
    op.drop_index("ix_images_name", "images")
