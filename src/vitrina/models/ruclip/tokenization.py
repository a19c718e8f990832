"""ruCLIP's text tokenizer (``ruclip.RuCLIPProcessor.encode_text``) without youtokentome.

``bpe.model`` -> :class:`RuClipTokenizer` (lower-case, youtokentome ids, truncate to
``context_length - 2``, wrap in bos 2 / eos 3, pad with 0 -- ``ruclip.RuCLIPProcessor``).
The BPE itself is :mod:`vitrina.models.ruclip.yttm` (file format, reference encoder) and
:mod:`vitrina.models.ruclip.yttm_tokenizers` (the same BPE on the ``tokenizers`` library).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vitrina.models.ruclip.configuration import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from vitrina.models.ruclip.yttm import (
    YttmModel,
    YttmSpecialTokens,
    read_yttm_model,
    write_yttm_model,
)
from vitrina.models.ruclip.yttm_tokenizers import YttmConversionError, yttm_to_tokenizer

__all__ = ["RUCLIP_SPECIAL_TOKENS", "RuClipTokenizer"]

RUCLIP_SPECIAL_TOKENS = YttmSpecialTokens(
    pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID
)


class RuClipTokenizer:
    """ruCLIP text tokenizer (``ruclip.RuCLIPProcessor.encode_text``) without youtokentome.

    For each text: ``text.lower()`` (Python's), youtokentome BPE ids (dropout 0), truncate
    to ``context_length - 2`` ids, prepend bos (2), append eos (3), pad with 0.  The BPE runs
    in the ``tokenizers`` Rust library
    (:func:`~vitrina.models.ruclip.yttm_tokenizers.yttm_to_tokenizer`) and falls back to the
    exact pure-Python encoder if the model cannot be converted.

    Args:
        bpe: the youtokentome model; its special ids must be pad 0, unk 1, bos 2, eos 3.
        context_length: maximum length including bos/eos (``config.json``; 77 in ruCLIP).
        lowercase: lower-case texts first (ruCLIP does).

    Raises:
        ValueError: special ids differ from ruCLIP's, or ``context_length`` < 2.
    """

    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, bpe: YttmModel, context_length: int = 77, *, lowercase: bool = True):
        if bpe.special != RUCLIP_SPECIAL_TOKENS:
            raise ValueError(
                f"ruCLIP needs special ids pad 0, unk 1, bos 2, eos 3; got {bpe.special.as_dict()}"
            )
        if context_length < 2:
            raise ValueError("context_length must be >= 2 (bos + eos)")
        self.bpe = bpe
        self.context_length = int(context_length)
        self.lowercase = lowercase
        try:
            self._fast = yttm_to_tokenizer(bpe)
        except YttmConversionError as err:
            warnings.warn(f"using the slow pure-Python BPE encoder: {err}", stacklevel=2)
            self._fast = None

    @property
    def backend(self) -> str:
        """``"tokenizers"`` (Rust) or ``"python"`` (fallback encoder)."""
        return "python" if self._fast is None else "tokenizers"

    @property
    def vocab_size(self) -> int:
        """BPE vocabulary size (ids are < this)."""
        return self.bpe.vocab_size

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], context_length: int = 77, **kwargs: Any
    ) -> RuClipTokenizer:
        """Load from a ``bpe.model`` file or a checkpoint directory containing one."""
        path = Path(path)
        if path.is_dir():
            path = path / "bpe.model"
        return cls(read_yttm_model(path), context_length, **kwargs)

    def bpe_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Raw youtokentome ids (after lower-casing), no bos/eos, no truncation."""
        texts = [t.lower() if self.lowercase else t for t in texts]
        if self._fast is None:
            return self.bpe.encode(texts)
        return [e.ids for e in self._fast.encode_batch(texts, add_special_tokens=False)]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """ruCLIP token ids without padding: ``[2] + bpe_ids[: context_length - 2] + [3]``."""
        keep = self.context_length - 2
        return [[self.bos_id, *ids[:keep], self.eos_id] for ids in self.bpe_ids(texts)]

    def __call__(
        self,
        texts: str | Sequence[str],
        padding: Literal["longest", "max_length"] = "longest",
    ) -> dict[str, torch.Tensor]:
        """Tokenize a batch.

        Args:
            texts: a string or a sequence of strings.
            padding: ``"max_length"`` pads every row to ``context_length`` (what
                ``ruclip.RuCLIPProcessor`` does); ``"longest"`` pads only to the longest row
                of the batch -- faster, and the eos-pooled text features are identical
                because the text transformer is causal.

        Returns:
            ``{"input_ids": LongTensor[B, L], "attention_mask": LongTensor[B, L]}``; the mask
            is 1 on bos..eos and 0 on padding.  ``L`` is ``context_length`` or the longest
            row (>= 2); an empty batch gives shape ``[0, context_length]``.

        Raises:
            ValueError: unknown ``padding``.  TypeError: texts are not strings.
        """
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings, got {bad[:3]}")
        rows = self.encode(texts)
        if padding == "max_length" or not rows:
            length = self.context_length
        else:
            length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of one row of ids, skipping pad/unk/bos/eos (``RuCLIPProcessor.decode_text``)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.bpe.decode(ids, ignore_ids=(PAD_ID, UNK_ID, BOS_ID, EOS_ID))

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``bpe.model`` into ``directory`` (created if needed); returns the file path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return write_yttm_model(self.bpe, directory / "bpe.model")
