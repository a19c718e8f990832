"""Using a mask on its image: background removal, crop to the mask's box, review overlays."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from .rle import mask_bbox

MASK_MODES = ("remove_background", "crop")


def _mask_for(image: Image.Image, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D [H, W], got shape {mask.shape}")
    if mask.shape != (image.height, image.width):
        # a mask computed on another size of the same picture (e.g. the processed copy)
        resized = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(
            image.size, Image.Resampling.BILINEAR
        )
        return np.asarray(resized) > 127
    return mask.astype(bool)


def apply_mask(
    image: Image.Image,
    mask: np.ndarray,
    mode: Literal["remove_background", "crop"] = "remove_background",
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Apply a mask to a picture, for training or inference on masked images.

    Args:
        image: The picture (any PIL mode; converted to RGB).
        mask: bool (or 0/1) [H, W]; True on what is kept. A mask of another size is
            resized (bilinear, threshold 0.5) to the picture's size.
        mode: ``remove_background``: pixels outside the mask become ``background``, size
            unchanged; ``crop``: the picture cropped to the mask's bounding box.
        background: RGB fill outside the mask (``remove_background``).

    Returns:
        A new RGB image. An empty mask leaves the picture unchanged under ``crop`` and
        returns a plain ``background`` image under ``remove_background``.

    Raises:
        ValueError: unknown ``mode`` or a mask that is not 2-D.
    """
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {', '.join(MASK_MODES)}; got {mode!r}")
    rgb = image.convert("RGB")
    keep = _mask_for(rgb, mask)
    if mode == "crop":
        box = mask_bbox(keep)
        return rgb.copy() if box is None else rgb.crop(tuple(box))
    out = np.asarray(rgb).copy()
    out[~keep] = np.asarray(background, np.uint8)
    return Image.fromarray(out, "RGB")


def overlay(
    image: Image.Image,
    mask: np.ndarray,
    colour: tuple[int, int, int] = (0, 200, 80),
    alpha: float = 0.45,
) -> Image.Image:
    """The picture with the mask tinted in ``colour`` (opacity ``alpha``) and the
    background dimmed, for reviewers and annotators. RGB, the picture's size."""
    rgb = np.asarray(image.convert("RGB"), np.float32)
    keep = _mask_for(image, mask)
    out = rgb * 0.55 + 255 * 0.45  # dim (wash out) the background
    out[keep] = rgb[keep] * (1 - alpha) + np.asarray(colour, np.float32) * alpha
    return Image.fromarray(out.clip(0, 255).astype(np.uint8), "RGB")
