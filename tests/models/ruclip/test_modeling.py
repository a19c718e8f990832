"""Converted features against an independent OpenAI-layout forward pass (``modeling``)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tests.models.ruclip.common import LONG, TEXTS, assert_close
from vitrina.models.ruclip.modeling import image_features, text_features


def test_text_features_match_openai_reference(bundle, reference):
    texts = TEXTS[:48] + ["", LONG, "ФУТБОЛКА 😀 漢字"]
    full = bundle.tokenizer(texts, padding="max_length")
    with torch.no_grad():
        ref = reference.encode_text(full["input_ids"])
        ours = text_features(bundle.model, full["input_ids"], full["attention_mask"])
        no_mask = text_features(bundle.model, full["input_ids"])  # ruclip passes no mask
    assert ref.shape == (len(texts), bundle.config.embed_dim)
    assert ref.std() > 0.1  # non-degenerate
    assert_close(ours, ref)
    assert_close(no_mask, ref)


def test_image_features_match_openai_reference(bundle, reference):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(6, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = reference.encode_image(pixels)
        ours = image_features(bundle.model, pixels)
    assert ref.shape == (6, bundle.config.embed_dim) and ref.std() > 0.1
    assert_close(ours, ref)
    # through the image processor, from PIL images of various sizes/modes
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in ((64, 64), (100, 70), (48, 160))
    ] + [Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8), mode="L")]
    pv = bundle.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert pv.shape == (4, 3, 64, 64) and pv.dtype == torch.float32
    with torch.no_grad():
        assert_close(image_features(bundle.model, pv), reference.encode_image(pv))
