"""String and numeric features of item pairs (the text half of :mod:`.features`).

Per text field: token Jaccard and containment, IDF-weighted overlap, the rarest shared
token, rapidfuzz ratios, word / character TF-IDF cosine, the share of one side's tokens
found anywhere in the other record; on the whole record: TF-IDF cosines, model-number
overlap (:func:`model_codes`), shared numbers; per numeric field (price): the absolute log
difference and the min/max ratio. Every feature is symmetric in the two items.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

STRING_FEATURES = (
    "empty",
    "jaccard",
    "overlap_min",
    "overlap_max",
    "idf_jaccard",
    "max_shared_idf",
    "token_set_ratio",
    "token_sort_ratio",
    "partial_ratio",
    "ratio",
    "tfidf_cosine",
    "char_cosine",
    "in_other_record_min",
    "in_other_record_max",
)
RECORD_FEATURES = (
    "tfidf_cosine",
    "char_cosine",
    "code_shared",
    "code_jaccard",
    "code_both",
    "code_in_other_len",
    "code_conflict",
    "number_jaccard",
    "number_shared",
)
NUMERIC_FEATURES = ("abs_log_diff", "ratio")

_TOKEN = re.compile(r"\w+", re.UNICODE)
_CODE_TOKEN = re.compile(r"[^\W_][\w\-/\.]*", re.UNICODE)
_CODE_PUNCT = re.compile(r"[\-/\._]")
_NUMBER = re.compile(r"\d+(?:[\.,]\d+)?")
_SQUASH = re.compile(r"[\s\-/\._]+")


def tokens(text: str) -> set[str]:
    """Lower-cased word tokens (``\\w+``) of ``text``."""
    return set(_TOKEN.findall(text.lower()))


def model_codes(text: str, min_length: int = 4) -> set[str]:
    """Model-number-like tokens: letters and digits mixed, punctuation (``-/._``) removed.

    ``"Sony DSC-W120/P camera"`` → ``{"dscw120p"}``. Tokens shorter than ``min_length``
    after removing punctuation, or made only of letters or only of digits, are not codes.
    """
    out = set()
    for tok in _CODE_TOKEN.findall(text.lower()):
        norm = _CODE_PUNCT.sub("", tok)
        if (
            len(norm) >= min_length
            and any(c.isdigit() for c in norm)
            and any(c.isalpha() for c in norm)
        ):
            out.add(norm)
    return out


def numbers(text: str) -> set[str]:
    """Numbers in ``text`` as strings, decimal commas read as points (``"2,5"`` → ``"2.5"``)."""
    return {n.replace(",", ".") for n in _NUMBER.findall(text)}


def squash(text: str) -> str:
    """Lower-case ``text`` with whitespace and ``-/._`` removed, for substring code search."""
    return _SQUASH.sub("", text.lower())


def to_float(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number (``"$1,299.00"`` → 1299.0)."""
    if value is None:
        return math.nan
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    text = re.sub(r"[^\d\.\-]", "", str(value).replace(",", ""))
    try:
        return float(text)
    except ValueError:
        return math.nan


@dataclass
class ItemText:
    """Per-item text preprocessed once per ``transform`` call (lists aligned with the items)."""

    fields: dict[str, list[str]]
    field_tokens: dict[str, list[set[str]]]
    record: list[str]
    record_tokens: list[set[str]]
    record_codes: list[set[str]]
    record_numbers: list[set[str]]
    record_squashed: list[str]
    numeric: dict[str, np.ndarray]


def compared_fields(string_fields: list[str]) -> list[str]:
    """String fields with :data:`STRING_FEATURES`: each configured field, plus the whole
    record (``record``: the fields joined) when there are several."""
    fields = list(string_fields)
    return fields + ["record"] if len(fields) > 1 else fields


def record_texts(items: pd.DataFrame, fields: list[str]) -> list[str]:
    """Each item's ``fields`` joined by spaces (empty values skipped), lower-cased."""
    values = items[fields].astype("string").fillna("")
    return [" ".join(v for v in row if v).lower() for row in values.itertuples(index=False)]


def item_text(items: pd.DataFrame, string_fields: list[str], numeric_fields: list[str]) -> ItemText:
    """Tokens, model codes, numbers and squashed text of every item, computed once.

    The whole record (``record``: the fields joined) is compared as a field of its own
    when there are several fields.
    """
    fields = {c: items[c].astype("string").fillna("").str.strip().tolist() for c in string_fields}
    record = record_texts(items, string_fields)
    if len(string_fields) > 1:
        fields["record"] = record
    return ItemText(
        fields=fields,
        field_tokens={c: [tokens(v) for v in vals] for c, vals in fields.items()},
        record=record,
        record_codes=[model_codes(t) for t in record],
        record_numbers=[numbers(t) for t in record],
        record_squashed=[squash(t) for t in record],
        record_tokens=[tokens(t) for t in record],
        numeric={c: np.array([to_float(v) for v in items[c].tolist()]) for c in numeric_fields},
    )


def string_features(
    left: np.ndarray,
    right: np.ndarray,
    items: pd.DataFrame,
    *,
    string_fields: list[str],
    numeric_fields: list[str],
    max_chars: int,
    word: Any,
    char: Any,
    idf: dict[str, float],
    max_idf: float,
) -> np.ndarray:
    """String and numeric features of pairs given as row indices into ``items``.

    Args:
        left, right: ``int64 [P]`` row numbers into ``items``.
        items: item table with the ``string_fields`` and ``numeric_fields`` columns.
        string_fields, numeric_fields, max_chars: see :class:`.features.FeatureConfig`.
        word, char: fitted word / character ``TfidfVectorizer`` (None without fields).
        idf, max_idf: the word vectoriser's IDF per token and its maximum (unseen tokens).

    Returns:
        ``float32 [P, n_string_columns]`` (NaN where a side is empty or missing).
    """
    from rapidfuzz import fuzz
    from rapidfuzz.process import cpdist

    n = len(left)
    if not (string_fields or numeric_fields):
        return np.zeros((n, 0), dtype=np.float32)
    used = np.unique(np.concatenate([left, right]))
    local = {int(r): i for i, r in enumerate(used)}
    sub = items.iloc[used]
    text = item_text(sub, string_fields, numeric_fields)
    li = np.fromiter((local[int(r)] for r in left), dtype=np.int64, count=n)
    ri = np.fromiter((local[int(r)] for r in right), dtype=np.int64, count=n)
    cols: list[np.ndarray] = []
    for c in compared_fields(string_fields):
        vals, toks = text.fields[c], text.field_tokens[c]
        out = np.full((n, len(STRING_FEATURES)), np.nan, dtype=np.float32)
        rec = text.record_tokens
        for p, (i, j) in enumerate(zip(li, ri, strict=True)):
            a, b = toks[i], toks[j]
            out[p, 0] = (not vals[i]) + (not vals[j])
            # share of one side's field tokens found anywhere in the other record
            # (dirty records move attribute values into other fields)
            found = [len(x & r) / len(x) for x, r in ((a, rec[j]), (b, rec[i])) if x]
            if found:
                out[p, 12], out[p, 13] = min(found), max(found)
            if not a or not b:
                continue
            inter = a & b
            union = a | b
            out[p, 1] = len(inter) / len(union)
            out[p, 2] = len(inter) / min(len(a), len(b))
            out[p, 3] = len(inter) / max(len(a), len(b))
            w_union = sum(idf.get(t, max_idf) for t in union)
            out[p, 4] = sum(idf.get(t, max_idf) for t in inter) / w_union
            out[p, 5] = max((idf.get(t, max_idf) for t in inter), default=0.0)
        present = ~np.isnan(out[:, 1])
        if present.any():
            qa = [vals[i][:max_chars].lower() for i in li[present]]
            qb = [vals[j][:max_chars].lower() for j in ri[present]]
            for k, scorer in enumerate(
                (fuzz.token_set_ratio, fuzz.token_sort_ratio, fuzz.partial_ratio, fuzz.ratio),
                start=6,
            ):
                out[present, k] = cpdist(qa, qb, scorer=scorer, workers=1, dtype=np.float32) / 100.0
            if c != "record":  # the record's cosines are RECORD_FEATURES
                lower = [v.lower() for v in vals]
                for k, vec in enumerate((word, char), start=10):
                    m = vec.transform(lower)
                    cos = np.asarray(m[li].multiply(m[ri]).sum(axis=1)).ravel()
                    out[present, k] = cos[present]
        cols.append(out)
    if string_fields:
        out = np.full((n, len(RECORD_FEATURES)), np.nan, dtype=np.float32)
        for k, vec in enumerate((word, char)):
            m = vec.transform(text.record)
            out[:, k] = np.asarray(m[li].multiply(m[ri]).sum(axis=1)).ravel()
        codes, nums, sq = text.record_codes, text.record_numbers, text.record_squashed
        for p, (i, j) in enumerate(zip(li, ri, strict=True)):
            ca, cb = codes[i], codes[j]
            shared = ca & cb
            out[p, 2] = len(shared)
            out[p, 3] = len(shared) / len(ca | cb) if (ca or cb) else np.nan
            out[p, 4] = float(bool(ca) and bool(cb))
            found = [len(c) for c in ca if c in sq[j]] + [len(c) for c in cb if c in sq[i]]
            out[p, 5] = max(found, default=0)
            out[p, 6] = float(bool(ca) and bool(cb) and not found)
            na, nb = nums[i], nums[j]
            out[p, 7] = len(na & nb) / len(na | nb) if (na or nb) else np.nan
            out[p, 8] = len(na & nb)
        cols.append(out)
    for c in numeric_fields:
        v = text.numeric[c]
        a, b = v[li], v[ri]
        with np.errstate(invalid="ignore", divide="ignore"):
            absdiff = np.abs(np.log1p(np.abs(a)) - np.log1p(np.abs(b)))
            ratio = np.minimum(np.abs(a), np.abs(b)) / np.maximum(np.abs(a), np.abs(b))
        ratio = np.where((a == 0) & (b == 0), 1.0, ratio)
        cols.append(np.column_stack([absdiff, ratio]).astype(np.float32))
    return np.concatenate(cols, axis=1)
