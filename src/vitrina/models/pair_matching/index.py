"""A FAISS nearest-neighbour index built and searched shard by shard (:class:`CandidateIndex`).

Cosine similarity is the inner product of L2-normalised vectors, so every index here is
an inner-product index over normalised rows. :class:`CandidateIndex` picks the index by
catalogue size: exact search (``IndexFlatIP``) up to ``exact_max`` vectors, else an
approximate one trained on a uniform sample of the catalogue:

* ``ivf`` — inverted file (``IndexIVFFlat``; Jégou et al. 2011, "Product quantization for
  nearest neighbor search", FAISS): a k-means coarse quantiser of ``nlist`` cells, each
  query scans the ``nprobe`` nearest cells; full vectors, so recall is limited by
  ``nprobe`` only;
* ``ivfsq`` — the same cells with 8-bit scalar-quantised vectors
  (``IndexIVFScalarQuantizer``, ``QT_8bit``: ``D`` bytes a vector, 4× smaller than
  float32) for catalogues whose float32 copy does not fit in memory;
* ``ivfpq`` — the same cells with product-quantised codes (``IndexIVFPQ``, ``pq_m`` bytes
  a vector at 8 bits): 10M × 512 fits in ~1 GB instead of 20 GB, at a much lower recall
  (no re-ranking: 0.54 recall@10 at 200k × 512 with ``pq_m`` 64, ``benchmarks/``);
* ``hnsw`` — a graph index (``IndexHNSWFlat``; Malkov & Yashunin 2018), no training.

The vectors come as one ``[N, D]`` array (in memory or ``np.memmap``), a sequence of
such shards, or a zero-argument callable that returns a fresh iterator of shards (a
streamed source). Nothing here holds a normalised copy of the whole input: rows are
validated, sampled for training and added one chunk at a time, and queries are searched
one batch at a time, so a memory-mapped or sharded :class:`vitrina.embeddings.Embeddings`
is indexed with the index's own copy as the only full-size allocation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vitrina.models.embedders import l2_normalise
from vitrina.utils import limit_threads  # threadpoolctl also caps FAISS's OpenMP pool

logger = logging.getLogger(__name__)

#: One ``[N, D]`` array (ndarray, memmap), a sequence of ``[n_i, D]`` shards, or a callable
#: returning a fresh iterator of shards (called once per pass over the data).
VectorSource = np.ndarray | Sequence[np.ndarray] | Callable[[], Iterable[np.ndarray]]

INDEX_KINDS = ("auto", "flat", "ivf", "ivfsq", "ivfpq", "hnsw")
APPROXIMATE_KINDS = ("ivf", "ivfsq", "ivfpq", "hnsw")


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("Candidate search needs FAISS: pip install faiss-cpu") from exc
    return faiss


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` L2-normalised, as a C-contiguous ``float32`` copy ``[N, D]`` (FAISS)."""
    return np.ascontiguousarray(l2_normalise(np.asarray(x, dtype=np.float32)))


def shard_iterator(source: VectorSource, chunk: int) -> Callable[[], Iterator[np.ndarray]]:
    """A re-iterable view of ``source`` as ``[n_i, D]`` pieces of at most ``chunk`` rows.

    An array is sliced (a memmap reads only the slice); a sequence is sliced shard by
    shard; a callable is called for each pass and its shards are split at ``chunk``.

    Raises:
        ValueError: an array source that is not 2-D.
    """

    def pieces(shards: Iterable[Any]) -> Iterator[np.ndarray]:
        for shard in shards:
            for s in range(0, len(shard), chunk):
                yield shard[s : s + chunk]

    if callable(source):
        return lambda: pieces(source())
    if hasattr(source, "shape") and hasattr(source, "ndim"):
        if source.ndim != 2:
            raise ValueError(
                f"Candidate search needs a non-empty [N, D] array, got shape {list(source.shape)}"
            )
        return lambda: pieces([source])
    shards = list(source)
    return lambda: pieces(shards)


@dataclass
class IndexConfig:
    """How :class:`CandidateIndex` indexes vectors (``parameters_pair_matching.yml``).

    Attributes:
        kind: ``auto`` (``flat`` up to ``exact_max`` vectors, else ``approximate``),
            ``flat`` (exact), ``ivf``, ``ivfsq``, ``ivfpq`` or ``hnsw``.
        approximate: the index ``auto`` uses above ``exact_max``: ``ivf``, ``ivfsq``,
            ``ivfpq``, ``hnsw``.
        exact_max: largest catalogue searched exactly by ``auto``.
        nlist: IVF cells; ``None`` → ``4 * sqrt(N)`` rounded (FAISS wiki's guideline
            "Guidelines to choose an index": 4·√N to 16·√N), at most ``N // 39`` (k-means
            wants ~39 training points per cell).
        nprobe: IVF cells scanned per query (recall/speed trade-off; measured in
            ``benchmarks/pair_matching.py``).
        train_size: vectors sampled (uniformly, without replacement) to train the IVF
            quantiser and PQ codebooks; raised to ``39 * nlist`` when smaller.
        pq_m, pq_bits: ``ivfpq`` sub-quantisers (bytes a vector at 8 bits; ``D`` must be a
            multiple of ``pq_m``) and bits per code.
        hnsw_m: HNSW links per node.
        ef_construction, ef_search: HNSW beam widths at build and query time.
        chunk: vectors validated, normalised and added (or searched) per step.
        threads: FAISS OpenMP threads; ``None`` leaves FAISS's default (all cores).
        seed: sampling seed for training.
    """

    kind: str = "auto"
    approximate: str = "ivf"
    exact_max: int = 100_000
    nlist: int | None = None
    nprobe: int = 16
    train_size: int = 100_000
    pq_m: int = 64
    pq_bits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    chunk: int = 100_000
    threads: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.approximate not in APPROXIMATE_KINDS:
            raise ValueError(
                f"approximate index must be one of {APPROXIMATE_KINDS}, got {self.approximate!r}"
            )
        if self.chunk < 1 or self.nprobe < 1 or self.train_size < 1:
            raise ValueError(
                f"index chunk, nprobe and train_size must be >= 1, got chunk={self.chunk}, "
                f"nprobe={self.nprobe}, train_size={self.train_size}"
            )

    def n_cells(self, n: int) -> int:
        """IVF cells for ``n`` vectors (see ``nlist``)."""
        nlist = self.nlist or int(round(4 * math.sqrt(n)))
        return max(1, min(nlist, n // 39 or 1))


class CandidateIndex:
    """A FAISS inner-product index over L2-normalised vectors, built shard by shard.

    Example::

        index = CandidateIndex(IndexConfig(kind="auto")).build(vectors)   # [N, D] or shards
        sims, rows = index.search(queries, k=10)                           # [Q, k] each

    ``rows`` are row numbers into the indexed vectors in source order (``-1`` where fewer
    than ``k`` were found), ``sims`` the cosine similarities, best first. A build from
    shards equals the build from their concatenation (same sample, same order).
    """

    def __init__(self, config: IndexConfig | dict | None = None) -> None:
        self.config = config if isinstance(config, IndexConfig) else IndexConfig(**(config or {}))
        self.index = None
        self.kind_: str | None = None
        self.build_seconds_: float = math.nan

    def _scan(self, shards: Callable[[], Iterator[np.ndarray]]) -> tuple[int, int]:
        """One pass: ``(N, D)``; every shard 2-D, of one width, finite."""
        n, d, bad = 0, None, 0
        for shard in shards():
            shard = np.asarray(shard)
            if shard.ndim != 2 or (d is not None and shard.shape[1] != d):
                raise ValueError(
                    f"Candidate search needs [n, D] shards of one width D={d}; shard at row "
                    f"{n} has shape {list(shard.shape)}"
                )
            d = shard.shape[1]
            bad += int((~np.isfinite(shard)).any(axis=1).sum())
            n += len(shard)
        if not n:
            raise ValueError("Candidate search needs a non-empty [N, D] array, got no vectors")
        if bad:
            raise ValueError(f"{bad} vectors hold NaN or inf")
        return n, int(d)

    def _sample(self, shards: Callable[[], Iterator[np.ndarray]], n: int, size: int) -> np.ndarray:
        """``size`` rows drawn uniformly without replacement, in source order, normalised."""
        rows = np.sort(np.random.default_rng(self.config.seed).choice(n, size=size, replace=False))
        out, start = [], 0
        for shard in shards():
            lo, hi = np.searchsorted(rows, [start, start + len(shard)])
            if hi > lo:  # a memmap shard reads only the sampled rows
                out.append(normalise(shard[rows[lo:hi] - start]))
            start += len(shard)
        return np.concatenate(out)

    def build(self, vectors: VectorSource) -> CandidateIndex:
        """Index ``vectors`` (:data:`VectorSource`, rows ``[N, D]`` of any float dtype).

        Passes over the source: one to validate and count, one to draw the training
        sample (IVF kinds; a memmap reads only the sampled rows), one to add the
        rows ``chunk`` at a time. Peak memory: the index's own copy plus a chunk and the
        training sample (``train_size × D`` float32).

        Raises:
            ValueError: no vectors, shards not 2-D or of different widths, NaN/inf, or
                ``ivfpq`` with ``D`` not a multiple of ``pq_m``.
        """
        faiss = _faiss()
        cfg = self.config
        shards = shard_iterator(vectors, cfg.chunk)
        n, d = self._scan(shards)
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
                nlist = cfg.n_cells(n)
                quantizer = faiss.IndexFlatIP(d)
                if kind == "ivf":
                    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
                elif kind == "ivfsq":
                    qt = faiss.ScalarQuantizer.QT_8bit
                    index = faiss.IndexIVFScalarQuantizer(
                        quantizer, d, nlist, qt, faiss.METRIC_INNER_PRODUCT
                    )
                else:
                    if d % cfg.pq_m:
                        raise ValueError(
                            f"ivfpq needs the dimension {d} to be a multiple of pq_m={cfg.pq_m}"
                        )
                    index = faiss.IndexIVFPQ(
                        quantizer, d, nlist, cfg.pq_m, cfg.pq_bits, faiss.METRIC_INNER_PRODUCT
                    )
                size = min(n, max(cfg.train_size, 39 * nlist))
                index.train(self._sample(shards, n, size))
                index.nprobe = min(cfg.nprobe, nlist)
                self._quantizer = quantizer  # the IVF index does not own it in the Python API
            for shard in shards():
                index.add(normalise(shard))
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
        self, queries: VectorSource, k: int, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed vectors of each query.

        Args:
            queries: ``[Q, D]`` rows as a :data:`VectorSource` (normalised batch by batch).
            k: neighbours per query (at most the number indexed).
            batch_size: queries per FAISS call; ``None``: the config's ``chunk``.

        Returns:
            ``(similarities float32 [Q, k], rows int64 [Q, k])``.

        Raises:
            RuntimeError: :meth:`build` was not called.
            ValueError: the query dimension differs from the index's.
        """
        if self.index is None:
            raise RuntimeError("CandidateIndex.search called before build")
        k = int(min(k, self.n_))
        sims, rows = [], []
        batches = shard_iterator(queries, int(batch_size or self.config.chunk))()
        with limit_threads(self.config.threads):
            bar = tqdm(batches, desc="candidate search", unit="batch", leave=False, disable=None)
            for batch in bar:  # disable=None: no bar without a terminal
                batch = np.asarray(batch)
                if batch.ndim != 2 or batch.shape[1] != self.d_:
                    raise ValueError(
                        f"Query dimension {list(batch.shape)[1:]} differs from the index "
                        f"dimension {self.d_}"
                    )
                s, r = self.index.search(normalise(batch), k)  # per batch: no full copy
                sims.append(s)
                rows.append(r)
        if not rows:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        return np.concatenate(sims), np.concatenate(rows).astype(np.int64, copy=False)
