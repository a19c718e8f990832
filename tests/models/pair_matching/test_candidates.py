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


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
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
