"""Captioner image processing: square padding and the ViT processor."""

from __future__ import annotations

import torch
from PIL import Image

from vitrina.models.captioner import load_image, make_image_processor, pad_to_square


def test_pad_to_square_centres_on_white():
    img = pad_to_square(Image.new("RGB", (20, 10), (0, 0, 0)))
    assert img.size == (20, 20)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((10, 10)) == (0, 0, 0)
    square = Image.new("RGB", (8, 8))
    assert pad_to_square(square) is square


def test_load_image_and_processor(images):
    img = load_image(images[0])
    assert img.size == (60, 60) and img.mode == "RGB"  # 40x60 padded to a square
    processor = make_image_processor(32, [0.5] * 3, [0.5] * 3)
    pixels = processor(images=[img], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 32, 32) and pixels.dtype == torch.float32
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) == 1.0  # white borders
