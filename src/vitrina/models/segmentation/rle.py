"""Masks as COCO run-length encoding (pycocotools), the format stored in the review database.

A mask is stored as COCO's compressed RLE, ``{"size": [height, width], "counts": str}``
(column-major runs, LEB128-like ASCII; the COCO dataset's own format, readable by
pycocotools in any language binding), serialised as JSON text.
"""

from __future__ import annotations

import json

import numpy as np
from pycocotools import mask as coco_mask


def encode_rle(mask: np.ndarray) -> dict:
    """Encode a bool/0-1 mask [H, W] as compressed COCO RLE ``{"size", "counts": str}``.

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D [H, W], got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict | str) -> np.ndarray:
    """Decode COCO RLE (a dict or its JSON text) to a bool mask [H, W].

    Raises:
        ValueError: not a COCO RLE (no ``size``/``counts``).
    """
    if isinstance(rle, str):
        rle = json.loads(rle)
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("a COCO RLE is {'size': [h, w], 'counts': ...}")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE: convert through pycocotools
        h, w = rle["size"]
        coded = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        coded = {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return coco_mask.decode(coded).astype(bool)


def rle_json(mask: np.ndarray) -> str:
    """``encode_rle(mask)`` as compact JSON text (the ``masks.rle`` column)."""
    return json.dumps(encode_rle(mask), separators=(",", ":"))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape; 1.0 when both are empty.

    Raises:
        ValueError: the shapes differ.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mask_bbox(mask: np.ndarray) -> list[int] | None:
    """``[x0, y0, x1, y1]`` (pixels, end exclusive) of a bool mask; None when empty."""
    ys, xs = np.nonzero(np.asarray(mask, bool))
    if ys.size == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
