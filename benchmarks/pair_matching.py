"""Speed of pair matching: candidate search over 1,000,000 vectors and pair scoring.

* Candidate search: ``N`` synthetic 512-d vectors (a catalogue-like mixture: Zipf-sized
  categories, groups of near-duplicates, :func:`shard_source`; ``--distribution uniform``
  for IVF's worst case), generated and indexed shard by shard by
  :class:`vitrina.models.pair_matching.CandidateIndex` as the pipeline does above
  ``exact_max`` (IVF by default; ``--index ivfpq`` / ``hnsw``). Reported: build seconds,
  queries/s of the approximate index and of exact search (``IndexFlatIP``, same queries,
  same run), recall@k against exact (the ``k`` nearest other items: a query's own row
  is dropped from both), an ``nprobe`` sweep, and peak RSS after the build. The last
  search line is ``<index>_row: ...``.
* Pair scoring: a :class:`vitrina.models.pair_matching.PairMatcher` (MLP and gradient
  boosting) trained on synthetic text + image embeddings (512-d each, the pipeline's
  features: ``|a-b|``, ``a*b``, cosine per modality) scores ``--pairs`` pairs; pairs per
  second, feature building included. ``--strings`` adds the string features on titles.

Run from the repository root::

    nice -n 10 .venv/bin/python benchmarks/pair_matching.py --skip-scoring  # 1M x 512, ~10 min
    .venv/bin/python benchmarks/pair_matching.py --n 200000 --distribution uniform

Memory: no input array exists (shards are generated on each pass); the IVF-Flat index holds
its own copy (2 GB at 1M x 512 float32), then the exact index another 2 GB.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


#: ``--distribution`` choices (see :func:`shard_source`).
DISTRIBUTIONS = ("catalogue", "uniform")


def shard_source(n: int, dim: int, seed: int, distribution: str, shard: int = 50_000):
    """A zero-argument callable yielding ``n`` synthetic ``[<=shard, dim]`` float32 shards,
    the same ones on every call (each shard seeded by ``(seed, shard number)``), so the
    index is built shard by shard and no ``[n, dim]`` input array ever exists.

    ``catalogue`` (the default) imitates a product catalogue's embeddings:

    * 2,000 categories whose sizes follow a Zipf law (weight ``1 / (rank + 10)``): a few
      big categories (t-shirts) and a long tail;
    * products in groups of near-duplicates (colour variants, relisted items): group
      sizes ``1 + Geometric(0.45)`` (mean ~2.2), a group offset around its category
      centre and a small per-item noise. Per-dimension scales 1 (category), 0.7 (group),
      0.35 (item), so the cosine is ~0.92 within a group, ~0.6 within a category, ~0 across;
    * an anisotropic spectrum (dimension ``j`` scaled by ``(j + 1) ** -0.25``), as learnt
      embeddings spend most of their variance in few directions.

    ``uniform``: directions uniform on the sphere (isotropic Gaussian), IVF's worst case:
    no structure for the coarse quantiser to follow, and no real catalogue looks like it.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    base = np.random.default_rng(seed)
    n_cat = 2000
    centres = base.standard_normal((n_cat, dim), dtype=np.float32)
    weights = 1.0 / (np.arange(n_cat) + 10.0)
    weights /= weights.sum()
    spectrum = ((np.arange(dim) + 1.0) ** -0.25).astype(np.float32)

    def one(i: int, m: int) -> np.ndarray:
        rng = np.random.default_rng([seed, i])
        if distribution == "uniform":
            return rng.standard_normal((m, dim), dtype=np.float32)
        sizes = 1 + rng.geometric(0.45, size=m)
        group = np.repeat(np.arange(m), sizes)[:m]  # items of a group are adjacent rows
        cat = rng.choice(n_cat, size=m, p=weights)[group]
        x = rng.standard_normal((m, dim), dtype=np.float32)[group]
        x *= 0.7
        x += centres[cat]
        x += 0.35 * rng.standard_normal((m, dim), dtype=np.float32)
        x *= spectrum
        return x

    def shards():
        for i, s in enumerate(range(0, n, shard)):
            yield one(i, min(shard, n - s))

    return shards


def take_rows(source, rows: np.ndarray) -> np.ndarray:
    """The rows ``rows`` (sorted) of a shard source, in one pass."""
    out, start = [], 0
    for x in source():
        lo, hi = np.searchsorted(rows, [start, start + len(x)])
        out.append(x[rows[lo:hi] - start])
        start += len(x)
    return np.concatenate(out)


def drop_self(rows: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each query's first ``k`` result rows other than its own row ``own[i]`` (the
    self-join the pipeline runs: an item's neighbours are the other items)."""
    return np.stack([r[r != o][:k] for r, o in zip(rows, own, strict=True)])


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that ``found`` contains."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact, strict=True)]))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """``(rows [Q, k], queries per second)``."""
    t = time.perf_counter()
    _, rows = index.search(queries, k)
    return rows, len(queries) / (time.perf_counter() - t)


def bench_search(args) -> None:
    from vitrina.models.pair_matching import CandidateIndex

    source = shard_source(args.n, args.dim, args.seed, args.distribution)
    rng = np.random.default_rng(args.seed + 1)
    n_q = min(args.queries, args.n)
    q_rows = np.sort(rng.choice(args.n, n_q, replace=False))
    queries = take_rows(source, q_rows)
    m = min(args.recall_queries, n_q)  # exact search is slow: a subset of the queries
    print(
        f"vectors: {args.n:,} x {args.dim} float32 ({args.n * args.dim * 4 / 2**30:.2f} GiB), "
        f"{args.distribution} distribution, generated shard by shard (50,000 rows); "
        f"{n_q:,} timed queries (indexed rows), {m:,} checked against exact search",
        flush=True,
    )
    cfg = {
        "kind": args.index,
        "nlist": args.nlist or None,
        "nprobe": args.nprobe,
        "train_size": args.train_size,
        "pq_m": args.pq_m,
        "hnsw_m": args.hnsw_m,
        "ef_search": args.ef_search,
        "threads": args.threads or None,
        "seed": args.seed,
    }
    cpu = time.process_time()
    index = CandidateIndex(cfg).build(source)
    build_cpu = time.process_time() - cpu  # all threads: the figure a loaded machine keeps
    build_rss = peak_rss_gib()
    ivf = args.index.startswith("ivf")
    detail = (
        f"nlist={index.index.nlist}, nprobe={index.index.nprobe}"
        + (f", pq_m={args.pq_m}" if args.index == "ivfpq" else "")
        if ivf
        else f"M={args.hnsw_m}, efSearch={args.ef_search}"
        if args.index == "hnsw"
        else "exact"
    )
    print(
        f"build: {args.index} ({detail}) over {args.n:,} vectors in {index.build_seconds_:.1f} s "
        f"({build_cpu:.0f} CPU s); "
        f"peak RSS {build_rss:.2f} GiB",
        flush=True,
    )
    rows, rate = timed_search(index, queries, args.k + 1)
    print(f"query: top-{args.k} for {n_q:,} queries: {rate:,.0f} queries/s", flush=True)

    exact_index = CandidateIndex({**cfg, "kind": "flat"}).build(source)
    exact, exact_rate = timed_search(exact_index, queries[:m], args.k + 1)
    exact = drop_self(exact, q_rows[:m], args.k)
    del exact_index
    print(
        f"exact (flat) top-{args.k} for {m:,} of the same queries: {exact_rate:,.1f} queries/s",
        flush=True,
    )
    recall = recall_at_k(drop_self(rows[:m], q_rows[:m], args.k), exact)
    if ivf and args.nprobe_sweep:
        for nprobe in args.nprobe_sweep:
            index.index.nprobe = nprobe
            r, sweep_rate = timed_search(index, queries[:m], args.k + 1)
            print(
                f"  nprobe={nprobe:>3}: {sweep_rate:,.0f} queries/s "
                f"({sweep_rate / exact_rate:.0f}x exact), recall@{args.k} "
                f"{recall_at_k(drop_self(r, q_rows[:m], args.k), exact):.4f}",
                flush=True,
            )
    print(
        f"{args.index}_row: n={args.n} dim={args.dim} distribution={args.distribution} {detail} "
        f"build_s={index.build_seconds_:.1f} build_cpu_s={build_cpu:.0f} queries_per_s={rate:.0f} "
        f"exact_queries_per_s={exact_rate:.1f} speedup={rate / exact_rate:.1f}x "
        f"recall@{args.k}={recall:.4f} peak_rss_build_gib={build_rss:.2f}",
        flush=True,
    )


def bench_scoring(args) -> None:
    import pandas as pd

    from vitrina.embeddings import Embeddings
    from vitrina.models.pair_matching import fit_pair_matchers

    rng = np.random.default_rng(args.seed)
    n_items, dim = 20_000, args.dim
    groups = rng.integers(0, n_items // 2, n_items)
    text = rng.standard_normal((n_items // 2, dim), dtype=np.float32)[groups]
    image = rng.standard_normal((n_items // 2, dim), dtype=np.float32)[groups]
    text += rng.standard_normal(text.shape, dtype=np.float32)
    image += rng.standard_normal(image.shape, dtype=np.float32)
    ids = np.array([f"i{i}" for i in range(n_items)])
    emb = Embeddings(ids=ids, text=text, image=image)
    words = np.array(["dress", "shirt", "black", "blue", "cotton", "slim", "long", "kids"])
    items = pd.DataFrame(
        {"title": [" ".join(words[rng.integers(0, 8, 4)]) + f" m{g:05d}" for g in groups]},
        index=ids,
    )
    # training pairs: same group = match
    order = np.argsort(groups, kind="stable")
    p = np.flatnonzero(groups[order[:-1]] == groups[order[1:]])
    pos = pd.DataFrame({"left_id": ids[order[p]], "right_id": ids[order[p + 1]], "label": 1})
    neg = pd.DataFrame(
        {
            "left_id": rng.choice(ids, 3 * len(pos)),
            "right_id": rng.choice(ids, 3 * len(pos)),
            "label": 0,
        }
    )
    pairs = pd.concat([pos, neg], ignore_index=True).sample(frac=1.0, random_state=0)
    pairs = pairs[pairs["left_id"] != pairs["right_id"]].iloc[:6000]
    train, val = pairs.iloc[:5000], pairs.iloc[5000:]
    features = {"modalities": ["text", "image"], "string_fields": ["title"] if args.strings else []}
    classifiers = {
        "mlp": {
            "type": "mlp",
            "model": {"hidden_size": 256, "n_layers": 2},
            "train": {"max_epochs": 3},
        },
        "hist_gbdt": {"type": "hist_gbdt", "params": {"max_iter": 50}},
    }
    matchers, _ = fit_pair_matchers(
        train, val, items, emb, features, classifiers, seed=args.seed, threads=args.threads or None
    )
    left, right = rng.choice(ids, args.pairs), rng.choice(ids, args.pairs)
    builder = matchers["mlp"].builder
    t = time.perf_counter()
    for s in range(0, args.pairs, 50_000):
        builder.transform(left[s : s + 50_000], right[s : s + 50_000], items, emb)
    feat_rate = args.pairs / (time.perf_counter() - t)
    print(
        f"features: {len(builder.feature_names):,} per pair "
        f"({'text+image embeddings' + (' + title strings' if args.strings else '')}): "
        f"{feat_rate:,.0f} pairs/s",
        flush=True,
    )
    for name, matcher in matchers.items():
        t = time.perf_counter()
        matcher.predict_proba(left, right, items, emb, threads=args.threads or None)
        rate = args.pairs / (time.perf_counter() - t)
        print(
            f"scoring: {name}: {args.pairs:,} pairs in {args.pairs / rate:.1f} s = {rate:,.0f} pairs/s (features included)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index", choices=["ivf", "ivfsq", "ivfpq", "hnsw", "flat"], default="ivf")
    parser.add_argument("--distribution", choices=DISTRIBUTIONS, default="catalogue")
    parser.add_argument("--nlist", type=int, default=0, help="IVF cells (0: 4 sqrt(N))")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF cells scanned per query")
    parser.add_argument("--pq-m", type=int, default=64, help="IVF-PQ bytes per vector")
    parser.add_argument("--train-size", type=int, default=100_000, help="IVF training sample")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--queries", type=int, default=20_000, help="timed queries")
    parser.add_argument(
        "--recall-queries",
        type=int,
        default=2_000,
        help="queries timed with exact search and checked against it",
    )
    parser.add_argument("--pairs", type=int, default=200_000, help="pairs scored")
    parser.add_argument(
        "--strings", action="store_true", help="add title string features to the scoring benchmark"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="FAISS/torch/OpenMP threads (0: library defaults)"
    )
    parser.add_argument(
        "--nprobe-sweep",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[4, 8, 16, 32, 64],
        help="IVF nprobe values timed on the recall queries (comma-separated; empty: none)",
    )
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import faiss
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import cpu_flags

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"cpu flags: {' '.join(cpu_flags())}; "
        f"load average {os.getloadavg()[0]:.1f}; faiss {faiss.__version__} "
        f"({faiss.omp_get_max_threads()} threads), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); --threads {args.threads or 'default'}",
        flush=True,
    )
    if not args.skip_search:
        bench_search(args)
    if not args.skip_scoring:
        bench_scoring(args)
    print(f"peak RSS: {peak_rss_gib():.2f} GiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
