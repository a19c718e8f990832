"""The defects planted in the demo catalogue (:data:`DEFECT_KINDS`), so that ingestion's
and image processing's bad-input handling is exercised by every demo run."""

from __future__ import annotations

from typing import Any

import numpy as np

DEFECT_KINDS: tuple[str, ...] = (
    "missing_name",
    "duplicate_sku",
    "missing_image",
    "corrupt_image",
    "path_traversal",
    "missing_name",
    "missing_text",
    "missing_image",
)
PATH_TRAVERSAL_PICTURE = "../../etc/passwd"


def defect_plan(n_defects: int) -> list[str]:
    """The defect kinds planted for a given ``n_defects``: ``DEFECT_KINDS`` in order, cycling.

    Args:
        n_defects: Number of defective rows (>= 0).

    Returns:
        A list of ``n_defects`` kind names from ``DEFECT_KINDS``.
    """
    return [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(n_defects)]


def plant_defects(rows: list[dict[str, Any]], n_defects: int, seed: int) -> list[dict[str, Any]]:
    """Plant ``n_defects`` defects (:func:`defect_plan`) in ``rows``, in place.

    Positions are drawn with ``default_rng([seed, 13])``; rows 0 and 1 stay clean, so a
    duplicated sku always has an earlier original to copy.

    Returns:
        The defect records (``kind``, ``row``, ``sku``, ``picture``; a duplicate also
        ``original_sku`` and ``duplicate_of_row``), in row order.
    """
    if n_defects == 0:
        return []
    rng = np.random.default_rng([seed, 13])
    kinds = defect_plan(n_defects)
    # Rows 0/1 are kept clean so a duplicated sku always has an earlier original to copy.
    positions = rng.choice(np.arange(2, len(rows)), size=n_defects, replace=False)
    taken = {int(p) for p in positions}
    records = []
    for kind, pos in zip(kinds, positions.tolist(), strict=True):
        row = rows[pos]
        record: dict[str, Any] = {"kind": kind, "row": pos, "sku": row["sku"]}
        if kind == "missing_name":
            row["name"] = None
        elif kind == "missing_text":
            row["text"] = None
        elif kind == "duplicate_sku":
            candidates = [j for j in range(pos) if j not in taken]
            src = candidates[int(rng.integers(len(candidates)))]
            taken.add(src)
            record["original_sku"] = row["sku"]
            record["duplicate_of_row"] = src
            row["sku"] = rows[src]["sku"]
            record["sku"] = row["sku"]
        elif kind == "path_traversal":
            row["picture"] = PATH_TRAVERSAL_PICTURE
        record["picture"] = row["picture"]
        records.append(record)
    return sorted(records, key=lambda r: r["row"])
