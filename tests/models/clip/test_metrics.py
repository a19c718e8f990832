"""Retrieval metrics: ranks with ties against the query, recall, chance, duplicates."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from vitrina.models.clip.metrics import chance_recall, retrieval_metrics, retrieval_ranks


def test_retrieval_ranks_and_recall_on_hand_made_embeddings():
    text = np.eye(4, dtype=np.float32)
    image = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float32)
    image = image + 0.1 * np.eye(4, dtype=np.float32)  # the true image is second best
    assert retrieval_ranks(text, image).tolist() == [1, 2, 2, 1]
    m = retrieval_metrics(text, image, ks=(1, 2))
    assert m["t2i_recall_1"] == 0.5 and m["t2i_recall_2"] == 1.0
    assert m["t2i_median_rank"] == 1.5 and m["n"] == 4
    const = retrieval_metrics(np.ones((4, 3)), np.ones((4, 3)), ks=(1,))
    assert const["t2i_recall_1"] == 0.0 and const["t2i_median_rank"] == 4
    keys = retrieval_metrics(text, image, ks=(1, 2), text_keys=np.array([0, 1, 1, 2]))
    assert keys["t2i_recall_1"] == 1.0 and keys["i2t_recall_1"] == 1.0


def test_chance_recall_equals_the_exact_combinatorics():
    n, k = 7, 3
    for p in (1, 2, 4):
        hits = [any(i < p for i in top) for top in combinations(range(n), k)]
        assert chance_recall(np.array([p]), n, k) == pytest.approx(np.mean(hits))
    m = retrieval_metrics(np.eye(20), np.eye(20), ks=(10,))
    assert m["chance_t2i_recall_10"] == pytest.approx(0.5)


def test_a_split_smaller_than_k_is_refused():
    with pytest.raises(ValueError, match="needs at least 10 pairs"):
        retrieval_metrics(np.eye(5), np.eye(5), ks=(1, 10))
