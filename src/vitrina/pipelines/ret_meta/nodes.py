"""ret_meta nodes: the metadata file of seed 001's ``segment_meta_builder.py``, per group.

``ret_meta.json``::

    {"catalogue": "demo",
     "segmenter": {"name": "foreground", "version": "grabcut-1;..."},
     "groups": {"<group_id>": [
        {"product_id": "D000001", "image_path": "D000001.jpg", "status": "approved",
         "mask": {"score": 0.93, "area_fraction": 0.31, "bbox": [x0, y0, x1, y1],
                  "size": [height, width]},          # null: no mask from this segmenter
         "predictions": {"<task>": {"label": "...", "score": 0.97}}},   # {}: none given
        ...]}}

Groups are the products' ``group_id`` (colour variants of one model), images of a group in
product order; ``bbox`` is in pixels of the processed image, end exclusive.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from vitrina.models.segmentation import decode_rle, mask_bbox
from vitrina.store import ReviewStore

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("product_id", "task", "label", "score")


def _first_score(values: Any) -> float:
    """The first of ``;``-joined scores (classification inference's format), NaN if none."""
    text = "" if pd.isna(values) else str(values)
    return float(text.split(";", 1)[0]) if text else float("nan")


def prediction_rows(task: str, predictions: pd.DataFrame) -> pd.DataFrame:
    """One task's classification predictions (``{task}.classification_predictions``) as
    :data:`PREDICTION_COLUMNS` rows, one per scored product image.

    The label and score by kind (:mod:`vitrina.models.classifiers.inference`): multiclass
    ``label_1``/``prob_1`` (the top class); multilabel ``labels`` (the ``|``-joined tags
    over their thresholds) with the highest tag probability (tags of no class: label ``""``);
    metric learning ``label`` with the nearest gallery item's cosine similarity. Rows whose
    image failed (``status`` not ``ok``) or with no product id are left out.

    Raises:
        ValueError: a table with none of the three kinds' columns.
    """
    ok = predictions
    if "status" in ok.columns:
        ok = ok[ok["status"] == "ok"]
    ok = ok[ok["product_id"].notna()] if "product_id" in ok.columns else ok.iloc[0:0]
    if "label_1" in ok.columns:
        label, score = ok["label_1"], ok["prob_1"].astype(float)
    elif "labels" in ok.columns:
        label = ok["labels"].fillna("")
        score = ok["scores"].map(
            lambda v: max(map(float, str(v).split(";"))) if isinstance(v, str) and v else 0.0
        )
    elif "similarities" in ok.columns:
        label, score = ok["label"], ok["similarities"].map(_first_score)
    else:
        raise ValueError(
            f"predictions of task {task!r} have none of label_1/labels/similarities; "
            f"columns: {sorted(predictions.columns)}"
        )
    return pd.DataFrame(
        {"product_id": ok["product_id"].astype(str), "task": task, "label": label, "score": score}
    ).reset_index(drop=True)


def collect_predictions(tasks: list[str]) -> Callable[..., pd.DataFrame]:
    """The node function for ``tasks``: it takes their prediction tables (in the order of
    ``tasks``) and returns one :data:`PREDICTION_COLUMNS` table, the input of
    :func:`build_ret_meta` (an empty one for no tasks)."""

    def collect_ret_meta_predictions(*tables: pd.DataFrame) -> pd.DataFrame:
        rows = [prediction_rows(task, table) for task, table in zip(tasks, tables, strict=True)]
        if not rows:
            return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
        return pd.concat(rows, ignore_index=True)

    return collect_ret_meta_predictions


def _predictions(predictions: pd.DataFrame | None) -> dict[str, dict[str, dict[str, Any]]]:
    """``{product_id: {task: {label, score}}}``, the best-scored label per product and task."""
    if predictions is None or len(predictions) == 0:
        return {}
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}; expected {list(PREDICTION_COLUMNS)}")
    best = predictions.sort_values("score", ascending=False).drop_duplicates(["product_id", "task"])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for pid, task, label, score in best[list(PREDICTION_COLUMNS)].itertuples(index=False):
        out.setdefault(str(pid), {})[str(task)] = {"label": str(label), "score": float(score)}
    return out


def build_ret_meta(
    products: pd.DataFrame,
    review_store: ReviewStore,
    segmentation_metrics: dict[str, Any],
    params: dict[str, Any],
    predictions: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Build ``ret_meta``: per group, each image's status, mask summary and predictions.

    Args:
        products: ``product_id`` and ``group_id`` (products without ``group_id`` are
            their own group).
        review_store: The review database (image rows and masks).
        segmentation_metrics: The segmentation run's ``segmenter`` and
            ``segmenter_version``: whose masks are summarised.
        params: ``ret_meta``: ``catalogue``, ``groups`` (list of group ids, or null: all).
        predictions: Optional ``product_id, task, label, score`` (classification
            inference); none: every ``predictions`` field is ``{}``.

    Returns:
        The JSON-ready dict described in the module docstring.

    Raises:
        ValueError: ``predictions`` lacks a column.
    """
    catalogue = params["catalogue"]
    preds = _predictions(predictions)
    groups_of = products.set_index("product_id")["group_id"] if "group_id" in products else None
    images = review_store.images(catalogue)
    masks = review_store.masks(
        catalogue, segmentation_metrics["segmenter"], segmentation_metrics["segmenter_version"]
    ).set_index("image_id")
    order = {pid: i for i, pid in enumerate(products["product_id"])}
    images = images[images["product_id"].isin(order)]
    images = images.assign(_order=images["product_id"].map(order)).sort_values(
        ["_order", "image_id"]
    )
    wanted = params.get("groups")
    wanted = None if wanted is None else {str(g) for g in wanted}
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in images.itertuples(index=False):
        group = str(groups_of[row.product_id]) if groups_of is not None else str(row.product_id)
        if wanted is not None and group not in wanted:
            continue
        mask = None
        if row.image_id in masks.index:
            m = masks.loc[row.image_id]
            decoded = decode_rle(m["rle"])
            mask = {
                "score": None if pd.isna(m["score"]) else round(float(m["score"]), 4),
                "area_fraction": round(float(m["area_fraction"]), 4),
                "bbox": mask_bbox(decoded),
                "size": list(decoded.shape),
            }
        groups.setdefault(group, []).append(
            {
                "product_id": row.product_id,
                "image_path": row.image_path,
                "status": row.status,
                "mask": mask,
                "predictions": preds.get(str(row.product_id), {}),
            }
        )
    logger.info(
        "ret_meta: %d groups, %d images, %d with predictions",
        len(groups), sum(map(len, groups.values())), len(preds),
    )  # fmt: skip
    return {
        "catalogue": catalogue,
        "segmenter": {
            "name": segmentation_metrics["segmenter"],
            "version": segmentation_metrics["segmenter_version"],
        },
        "groups": groups,
    }


def summarise_review(status_counts: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Review progress of ``params["catalogue"]``: ``status, n_images, share`` for every
    status of :data:`vitrina.store.STATUSES` (zero where none), from the SQL dataset
    ``review_status_counts`` (``catalogue, status, n_images``)."""
    from vitrina.store import STATUSES

    mine = status_counts[status_counts["catalogue"] == params["catalogue"]]
    counts = mine.set_index("status")["n_images"].astype(int)
    summary = pd.DataFrame({"status": list(STATUSES)})
    summary["n_images"] = summary["status"].map(counts).fillna(0).astype(int)
    total = int(summary["n_images"].sum())
    summary["share"] = summary["n_images"] / total if total else 0.0
    logger.info("review of %s: %s", params["catalogue"],
                dict(zip(summary["status"], summary["n_images"], strict=True)))  # fmt: skip
    return summary


def select_groups(ret_meta: dict[str, Any], groups: list[str] | None) -> dict[str, Any]:
    """``ret_meta`` cut to ``groups`` (seed 001's ``post_ret_meta.py --groups``); None: all.

    Raises:
        ValueError: a requested group is not in ``ret_meta``.
    """
    if groups is None:
        return ret_meta
    unknown = [g for g in map(str, groups) if g not in ret_meta["groups"]]
    if unknown:
        raise ValueError(f"ret_meta.post_groups: {unknown} not in ret_meta's groups")
    return {**ret_meta, "groups": {g: ret_meta["groups"][g] for g in map(str, groups)}}
