"""Speed of pair matching: candidate search over 1,000,000 vectors and pair scoring.

* Candidate search: ``N`` synthetic 512-d vectors (clustered: ``N / 20`` centres plus
  noise, so neighbours mean something), indexed by :class:`vitrina.models.pair_matching.
  CandidateIndex` as the pipeline does above ``exact_max`` (IVF by default, HNSW with
  ``--index hnsw``); the time to build the index, the time per top-``k`` query (measured on
  ``--queries`` of the vectors, extrapolated to all ``N``: a full self-join is
  ``N`` queries), and recall@k against exact search on a sample.
* Pair scoring: a :class:`vitrina.models.pair_matching.PairMatcher` (MLP and gradient
  boosting) trained on synthetic text + image embeddings (512-d each, the pipeline's
  features: ``|a-b|``, ``a*b``, cosine per modality) scores ``--pairs`` pairs; pairs per
  second, feature building included. ``--strings`` adds the string features on titles.

Run from the repository root::

    .venv/bin/python benchmarks/pair_matching.py                 # 1M x 512, a few minutes
    .venv/bin/python benchmarks/pair_matching.py --queries 0     # query all 1M (slow)

Memory: the vectors (2 GB at 1M x 512 float32), their normalised copy and the index's copy,
about 6 GB at the peak.
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


def synthetic_vectors(n: int, dim: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``[n, dim]`` float32: ``n // 20`` Gaussian centres plus noise, built in chunks so no
    float64 temporary of the full size exists."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 20), dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        out[s : s + m] = centres[rng.integers(0, len(centres), m)]
        out[s : s + m] += 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
    return out


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top-k that ``found`` contains."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact, strict=True)]))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_search(args) -> None:
    from vitrina.models.pair_matching import CandidateIndex

    t = time.perf_counter()
    x = synthetic_vectors(args.n, args.dim, args.seed)
    print(
        f"vectors: {args.n:,} x {args.dim} float32 ({x.nbytes / 2**30:.2f} GiB), "
        f"generated in {time.perf_counter() - t:.1f} s",
        flush=True,
    )
    cfg = {
        "kind": args.index,
        "nlist": args.nlist,
        "nprobe": args.nprobe,
        "train_size": args.train_size,
        "hnsw_m": args.hnsw_m,
        "ef_search": args.ef_search,
        "threads": args.threads or None,
        "seed": args.seed,
    }
    index = CandidateIndex(cfg).build(x)
    detail = (
        f"nlist={index.index.nlist}, nprobe={index.index.nprobe}"
        if args.index == "ivf"
        else f"M={args.hnsw_m}, efSearch={args.ef_search}"
        if args.index == "hnsw"
        else "exact"
    )
    print(
        f"build: {args.index} ({detail}) over {args.n:,} vectors in {index.build_seconds_:.1f} s; "
        f"peak RSS so far {peak_rss_gib():.2f} GiB",
        flush=True,
    )

    n_q = args.n if args.queries <= 0 else min(args.queries, args.n)
    rng = np.random.default_rng(args.seed + 1)
    q_rows = np.sort(rng.choice(args.n, n_q, replace=False)) if n_q < args.n else np.arange(args.n)
    t = time.perf_counter()
    _, rows = index.search(x[q_rows], args.k)
    q_time = time.perf_counter() - t
    per_s = n_q / q_time
    print(
        f"query: top-{args.k} for {n_q:,} queries in {q_time:.1f} s = {per_s:,.0f} queries/s; "
        f"all {args.n:,} items (the self-join) ~ {args.n / per_s:.0f} s",
        flush=True,
    )
    if not args.recall_queries:
        return
    import faiss

    from vitrina.models.pair_matching.candidates import normalise

    m = min(args.recall_queries, n_q)
    t = time.perf_counter()
    # Exact cosine top-k: inner product of the L2-normalised vectors (a normalised copy of x).
    _, exact = faiss.knn(
        normalise(x[q_rows[:m]]), normalise(x), args.k, metric=faiss.METRIC_INNER_PRODUCT
    )
    print(f"exact top-{args.k} of {m:,} queries by brute force: {time.perf_counter() - t:.1f} s")
    print(
        f"recall@{args.k} vs exact search: {recall_at_k(rows[:m], exact):.4f}; "
        f"peak RSS so far {peak_rss_gib():.2f} GiB",
        flush=True,
    )
    if args.index == "ivf" and args.nprobe_sweep:
        for nprobe in args.nprobe_sweep:
            index.index.nprobe = nprobe
            t = time.perf_counter()
            _, r = index.search(x[q_rows[:m]], args.k)
            rate = m / (time.perf_counter() - t)
            print(
                f"  nprobe={nprobe:>3}: {rate:,.0f} queries/s, recall@{args.k} "
                f"{recall_at_k(r, exact):.4f}",
                flush=True,
            )
        index.index.nprobe = args.nprobe
    del x, index


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
    parser.add_argument("--index", choices=["ivf", "hnsw", "flat"], default="ivf")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query")
    parser.add_argument("--train-size", type=int, default=100_000, help="IVF training sample")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--queries", type=int, default=20_000, help="timed queries (0: all N)")
    parser.add_argument(
        "--recall-queries",
        type=int,
        default=1_000,
        help="queries checked against exact search (0: skip)",
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
        default=[4, 8, 32],
        help="IVF nprobe values timed on the recall queries (comma-separated; empty: none)",
    )
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import faiss
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
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
