"""Captioning items and splits: products with an image and a description, deduplicated,
whole groups to train/validation/test (shared by the captioning pipeline and its tuning
target, so both train on exactly the same data)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_COLUMNS = ["product_id", "group_id", "description", "processed_path", "split"]
DATA_REPORT_COLUMNS = ["reason", "n_rows"]


def normalise_text(values: pd.Series) -> pd.Series:
    """Strip and collapse whitespace; empty strings become missing (``<NA>``)."""
    text = values.astype("string").str.split().str.join(" ")
    return text.mask(text.fillna("").eq(""))


def grouped_split(
    groups: pd.Series, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """Assign whole groups to ``train``/``validation``/``test`` in the given proportions.

    Groups are shuffled with ``seed`` and laid end to end; a group goes to the split in
    which the middle of its run of items falls, so item shares track ``fractions`` and no
    group straddles two splits. With at least three groups every split gets one.

    Args:
        groups: group id per item.
        fractions: shares of train, validation and test (normalised to sum 1).
        seed: shuffling seed.

    Returns:
        ``object`` array of split names, one per item.

    Raises:
        ValueError: a negative fraction, or all fractions zero.
    """
    frac = np.asarray(fractions, dtype=float)
    if (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0, got {list(fractions)}")
    frac = frac / frac.sum()
    keys = groups.astype(str).to_numpy()
    uniq, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    mids = (np.cumsum(sizes[order]) - sizes[order] / 2) / sizes.sum()
    bounds = np.cumsum(frac)[:-1]
    split_of_group = np.empty(len(uniq), dtype=object)
    split_of_group[order] = np.asarray(SPLITS, dtype=object)[np.searchsorted(bounds, mids)]
    if len(uniq) >= 3:
        # every split non-empty: move the last groups of the shuffled order if needed
        for k, name in enumerate(SPLITS):
            if frac[k] > 0 and not (split_of_group == name).any():
                donor = max(SPLITS, key=lambda s: (split_of_group == s).sum())
                g = order[::-1][np.flatnonzero(split_of_group[order[::-1]] == donor)[0]]
                split_of_group[g] = name
    return split_of_group[inverse]


def make_captioning_splits(
    products: pd.DataFrame, image_manifest: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Items with an image and a description, duplicates removed, split by group.

    As the seed system: items without a description or a processed image are dropped,
    then every description that appears more than once is kept only once (the first
    product in catalogue order; whitespace is normalised before comparing), then groups
    (``group_id``) are split train/validation/test (default 80/10/10).

    Args:
        products: canonical products (``product_id``, ``description``, ``group_id``).
        image_manifest: processed images (``product_id``, ``processed_path``).
        params: ``captioning`` parameters (``data.split``, ``data.seed``,
            ``data.max_items``).

    Returns:
        ``captioning_splits`` (:data:`SPLIT_COLUMNS`) and ``captioning_data_report``
        (``reason, n_rows``: dropped rows per reason and kept rows per split).

    Raises:
        ValueError: no item survives (no product has both a description and an image).
    """
    data = params.get("data") or {}
    seed = int(data.get("seed", 42))
    df = products[["product_id", "group_id", "description"]].merge(
        image_manifest[["product_id", "processed_path"]], on="product_id", how="left"
    )
    df["description"] = normalise_text(df["description"])
    df["group_id"] = df["group_id"].astype("string").fillna(df["product_id"].astype("string"))
    report = {"input": len(df)}
    no_description = df["description"].isna()
    report["missing_description"] = int(no_description.sum())
    df = df[~no_description]
    no_image = df["processed_path"].isna()
    report["missing_image"] = int(no_image.sum())
    df = df[~no_image]
    dup = df["description"].duplicated(keep="first")
    report["duplicate_description"] = int(dup.sum())
    df = df[~dup]
    max_items = data.get("max_items")
    if max_items and len(df) > int(max_items):
        keep = np.sort(np.random.default_rng(seed).choice(len(df), int(max_items), replace=False))
        report["over_max_items"] = len(df) - int(max_items)
        df = df.iloc[keep]
    if df.empty:
        raise ValueError(
            f"No product has both a description and a processed image ({report}): check "
            "the products table and rerun `kedro run --pipeline=image_processing`"
        )
    fractions = tuple(data.get("split", (0.8, 0.1, 0.1)))
    df = df.assign(split=grouped_split(df["group_id"], fractions, seed)).reset_index(drop=True)
    for name in SPLITS:
        report[f"kept_{name}"] = int((df["split"] == name).sum())
    logger.info(
        "captioning data: %d products -> %d items (%d without description, %d without image, "
        "%d duplicate descriptions); train/validation/test %d/%d/%d",
        report["input"],
        len(df),
        report["missing_description"],
        report["missing_image"],
        report["duplicate_description"],
        report["kept_train"],
        report["kept_validation"],
        report["kept_test"],
    )
    report_df = pd.DataFrame(
        {"reason": list(report), "n_rows": [int(v) for v in report.values()]},
        columns=DATA_REPORT_COLUMNS,
    )
    return df[SPLIT_COLUMNS], report_df


def split_rows(splits: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of split ``name`` (``train``, ``validation``, ``test``), re-indexed."""
    return splits[splits["split"] == name].reset_index(drop=True)
