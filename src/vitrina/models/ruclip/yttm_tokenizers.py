"""youtokentome BPE models on the ``tokenizers`` Rust library: conversion and training.

* :func:`yttm_to_tokenizer` -- a :class:`tokenizers.Tokenizer` whose ids equal
  youtokentome's ``BPE.encode(texts, output_type=yttm.OutputType.ID)`` (no bos/eos,
  dropout 0) for any text;
* :func:`train_yttm_bpe` -- trains a new BPE (with the ``tokenizers`` Rust trainer) and
  returns it in youtokentome's format, so that the real youtokentome can load the saved file.

The model, its file format and youtokentome's text handling are in
:mod:`vitrina.models.ruclip.yttm`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vitrina.models.ruclip.yttm import (
    SPACE_TOKEN,
    SPECIAL_TOKEN_NAMES,
    YTTM_WHITESPACE,
    YTTM_WHITESPACE_CLASS,
    YTTM_WHITESPACE_RUN,
    YttmModel,
    YttmSpecialTokens,
)

__all__ = ["YttmConversionError", "train_yttm_bpe", "yttm_to_tokenizer"]


class YttmConversionError(ValueError):
    """A youtokentome model cannot be represented exactly as a ``tokenizers`` BPE model.

    This happens only if two different token ids spell the same string (which the real
    youtokentome trainer has not been observed to produce); use :meth:`YttmModel.encode`.
    """


# ---------------------------------------------------------------------- tokenizers port
def _normalizer() -> normalizers.Normalizer:
    # "a  b\t" -> "▁a▁b": every word gets a leading '▁', whitespace runs collapse, and
    # leading/trailing whitespace disappears (Prepend is a no-op on the empty string).
    return normalizers.Sequence(
        [
            normalizers.Prepend(SPACE_TOKEN),
            normalizers.Replace(Regex(YTTM_WHITESPACE_CLASS + "+"), SPACE_TOKEN),
            normalizers.Replace(Regex(SPACE_TOKEN + "\\z"), ""),
        ]
    )


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(SPACE_TOKEN, behavior="merged_with_next")


def _special_strings(model: YttmModel) -> dict[int, str]:
    """Names for the special ids that cannot collide with a real token string."""
    taken = set(model.pieces.values())
    out = {}
    for name, idx in model.special.present().items():
        s = SPECIAL_TOKEN_NAMES[name]
        while s in taken:  # a token spelling "<UNK>" etc.: use a string no word can contain
            s = s + "\n"
        taken.add(s)
        out[idx] = s
    return out


def yttm_to_tokenizer(model: YttmModel) -> Tokenizer:
    """Convert a youtokentome model to an equivalent :class:`tokenizers.Tokenizer`.

    ``tok.encode_batch(texts)[i].ids`` equals youtokentome's
    ``encode(texts, output_type=ID)[i]`` (no bos/eos; add them yourself) for every text.
    The pipeline: a normalizer that maps youtokentome whitespace runs to ``'▁'`` and prefixes
    every word with it, a split before each ``'▁'``, and a BPE model with the yttm alphabet,
    the rules as merges (same priority order), ``unk_token`` = the unk id's name and
    ``fuse_unk=True`` (a run of unknown characters -> one unk id, as in youtokentome).
    Special tokens are vocabulary entries (``<PAD>``, ``<UNK>``, ``<BOS>``, ``<EOS>``), not
    "added tokens", so a literal ``"<UNK>"`` in a text is encoded character by character,
    as youtokentome does.

    Raises:
        YttmConversionError: two ids spell the same string (see :class:`YttmConversionError`).
    """
    dups = model.duplicate_pieces()
    if dups:
        sample = ", ".join(f"{p!r}: {ids}" for p, ids in list(dups.items())[:5])
        raise YttmConversionError(
            f"{len(dups)} token strings have several ids ({sample}); a tokenizers BPE model "
            "maps each string to one id. Use YttmModel.encode() instead."
        )
    vocab = {piece: idx for idx, piece in model.pieces.items()}
    specials = _special_strings(model)
    vocab.update({s: idx for idx, s in specials.items()})
    merges = [(model.pieces[x], model.pieces[y]) for x, y, _z in model.rules]
    bpe = models.BPE(
        vocab=vocab,
        merges=merges,
        unk_token=specials[model.special.unk_id],
        fuse_unk=True,
        byte_fallback=False,
        ignore_merges=False,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Metaspace(replacement=SPACE_TOKEN, prepend_scheme="always", split=True)
    return tok


# ---------------------------------------------------------------------- training
def _alphabet(texts: Sequence[str], coverage: float) -> tuple[list[str], set[str]]:
    """youtokentome's ``compute_alphabet_helper``: (kept chars by decreasing frequency, removed).

    The rarest characters are dropped while the dropped share stays below ``1 - coverage``
    of all characters (whitespace and one newline per text included, as in the training
    file youtokentome reads).
    """
    counts: Counter[str] = Counter()
    data_len = 0
    for t in texts:
        counts.update(t)
        data_len += len(t) + 1
    for ch in YTTM_WHITESPACE:
        counts.pop(ch, None)
    freq = sorted((c, ord(ch)) for ch, c in counts.items())  # ascending, ties by code point
    cur = 0
    removed_total = 0
    while cur < len(freq) and data_len - removed_total - freq[cur][0] > data_len * coverage:
        removed_total += freq[cur][0]
        cur += 1
    removed = {chr(cp) for _c, cp in freq[:cur]}
    kept = [chr(cp) for _c, cp in reversed(freq[cur:])]
    return kept, removed


def _id_allocator(taken: set[int]) -> Iterable[int]:
    i = 0
    while True:
        if i not in taken:
            yield i
        i += 1


def train_yttm_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    coverage: float = 1.0,
    special: YttmSpecialTokens | None = None,
) -> YttmModel:
    """Train a BPE on ``texts`` and return it as a youtokentome model (no youtokentome needed).

    Mirrors youtokentome's ``BPE.train`` semantics: the alphabet is every non-whitespace
    character, minus the rarest ones when ``coverage`` < 1 (those are deleted from the
    training text and encode to ``unk_id`` later); ids are the special ids, then ``'▁'``, then
    characters by decreasing frequency, then one id per merge.  The merges themselves are
    learned by the ``tokenizers`` Rust ``BpeTrainer`` on youtokentome-style words
    (``'▁' + word``); a merge whose result string already exists is skipped so every id has a
    distinct string (:func:`yttm_to_tokenizer` then always works).  The result is saved with
    :func:`write_yttm_model` and loads in the real youtokentome.

    Args:
        texts: training texts (any iterable; materialised once).
        vocab_size: target number of tokens including special tokens (youtokentome's
            ``vocab_size``); fewer are produced if the corpus runs out of pairs.
        coverage: youtokentome's ``coverage`` (fraction of characters kept), in (0, 1].
        special: special ids; default pad 0, unk 1, bos 2, eos 3 (youtokentome / ruCLIP).

    Returns:
        The trained :class:`YttmModel`.

    Raises:
        ValueError: empty corpus, ``coverage`` outside (0, 1], or ``vocab_size`` smaller than
            the special tokens + alphabet (the message gives the minimum).
    """
    special = special or YttmSpecialTokens()
    special.validate()
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    texts = [t for t in texts]
    if not any(YTTM_WHITESPACE_RUN.sub("", t) for t in texts):
        raise ValueError("cannot train a BPE on an empty corpus")
    kept, removed = _alphabet(texts, coverage)
    alphabet = [SPACE_TOKEN] + kept
    n_special = len(special.present())
    if vocab_size < n_special + len(alphabet):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the {n_special} special tokens and the "
            f"{len(alphabet)}-character alphabet need at least {n_special + len(alphabet)}"
        )
    for sid in special.present().values():
        if sid >= vocab_size:
            raise ValueError(f"special id {sid} must be < vocab_size={vocab_size}")
    if removed:
        drop = re.compile("[" + "".join(re.escape(c) for c in sorted(removed)) + "]")
        texts = [drop.sub("", t) for t in texts]

    # The HF trainer budget: its own special tokens + alphabet + merges == vocab_size.
    hf_specials = [f"<special{i}>" for i in range(n_special)]
    tok = Tokenizer(models.BPE(unk_token=hf_specials[0] if hf_specials else None))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        special_tokens=hf_specials,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    merges = json.loads(tok.to_str())["model"]["merges"]

    ids = _id_allocator(set(special.present().values()))
    char2id = {ch: next(ids) for ch in alphabet}
    piece2id: dict[str, int] = dict(char2id)
    rules: list[tuple[int, int, int]] = []
    max_rules = vocab_size - n_special - len(alphabet)
    for a, b in merges:
        if len(rules) >= max_rules:
            break
        if a not in piece2id or b not in piece2id or a + b in piece2id:
            continue
        z = next(ids)
        rules.append((piece2id[a], piece2id[b], z))
        piece2id[a + b] = z
    return YttmModel(char2id=char2id, rules=rules, special=special)
