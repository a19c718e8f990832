"""Building, saving and loading a captioner; model/tokenizer compatibility errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitrina.models.captioner import (
    CAPTIONER_FILES,
    Captioner,
    CaptionerConfig,
    CaptionerMismatchError,
    build_captioner,
    check_compatible,
    count_parameters,
    load_captioner,
    resolve_pretrained,
    train_bpe_tokenizer,
)

from .fixtures import TINY, descriptions


def test_forward_shapes_and_truncated_targets(tiny):
    ids, n_truncated = tiny.encode_targets(["A red top.", "word " * 40])
    assert n_truncated == 1
    assert ids[0][-1] == tiny.tokenizer.eos_token_id
    assert len(ids[1]) == tiny.max_target_length and tiny.tokenizer.eos_token_id not in ids[1]
    batch = tiny.collate_targets(ids)
    assert batch["decoder_input_ids"][:, 0].tolist() == [tiny.tokenizer.bos_token_id] * 2
    assert (batch["labels"][0, len(ids[0]) :] == -100).all()
    pixels = tiny.pixel_values([Image.new("RGB", (50, 50), "red")] * 2)
    assert pixels.shape == (2, 3, 32, 32) and pixels.dtype == torch.float32
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0
    out = tiny.model(
        pixel_values=pixels,
        decoder_input_ids=batch["decoder_input_ids"],
        decoder_attention_mask=batch["decoder_attention_mask"],
    )
    assert out.logits.shape == (2, batch["labels"].shape[1], len(tiny.tokenizer))
    sizes = count_parameters(tiny)
    assert sizes["total"] == sizes["encoder"] + sizes["decoder"] > 0


def test_context_caps_the_target_length():
    config = CaptionerConfig.from_params({**TINY, "max_target_length": 100}, "tiny")
    captioner = build_captioner(config, descriptions())
    assert captioner.max_target_length == TINY["n_positions"]


def test_pretrained_source_must_be_a_directory_or_a_hub_id():
    with pytest.raises(ValueError, match="neither a local directory nor an 'org/name' hub id"):
        resolve_pretrained("distilgpt2-not-here")


def test_save_load_round_trip(tiny, images, tmp_path):
    path = tiny.save(tmp_path / "captioner")
    assert all((path / f).is_file() for f in CAPTIONER_FILES)
    meta = json.loads((path / "captioner.json").read_text())
    assert meta["config"]["name"] == "tiny" and meta["max_target_length"] == 24
    loaded = load_captioner(path)
    pixels = tiny.pixel_values([Image.open(p).convert("RGB") for p in images])
    assert torch.equal(tiny.generate_ids(pixels), loaded.generate_ids(pixels))
    half = load_captioner(path, precision="bf16")
    assert half.dtype == torch.bfloat16
    assert len(half.caption_images([Image.open(images[0]).convert("RGB")], "beam")) == 1
    (path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['tokenizer.json'\]"):
        load_captioner(path)


def test_tokenizer_of_another_model_is_refused(tiny, tmp_path):
    other = train_bpe_tokenizer(["completely different words here"] * 5, vocab_size=300)
    with pytest.raises(CaptionerMismatchError, match="tokenizer has .* tokens, the decoder"):
        Captioner(tiny.model, other, tiny.image_processor, {})
    # Same size, other vocabulary: caught by the fingerprint saved with the model.
    path = tiny.save(tmp_path / "a")
    size = len(tiny.tokenizer)
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("klmnopqrstuvwxyz"), 6)) for _ in range(400)]
    same_size = train_bpe_tokenizer(words, vocab_size=size, min_frequency=1)
    assert len(same_size) == size
    same_size.save_pretrained(path)
    with pytest.raises(CaptionerMismatchError, match="fingerprint"):
        load_captioner(path)


def test_special_token_ids_must_match_the_model(tiny):
    tokenizer = train_bpe_tokenizer(descriptions(), vocab_size=320, min_frequency=1)
    assert len(tokenizer) == len(tiny.tokenizer)
    tokenizer.eos_token = "[PAD]"  # eos id 0: the model stops on 2
    with pytest.raises(CaptionerMismatchError, match=r"eos id: model 2, tokenizer 0"):
        check_compatible(tiny.model, tokenizer)
