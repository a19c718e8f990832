"""Segmentation nodes: segment processed images in batches into the review store.

Each batch is segmented in memory, then written in one go (image rows, then masks), so a
killed run loses at most the batch in flight; the next run skips every image whose mask
for this segmenter and version was made from the same content (SHA-256 of the processed
file), and so resumes where the last one stopped. ``process_all: true`` recomputes all.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from vitrina.models.segmentation import Segmentation, decode_rle, make_segmenter, mask_iou, rle_json
from vitrina.pipelines.image_processing.nodes import pad_box, resize_square
from vitrina.store import ReviewStore

logger = logging.getLogger(__name__)

REPORT_COLUMNS = [
    "product_id",
    "image_path",
    "processed_path",
    "outcome",
    "reason",
    "score",
    "area_fraction",
    "iou",
]


def segment_images(
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    review_store: ReviewStore,
    params: dict[str, Any],
    image_params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Segment the processed images and write masks and ``unchecked`` image rows.

    Args:
        products: ``product_id``, ``image_path`` (relative to the image root).
        image_manifest: ``product_id``, ``processed_path`` (image processing's output).
        review_store: The review database.
        params: ``segmentation`` parameters: ``catalogue``, ``segmenter`` (name) and its
            block, ``process_all``, ``batch_size``, ``ground_truth_dir`` (true masks
            ``<image path stem>.png``; null or missing: no IoU).
        image_params: ``image_processing`` parameters (``size``, ``mode``), to bring true
            masks into the processed images' geometry.

    Returns:
        ``segmentation_report`` (``REPORT_COLUMNS``, one row per manifest image; outcome
        ``processed`` / ``skipped`` / ``failed``, reason ``missing_image`` when the file
        went away, ``decode_error``) and ``segmentation_metrics`` (counts, mean and median
        mask IoU over images with a true mask, segmenter name and version).

    Raises:
        ValueError: an unknown segmenter, or a manifest product missing from products.
    """
    started = time.perf_counter()
    catalogue = str(params["catalogue"])
    name = params["segmenter"]
    segmenter = make_segmenter(name, params.get(name))
    sizes = [c for c in ("source_width", "source_height") if c in image_manifest]
    items = image_manifest[["product_id", "processed_path", *sizes]].merge(
        products[["product_id", "image_path"]], on="product_id", how="left"
    )
    if len(sizes) < 2:
        items = items.assign(source_width=None, source_height=None)
    items = items[["product_id", "processed_path", "image_path", "source_width", "source_height"]]
    if items["image_path"].isna().any():
        missing = items.loc[items["image_path"].isna(), "product_id"].head(5).tolist()
        raise ValueError(f"image_manifest has products missing from products, e.g. {missing}")
    process_all = bool(params.get("process_all", False))
    done = {}
    if not process_all:
        done = review_store.mask_hashes(catalogue, segmenter.name, segmenter.version)
    truth = _TrueMasks(params.get("ground_truth_dir"), image_params)
    stored: dict[tuple[str, str], str] = {}
    if truth.folder is not None and done:  # IoU of skipped images from their stored masks
        masks = review_store.masks(catalogue, segmenter.name, segmenter.version)
        keys = zip(masks["product_id"], masks["image_path"], strict=True)
        stored = dict(zip(keys, masks["rle"], strict=True))
    logger.info(
        "segmentation: %d images, segmenter %s (%s), %d with a mask already%s",
        len(items), segmenter.name, segmenter.version, len(done),
        " (process_all: recomputing)" if process_all else "",
    )  # fmt: skip
    batch_size = max(1, int(params.get("batch_size", 64)))
    report: list[dict[str, Any]] = []
    with tqdm(total=len(items), desc="segmentation", unit="img", disable=None) as bar:
        for start in range(0, len(items), batch_size):
            batch = items.iloc[start : start + batch_size]
            images, masks_out = [], []
            for pid, processed, rel, src_w, src_h in batch.itertuples(index=False):
                key = (pid, rel)
                source = _Source(pid, rel, processed, src_w, src_h)
                entry, image, result = _one(segmenter, source, image_params, done.get(key))
                if image is not None:
                    images.append(image)
                    mask = result.mask if result is not None else None
                    if mask is None and key in stored:
                        mask = decode_rle(stored[key])
                    entry["iou"] = truth.iou(rel, mask)
                if result is not None:
                    masks_out.append((pid, rel, image["content_hash"], result))
                report.append(entry)
            _write_batch(review_store, catalogue, segmenter, images, masks_out)
            bar.update(len(batch))
    frame = pd.DataFrame(report, columns=REPORT_COLUMNS)
    metrics = _metrics(frame, segmenter, time.perf_counter() - started)
    summary = {k: metrics[k] for k in ("processed", "skipped", "failed", "mean_iou")}
    logger.info("segmentation: %s", summary)
    if metrics["failed"]:
        logger.warning(
            "segmentation: %d images failed: %s", metrics["failed"], metrics["failed_by_reason"]
        )
    return frame, metrics


class _Source(NamedTuple):
    product_id: str
    image_path: str
    processed_path: str
    source_width: Any
    source_height: Any


def _picture_box(source: _Source, image_params: dict[str, Any], width: int, height: int):
    """The picture inside image processing's padding, ``(x0, y0, x1, y1)``; None: all."""
    size = int(image_params["size"])
    if image_params.get("mode", "pad") != "pad" or (width, height) != (size, size):
        return None
    if pd.isna(source.source_width) or pd.isna(source.source_height):
        return None
    return pad_box(int(source.source_width), int(source.source_height), size)


def _one(segmenter, source: _Source, image_params: dict[str, Any], done_hash: str | None):
    """Segment one image unless its mask was made from the same content.

    Only the picture is segmented, not image processing's padding (a border of padding
    would otherwise become the background's colour); the mask is zero on the padding.

    Returns:
        ``(report entry, image row or None, Segmentation or None)``: no image row when the
        file is missing or cannot be decoded (reported as failed); no segmentation when
        skipped.
    """
    entry = {"product_id": source.product_id, "image_path": source.image_path,
             "processed_path": source.processed_path}  # fmt: skip
    try:
        data = Path(source.processed_path).read_bytes()
    except FileNotFoundError:  # deleted since image processing (or since its row was written)
        return {**entry, "outcome": "failed", "reason": "missing_image"}, None, None
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            image = np.asarray(img.convert("RGB")) if done_hash != digest else None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = f"decode_error: {type(exc).__name__}: {exc}"
        return {**entry, "outcome": "failed", "reason": reason}, None, None
    row = {**entry, "content_hash": digest, "width": width, "height": height}
    if image is None:
        return {**entry, "outcome": "skipped", "reason": "same content and segmenter"}, row, None
    box = _picture_box(source, image_params, width, height)
    if box is None:
        result = segmenter.segment(image)
    else:
        x0, y0, x1, y1 = box
        inner = segmenter.segment(np.ascontiguousarray(image[y0:y1, x0:x1]))
        mask = np.zeros((height, width), bool)
        mask[y0:y1, x0:x1] = inner.mask
        result = Segmentation(mask, inner.score)
    entry.update(outcome="processed", reason="", score=result.score,
                 area_fraction=result.area_fraction)  # fmt: skip
    return entry, row, result


class _TrueMasks:
    """True masks ``<folder>/<image path without suffix>.png`` at the source picture's
    size, brought into the processed images' geometry as image processing resized the
    picture (``resize_square``, padding 0). No folder (or none on disk): no IoU."""

    def __init__(self, folder: str | None, image_params: dict[str, Any]) -> None:
        self.folder = Path(folder) if folder else None
        if self.folder is not None and not self.folder.is_dir():
            logger.info("segmentation: no true masks in %s, IoU not measured", self.folder)
            self.folder = None
        self.size = int(image_params["size"])
        self.mode = image_params.get("mode", "pad")

    def iou(self, image_path: str, mask: np.ndarray | None) -> float | None:
        """Mask IoU against the true mask of ``image_path``; None without one."""
        if self.folder is None or mask is None:
            return None
        path = self.folder / Path(image_path).with_suffix(".png")
        if not path.is_file():
            return None
        with Image.open(path) as true_mask:
            rgb = true_mask.convert("L").convert("RGB")
        truth = np.asarray(resize_square(rgb, self.size, self.mode, (0, 0, 0)))[..., 0] > 127
        return mask_iou(mask, truth) if truth.shape == mask.shape else None


def _write_batch(store: ReviewStore, catalogue: str, segmenter, images: list, masks: list) -> None:
    """Image rows, then their masks: each batch is committed before the next is computed."""
    if not images:
        return
    ids = store.upsert_images(catalogue, images)
    store.add_masks(
        [
            {
                "image_id": ids[(pid, rel)],
                "model": segmenter.name,
                "model_version": segmenter.version,
                "image_hash": digest,
                "rle": rle_json(result.mask),
                "score": result.score,
                "area_fraction": result.area_fraction,
            }
            for pid, rel, digest, result in masks
        ]
    )


def _metrics(report: pd.DataFrame, segmenter, seconds: float) -> dict[str, Any]:
    counts = report["outcome"].value_counts()
    failed = report[report["outcome"] == "failed"]
    reasons = failed["reason"].str.split(":").str[0].value_counts().to_dict() if len(failed) else {}
    iou = pd.to_numeric(report["iou"], errors="coerce").dropna()
    return {
        "segmenter": segmenter.name,
        "segmenter_version": segmenter.version,
        "n_images": int(len(report)),
        "processed": int(counts.get("processed", 0)),
        "skipped": int(counts.get("skipped", 0)),
        "failed": int(counts.get("failed", 0)),
        "failed_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "n_with_ground_truth": int(len(iou)),
        "mean_iou": round(float(iou.mean()), 4) if len(iou) else None,
        "median_iou": round(float(iou.median()), 4) if len(iou) else None,
        "seconds": round(seconds, 1),
    }
