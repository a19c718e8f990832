"""The (image, title) pairs of contrastive fine-tuning, and their train/validation split.

Pure table functions, shared by the ``clip_finetune`` pipeline and its tuning target:
:func:`make_finetune_pairs` (products × processed images, empty titles left out,
identical images found by content hash), :func:`split_finetune_pairs` (grouped, seeded)
and :func:`data_digest` (what a checkpoint was trained on).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from .config import ClipFinetuneConfig

logger = logging.getLogger(__name__)

PAIR_COLUMNS = [
    "product_id",
    "title",
    "processed_path",
    "group_id",
    "image_key",
    "text_key",
    "split_group",
]


def file_digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read()).hexdigest()


def union_groups(groups: pd.Series, image_keys: pd.Series) -> pd.Series:
    """Connected components of "same group" ∪ "same image": one split group each."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g, k in zip(groups, image_keys, strict=True):
        a, b = find(f"g:{g}"), find(f"i:{k}")
        if a != b:
            parent[b] = a
    return pd.Series([find(f"g:{g}") for g in groups], index=groups.index).str[2:]


def make_finetune_pairs(
    products: pd.DataFrame, image_manifest: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """(processed image, title) pairs of every product that has both.

    Products whose title is empty after ingestion (blank or whitespace) are left out and
    counted in the log.  Byte-identical processed images are found by content hash: when
    they carry different titles (H&M has 28 such groups) they are kept, logged, put in one
    split group (never on both sides of the split) and, by their shared ``image_key``,
    count as matches of each other in the loss and the recall.

    Args:
        products: canonical products (``product_id``, ``group_id``, the text field).
        image_manifest: image_processing output (``product_id``, ``processed_path``).
        params: ``clip_finetune`` parameters (``text_field``, default ``title``).

    Returns:
        ``product_id, title, processed_path, group_id, image_key`` (SHA-1 of the processed
        image), ``text_key`` (lower-cased title, spaces collapsed), ``split_group`` (groups
        joined through shared images); one row per product, in products order.

    Raises:
        KeyError: the text field is not a products column.
        ValueError: fewer than 2 products have both a processed image and a title.
    """
    field = params.get("text_field", "title")
    if field not in products.columns:
        raise KeyError(
            f"clip_finetune.text_field {field!r} is not a products column; columns: "
            f"{list(products.columns)}"
        )
    df = products[["product_id", field, "group_id"]].merge(
        image_manifest[["product_id", "processed_path"]], on="product_id", how="inner"
    )
    df = df.rename(columns={field: "title"})
    title = df["title"].astype("string").str.strip()
    empty = title.isna() | (title == "")
    if empty.any():
        logger.warning(
            "clip_finetune: %d products have an empty %s after ingestion and are left out of "
            "fine-tuning (e.g. %s)",
            int(empty.sum()),
            field,
            df.loc[empty, "product_id"].head(5).tolist(),
        )
    df = df[~empty].assign(title=title[~empty].astype(str)).reset_index(drop=True)
    if len(df) < 2:
        raise ValueError(
            f"clip_finetune needs at least 2 products with a processed image and a non-empty "
            f"{field}, got {len(df)} (products {len(products)}, processed images "
            f"{len(image_manifest)}, empty {field}s {int(empty.sum())})"
        )
    df["group_id"] = df["group_id"].astype(str)
    df["image_key"] = [file_digest(p) for p in df["processed_path"]]
    df["text_key"] = df["title"].str.lower().str.split().str.join(" ")
    titles_per_image = df.groupby("image_key")["text_key"].nunique()
    conflicting = titles_per_image[titles_per_image > 1]
    if len(conflicting):
        dup = df[df["image_key"].isin(conflicting.index)]
        examples = [
            " / ".join(f"{r.product_id} {r.title!r}" for r in g.head(2).itertuples())
            for _, g in list(dup.groupby("image_key"))[:3]
        ]
        logger.warning(
            "clip_finetune: %d identical images are shared by %d products with different "
            "titles (e.g. %s); they stay in one split and count as matches of each other",
            len(conflicting),
            len(dup),
            "; ".join(examples),
        )
    df["split_group"] = union_groups(df["group_id"], df["image_key"])
    return df[PAIR_COLUMNS]


def split_finetune_pairs(pairs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Train/validation split grouped by ``split_group`` (colour variants and identical
    images never straddle it), seeded by ``split_seed``.

    Args:
        pairs: output of :func:`make_finetune_pairs`.
        params: ``clip_finetune`` parameters (``val_size`` fraction, ``split_seed``,
            ``train.recall_ks``).

    Returns:
        ``pairs`` with a ``split`` column (``train`` / ``val``).

    Raises:
        ValueError: the validation split has fewer pairs than the largest k of recall@k,
            or the training split fewer than 2 pairs.
    """
    val_size = float(params.get("val_size", 0.2))
    if not 0 < val_size < 1:
        raise ValueError(f"clip_finetune.val_size must be in (0, 1), got {val_size}")
    ks = ClipFinetuneConfig.from_params(params.get("train")).options.recall_ks
    split = np.full(len(pairs), "train", dtype=object)
    if pairs["split_group"].nunique() >= 2:
        splitter = GroupShuffleSplit(
            n_splits=1, test_size=val_size, random_state=int(params.get("split_seed", 42))
        )
        _, val_idx = next(splitter.split(pairs, groups=pairs["split_group"]))
        split[val_idx] = "val"
    out = pairs.assign(split=split)
    n_val, n_train = int((split == "val").sum()), int((split == "train").sum())
    if n_val < ks[-1]:
        raise ValueError(
            f"clip_finetune: the validation split has {n_val} pairs ({len(pairs)} pairs in "
            f"{pairs['split_group'].nunique()} groups, val_size {val_size}), too few for "
            f"recall@{ks[-1]}: add products, raise clip_finetune.val_size or lower "
            "clip_finetune.train.recall_ks"
        )
    if n_train < 2:
        raise ValueError(
            f"clip_finetune: the training split has {n_train} pairs; contrastive training "
            "needs at least 2 (lower clip_finetune.val_size or add products)"
        )
    if n_val < 100:
        logger.warning(
            "clip_finetune: recall@k on %d validation pairs is noisy (one pair = %.1f points)",
            n_val,
            100 / n_val,
        )
    logger.info("clip_finetune: %d train / %d validation pairs", n_train, n_val)
    return out


def data_digest(pairs: pd.DataFrame) -> str:
    """SHA-1 of what training reads from a split pairs table (ids, titles, keys, split)."""
    cols = ["product_id", "title", "image_key", "text_key", "split"]
    payload = pd.util.hash_pandas_object(pairs[cols], index=False).to_numpy().tobytes()
    return hashlib.sha1(payload).hexdigest()


__all__ = [
    "PAIR_COLUMNS",
    "data_digest",
    "file_digest",
    "make_finetune_pairs",
    "split_finetune_pairs",
    "union_groups",
]
