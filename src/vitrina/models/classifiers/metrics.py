"""Metrics of the three task kinds (pure numpy / scikit-learn / pytorch-metric-learning).

* multiclass: accuracy, macro-F1, top-5 accuracy (scikit-learn);
* multilabel: micro- and macro-F1 at per-class thresholds, mAP (macro average precision,
  scikit-learn's ``average_precision_score``); thresholds chosen on validation to maximise
  each class's F1;
* metric learning: precision@1, MAP@R and R-precision (Musgrave et al., "A Metric Learning
  Reality Check", ECCV 2020) from pytorch-metric-learning's ``AccuracyCalculator``, every
  item querying all the others.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    top_k_accuracy_score,
)


def multiclass_metrics(targets: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` and ``top5_accuracy`` of ``proba [N, C]`` against class
    indices ``targets [N]`` (top-5 = accuracy when C <= 5). Macro-F1 averages over the
    classes present in ``targets`` or predicted."""
    targets = np.asarray(targets, dtype=np.int64)
    pred = proba.argmax(1)
    k = min(5, proba.shape[1])
    top5 = (
        top_k_accuracy_score(targets, proba, k=k, labels=np.arange(proba.shape[1]))
        if proba.shape[1] > 2
        else accuracy_score(targets, pred)
    )
    return {
        "accuracy": float(accuracy_score(targets, pred)),
        "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
        "top5_accuracy": float(top5),
    }


def choose_thresholds(targets: np.ndarray, proba: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-class decision thresholds ``[C]`` that maximise each class's F1 on ``targets``
    (validation multi-hot ``[N, C]``); ``default`` for a class without positives."""
    thresholds = np.full(proba.shape[1], default, dtype=np.float32)
    for c in range(proba.shape[1]):
        if targets[:, c].sum() == 0:
            continue
        precision, recall, cut = precision_recall_curve(targets[:, c], proba[:, c])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        thresholds[c] = float(cut[int(np.argmax(f1[:-1]))]) if len(cut) else default
    return thresholds


def multilabel_metrics(
    targets: np.ndarray, proba: np.ndarray, thresholds: np.ndarray | float = 0.5
) -> dict[str, float]:
    """``micro_f1``, ``macro_f1`` (at ``thresholds``) and ``map`` (mean over classes with a
    positive of the average precision) of ``proba [N, C]`` against multi-hot ``targets``."""
    targets = np.asarray(targets) > 0.5
    pred = proba >= np.asarray(thresholds, dtype=np.float32)
    has_pos = targets.any(0)
    ap = [average_precision_score(targets[:, c], proba[:, c]) for c in np.flatnonzero(has_pos)]
    return {
        "micro_f1": float(f1_score(targets, pred, average="micro", zero_division=0)),
        "macro_f1": float(
            f1_score(targets[:, has_pos], pred[:, has_pos], average="macro", zero_division=0)
        ),
        "map": float(np.mean(ap)) if ap else float("nan"),
    }


def retrieval_metrics(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``precision_at_1``, ``map_at_r`` and ``r_precision`` of ``embeddings [N, E]``, each
    item querying all the others (``ref_includes_query``), cosine similarity on the
    L2-normalised vectors; classes need at least 2 items to count."""
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calculator = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
        k="max_bin_count",
        device=torch.device("cpu"),
    )
    x = torch.as_tensor(np.ascontiguousarray(embeddings), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    result = calculator.get_accuracy(x, y, x, y, ref_includes_query=True)
    return {
        "precision_at_1": float(result["precision_at_1"]),
        "map_at_r": float(result["mean_average_precision_at_r"]),
        "r_precision": float(result["r_precision"]),
    }
