"""A review store filled with a few segmented pictures (SQLite and PostgreSQL)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vitrina.models.segmentation import make_segmenter, rle_json
from vitrina.store import ReviewStore

EVIL_ID = "x'); DROP TABLE images; --<script>alert(1)</script>"


@pytest.fixture
def filled_store(review_db_url, tmp_path):
    """Four pictures (one with an injection-shaped id) with foreground masks, unchecked."""
    store = ReviewStore(review_db_url)
    seg = make_segmenter("foreground")
    records, results = [], []
    colours = [(200, 30, 40), (30, 60, 170), (40, 140, 60), (120, 60, 165)]
    for i, colour in enumerate(colours):
        pid = EVIL_ID if i == 3 else f"P{i}"
        img = Image.new("RGB", (96, 96), (236, 236, 232))
        ImageDraw.Draw(img).polygon([(30, 15), (66, 15), (80, 85), (16, 85)], fill=colour)
        path = tmp_path / f"img{i}.png"
        img.save(path)
        records.append({"product_id": pid, "image_path": f"img{i}.png",
                        "processed_path": str(path), "content_hash": f"h{i}",
                        "width": 96, "height": 96})  # fmt: skip
        results.append(seg.segment(np.asarray(img)))
    ids = store.upsert_images("demo", records)
    store.add_masks(
        [
            {"image_id": ids[(r["product_id"], r["image_path"])], "model": seg.name,
             "model_version": seg.version, "rle": rle_json(res.mask), "score": res.score,
             "area_fraction": res.area_fraction}
            for r, res in zip(records, results, strict=True)
        ]
    )  # fmt: skip
    yield store
    store.close()
