"""Leases on uploads under way, so that an upload whose process died ends.

Images already in C{saving} get no lease: an upload of a version before
this one may still be running, and nothing would renew its lease.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "image_uploads",
        sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", DateTime, nullable=False),
        sa.Column("store", sa.String(20), nullable=False),
    )


def downgrade():
    op.drop_table("image_uploads")
