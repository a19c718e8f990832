"""Mask export nodes: the stored masks as PNG files with overlays, written atomically."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vitrina.models.segmentation import decode_rle, overlay
from vitrina.pipelines.image_processing.nodes import output_name
from vitrina.store import STATUSES, ReviewStore
from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)

INDEX_COLUMNS = [
    "product_id",
    "image_path",
    "status",
    "model",
    "model_version",
    "score",
    "area_fraction",
    "mask_path",
    "overlay_path",
    "note",
]


def export_masks(
    review_store: ReviewStore, segmentation_metrics: dict[str, Any], params: dict[str, Any]
) -> pd.DataFrame:
    """Write the masks of the last segmentation run's segmenter to ``output_dir``.

    Layout: ``<output_dir>/<product>.png`` (8-bit L, 255 on the mask, the processed
    image's size) and ``<output_dir>/overlays/<product>.png`` (the image with the mask
    tinted); ``<product>`` is the product id made file-name safe as image processing
    names its files. The folder is written through a temporary one and renamed, so it
    always holds one complete export (masks of images no longer selected disappear).

    Args:
        review_store: The review database.
        segmentation_metrics: The segmentation run's metrics (``segmenter``,
            ``segmenter_version``: whose masks are exported).
        params: ``mask_export``: ``catalogue``, ``output_dir``, ``statuses``
            (``approved``, ``all``, or a list of review statuses).

    Returns:
        ``mask_export_index`` (``INDEX_COLUMNS``): one row per exported mask; ``note``
        ``missing_image`` where the image file went away (mask written, no overlay).

    Raises:
        ValueError: an unknown status in ``statuses``.
    """
    wanted = params.get("statuses", "approved")
    statuses = (
        list(STATUSES) if wanted == "all" else [wanted] if isinstance(wanted, str) else list(wanted)
    )
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise ValueError(f"mask_export.statuses: {bad} not in {list(STATUSES)} (or 'all')")
    masks = review_store.masks(
        params["catalogue"],
        segmentation_metrics["segmenter"],
        segmentation_metrics["segmenter_version"],
        status=statuses,
    )
    out_dir = Path(params["output_dir"])
    rows = []
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / "overlays").mkdir()
        for m in masks.itertuples(index=False):
            mask = decode_rle(m.rle)
            name = output_name(m.product_id, "png")
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(tmp / name)
            note, overlay_path = "", (out_dir / "overlays" / name).as_posix()
            try:
                with Image.open(m.processed_path) as image:
                    overlay(image, mask).save(tmp / "overlays" / name)
            except (FileNotFoundError, TypeError):
                note, overlay_path = "missing_image", ""
            rows.append(
                {**{c: getattr(m, c) for c in INDEX_COLUMNS[:7]},
                 "mask_path": (out_dir / name).as_posix(), "overlay_path": overlay_path,
                 "note": note}
            )  # fmt: skip
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    missing = int((index["note"] == "missing_image").sum())
    logger.info(
        "mask_export: %d masks (%s) → %s%s", len(index), ", ".join(statuses), out_dir,
        f"; {missing} images missing, no overlay for them" if missing else "",
    )  # fmt: skip
    return index
