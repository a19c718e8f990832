"""Fixtures of the ruCLIP package tests: a tiny checkpoint, its bundle and weights."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from tests.models.openai_clip_reference import ReferenceCLIP
from tests.models.ruclip.common import FIXTURES, TEXTS
from vitrina.models.ruclip.checkpoint import load_ruclip
from vitrina.models.ruclip.tiny import write_tiny_ruclip_checkpoint
from vitrina.models.ruclip.yttm import YttmModel, read_yttm_model


@pytest.fixture(scope="package")
def tiny_dir(tmp_path_factory) -> Path:
    return write_tiny_ruclip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", TEXTS, seed=0)


@pytest.fixture(scope="package")
def bundle(tiny_dir):
    return load_ruclip(tiny_dir)


@pytest.fixture(scope="package")
def state_dict(tiny_dir) -> dict[str, torch.Tensor]:
    return torch.load(tiny_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)


@pytest.fixture(scope="package")
def reference(tiny_dir, state_dict) -> ReferenceCLIP:
    cfg = json.loads((tiny_dir / "config.json").read_text())
    return ReferenceCLIP.from_state_dict(state_dict, cfg)


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


@pytest.fixture(scope="module")
def golden() -> dict:
    """Produced by scripts/make_yttm_golden_ids.py with youtokentome 1.0.6."""
    return json.loads((FIXTURES / "golden_ids.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bpe() -> YttmModel:
    return read_yttm_model(FIXTURES / "bpe.model")


@pytest.fixture(scope="module")
def texts(golden) -> list[str]:
    return [c["text"] for c in golden["cases"]]
