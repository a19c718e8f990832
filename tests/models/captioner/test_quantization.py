"""Inference precision and the weight-only int8 decoder."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vitrina.models.captioner import (
    Int8Linear,
    inference_dtype,
    inference_precision,
    load_captioner,
    quantization,
)


def test_int8_decoder_matches_bf16_and_is_inference_only(tiny, images, tmp_path):
    layer = torch.nn.Linear(32, 5)
    quantised = Int8Linear(layer.weight, layer.bias)
    x = torch.randn(3, 32)
    torch.testing.assert_close(quantised(x).float(), layer(x), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="divisible by 16"):
        Int8Linear(torch.randn(4, 24), None)

    path = tiny.save(tmp_path / "captioner")
    int8 = load_captioner(path, precision="int8")
    assert int8.precision == "int8"
    assert sum(isinstance(m, Int8Linear) for m in int8.model.modules()) > 0
    pixels = tiny.pixel_values([Image.open(p).convert("RGB") for p in images])
    assert len(int8.generate(pixels, "beam")) == 3
    with pytest.raises(ValueError, match="inference only"):
        int8.save(tmp_path / "again")
    with pytest.raises(ValueError, match="stays int8"):
        int8.to("cpu", "fp32")


def test_auto_precision_follows_the_project_rules(monkeypatch):
    monkeypatch.setattr(quantization, "cpu_has_bf16", lambda: True)
    assert inference_precision("auto", "cpu") == "int8"
    assert inference_dtype("auto", "cpu") == torch.bfloat16  # int8 decoder, bf16 encoder
    monkeypatch.setattr(quantization, "cpu_has_bf16", lambda: False)
    assert inference_precision("auto", "cpu") == "fp32"
    assert inference_precision("bf16", "cpu") == "bf16"
    assert inference_dtype("fp32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        inference_dtype("int4", "cpu")
