"""Captioner tokenizers: a byte-level BPE trained on the descriptions, or a pretrained
decoder's tokenizer with the seed system's special tokens, and the fingerprint that ties a
tokenizer to the model trained with it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from .configuration import SPECIAL_TOKENS


def train_bpe_tokenizer(
    texts: Sequence[str], vocab_size: int = 4000, min_frequency: int = 2
) -> Any:
    """A byte-level BPE (GPT-2 style) trained on ``texts`` with the ``tokenizers`` library.

    Ids 0, 1, 2 are ``[PAD]``, ``[BOS]``, ``[EOS]``; the 256 byte symbols follow, so any
    text encodes (no unknown token). Encoding adds no special token: the captioner adds
    ``[BOS]``/``[EOS]`` itself. Deterministic for the same texts and settings.

    Args:
        texts: training descriptions.
        vocab_size: target vocabulary size, special tokens included (the result may be
            smaller on a small corpus; at least 259).
        min_frequency: minimum pair count for a merge.

    Returns:
        A ``transformers`` fast tokenizer (``TokenizersBackend``) with pad/bos/eos set.

    Raises:
        ValueError: no text to train on.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in (str(x) for x in texts) if t.strip()]
    if not texts:
        raise ValueError("train_bpe_tokenizer needs at least one non-empty text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(int(vocab_size), 259),
        min_frequency=int(min_frequency),
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def pretrained_tokenizer(name_or_path: str) -> Any:
    """A pretrained tokenizer with the seed's ``[PAD]``/``[BOS]``/``[EOS]`` tokens added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    tokenizer.add_special_tokens(dict(SPECIAL_TOKENS))
    return tokenizer


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 (16 hex chars) of the tokenizer's vocabulary and special token ids.

    Two tokenizers with the same fingerprint map every token to the same id, so a model
    trained with one decodes correctly with the other.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    payload = json.dumps(
        {
            "vocab": vocab,
            "special": [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id],
        },
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]
