"""Inference precision and the dynamic int8 captioner (encoder and decoder)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vitrina.models.captioner import inference_dtype, inference_precision, load_captioner
from vitrina.models.quantization import int8_linear, is_int8
from vitrina.training import precision


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    return tiny.save(tmp_path_factory.mktemp("int8") / "captioner")


@pytest.fixture(scope="module")
def int8(saved):
    return load_captioner(saved, precision="int8")


@pytest.fixture(scope="module")
def pixels(tiny, images):
    return tiny.pixel_values([Image.open(p).convert("RGB") for p in images])


def test_int8_linear_matches_fp32_and_keeps_7_bit_activations_without_vnni(monkeypatch):
    layer = torch.nn.Linear(48, 7)
    x = torch.randn(2, 5, 48)
    for flags, reduce_range in (({"avx2"}, True), ({"avx2", "avx512_vnni"}, False)):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: frozenset(flags))
        q = int8_linear(layer.weight, layer.bias)
        assert q.reduce_range is reduce_range
        assert q(x).shape == (2, 5, 7)
        assert _cosine(q(x), layer(x)) > 0.999


def test_int8_captioner_is_close_to_fp32_and_inference_only(saved, int8, pixels, tmp_path):
    fp32 = load_captioner(saved, precision="fp32")
    assert int8.precision == "int8" and is_int8(int8.model.encoder) and is_int8(int8.model.decoder)
    assert not any(type(m) is torch.nn.Linear for m in int8.model.modules())
    batch = fp32.collate_targets(fp32.encode_targets(["red top", "blue dress", "green skirt"])[0])
    with torch.inference_mode():
        ref, got = (
            c.model(
                pixel_values=pixels,
                decoder_input_ids=batch["decoder_input_ids"],
                decoder_attention_mask=batch["decoder_attention_mask"],
            )
            for c in (fp32, int8)
        )
    assert _cosine(got.encoder_last_hidden_state, ref.encoder_last_hidden_state) > 0.99
    assert _cosine(got.logits, ref.logits) > 0.99
    assert len(int8.generate(pixels, "beam")) == 3
    with pytest.raises(ValueError, match="inference only"):
        int8.save(tmp_path / "again")
    with pytest.raises(ValueError, match="stays int8"):
        int8.to("cpu", "fp32")


def test_int8_generation_keeps_the_key_value_cache(int8, pixels):
    widths: list[int] = []  # decoder input tokens of each forward pass
    hook = int8.model.decoder.transformer.wte.register_forward_hook(
        lambda _m, args, _out: widths.append(args[0].shape[-1])
    )
    kwargs = int8.generation_kwargs("greedy", max_new_tokens=6, min_new_tokens=6)
    try:
        cached = int8.generate_ids(pixels, "greedy", max_new_tokens=6, min_new_tokens=6)
        steps = list(widths)
        widths.clear()
        with torch.inference_mode():
            uncached = int8.model.generate(pixel_values=pixels, **{**kwargs, "use_cache": False})
    finally:
        hook.remove()
    assert torch.equal(cached, uncached)
    assert set(steps) == {1}  # one new token a step: the cache holds the prefix
    assert widths == list(range(1, len(widths) + 1))  # without it, the whole prefix each step


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx", "avx2", "fma"}, "int8"),
        ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "int8"),
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}, "bf16"),
    ],
)
def test_auto_precision_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert inference_precision("auto", "cpu") == expected
    assert inference_dtype("auto", "cpu") == torch.bfloat16  # int8 loads bf16, then packs
    assert inference_precision("fp32", "cpu") == "fp32"


def test_auto_without_an_int8_engine_is_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(precision, "int8_engine", lambda: None)
    assert inference_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="x86"):
        inference_precision("int8", "cpu")


def test_cpu_flags_override_and_parsing(monkeypatch):
    assert precision.parse_cpu_flags("AVX2, fma  sse4_2") == {"avx2", "fma", "sse4_2"}
    monkeypatch.setenv(precision.CPU_FLAGS_ENV, "avx2,fma")
    precision.cpu_flags.cache_clear()
    try:
        assert precision.cpu_flags() == {"avx2", "fma"}
        assert not precision.cpu_has_bf16()
    finally:
        monkeypatch.delenv(precision.CPU_FLAGS_ENV)
        precision.cpu_flags.cache_clear()


def test_bad_precision_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"one of \('auto', 'fp32', 'bf16', 'fp16', 'int8'\)"):
        inference_dtype("int4", "cpu")
    with pytest.raises(ValueError, match="GPU"):
        inference_precision("int8", "cuda")


def test_int8_conversion_returns_freed_memory_after_every_layer(tiny, monkeypatch):
    import copy

    from vitrina.models import quantization

    calls: list[int] = []
    monkeypatch.setattr(quantization, "release_freed_memory", lambda: calls.append(1) or True)
    replaced = quantization.quantize_int8(copy.deepcopy(tiny.model))
    assert replaced > 0 and len(calls) == replaced  # one trim per converted layer
    monkeypatch.undo()
    import platform

    if platform.libc_ver()[0] == "glibc":  # the trim is found where it exists
        assert quantization._malloc_trim() is not None
