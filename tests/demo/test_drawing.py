"""The demo catalogue's photos (vitrina.demo.drawing)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.demo.conftest import SIZE, N, decode, planted_defects
from vitrina.demo import (
    generate_demo_catalogue,
)


def test_images_decode_with_configured_size(catalogue):
    out, df = catalogue
    unreadable = ("missing_image", "corrupt_image", "path_traversal")
    broken = {d["picture"] for d in planted_defects(out) if d["kind"] in unreadable}
    decoded = 0
    for picture in df["picture"]:
        if picture in broken:
            continue
        with Image.open(out / "images" / picture) as im:
            im.load()
            assert im.size == SIZE
            assert im.mode == "RGB"
        decoded += 1
    assert decoded == N - len(broken)


def test_image_size_is_width_height(tmp_path):
    df = generate_demo_catalogue(
        tmp_path / "c", n_products=12, seed=1, image_size=(96, 64), n_defects=0
    )
    for picture in df["picture"]:
        with Image.open(tmp_path / "c" / "images" / picture) as im:
            assert im.size == (96, 64)


def test_images_carry_the_product_colour(clean):
    out, df = clean
    # the garment pixels (far from the light background) lean towards the product colour
    for colour in ("красный", "синий", "зелёный"):
        rows = df[df["colour"] == colour]
        for picture in rows["picture"]:
            arr = decode(out / "images" / picture).astype(float)
            bg = np.median(arr[:8, :8].reshape(-1, 3), axis=0)
            fg = arr[np.abs(arr - bg).sum(-1) > 60]
            if len(fg) == 0:
                continue
            r, g, b = np.median(fg, axis=0)
            target = {"красный": r, "синий": b, "зелёный": g}[colour]
            assert target >= max(r, g, b) - 25, (picture, colour, (r, g, b))
