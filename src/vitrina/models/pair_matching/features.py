"""Pair features: one order-independent row per pair of items.

:class:`PairFeatureBuilder` turns a pair of item ids into one feature row that does not
depend on the order of the two items: per embedding modality ``|a - b|``, ``a * b`` and
the cosine similarity of the L2-normalised vectors; optionally string features over text
fields and numeric fields (:mod:`.strings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer

from vitrina.embeddings import MODALITIES, Embeddings
from vitrina.models.embedders import l2_normalise

from .strings import (
    NUMERIC_FEATURES,
    RECORD_FEATURES,
    STRING_FEATURES,
    compared_fields,
    record_texts,
    string_features,
)

EMBEDDING_FEATURES = ("absdiff", "product", "cosine")
#: Item columns ``string_fields: auto`` never compares as text.
NOT_TEXT = {"item_id", "side", "group_id", "image_path"}


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


class PairFeatureBuilder(BaseEstimator):
    """Order-independent features of item pairs: embeddings and, optionally, strings.

    A scikit-learn estimator: ``__init__`` stores ``config`` only (``get_params`` /
    ``clone`` work); ``fit`` sets ``config_`` (the validated :class:`FeatureConfig`),
    ``dims_``, ``word_``, ``char_``, ``idf_`` and ``max_idf_``. Its ``transform`` takes
    pairs of ids and the tables they index rather than one ``X``, so it is not a
    ``TransformerMixin``.

    ``fit(items)`` learns the TF-IDF vocabularies on the (training) items' text;
    ``transform(left, right, items, embeddings)`` returns ``float32 [P, F]`` with
    ``F = len(feature_names)``. String and numeric features are NaN where a value is
    missing (gradient boosting uses that; the MLP path imputes it).

    Swapping ``left`` and ``right`` gives the same rows: every feature is symmetric.
    """

    def __init__(self, config: FeatureConfig | dict[str, Any] | None = None) -> None:
        self.config = config

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
        self.config_ = cfg = feature_config(self.config)
        self.dims_: dict[str, int] = {}
        self.word_: TfidfVectorizer | None = None
        self.char_: TfidfVectorizer | None = None
        self.idf_: dict[str, float] = {}
        self.max_idf_: float = 1.0
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
            texts = [t for t in record_texts(items, cfg.string_fields) if t]
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
        return self

    # -- names
    @property
    def feature_names(self) -> list[str]:
        """Column names of :meth:`transform`'s output, in order."""
        cfg = self.config_
        names: list[str] = []
        for m in cfg.modalities:
            d = self.dims_.get(m, 0)
            for f in cfg.embedding_features:
                if f == "cosine":
                    names.append(f"{m}.cosine")
                else:
                    names += [f"{m}.{f}.{i}" for i in range(d)]
        for col in compared_fields(cfg.string_fields):
            names += [f"{col}.{f}" for f in STRING_FEATURES]
        if cfg.string_fields:
            names += [f"record.{f}" for f in RECORD_FEATURES]
        for col in cfg.numeric_fields:
            names += [f"{col}.{f}" for f in NUMERIC_FEATURES]
        return names

    # -- transform
    def _check_embeddings(self, embeddings: Embeddings) -> None:
        for m in self.config_.modalities:
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
        for m in self.config_.modalities:
            x = embeddings.modality(m)
            a, b = l2_normalise(x[left]), l2_normalise(x[right])
            for f in self.config_.embedding_features:
                if f == "absdiff":
                    blocks.append(np.abs(a - b))
                elif f == "product":
                    blocks.append(a * b)
                else:
                    blocks.append(np.sum(a * b, axis=1, keepdims=True))
        if not blocks:
            return np.zeros((len(left), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32, copy=False)

    def string_features(
        self, left: np.ndarray, right: np.ndarray, items: pd.DataFrame
    ) -> np.ndarray:
        """String and numeric features of pairs given as row indices into ``items``
        (:func:`.strings.string_features`): ``float32 [P, n_string_columns]``, NaN where a
        side is empty or missing."""
        cfg = self.config_
        return string_features(
            left,
            right,
            items,
            string_fields=cfg.string_fields,
            numeric_fields=cfg.numeric_fields,
            max_chars=cfg.max_chars,
            word=self.word_,
            char=self.char_,
            idf=self.idf_,
            max_idf=self.max_idf_,
        )

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
        if not hasattr(self, "config_"):
            raise RuntimeError("PairFeatureBuilder.transform called before fit")
        left_ids = np.asarray(left_ids).astype(str)
        right_ids = np.asarray(right_ids).astype(str)
        if left_ids.shape != right_ids.shape:
            raise ValueError(
                f"left ids {left_ids.shape} and right ids {right_ids.shape} differ in length"
            )
        blocks = []
        if self.config_.modalities:
            if embeddings is None:
                raise ValueError(f"Modalities {self.config_.modalities} need embeddings")
            index = pd.Index(embeddings.ids)
            blocks.append(
                self.embedding_features(*_rows(index, left_ids, right_ids, "embedding"), embeddings)
            )
        if self.config_.string_fields or self.config_.numeric_fields:
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


def feature_config(config: FeatureConfig | dict[str, Any] | None) -> FeatureConfig:
    """``config`` as a :class:`FeatureConfig` (a dict gives its keyword arguments).

    Raises:
        TypeError: a key that is not a :class:`FeatureConfig` field.
        ValueError: see :class:`FeatureConfig`.
    """
    if isinstance(config, FeatureConfig):
        return config
    return FeatureConfig(**(config or {}))


def variant_features(
    features: dict[str, Any] | None, variant: dict[str, Any] | None, items: pd.DataFrame
) -> dict[str, Any]:
    """The ``features`` block overridden by one variant's block.

    ``string_fields: auto`` becomes every text column of ``items`` except ids, sides,
    groups, image paths (:data:`NOT_TEXT`) and ``numeric_fields`` (ER-Magellan datasets
    name their attributes differently).

    Returns:
        :class:`FeatureConfig` keyword arguments.
    """
    merged = {**(features or {}), **(variant or {})}
    if merged.get("string_fields") == "auto":
        skip = NOT_TEXT | set(merged.get("numeric_fields") or [])
        merged["string_fields"] = [
            c
            for c in items.columns
            if c not in skip
            and (pd.api.types.is_string_dtype(items[c]) or items[c].dtype == object)
        ]
    return merged


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
        embeddings: the items' embeddings (``None``: strings only).
        features: :class:`FeatureConfig` or its keyword arguments.
    """
    fit_items = None
    if items is not None:
        used = pd.unique(
            np.concatenate([train["left_id"].astype(str), train["right_id"].astype(str)])
        )
        fit_items = items.loc[items.index.intersection(used)]
    return PairFeatureBuilder(features).fit(fit_items, embeddings)
