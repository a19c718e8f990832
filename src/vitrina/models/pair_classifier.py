"""Pair matching: are two listings the same product?

The pieces, in the order a pair goes through them:

* :class:`PairFeatureBuilder` turns a pair of item ids into one feature row that does not
  depend on the order of the two items: per embedding modality ``|a - b|``, ``a * b`` and
  the cosine similarity of the L2-normalised vectors; optionally string features over
  text fields (word TF-IDF and character n-gram cosine, token Jaccard and containment,
  IDF-weighted overlap, fuzzy ratios, model-number overlap, shared numbers) and numeric
  fields (price: absolute log difference, ratio).
* :class:`PairwiseBinaryClassifier` is the seed system's MLP over those features (torch),
  trained by :class:`MLPPairEstimator` with class-weighted BCE and early stopping on the
  validation split; :func:`build_baseline` gives the scikit-learn baseline (logistic
  regression or gradient boosting) on the same features; :class:`EnsembleEstimator`
  averages their probabilities.
* :func:`select_threshold` picks the decision threshold that maximises F1 on validation;
  :func:`binary_metrics` scores a split (accuracy, precision, recall, F1, PR-AUC).
* :class:`PairMatcher` bundles a fitted builder, a fitted estimator and the threshold;
  ``save``/``load`` round-trip it through a directory.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as skops_io
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm.auto import tqdm

from vitrina.embeddings import MODALITIES, Embeddings
from vitrina.models.embedders import l2_normalise
from vitrina.utils import limit_threads

logger = logging.getLogger(__name__)

EMBEDDING_FEATURES = ("absdiff", "product", "cosine")
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


# ---------------------------------------------------------------------- threads
# ---------------------------------------------------------------------- text helpers
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


# ---------------------------------------------------------------------- features
@dataclass
class FeatureConfig:
    """What :class:`PairFeatureBuilder` computes.

    Attributes:
        modalities: embedding modalities compared (``text``, ``image``); may be empty when
            only string features are wanted.
        embedding_features: any of ``absdiff`` (``|a-b|``, ``D`` columns), ``product``
            (``a*b``, ``D`` columns), ``cosine`` (one column), per modality.
        string_fields: item columns compared as text; each gets :data:`STRING_FEATURES`,
            and their concatenation (the record) gets :data:`RECORD_FEATURES` (and
            :data:`STRING_FEATURES` too when there are several fields).
        numeric_fields: item columns compared as numbers (price); each gets
            :data:`NUMERIC_FEATURES`.
        char_ngram_range: character n-gram sizes of the record TF-IDF.
        max_chars: strings are cut to this many characters for the fuzzy ratios (speed).
    """

    modalities: list[str] = field(default_factory=lambda: ["text", "image"])
    embedding_features: list[str] = field(default_factory=lambda: list(EMBEDDING_FEATURES))
    string_fields: list[str] = field(default_factory=list)
    numeric_fields: list[str] = field(default_factory=list)
    char_ngram_range: tuple[int, int] = (3, 5)
    max_chars: int = 1000

    def __post_init__(self) -> None:
        for name in ("modalities", "embedding_features", "string_fields", "numeric_fields"):
            if isinstance(getattr(self, name), str):
                raise ValueError(
                    f"FeatureConfig.{name} must be a list, got {getattr(self, name)!r} "
                    "(string_fields: auto is resolved by the pair_matching pipeline)"
                )
        self.modalities = list(self.modalities or [])
        self.embedding_features = list(self.embedding_features or [])
        self.string_fields = list(self.string_fields or [])
        self.numeric_fields = list(self.numeric_fields or [])
        self.char_ngram_range = tuple(self.char_ngram_range)
        for m in self.modalities:
            if m not in MODALITIES:
                raise ValueError(f"Unknown modality {m!r}; expected one of {list(MODALITIES)}")
        for f in self.embedding_features:
            if f not in EMBEDDING_FEATURES:
                raise ValueError(
                    f"Unknown embedding feature {f!r}; expected one of {list(EMBEDDING_FEATURES)}"
                )
        if not self.modalities and not self.string_fields and not self.numeric_fields:
            raise ValueError("FeatureConfig has no modality, string field or numeric field")


@dataclass
class _ItemText:
    """Per-item text preprocessed once per ``transform`` call."""

    fields: dict[str, list[str]]
    field_tokens: dict[str, list[set[str]]]
    record: list[str]
    record_tokens: list[set[str]]
    record_codes: list[set[str]]
    record_numbers: list[set[str]]
    record_squashed: list[str]
    numeric: dict[str, np.ndarray]


class PairFeatureBuilder:
    """Order-independent features of item pairs: embeddings and, optionally, strings.

    ``fit(items)`` learns the TF-IDF vocabularies on the (training) items' text;
    ``transform(left, right, items, embeddings)`` returns ``float32 [P, F]`` with
    ``F = len(feature_names)``. String and numeric features are NaN where a value is
    missing (gradient boosting uses that; the MLP path imputes it).

    Swapping ``left`` and ``right`` gives the same rows: every feature is symmetric.
    """

    def __init__(self, config: FeatureConfig | dict[str, Any] | None = None) -> None:
        if isinstance(config, dict) or config is None:
            config = FeatureConfig(**(config or {}))
        self.config = config
        self.dims_: dict[str, int] = {}
        self.word_: TfidfVectorizer | None = None
        self.char_: TfidfVectorizer | None = None
        self.idf_: dict[str, float] = {}
        self.max_idf_: float = 1.0
        self.fitted_ = False

    # -- fitting
    def _record_texts(self, items: pd.DataFrame) -> list[str]:
        cols = self.config.string_fields
        values = items[cols].astype("string").fillna("")
        return [" ".join(v for v in row if v).lower() for row in values.itertuples(index=False)]

    def fit(
        self, items: pd.DataFrame | None = None, embeddings: Embeddings | None = None
    ) -> PairFeatureBuilder:
        """Learn TF-IDF vocabularies on ``items`` and remember the embedding dimensions.

        Args:
            items: item table indexed by item id with the ``string_fields`` and
                ``numeric_fields`` columns (only needed when string features are on).
            embeddings: the items' embeddings (their dimensions are checked later).

        Raises:
            KeyError: a configured field is not an ``items`` column.
            ValueError: a configured modality has no dimension in ``embeddings``.
        """
        cfg = self.config
        if embeddings is not None:
            for m in cfg.modalities:
                d = embeddings.modality(m).shape[1]
                if d == 0:
                    raise ValueError(
                        f"Modality {m!r} is requested but the embeddings have none (dimension 0)"
                    )
                self.dims_[m] = d
        if cfg.string_fields or cfg.numeric_fields:
            if items is None:
                raise ValueError("String/numeric features need the items table")
            missing = [
                c for c in [*cfg.string_fields, *cfg.numeric_fields] if c not in items.columns
            ]
            if missing:
                raise KeyError(
                    f"Item columns {missing} are configured as pair features but absent; have {list(items.columns)}"
                )
        if cfg.string_fields:
            texts = [t for t in self._record_texts(items) if t]
            if not texts:
                raise ValueError(
                    f"Every item has empty {cfg.string_fields}: no text to fit TF-IDF on"
                )
            self.word_ = TfidfVectorizer(
                token_pattern=r"(?u)\w+", sublinear_tf=True, dtype=np.float32
            ).fit(texts)
            self.char_ = TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=cfg.char_ngram_range,
                sublinear_tf=True,
                min_df=2 if len(texts) >= 50 else 1,
                dtype=np.float32,
            ).fit(texts)
            self.idf_ = dict(
                zip(self.word_.get_feature_names_out(), self.word_.idf_.astype(float), strict=True)
            )
            self.max_idf_ = float(self.word_.idf_.max())
        self.fitted_ = True
        return self

    # -- names
    @property
    def feature_names(self) -> list[str]:
        """Column names of :meth:`transform`'s output, in order."""
        cfg = self.config
        names: list[str] = []
        for m in cfg.modalities:
            d = self.dims_.get(m, 0)
            for f in cfg.embedding_features:
                if f == "cosine":
                    names.append(f"{m}.cosine")
                else:
                    names += [f"{m}.{f}.{i}" for i in range(d)]
        for col in self._compared_fields():
            names += [f"{col}.{f}" for f in STRING_FEATURES]
        if cfg.string_fields:
            names += [f"record.{f}" for f in RECORD_FEATURES]
        for col in cfg.numeric_fields:
            names += [f"{col}.{f}" for f in NUMERIC_FEATURES]
        return names

    def _compared_fields(self) -> list[str]:
        """String fields with :data:`STRING_FEATURES`: each configured field, plus the
        whole record (``record``: the fields joined) when there are several."""
        fields = list(self.config.string_fields)
        return fields + ["record"] if len(fields) > 1 else fields

    # -- transform
    def _check_embeddings(self, embeddings: Embeddings) -> None:
        for m in self.config.modalities:
            d = embeddings.modality(m).shape[1]
            if m in self.dims_ and d != self.dims_[m]:
                raise ValueError(
                    f"The pair features were fitted on {m} embeddings of dimension {self.dims_[m]}, "
                    f"got dimension {d}: the embeddings come from another model"
                )

    def embedding_features(
        self, left: np.ndarray, right: np.ndarray, embeddings: Embeddings
    ) -> np.ndarray:
        """Embedding features of pairs given as row indices into ``embeddings``.

        Args:
            left, right: ``int64 [P]`` row indices.
            embeddings: the items' embeddings.

        Returns:
            ``float32 [P, sum over modalities of (D * n_elementwise + n_cosine)]``.
        """
        self._check_embeddings(embeddings)
        blocks = []
        for m in self.config.modalities:
            x = embeddings.modality(m)
            a, b = l2_normalise(x[left]), l2_normalise(x[right])
            for f in self.config.embedding_features:
                if f == "absdiff":
                    blocks.append(np.abs(a - b))
                elif f == "product":
                    blocks.append(a * b)
                else:
                    blocks.append(np.sum(a * b, axis=1, keepdims=True))
        if not blocks:
            return np.zeros((len(left), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)

    def _item_text(self, items: pd.DataFrame) -> _ItemText:
        cfg = self.config
        fields = {
            c: items[c].astype("string").fillna("").str.strip().tolist() for c in cfg.string_fields
        }
        record = self._record_texts(items)
        if len(cfg.string_fields) > 1:
            fields["record"] = record
        return _ItemText(
            fields=fields,
            field_tokens={c: [tokens(v) for v in vals] for c, vals in fields.items()},
            record=record,
            record_codes=[model_codes(t) for t in record],
            record_numbers=[numbers(t) for t in record],
            record_squashed=[squash(t) for t in record],
            record_tokens=[tokens(t) for t in record],
            numeric={
                c: np.array([to_float(v) for v in items[c].tolist()]) for c in cfg.numeric_fields
            },
        )

    def string_features(
        self, left: np.ndarray, right: np.ndarray, items: pd.DataFrame
    ) -> np.ndarray:
        """String and numeric features of pairs given as row indices into ``items``.

        Returns:
            ``float32 [P, n_string_columns]`` (NaN where a side is empty or missing).
        """
        from rapidfuzz import fuzz
        from rapidfuzz.process import cpdist

        cfg = self.config
        n = len(left)
        if not (cfg.string_fields or cfg.numeric_fields):
            return np.zeros((n, 0), dtype=np.float32)
        used = np.unique(np.concatenate([left, right]))
        local = {int(r): i for i, r in enumerate(used)}
        sub = items.iloc[used]
        text = self._item_text(sub)
        li = np.fromiter((local[int(r)] for r in left), dtype=np.int64, count=n)
        ri = np.fromiter((local[int(r)] for r in right), dtype=np.int64, count=n)
        idf, max_idf = self.idf_, self.max_idf_
        cols: list[np.ndarray] = []
        for c in self._compared_fields():
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
                qa = [vals[i][: cfg.max_chars].lower() for i in li[present]]
                qb = [vals[j][: cfg.max_chars].lower() for j in ri[present]]
                for k, scorer in enumerate(
                    (fuzz.token_set_ratio, fuzz.token_sort_ratio, fuzz.partial_ratio, fuzz.ratio),
                    start=6,
                ):
                    out[present, k] = (
                        cpdist(qa, qb, scorer=scorer, workers=1, dtype=np.float32) / 100.0
                    )
                if c != "record":  # the record's cosines are RECORD_FEATURES
                    lower = [v.lower() for v in vals]
                    for k, vec in enumerate((self.word_, self.char_), start=10):
                        m = vec.transform(lower)
                        cos = np.asarray(m[li].multiply(m[ri]).sum(axis=1)).ravel()
                        out[present, k] = cos[present]
            cols.append(out)
        if cfg.string_fields:
            out = np.full((n, len(RECORD_FEATURES)), np.nan, dtype=np.float32)
            for k, vec in enumerate((self.word_, self.char_)):
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
        for c in cfg.numeric_fields:
            v = text.numeric[c]
            a, b = v[li], v[ri]
            with np.errstate(invalid="ignore", divide="ignore"):
                absdiff = np.abs(np.log1p(np.abs(a)) - np.log1p(np.abs(b)))
                ratio = np.minimum(np.abs(a), np.abs(b)) / np.maximum(np.abs(a), np.abs(b))
            ratio = np.where((a == 0) & (b == 0), 1.0, ratio)
            cols.append(np.column_stack([absdiff, ratio]).astype(np.float32))
        return np.concatenate(cols, axis=1)

    def transform(
        self,
        left_ids: Sequence[str] | np.ndarray,
        right_ids: Sequence[str] | np.ndarray,
        items: pd.DataFrame | None,
        embeddings: Embeddings | None,
    ) -> np.ndarray:
        """Features of the pairs ``(left_ids[p], right_ids[p])``.

        Args:
            left_ids, right_ids: ``[P]`` item ids.
            items: item table indexed by item id (string/numeric fields), or None when no
                string feature is configured.
            embeddings: the items' embeddings, or None when no modality is configured.

        Returns:
            ``float32 [P, len(feature_names)]``.

        Raises:
            RuntimeError: the builder is not fitted.
            ValueError: an id has no embedding or item row (count and examples), or the
                embedding dimensions differ from those seen in ``fit``.
        """
        if not self.fitted_:
            raise RuntimeError("PairFeatureBuilder.transform called before fit")
        left_ids = np.asarray(left_ids).astype(str)
        right_ids = np.asarray(right_ids).astype(str)
        if left_ids.shape != right_ids.shape:
            raise ValueError(
                f"left ids {left_ids.shape} and right ids {right_ids.shape} differ in length"
            )
        blocks = []
        if self.config.modalities:
            if embeddings is None:
                raise ValueError(f"Modalities {self.config.modalities} need embeddings")
            index = pd.Index(embeddings.ids)
            blocks.append(
                self.embedding_features(*_rows(index, left_ids, right_ids, "embedding"), embeddings)
            )
        if self.config.string_fields or self.config.numeric_fields:
            if items is None:
                raise ValueError("String/numeric features need the items table")
            index = pd.Index(items.index.astype(str))
            blocks.append(
                self.string_features(*_rows(index, left_ids, right_ids, "item row"), items)
            )
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]


def _rows(
    index: pd.Index, left: np.ndarray, right: np.ndarray, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of both sides' ids in ``index``.

    Raises:
        ValueError: the count of distinct ids (either side) missing from ``index``, with
            examples.
    """
    a, b = index.get_indexer(left), index.get_indexer(right)
    if (a < 0).any() or (b < 0).any():
        missing = pd.unique(np.concatenate([left[a < 0], right[b < 0]]))
        raise ValueError(
            f"{len(missing)} pair item ids have no {what} (e.g. {[str(m) for m in missing[:5]]})"
        )
    return a, b


class FeatureScaler:
    """Standardise columns with train statistics ignoring NaN; NaN becomes 0 (the mean).

    Columns constant on the training set are left centred (their std is taken as 1).
    """

    def fit(self, x: np.ndarray) -> FeatureScaler:
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(x, axis=0)
                std = np.nanstd(x, axis=0)
        self.mean_ = np.nan_to_num(mean, nan=0.0).astype(np.float32)
        std = np.nan_to_num(std, nan=1.0)
        self.std_ = np.where(std < 1e-6, 1.0, std).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = (x - self.mean_) / self.std_
        return np.nan_to_num(out, nan=0.0, posinf=10.0, neginf=-10.0).astype(np.float32)


# ---------------------------------------------------------------------- MLP
@dataclass
class PairClassifierConfig:
    """Architecture of :class:`PairwiseBinaryClassifier` (``parameters_pair_matching.yml``).

    Attributes:
        n_features: input width ``F``.
        hidden_size: width of every hidden layer (the seed system used 256).
        n_layers: number of hidden layers (``Linear → ReLU → Dropout``).
        dropout: dropout probability after each hidden layer.
    """

    n_features: int
    hidden_size: int = 256
    n_layers: int = 2
    dropout: float = 0.2


class PairwiseBinaryClassifier(nn.Module):
    """MLP over pair features: ``[B, F]`` → one logit per pair ``[B]``.

    ``n_layers`` blocks ``Linear(F or H, H) → ReLU → Dropout(p)``, then ``Linear(H, 1)``.
    Apply ``torch.sigmoid`` to the logits for match probabilities. The input features are
    symmetric in the two items (see :class:`PairFeatureBuilder`), so the output is too.
    """

    def __init__(self, config: PairClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.n_features
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.hidden_size), nn.ReLU(), nn.Dropout(config.dropout)]
            width = config.hidden_size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``float32 [B, F]`` → logits ``float32 [B]``."""
        return self.net(x).squeeze(-1)


@dataclass
class TrainConfig:
    """Training of :class:`MLPPairEstimator` (``parameters_pair_matching.yml``).

    Attributes:
        lr: Adam learning rate.
        weight_decay: AdamW weight decay.
        batch_size: pairs per step.
        max_epochs: upper bound on epochs.
        patience: epochs without a better validation ``monitor`` before stopping.
        monitor: ``pr_auc`` (average precision, higher is better) or ``loss``.
        class_weight: ``balanced`` weighs positives by ``n_negative / n_positive`` in the
            BCE (``pos_weight``); ``none`` does not.
        seed: torch seed for initialisation, shuffling and dropout.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 10
    monitor: str = "pr_auc"
    class_weight: str = "balanced"
    seed: int = 42

    def __post_init__(self) -> None:
        if self.monitor not in ("pr_auc", "loss"):
            raise ValueError(f"monitor must be 'pr_auc' or 'loss', got {self.monitor!r}")
        if self.class_weight not in ("balanced", "none", None):
            raise ValueError(
                f"class_weight must be 'balanced' or 'none', got {self.class_weight!r}"
            )


def check_labels(y: np.ndarray, what: str = "training") -> np.ndarray:
    """``y`` as ``int64`` 0/1, refusing a single class.

    Raises:
        ValueError: labels other than 0/1, or only one class present.
    """
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"Pair labels must be 0/1, got values {sorted(values)[:10]}")
    y = y.astype(np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"The {what} pairs hold only label {int(y[0]) if len(y) else '-'} ({len(y)} pairs): "
            "a pair classifier needs both matches (1) and non-matches (0)"
        )
    return y


class MLPPairEstimator:
    """scikit-learn-style estimator around :class:`PairwiseBinaryClassifier`.

    ``fit(X, y, X_val, y_val)`` standardises the features (:class:`FeatureScaler`), trains
    with class-weighted BCE and AdamW, evaluates the validation split after every epoch
    and keeps the weights of the best epoch (early stopping). ``history_`` holds one row
    per epoch: ``epoch, train_loss, val_loss, val_pr_auc``.
    """

    def __init__(
        self, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None
    ) -> None:
        self.model_params = dict(model or {})
        self.train_config = TrainConfig(**(train or {}))

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        x_val: np.ndarray,
        y_val: np.ndarray,
        on_epoch: Callable[[dict[str, float], np.ndarray], None] | None = None,
    ) -> MLPPairEstimator:
        """Train on ``x [N, F]``, ``y [N]`` with early stopping on ``x_val``, ``y_val``.

        Args:
            on_epoch: called after every epoch with its history row (``epoch``,
                ``train_loss``, ``val_loss``, ``val_pr_auc``) and the validation match
                probabilities ``float32 [N_val]`` of that epoch's weights; an exception it
                raises stops training and propagates (how Optuna prunes a trial).

        Raises:
            ValueError: one class only in ``y``.
        """
        cfg = self.train_config
        y = check_labels(y)
        y_val = np.asarray(y_val).astype(np.int64)
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.scaler_ = FeatureScaler().fit(x)
        xt = torch.from_numpy(self.scaler_.transform(x))
        yt = torch.from_numpy(y.astype(np.float32))
        xv = torch.from_numpy(self.scaler_.transform(x_val))
        yv = torch.from_numpy(y_val.astype(np.float32))
        self.config_ = PairClassifierConfig(n_features=x.shape[1], **self.model_params)
        self.module_ = PairwiseBinaryClassifier(self.config_)
        n_pos = float(y.sum())
        pos_weight = (len(y) - n_pos) / n_pos if cfg.class_weight == "balanced" else 1.0
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
        opt = torch.optim.AdamW(self.module_.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_state, best_epoch, rows = -math.inf, None, 0, []
        bar = tqdm(
            range(1, cfg.max_epochs + 1), desc="pair MLP", unit="epoch", disable=None, leave=False
        )
        for epoch in bar:
            self.module_.train()
            order = torch.randperm(len(yt), generator=generator)
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                opt.zero_grad()
                loss = loss_fn(self.module_(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            train_loss = total / len(yt)
            self.module_.eval()
            with torch.no_grad():
                val_logits = _batched_logits(self.module_, xv)
                val_loss = float(loss_fn(val_logits, yv)) if len(yv) else math.nan
            val_scores = torch.sigmoid(val_logits).numpy()
            val_ap = (
                float(average_precision_score(y_val, val_scores))
                if 0 < y_val.sum() < len(y_val)
                else math.nan
            )
            rows.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_pr_auc": val_ap,
                }
            )
            bar.set_postfix(
                train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}", val_ap=f"{val_ap:.3f}"
            )
            if on_epoch is not None:
                try:
                    on_epoch(dict(rows[-1]), val_scores)
                except BaseException:
                    bar.close()
                    raise
            score = val_ap if cfg.monitor == "pr_auc" and not math.isnan(val_ap) else -val_loss
            if score > best:
                best, best_epoch = score, epoch
                best_state = copy.deepcopy(self.module_.state_dict())
            elif epoch - best_epoch >= cfg.patience:
                break
        bar.close()
        if best_state is not None:
            self.module_.load_state_dict(best_state)
        self.module_.eval()
        self.best_epoch_ = best_epoch
        self.history_ = pd.DataFrame(rows)
        logger.info(
            "pair MLP: %d epochs, best epoch %d (val %s %.4f), %d features, pos_weight %.2f",
            len(rows),
            best_epoch,
            cfg.monitor,
            abs(best),
            x.shape[1],
            pos_weight,
        )
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``x [N, F]`` → ``[N, 2]`` (columns: non-match, match), like scikit-learn."""
        with torch.no_grad():
            p = torch.sigmoid(
                _batched_logits(self.module_, torch.from_numpy(self.scaler_.transform(x)))
            ).numpy()
        return np.column_stack([1.0 - p, p])


def _batched_logits(module: nn.Module, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    if len(x) == 0:
        return torch.zeros(0)
    return torch.cat([module(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


# ---------------------------------------------------------------------- baseline
class FillEmptyColumns:
    """Fill columns that are entirely NaN in the training data with 0 (scikit-learn
    transformer). Gradient boosting handles NaN natively but cannot bin a column with no
    value at all (e.g. model-number overlap on a catalogue without model numbers)."""

    def fit(self, x: np.ndarray, y: Any = None) -> FillEmptyColumns:
        self.empty_ = np.isnan(x).all(axis=0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if not self.empty_.any():
            return x
        x = x.copy()
        x[:, self.empty_] = 0.0
        return x

    def fit_transform(self, x: np.ndarray, y: Any = None) -> np.ndarray:
        return self.fit(x, y).transform(x)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {}

    def set_params(self, **params: Any) -> FillEmptyColumns:
        return self


def build_baseline(
    kind: str = "hist_gbdt", params: dict[str, Any] | None = None, seed: int = 42
) -> Any:
    """The scikit-learn baseline on the pair features.

    Args:
        kind: ``hist_gbdt`` (:class:`FillEmptyColumns` → ``HistGradientBoostingClassifier``,
            class-balanced, native NaN handling; params e.g. ``learning_rate``, ``max_iter``, ``max_leaf_nodes``) or
            ``logreg`` (median imputation → ``StandardScaler`` → class-balanced
            ``LogisticRegression``; params ``C``, ``max_iter``).
        params: keyword arguments of the estimator.
        seed: ``random_state``.

    Raises:
        ValueError: unknown ``kind``.
    """
    params = dict(params or {})
    if kind == "hist_gbdt":
        defaults = {
            "learning_rate": 0.05,
            "max_iter": 500,
            "max_leaf_nodes": 15,
            "early_stopping": True,
            "n_iter_no_change": 30,
            "class_weight": "balanced",
        }
        return make_pipeline(
            FillEmptyColumns(),
            HistGradientBoostingClassifier(random_state=seed, **{**defaults, **params}),
        )
    if kind == "logreg":
        defaults = {"C": 1.0, "max_iter": 2000, "class_weight": "balanced"}
        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(random_state=seed, **{**defaults, **params}),
        )
    raise ValueError(f"Unknown baseline {kind!r}; expected 'hist_gbdt' or 'logreg'")


def fit_baseline(
    estimator: Any, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> Any:
    """Fit ``estimator`` (a :func:`build_baseline` pipeline); gradient boosting stops early
    on the given validation split, not on a slice of the training pairs.

    scikit-learn's ``Pipeline.fit`` would hand ``X_val`` to the classifier untransformed,
    so the preprocessing steps are fitted first and transform both splits.
    """
    y = check_labels(y)
    clf = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if (
        isinstance(clf, HistGradientBoostingClassifier)
        and clf.early_stopping
        and len(np.unique(y_val)) > 1
    ):
        for _, step in estimator.steps[:-1] if isinstance(estimator, Pipeline) else []:
            step.fit(x, y)
            x, x_val = step.transform(x), step.transform(x_val)
        clf.fit(x, y, X_val=x_val, y_val=np.asarray(y_val).astype(np.int64))
        return estimator
    return estimator.fit(x, y)


# ---------------------------------------------------------------------- thresholds and metrics
def select_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The score threshold that maximises F1 (``score >= threshold`` is a match).

    Args:
        y_true: ``[N]`` 0/1 labels (validation split).
        scores: ``[N]`` match probabilities.

    Returns:
        ``(threshold, f1)``; ``(0.5, nan)`` when ``y_true`` has no positive (logged).
    """
    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0:
        logger.warning("select_threshold: no positive pair in the validation split; using 0.5")
        return 0.5, math.nan
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    return float(thresholds[best]), float(f1[best])


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall and F1 at ``threshold``; PR-AUC (average precision).

    Returns:
        ``{"accuracy", "precision", "recall", "f1", "pr_auc", "threshold", "n_pairs",
        "n_positive"}``; PR-AUC is NaN when ``y_true`` holds one class only.
    """
    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(scores) >= threshold).astype(int)
    both = 0 < y_true.sum() < len(y_true)
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "precision": float(precision_score(y_true, pred, zero_division=0)),
        "recall": float(recall_score(y_true, pred, zero_division=0)),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "pr_auc": float(average_precision_score(y_true, scores)) if both else math.nan,
        "threshold": float(threshold),
        "n_pairs": int(len(y_true)),
        "n_positive": int(y_true.sum()),
    }


# ---------------------------------------------------------------------- the matcher
@dataclass
class PairMatcher:
    """A fitted feature builder, a fitted classifier and its decision threshold.

    Attributes:
        builder: fitted :class:`PairFeatureBuilder`.
        estimator: fitted :class:`MLPPairEstimator` (``kind="mlp"``), scikit-learn
            classifier (``kind="baseline"``) or :class:`EnsembleEstimator`
            (``kind="ensemble"``); anything with ``predict_proba``.
        kind: ``mlp``, ``baseline`` or ``ensemble``.
        threshold: match when the probability is ``>= threshold`` (chosen on validation).
        info: free-form metadata saved with the model (variant, metrics, training sizes).
    """

    builder: PairFeatureBuilder
    estimator: Any
    kind: str
    threshold: float = 0.5
    info: dict[str, Any] = field(default_factory=dict)

    def predict_proba(
        self,
        left_ids: Sequence[str] | np.ndarray,
        right_ids: Sequence[str] | np.ndarray,
        items: pd.DataFrame | None,
        embeddings: Embeddings | None,
        batch_size: int = 50_000,
        threads: int | None = None,
    ) -> np.ndarray:
        """Match probabilities ``float32 [P]`` of the pairs, computed in batches of pairs
        (``threads``: see :func:`limit_threads`)."""
        left_ids, right_ids = np.asarray(left_ids).astype(str), np.asarray(right_ids).astype(str)
        out = np.empty(len(left_ids), dtype=np.float32)
        starts = range(0, len(left_ids), batch_size)
        with limit_threads(threads):
            for s in tqdm(
                starts,
                desc="scoring pairs",
                unit="batch",
                disable=None if len(starts) > 1 else True,
                leave=False,
            ):
                x = self.builder.transform(
                    left_ids[s : s + batch_size], right_ids[s : s + batch_size], items, embeddings
                )
                out[s : s + batch_size] = self.estimator.predict_proba(x)[:, 1]
        return out

    # -- persistence
    def save(self, path: str | Path) -> None:
        """Write ``config.json``, ``features.skops`` and the estimator into the directory
        ``path`` (created): ``model.pt`` (MLP state dict and feature scaler) +
        ``history.csv``, or ``baseline.skops``; an ensemble writes each member as
        ``<member>.pt`` / ``<member>.skops``. No pickle: skops files name every type they
        hold, and :meth:`load` builds only :data:`SKOPS_TRUSTED` ones."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "format": 1,
            "kind": self.kind,
            "threshold": self.threshold,
            "features": asdict(self.builder.config),
            "feature_dims": self.builder.dims_,
            "n_features": len(self.builder.feature_names),
            "info": _jsonable(self.info),
        }
        skops_io.dump(self.builder, path / "features.skops")
        if self.kind == "ensemble":
            ens: EnsembleEstimator = self.estimator
            config["members"] = {
                name: _save_estimator(est, path, name) for name, est in ens.members.items()
            }
            config["weights"] = ens.weights
        else:
            config.update(
                _save_estimator(self.estimator, path, "model" if self.kind == "mlp" else "baseline")
            )
        (path / "config.json").write_text(
            json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, path: str | Path) -> PairMatcher:
        """Read a directory written by :meth:`save`.

        Raises:
            FileNotFoundError: ``config.json`` or a model file is missing (a directory of
                an older Vitrina, with pickled ``.joblib`` files, is refused: train again).
            skops.io.exceptions.UntrustedTypesFoundException: a file holds a type outside
                :data:`SKOPS_TRUSTED` (tampered with, or not written by Vitrina).
        """
        path = Path(path)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        builder = _load_skops(path / "features.skops")
        if config["kind"] == "ensemble":
            members = {
                name: _load_estimator(path, name, meta) for name, meta in config["members"].items()
            }
            estimator: Any = EnsembleEstimator(members, config.get("weights"))
        else:
            stem = "model" if config["kind"] == "mlp" else "baseline"
            estimator = _load_estimator(path, stem, config)
        return cls(
            builder=builder,
            estimator=estimator,
            kind=config["kind"],
            threshold=float(config["threshold"]),
            info=config.get("info", {}),
        )


class EnsembleEstimator:
    """Weighted mean of the match probabilities of fitted estimators (``predict_proba``).

    Args:
        members: ``{name: fitted estimator}``.
        weights: ``{name: weight}`` (normalised to sum 1); ``None``: equal weights.
    """

    def __init__(self, members: dict[str, Any], weights: dict[str, float] | None = None) -> None:
        if not members:
            raise ValueError("An ensemble needs at least one member")
        self.members = dict(members)
        w = {n: float((weights or {}).get(n, 1.0)) for n in self.members}
        total = sum(w.values())
        self.weights = {n: v / total for n, v in w.items()}

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``x [N, F]`` → ``[N, 2]``: the weighted mean of the members' probabilities."""
        p = sum(self.weights[n] * m.predict_proba(x)[:, 1] for n, m in self.members.items())
        return np.column_stack([1.0 - p, p])


def _save_estimator(est: Any, path: Path, stem: str) -> dict[str, Any]:
    """Write one estimator as ``<stem>.pt`` (+ ``<stem>_history.csv`` for the MLP, whose
    single-model file names are ``model.pt`` / ``history.csv``) or ``<stem>.skops``;
    returns its config entries."""
    if isinstance(est, MLPPairEstimator):
        torch.save(
            {
                "state_dict": est.module_.state_dict(),
                "scaler_mean": torch.from_numpy(est.scaler_.mean_),
                "scaler_std": torch.from_numpy(est.scaler_.std_),
            },
            path / f"{stem}.pt",
        )
        history = "history.csv" if stem == "model" else f"{stem}_history.csv"
        est.history_.to_csv(path / history, index=False)
        return {
            "type": "mlp",
            "model": asdict(est.config_),
            "train": asdict(est.train_config),
            "best_epoch": est.best_epoch_,
        }
    skops_io.dump(est, path / f"{stem}.skops")
    return {"type": "sklearn"}


#: The non-scikit-learn types a pair matcher's skops files may hold (skops trusts
#: scikit-learn estimators and builtins itself); anything else is refused on load.
SKOPS_TRUSTED = [
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    f"{__name__}.FeatureConfig",
    f"{__name__}.FillEmptyColumns",
    f"{__name__}.PairFeatureBuilder",
]


def _load_skops(file: Path) -> Any:
    """``skops.io.load`` with :data:`SKOPS_TRUSTED` only (no pickle is ever executed)."""
    if not file.is_file() and file.with_suffix(".joblib").is_file():
        raise FileNotFoundError(
            f"{file.parent} was written by an older Vitrina with pickled .joblib files, which "
            "are not loaded: train it again (`kedro run --pipelines=pair_matching`)"
        )
    return skops_io.load(file, trusted=SKOPS_TRUSTED)


def _load_estimator(path: Path, stem: str, meta: dict[str, Any]) -> Any:
    """Inverse of :func:`_save_estimator` (``meta``: the config entries it returned)."""
    if "model" not in meta:
        return _load_skops(path / f"{stem}.skops")
    state = torch.load(path / f"{stem}.pt", map_location="cpu", weights_only=True)
    est = MLPPairEstimator(
        model={k: v for k, v in meta["model"].items() if k != "n_features"},
        train=meta.get("train"),
    )
    est.config_ = PairClassifierConfig(**meta["model"])
    est.module_ = PairwiseBinaryClassifier(est.config_)
    est.module_.load_state_dict(state["state_dict"])
    est.module_.eval()
    est.scaler_ = FeatureScaler()
    est.scaler_.mean_ = state["scaler_mean"].numpy()
    est.scaler_.std_ = state["scaler_std"].numpy()
    est.best_epoch_ = meta.get("best_epoch", 0)
    history = path / ("history.csv" if stem == "model" else f"{stem}_history.csv")
    est.history_ = pd.read_csv(history) if history.is_file() else pd.DataFrame()
    return est


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if math.isnan(float(value)) else float(value)
    return value


def fit_pair_matchers(
    train: pd.DataFrame,
    val: pd.DataFrame,
    items: pd.DataFrame | None,
    embeddings: Embeddings | None,
    features: FeatureConfig | dict[str, Any],
    classifiers: dict[str, dict[str, Any]],
    seed: int = 42,
    threads: int | None = None,
) -> tuple[dict[str, PairMatcher], dict[str, pd.DataFrame]]:
    """Fit one feature builder and every configured classifier on the same features.

    Args:
        train, val: pairs ``left_id, right_id, label``.
        items: item table indexed by id (string features), or None.
        embeddings: the items' embeddings, or None.
        features: :class:`FeatureConfig` or its keyword arguments.
        classifiers: ``{name: spec}``; a spec has ``type`` ``mlp`` (keys ``model``,
            ``train``: :class:`PairClassifierConfig` / :class:`TrainConfig` fields),
            ``hist_gbdt`` / ``logreg`` (key ``params``) or ``ensemble`` (keys ``members``:
            names of other classifiers, default all; ``weights``): the mean of their
            probabilities, with its own validation threshold. A ``None`` spec is skipped
            (how an environment switches off a classifier of ``conf/base``).
        seed: seed of every estimator.
        threads: cap on torch/OpenMP threads while fitting (:func:`limit_threads`).

    Returns:
        ``({name: PairMatcher with its F1-optimal validation threshold}, {name: history})``
        (history: MLP epochs; empty for scikit-learn estimators).

    Raises:
        ValueError: the training pairs hold one class only; an unknown classifier type.
    """
    with limit_threads(threads):
        return _fit_pair_matchers(train, val, items, embeddings, features, classifiers, seed)


def fit_feature_builder(
    train: pd.DataFrame,
    items: pd.DataFrame | None,
    embeddings: Embeddings | None,
    features: FeatureConfig | dict[str, Any],
) -> PairFeatureBuilder:
    """A :class:`PairFeatureBuilder` fitted on the items of the training pairs only (the
    string vectorisers never see validation or test items).

    Args:
        train: pairs ``left_id, right_id`` (strings or castable).
        items: item records indexed by id (``None``: embeddings only).
    """
    fit_items = None
    if items is not None:
        used = pd.unique(
            np.concatenate([train["left_id"].astype(str), train["right_id"].astype(str)])
        )
        fit_items = items.loc[items.index.intersection(used)]
    return PairFeatureBuilder(features).fit(fit_items, embeddings)


def _fit_pair_matchers(
    train: pd.DataFrame,
    val: pd.DataFrame,
    items: pd.DataFrame | None,
    embeddings: Embeddings | None,
    features: FeatureConfig | dict[str, Any],
    classifiers: dict[str, dict[str, Any]],
    seed: int,
) -> tuple[dict[str, PairMatcher], dict[str, pd.DataFrame]]:
    check_labels(train["label"].to_numpy())
    builder = fit_feature_builder(train, items, embeddings, features)
    x_tr = builder.transform(train["left_id"], train["right_id"], items, embeddings)
    x_va = builder.transform(val["left_id"], val["right_id"], items, embeddings)
    y_tr, y_va = train["label"].to_numpy().astype(int), val["label"].to_numpy().astype(int)
    matchers, histories = {}, {}
    active = {n: s for n, s in classifiers.items() if s is not None}  # null switches one off
    ordered = sorted(active, key=lambda n: (active[n] or {}).get("type") == "ensemble")
    for name in ordered:  # ensembles last, whatever the configured order
        spec = dict(active[name])
        kind = spec.pop("type", name)
        if kind == "mlp":
            est: Any = MLPPairEstimator(
                model=spec.get("model"), train={"seed": seed, **(spec.get("train") or {})}
            )
            est.fit(x_tr, y_tr, x_va, y_va)
            histories[name] = est.history_
            matcher_kind = "mlp"
        elif kind == "ensemble":
            names = list(spec.get("members") or [n for n in matchers])
            missing = [n for n in names if n not in matchers]
            if missing:
                raise ValueError(
                    f"Ensemble {name!r} names members {missing} that are not trained "
                    f"classifiers ({list(matchers)})"
                )
            est = EnsembleEstimator({n: matchers[n].estimator for n in names}, spec.get("weights"))
            histories[name] = pd.DataFrame()
            matcher_kind = "ensemble"
        elif kind in ("hist_gbdt", "logreg"):
            est = fit_baseline(
                build_baseline(kind, spec.get("params"), seed=seed), x_tr, y_tr, x_va, y_va
            )
            histories[name] = pd.DataFrame()
            matcher_kind = "baseline"
        else:
            raise ValueError(
                f"Unknown classifier type {kind!r} for {name!r}; expected mlp, hist_gbdt, "
                "logreg or ensemble"
            )
        val_scores = est.predict_proba(x_va)[:, 1]
        threshold, val_f1 = select_threshold(y_va, val_scores)
        matchers[name] = PairMatcher(
            builder=builder,
            estimator=est,
            kind=matcher_kind,
            threshold=threshold,
            info={
                "classifier": name,
                "type": kind,
                "val_f1": val_f1,
                "val_pr_auc": float(average_precision_score(y_va, val_scores))
                if 0 < y_va.sum() < len(y_va)
                else math.nan,
                "n_train": int(len(y_tr)),
                "n_train_positive": int(y_tr.sum()),
                "n_val": int(len(y_va)),
                "n_features": int(x_tr.shape[1]),
            },
        )
        logger.info(
            "pair matcher %s: validation F1 %.4f at threshold %.3f (%d train pairs, %d features)",
            name,
            val_f1,
            threshold,
            len(y_tr),
            x_tr.shape[1],
        )
    return matchers, histories
