"""True garment masks of the demo catalogue, for measuring segmenters (mask IoU).

The demo generator (:mod:`vitrina.demo`) draws every garment from known polygons, so the
ground truth of a foreground segmenter is known exactly. This module replays the
generator's seeded layout of each photo (:func:`vitrina.demo.drawing.layout`: the same random draws in
the same order, so the same placement) and draws the silhouette alone::

    out_dir/masks/<picture stem>.png   8-bit L, 255 = garment, 0 = background, image size
    out_dir/masks/params.json          the generation parameters (written last)

The garment is the fill polygons dilated by one pixel (the generator darkens a one-pixel
outline just outside them), the accents drawn over it (soles, collars, buttons) and the
detail lines (straps can leave the fill polygons). Drop shadows are background. Photos
the catalogue lacks (planted ``missing_image`` / ``path_traversal`` rows) get no mask.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vitrina.demo.catalogue import generation_params
from vitrina.demo.defects import plant_defects
from vitrina.demo.drawing import layout
from vitrina.demo.text import make_rows
from vitrina.utils import atomic_path

logger = logging.getLogger(__name__)

MASKS_DIR = "masks"
PARAMS_NAME = "params.json"
_NO_IMAGE = ("missing_image", "path_traversal")


def true_mask(style: dict[str, Any], seed: int, index: int, width: int, height: int) -> np.ndarray:
    """The garment mask of row ``index`` of a catalogue generated with ``seed``.

    Args:
        style: The row's drawing style (from :func:`vitrina.demo.text.make_rows`).
        seed: The catalogue's seed; the photo's generator is ``default_rng([seed, 7, index])``,
            as the catalogue's photos are drawn.
        index: Row position in the table.
        width, height: Image size in pixels.

    Returns:
        bool array [height, width], True on the garment.
    """
    lay = layout(style, np.random.default_rng([seed, 7, index]), width, height)
    mask = lay["mask"].filter(ImageFilter.MaxFilter(3))
    draw = ImageDraw.Draw(mask)
    for pts, _ in lay["shape"]["accents"]:
        draw.polygon(lay["tf"](pts), fill=255, outline=255)
    for pts in lay["shape"]["lines"]:
        draw.line(lay["tf"](pts), fill=255, width=lay["line_w"])
    return np.asarray(mask) > 127


def demo_masks_dir(out_dir: str | Path) -> Path:
    """Folder of the true masks of the catalogue in ``out_dir``."""
    return Path(out_dir) / MASKS_DIR


def write_demo_masks(
    out_dir: str | Path,
    n_products: int = 1000,
    seed: int = 42,
    image_size: tuple[int, int] = (240, 320),
    n_defects: int = 8,
) -> Path:
    """Write (or keep) the true masks of the demo catalogue generated in ``out_dir``.

    Arguments are those of :func:`vitrina.demo.generate_demo_catalogue`. Masks already
    written with the same parameters (``masks/params.json``) are kept; otherwise the whole
    folder is written through a temporary directory and renamed into place.

    Returns:
        The masks folder, ``out_dir/masks``: one ``<picture stem>.png`` per photo.
    """
    folder = demo_masks_dir(out_dir)
    width, height = (int(v) for v in image_size)
    params = generation_params(int(n_products), int(seed), (width, height), int(n_defects))
    try:
        if json.loads((folder / PARAMS_NAME).read_text(encoding="utf-8")) == params:
            return folder
    except (OSError, ValueError):
        pass
    rows, styles = make_rows(int(n_products), int(seed))
    no_image = {
        d["row"] for d in plant_defects(rows, int(n_defects), int(seed)) if d["kind"] in _NO_IMAGE
    }
    with atomic_path(folder, is_dir=True) as tmp:
        for i, style in enumerate(styles):
            if i in no_image:
                continue
            mask = true_mask(style, int(seed), i, width, height)
            name = Path(style["file"]).with_suffix(".png").name
            Image.fromarray(mask.astype(np.uint8) * 255, "L").save(tmp / name)
        (tmp / PARAMS_NAME).write_text(json.dumps(params, sort_keys=True) + "\n", encoding="utf-8")
    logger.info("Wrote %d true garment masks to %s", len(styles) - len(no_image), folder)
    return folder
