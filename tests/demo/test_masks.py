"""True garment masks of the demo catalogue (vitrina.demo.masks)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vitrina.datasets import DemoCatalogueDataset
from vitrina.demo import read_demo_manifest


def test_masks_cover_the_drawn_garment_and_only_it(tmp_path):
    ds = DemoCatalogueDataset(str(tmp_path / "demo"), n_products=30, seed=11, image_size=(60, 80))
    table = ds.load()
    defects = {d["picture"] for d in read_demo_manifest(tmp_path / "demo")["defects"]
               if d["kind"] in ("missing_image", "path_traversal")}  # fmt: skip
    pictures = [p for p in table["picture"] if p not in defects]
    assert sorted(p.name for p in ds.masks_dir.glob("*.png")) == sorted(
        set(p.replace(".jpg", ".png") for p in pictures)
    )
    inside = []
    for picture in pictures:
        try:
            image = np.asarray(Image.open(ds.image_dir / picture).convert("RGB"), np.float32)
        except OSError:  # the planted corrupt JPEG
            continue
        mask = np.asarray(Image.open(ds.masks_dir / picture.replace(".jpg", ".png"))) > 127
        assert mask.shape == image.shape[:2] and 0.03 < mask.mean() < 0.8
        # the background is one plain colour (plus noise and a soft shadow); the garment
        # mostly differs from it: pixels far from the background lie inside the mask
        background = np.median(image[~mask], axis=0)
        far = np.abs(image - background).max(-1) > 60
        assert far[~mask].mean() < 0.02
        inside.append(far[mask].mean())
    assert len(inside) >= 20 and np.mean(inside) > 0.6


def test_masks_are_kept_when_up_to_date_and_rewritten_otherwise(tmp_path):
    from vitrina.demo.masks import write_demo_masks

    folder = write_demo_masks(tmp_path, n_products=6, seed=2, image_size=(40, 50), n_defects=0)
    stamp = {p: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert write_demo_masks(tmp_path, 6, 2, (40, 50), 0) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} == stamp
    write_demo_masks(tmp_path, 6, 3, (40, 50), 0)  # another seed: other masks
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir()} != stamp
    assert not list(tmp_path.glob(".masks.*"))  # no temporary folder left behind
