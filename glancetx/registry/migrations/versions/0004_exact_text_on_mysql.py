"""On MySQL and MariaDB, text compared byte for byte, in utf8mb4.

Their default collations ignore case, accents and trailing spaces, and the
registry compares tenants, members, names and properties in SQL: tenant
C{ALICE} (or C{alicé}) saw C{alice}'s private images there, and members
C{Bob} and C{bob} of one image broke its unique key.  A database created
in another character set (latin1) also refused text outside it.  Each
text column becomes utf8mb4 with a binary collation that does not pad
(MariaDB's utf8mb4_nopad_bin, MySQL 8's utf8mb4_0900_bin; utf8mb4_bin,
which pads, on older servers): what PostgreSQL and SQLite compare.

The conversion rebuilds each table, once.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: The text columns, as (table, column, type, nullable).  Not the image
#: ids, which the foreign keys tie together (MariaDB will not change a
#: column one uses); they are ASCII the service lowercases.
COLUMNS = (
    ("images", "name", "VARCHAR(255)", True),
    ("images", "disk_format", "VARCHAR(20)", True),
    ("images", "container_format", "VARCHAR(20)", True),
    ("images", "status", "VARCHAR(30)", False),
    ("images", "checksum", "VARCHAR(32)", True),
    ("images", "owner", "VARCHAR(255)", True),
    ("images", "location", "MEDIUMTEXT", True),
    ("image_properties", "name", "VARCHAR(255)", False),
    ("image_properties", "value", "MEDIUMTEXT", True),
    ("image_members", "member", "VARCHAR(255)", False),
    ("image_members", "status", "VARCHAR(20)", False),
    ("image_uploads", "holder", "VARCHAR(64)", False),
    ("image_uploads", "store", "VARCHAR(20)", False),
)
#: Binary collations, most exact first.
COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin")


def exactCollation(bind) -> str:
    """
    The server's most exact binary collation of utf8mb4.
    """
    known = {row[0] for row in bind.execute(
        "SELECT COLLATION_NAME FROM information_schema.COLLATIONS"
        " WHERE CHARACTER_SET_NAME = 'utf8mb4'")}
    return next(c for c in COLLATIONS if c in known)


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name != "mysql":
        return
    collation = exactCollation(bind)
    changes = {}
    for table, column, type_, nullable in COLUMNS:
        changes.setdefault(table, []).append(
            "MODIFY %s %s CHARACTER SET utf8mb4 COLLATE %s %s"
            % (column, type_, collation, "NULL" if nullable else "NOT NULL"))
    for table, modifications in changes.items():
        # One statement per table, so each table is rebuilt once, not
        # once per column; columns added later take the table's default.
        op.execute("ALTER TABLE %s %s, DEFAULT CHARACTER SET utf8mb4 COLLATE %s"
                   % (table, ", ".join(modifications), collation))


def downgrade():
    pass
