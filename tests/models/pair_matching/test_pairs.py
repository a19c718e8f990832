"""Pair tables: bad pairs dropped and counted, unknown ids named, splits with no item on two sides
(the helpers are the pair_matching pipeline tests')."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.pipelines.test_pair_matching import (
    assert_disjoint,
    reasons,
)
from vitrina.models.pair_matching import clean_pairs, split_pairs


def test_clean_pairs_drops_and_counts_self_and_duplicate_pairs():
    pairs = pd.DataFrame(
        {"a": ["x", "x", "y", "z", "y"], "b": ["y", "x", "x", "y", "z"], "t": [1, 0, 0, 1, 1]}
    )
    report = []
    out = clean_pairs(pairs, np.array(["x", "y", "z"]), columns=("a", "b", "t"), report=report)
    assert out[["left_id", "right_id", "label"]].values.tolist() == [["x", "y", 1], ["z", "y", 1]]
    r = reasons(report)
    assert r["self_pairs"] == 1 and r["duplicate_pairs"] == 2
    assert "1 with conflicting labels" in report[1]["detail"]


def test_clean_pairs_names_unknown_ids():
    pairs = pd.DataFrame(
        {"left_id": ["a", "b", "q1"], "right_id": ["q2", "a", "q3"], "label": [1, 0, 1]}
    )
    with pytest.raises(
        ValueError,
        match=r"3 ids in the pairs table have no item or embedding \(e.g. \['q1', 'q2', 'q3'\]\)",
    ):
        clean_pairs(pairs, np.array(["a", "b"]))
    with pytest.raises(ValueError, match="labels must be 0/1"):
        clean_pairs(
            pairs.assign(label=[1, 2, 0], right_id=["b", "a", "a"], left_id=["a", "b", "b"]),
            np.array(["a", "b"]),
        )


def test_split_pairs_never_puts_an_item_on_two_sides():
    rng = np.random.default_rng(0)
    # many small components: split by component
    pairs = pd.DataFrame(
        {
            "left_id": [f"a{i}" for i in range(300)],
            "right_id": [f"b{i % 150}" for i in range(300)],
            "label": rng.integers(0, 2, 300),
        }
    )
    report = []
    out = split_pairs(pairs, 0.2, 0.1, seed=0, report=report)
    assert reasons(report)["cross_split_pairs"] == 0 and len(out) == 300
    assert_disjoint(out)
    assert 0.1 < (out["split"] == "test").mean() < 0.3
    # one giant component (a chain): items split at random, crossing pairs dropped
    chain = pd.DataFrame(
        {
            "left_id": [f"c{i}" for i in range(400)],
            "right_id": [f"c{i + 1}" for i in range(400)],
            "label": rng.integers(0, 2, 400),
        }
    )
    report = []
    out = split_pairs(chain, 0.2, 0.1, seed=0, report=report)
    dropped = reasons(report)["cross_split_pairs"]
    assert dropped > 0 and len(out) == 400 - dropped
    assert_disjoint(out)
