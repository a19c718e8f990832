"""Candidate search: nearest neighbours over a whole catalogue with FAISS.

Comparing every product with every other one is quadratic; a matching system first
retrieves, for each product, its ``k`` nearest neighbours in embedding space (cosine
similarity = inner product of L2-normalised vectors) and only scores those pairs.

:class:`CandidateIndex` picks the FAISS index by catalogue size: exact search
(``IndexFlatIP``) up to ``exact_max`` vectors, else an inverted-file index (``IVF``:
k-means coarse quantiser, ``nlist`` lists, ``nprobe`` visited per query) or a graph index
(``HNSW``, ``M`` links, ``ef_search``). :func:`candidate_pairs` turns the neighbour lists
into unordered pairs, :func:`candidate_recall` measures the share of known matches they
contain, :func:`match_groups` joins accepted pairs into connected components.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from vitrina.models.embedders import l2_normalise
from vitrina.utils import limit_threads  # threadpoolctl also caps FAISS's OpenMP pool

logger = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ["left_id", "right_id", "similarity", "rank"]


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("Candidate search needs FAISS: pip install faiss-cpu") from exc
    return faiss


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` L2-normalised, as a C-contiguous ``float32`` copy ``[N, D]`` (FAISS)."""
    return np.ascontiguousarray(l2_normalise(x))


@dataclass
class IndexConfig:
    """How :class:`CandidateIndex` indexes vectors (``parameters_pair_matching.yml``).

    Attributes:
        kind: ``auto`` (``flat`` up to ``exact_max`` vectors, else ``approximate``),
            ``flat`` (exact), ``ivf`` or ``hnsw``.
        approximate: the index ``auto`` uses above ``exact_max``: ``ivf`` or ``hnsw``.
        exact_max: largest catalogue searched exactly by ``auto``.
        nlist: IVF lists; ``None`` → ``4 * sqrt(N)`` rounded, at most ``N // 39``
            (FAISS wants ~39 training points per list).
        nprobe: IVF lists visited per query (recall/speed trade-off).
        train_size: vectors sampled to train the IVF quantiser.
        hnsw_m: HNSW links per node.
        ef_construction, ef_search: HNSW beam widths at build and query time.
        threads: FAISS OpenMP threads; ``None`` leaves FAISS's default (all cores).
        seed: sampling seed for IVF training.
    """

    kind: str = "auto"
    approximate: str = "ivf"
    exact_max: int = 100_000
    nlist: int | None = None
    nprobe: int = 16
    train_size: int = 100_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    threads: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ValueError(f"index kind must be auto, flat, ivf or hnsw, got {self.kind!r}")
        if self.approximate not in ("ivf", "hnsw"):
            raise ValueError(f"approximate index must be ivf or hnsw, got {self.approximate!r}")


class CandidateIndex:
    """A FAISS inner-product index over L2-normalised vectors.

    Example::

        index = CandidateIndex(IndexConfig(kind="auto")).build(vectors)   # [N, D]
        sims, rows = index.search(queries, k=10)                           # [Q, k] each

    ``rows`` are row numbers into ``vectors`` (``-1`` where fewer than ``k`` were found),
    ``sims`` the cosine similarities, best first.
    """

    def __init__(self, config: IndexConfig | dict | None = None) -> None:
        self.config = config if isinstance(config, IndexConfig) else IndexConfig(**(config or {}))
        self.index = None
        self.kind_: str | None = None
        self.build_seconds_: float = math.nan

    def build(self, vectors: np.ndarray, chunk: int = 100_000) -> CandidateIndex:
        """Index ``vectors`` (``[N, D]``, any float dtype).

        Rows are L2-normalised ``chunk`` at a time as they are added, so the peak memory
        is the input plus the index's own copy (no normalised copy of the whole input).

        Raises:
            ValueError: ``vectors`` is not 2-D, is empty or holds NaN/inf.
        """
        faiss = _faiss()
        cfg = self.config
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(
                f"Candidate search needs a non-empty [N, D] array, got shape {list(vectors.shape)}"
            )
        bad = sum(
            int((~np.isfinite(vectors[s : s + chunk])).any(axis=1).sum())
            for s in range(0, len(vectors), chunk)
        )
        if bad:
            raise ValueError(f"{bad} vectors hold NaN or inf")
        n, d = vectors.shape
        kind = cfg.kind
        if kind == "auto":
            kind = "flat" if n <= cfg.exact_max else cfg.approximate
        start = time.perf_counter()
        with limit_threads(cfg.threads):
            if kind == "flat":
                index = faiss.IndexFlatIP(d)
            elif kind == "hnsw":
                index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = cfg.ef_construction
                index.hnsw.efSearch = cfg.ef_search
            else:
                nlist = cfg.nlist or int(round(4 * math.sqrt(n)))
                nlist = max(1, min(nlist, n // 39 or 1))
                quantizer = faiss.IndexFlatIP(d)
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
                rng = np.random.default_rng(cfg.seed)
                size = min(n, max(cfg.train_size, 39 * nlist))
                index.train(normalise(vectors[np.sort(rng.choice(n, size=size, replace=False))]))
                index.nprobe = min(cfg.nprobe, nlist)
                self._quantizer = quantizer  # the IVF index does not own it in the Python API
            for s in range(0, n, chunk):
                index.add(normalise(vectors[s : s + chunk]))
        self.build_seconds_ = time.perf_counter() - start
        self.index, self.kind_, self.n_, self.d_ = index, kind, n, d
        logger.info(
            "candidate index: %s over %d vectors of dimension %d built in %.2f s",
            kind,
            n,
            d,
            self.build_seconds_,
        )
        return self

    def search(
        self, queries: np.ndarray, k: int, batch_size: int = 16384
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed vectors of each query.

        Args:
            queries: ``[Q, D]`` (normalised here, batch by batch).
            k: neighbours per query.
            batch_size: queries per FAISS call (keeps the progress bar and memory bounded).

        Returns:
            ``(similarities float32 [Q, k], rows int64 [Q, k])``.

        Raises:
            RuntimeError: :meth:`build` was not called.
            ValueError: the query dimension differs from the index's.
        """
        if self.index is None:
            raise RuntimeError("CandidateIndex.search called before build")
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.d_:
            raise ValueError(
                f"Query dimension {list(queries.shape)[1:]} differs from the index dimension {self.d_}"
            )
        k = int(min(k, self.n_))
        sims = np.empty((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        starts = range(0, len(queries), batch_size)
        bar = tqdm(
            starts,
            desc="candidate search",
            unit="batch",
            disable=None if len(starts) > 1 else True,
            leave=False,
        )
        with limit_threads(self.config.threads):
            for s in bar:
                q = normalise(queries[s : s + batch_size])  # per batch: no full copy
                sims[s : s + batch_size], rows[s : s + batch_size] = self.index.search(q, k)
        return sims, rows


def candidate_pairs(
    ids: np.ndarray, vectors: np.ndarray, k: int, config: IndexConfig | dict | None = None
) -> pd.DataFrame:
    """Top-``k`` neighbour pairs of every item with every other item, as unordered pairs.

    Each item queries the index for ``k + 1`` neighbours (its own row is dropped). A pair
    found from both sides is kept once, with the higher similarity and the better rank;
    ``left_id < right_id`` (string order) in the output.

    Args:
        ids: ``[N]`` item ids (unique).
        vectors: ``[N, D]`` item vectors.
        k: neighbours per item.
        config: :class:`IndexConfig` (or its fields).

    Returns:
        ``left_id, right_id, similarity, rank`` (rank 1 = nearest), sorted by
        ``similarity`` descending.
    """
    ids = np.asarray(ids).astype(str)
    index = CandidateIndex(config).build(vectors)
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
