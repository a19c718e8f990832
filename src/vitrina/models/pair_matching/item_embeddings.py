"""Item embeddings of sources that bring their own, or none: parsing embedding columns,
and text embeddings learnt offline (TF-IDF → LSA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from vitrina.embeddings import Embeddings
from vitrina.models.embedders import l2_normalise


def _as_vector(value: Any) -> np.ndarray | None:
    """One embedding cell → 1-D float array; a cell holding several vectors (e.g. one per
    picture) gives its first; None for a missing cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    arr = np.asarray(value)
    if arr.dtype == object:
        if arr.size == 0:
            return None
        first = arr.ravel()[0]
        arr = np.asarray(
            first if isinstance(first, list | np.ndarray) else list(arr.ravel()), dtype=np.float32
        )
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[0]
    return arr.ravel() if arr.size else None


def vectors_from_column(
    table: pd.DataFrame, id_column: str, column: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse an embedding column that holds arrays into ``(ids [N], float32 [N, D], n_bad)``.

    Rows with a missing vector or any NaN/inf are excluded (``n_bad`` counts them).

    Raises:
        KeyError: ``id_column`` or ``column`` is absent.
        ValueError: vectors of different lengths (the lengths found and example ids).
    """
    for col in (id_column, column):
        if col not in table.columns:
            raise KeyError(f"Column {col!r} is not in the table; columns: {list(table.columns)}")
    ids, vecs, bad = [], [], 0
    for item_id, value in zip(table[id_column].astype(str), table[column], strict=True):
        vec = _as_vector(value)
        if vec is None or not np.isfinite(vec).all():
            bad += 1
            continue
        ids.append(item_id)
        vecs.append(vec)
    lengths = pd.Series([len(v) for v in vecs], index=ids, dtype="int64")
    if lengths.nunique() > 1:
        common = int(lengths.mode().iloc[0])
        odd = lengths[lengths != common]
        raise ValueError(
            f"Embedding column {column!r} mixes dimensions {sorted(lengths.unique().tolist())}: "
            f"{len(odd)} items differ from the usual {common} (e.g. {dict(odd.head(5))})"
        )
    dim = int(lengths.iloc[0]) if len(lengths) else 0
    matrix = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    return np.asarray(ids, dtype=str), matrix, bad


def text_embeddings_lsa(
    items: pd.DataFrame,
    fields: list[str],
    fit_ids: np.ndarray | None = None,
    n_components: int = 128,
    seed: int = 42,
) -> Embeddings:
    """Text embeddings learnt offline: TF-IDF (word 1-2-grams + character 3-5-grams) → LSA.

    For text-only sources (ER-Magellan) that come without embeddings and where no
    pretrained model can be downloaded. The vocabulary and the SVD are fitted on the
    items of ``fit_ids`` (the training items), then applied to all items.

    Args:
        items: ``item_id`` and the ``fields`` columns.
        fields: text columns joined into one document per item.
        fit_ids: ids the TF-IDF and SVD are fitted on (default: all items).
        n_components: embedding dimension (capped by the vocabulary size - 1).
        seed: SVD seed.

    Returns:
        :class:`Embeddings` with ``text [N, n_components]`` (L2-normalised) and an empty
        ``image [N, 0]``.
    """
    from scipy.sparse import hstack

    docs = items[fields].astype("string").fillna("").agg(" ".join, axis=1).str.lower().tolist()
    fit_mask = (
        np.ones(len(items), bool)
        if fit_ids is None
        else items["item_id"].isin(set(map(str, fit_ids))).to_numpy()
    )
    fit_docs = [d for d, m in zip(docs, fit_mask, strict=True) if m]
    word = TfidfVectorizer(
        token_pattern=r"(?u)\w+", ngram_range=(1, 2), sublinear_tf=True, min_df=1
    ).fit(fit_docs)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, min_df=2).fit(
        fit_docs
    )
    x = hstack([word.transform(docs), char.transform(docs)]).tocsr()
    k = max(1, min(n_components, x.shape[1] - 1, int(fit_mask.sum()) - 1))
    svd = TruncatedSVD(n_components=k, random_state=seed).fit(x[fit_mask])
    text = l2_normalise(svd.transform(x))
    return Embeddings(
        ids=items["item_id"].astype(str).to_numpy(),
        text=text,
        image=np.zeros((len(items), 0), np.float32),
    )
