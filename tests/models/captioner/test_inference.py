"""Captioner inference: generation settings and batch captioning of files."""

from __future__ import annotations

import pytest
from PIL import Image

from vitrina.models.captioner import caption_paths


def test_generation_settings(tiny):
    greedy = tiny.generation_kwargs("greedy")
    assert greedy["num_beams"] == 1 and greedy["max_new_tokens"] == 8 and greedy["use_cache"]
    beam = tiny.generation_kwargs("beam", num_beams=3)
    assert beam["num_beams"] == 3 and beam["decoder_start_token_id"] == 1
    with pytest.raises(ValueError, match="decoding must be one of"):
        tiny.generation_kwargs("sampling")


def test_caption_paths_reports_unreadable_images(tiny, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Image.open(images[0]).tobytes()[:100])  # not a JPEG
    paths = [images[0], str(broken), str(tmp_path / "missing.jpg"), *images[1:]]
    rows = caption_paths(tiny, paths, batch_size=2, progress=False)
    assert [r["path"] for r in rows] == paths
    assert [r["status"] for r in rows] == ["ok", "error", "error", "ok", "ok"]
    assert "FileNotFoundError" in rows[2]["error"] and rows[1]["error"]
    assert all(isinstance(r["caption"], str) for r in rows)
    assert caption_paths(tiny, [], progress=False) == []

    # Several decodings in one pass: the same captions as one pass per decoding.
    both = caption_paths(tiny, paths, batch_size=2, decoding=["greedy", "beam"], progress=False)
    beam = caption_paths(tiny, paths, batch_size=2, decoding="beam", progress=False)
    assert [r["status"] for r in both] == [r["status"] for r in rows]
    ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    assert [both[i]["captions"]["greedy"] for i in ok] == [rows[i]["caption"] for i in ok]
    assert [both[i]["captions"]["beam"] for i in ok] == [beam[i]["caption"] for i in ok]
    assert [both[i]["caption"] for i in ok] == [rows[i]["caption"] for i in ok]
