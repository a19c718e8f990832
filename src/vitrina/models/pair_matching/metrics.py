"""Pair-classification metrics: the F1-optimal threshold and the test scores."""

from __future__ import annotations

import logging
import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
)

logger = logging.getLogger(__name__)


def check_labels(y: np.ndarray, what: str = "training") -> np.ndarray:
    """``y`` as ``int64`` 0/1, refusing a single class.

    Raises:
        ValueError: labels other than 0/1, or only one class present.
    """
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"Pair labels must be 0/1, got values {sorted(values)[:10]}")
    y = y.astype(np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"The {what} pairs hold only label {int(y[0]) if len(y) else '-'} ({len(y)} pairs): "
            "a pair classifier needs both matches (1) and non-matches (0)"
        )
    return y


def select_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The score threshold that maximises F1 (``score >= threshold`` is a match).

    Args:
        y_true: ``[N]`` 0/1 labels (validation split).
        scores: ``[N]`` match probabilities.

    Returns:
        ``(threshold, f1)``; ``(0.5, nan)`` when ``y_true`` has no positive (logged).
    """
    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0:
        logger.warning("select_threshold: no positive pair in the validation split; using 0.5")
        return 0.5, math.nan
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    return float(thresholds[best]), float(f1[best])


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall and F1 at ``threshold``; PR-AUC (average precision).

    Returns:
        ``{"accuracy", "precision", "recall", "f1", "pr_auc", "threshold", "n_pairs",
        "n_positive"}``; PR-AUC is NaN when ``y_true`` holds one class only.
    """
    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(scores) >= threshold).astype(int)
    both = 0 < y_true.sum() < len(y_true)
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "precision": float(precision_score(y_true, pred, zero_division=0)),
        "recall": float(recall_score(y_true, pred, zero_division=0)),
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "pr_auc": float(average_precision_score(y_true, scores)) if both else math.nan,
        "threshold": float(threshold),
        "n_pairs": int(len(y_true)),
        "n_positive": int(y_true.sum()),
    }
