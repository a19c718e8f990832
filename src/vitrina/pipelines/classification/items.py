"""Node: the labelled, split items of one classification task."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from vitrina.models.classifiers.labels import (
    TAG_SEPARATOR,
    label_columns,
    multi_hot,
    row_tags,
    single_labels,
)
from vitrina.splits import stratified_group_split

logger = logging.getLogger(__name__)

ITEM_COLUMNS = ["product_id", "image_path", "group_id", "target", "split"]
REPORT_COLUMNS = [
    "task", "kind", "status", "n_items", "n_classes", "n_dropped_classes",
    "n_dropped_items", "n_train", "n_validation", "n_test", "detail",
]  # fmt: skip
#: Values of a catalogue ``split`` column (seed 004 layouts) and the part they mean.
PREDEFINED_SPLITS = {"train": "train", "val": "validation", "validation": "validation",
                     "test": "test", "base": "test"}  # fmt: skip


def _report(task: str, kind: str, **values: Any) -> pd.DataFrame:
    row = {"task": task, "kind": kind, **values}
    return pd.DataFrame([{c: row.get(c, 0 if c.startswith("n_") else "") for c in REPORT_COLUMNS}])


def _split_fractions(params: dict[str, Any]) -> dict[str, float]:
    split = params.get("split") or {}
    val, test = float(split.get("validation", 0.15)), float(split.get("test", 0.2))
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise ValueError(
            f"classification.split: validation={val} and test={test} must each be in (0, 1) "
            "and sum to less than 1"
        )
    return {"train": 1.0 - val - test, "validation": val, "test": test}


def prepare_items(
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    task: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled items of one task, split train / validation / test, and a task report.

    Only products with a processed image take part. Classes too small to split (fewer
    than ``min_class_size`` items, or fewer than 3 groups for classifiers) are dropped and
    counted, as probing does. Multiclass and multilabel splits are stratified and grouped
    by ``group_id`` (:func:`vitrina.splits.stratified_group_split`); metric learning holds
    out whole classes (``held_out_classes`` fractions), so validation and test classes
    are never seen in training. A catalogue ``split`` column (seed 004 layouts) is used
    when present: validation is carved from its train part, and test items whose class
    is unseen in training are dropped and counted.

    Args:
        products: canonical products (``product_id``, ``group_id``, label columns).
        image_manifest: processed images (``product_id``, ``processed_path``).
        task: the task's parameters (``name``, ``kind``, ``label``/``labels``/``label_list``).
        params: ``classification`` parameters (``split``, ``min_class_size``, ``seed``).

    Returns:
        ``items`` (``product_id, image_path, group_id, target, split``; multilabel targets
        are ``|``-joined tags) and a one-row ``task report``.

    Raises:
        ValueError: a label column the catalogue lacks (naming it and the columns there
            are), or fewer than 2 classes left.
    """
    name, kind = task["name"], task["kind"]
    columns = label_columns(task, list(products.columns))
    missing = [c for c in columns if c not in products.columns]
    if missing:
        raise ValueError(
            f"classification task {name!r}: label column(s) {missing} not in products; "
            f"the catalogue has {sorted(products.columns)}"
        )
    paths = image_manifest.set_index("product_id")["processed_path"]
    frame = products[products["product_id"].isin(paths.index)].copy()
    frame["image_path"] = frame["product_id"].map(paths).astype(str)
    frame["group_id"] = frame.get("group_id", frame["product_id"]).astype(str)
    min_size = int(task.get("min_class_size", params.get("min_class_size", 10)))
    seed = int(params.get("seed", 42))
    predefined = "split" in frame.columns and frame["split"].notna().any()
    n_before = len(frame)
    if kind == "multilabel":
        frame["target"] = row_tags(frame, task)
        counts = pd.Series(
            [t for v in frame["target"] for t in v.split(TAG_SEPARATOR) if t]
        ).value_counts()
        small = counts[counts < min_size]
        keep = set(counts.index) - set(small.index)
        frame["target"] = frame["target"].map(
            lambda v: TAG_SEPARATOR.join(t for t in v.split(TAG_SEPARATOR) if t in keep)
        )
        empty = frame["target"] == ""
        if empty.any():
            logger.info(
                "classification %s: %d items with no positive label dropped", name, int(empty.sum())
            )
        frame = frame[~empty]
        n_classes, n_small = len(keep), len(small)
    else:
        frame["target"] = single_labels(frame, columns[0])
        frame = frame.dropna(subset=["target"])
        sizes = frame.groupby("target").agg(
            n=("product_id", "size"), groups=("group_id", "nunique")
        )
        min_groups = 1 if kind == "metric_learning" else 3
        small = sizes[(sizes["n"] < min_size) | (sizes["groups"] < min_groups)]
        frame = frame[~frame["target"].isin(small.index)]
        n_classes, n_small = frame["target"].nunique(), len(small)
    if n_small:
        logger.info("classification %s: %d classes too small to split dropped", name, n_small)
    if n_classes < 2:
        raise ValueError(
            f"classification task {name!r}: {n_classes} class(es) left with >= {min_size} items "
            f"({n_small} dropped as too small); a task needs at least 2"
        )
    if predefined:
        frame["split"] = _predefined(frame, kind, params, seed)
    elif kind == "metric_learning":
        frame["split"] = _held_out_classes(frame["target"], task, seed)
    else:
        labels = (
            multi_hot(frame["target"], sorted(keep))
            if kind == "multilabel"
            else frame["target"].to_numpy()
        )
        frame["split"] = stratified_group_split(
            labels, frame["group_id"], _split_fractions(params), seed
        )
    unseen = _unseen_in_training(frame, kind)
    if unseen.any():
        logger.info(
            "classification %s: %d evaluation items of classes unseen in training dropped",
            name,
            int(unseen.sum()),
        )
        frame = frame[~unseen]
    items = frame[ITEM_COLUMNS].reset_index(drop=True)
    counts = items["split"].value_counts()
    report = _report(
        name, kind, status="ok", n_items=len(items), n_classes=n_classes, n_dropped_classes=n_small,
        n_dropped_items=n_before - len(items), n_train=int(counts.get("train", 0)),
        n_validation=int(counts.get("validation", 0)), n_test=int(counts.get("test", 0)),
        detail="predefined split" if predefined else "",
    )  # fmt: skip
    logger.info("classification %s: %s", name, report.iloc[0].to_dict())
    return items, report


def _predefined(frame: pd.DataFrame, kind: str, params: dict[str, Any], seed: int) -> np.ndarray:
    split = frame["split"].astype(str).str.lower().map(PREDEFINED_SPLITS)
    if split.isna().any():
        bad = sorted(set(frame.loc[split.isna(), "split"].astype(str)))
        raise ValueError(f"split column values {bad} are not among {sorted(PREDEFINED_SPLITS)}")
    split = split.to_numpy(dtype=object)
    if kind != "metric_learning" and not (split == "validation").any():
        train = split == "train"
        fractions = _split_fractions(params)
        val_share = fractions["validation"] / (fractions["train"] + fractions["validation"])
        sub = stratified_group_split(
            frame.loc[train, "target"].to_numpy(), frame.loc[train, "group_id"],
            {"train": 1 - val_share, "validation": val_share}, seed,
        )  # fmt: skip
        split[train] = sub
    return split


def _held_out_classes(targets: pd.Series, task: dict[str, Any], seed: int) -> np.ndarray:
    held = task.get("held_out_classes") or {}
    val, test = float(held.get("validation", 0.2)), float(held.get("test", 0.3))
    classes = np.array(sorted(targets.unique()))
    order = np.random.default_rng(seed).permutation(len(classes))
    n_test = max(1, int(round(test * len(classes))))
    n_val = max(1, int(round(val * len(classes))))
    if len(classes) - n_test - n_val < 2:
        raise ValueError(
            f"metric learning task {task['name']!r}: {len(classes)} classes cannot give "
            f"{n_val} validation and {n_test} test classes and still train on 2"
        )
    part = {c: "test" for c in classes[order[:n_test]]}
    part.update({c: "validation" for c in classes[order[n_test : n_test + n_val]]})
    return targets.map(lambda c: part.get(c, "train")).to_numpy(dtype=object)


def _unseen_in_training(frame: pd.DataFrame, kind: str) -> pd.Series:
    if kind == "metric_learning":
        return pd.Series(False, index=frame.index)
    train = frame["split"] == "train"
    if kind == "multilabel":
        seen = {t for v in frame.loc[train, "target"] for t in v.split(TAG_SEPARATOR)}
        frame["target"] = frame["target"].map(
            lambda v: TAG_SEPARATOR.join(t for t in v.split(TAG_SEPARATOR) if t in seen)
        )
        return (frame["target"] == "") & ~train
    seen = set(frame.loc[train, "target"])
    return ~frame["target"].isin(seen) & ~train
