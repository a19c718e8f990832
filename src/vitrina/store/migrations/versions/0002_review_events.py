"""Reviewer and time of the last status change, the processed file, review events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-20
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("processed_path", sa.Text, nullable=True))
        batch.add_column(sa.Column("reviewer", sa.String(200), nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    # Rows written before this revision get the migration time (a bound parameter).
    op.get_bind().execute(
        sa.text("UPDATE images SET updated_at = :now WHERE updated_at IS NULL"),
        {"now": datetime.now(UTC)},
    )
    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "image_id",
            sa.Integer,
            sa.ForeignKey("images.id", ondelete="CASCADE", name="fk_review_events_image"),
            nullable=False,
        ),
        sa.Column("old_status", sa.String(16), nullable=True),
        sa.Column("new_status", sa.String(16), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_review_events_image_id", "review_events", ["image_id"])


def downgrade() -> None:
    op.drop_table("review_events")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("reviewer")
        batch.drop_column("processed_path")
