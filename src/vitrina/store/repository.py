"""The review store: images, masks and review status, behind a small repository API.

Every statement is built with SQLAlchemy Core/ORM constructs, so values (product ids,
paths, reviewer names) always travel as bound parameters, never inside SQL text. Writes
are idempotent under concurrency: images and masks are inserted with ``ON CONFLICT`` on
their unique keys (``catalogue, product_id, image_path``; ``image_id, model,
model_version``), so two segmentation runs on one database never duplicate a row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .engine import create_store_engine, migrate, redact
from .schema import Image, Mask, ReviewEvent, utcnow
from .status import StatusMixin, check_status, chunks

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = [
    "image_id",
    "catalogue",
    "product_id",
    "image_path",
    "processed_path",
    "content_hash",
    "width",
    "height",
    "status",
    "reviewer",
    "updated_at",
]
MASK_COLUMNS = [
    "image_id",
    "product_id",
    "image_path",
    "processed_path",
    "status",
    "model",
    "model_version",
    "image_hash",
    "rle",
    "score",
    "area_fraction",
    "created_at",
]


class ReviewStore(StatusMixin):
    """Repository over the review database at ``url`` (migrated to the head revision).

    Args:
        url: SQLAlchemy URL (``sqlite:///data/review.db``,
            ``postgresql+psycopg://user:password@host/db``).
        engine: An engine to use instead of creating one from ``url`` (tests).

    Raises:
        StoreConnectionError: the database cannot be reached (the URL is named without
            its password).
    """

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.engine = engine if engine is not None else create_store_engine(url)
        migrate(self.engine)
        self.url = redact(self.engine.url)

    def __repr__(self) -> str:
        return f"ReviewStore({self.url!r})"

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()

    def _insert(self, model: type):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(model)
        if dialect == "sqlite":
            return sqlite.insert(model)
        raise NotImplementedError(f"review store supports SQLite and PostgreSQL, not {dialect}")

    # ------------------------------------------------------------------ images
    def upsert_images(
        self, catalogue: str, records: Iterable[Mapping[str, Any]], source: str = "segmentation"
    ) -> dict[tuple[str, str], int]:
        """Insert new images as ``unchecked``; refresh path, hash and size of known ones.

        An image whose ``content_hash`` changed goes back to ``unchecked`` (its mask is
        recomputed, so an approval no longer holds), with a review event; ``bad`` stays.

        Args:
            catalogue: Catalogue name.
            records: ``product_id``, ``image_path`` (str) and optionally
                ``processed_path``, ``content_hash`` (SHA-256 hex), ``width``, ``height``.
            source: ``source`` of the review events written for changed content.

        Returns:
            ``{(product_id, image_path): image id}`` for every record, in one transaction.
        """
        rows = {}
        for r in records:
            key = (str(r["product_id"]), str(r["image_path"]))
            rows[key] = {
                "catalogue": catalogue,
                "product_id": key[0],
                "image_path": key[1],
                "processed_path": r.get("processed_path"),
                "content_hash": r.get("content_hash"),
                "width": None if r.get("width") is None else int(r["width"]),
                "height": None if r.get("height") is None else int(r["height"]),
            }
        if not rows:
            return {}
        ids: dict[tuple[str, str], int] = {}
        with self.engine.begin() as conn:
            pids = sorted({k[0] for k in rows})
            existing = {}
            for chunk in chunks(pids):
                query = select(
                    Image.id,
                    Image.product_id,
                    Image.image_path,
                    Image.processed_path,
                    Image.content_hash,
                    Image.width,
                    Image.height,
                    Image.status,
                ).where(Image.catalogue == catalogue, Image.product_id.in_(chunk))
                for row in conn.execute(query).mappings():
                    existing[(row["product_id"], row["image_path"])] = dict(row)
            new = [v for k, v in rows.items() if k not in existing]
            now = utcnow()
            if new:
                stmt = self._insert(Image).on_conflict_do_nothing(
                    index_elements=["catalogue", "product_id", "image_path"]
                )
                conn.execute(stmt, [{**v, "status": "unchecked", "updated_at": now} for v in new])
            for key, old in existing.items():
                if key not in rows:
                    continue
                want = rows[key]
                fields = ("processed_path", "content_hash", "width", "height")
                if all(old[f] == want[f] for f in fields):
                    continue
                values = {f: want[f] for f in fields}
                changed = old["content_hash"] not in (None, want["content_hash"])
                if changed and old["status"] in ("approved", "rejected"):
                    values.update(status="unchecked", updated_at=now, reviewer=source)
                    conn.execute(
                        self._insert(ReviewEvent),
                        {
                            "image_id": old["id"],
                            "old_status": old["status"],
                            "new_status": "unchecked",
                            "reviewer": source,
                            "source": source,
                            "note": "image content changed",
                            "created_at": now,
                        },
                    )
                conn.execute(update(Image).where(Image.id == old["id"]).values(**values))
            for chunk in chunks(pids):
                query = select(Image.id, Image.product_id, Image.image_path).where(
                    Image.catalogue == catalogue, Image.product_id.in_(chunk)
                )
                for image_id, pid, path in conn.execute(query):
                    if (pid, path) in rows:
                        ids[(pid, path)] = image_id
        return ids

    def images(self, catalogue: str, status: str | None = None) -> pd.DataFrame:
        """The catalogue's images (``IMAGE_COLUMNS``), optionally of one status."""
        query = select(*(getattr(Image, c) for c in IMAGE_COLUMNS[1:]), Image.id).where(
            Image.catalogue == catalogue
        )
        if status is not None:
            query = query.where(Image.status == check_status(status))
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query.order_by(Image.id)).mappings().all())
        if frame.empty:
            return pd.DataFrame(columns=IMAGE_COLUMNS)
        return frame.rename(columns={"id": "image_id"})[IMAGE_COLUMNS]

    def image(self, image_id: int) -> dict[str, Any] | None:
        """One image row by id (``IMAGE_COLUMNS``), or None."""
        query = select(*(getattr(Image, c) for c in IMAGE_COLUMNS[1:])).where(
            Image.id == int(image_id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else {"image_id": int(image_id), **row}

    def image_mask(self, image_id: int, model: str | None = None) -> dict[str, Any] | None:
        """The newest mask of one image (of ``model`` when given): ``model``,
        ``model_version``, ``rle``, ``score``, ``area_fraction``; None without one."""
        query = select(
            Mask.model, Mask.model_version, Mask.rle, Mask.score, Mask.area_fraction
        ).where(Mask.image_id == int(image_id))
        if model is not None:
            query = query.where(Mask.model == model)
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(Mask.created_at.desc(), Mask.id.desc())).first()
        return None if row is None else dict(row._mapping)

    # ------------------------------------------------------------------- masks
    def add_masks(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Insert or replace masks, in one transaction (one batch of a segmentation run).

        Args:
            records: ``image_id``, ``model``, ``model_version``, ``rle`` (JSON text),
                ``area_fraction`` and optionally ``score``, ``image_hash``.

        Returns:
            The number of masks written.
        """
        if not records:
            return 0
        now = utcnow()
        rows = [
            {
                "image_id": int(r["image_id"]),
                "model": str(r["model"]),
                "model_version": str(r["model_version"]),
                "image_hash": r.get("image_hash"),
                "rle": r["rle"],
                "score": None if r.get("score") is None else float(r["score"]),
                "area_fraction": float(r["area_fraction"]),
                "created_at": now,
            }
            for r in records
        ]
        stmt = self._insert(Mask)
        stmt = stmt.on_conflict_do_update(
            index_elements=["image_id", "model", "model_version"],
            set_={
                c: stmt.excluded[c]
                for c in ("image_hash", "rle", "score", "area_fraction", "created_at")
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)
        return len(rows)

    def mask_hashes(
        self, catalogue: str, model: str, model_version: str
    ) -> dict[tuple[str, str], str | None]:
        """``{(product_id, image_path): image hash the mask was made from}`` for one model."""
        query = (
            select(Image.product_id, Image.image_path, Mask.image_hash)
            .join(Mask, Mask.image_id == Image.id)
            .where(
                Image.catalogue == catalogue,
                Mask.model == model,
                Mask.model_version == model_version,
            )
        )
        with self.engine.connect() as conn:
            return {(p, i): h for p, i, h in conn.execute(query)}

    def masks(
        self,
        catalogue: str,
        model: str | None = None,
        model_version: str | None = None,
        status: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Masks of a catalogue with their image's identity and status (``MASK_COLUMNS``).

        Args:
            model, model_version: Only this segmenter (and version).
            status: Only images of this status (or statuses).
        """
        query = (
            select(
                Mask.image_id,
                Image.product_id,
                Image.image_path,
                Image.processed_path,
                Image.status,
                Mask.model,
                Mask.model_version,
                Mask.image_hash,
                Mask.rle,
                Mask.score,
                Mask.area_fraction,
                Mask.created_at,
            )
            .join(Image, Mask.image_id == Image.id)
            .where(Image.catalogue == catalogue)
        )
        if model is not None:
            query = query.where(Mask.model == model)
        if model_version is not None:
            query = query.where(Mask.model_version == model_version)
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            query = query.where(Image.status.in_([check_status(s) for s in wanted]))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(Image.id, Mask.model)).mappings().all()
        return pd.DataFrame(rows, columns=MASK_COLUMNS)
