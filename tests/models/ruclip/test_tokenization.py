"""The ruCLIP tokenizer (``vitrina.models.ruclip.tokenization``)."""

from __future__ import annotations

import pytest
import torch

from tests.models.ruclip.common import FIXTURES, GOLDEN, LONG, TEXTS, assert_close
from vitrina.models.ruclip.modeling import text_features
from vitrina.models.ruclip.tokenization import RuClipTokenizer
from vitrina.models.ruclip.yttm import SPACE_TOKEN, YttmModel, YttmSpecialTokens


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
    assert_close(a, b)


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
