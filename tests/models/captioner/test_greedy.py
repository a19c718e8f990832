"""Vitrina's greedy loop gives the tokens of transformers' greedy ``generate``."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vitrina.models.captioner import CaptionerConfig, build_captioner
from vitrina.models.captioner.greedy import greedy_decode, supports

from .fixtures import TINY, descriptions


@pytest.fixture(scope="module")
def wide():
    """Two decoder layers, and an encoder wider than the decoder (``enc_to_dec_proj``)."""
    params = {**TINY, "encoder_width": 48, "decoder_layers": 2, "seed": 3}
    captioner = build_captioner(CaptionerConfig.from_params(params, "wide"), descriptions())
    captioner.model.eval()
    return captioner


@pytest.fixture(scope="module")
def pixels(wide, images):
    return wide.pixel_values([Image.open(p).convert("RGB") for p in images])


def _reference(captioner, pixels, **settings):
    kwargs = captioner.generation_kwargs("greedy", **settings)
    with torch.inference_mode():
        return captioner.model.generate(pixel_values=pixels, **kwargs)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"min_new_tokens": 5},
        {"no_repeat_ngram_size": 2},
        {"repetition_penalty": 1.5},
    ],
    ids=["plain", "min_new_tokens", "no_repeat_ngram", "repetition_penalty"],
)
def test_greedy_loop_matches_generate_with_eos_and_padding(wide, pixels, settings):
    assert supports(wide.model) and wide.model.enc_to_dec_proj is not None
    # Make a token the first image emits at its 3rd step the end token, so that rows end
    # at different steps and the finished ones are padded.
    first = _reference(wide, pixels, max_new_tokens=12, **settings)
    eos = int(first[0, 3])
    settings = {**settings, "max_new_tokens": 12}
    kwargs = {**wide.generation_kwargs("greedy", **settings), "eos_token_id": eos}
    with torch.inference_mode():
        expected = wide.model.generate(pixel_values=pixels, **kwargs)
    got = greedy_decode(
        wide.model,
        pixels,
        max_new_tokens=12,
        decoder_start_token_id=kwargs["decoder_start_token_id"],
        eos_token_id=eos,
        pad_token_id=kwargs["pad_token_id"],
        min_new_tokens=settings.get("min_new_tokens", 0),
        no_repeat_ngram_size=settings.get("no_repeat_ngram_size", 0),
        repetition_penalty=settings.get("repetition_penalty", 1.0),
    )
    assert torch.equal(got, expected)
    assert (got == eos).any()  # the end token was reached, so the stop path ran


def test_captioner_greedy_runs_the_loop_and_beam_runs_generate(wide, pixels, monkeypatch):
    calls: list[int] = []
    original = wide.model.generate
    monkeypatch.setattr(
        wide.model, "generate", lambda **kw: calls.append(kw["num_beams"]) or original(**kw)
    )
    greedy_ids = wide.generate_ids(pixels, "greedy", max_new_tokens=7)
    assert calls == []
    assert torch.equal(greedy_ids, _reference(wide, pixels, max_new_tokens=7))
    wide.generate_ids(pixels, "beam", max_new_tokens=7, num_beams=2)
    assert calls == [1, 2]  # the reference above, then the beam search
    monkeypatch.setattr(wide, "greedy_loop", False)
    assert torch.equal(wide.generate_ids(pixels, "greedy", max_new_tokens=7), greedy_ids)
    assert calls == [1, 2, 1]  # greedy_loop=False: transformers' generate


def test_greedy_loop_refuses_more_positions_than_the_decoder_has(wide, pixels):
    with pytest.raises(ValueError, match=r"max_new_tokens must be within 1\.\.32"):
        greedy_decode(
            wide.model,
            pixels,
            max_new_tokens=33,
            decoder_start_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
