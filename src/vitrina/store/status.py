"""Review status changes of the store: statuses, bad-list, mark-approved, review events.

Every change writes one ``review_events`` row per image whose status changes (who, when,
through what: ``cli``, ``web``, ``badlist``, ``mark_approved``, ``segmentation``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import select, update

from .schema import STATUSES, Image, ReviewEvent, utcnow

if TYPE_CHECKING:
    from .repository import ReviewStore

#: Ids per ``IN (...)`` list: far below SQLite's 32,766 and PostgreSQL's 65,535 parameters.
CHUNK = 500


def chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class StatusChange:
    """Outcome of a status command: ``changed`` images (one review event each),
    ``unchanged`` ones (already in that status), and the ``unknown`` ids (no image)."""

    changed: int = 0
    unchanged: int = 0
    unknown: list[str] = field(default_factory=list)


class StatusMixin:
    """Status commands of :class:`vitrina.store.ReviewStore` (needs ``engine``, ``_insert``)."""

    def set_status(
        self,
        catalogue: str,
        product_ids: Iterable[str],
        status: str,
        reviewer: str,
        source: str = "cli",
        note: str | None = None,
    ) -> StatusChange:
        """Set the status of every image of the given products, writing review events.

        Raises:
            ValueError: ``status`` is not one of ``STATUSES``.
        """
        ids = list(dict.fromkeys(str(p) for p in product_ids))
        result = StatusChange()
        found: set[str] = set()
        for chunk in chunks(ids):
            cond = (Image.catalogue == catalogue) & Image.product_id.in_(chunk)
            changed, unchanged, matched = self._change(
                cond, check_status(status), reviewer, source, note
            )
            result.changed += changed
            result.unchanged += unchanged
            found.update(matched)
        result.unknown = [p for p in ids if p not in found]
        return result

    def set_image_status(
        self, image_id: int, status: str, reviewer: str, source: str = "web"
    ) -> StatusChange:
        """Set the status of one image by its row id (the review page)."""
        changed, unchanged, matched = self._change(
            Image.id == int(image_id), check_status(status), reviewer, source
        )
        return StatusChange(changed, unchanged, [] if matched else [str(image_id)])

    def push_badlist(
        self, catalogue: str, product_ids: Iterable[str], reviewer: str
    ) -> StatusChange:
        """Mark the images of a bad-list's products ``bad``; unknown ids are only counted."""
        return self.set_status(catalogue, product_ids, "bad", reviewer, source="badlist")

    def mark_all_approved(self, catalogue: str, reviewer: str) -> StatusChange:
        """Approve every ``unchecked`` image of the catalogue (seed 001's ``--mark_approved``).

        Rejected and bad images keep their status.
        """
        cond = (Image.catalogue == catalogue) & (Image.status == "unchecked")
        changed, unchanged, _ = self._change(cond, "approved", reviewer, "mark_approved")
        return StatusChange(changed, unchanged)

    def _change(
        self, cond, status: str, reviewer: str, source: str, note: str | None = None
    ) -> tuple[int, int, set[str]]:
        """Set ``status`` where ``cond``: (changed, already in status, matched product ids)."""
        now = utcnow()
        with self.engine.begin() as conn:
            rows = conn.execute(select(Image.id, Image.product_id, Image.status).where(cond)).all()
            todo = [(i, old) for i, _, old in rows if old != status]
            if todo:
                conn.execute(
                    update(Image)
                    .where(Image.id.in_([i for i, _ in todo]))
                    .values(status=status, reviewer=reviewer, updated_at=now)
                )
                conn.execute(
                    self._insert(ReviewEvent),
                    [
                        {
                            "image_id": i,
                            "old_status": old,
                            "new_status": status,
                            "reviewer": reviewer,
                            "source": source,
                            "note": note,
                            "created_at": now,
                        }
                        for i, old in todo
                    ],
                )
        return len(todo), len(rows) - len(todo), {p for _, p, _ in rows}

    def events(self, catalogue: str) -> pd.DataFrame:
        """Review events of the catalogue, oldest first: ``product_id, image_path,
        old_status, new_status, reviewer, source, note, created_at``."""
        query = (
            select(
                Image.product_id,
                Image.image_path,
                ReviewEvent.old_status,
                ReviewEvent.new_status,
                ReviewEvent.reviewer,
                ReviewEvent.source,
                ReviewEvent.note,
                ReviewEvent.created_at,
            )
            .join(Image, ReviewEvent.image_id == Image.id)
            .where(Image.catalogue == catalogue)
            .order_by(ReviewEvent.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        columns = ["product_id", "image_path", "old_status", "new_status", "reviewer"]
        return pd.DataFrame(rows, columns=[*columns, "source", "note", "created_at"])

    def approved_ids(self, catalogue: str) -> set[str]:
        """Product ids with an approved image and no bad one."""
        query = select(Image.product_id, Image.status).where(
            Image.catalogue == catalogue, Image.status.in_(["approved", "bad"])
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        bad = {p for p, s in rows if s == "bad"}
        return {p for p, s in rows if s == "approved" and p not in bad}


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"review status must be one of {', '.join(STATUSES)}; got {status!r}")
    return status


def approved_image_ids(store: ReviewStore, catalogue: str) -> set[str]:
    """Product ids of ``catalogue`` whose image is approved and not on the bad-list.

    What classification trains on with ``approved_only``; an empty set when nothing is
    approved yet (the caller decides whether that is an error).
    """
    return store.approved_ids(catalogue)
