"""One CLIP bundle: both layouts load, detect, save, encode and feed training alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.clip.helpers import make_checkpoint, make_pairs, tiny_hf_clip
from vitrina.models.clip import ClipBundle, HfClipBundle, RuClipCheckpointBundle, load_base_model
from vitrina.models.ruclip import CheckpointNotFoundError


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    pairs = make_pairs(root / "images", copies=1)
    return {
        "ruclip": make_checkpoint(root / "ruclip", pairs["title"].tolist()),
        "hf_clip": tiny_hf_clip(root / "hf"),
    }, pairs


@pytest.mark.parametrize("kind", ["ruclip", "hf_clip"])
def test_the_layout_is_detected_and_survives_a_save(layouts, kind, tmp_path):
    paths, pairs = layouts
    bundle = ClipBundle.load(paths[kind])
    assert bundle.kind == kind
    assert isinstance(bundle, RuClipCheckpointBundle if kind == "ruclip" else HfClipBundle)
    saved = bundle.save(tmp_path / "copy")
    again = ClipBundle.load(saved)
    assert again.kind == kind and again.path == saved
    for a, b in zip(
        again.model.state_dict().values(), bundle.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    titles = pairs["title"].head(5).tolist()
    paths_ = pairs["processed_path"].head(5).tolist()
    text, image = again.encode_texts(titles), again.encode_images(paths_)
    np.testing.assert_allclose(text, bundle.encode_texts(titles), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(image, axis=1), 1.0, atol=1e-5)
    assert load_base_model({"type": kind, "checkpoint": str(saved)}).kind == kind


@pytest.mark.parametrize("kind", ["ruclip", "hf_clip"])
def test_what_training_needs_is_the_same_for_both_layouts(layouts, kind):
    paths, pairs = layouts
    bundle = ClipBundle.load(paths[kind])
    ids = bundle.token_ids(["красный верх", "синий низ"])
    assert all(isinstance(i, int) for row in ids for i in row) and len(ids) == 2
    batch = bundle.tokenize(["красный верх", "синий низ длинный"])
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    pixels = bundle.image_uint8(pairs["processed_path"][0])
    assert pixels.dtype == np.uint8 and pixels.shape[0] == 3
    # uint8 pixels normalised by mean/std are what the processor itself gives
    x = (pixels / 255.0 - np.array(bundle.mean)[:, None, None]) / np.array(bundle.std)[
        :, None, None
    ]
    from PIL import Image

    with Image.open(pairs["processed_path"][0]) as img:
        np.testing.assert_allclose(x, bundle.preprocess(img.convert("RGB")), atol=0.02)
    towers = bundle.towers()
    assert set(towers) == {"text", "vision"} and all(len(h) == 1 for _, h in towers.values())
    copy = bundle.with_model(bundle.model)
    assert copy.path is None and copy.kind == bundle.kind


def test_neither_layout_and_bad_kinds_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(
        CheckpointNotFoundError, match="neither a ruCLIP checkpoint .* nor a save_pretrained"
    ):
        ClipBundle.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="kind must be one of"):
        ClipBundle.load(tmp_path / "empty", kind="siglip")
    with pytest.raises(ValueError, match="only ruclip and hf_clip models can be fine-tuned"):
        load_base_model({"type": "tfidf_svd"})
