"""Candidate search: nearest neighbours over a whole catalogue with FAISS.

Comparing every product with every other one is quadratic; a matching system first
retrieves, for each product, its ``k`` nearest neighbours in embedding space (cosine
similarity = inner product of L2-normalised vectors) and only scores those pairs.

:class:`~vitrina.models.pair_matching.index.CandidateIndex` (module :mod:`.index`) picks
the FAISS index by catalogue size: exact search up to ``exact_max`` vectors, else IVF,
IVF-PQ or HNSW trained on a sample and built shard by shard. :func:`candidate_pairs` turns the neighbour lists
into unordered pairs, :func:`candidate_recall` measures the share of known matches they
contain, :func:`match_groups` joins accepted pairs into connected components.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .index import CandidateIndex, IndexConfig, VectorSource, normalise

logger = logging.getLogger(__name__)

__all__ = [
    "CANDIDATE_COLUMNS",
    "CandidateIndex",
    "IndexConfig",
    "candidate_pairs",
    "candidate_recall",
    "match_groups",
    "normalise",
]

CANDIDATE_COLUMNS = ["left_id", "right_id", "similarity", "rank"]


def candidate_pairs(
    ids: np.ndarray, vectors: VectorSource, k: int, config: IndexConfig | dict | None = None
) -> pd.DataFrame:
    """Top-``k`` neighbour pairs of every item with every other item, as unordered pairs.

    Each item queries the index for ``k + 1`` neighbours (its own row is dropped). A pair
    found from both sides is kept once, with the higher similarity and the better rank;
    ``left_id < right_id`` (string order) in the output.

    Args:
        ids: ``[N]`` item ids (unique).
        vectors: ``[N, D]`` item vectors in ``ids`` order: an array, a memmap, a sequence
            of shards or a callable returning an iterator of shards
            (:data:`~vitrina.models.pair_matching.index.VectorSource`); indexed and
            queried ``chunk`` rows at a time.
        k: neighbours per item.
        config: :class:`IndexConfig` (or its fields).

    Returns:
        ``left_id, right_id, similarity, rank`` (rank 1 = nearest), sorted by
        ``similarity`` descending.

    Raises:
        ValueError: the number of vectors differs from the number of ids.
    """
    ids = np.asarray(ids).astype(str)
    index = CandidateIndex(config).build(vectors)
    if index.n_ != len(ids):
        raise ValueError(f"candidate_pairs got {len(ids)} ids for {index.n_} vectors")
    sims, rows = index.search(vectors, k + 1)
    n, kk = rows.shape
    src = np.repeat(np.arange(n), kk)
    dst, sim = rows.ravel(), sims.ravel()
    rank = np.tile(np.arange(kk), n)
    keep = (dst >= 0) & (dst != src)
    src, dst, sim, rank = src[keep], dst[keep], sim[keep], rank[keep]
    # 1-based rank among the item's neighbours once its own row is gone
    rank = rank + 1 - _self_before(rows, src, rank)
    lo = np.where(ids[src] <= ids[dst], src, dst)
    hi = np.where(ids[src] <= ids[dst], dst, src)
    df = pd.DataFrame({"lo": lo, "hi": hi, "similarity": sim, "rank": rank})
    df = (
        df.groupby(["lo", "hi"], sort=False)
        .agg(similarity=("similarity", "max"), rank=("rank", "min"))
        .reset_index()
    )
    df = df[df["rank"] <= k]
    out = pd.DataFrame(
        {
            "left_id": ids[df["lo"].to_numpy()],
            "right_id": ids[df["hi"].to_numpy()],
            "similarity": df["similarity"].to_numpy(np.float32),
            "rank": df["rank"].to_numpy(np.int64),
        }
    )
    return out.sort_values("similarity", ascending=False, kind="stable").reset_index(drop=True)


def _self_before(rows: np.ndarray, src: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """1 where the query's own row appears before position ``rank`` in its result list."""
    own = rows == np.arange(len(rows))[:, None]
    has_own = own.any(axis=1)
    own_pos = np.where(has_own, own.argmax(axis=1), rows.shape[1])
    return (own_pos[src] < rank).astype(np.int64)


def candidate_recall(candidates: pd.DataFrame, positives: pd.DataFrame) -> dict[str, float]:
    """Share of the known matching pairs that the candidate step retrieved.

    Args:
        candidates: ``left_id, right_id`` (any order).
        positives: known matches ``left_id, right_id`` (any order).

    Returns:
        ``{"n_positive", "n_retrieved", "recall", "n_candidates"}``; recall is NaN without
        positives.
    """

    def keys(df: pd.DataFrame) -> set[tuple[str, str]]:
        a, b = df["left_id"].astype(str).to_numpy(), df["right_id"].astype(str).to_numpy()
        return set(zip(np.minimum(a, b), np.maximum(a, b), strict=True))

    pos, cand = keys(positives), keys(candidates)
    hit = len(pos & cand)
    return {
        "n_positive": len(pos),
        "n_retrieved": hit,
        "recall": hit / len(pos) if pos else math.nan,
        "n_candidates": len(cand),
    }


def match_groups(ids: np.ndarray, pairs: pd.DataFrame) -> pd.DataFrame:
    """Connected components of the graph whose edges are the accepted pairs.

    Args:
        ids: every item id (items without an accepted pair form singleton groups).
        pairs: accepted ``left_id, right_id``.

    Returns:
        ``product_id, match_group, group_size`` (``match_group`` numbers components by
        size, largest first; 0-based).

    Raises:
        ValueError: a pair names an id not in ``ids``.
    """
    ids = np.asarray(ids).astype(str)
    index = pd.Index(ids)
    a = index.get_indexer(pairs["left_id"].astype(str))
    b = index.get_indexer(pairs["right_id"].astype(str))
    if (a < 0).any() or (b < 0).any():
        raise ValueError(
            f"{int((a < 0).sum() + (b < 0).sum())} accepted pair ends are not among the items"
        )
    n = len(ids)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    order = np.argsort(-sizes, kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return pd.DataFrame(
        {"product_id": ids, "match_group": renumber[labels], "group_size": sizes[labels]}
    )
