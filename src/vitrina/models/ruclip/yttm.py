"""YouTokenToMe (``youtokentome``) BPE models without youtokentome.

ruCLIP checkpoints ship their tokenizer as ``bpe.model``, a youtokentome BPE model.  The
``youtokentome`` package does not build under pip's build isolation and is not a Vitrina
dependency, so this module re-implements what Vitrina needs from it:

* :func:`read_yttm_model` / :func:`write_yttm_model` -- the plain-text model file format
  (``youtokentome/cpp/utils.cpp``: ``BPEState::dump`` / ``BPEState::load``)::

      <n_chars> <n_rules>
      <unicode code point> <id>        # n_chars lines, one per alphabet character
      <x> <y> <z>                      # n_rules lines: merging tokens x and y gives token z
      <unk_id> <pad_id> <bos_id> <eos_id>

* :meth:`YttmModel.encode` -- a small pure-Python port of youtokentome's encoder
  (``BaseEncoder::encode_sentence`` in ``youtokentome/cpp/bpe.cpp``), used as an
  independent reference and as a fallback for models the ``tokenizers`` BPE cannot represent;
* in :mod:`vitrina.models.ruclip.yttm_tokenizers`: :func:`yttm_to_tokenizer` (the same BPE
  as a :class:`tokenizers.Tokenizer`) and :func:`train_yttm_bpe` (training).

youtokentome's text handling, reproduced here:

* "whitespace" is ``' ', '\\t', '\\n', '\\v', '\\f', '\\r'`` (C ``isspace`` in the C/UTF-8
  locale, code points < 256 only) **and** the meta symbol ``'▁'`` (U+2581).  Other Unicode
  spaces (U+00A0, U+2009, U+3000, ...) are ordinary characters;
* a text is split into words at runs of whitespace; leading/trailing whitespace produces
  nothing; every word is encoded as ``'▁' + word`` (``'▁'`` is always in the alphabet);
* characters outside the alphabet (never seen in training, or dropped by
  ``coverage`` < 1) are unknown; a maximal run of consecutive unknown characters inside a
  word becomes a single ``unk_id`` and never merges with its neighbours;
* merges are applied by rule priority (rule index in the file, lowest first), ties broken by
  position (leftmost first) -- standard BPE, the same order as the ``tokenizers`` BPE model.
"""

from __future__ import annotations

import heapq
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SPACE_TOKEN",
    "SPECIAL_TOKEN_NAMES",
    "YTTM_WHITESPACE",
    "YTTM_WHITESPACE_CLASS",
    "YTTM_WHITESPACE_RUN",
    "YttmFormatError",
    "YttmModel",
    "YttmSpecialTokens",
    "read_yttm_model",
    "write_yttm_model",
]

#: youtokentome's word-boundary meta symbol (``SPACE_TOKEN = 9601`` in ``utils.h``).
SPACE_TOKEN = "\u2581"
#: Characters youtokentome treats as whitespace (``is_space`` in ``bpe.cpp``).
YTTM_WHITESPACE = frozenset(" \t\n\v\f\r" + SPACE_TOKEN)
#: :data:`YTTM_WHITESPACE` as a regular-expression character class.
YTTM_WHITESPACE_CLASS = "[ \\t\\n\\x0b\\x0c\\r\u2581]"
#: A run of youtokentome whitespace (the word separator).
YTTM_WHITESPACE_RUN = re.compile(YTTM_WHITESPACE_CLASS + "+")

#: youtokentome's names for the special tokens (``bpe.h``); used in ``vocab()`` / decoding.
SPECIAL_TOKEN_NAMES = {"unk_id": "<UNK>", "pad_id": "<PAD>", "bos_id": "<BOS>", "eos_id": "<EOS>"}


class YttmFormatError(ValueError):
    """A youtokentome model file (or model) is malformed."""


@dataclass(frozen=True)
class YttmSpecialTokens:
    """Special token ids of a youtokentome model; ``-1`` means "absent".

    Defaults are youtokentome's ``BPE.train`` defaults, which are also the ids ruCLIP uses
    (``RuCLIPProcessor``: pad 0, unk 1, bos 2, eos 3).  ``unk_id`` is mandatory.
    """

    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3

    def as_dict(self) -> dict[str, int]:
        return {
            "pad_id": self.pad_id,
            "unk_id": self.unk_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
        }

    def present(self) -> dict[str, int]:
        """The special tokens that exist (id != -1), name -> id."""
        return {k: v for k, v in self.as_dict().items() if v != -1}

    def validate(self) -> None:
        """Raise :class:`YttmFormatError` if ids are negative (other than -1) or repeated."""
        if self.unk_id < 0:
            raise YttmFormatError(f"unk_id must be >= 0, got {self.unk_id}")
        ids = list(self.present().values())
        if any(i < -1 for i in self.as_dict().values()):
            raise YttmFormatError(f"special token ids must be >= 0 or -1: {self.as_dict()}")
        if len(set(ids)) != len(ids):
            raise YttmFormatError(f"special token ids must be distinct: {self.as_dict()}")


@dataclass
class YttmModel:
    """An in-memory youtokentome BPE model.

    Attributes:
        char2id: alphabet, single character -> token id (always contains ``'▁'``).
        rules: merge rules ``(x, y, z)`` in priority order (index = priority, lower first):
            tokens ``x`` and ``y`` adjacent in a word merge into token ``z``.
        special: special token ids.

    Token ids are ``int``; in a model trained by youtokentome (or
    :func:`~vitrina.models.ruclip.yttm_tokenizers.train_yttm_bpe`)
    they are exactly ``0 .. vocab_size - 1``: special ids, then ``'▁'``, then the other
    characters by decreasing training frequency, then rule results in rule order.
    """

    char2id: dict[str, int]
    rules: list[tuple[int, int, int]]
    special: YttmSpecialTokens = field(default_factory=YttmSpecialTokens)

    def __post_init__(self) -> None:
        self.validate()
        self._pieces = self._build_pieces()
        self._rule_rank = {(x, y): i for i, (x, y, _z) in enumerate(self.rules)}
        self._word_cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ structure
    def validate(self) -> None:
        """Check internal consistency; raise :class:`YttmFormatError` when broken.

        Checks: special ids valid; every alphabet entry is one non-whitespace character;
        ``'▁'`` is in the alphabet; ids are unique across specials, characters and rule
        results; every rule refers only to tokens defined before it.
        """
        self.special.validate()
        if SPACE_TOKEN not in self.char2id:
            raise YttmFormatError("the alphabet must contain the meta symbol '▁' (U+2581)")
        seen: dict[int, str] = {v: k for k, v in self.special.present().items()}
        for ch, idx in self.char2id.items():
            if len(ch) != 1:
                raise YttmFormatError(f"alphabet entries must be single characters: {ch!r}")
            if ch in YTTM_WHITESPACE and ch != SPACE_TOKEN:
                raise YttmFormatError(f"whitespace {ch!r} cannot be in the alphabet")
            if idx < 0 or idx in seen:
                raise YttmFormatError(f"duplicate or negative id {idx} (character {ch!r})")
            seen[idx] = ch
        for n, (x, y, z) in enumerate(self.rules):
            if (
                x not in seen
                or y not in seen
                or x in self.special.present().values()
                or (y in self.special.present().values())
            ):
                raise YttmFormatError(f"rule #{n} ({x} {y} {z}) uses an undefined token")
            if z < 0 or z in seen:
                raise YttmFormatError(f"rule #{n} ({x} {y} {z}) redefines token {z}")
            seen[z] = "rule"

    def _build_pieces(self) -> dict[int, str]:
        pieces: dict[int, str] = {idx: ch for ch, idx in self.char2id.items()}
        for x, y, z in self.rules:
            pieces[z] = pieces[x] + pieces[y]
        return pieces

    @property
    def pieces(self) -> dict[int, str]:
        """Token id -> string (with ``'▁'``) of the alphabet and rule results; read only."""
        return self._pieces

    @property
    def vocab_size(self) -> int:
        """Number of tokens: specials + characters + rules (youtokentome's ``vocab_size()``)."""
        return len(self.special.present()) + len(self.char2id) + len(self.rules)

    def id_to_piece(self, idx: int) -> str:
        """The string of token ``idx`` (with ``'▁'``), or ``'<UNK>'``/``'<PAD>'``/... for specials.

        Raises:
            KeyError: unknown id.
        """
        for name, sid in self.special.present().items():
            if sid == idx:
                return SPECIAL_TOKEN_NAMES[name]
        return self._pieces[idx]

    def vocab(self) -> list[str]:
        """All token strings ordered by id (youtokentome's ``BPE.vocab()`` for contiguous ids)."""
        return [self.id_to_piece(i) for i in sorted(self._all_ids())]

    def _all_ids(self) -> list[int]:
        return list(self.special.present().values()) + list(self._pieces)

    def duplicate_pieces(self) -> dict[str, list[int]]:
        """Token strings spelled by more than one id (empty for youtokentome-trained models)."""
        by_piece: dict[str, list[int]] = {}
        for idx, piece in self._pieces.items():
            by_piece.setdefault(piece, []).append(idx)
        return {p: ids for p, ids in by_piece.items() if len(ids) > 1}

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode texts exactly like youtokentome's ``encode(texts, output_type=ID)``.

        Pure Python port of ``BaseEncoder::encode_sentence`` (dropout 0, no bos/eos, no
        reverse).  Slower than the ``tokenizers`` port (results are cached per word), but
        exact for every model, including ones
        :func:`~vitrina.models.ruclip.yttm_tokenizers.yttm_to_tokenizer` rejects.

        Args:
            texts: strings (a single ``str`` is rejected to avoid encoding characters).

        Returns:
            One list of ``int`` ids per text (empty for empty/whitespace-only texts).

        Raises:
            TypeError: ``texts`` is a single string.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of strings, not a single string")
        out = []
        for text in texts:
            ids: list[int] = []
            for word in YTTM_WHITESPACE_RUN.split(text):
                if word:
                    ids.extend(self._encode_word(word))
            out.append(ids)
        return out

    def _encode_word(self, word: str) -> tuple[int, ...]:
        cached = self._word_cache.get(word)
        if cached is not None:
            return cached
        toks: list[int | None] = [self.char2id[SPACE_TOKEN]]
        unknown = -1  # unknown runs get unique negative ids, which no rule mentions
        prev_unknown = False
        for ch in word:
            idx = self.char2id.get(ch)
            if idx is None:
                if not prev_unknown:
                    toks.append(unknown)
                    unknown -= 1
                prev_unknown = True
            else:
                toks.append(idx)
                prev_unknown = False
        n = len(toks)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        rank = self._rule_rank
        heap = [
            (rank[(toks[i], toks[i + 1])], i)
            for i in range(n - 1)
            if (toks[i], toks[i + 1]) in rank
        ]
        heapq.heapify(heap)
        while heap:
            r, p1 = heapq.heappop(heap)
            p2 = nxt[p1]
            x, y, z = self.rules[r]
            if p2 == -1 or toks[p1] != x or toks[p2] != y:
                continue  # stale event
            p0, p3 = prv[p1], nxt[p2]
            toks[p1], toks[p2] = z, None
            nxt[p1] = p3
            nxt[p2] = prv[p2] = -1
            if p3 != -1:
                prv[p3] = p1
            if p0 != -1 and (toks[p0], z) in rank:
                heapq.heappush(heap, (rank[(toks[p0], z)], p0))
            if p3 != -1 and (z, toks[p3]) in rank:
                heapq.heappush(heap, (rank[(z, toks[p3])], p1))
        result = []
        pos = 0
        while pos != -1:
            tok = toks[pos]
            result.append(self.special.unk_id if tok is None or tok < 0 else tok)
            pos = nxt[pos]
        out = tuple(result)
        if len(self._word_cache) > 200_000:
            self._word_cache.clear()
        self._word_cache[word] = out
        return out

    def decode(self, ids: Iterable[int], ignore_ids: Iterable[int] = ()) -> str:
        """Decode ids like youtokentome's ``decode`` (``'▁'`` -> space, leading space dropped).

        Special ids are rendered as ``<UNK>``, ``<PAD>``, ... unless listed in ``ignore_ids``.

        Raises:
            KeyError: unknown id.
        """
        ignore = set(ignore_ids)
        text = ""
        first = True
        for idx in ids:
            if idx in ignore:
                continue
            piece = self.id_to_piece(idx)
            if idx in self._pieces and piece.startswith(SPACE_TOKEN):
                piece = " " + piece[1:]
            text += piece
            if first and text.startswith(" "):
                text = text[1:]
            first = False
        return text


# ---------------------------------------------------------------------- file format
def read_yttm_model(path: str | os.PathLike[str]) -> YttmModel:
    """Parse a youtokentome ``bpe.model`` file.

    Args:
        path: the model file (plain text, whitespace-separated integers).

    Returns:
        The :class:`YttmModel`.

    Raises:
        FileNotFoundError: no such file.
        YttmFormatError: truncated/non-integer content or an inconsistent model.
    """
    text = Path(path).read_text(encoding="ascii", errors="strict")
    try:
        nums = [int(t) for t in text.split()]
    except ValueError as err:
        raise YttmFormatError(f"{path}: not a youtokentome model (non-integer token)") from err
    if len(nums) < 2:
        raise YttmFormatError(f"{path}: not a youtokentome model (missing header)")
    n_chars, n_rules = nums[0], nums[1]
    expected = 2 + 2 * n_chars + 3 * n_rules + 4
    if n_chars < 0 or n_rules < 0 or len(nums) != expected:
        raise YttmFormatError(
            f"{path}: expected {expected} integers for {n_chars} characters and {n_rules} "
            f"rules, found {len(nums)}"
        )
    pos = 2
    char2id: dict[str, int] = {}
    for _ in range(n_chars):
        cp, idx = nums[pos], nums[pos + 1]
        pos += 2
        if not (0 <= cp < 0x110000) or 0xD800 <= cp <= 0xDFFF:
            raise YttmFormatError(f"{path}: invalid code point {cp}")
        char2id[chr(cp)] = idx
    rules = []
    for _ in range(n_rules):
        rules.append((nums[pos], nums[pos + 1], nums[pos + 2]))
        pos += 3
    unk, pad, bos, eos = nums[pos : pos + 4]  # file order: unk pad bos eos
    return YttmModel(
        char2id=char2id,
        rules=rules,
        special=YttmSpecialTokens(pad_id=pad, unk_id=unk, bos_id=bos, eos_id=eos),
    )


def write_yttm_model(model: YttmModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` in youtokentome's ``bpe.model`` format (loadable by ``yttm.BPE``).

    Characters are written ordered by id (youtokentome itself writes them in hash order;
    the loader does not care).  The file is written to a temporary sibling and renamed, so a
    reader never sees a partial file.

    Returns:
        ``Path(path)``.

    Raises:
        YttmFormatError: the model is inconsistent.
    """
    model.validate()
    path = Path(path)
    lines = [f"{len(model.char2id)} {len(model.rules)}"]
    for ch, idx in sorted(model.char2id.items(), key=lambda kv: kv[1]):
        lines.append(f"{ord(ch)} {idx}")
    lines.extend(f"{x} {y} {z}" for x, y, z in model.rules)
    s = model.special
    lines.append(f"{s.unk_id} {s.pad_id} {s.bos_id} {s.eos_id}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
    os.replace(tmp, path)
    return path
