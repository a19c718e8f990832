"""Toy items, embeddings and pairs for the pair-matching tests (importable helpers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vitrina.embeddings import Embeddings

SMALL_MLP = {
    "type": "mlp",
    "model": {"hidden_size": 32, "n_layers": 1, "dropout": 0.0},
    "train": {"max_epochs": 25, "patience": 25, "batch_size": 64, "learning_rate": 0.01},
}
SMALL_GBDT = {"type": "hist_gbdt", "params": {"max_iter": 40}}


def toy(n_groups: int = 60, per_group: int = 2, dim: int = 8, seed: int = 0):
    """Items in groups (a group = one product); same-group vectors are close."""
    rng = np.random.default_rng(seed)
    centres_t = rng.normal(size=(n_groups, dim))
    centres_i = rng.normal(size=(n_groups, dim))
    g = np.repeat(np.arange(n_groups), per_group)
    ids = np.array([f"P{i:04d}" for i in range(len(g))])
    text = centres_t[g] + 0.3 * rng.normal(size=(len(g), dim))
    image = centres_i[g] + 0.3 * rng.normal(size=(len(g), dim))
    brands = np.array(["acme", "globex", "initech", "umbrella"])
    items = pd.DataFrame(
        {
            "item_id": ids,
            "group_id": [f"G{x}" for x in g],
            "title": [f"{brands[x % 4]} model x{x:03d}z widget {rng.integers(1, 9)}" for x in g],
            "price": [10.0 + x + rng.random() for x in g],
        }
    )
    emb = Embeddings(ids=ids, text=text.astype(np.float32), image=image.astype(np.float32))
    return items, emb


def toy_pairs(items: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _, grp in items.groupby("group_id"):
        ids = grp["item_id"].tolist()
        rows.append((ids[0], ids[1], 1))
        for _ in range(2):
            other = items["item_id"].iloc[rng.integers(len(items))]
            if other not in ids:
                rows.append((ids[0], other, 0))
    return pd.DataFrame(rows, columns=["left_id", "right_id", "label"])
