"""The decoder step in onnxruntime: the torch loop's tokens, cached beside the model."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vitrina.models.captioner import CaptionerConfig, build_captioner, load_captioner, onnx_decoder
from vitrina.models.captioner.greedy import encoder_states, greedy_decode, torch_steps

from .fixtures import TINY, descriptions

pytestmark = pytest.mark.skipif(not onnx_decoder.available(), reason="needs onnxruntime")


@pytest.fixture(scope="module")
def captioner():
    params = {**TINY, "encoder_width": 48, "decoder_layers": 2, "seed": 5}
    c = build_captioner(CaptionerConfig.from_params(params, "ort"), descriptions())
    c.model.eval()
    return c


@pytest.fixture(scope="module")
def pixels(captioner, images):
    return captioner.pixel_values([Image.open(p).convert("RGB") for p in images])


def _decode(captioner, pixels, step=None, **settings):
    kwargs = captioner.generation_kwargs("greedy", **{"max_new_tokens": 10, **settings})
    return greedy_decode(
        captioner.model,
        pixels,
        max_new_tokens=kwargs["max_new_tokens"],
        decoder_start_token_id=kwargs["decoder_start_token_id"],
        eos_token_id=settings.get("eos_token_id", kwargs["eos_token_id"]),
        pad_token_id=kwargs["pad_token_id"],
        min_new_tokens=settings.get("min_new_tokens", 0),
        decoder_step=step,
    )


def test_fp32_graph_gives_the_torch_loops_tokens(captioner, pixels, tmp_path):
    cfg = captioner.model.config.encoder
    tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
    path = onnx_decoder.export_decoder_step(
        captioner.model.decoder, tokens, 16, tmp_path / "step.onnx", quantise=False
    )
    step = onnx_decoder.OrtDecoderStep(path, 16, num_threads=1)
    reference = _decode(captioner, pixels)
    # step by step, the same logits as the torch loop's (the cache written and read)
    with torch.inference_mode():
        image = encoder_states(captioner.model, pixels)
        ort, eager = step.steps(captioner.model, image, 10), torch_steps(captioner.model, image, 10)
        for pos in range(10):
            last = reference[:, pos : pos + 1]
            torch.testing.assert_close(ort(last, pos), eager(last, pos), atol=1e-4, rtol=1e-4)
    # greedy captions of single images (the graph's batch), with an end token reached
    eos = int(reference[0, 3])
    for i in range(len(pixels)):
        one = pixels[i : i + 1]
        for settings in ({}, {"eos_token_id": eos, "min_new_tokens": 2}):
            assert torch.equal(
                _decode(captioner, one, step, **settings), _decode(captioner, one, **settings)
            )
    # longer than the graph's cache: the torch loop runs instead
    assert _decode(captioner, pixels[:1], step, max_new_tokens=20).shape[1] == 21


def test_int8_load_exports_once_and_reuses_the_cached_graph(
    captioner, pixels, tmp_path, monkeypatch
):
    path = captioner.save(tmp_path / "captioner")
    assert load_captioner(path, precision="int8").decoder_step is None  # torch by default
    first = load_captioner(path, precision="int8", decoder_runtime="onnxruntime")
    assert first.decoder_step is not None and (path / "onnx" / onnx_decoder.FILE).is_file()
    record = json.loads((path / "onnx" / "decoder_step_int8.json").read_text())
    assert record["length"] == first.max_target_length

    exports: list[str] = []
    real_export = onnx_decoder.export_decoder_step
    monkeypatch.setattr(
        onnx_decoder,
        "export_decoder_step",
        lambda *a, **k: exports.append("x") or real_export(*a, **k),
    )
    again = load_captioner(path, precision="int8", decoder_runtime="onnxruntime")
    assert exports == []  # the cached graph, not a new export
    torch_loop = load_captioner(path, precision="int8", decoder_runtime="torch")
    for image in pixels:  # one image at a time: the onnxruntime graph runs
        ids = again.generate_ids(image[None], "greedy", max_new_tokens=8)
        reference = torch_loop.generate_ids(image[None], "greedy", max_new_tokens=8)
        assert ids.shape == reference.shape and (ids == reference).float().mean() > 0.8

    # other weights under the same path: the record no longer matches, so it re-exports
    with torch.no_grad():
        captioner.model.decoder.transformer.ln_f.weight.mul_(1.5)
    captioner.save(path)
    load_captioner(path, precision="int8", decoder_runtime="onnxruntime")
    assert exports == ["x"]


def test_unknown_or_impossible_decoder_runtime_is_a_clear_error(captioner, tmp_path):
    path = captioner.save(tmp_path / "c")
    with pytest.raises(ValueError, match="decoder_runtime must be torch or onnxruntime"):
        load_captioner(path, precision="int8", decoder_runtime="tensorrt")
    assert (
        load_captioner(path, precision="fp32", decoder_runtime="onnxruntime").decoder_step is None
    )
