"""The images, image_properties and image_members tables.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "images",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255)),
        sa.Column("disk_format", sa.String(20)),
        sa.Column("container_format", sa.String(20)),
        sa.Column("size", sa.BigInteger),
        sa.Column("virtual_size", sa.BigInteger),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("is_public", sa.Boolean, nullable=False),
        sa.Column("checksum", sa.String(32)),
        sa.Column("min_disk", sa.Integer, nullable=False),
        sa.Column("min_ram", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("location", sa.Text),
        sa.Column("created_at", DateTime, nullable=False),
        sa.Column("updated_at", DateTime),
        sa.Column("deleted_at", DateTime),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_index("ix_images_deleted_created_at_id", "images", ["deleted", "created_at", "id"])
    op.create_index("ix_images_is_public", "images", ["is_public"])
    op.create_index("ix_images_owner", "images", ["owner"])
    op.create_index("ix_images_status", "images", ["status"])
    op.create_index("ix_images_checksum", "images", ["checksum"])
    op.create_index("ix_images_updated_at", "images", ["updated_at"])
    op.create_table(
        "image_properties",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text),
        sa.Column("created_at", DateTime, nullable=False),
        sa.Column("updated_at", DateTime),
        sa.Column("deleted_at", DateTime),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.UniqueConstraint("image_id", "name", name="uq_image_properties_image_id_name"),
    )
    op.create_index("ix_image_properties_name", "image_properties", ["name"])
    op.create_table(
        "image_members",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), nullable=False),
        sa.Column("member", sa.String(255), nullable=False),
        sa.Column("can_share", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", DateTime, nullable=False),
        sa.Column("updated_at", DateTime),
        sa.Column("deleted_at", DateTime),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.UniqueConstraint("image_id", "member", name="uq_image_members_image_id_member"),
    )
    op.create_index("ix_image_members_member", "image_members", ["member"])


def downgrade():
    op.drop_table("image_members")
    op.drop_table("image_properties")
    op.drop_table("images")
