"""The tiny random-weight checkpoint writer (``vitrina.models.ruclip.tiny``)."""

from __future__ import annotations

import json
import os

import torch

from tests.models.ruclip.common import TEXTS
from vitrina.models.ruclip.checkpoint import CHECKPOINT_FILES
from vitrina.models.ruclip.tiny import write_tiny_ruclip_checkpoint
from vitrina.models.ruclip.yttm import YttmSpecialTokens, read_yttm_model


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
