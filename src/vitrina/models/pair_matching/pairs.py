"""Labelled item pairs in one shape (:class:`PairData`), whatever the source layout.

Bad input is handled the same way for every layout (:mod:`.layouts`): pairs naming
unknown ids raise (count and examples); self-pairs and duplicate pairs (in either order)
are dropped and counted; items excluded upstream (NaN embeddings) lose their pairs,
counted. Every count lands in the ``report`` table (``reason, count, detail``).
Sources without a split are split so that no item sits on two sides (:func:`split_pairs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from vitrina.embeddings import Embeddings

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ["left_id", "right_id", "label", "split"]
REPORT_COLUMNS = ["reason", "count", "detail"]
SPLITS = ("train", "val", "test")


@dataclass
class PairData:
    """Items, their embeddings and labelled pairs, whatever the source layout.

    Attributes:
        items: ``item_id`` (str, unique) and the item's text/attribute columns (and
            ``group_id`` for catalogues).
        embeddings: per-item vectors (ids = ``items.item_id``); ``image`` may have
            dimension 0 (text-only sources).
        pairs: ``left_id, right_id, label`` (0/1) and ``split`` (``train``/``val``/
            ``test``) once split.
        report: ``reason, count, detail``: what was dropped or excluded, and why.
    """

    items: pd.DataFrame
    embeddings: Embeddings
    pairs: pd.DataFrame
    report: list[dict[str, Any]] = field(default_factory=list)

    def report_frame(self) -> pd.DataFrame:
        """The report as a table (``reason, count, detail``)."""
        return pd.DataFrame(self.report, columns=REPORT_COLUMNS)


def note(
    report: list[dict[str, Any]], reason: str, count: int, detail: str = "", dropped: bool = True
) -> None:
    """Append a report row; log it (a warning when ``dropped`` rows are counted)."""
    report.append({"reason": reason, "count": int(count), "detail": detail})
    if dropped and count:
        logger.warning("pair_matching: %s: %d (%s)", reason, count, detail)
    elif not dropped:
        logger.info("pair_matching: %s: %d (%s)", reason, count, detail)


def clean_pairs(
    pairs: pd.DataFrame,
    known_ids: np.ndarray,
    excluded_ids: np.ndarray | None = None,
    columns: tuple[str, str, str] = ("left_id", "right_id", "label"),
    report: list[dict[str, Any]] | None = None,
    drop_duplicates: bool = True,
) -> pd.DataFrame:
    """Validate a pairs table and return ``left_id, right_id, label[, split]``.

    Args:
        pairs: the source table.
        known_ids: ids that have an item and an embedding.
        excluded_ids: ids that exist but were excluded (NaN embeddings): their pairs are
            dropped and counted rather than failing.
        columns: source names of the left id, right id and label columns.
        report: list the counts are appended to.
        drop_duplicates: drop repeated pairs (either order; the first is kept). A benchmark
            with fixed splits keeps them (counted) so its test set stays the published one.

    Raises:
        KeyError: a column is missing.
        ValueError: ids neither known nor excluded (count and examples); labels other
            than 0/1.
    """
    report = report if report is not None else []
    missing = [c for c in columns if c not in pairs.columns]
    if missing:
        raise KeyError(f"The pairs table lacks columns {missing}; columns: {list(pairs.columns)}")
    left, right, label = columns
    keep = [left, right, label] + (["split"] if "split" in pairs.columns else [])
    df = pairs[keep].rename(columns={left: "left_id", right: "right_id", label: "label"}).copy()
    df["left_id"], df["right_id"] = df["left_id"].astype(str), df["right_id"].astype(str)
    if df["label"].isna().any():
        raise ValueError(f"{int(df['label'].isna().sum())} pairs have no label")
    labels = set(pd.unique(df["label"]).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"Pair labels must be 0/1, got {sorted(map(str, labels))[:10]}")
    df["label"] = df["label"].astype(np.int64)
    known = set(map(str, known_ids))
    excluded = set(map(str, excluded_ids)) if excluded_ids is not None else set()
    ends = pd.unique(pd.concat([df["left_id"], df["right_id"]]))
    unknown = [i for i in ends if i not in known and i not in excluded]
    if unknown:
        raise ValueError(
            f"{len(unknown)} ids in the pairs table have no item or embedding "
            f"(e.g. {unknown[:5]}); {len(known)} items are known"
        )
    if excluded:
        hit = df["left_id"].isin(excluded) | df["right_id"].isin(excluded)
        note(
            report, "pairs_with_excluded_item", int(hit.sum()), "a side's embedding had NaN values"
        )
        df = df[~hit]
    self_pair = df["left_id"] == df["right_id"]
    note(report, "self_pairs", int(self_pair.sum()), "left and right are the same item")
    df = df[~self_pair]
    lo = np.minimum(df["left_id"].to_numpy(), df["right_id"].to_numpy())
    hi = np.maximum(df["left_id"].to_numpy(), df["right_id"].to_numpy())
    key = pd.Series(lo, index=df.index) + "\x1f" + pd.Series(hi, index=df.index)
    dup = key.duplicated(keep="first")
    conflicts = int((df.groupby(key.to_numpy())["label"].nunique() > 1).sum())
    if drop_duplicates:
        note(
            report,
            "duplicate_pairs",
            int(dup.sum()),
            f"same two items again (either order), first kept; {conflicts} with conflicting labels",
        )
        df = df[~dup]
    else:
        note(
            report,
            "duplicate_pairs_kept",
            int(dup.sum()),
            f"kept: the source's fixed splits are used as published; {conflicts} with conflicting labels",
            dropped=False,
        )
    return df.reset_index(drop=True)


def pair_components(pairs: pd.DataFrame) -> np.ndarray:
    """Connected component of each pair in the graph items → pairs (``int [P]``)."""
    ids = pd.Index(pd.unique(pd.concat([pairs["left_id"], pairs["right_id"]])))
    a, b = ids.get_indexer(pairs["left_id"]), ids.get_indexer(pairs["right_id"])
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(ids), len(ids)))
    _, labels = connected_components(graph, directed=False)
    return labels[a]


def split_pairs(
    pairs: pd.DataFrame,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 42,
    report: list[dict[str, Any]] | None = None,
) -> pd.DataFrame:
    """Train/validation/test split of pairs with no item on two sides.

    Pairs are grouped by the connected components of the item graph (two pairs sharing
    an item share a component), components are shuffled (seeded) and dealt to test until
    ``test_size`` of the pairs, then to validation until ``val_size`` of the rest (the
    seed system's 80/20, validation carved from train). Components larger than half a
    split's budget go to train. When that leaves the test split under half its target
    (one giant component), items are instead assigned to splits at random in those
    proportions and pairs whose two items landed in different splits are dropped and
    counted (``cross_split_pairs``).

    Returns:
        ``pairs`` with a ``split`` column (``train``/``val``/``test``).
    """
    report = report if report is not None else []
    rng = np.random.default_rng(seed)
    n = len(pairs)
    comp = pair_components(pairs)
    sizes = np.bincount(comp)
    test_target = test_size * n
    val_target = val_size * (n - test_target)
    assign = np.full(len(sizes), "train", dtype=object)
    counts = {"test": 0.0, "val": 0.0}
    for c in rng.permutation(len(sizes)):
        for split, target in (("test", test_target), ("val", val_target)):
            if counts[split] < target and sizes[c] <= max(1.0, 0.5 * target):
                assign[c] = split
                counts[split] += sizes[c]
                break
    if counts["test"] >= 0.5 * test_target and (
        val_target < 1 or counts["val"] >= 0.5 * val_target
    ):
        out = pairs.assign(split=assign[comp])
        note(report, "cross_split_pairs", 0, "split by connected components of the pair graph")
    else:
        ids = pd.unique(pd.concat([pairs["left_id"], pairs["right_id"]]))
        p = [(1 - test_size) * (1 - val_size), (1 - test_size) * val_size, test_size]
        item_split = pd.Series(
            rng.choice(np.array(SPLITS, dtype=object), size=len(ids), p=p), index=ids
        )
        ls = item_split.loc[pairs["left_id"]].to_numpy()
        rs = item_split.loc[pairs["right_id"]].to_numpy()
        same = ls == rs
        note(
            report,
            "cross_split_pairs",
            int((~same).sum()),
            f"the largest component holds {sizes.max()} of {n} pairs: items split at random, "
            "pairs across splits dropped",
        )
        out = pairs[same].assign(split=ls[same])
    return out.reset_index(drop=True)


def _report_split_sizes(pairs: pd.DataFrame, report: list[dict[str, Any]]) -> None:
    for split in SPLITS:
        part = pairs[pairs["split"] == split]
        note(
            report,
            f"pairs_{split}",
            len(part),
            f"{int(part['label'].sum())} positive",
            dropped=False,
        )
        if len(part) and part["label"].nunique() < 2:
            logger.warning(
                "pair_matching: the %s split holds one class only (%d pairs)", split, len(part)
            )


def finalise(data: PairData, params: dict[str, Any]) -> PairData:
    """Split the pairs when the source has no split; count items, pairs, positives."""
    report = data.report
    pairs = data.pairs
    if "split" not in pairs.columns:
        pairs = split_pairs(
            pairs,
            float(params.get("test_size", 0.2)),
            float(params.get("val_size", 0.1)),
            int(params.get("seed", 42)),
            report,
        )
    bad = set(pairs["split"].unique()) - set(SPLITS)
    if bad:
        raise ValueError(f"Unknown split values {sorted(bad)}; expected {list(SPLITS)}")
    note(
        report,
        "items",
        len(data.items),
        f"text {data.embeddings.text.shape[1]}-d, image {data.embeddings.image.shape[1]}-d",
        dropped=False,
    )
    note(report, "pairs", len(pairs), f"{int(pairs['label'].sum())} positive", dropped=False)
    _report_split_sizes(pairs, report)
    return PairData(
        items=data.items, embeddings=data.embeddings, pairs=pairs[PAIR_COLUMNS], report=report
    )


def index_items(items: pd.DataFrame) -> pd.DataFrame:
    """``items`` indexed by ``item_id`` as strings (what the feature builder looks up)."""
    return items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")
