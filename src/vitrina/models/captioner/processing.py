"""Captioner image processing: square padding, loading, the ViT image processor."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps


def pad_to_square(image: Image.Image, background: Sequence[int] = (255, 255, 255)) -> Image.Image:
    """Pad ``image`` to a square on ``background``, centred (image_processing's ``pad`` mode).

    Square images are returned unchanged.
    """
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)  # no resampling: the image keeps its pixels, only borders are added
    return ImageOps.pad(image, (side, side), color=tuple(int(c) for c in background))


def load_image(path: str | Path, square: bool = True) -> Image.Image:
    """Open an image file as RGB, fully decoded, padded to a square when ``square``.

    Raises:
        FileNotFoundError: the file is missing.
        PIL.UnidentifiedImageError, OSError: the file is not a decodable image.
    """
    with Image.open(path) as img:
        img = img.convert("RGB")
    return pad_to_square(img) if square else img


def make_image_processor(image_size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """ViT image processor (PIL backend, no torchvision): resize to a square, rescale to
    [0, 1], normalise with ``mean``/``std``; output ``float32 [B, 3, S, S]``."""
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": int(image_size), "width": int(image_size)},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
    )
