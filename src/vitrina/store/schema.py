"""The review database's tables as SQLAlchemy 2 ORM models (the current schema).

Alembic migrations (``vitrina/store/migrations``) build and evolve the schema; these
models describe its head revision and are what the repository queries.

- ``images``: one row per picture of a product in a catalogue, with its review status.
- ``masks``: one mask per image, segmenter and segmenter version (COCO RLE, score, area).
- ``review_events``: every status change: image, old and new status, who, when, source.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Review statuses: every image starts ``unchecked``; reviewers approve or reject its mask;
#: ``bad`` marks a picture unfit for training (the bad-list).
STATUSES: tuple[str, ...] = ("unchecked", "approved", "rejected", "bad")


def utcnow() -> datetime:
    """Timezone-aware current time in UTC (column defaults)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the review database's models."""


class Image(Base):
    """A product picture: ``catalogue``, ``product_id`` and ``image_path`` identify it.

    ``image_path`` is the product's image path relative to the catalogue's image root (it
    survives re-processing); ``processed_path`` is the file the segmenter saw, whose
    SHA-256 is ``content_hash`` and whose size (pixels) is ``width`` × ``height``.
    """

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("catalogue", "product_id", "image_path", name="uq_images_identity"),
        CheckConstraint(
            "status IN ('unchecked', 'approved', 'rejected', 'bad')", name="ck_images_status"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    catalogue: Mapped[str] = mapped_column(String(200), index=True)
    product_id: Mapped[str] = mapped_column(String(500))
    image_path: Mapped[str] = mapped_column(Text)
    processed_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="unchecked", server_default="unchecked")
    reviewer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=utcnow, nullable=True
    )


class Mask(Base):
    """The mask one segmenter (``model`` at ``model_version``) made of one image.

    ``rle`` is COCO's compressed RLE as JSON (``{"size": [h, w], "counts": str}``, column
    major, pycocotools' format); ``image_hash`` the image content it was computed from;
    ``score`` the segmenter's confidence in [0, 1]; ``area_fraction`` mask pixels / image
    pixels.
    """

    __tablename__ = "masks"
    __table_args__ = (
        UniqueConstraint("image_id", "model", "model_version", name="uq_masks_image_model"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(200))
    image_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rle: Mapped[str] = mapped_column(Text)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    area_fraction: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewEvent(Base):
    """One status change of one image: who (``reviewer``), when, through what (``source``)."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    old_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    new_status: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(50))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
