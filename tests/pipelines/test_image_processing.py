"""Image processing: every PIL mode to RGB, resize modes, bad files excluded, resumable runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitrina.pipelines.image_processing.nodes import (
    output_name,
    process_images,
    processing_key,
    resize_square,
    to_rgb,
)


def params(out_dir, **kw):
    return {
        "size": 32,
        "mode": "pad",
        "background": [255, 255, 255],
        "output_dir": str(out_dir),
        "format": "JPEG",
        "quality": 95,
        "n_workers": 2,
        **kw,
    }


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(root / "rgb.jpg")
    Image.new("CMYK", (20, 20), (255, 0, 0, 0)).save(root / "cmyk.jpg")
    Image.new("RGBA", (20, 20), (0, 0, 255, 0)).save(root / "rgba.png")  # fully transparent
    Image.new("L", (20, 20), 128).save(root / "grey.png")
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 200, 0] * 256)
    pal.save(root / "palette.png")
    Image.fromarray(np.linspace(0, 65535, 400, dtype=np.uint16).reshape(20, 20)).save(
        root / "grey16.png"
    )
    (root / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "rgb.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root


def products(names):
    return pd.DataFrame({"product_id": [n.split(".")[0] for n in names], "image_path": names})


def test_every_mode_becomes_rgb(root):
    for name in ("rgb.jpg", "cmyk.jpg", "rgba.png", "grey.png", "palette.png", "grey16.png"):
        with Image.open(root / name) as img:
            assert to_rgb(img).mode == "RGB", name
    with Image.open(root / "rgba.png") as img:  # transparency composited onto the background
        assert to_rgb(img, (10, 20, 30)).getpixel((5, 5)) == (10, 20, 30)
    with Image.open(root / "cmyk.jpg") as img:  # cyan in CMYK
        r, g, b = to_rgb(img).getpixel((5, 5))
        assert r < 50 and g > 200 and b > 200
    with Image.open(root / "grey16.png") as img:  # 16-bit greyscale rescaled, not clipped to white
        arr = np.asarray(to_rgb(img))
        assert arr.min() == 0 and arr.max() == 255 and 100 < arr.mean() < 155


def test_pad_keeps_whole_image_crop_fills_square():
    wide = Image.new("RGB", (40, 20), (200, 10, 10))
    padded = resize_square(wide, 32, "pad", (255, 255, 255))
    cropped = resize_square(wide, 32, "crop")
    assert padded.size == cropped.size == (32, 32)
    assert padded.getpixel((16, 1)) == (255, 255, 255)  # padding band on top
    assert cropped.getpixel((16, 1))[0] > 150  # product colour to the edge
    with pytest.raises(ValueError, match="'pad' or 'crop'"):
        resize_square(wide, 32, "stretch")


def test_bad_images_are_reported_and_excluded(root, tmp_path):
    names = [
        "rgb.jpg",
        "cmyk.jpg",
        "rgba.png",
        "grey.png",
        "palette.png",
        "grey16.png",
        "corrupt.jpg",
        "truncated.jpg",
        "missing.jpg",
    ]
    manifest, report, folder = process_images(products(names), str(root), params(tmp_path / "out"))
    assert folder == tmp_path / "out" / f"32_pad_{processing_key(params(tmp_path / 'out'))}"
    assert sorted(manifest["product_id"]) == sorted(
        ["rgb", "cmyk", "rgba", "grey", "palette", "grey16"]
    )
    assert dict(zip(report["product_id"], report["reason"], strict=True)) == {
        "corrupt": "decode_error",
        "truncated": "decode_error",
        "missing": "missing_image",
    }
    for path in manifest["processed_path"]:
        with Image.open(path) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
    names = {p.name for p in folder.iterdir()}
    assert names == {Path(p).name for p in manifest["processed_path"]}
    assert {n.rsplit("-", 1)[0] for n in names} == set(manifest["product_id"])


def test_rerun_skips_processed_images(root, tmp_path, monkeypatch):
    names = ["rgb.jpg", "grey.png"]
    manifest, _, _ = process_images(products(names), str(root), params(tmp_path / "out"))
    mtimes = {p: os.stat(p).st_mtime_ns for p in manifest["processed_path"]}

    def must_not_run(*args, **kwargs):
        raise AssertionError("an already processed image was processed again")

    monkeypatch.setattr("vitrina.pipelines.image_processing.nodes.resize_square", must_not_run)
    manifest2, report2, _ = process_images(products(names), str(root), params(tmp_path / "out"))
    assert report2.empty
    assert manifest2.equals(manifest)
    assert {p: os.stat(p).st_mtime_ns for p in manifest2["processed_path"]} == mtimes


def test_size_and_mode_change_do_not_reuse_stale_files(root, tmp_path):
    process_images(products(["rgb.jpg"]), str(root), params(tmp_path / "out"))
    manifest, _, _ = process_images(
        products(["rgb.jpg"]), str(root), params(tmp_path / "out", size=16, mode="crop")
    )
    with Image.open(manifest["processed_path"][0]) as img:
        assert img.size == (16, 16)


def test_no_temporary_files_left_behind(root, tmp_path):
    names = ["rgb.jpg", "corrupt.jpg", "truncated.jpg"]
    process_images(products(names), str(root), params(tmp_path / "out"))
    leftovers = [p.name for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_all_images_failing_is_a_clear_error(root, tmp_path):
    with pytest.raises(ValueError, match=r"No image could be processed \(2 tried\)"):
        process_images(
            products(["corrupt.jpg", "truncated.jpg"]), str(root), params(tmp_path / "out")
        )


def test_output_names_are_safe_and_distinct():
    assert output_name("0111565001", "jpg") == "0111565001.jpg"
    a, b = output_name("a/b", "jpg"), output_name("a_b", "jpg")
    assert "/" not in a and a != b
    assert not output_name("../x", "jpg").startswith(".")


def test_a_replaced_source_image_is_processed_again(root, tmp_path):
    """The cache is keyed by the source's content: a new picture under the same name is
    processed again (and its old output removed), not silently reused."""
    first, _, folder = process_images(products(["rgb.jpg"]), str(root), params(tmp_path / "out"))
    Image.new("RGB", (20, 40), (10, 10, 200)).save(root / "rgb.jpg")  # same name, new picture
    second, _, _ = process_images(products(["rgb.jpg"]), str(root), params(tmp_path / "out"))
    assert second.loc[0, "source_width"] == 20 and second.loc[0, "source_height"] == 40
    with Image.open(second.loc[0, "processed_path"]) as img:
        r, g, b = img.convert("RGB").getpixel((16, 16))
    assert b > 150 and r < 60, "the processed image is still the old picture"
    assert not Path(first.loc[0, "processed_path"]).exists()  # the stale output is gone
    assert [p.name for p in folder.iterdir()] == [Path(second.loc[0, "processed_path"]).name]


@pytest.mark.parametrize("change", [{"background": [0, 0, 0]}, {"quality": 20}, {"format": "PNG"}])
def test_every_processing_setting_keys_the_cache(root, tmp_path, change):
    before, _, _ = process_images(products(["rgba.png"]), str(root), params(tmp_path / "out"))
    after, _, _ = process_images(
        products(["rgba.png"]), str(root), params(tmp_path / "out", **change)
    )
    assert after.loc[0, "processed_path"] != before.loc[0, "processed_path"]
    old, new = (
        np.asarray(Image.open(p).convert("RGB"), dtype=int)
        for p in (before.loc[0, "processed_path"], after.loc[0, "processed_path"])
    )
    if "background" in change:  # the transparent image now lies on black
        assert old.mean() > 200 and new.mean() < 50


def test_big_jpegs_are_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    """A JPEG far larger than the target is decoded by libjpeg's DCT scaling (draft): the
    pixels handed on are at most 1/8 of the source here, still >= the target size."""
    root = tmp_path / "raw"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (2048, 1600, 3), dtype=np.uint8)).save(root / "big.jpg")
    seen = []
    real = to_rgb

    def spy(image, background=(255, 255, 255)):
        seen.append(image.size)
        return real(image, background)

    monkeypatch.setattr("vitrina.pipelines.image_processing.nodes.to_rgb", spy)
    manifest, _, _ = process_images(products(["big.jpg"]), str(root), params(tmp_path / "out"))
    assert seen == [(200, 256)]
    assert (manifest.loc[0, "source_width"], manifest.loc[0, "source_height"]) == (1600, 2048)
    with Image.open(manifest.loc[0, "processed_path"]) as img:
        assert img.size == (32, 32)


def test_shards_resume_where_a_run_died_and_skip_finished_ones(root, tmp_path, monkeypatch):
    """8 images in shards of 3: a run dying in shard 1 leaves shard 0 recorded; the rerun
    processes shards 1 and 2 only, a third run reads no image at all."""
    for i in range(8):
        Image.new("RGB", (30 + i, 20), (20 * i, 10, 10)).save(root / f"img{i}.jpg")
    table = products([f"img{i}.jpg" for i in range(8)])
    settings = params(tmp_path / "out", shard_size=3, n_workers=1)
    reference, _, _ = process_images(table, str(root), params(tmp_path / "ref", n_workers=1))
    real = __import__("vitrina.pipelines.image_processing.nodes", fromlist=["_"])._process_one
    calls = []

    def counted(src, *args, die_at=None):
        calls.append(Path(src).name)
        if len(calls) == die_at:
            raise RuntimeError("killed")
        return real(src, *args)

    target = "vitrina.pipelines.image_processing.nodes._process_one"
    monkeypatch.setattr(target, lambda *a: counted(*a, die_at=5))
    with pytest.raises(RuntimeError, match="killed"):
        process_images(table, str(root), settings)
    calls.clear()
    monkeypatch.setattr(target, counted)
    manifest, report, _ = process_images(table, str(root), settings)
    assert calls == [f"img{i}.jpg" for i in range(3, 8)]
    assert report.empty and manifest["product_id"].tolist() == reference["product_id"].tolist()
    assert manifest["source_width"].tolist() == reference["source_width"].tolist()
    calls.clear()
    again, _, _ = process_images(table, str(root), settings)
    assert calls == [] and again.equals(manifest)
    with pytest.raises(ValueError, match=r"image_processing.shard_size must be a positive"):
        process_images(table, str(root), params(tmp_path / "out", shard_size=0))
