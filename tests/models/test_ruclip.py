"""ruCLIP checkpoint conversion, tokenizer, image processor, save/load, checkpoint lookup."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.models.openai_clip_reference import ReferenceCLIP
from vitrina.models import ruclip as ruclip_mod
from vitrina.models.ruclip import (
    CHECKPOINT_FILES,
    CheckpointNotFoundError,
    RuClipConfig,
    RuClipTokenizer,
    convert_openai_state_dict,
    image_features,
    load_ruclip,
    make_image_processor,
    resolve_checkpoint,
    save_ruclip_checkpoint,
    text_features,
    to_openai_state_dict,
    write_tiny_ruclip_checkpoint,
)
from vitrina.models.yttm import SPACE_TOKEN, YttmModel, YttmSpecialTokens, read_yttm_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ruclip"
GOLDEN = json.loads((FIXTURES / "golden_ids.json").read_text(encoding="utf-8"))["cases"]
TEXTS = [c["text"] for c in GOLDEN]
LONG = "Очень длинное название товара с артикулом 12345-AB " * 12


def _assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_ruclip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", TEXTS, seed=0)


@pytest.fixture(scope="module")
def bundle(tiny_dir):
    return load_ruclip(tiny_dir)


@pytest.fixture(scope="module")
def state_dict(tiny_dir) -> dict[str, torch.Tensor]:
    return torch.load(tiny_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(tiny_dir, state_dict) -> ReferenceCLIP:
    cfg = json.loads((tiny_dir / "config.json").read_text())
    return ReferenceCLIP.from_state_dict(state_dict, cfg)


# ---------------------------------------------------------------- tiny checkpoint files
def test_tiny_checkpoint_layout(tiny_dir, state_dict):
    assert sorted(os.listdir(tiny_dir)) == sorted(CHECKPOINT_FILES)
    cfg = json.loads((tiny_dir / "config.json").read_text())
    assert list(cfg) == [
        "embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
        "context_length", "vocab_size", "transformer_width", "transformer_heads",
        "transformer_layers", "mean", "std",
    ]  # fmt: skip
    assert cfg["context_length"] == 77
    assert state_dict["visual.transformer.resblocks.1.attn.in_proj_weight"].shape == (192, 64)
    assert state_dict["visual.proj"].shape == (64, cfg["embed_dim"])
    assert state_dict["token_embedding.weight"].shape == (cfg["vocab_size"], 64)
    assert all(t.dtype == torch.float32 for t in state_dict.values())
    bpe = read_yttm_model(tiny_dir / "bpe.model")
    assert bpe.special == YttmSpecialTokens(0, 1, 2, 3)
    assert bpe.vocab_size <= cfg["vocab_size"]


def test_tiny_checkpoint_is_deterministic(tiny_dir, state_dict, tmp_path):
    same = write_tiny_ruclip_checkpoint(tmp_path / "same", TEXTS, seed=0)
    for name in ("bpe.model", "config.json"):
        assert (same / name).read_bytes() == (tiny_dir / name).read_bytes()
    sd = torch.load(same / "pytorch_model.bin", weights_only=True)
    assert all(torch.equal(sd[k], state_dict[k]) for k in state_dict)
    other = torch.load(
        write_tiny_ruclip_checkpoint(tmp_path / "other", TEXTS, seed=1) / "pytorch_model.bin",
        weights_only=True,
    )
    assert not torch.equal(other["visual.proj"], state_dict["visual.proj"])


# ---------------------------------------------------------------- (b) reference forward pass
def test_text_features_match_openai_reference(bundle, reference):
    texts = TEXTS[:48] + ["", LONG, "ФУТБОЛКА 😀 漢字"]
    full = bundle.tokenizer(texts, padding="max_length")
    with torch.no_grad():
        ref = reference.encode_text(full["input_ids"])
        ours = text_features(bundle.model, full["input_ids"], full["attention_mask"])
        no_mask = text_features(bundle.model, full["input_ids"])  # ruclip passes no mask
    assert ref.shape == (len(texts), bundle.config.embed_dim)
    assert ref.std() > 0.1  # non-degenerate
    _assert_close(ours, ref)
    _assert_close(no_mask, ref)


def test_image_features_match_openai_reference(bundle, reference):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(6, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref = reference.encode_image(pixels)
        ours = image_features(bundle.model, pixels)
    assert ref.shape == (6, bundle.config.embed_dim) and ref.std() > 0.1
    _assert_close(ours, ref)
    # through the image processor, from PIL images of various sizes/modes
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in ((64, 64), (100, 70), (48, 160))
    ] + [Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8), mode="L")]
    pv = bundle.image_processor(images=images, return_tensors="pt")["pixel_values"]
    assert pv.shape == (4, 3, 64, 64) and pv.dtype == torch.float32
    with torch.no_grad():
        _assert_close(image_features(bundle.model, pv), reference.encode_image(pv))


def test_logit_scale_and_projection_mapping(bundle, state_dict):
    m = bundle.model
    assert torch.equal(m.logit_scale.detach(), state_dict["logit_scale"])
    assert torch.equal(m.visual_projection.weight.detach(), state_dict["visual.proj"].T)
    assert torch.equal(
        m.text_model.encoder.layers[1].layer_norm2.weight.detach(),
        state_dict["transformer.resblocks.1.ln_2.weight"],
    )
    q = m.vision_model.encoder.layers[0].self_attn.q_proj.weight.detach()
    assert torch.equal(q, state_dict["visual.transformer.resblocks.0.attn.in_proj_weight"][:64])
    tc = m.config.text_config
    assert (tc.hidden_act, tc.eos_token_id, tc.bos_token_id, tc.pad_token_id) == (
        "quick_gelu",
        3,
        2,
        0,
    )
    assert m.config.vision_config.hidden_act == "quick_gelu"
    assert not m.training


# ---------------------------------------------------------------- (c) weight round trip
def test_openai_state_dict_round_trip_is_exact(bundle, state_dict):
    back = to_openai_state_dict(convert_openai_state_dict(state_dict, bundle.config))
    assert list(back) == list(state_dict)
    for k, v in state_dict.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    # the conversion does not alias the caller's tensors
    assert back["visual.proj"].data_ptr() != state_dict["visual.proj"].data_ptr()


def test_convert_rejects_mismatching_state_dicts(bundle, state_dict):
    cfg = bundle.config
    extra = dict(state_dict, input_resolution=torch.tensor(64))  # OpenAI JIT extra: ignored
    convert_openai_state_dict(extra, cfg)
    missing = {k: v for k, v in state_dict.items() if k != "ln_final.bias"}
    with pytest.raises(ValueError, match="ln_final.bias"):
        convert_openai_state_dict(missing, cfg)
    with pytest.raises(ValueError, match="unexpected"):
        convert_openai_state_dict(dict(state_dict, foo=torch.zeros(1)), cfg)
    with pytest.raises(ValueError, match="shapes"):
        convert_openai_state_dict(state_dict, dataclasses.replace(cfg, embed_dim=16))


# ---------------------------------------------------------------- (d) save / load
def test_save_load_round_trip(bundle, tiny_dir, state_dict, tmp_path):
    out = save_ruclip_checkpoint(bundle.model, bundle.tokenizer, bundle.config, tmp_path / "saved")
    assert sorted(os.listdir(out)) == sorted(CHECKPOINT_FILES)
    assert not [p.name for p in tmp_path.iterdir() if p.name != "saved"]  # no temp dirs left
    assert (out / "bpe.model").read_bytes() == (tiny_dir / "bpe.model").read_bytes()
    assert RuClipConfig.from_json(out) == bundle.config
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert list(sd) == list(state_dict) and all(torch.equal(sd[k], state_dict[k]) for k in sd)

    again = load_ruclip(out)
    assert again.path == out and again.config == bundle.config
    batch = again.tokenizer(TEXTS[:20])
    assert torch.equal(batch["input_ids"], bundle.tokenizer(TEXTS[:20])["input_ids"])
    with torch.no_grad():
        assert torch.equal(
            text_features(again.model, **batch), text_features(bundle.model, **batch)
        )

    # saving over an existing checkpoint replaces it
    with torch.no_grad():
        again.model.logit_scale.fill_(1.5)
    save_ruclip_checkpoint(again.model, again.tokenizer, again.config, out)
    assert load_ruclip(out).model.logit_scale.item() == 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_save_is_atomic_and_safe(bundle, tmp_path, monkeypatch):
    out = save_ruclip_checkpoint(bundle.model, bundle.tokenizer, bundle.config, tmp_path / "ckpt")
    before = {f: (out / f).read_bytes() for f in CHECKPOINT_FILES}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ruclip_mod.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_ruclip_checkpoint(bundle.model, bundle.tokenizer, bundle.config, out)
    monkeypatch.undo()
    assert {f: (out / f).read_bytes() for f in CHECKPOINT_FILES} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]

    other = tmp_path / "not_a_checkpoint"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        save_ruclip_checkpoint(bundle.model, bundle.tokenizer, bundle.config, other)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="embed_dim"):
        save_ruclip_checkpoint(
            bundle.model,
            bundle.tokenizer,
            dataclasses.replace(bundle.config, embed_dim=16),
            tmp_path / "x",
        )


# ---------------------------------------------------------------- (e) resolve_checkpoint
@pytest.fixture
def no_network(monkeypatch):
    """Force huggingface_hub offline and record (and refuse) any socket connection."""
    attempts: list = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network access is not allowed in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


def test_resolve_local_directory(tiny_dir, no_network):
    assert resolve_checkpoint(tiny_dir) == tiny_dir
    assert resolve_checkpoint(str(tiny_dir)) == tiny_dir


def test_resolve_rejects_incomplete_directory_and_files(tmp_path, no_network):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError, match="bpe.model"):
        resolve_checkpoint(tmp_path)
    assert resolve_checkpoint(tmp_path, required_files=None) == tmp_path
    with pytest.raises(CheckpointNotFoundError, match="is a file"):
        resolve_checkpoint(tmp_path / "config.json")
    with pytest.raises(CheckpointNotFoundError, match="valid hub repo id"):
        resolve_checkpoint(tmp_path / "no" / "such" / "dir")


def test_unknown_hub_id_offline_raises_a_clear_error(tmp_path, no_network):
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint("ai-forever/ruclip-no-such-model", cache_dir=tmp_path)
    msg = str(info.value)
    assert "ai-forever/ruclip-no-such-model" in msg
    assert "HF_HUB_OFFLINE" in msg
    assert "local" in msg and "directory path" in msg
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(CheckpointNotFoundError, match="ai-forever/ruclip-bare-name"):
        load_ruclip("ruclip-bare-name", cache_dir=tmp_path)


def test_hub_id_found_in_the_local_cache_offline(tiny_dir, tmp_path, no_network):
    # the huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}
    repo = tmp_path / "models--ai-forever--ruclip-tiny"
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in CHECKPOINT_FILES:
        (snap / f).write_bytes((tiny_dir / f).read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert resolve_checkpoint("ruclip-tiny", cache_dir=tmp_path) == snap
    assert load_ruclip(
        "ai-forever/ruclip-tiny", cache_dir=tmp_path
    ).config == RuClipConfig.from_json(tiny_dir)


# ---------------------------------------------------------------- (f) tokenizer
def test_tokenizer_matches_youtokentome_golden_ids():
    """bos + yttm ids (truncated to 75) + eos, on the golden model and texts (lower-case ones)."""
    tok = RuClipTokenizer.from_file(FIXTURES / "bpe.model")
    cases = [c for c in GOLDEN if c["text"] == c["text"].lower()]
    assert len(cases) > 100 and any(len(c["ids"]) > 75 for c in cases)
    got = tok.encode([c["text"] for c in cases])
    assert got == [[2, *c["ids"][:75], 3] for c in cases]


def test_tokenizer_bos_eos_padding_and_truncation(bundle):
    tok = bundle.tokenizer
    assert tok.context_length == 77
    texts = ["футболка", "", LONG, "Кроссовки Nike  Air"]
    full = tok(texts, padding="max_length")
    ids, mask = full["input_ids"], full["attention_mask"]
    assert ids.shape == mask.shape == (4, 77) and ids.dtype == mask.dtype == torch.long
    lengths = mask.sum(1)
    for row, n in zip(ids, lengths.tolist(), strict=True):
        assert row[0] == 2 and row[n - 1] == 3 and (row == 3).sum() == 1
        assert (row[n:] == 0).all() and (row[1 : n - 1] > 3).all()
    assert ids[1, :2].tolist() == [2, 3] and lengths[1] == 2  # empty text
    assert lengths[2] == 77  # truncated: 75 text tokens
    assert ids[2, 1:76].tolist() == tok.bpe_ids([LONG])[0][:75]

    longest = tok(texts, padding="longest")
    assert longest["input_ids"].shape == (4, 77)  # LONG fills the context
    short = tok(texts[:2] + texts[3:])
    n = int(short["attention_mask"].sum(1).max())
    assert short["input_ids"].shape == (3, n)
    assert torch.equal(
        short["input_ids"], tok(texts[:2] + texts[3:], padding="max_length")["input_ids"][:, :n]
    )


def test_tokenizer_lowercases_like_ruclip(bundle):
    tok = bundle.tokenizer
    assert (
        tok(["ФУТБОЛКА Женская NIKE"])["input_ids"].tolist()
        == tok(["футболка женская nike"])["input_ids"].tolist()
    )
    assert tok.decode(tok(["Футболка  ЖЕНСКАЯ"])["input_ids"][0]) == "футболка женская"
    cased = RuClipTokenizer(tok.bpe, lowercase=False)
    assert cased(["ФУТБОЛКА"])["input_ids"].tolist() != tok(["ФУТБОЛКА"])["input_ids"].tolist()


def test_longest_and_max_length_padding_give_identical_features(bundle):
    texts = TEXTS[100:140] + ["", "a"]
    with torch.no_grad():
        a = text_features(bundle.model, **bundle.tokenizer(texts, padding="longest"))
        b = text_features(bundle.model, **bundle.tokenizer(texts, padding="max_length"))
    assert bundle.tokenizer(texts, padding="longest")["input_ids"].shape[1] < 77
    _assert_close(a, b)


def test_tokenizer_input_validation(bundle):
    tok = bundle.tokenizer
    assert tok("одна строка")["input_ids"].shape[0] == 1
    assert tok([])["input_ids"].shape == (0, 77)
    with pytest.raises(ValueError, match="padding"):
        tok(["x"], padding="do_not_pad")
    with pytest.raises(TypeError):
        tok(["x", None])
    with pytest.raises(ValueError, match="special ids"):
        RuClipTokenizer(YttmModel({SPACE_TOKEN: 5, "a": 4}, [], YttmSpecialTokens(0, 1, 3, 2)))


def test_tokenizer_falls_back_to_python_encoder():
    dup = YttmModel(
        {SPACE_TOKEN: 4, "a": 5, "b": 6, "c": 7}, [(6, 7, 8), (5, 6, 11), (11, 7, 9), (5, 8, 10)]
    )
    with pytest.warns(UserWarning, match="pure-Python"):
        tok = RuClipTokenizer(dup)
    assert tok.backend == "python"
    assert tok(["ABC ab"])["input_ids"].tolist() == [[2, 4, 10, 4, 11, 3]]


# ---------------------------------------------------------------- config + image processor
def test_config_json_round_trip(bundle, tmp_path):
    cfg = bundle.config
    assert RuClipConfig.from_json(cfg.to_json(tmp_path / "config.json")) == cfg
    assert cfg.vision_heads == 1 and cfg.grid_size == 4
    d = cfg.to_dict()
    del d["mean"], d["std"]  # optional: ruclip falls back to the OpenAI CLIP values
    assert RuClipConfig.from_dict(d).mean == (0.48145466, 0.4578275, 0.40821073)
    del d["vocab_size"]
    with pytest.raises(ValueError, match="vocab_size"):
        RuClipConfig.from_dict(d)
    with pytest.raises(ValueError, match="multiple of 64"):
        dataclasses.replace(cfg, vision_width=96)
    with pytest.raises(ValueError, match="vision_patch_size"):
        dataclasses.replace(cfg, vision_patch_size=24)


def test_image_processor_crops_the_centre_and_normalises():
    cfg = RuClipConfig(
        embed_dim=8, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
        context_length=77, vocab_size=100, transformer_width=64, transformer_heads=1,
        transformer_layers=1, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5),
    )  # fmt: skip
    proc = make_image_processor(cfg)
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pv = proc(images=[Image.fromarray(arr)], return_tensors="pt")["pixel_values"][0]
    expected = (
        torch.from_numpy(arr).permute(2, 0, 1) / 255.0 - torch.tensor(cfg.mean)[:, None, None]
    ) / torch.tensor(cfg.std)[:, None, None]
    _assert_close(pv, expected.float())
    # a 64x32 (w x h) image: the shortest edge already fits, the centre 32 columns are kept
    wide = np.zeros((32, 64, 3), dtype=np.uint8)
    wide[:, :, 2] = 255  # blue borders
    wide[:, 16:48] = (255, 0, 0)  # red centre
    pv = proc(images=[Image.fromarray(wide)], return_tensors="pt")["pixel_values"][0]
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    _assert_close(pv, red[:, None, None].expand(3, 32, 32))


def test_non_ruclip_clip_models_are_rejected(bundle):
    from transformers import CLIPModel

    clip_config = bundle.config.to_clip_config()
    clip_config.text_config.hidden_act = "gelu"
    with pytest.raises(ValueError, match="quick_gelu"):
        to_openai_state_dict(CLIPModel(clip_config))
