"""What every segmenter returns, and the interface the segmentation pipeline calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Segmentation:
    """One image's mask: ``mask`` bool [H, W] (True = kept: person or product), ``score``
    the segmenter's confidence in [0, 1] (its meaning depends on the segmenter)."""

    mask: np.ndarray
    score: float

    @property
    def area_fraction(self) -> float:
        """Mask pixels / image pixels, in [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0


class Segmenter(Protocol):
    """A segmenter: ``name`` and ``version`` identify its masks in the review store (a
    mask is recomputed when either changes); ``segment`` maps an RGB uint8 [H, W, 3]
    image to a :class:`Segmentation` of the same H × W."""

    name: str
    version: str

    def segment(self, image: np.ndarray) -> Segmentation: ...


def check_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous uint8 [H, W, 3] array.

    Raises:
        ValueError: another shape or dtype.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"segmenters take RGB uint8 images [H, W, 3], got {image.dtype} {image.shape}"
        )
    return np.ascontiguousarray(image)
