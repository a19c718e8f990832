"""Captioner tokenizers: the byte-level BPE and the tokenizer fingerprint."""

from __future__ import annotations

import pytest

from vitrina.models.captioner import tokenizer_fingerprint, train_bpe_tokenizer

from .fixtures import descriptions


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


def test_fingerprint_is_deterministic_and_tells_vocabularies_apart():
    a = train_bpe_tokenizer(descriptions(), vocab_size=300, min_frequency=1)
    b = train_bpe_tokenizer(descriptions(), vocab_size=300, min_frequency=1)
    other = train_bpe_tokenizer(["completely different words"] * 5, vocab_size=300)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(other)
