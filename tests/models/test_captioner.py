"""Captioner model code: tokenizer, build, targets, save/load, mismatch errors, training."""

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
    caption_paths,
    load_captioner,
    pad_to_square,
    resolve_dtype,
    resolve_pretrained,
    select_config,
    train_bpe_tokenizer,
)
from vitrina.models.captioner_training import (
    TrainingConfig,
    bag_of_words_targets,
    epoch_batches,
    train_captioner_model,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
GARMENTS = ["top", "dress", "skirt", "jacket"]

TINY = dict(
    image_size=32,
    patch_size=16,
    encoder_layers=1,
    encoder_width=32,
    encoder_heads=2,
    encoder_mlp=64,
    decoder_layers=1,
    decoder_width=32,
    decoder_heads=2,
    n_positions=32,
    max_target_length=24,
    vocab_size=320,
    min_frequency=1,
    dropout=0.1,
    seed=0,
)


def descriptions() -> list[str]:
    return [f"A {c} {g} in soft cotton with long sleeves." for c in COLOURS for g in GARMENTS] + [
        f"Straight-cut {g} in {c} woven fabric." for c in COLOURS for g in GARMENTS
    ]


@pytest.fixture(scope="module")
def tiny() -> Captioner:
    return build_captioner(
        CaptionerConfig.from_params(TINY, "tiny"), descriptions(), {"max_new_tokens": 8}
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three coloured 40x60 JPEGs (non-square: padded like image_processing does)."""
    root = tmp_path_factory.mktemp("images")
    paths = []
    for name, rgb in COLOURS.items():
        path = root / f"{name}.jpg"
        Image.new("RGB", (40, 60), rgb).save(path)
        paths.append(str(path))
    return paths


def test_bpe_tokenizer_has_the_seed_special_tokens_and_no_unknowns():
    tok = train_bpe_tokenizer(descriptions(), vocab_size=300, min_frequency=1)
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("[PAD]", "[BOS]", "[EOS]")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    text = "Jacket in wool — ёлочка 100%"  # characters never seen in training: bytes
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok) <= 300
    with pytest.raises(ValueError, match="non-empty text"):
        train_bpe_tokenizer(["", "  "])


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match=r"Unknown captioner configuration keys \['layers'\]"):
        CaptionerConfig.from_params({"layers": 3}, "x")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        CaptionerConfig(image_size=30, patch_size=16)
    with pytest.raises(KeyError, match=r"'huge' is not in captioning.models \['small'\]"):
        select_config({"model": "huge", "models": {"small": {}}})
    with pytest.raises(ValueError, match="neither a local directory nor an 'org/name' hub id"):
        resolve_pretrained("distilgpt2-not-here")
    assert resolve_dtype("fp32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_dtype("int4", "cpu")


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


def test_context_caps_the_target_length():
    config = CaptionerConfig.from_params({**TINY, "max_target_length": 100}, "tiny")
    captioner = build_captioner(config, descriptions())
    assert captioner.max_target_length == TINY["n_positions"]


def test_generation_settings(tiny):
    greedy = tiny.generation_kwargs("greedy")
    assert greedy["num_beams"] == 1 and greedy["max_new_tokens"] == 8 and greedy["use_cache"]
    beam = tiny.generation_kwargs("beam", num_beams=3)
    assert beam["num_beams"] == 3 and beam["decoder_start_token_id"] == 1
    with pytest.raises(ValueError, match="decoding must be one of"):
        tiny.generation_kwargs("sampling")


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


def test_pad_to_square_centres_on_white():
    img = pad_to_square(Image.new("RGB", (20, 10), (0, 0, 0)))
    assert img.size == (20, 20)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((10, 10)) == (0, 0, 0)


def test_epoch_batches_depend_only_on_seed_and_epoch():
    lengths = np.arange(100) % 17
    a = epoch_batches(lengths, 8, seed=1, epoch=0)
    assert [x.tolist() for x in a] == [x.tolist() for x in epoch_batches(lengths, 8, 1, 0)]
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert [x.tolist() for x in a] != [x.tolist() for x in epoch_batches(lengths, 8, 1, 1)]


def _train(images, config, **kwargs):
    texts = [f"A {c} top in soft cotton." for c in COLOURS]
    captioner = build_captioner(CaptionerConfig.from_params(TINY, "tiny"), texts * 2)
    return train_captioner_model(
        captioner,
        images * 4,
        texts * 4,
        images,
        texts,
        config,
        train_ids=[f"t{i}" for i in range(12)],
        val_ids=["v0", "v1", "v2"],
        progress=False,
        **kwargs,
    )


def test_training_resumes_where_it_was_interrupted(images, tmp_path):
    settings = dict(
        epochs=2,
        batch_size=4,
        learning_rate=3e-3,
        warmup_ratio=0.2,
        device="cpu",
        checkpoint_every_steps=1,
        sample_images=1,
        num_workers=1,
        pretrain_epochs=1,
        token_dropout=0.3,
        bow_weight=0.5,
    )
    reference = _train(images, TrainingConfig(**settings, checkpoint_dir=str(tmp_path / "a")))
    assert reference.history["epoch"].tolist() == [1, 2]
    assert reference.history["val_loss"].notna().all() and reference.resumed_from_step == 0
    # it learns (a trainer that never stepped would resume just as exactly)
    assert reference.history["train_loss"].iloc[1] < reference.history["train_loss"].iloc[0]
    assert reference.history["bow_loss"].notna().all()

    class Interrupt(Exception):
        pass

    def stop_at_4(step: int) -> None:
        if step == 4:
            raise Interrupt

    config = TrainingConfig(**settings, checkpoint_dir=str(tmp_path / "b"))
    with pytest.raises(Interrupt):
        _train(images, config, on_step=stop_at_4)
    resumed = _train(images, config)
    assert resumed.resumed_from_step == 4  # 3 steps an epoch: stopped inside epoch 2
    assert resumed.history["val_loss"].tolist() == pytest.approx(
        reference.history["val_loss"].tolist(), rel=1e-5
    )
    for key, value in reference.captioner.model.state_dict().items():
        torch.testing.assert_close(resumed.captioner.model.state_dict()[key], value)
    assert resumed.captioner.meta["training"]["best_epoch"] == reference.best_epoch

    done = _train(images, config)  # finished: nothing left to train
    assert done.resumed_from_step == 6 and len(done.history) == 2

    changed = TrainingConfig(
        **{**settings, "learning_rate": 1e-3}, checkpoint_dir=config.checkpoint_dir
    )
    assert _train(images, changed).resumed_from_step == 0  # other settings: fresh start


def test_training_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"Unknown captioning.training keys \['lr'\]"):
        TrainingConfig.from_params({"lr": 0.1})


def test_bag_of_words_targets_weight_rare_tokens():
    present, idf = bag_of_words_targets([[3, 4, 2], [3, 5, 2], [3, 3, 2]], 6, ignore=[0, 1, 2])
    assert present.shape == (3, 6) and present[2].tolist() == [
        False,
        False,
        True,
        True,
        False,
        False,
    ]
    assert idf[2] == 0 and idf[3] < idf[4] == idf[5]


def test_int8_decoder_matches_bf16_and_is_inference_only(tiny, images, tmp_path, monkeypatch):
    from vitrina.models import captioner as module

    layer = torch.nn.Linear(32, 5)
    quantised = module.Int8Linear(layer.weight, layer.bias)
    x = torch.randn(3, 32)
    torch.testing.assert_close(quantised(x).float(), layer(x), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="divisible by 16"):
        module.Int8Linear(torch.randn(4, 24), None)

    path = tiny.save(tmp_path / "captioner")
    int8 = load_captioner(path, precision="int8")
    assert sum(isinstance(m, module.Int8Linear) for m in int8.model.modules()) > 0
    pixels = tiny.pixel_values([Image.open(p).convert("RGB") for p in images])
    assert len(int8.generate(pixels, "beam")) == 3
    with pytest.raises(ValueError, match="inference only"):
        int8.save(tmp_path / "again")
    with pytest.raises(ValueError, match="stays int8"):
        int8.to("cpu", "fp32")

    monkeypatch.setattr(module, "cpu_supports_bf16", lambda: True)
    assert module.resolve_precision("auto", "cpu") == "int8"
    monkeypatch.setattr(module, "cpu_supports_bf16", lambda: False)
    assert module.resolve_precision("auto", "cpu") == "fp32"
    assert module.resolve_precision("bf16", "cpu") == "bf16"


def test_auto_threads_use_the_cores_other_work_leaves_idle(monkeypatch):
    import subprocess
    import sys

    from vitrina.models import captioner as module

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)  # let it start spinning
        assert module.busy_cores(window=0.5) >= 0.6  # one core kept busy by the spinner
    finally:
        spinner.kill()
        spinner.wait()

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(module.os, "cpu_count", lambda: 4)
        torch.set_num_threads(4)
        monkeypatch.setattr(module, "busy_cores", lambda window=0.3: 2.8)
        assert module.auto_threads("auto") == 1  # 4 - 2.8 → 1
        monkeypatch.setattr(module, "busy_cores", lambda window=0.3: 0.2)
        assert module.auto_threads("auto") == 4
        assert module.auto_threads(2) == 2 and module.auto_threads(None) is None
        assert torch.get_num_threads() == 4  # computing a count sets nothing

        from vitrina.utils import limit_threads

        with limit_threads(module.auto_threads(2)):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 4  # restored after the block
    finally:
        torch.set_num_threads(before)
