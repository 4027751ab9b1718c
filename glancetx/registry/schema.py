"""
The registry's tables, as Glance had them (SQLAlchemy Core, no ORM).

The image location lives on the image row (Glance v1 kept one location per
image too).  Properties and members are removed outright when an update
drops them, and soft-deleted with their image so that C{changes-since}
readers still see what a deleted image was.
"""

from typing import Optional

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Computed,
    DateTime as _DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from sqlalchemy.dialects import mysql

from glancetx.errors import ConfigError

#: MySQL's DATETIME drops fractions of a second unless asked to keep them.
DateTime = _DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
#: A location or a property's value: MySQL's TEXT holds 64 KiB, and
#: migration 0004 makes these MEDIUMTEXT.
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql")

#: Every migration, oldest first; the server compares the database with
#: the newest without loading alembic (a test keeps them equal to alembic's).
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")
HEAD_REVISION = REVISIONS[-1]


def newerSchema(revision: str) -> str:
    """
    What to say of a database that a newer glancetx has migrated, or
    another program (Glance's revisions are named like C{2024_1_contract01}):
    the advice to run db sync would not help.
    """
    if not (len(revision) == 4 and revision.isdigit()):
        return ("database schema is at %s, which is no glancetx revision: the database is"
                " another program's (Glance's own?); give glancetx a database of its own"
                % (revision,))
    return ("database schema is at %s, which this glancetx does not know (its newest is %s):"
            " a newer glancetx has migrated it; run that one" % (revision, HEAD_REVISION))


def refuseUnknownRevision(revision: Optional[str], where: str = "") -> None:
    """
    Stop before touching a database whose schema no glancetx revision
    describes: neither the server, a migration nor a purge can know what
    its tables hold.  A database with no schema yet (C{None}) passes.

    @param where: what the message begins with (the option that named
        the database, for the server).
    @raise ConfigError: naming the revision, and what to do instead.
    """
    if revision is not None and revision not in REVISIONS:
        raise ConfigError(where + newerSchema(revision))

metadata = MetaData()

images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255)),
    Column("disk_format", String(20)),
    Column("container_format", String(20)),
    Column("size", BigInteger),
    Column("virtual_size", BigInteger),
    Column("status", String(30), nullable=False),
    Column("is_public", Boolean, nullable=False, default=False),
    Column("checksum", String(32)),
    Column("min_disk", Integer, nullable=False, default=0),
    Column("min_ram", Integer, nullable=False, default=0),
    Column("owner", String(255)),
    Column("protected", Boolean, nullable=False, default=False),
    Column("location", LongText),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    Column("deleted_at", DateTime),
    Column("deleted", Boolean, nullable=False, default=False),
    # The sort keys of a nullable column, computed by the database (see
    # migration 0006): a list pages on one comparison of a column that has
    # an index, on every database (MySQL and MariaDB index no expression).
    Column("sort_name", String(255), Computed("COALESCE(name, '')")),
    Column("sort_disk_format", String(20), Computed("COALESCE(disk_format, '')")),
    Column("sort_container_format", String(20), Computed("COALESCE(container_format, '')")),
    Column("sort_size", BigInteger, Computed("COALESCE(size, -1)")),
    Column("sort_updated_at", DateTime, Computed("COALESCE(updated_at, created_at)")),
    #: When a scrubber claimed the image's bytes, while it has not recorded
    #: them removed; NULL on every other image, so the index holds only them.
    Column("removal_claimed_at", DateTime, Computed(
        "CASE WHEN status = 'deleted' AND location IS NOT NULL THEN updated_at END")),
    Index("ix_images_deleted_created_at_id", "deleted", "created_at", "id"),
    Index("ix_images_sort_id", "deleted", "id"),
    Index("ix_images_sort_name", "deleted", "sort_name", "id"),
    Index("ix_images_sort_status", "deleted", "status", "id"),
    Index("ix_images_sort_disk_format", "deleted", "sort_disk_format", "id"),
    Index("ix_images_sort_container_format", "deleted", "sort_container_format", "id"),
    Index("ix_images_sort_size", "deleted", "sort_size", "id"),
    Index("ix_images_sort_updated_at", "deleted", "sort_updated_at", "id"),
    # A status filter (most are on one) in the default order.
    Index("ix_images_status_created_at", "deleted", "status", "created_at", "id"),
    # changes-since reads deleted images too: no leading deleted.
    Index("ix_images_created_at_id", "created_at", "id"),
    Index("ix_images_is_public", "is_public"),
    Index("ix_images_owner", "owner"),
    # The scrubber's queue and db purge, oldest first.
    Index("ix_images_status_deleted_at", "status", "deleted_at"),
    Index("ix_images_removal_claimed_at", "removal_claimed_at"),
    Index("ix_images_checksum", "checksum"),
    Index("ix_images_updated_at", "updated_at"),
    Index("ix_images_name", "name"),
)

image_properties = Table(
    "image_properties",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("image_id", String(36), ForeignKey("images.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("value", LongText),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    Column("deleted_at", DateTime),
    Column("deleted", Boolean, nullable=False, default=False),
    #: The head of the value, which an index can hold whole on every
    #: database (a value may be longer than an index entry): the
    #: property-<name> filter finds its few images through it.
    Column("value_prefix", String(64), Computed("SUBSTR(value, 1, 64)")),
    UniqueConstraint("image_id", "name", name="uq_image_properties_image_id_name"),
    Index("ix_image_properties_name_value_prefix", "name", "value_prefix"),
)

image_members = Table(
    "image_members",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("image_id", String(36), ForeignKey("images.id"), nullable=False),
    Column("member", String(255), nullable=False),
    Column("can_share", Boolean, nullable=False, default=False),
    Column("status", String(20), nullable=False, default="accepted"),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    Column("deleted_at", DateTime),
    Column("deleted", Boolean, nullable=False, default=False),
    UniqueConstraint("image_id", "member", name="uq_image_members_image_id_member"),
    Index("ix_image_members_member", "member"),
)

#: Uploads under way, one row per image in C{saving}: which process holds
#: it and until when.  The holder pushes C{expires_at} forward while its
#: upload runs; a row left to expire is an upload whose process died, and
#: any process may then kill the image (see L{glancetx.uploadleases}).
image_uploads = Table(
    "image_uploads",
    metadata,
    Column("image_id", String(36), ForeignKey("images.id"), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", DateTime, nullable=False),
    #: The store the bytes go to, which removes what a dead upload left.
    Column("store", String(20), nullable=False),
)
