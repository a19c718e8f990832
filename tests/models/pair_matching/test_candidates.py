"""Candidate search (FAISS), candidate recall and match groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.models.pair_matching.toys import toy
from vitrina.models.pair_matching import (
    CandidateIndex,
    candidate_pairs,
    candidate_recall,
    match_groups,
    mining_source,
    mining_vectors,
)


def clustered(n: int = 3000, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 10, dim))
    return (centres[rng.integers(0, len(centres), n)] + 0.2 * rng.normal(size=(n, dim))).astype(
        np.float32
    )


def test_flat_index_is_exact():
    x = clustered(500)
    sims, rows = CandidateIndex({"kind": "auto", "exact_max": 1000}).build(x).search(x[:20], 5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    exact = np.argsort(-(xn[:20] @ xn.T), axis=1)[:, :5]
    assert (rows == exact).mean() > 0.99 and (rows[:, 0] == np.arange(20)).all()
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", ["ivf", "ivfsq", "hnsw"])
def test_approximate_indexes_recall(kind):
    x = clustered(3000)
    index = CandidateIndex(
        {"kind": "auto", "approximate": kind, "exact_max": 100, "nprobe": 8}
    ).build(x)
    assert index.kind_ == kind
    _, rows = index.search(x[:200], 10)
    _, exact = CandidateIndex({"kind": "flat"}).build(x).search(x[:200], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact, strict=True)])
    assert recall > 0.8, recall
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.zeros((1, 3), np.float32), 2)


def test_candidate_pairs_recall_and_groups():
    items, emb = toy(n_groups=40)
    cands = candidate_pairs(emb.ids, emb.text, k=3)
    assert (cands["left_id"] < cands["right_id"]).all()
    assert not cands.duplicated(["left_id", "right_id"]).any()
    assert cands["rank"].between(1, 3).all()
    positives = (
        items.groupby("group_id")["item_id"]
        .agg(list)
        .apply(lambda x: pd.Series(x[:2]))
        .set_axis(["left_id", "right_id"], axis=1)
    )
    rec = candidate_recall(cands, positives)
    assert rec["n_positive"] == 40 and rec["recall"] > 0.9
    groups = match_groups(emb.ids, positives.iloc[:5])
    assert len(groups) == len(emb.ids)
    assert (groups["group_size"] == 2).sum() == 10 and groups["match_group"].nunique() == len(
        emb.ids
    ) - 5
    with pytest.raises(ValueError, match="not among the items"):
        match_groups(emb.ids[:3], positives.iloc[:5])
    with pytest.raises(ValueError, match="NaN"):
        CandidateIndex().build(np.full((3, 2), np.nan))


def shards_of(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(x, np.cumsum(sizes)[:-1])


@pytest.mark.parametrize("kind", ["ivf", "ivfsq", "ivfpq", "hnsw"])
def test_a_build_from_shards_equals_the_one_shot_build(kind, tmp_path):
    """Shards (a list, a memmap, a stream) index the same vectors in the same order, and
    the IVF quantiser is trained on the same sample, so the searches agree exactly."""
    x = clustered(2000)
    cfg = {"kind": kind, "nlist": 16, "nprobe": 4, "pq_m": 8, "train_size": 700, "chunk": 300}
    cfg["threads"] = 1  # HNSW insertion is deterministic on one thread
    sims, rows = CandidateIndex({**cfg, "chunk": 10_000}).build(x).search(x[:50], 5)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.float32, x.shape)
    mm[:] = x
    mm.flush()
    sources = {
        "shards": shards_of(x, [700, 13, 1287]),
        "memmap": np.load(tmp_path / "x.npy", mmap_mode="r"),
        "stream": lambda: iter(shards_of(x, [1000, 1000])),
    }
    for name, source in sources.items():
        index = CandidateIndex(cfg).build(source)
        assert index.n_ == 2000 and index.kind_ == kind
        s2, r2 = index.search(lambda: iter(shards_of(x[:50], [20, 30])), 5)  # queries chunked
        np.testing.assert_array_equal(r2, rows, err_msg=name)
        np.testing.assert_allclose(s2, sims, rtol=1e-5, atol=1e-6, err_msg=name)


def test_auto_switches_to_the_approximate_index_above_exact_max():
    x = clustered(400)
    assert CandidateIndex({"exact_max": 400}).build(x).kind_ == "flat"
    for approximate in ("ivf", "ivfsq", "ivfpq", "hnsw"):
        cfg = {"exact_max": 399, "approximate": approximate, "pq_m": 8, "nlist": 4}
        assert CandidateIndex(cfg).build(x).kind_ == approximate
    with pytest.raises(ValueError, match="approximate index must be one of"):
        CandidateIndex({"approximate": "lsh"})
    with pytest.raises(ValueError, match="multiple of pq_m=7"):
        CandidateIndex({"kind": "ivfpq", "pq_m": 7, "nlist": 4}).build(x)
    with pytest.raises(ValueError, match="one width"):
        CandidateIndex().build([x[:10], x[:10, :8]])
    with pytest.raises(ValueError, match="no vectors"):
        CandidateIndex().build([])


def test_candidate_pairs_from_shards_equal_those_from_the_array():
    items, emb = toy(n_groups=40)
    cfg = {"kind": "ivf", "nlist": 2, "nprobe": 2, "chunk": 7}
    whole = candidate_pairs(emb.ids, emb.text, k=3, config=cfg)
    sharded = candidate_pairs(emb.ids, shards_of(emb.text, [30, 50]), k=3, config=cfg)
    pd.testing.assert_frame_equal(whole, sharded)
    with pytest.raises(ValueError, match="79 ids for 80 vectors"):
        candidate_pairs(emb.ids[:-1], emb.text, k=3)


def test_the_text_image_source_streams_the_concatenation():
    _, emb = toy(n_groups=40)
    source = mining_source(emb, "text+image", chunk=7)
    pieces = list(source())
    assert max(len(p) for p in pieces) == 7
    np.testing.assert_allclose(np.concatenate(pieces), mining_vectors(emb, "text+image"))
    assert mining_source(emb, "text", chunk=7) is emb.text  # no copy of one modality
