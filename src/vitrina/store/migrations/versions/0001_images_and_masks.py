"""Images with a review status, and their masks.

Revision ID: 0001
Revises:
Create Date: 2026-01-15
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("catalogue", sa.String(200), nullable=False),
        sa.Column("product_id", sa.String(500), nullable=False),
        sa.Column("image_path", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="unchecked"),
        sa.UniqueConstraint("catalogue", "product_id", "image_path", name="uq_images_identity"),
        sa.CheckConstraint(
            "status IN ('unchecked', 'approved', 'rejected', 'bad')", name="ck_images_status"
        ),
    )
    op.create_index("ix_images_catalogue", "images", ["catalogue"])
    op.create_table(
        "masks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "image_id",
            sa.Integer,
            sa.ForeignKey("images.id", ondelete="CASCADE", name="fk_masks_image"),
            nullable=False,
        ),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("image_hash", sa.String(64), nullable=True),
        sa.Column("rle", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("area_fraction", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("image_id", "model", "model_version", name="uq_masks_image_model"),
    )
    op.create_index("ix_masks_image_id", "masks", ["image_id"])


def downgrade() -> None:
    op.drop_table("masks")
    op.drop_table("images")
