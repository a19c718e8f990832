"""Grouped, stratified splits: the one place the pipelines take their splits from.

Three procedures, each kept for a reason its docstring gives; all keep groups whole
(colour variants of one product never straddle two parts):

- :func:`stratified_group_split`: train / validation / test at arbitrary fractions,
  single- or multi-label (classification);
- :func:`class_group_holdout` and :func:`make_probing_splits`: probing's per-task
  train / test split, class by class (probing, and the probing tuning targets);
- :func:`validation_split`: a validation part carved from a training split with
  scikit-learn's ``StratifiedGroupKFold`` (the probes' C sweep and MLP, tuning).

``scikit-learn``'s ``StratifiedGroupKFold`` gives folds of ``1/k`` only and handles one
label per row; classification needs three parts at arbitrary fractions and multi-hot
labels too. :func:`stratified_group_split` is iterative stratification (Sechidis,
Tsoumakas and Vlahavas, "On the Stratification of Multi-Label Data", ECML PKDD 2011)
applied to whole groups: groups are taken largest first (ties in a seeded random order)
and each goes to the part whose label counts fall furthest short of their targets, so no
group ever straddles two parts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

logger = logging.getLogger(__name__)


def stratified_group_split(
    labels: np.ndarray,
    groups: pd.Series | np.ndarray,
    fractions: Mapping[str, float],
    seed: int = 42,
) -> np.ndarray:
    """Assign every row to a part, keeping groups whole and labels balanced.

    Args:
        labels: ``[N]`` class labels, or ``[N, L]`` multi-hot (0/1) rows.
        groups: ``[N]`` group ids (rows of one group always land in the same part).
        fractions: ``{part name: fraction}``, fractions > 0 summing to 1.
        seed: order of equally sized groups.

    Returns:
        ``object [N]`` array of part names.

    Raises:
        ValueError: fractions that are not positive or do not sum to 1, or length mismatch.
    """
    names = list(fractions)
    shares = np.asarray([float(fractions[n]) for n in names])
    if (shares <= 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions must be > 0 and sum to 1, got {dict(fractions)}")
    labels = np.asarray(labels)
    if labels.ndim == 1:
        codes, uniques = pd.factorize(pd.Series(labels).astype(str))
        onehot = np.zeros((len(labels), len(uniques)), dtype=np.float64)
        onehot[np.arange(len(labels)), codes] = 1.0
    else:
        onehot = labels.astype(np.float64)
    groups = np.asarray(groups).astype(str)
    if len(groups) != len(onehot):
        raise ValueError(f"{len(onehot)} label rows but {len(groups)} group ids")
    group_codes, group_names = pd.factorize(groups)
    n_groups = len(group_names)
    hist = np.zeros((n_groups, onehot.shape[1]))
    np.add.at(hist, group_codes, onehot)
    size = np.bincount(group_codes, minlength=n_groups)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(n_groups), -size))
    target = shares[:, None] * hist.sum(0)[None, :]  # [parts, labels]
    target_rows = shares * len(groups)
    have = np.zeros_like(target)
    have_rows = np.zeros(len(names))
    assigned = np.empty(n_groups, dtype=np.int64)
    for g in order:
        deficit = ((target - have) * (hist[g] > 0)).sum(1)
        # Label deficits first; the row deficit breaks ties (and places unlabelled groups).
        score = deficit + 1e-6 * (target_rows - have_rows)
        part = int(np.argmax(score))
        assigned[g] = part
        have[part] += hist[g]
        have_rows[part] += size[g]
    return np.asarray(names, dtype=object)[assigned[group_codes]]


def validation_split(
    y: np.ndarray, groups: np.ndarray, share: float = 0.2, seed: int = 0
) -> np.ndarray:
    """Boolean mask ``[N]`` of a validation part carved from a training split.

    Stratified by ``y`` and grouped by ``groups`` (``StratifiedGroupKFold`` with
    ``round(1 / share)`` folds, the first fold is validation), so no group straddles it.
    """
    classes, counts = np.unique(y, return_counts=True)
    n_folds = max(2, min(round(1.0 / share), int(counts.min()), len(np.unique(groups))))
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    _, val_idx = next(folds.split(np.zeros(len(y)), y, groups=groups))
    mask = np.zeros(len(y), dtype=bool)
    mask[val_idx] = True
    return mask


SPLIT_COLUMNS = ["task", "product_id", "group_id", "label", "split"]
TASK_REPORT_COLUMNS = [
    "task",
    "status",
    "n_products",
    "n_classes",
    "n_dropped_classes",
    "n_dropped_products",
    "detail",
]


def _task_labels(products: pd.DataFrame, spec: dict[str, Any]) -> pd.Series:
    values = products[spec["label"]].astype("string").str.strip().str.lower()
    classes = spec.get("classes")
    if classes is not None:
        values = values.where(values.isin([str(c).lower() for c in classes]))
    return values


def class_group_holdout(
    labels: np.ndarray, groups: np.ndarray, test_size: float, seed: int
) -> np.ndarray:
    """A test mask holding ``test_size`` of every class's items, whole groups only.

    Probing's train/test split, kept beside :func:`stratified_group_split` on purpose: it
    is single-label and decides class by class (each class gets the share closest to
    ``test_size`` on its own, at least one group on each side), which a linear probe's
    per-class metrics need even for rare classes, whereas the iterative stratification
    balances all labels (multi-hot included) jointly over three parts. The probing splits
    written so far, and the results measured on them, depend on this exact procedure.

    scikit-learn has grouped (``GroupShuffleSplit``) and stratified-grouped k-fold
    (``StratifiedGroupKFold``, which can only give 1/k) splits, but no stratified grouped
    split at a given fraction. Here each group takes its most frequent label; per label,
    the groups are shuffled (seeded) and the shortest prefix whose item count is closest
    to ``test_size`` of the label's items goes to test, keeping at least one group on each
    side when the label has two or more.

    Args:
        labels, groups: ``[N]`` arrays (any hashable values).
        test_size: fraction of items in test, ``0 < test_size < 1``.
        seed: shuffling seed.

    Returns:
        bool ``[N]``, True for test items.

    Raises:
        ValueError: ``test_size`` outside (0, 1).
    """
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction, 0 < test_size < 1; got {test_size}")
    frame = pd.DataFrame({"label": labels, "group": groups})
    sizes = frame.groupby("group", sort=True).agg(
        n=("label", "size"), label=("label", lambda v: v.value_counts().index[0])
    )
    rng = np.random.default_rng(seed)
    test_groups: list[Any] = []
    for _, class_groups in sizes.groupby("label", sort=True):
        order = class_groups.iloc[rng.permutation(len(class_groups))]
        cumulative = order["n"].cumsum().to_numpy()
        target = test_size * cumulative[-1]
        k = int(np.argmin(np.abs(cumulative - target))) + 1
        if len(order) >= 2:
            k = min(max(k, 1), len(order) - 1)
        test_groups += list(order.index[:k])
    return frame["group"].isin(test_groups).to_numpy()


def make_probing_splits(
    products: pd.DataFrame, image_manifest: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per task, the labelled products and a train/test split shared by every model.

    The split is stratified by label and grouped by ``group_id``
    (:func:`class_group_holdout`: ``test_size`` of each class's products, whole groups
    only), so colour variants of one product never sit on both sides. Only products with a
    processed image take part. A task is skipped, with the reason logged and reported,
    when its label column is absent or fewer than two classes survive; a class is dropped
    (and counted) when it has fewer than ``min_class_size`` products or fewer than two
    groups (it could not reach both splits).

    Args:
        products: canonical products.
        image_manifest: processed images (``product_id``).
        params: ``probing`` parameters (``tasks``, ``test_size``, ``min_class_size``,
            ``seed``).

    Returns:
        ``probing_splits`` (``task, product_id, group_id, label, split`` with split in
        ``train``/``test``) and ``probing_task_report`` (one row per task: ``status``
        ``ok``/``skipped``, counts, ``detail``).
    """
    eligible = products[products["product_id"].isin(image_manifest["product_id"])]
    test_size = float(params.get("test_size", 0.2))
    if not 0 < test_size < 1:
        raise ValueError(
            f"probing.test_size must be a fraction, 0 < test_size < 1; got {test_size}"
        )
    min_size = int(params.get("min_class_size", 10))
    splits, report = [], []
    for task, spec in params["tasks"].items():
        if spec["label"] not in eligible.columns:
            detail = f"label column {spec['label']!r} is not in this catalogue"
            logger.warning("probing: task %s skipped: %s", task, detail)
            report.append(
                {
                    "task": task,
                    "status": "skipped",
                    "n_products": 0,
                    "n_classes": 0,
                    "n_dropped_classes": 0,
                    "n_dropped_products": 0,
                    "detail": detail,
                }
            )
            continue
        labels = _task_labels(eligible, spec)
        df = eligible.assign(label=labels)[["product_id", "group_id", "label"]].dropna(
            subset=["label"]
        )
        sizes = df.groupby("label").agg(n=("product_id", "size"), groups=("group_id", "nunique"))
        small = sizes[(sizes["n"] < min_size) | (sizes["groups"] < 2)]
        dropped_products = int(small["n"].sum())
        df = df[~df["label"].isin(small.index)]
        kept = sorted(df["label"].unique())
        row = {
            "task": task,
            "n_classes": len(kept),
            "n_dropped_classes": len(small),
            "n_dropped_products": dropped_products,
        }
        if len(small):
            logger.info(
                "probing: task %s drops %d classes too small to split (%d products): %s",
                task,
                len(small),
                dropped_products,
                list(small.index)[:10],
            )
        if len(kept) < 2:
            detail = (
                f"fewer than 2 classes with >= {min_size} products in >= 2 groups (have {kept})"
            )
            logger.warning("probing: task %s skipped: %s", task, detail)
            report.append({**row, "status": "skipped", "n_products": len(df), "detail": detail})
            continue
        is_test = class_group_holdout(
            df["label"].to_numpy(),
            df["group_id"].to_numpy(),
            test_size,
            int(params.get("seed", 42)),
        )
        split = np.where(is_test, "test", "train").astype(object)
        splits.append(df.assign(task=task, split=split))
        report.append(
            {
                **row,
                "status": "ok",
                "n_products": len(df),
                "detail": f"{int((~is_test).sum())} train / {int(is_test.sum())} test",
            }
        )
    out = (
        pd.concat(splits, ignore_index=True)[SPLIT_COLUMNS]
        if splits
        else pd.DataFrame(columns=SPLIT_COLUMNS)
    )
    return out, pd.DataFrame(report, columns=TASK_REPORT_COLUMNS)
