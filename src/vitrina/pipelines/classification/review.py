"""Reviewed images for classification: approved, non-bad images only, with their masks.

Seed 001 trains and infers on person masks that reviewers approved. Here one node,
:func:`apply_review`, turns the image manifest into the manifest that classification
training (``classification.review``) or inference (``classification_inference.review``)
reads: optionally only the images approved in the review database (``vitrina review``;
images on the bad-list are never approved), and optionally each picture with its newest
stored mask applied (:func:`vitrina.models.segmentation.apply_mask`: background removed,
or cropped to the mask's box). Masked pictures are written once, as PNG files named by a
hash of the source file and the mask, so a rerun (or a run killed half-way) reuses them.
With both options off the manifest passes through unchanged and the store is not read.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from vitrina.models.segmentation import apply_mask, decode_rle
from vitrina.store import ReviewStore, approved_image_ids
from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)

#: Columns of the review report (one row per reason an image was left out or changed).
REPORT_COLUMNS = ("step", "n_images", "detail")


def check_review_params(review: dict[str, Any] | None) -> dict[str, Any]:
    """``review`` with defaults filled in, checked by
    :class:`~vitrina.pipelines.classification.schema.ReviewParams` (the one place its rules
    live): ``approved_only`` (bool), ``mask`` (None or a
    :data:`~vitrina.models.segmentation.MASK_MODES` name), ``segmenter`` (None: any),
    ``catalogue``, ``masked_dir``.

    Raises:
        ValueError: an unknown ``mask`` mode, a mask mode without ``masked_dir``, or a
            filter without ``catalogue`` (pydantic's ``ValidationError`` is a ValueError).
    """
    from vitrina.pipelines.classification.schema import ReviewParams

    return ReviewParams.model_validate(review or {}).model_dump()


def newest_masks(store: ReviewStore, catalogue: str, segmenter: str | None) -> pd.DataFrame:
    """The newest mask of each product's image: ``product_id, model, model_version, rle``
    (one row per product; ``segmenter`` None takes any model's masks)."""
    masks = store.masks(catalogue, model=segmenter)
    if masks.empty:
        return masks
    masks = masks.sort_values(["created_at", "image_id"], ascending=False)
    return masks.drop_duplicates("product_id")[["product_id", "model", "model_version", "rle"]]


def masked_image_path(source: str, rle: str, mode: str, masked_dir: str | Path) -> Path:
    """Where the masked copy of ``source`` lives: ``<masked_dir>/<mode>/<sha1>.png``, the
    hash over the source path, its size and modification time, the mask and the mode, so
    a changed picture or mask gets a new file and an unchanged one is reused."""
    stat = Path(source).stat()
    key = f"{source}|{stat.st_size}|{stat.st_mtime_ns}|{rle}|{mode}".encode()
    return Path(masked_dir) / mode / f"{hashlib.sha1(key).hexdigest()}.png"


def write_masked_image(source: str, rle: str, mode: str, target: Path) -> None:
    """Apply the mask ``rle`` (COCO RLE JSON) to the picture ``source`` and write the
    result atomically as PNG at ``target`` (nothing is written when it already exists).

    Raises:
        OSError: ``source`` cannot be read or ``target`` written.
    """
    if target.is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as picture:
        masked = apply_mask(picture, decode_rle(rle), mode)
    with atomic_path(target) as tmp:
        masked.save(tmp, format="PNG")


def apply_review(
    image_manifest: pd.DataFrame, review_store: ReviewStore, review: dict[str, Any] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest classification reads, after the review database's verdicts and masks.

    Args:
        image_manifest: ``product_id``, ``processed_path`` (and any other columns, kept).
        review_store: The review database (:class:`vitrina.store.ReviewStore`).
        review: ``approved_only``: keep only approved images (the bad-list's are never
            approved); ``mask``: null, ``remove_background`` or ``crop``; ``segmenter``:
            whose masks (null: the newest of any); ``catalogue``: the store's catalogue
            name; ``masked_dir``: where masked pictures are written.

    Returns:
        ``(manifest, report)``: the manifest with ``processed_path`` pointing at the masked
        pictures where a mask applies, and a report (:data:`REPORT_COLUMNS`) counting the
        images left out (not approved; no mask; unreadable picture) and those masked.
        Images without a mask are left out when ``mask`` is set: a classifier trained on
        masked pictures should not see unmasked ones.

    Raises:
        ValueError: bad ``review`` settings (:func:`check_review_params`), or nothing left.
    """
    review = check_review_params(review)
    rows: list[tuple[str, int, str]] = []
    manifest = image_manifest.copy()
    if not review["approved_only"] and review["mask"] is None:
        return manifest, pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    catalogue = review["catalogue"]
    if review["approved_only"]:
        approved = approved_image_ids(review_store, catalogue)
        keep = manifest["product_id"].astype(str).isin(approved)
        rows.append(("not approved", int((~keep).sum()), "status is not approved, or bad-listed"))
        manifest = manifest[keep]
    if review["mask"] is not None:
        manifest = _masked(manifest, review_store, review, rows)
    if manifest.empty:
        raise ValueError(
            f"review: no image of catalogue {catalogue!r} left after the review filters "
            f"({'; '.join(f'{n} {step}' for step, n, _ in rows)}); approve images with "
            "`vitrina review approve ...` or run the segmentation pipeline first"
        )
    logger.info("review: %d images kept; %s", len(manifest), rows)
    return manifest.reset_index(drop=True), pd.DataFrame(rows, columns=list(REPORT_COLUMNS))


def _masked(
    manifest: pd.DataFrame,
    store: ReviewStore,
    review: dict[str, Any],
    rows: list[tuple[str, int, str]],
) -> pd.DataFrame:
    """``manifest`` with masked pictures in ``processed_path``; rows without a mask or
    with an unreadable picture left out, and counted in ``rows``."""
    masks = newest_masks(store, review["catalogue"], review["segmenter"]).set_index("product_id")
    has_mask = manifest["product_id"].astype(str).isin(masks.index)
    rows.append(("no mask", int((~has_mask).sum()), f"segmenter {review['segmenter'] or 'any'}"))
    manifest = manifest[has_mask].copy()
    paths, failed = [], 0
    for pid, source in zip(
        manifest["product_id"].astype(str), manifest["processed_path"], strict=True
    ):
        try:
            target = masked_image_path(str(source), masks.at[pid, "rle"], review["mask"],
                                       review["masked_dir"])  # fmt: skip
            write_masked_image(str(source), masks.at[pid, "rle"], review["mask"], target)
            paths.append(str(target))
        except (OSError, ValueError) as exc:
            logger.warning("review: image of %s left out: %s", pid, exc)
            paths.append(None)
            failed += 1
    manifest["processed_path"] = paths
    rows.append(("unreadable", failed, "picture or mask could not be read"))
    rows.append(("masked", int(manifest["processed_path"].notna().sum()), review["mask"]))
    return manifest.dropna(subset=["processed_path"])
