"""Save / load and checkpoint lookup (``vitrina.models.ruclip.checkpoint``)."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from tests.models.ruclip.common import TEXTS
from vitrina.models.ruclip import checkpoint as checkpoint_mod
from vitrina.models.ruclip.checkpoint import (
    CHECKPOINT_FILES,
    CheckpointNotFoundError,
    load_ruclip,
    resolve_checkpoint,
    save_ruclip_checkpoint,
)
from vitrina.models.ruclip.configuration import RuClipConfig
from vitrina.models.ruclip.modeling import text_features


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

    monkeypatch.setattr(checkpoint_mod.torch, "save", boom)
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
