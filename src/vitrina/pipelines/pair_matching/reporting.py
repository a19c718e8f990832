"""Pair matching nodes: plots, the MLflow metrics, the summary and model registration."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from vitrina.embeddings import Embeddings  # noqa: E402
from vitrina.models.pair_matching import PairMatcher, binary_metrics  # noqa: E402

from .nodes import METRICS  # noqa: E402


def plot_pr_curves(test_scores: pd.DataFrame) -> plt.Figure:
    """Precision-recall curves on the test split: one panel per classifier, one line per
    variant (average precision in the legend); the operating point of each threshold
    is marked."""
    classifiers = list(dict.fromkeys(test_scores["classifier"]))
    fig, axes = plt.subplots(
        1, len(classifiers), figsize=(4.6 * len(classifiers), 4.2), squeeze=False, sharey=True
    )
    colours = plt.get_cmap("tab10").colors
    for ax, clf in zip(axes[0], classifiers, strict=True):
        for k, (variant, df) in enumerate(
            test_scores[test_scores["classifier"] == clf].groupby("variant", sort=False)
        ):
            y, s = df["label"].to_numpy(), df["score"].to_numpy()
            if y.sum() == 0:
                continue
            p, r, _ = precision_recall_curve(y, s)
            m = binary_metrics(y, s, float(df["threshold"].iloc[0]))
            colour = colours[k % len(colours)]
            ax.plot(
                r,
                p,
                color=colour,
                lw=1.6,
                label=f"{variant} (AP {m['pr_auc']:.3f}, F1 {m['f1']:.3f})",
            )
            ax.plot([m["recall"]], [m["precision"]], "o", color=colour, ms=5)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_title(clf, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("precision")
    fig.suptitle(
        "Pair matching: precision-recall on the test split (dot: chosen threshold)",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_loss_curves(history: pd.DataFrame) -> plt.Figure:
    """MLP training and validation loss per epoch, one panel per variant × classifier."""
    keys = list(dict.fromkeys(zip(history["variant"], history["classifier"], strict=True))) or [
        ("-", "-")
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, (variant, clf) in zip(axes[0], keys, strict=True):
        df = history[(history["variant"] == variant) & (history["classifier"] == clf)]
        ax.plot(df["epoch"], df["train_loss"], label="train", lw=1.5)
        ax.plot(df["epoch"], df["val_loss"], label="validation", lw=1.5)
        if len(df):
            best = df.loc[df["val_pr_auc"].fillna(-1).idxmax()]
            ax.axvline(best["epoch"], color="grey", ls=":", lw=1)
        ax.set_title(f"{variant} · {clf}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("weighted BCE")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        "Pair MLP loss (dotted: epoch kept by early stopping)", fontsize=10, x=0.01, ha="left"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def plot_metrics_chart(metrics: pd.DataFrame) -> plt.Figure:
    """Test accuracy, precision, recall, F1 and PR-AUC: one panel per metric, one bar per
    variant × classifier (the kept model hatched and starred)."""
    labels = [
        f"{r.variant} · {r.classifier}" + (" *" if r.selected else "") for r in metrics.itertuples()
    ]
    variants = list(dict.fromkeys(metrics["variant"]))
    colours = plt.get_cmap("tab10").colors
    colour = [colours[variants.index(v) % len(colours)] for v in metrics["variant"]]
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(2.6 * len(METRICS) + 1.5, 0.32 * len(labels) + 1.4), sharey=True
    )
    ys = np.arange(len(labels))[::-1]
    for ax, m in zip(np.atleast_1d(axes), METRICS, strict=True):
        values = metrics[m].to_numpy(dtype=float)
        bars = ax.barh(ys, np.nan_to_num(values), color=colour, height=0.75)
        for bar, selected in zip(bars, metrics["selected"], strict=True):
            if selected:
                bar.set_hatch("//")
                bar.set_edgecolor("black")
        for y, v in zip(ys, values, strict=True):
            if not np.isnan(v):
                ax.text(
                    min(v, 0.98), y, f"{v:.3f}", va="center", ha="right", fontsize=6, color="white"
                )
        ax.set_xlim(0, 1)
        ax.set_title(m, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    np.atleast_1d(axes)[0].set_yticks(ys, labels, fontsize=7)
    fig.suptitle("Pair matching: test metrics (* = kept model)", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- reports
def pair_matching_metrics_for_mlflow(
    metrics: pd.DataFrame, recall: pd.DataFrame
) -> dict[str, dict[str, float]]:
    """``{"<variant>.<classifier>.<metric>": {"value", "step"}}`` plus
    ``candidates.recall.<scope>`` for MLflow (NaN left out)."""
    out = {}
    for r in metrics.itertuples():
        for m in METRICS:
            value = float(getattr(r, m))
            if not math.isnan(value):
                out[f"{r.variant}.{r.classifier}.{m}"] = {"value": value, "step": 0}
    for r in recall.itertuples():
        if not math.isnan(float(r.recall)):
            out[f"candidates.recall.{r.scope}"] = {"value": float(r.recall), "step": 0}
    return out


def _markdown(df: pd.DataFrame) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "—" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_pair_matching_summary(
    metrics: pd.DataFrame, recall: pd.DataFrame, report: pd.DataFrame, pair_matcher: PairMatcher
) -> str:
    """Markdown summary: input report, test metrics, the kept model, candidate recall."""
    info = pair_matcher.info
    lines = [
        "# Pair matching summary",
        "",
        f"Kept model: variant **{info.get('variant')}**, classifier **{info.get('classifier')}** "
        f"({pair_matcher.kind}), threshold {pair_matcher.threshold:.4f} (validation F1 "
        f"{info.get('val_f1', float('nan')):.4f}), {info.get('n_features')} features, "
        f"{info.get('n_train')} training pairs.",
        "",
        "## Input",
        "",
        _markdown(report),
        "",
        "## Test metrics",
        "",
        _markdown(metrics),
        "",
        "## Candidate recall",
        "",
        _markdown(recall),
        "",
    ]
    return "\n".join(lines)


def register_pair_matcher_model(
    pair_matcher: PairMatcher,
    pair_items: pd.DataFrame,
    embeddings: Embeddings,
    mlflow_params: dict[str, Any],
) -> dict[str, Any]:
    """Log the kept pair matcher as an MLflow model and register it
    (``<prefix>-pair-classifier``).

    Only with ``mlflow.register_models: true``; see :mod:`vitrina.registry` (a ``pyfunc``
    scoring ``left_id, right_id`` pairs of the catalogue's items, which it carries with
    their embeddings; the version is tagged with classifier, variant, threshold and
    validation F1).

    Args:
        pair_matcher: output of :func:`train_pair_matchers`.
        pair_items, embeddings: the prepared items and their embeddings.
        mlflow_params: the ``mlflow`` parameters (``register_models``,
            ``model_name_prefix``).

    Returns:
        ``{"registered", "name", "version", "model_uri", "run_id"}`` (``registered``
        false and no version when registration is off).
    """
    from vitrina.registry import register_pair_matcher

    return register_pair_matcher(pair_matcher, pair_items, embeddings, mlflow_params)
