"""Constants and helpers shared by the ruCLIP package tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vitrina.models.ruclip.yttm import SPACE_TOKEN, YttmModel

#: youtokentome golden fixtures (``scripts/make_yttm_golden_ids.py``) and their BPE model.
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ruclip"
GOLDEN = json.loads((FIXTURES / "golden_ids.json").read_text(encoding="utf-8"))["cases"]
TEXTS = [c["text"] for c in GOLDEN]
LONG = "Очень длинное название товара с артикулом 12345-AB " * 12


def assert_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def toy_with_duplicate_pieces() -> YttmModel:
    # 'abc' is spelled by two ids: 9 = ab+c and 10 = a+bc.
    char2id = {SPACE_TOKEN: 4, "a": 5, "b": 6, "c": 7}
    rules = [(6, 7, 8), (5, 6, 11), (11, 7, 9), (5, 8, 10)]
    return YttmModel(char2id=char2id, rules=rules)
