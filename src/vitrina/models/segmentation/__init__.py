"""Segmenters chosen by name (``segmentation.segmenter`` in the parameters).

- ``foreground``: GrabCut initialised from the picture's border, for packshots
  (:mod:`.foreground`);
- ``yolo_seg_onnx``: a user-supplied YOLOv8/11-seg ONNX file, persons only
  (:mod:`.yolo_onnx`).

Masks are stored as COCO RLE (:mod:`.rle`); :func:`apply_mask` uses one on its picture.
"""

from __future__ import annotations

from typing import Any

from .apply import MASK_MODES, apply_mask, overlay
from .base import Segmentation, Segmenter
from .rle import decode_rle, encode_rle, mask_bbox, mask_iou, rle_json

SEGMENTERS = ("foreground", "yolo_seg_onnx")


def make_segmenter(name: str, params: dict[str, Any] | None = None) -> Segmenter:
    """The segmenter called ``name``, built from its parameter block.

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    params = dict(params or {})
    if name == "foreground":
        from .foreground import ForegroundSegmenter

        return ForegroundSegmenter(**params)
    if name == "yolo_seg_onnx":
        from .yolo_onnx import YoloSegOnnxSegmenter

        return YoloSegOnnxSegmenter(**params)
    raise ValueError(f"segmentation.segmenter must be one of {', '.join(SEGMENTERS)}; got {name!r}")


__all__ = [
    "MASK_MODES",
    "SEGMENTERS",
    "Segmentation",
    "Segmenter",
    "apply_mask",
    "decode_rle",
    "encode_rle",
    "make_segmenter",
    "mask_bbox",
    "mask_iou",
    "overlay",
    "rle_json",
]
