"""Indexes for every sort key, the filters, changes-since, the scrubber
and db purge.

At a million images, a list sorted by anything but its creation time,
name or id sorted every live row (50-250 ms on PostgreSQL, past 8 s on
MariaDB, which sorted by name so too), as did a filter on a rare status or
format, a size range, a property, and changes-since; the scrubber's look
for stale claims and each batch of db purge read every deleted image.

Lists sort nullable columns on COALESCE(column, ...), so that paging
after a marker is one comparison on every database.  MySQL and MariaDB
index no expression, so the sort keys become columns the database
computes (virtual on SQLite, MySQL and MariaDB; stored on PostgreSQL,
which has no other kind), each with an index on (deleted, key, id) that a
page walks in order.  The same columns serve the filters on those keys,
and a status filter in the default order has an index of its own.
The property filter finds its images through the first 64 characters of
the value, which any index holds (a value can be longer than an index
entry).  A scrubber's claim is a column that is NULL unless a removal is
under way, so its index holds only those.

On PostgreSQL the stored columns rewrite the images table once, under a
lock that stops reads and writes; the indexes each read it once.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")

#: (table, column), as schema.py declares them.
COLUMNS = (
    ("images", sa.Column("sort_name", sa.String(255), sa.Computed("COALESCE(name, '')"))),
    ("images", sa.Column("sort_disk_format", sa.String(20),
                         sa.Computed("COALESCE(disk_format, '')"))),
    ("images", sa.Column("sort_container_format", sa.String(20),
                         sa.Computed("COALESCE(container_format, '')"))),
    ("images", sa.Column("sort_size", sa.BigInteger, sa.Computed("COALESCE(size, -1)"))),
    ("images", sa.Column("sort_updated_at", DateTime,
                         sa.Computed("COALESCE(updated_at, created_at)"))),
    ("images", sa.Column("removal_claimed_at", DateTime, sa.Computed(
        "CASE WHEN status = 'deleted' AND location IS NOT NULL THEN updated_at END"))),
    ("image_properties", sa.Column("value_prefix", sa.String(64),
                                   sa.Computed("SUBSTR(value, 1, 64)"))),
)

#: (name, table, columns) of the new indexes.
INDEXES = (
    ("ix_images_sort_id", "images", ("deleted", "id")),
    ("ix_images_sort_name", "images", ("deleted", "sort_name", "id")),
    ("ix_images_sort_status", "images", ("deleted", "status", "id")),
    ("ix_images_sort_disk_format", "images", ("deleted", "sort_disk_format", "id")),
    ("ix_images_sort_container_format", "images", ("deleted", "sort_container_format", "id")),
    ("ix_images_sort_size", "images", ("deleted", "sort_size", "id")),
    ("ix_images_sort_updated_at", "images", ("deleted", "sort_updated_at", "id")),
    ("ix_images_status_created_at", "images", ("deleted", "status", "created_at", "id")),
    ("ix_images_created_at_id", "images", ("created_at", "id")),
    ("ix_images_status_deleted_at", "images", ("status", "deleted_at")),
    ("ix_images_removal_claimed_at", "images", ("removal_claimed_at",)),
    ("ix_image_properties_name_value_prefix", "image_properties", ("name", "value_prefix")),
)

#: (name, table, columns) of the indexes the new ones lead with.
REPLACED = (
    ("ix_images_status", "images", ("status",)),
    ("ix_image_properties_name", "image_properties", ("name",)),
)


def _columnDDL(bind, column) -> str:
    return str(sa.schema.CreateColumn(column).compile(dialect=bind.dialect))


def _addColumns(bind) -> None:
    if bind.dialect.name == "sqlite":
        # One column a statement; virtual columns cost SQLite nothing here.
        for table, column in COLUMNS:
            op.add_column(table, column.copy())
        return
    # One statement a table, so that PostgreSQL rewrites it once.
    for table in ("images", "image_properties"):
        op.execute("ALTER TABLE %s %s" % (table, ", ".join(
            "ADD COLUMN " + _columnDDL(bind, column.copy())
            for t, column in COLUMNS if t == table)))


def _createIndexes(bind, indexes) -> None:
    if bind.dialect.name != "mysql":
        for name, table, columns in indexes:
            op.create_index(name, table, list(columns))
        return
    # One statement a table: MariaDB builds them in one pass.
    for table in ("images", "image_properties"):
        op.execute("ALTER TABLE %s %s" % (table, ", ".join(
            "ADD INDEX %s (%s)" % (name, ", ".join(columns))
            for name, t, columns in indexes if t == table)))


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name in ("sqlite", "postgresql"):
        # Migration 0002's index on the expression, which the column replaces.
        op.execute("DROP INDEX ix_images_sort_name")
    _addColumns(bind)
    _createIndexes(bind, INDEXES)
    for name, table, _ in REPLACED:
        op.drop_index(name, table)


def downgrade():
    bind = op.get_bind()
    _createIndexes(bind, REPLACED)
    for name, table, _ in INDEXES:
        op.drop_index(name, table)
    for table, column in reversed(COLUMNS):
        op.drop_column(table, column.name)
    if bind.dialect.name in ("sqlite", "postgresql"):
        op.execute("CREATE INDEX ix_images_sort_name ON images (COALESCE(name, ''), id)")
