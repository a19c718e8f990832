"""Nodes: what people look at — training batches, curves, confusion, metrics, summary."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from vitrina.models.classifiers.labels import TAG_SEPARATOR  # noqa: E402
from vitrina.training.data import decode_images, epoch_order  # noqa: E402

from .nodes import METRIC_COLUMNS, task_settings  # noqa: E402


def plot_train_batches(
    items: pd.DataFrame, task: dict[str, Any], params: dict[str, Any]
) -> plt.Figure:
    """Seed 001's ``train_batches``: a grid of the first training batch(es), in the order
    epoch 0 trains on, each image titled with its label (before flips and normalisation)."""
    config, image_size = task_settings(task, params)
    train = items[items["split"] == "train"].reset_index(drop=True)
    n = min(len(train), config.batch_size * int(params.get("batches_to_plot", 1)), 64)
    chosen = train.iloc[epoch_order(len(train), config.seed, 0)[:n].numpy()]
    images, _ = decode_images(chosen["image_path"].tolist(), image_size)
    cols = min(8, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, chosen["target"].astype(str), strict=False):
        ax.imshow(image)
        ax.set_title(label.replace(TAG_SEPARATOR, "\n")[:40], fontsize=6)
    fig.suptitle(f"{task['name']}: first training images (epoch 0 order)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_training_curves(history: pd.DataFrame, task: dict[str, Any]) -> plt.Figure:
    """Training loss per step and every validation metric per epoch."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    if "train_loss_step" in history:
        steps = history.dropna(subset=["train_loss_step"])
        left.plot(steps["step"], steps["train_loss_step"], lw=0.8, label="train loss (step)")
    if "val_loss" in history:
        val = history.dropna(subset=["val_loss"])
        left.plot(val["step"], val["val_loss"], "o-", label="validation loss")
    left.set(xlabel="step", ylabel="loss", title=f"{task['name']}: loss")
    left.legend(fontsize=7)
    for column in [c for c in history.columns if c.startswith("val_") and c != "val_loss"]:
        series = history.dropna(subset=[column])
        right.plot(series["epoch"], series[column], "o-", label=column)
    right.set(xlabel="epoch", title="validation metrics")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_test_results(predictions: pd.DataFrame, task: dict[str, Any]) -> plt.Figure:
    """Multiclass: the test confusion matrix (rows true, normalised); multilabel: per-tag
    F1; metric learning: per-class precision@1."""
    kind = task["kind"]
    if kind == "multiclass":
        classes = sorted(set(predictions["target"]) | set(predictions["pred"]))
        matrix = confusion_matrix(
            predictions["target"], predictions["pred"], labels=classes, normalize="true"
        )
        side = max(4.0, 0.35 * len(classes) + 2)
        fig, ax = plt.subplots(figsize=(side, side))
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
        ax.set(
            xlabel="predicted",
            ylabel="true",
            title=f"{task['name']}: test confusion (row-normalised)",
        )
    else:
        if kind == "multilabel":
            true = predictions["target"].str.split(TAG_SEPARATOR)
            pred = predictions["pred"].fillna("").str.split(TAG_SEPARATOR)
            tags = sorted({t for row in true for t in row if t})
            values = []
            for t in tags:
                tp = sum(t in a and t in b for a, b in zip(true, pred, strict=True))
                fp = sum(t not in a and t in b for a, b in zip(true, pred, strict=True))
                fn = sum(t in a and t not in b for a, b in zip(true, pred, strict=True))
                values.append(2 * tp / max(2 * tp + fp + fn, 1))
            title = "test F1 per tag"
        else:
            hit = predictions["target"] == predictions["pred"]
            per = hit.groupby(predictions["target"]).mean().sort_values()
            tags, values, title = (
                per.index.tolist(),
                per.to_numpy(),
                "test precision@1 per unseen class",
            )
        fig, ax = plt.subplots(figsize=(6, max(2.5, 0.22 * len(tags) + 1)))
        ax.barh(range(len(tags)), values)
        ax.set_yticks(range(len(tags)), tags, fontsize=6)
        ax.set(xlim=(0, 1), title=f"{task['name']}: {title}")
    fig.tight_layout()
    return fig


def combine_metrics(*frames: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One ``classification_metrics`` table from every task's metrics and baselines, and
    its test rows as MLflow metrics (``<task>.<model>.<metric>``)."""
    parts = [f for f in frames if f is not None and len(f)]
    table = (
        pd.concat(parts, ignore_index=True)[METRIC_COLUMNS]
        if parts
        else pd.DataFrame(columns=METRIC_COLUMNS)
    )
    test = table[(table["split"] == "test") & table["value"].notna()]
    mlflow_metrics = {
        f"{r.task}.{r.model}.{r.metric}": {"value": float(r.value), "step": 0}
        for r in test.itertuples()
    }
    return table, mlflow_metrics


def summarise(metrics: pd.DataFrame, *reports: pd.DataFrame) -> str:
    """The Markdown summary: tasks (items, classes, drops), the test metrics with the
    frozen-backbone baseline beside each trained model, and links to the charts."""
    report = pd.concat(reports, ignore_index=True) if reports else pd.DataFrame()
    lines = ["# Classification", "", "## Tasks", ""]
    if len(report):
        lines.append(report.to_markdown(index=False))
    lines += ["", "## Test metrics", ""]
    test = metrics[(metrics["split"] == "test") & ~metrics["metric"].str.startswith("pruning_")]
    if len(test):
        pivot = test.pivot_table(
            index=["task", "kind", "metric"], columns="model", values="value"
        ).reset_index()
        lines.append(pivot.to_markdown(index=False, floatfmt=".4f"))
    pruning = metrics[metrics["metric"].str.startswith("pruning_")]
    if len(pruning):
        lines += [
            "",
            "## Pruning",
            "",
            pruning[["task", "metric", "value"]].to_markdown(index=False, floatfmt=".4f"),
        ]
    lines += ["", "## Charts", ""]
    for task in sorted(metrics["task"].unique()):
        lines += [f"### {task}", "", f"![training batches]({task}/train_batches.png)",
                  f"![training curves]({task}/training_curves.png)", f"![test results]({task}/test_results.png)", ""]  # fmt: skip
    return "\n".join(lines) + "\n"
