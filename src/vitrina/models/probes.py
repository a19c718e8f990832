"""Probes: classifiers fitted on frozen embeddings, and their metrics.

A probe measures how much of an attribute an embedding carries (linear probe: Alain &
Bengio 2016; the CLIP paper's protocol, Radford et al. 2021, §3.2). ``logreg`` is an L2
logistic regression on standardised features; ``mlp`` a one-hidden-layer perceptron
(the seed system's two probes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def build_probe(kind: str, params: dict[str, Any] | None = None, seed: int = 0) -> Pipeline:
    """A scikit-learn pipeline ``StandardScaler → classifier``.

    Args:
        kind: ``logreg`` (``LogisticRegression``, lbfgs; params ``C``, ``max_iter``) or
            ``mlp`` (``MLPClassifier``; params ``hidden_layer_sizes``, ``alpha``,
            ``max_iter``, ``early_stopping``, ``learning_rate_init``).
        params: keyword arguments for the classifier.
        seed: ``random_state``.

    Raises:
        ValueError: unknown ``kind``.
    """
    params = dict(params or {})
    if kind == "logreg":
        clf = LogisticRegression(random_state=seed, **{"max_iter": 2000, **params})
    elif kind == "mlp":
        if "hidden_layer_sizes" in params:
            params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        defaults = {
            "hidden_layer_sizes": (256,),
            "early_stopping": True,
            "n_iter_no_change": 20,
            "batch_size": 64,
            "max_iter": 500,
        }
        clf = MLPClassifier(random_state=seed, **{**defaults, **params})
    else:
        raise ValueError(f"Unknown probe {kind!r}; expected 'logreg' or 'mlp'")
    return make_pipeline(StandardScaler(), clf)


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray
) -> dict[str, float]:
    """Accuracy and macro-F1; ROC-AUC and PR-AUC (average precision) for two classes.

    Args:
        y_true: ``[N]`` labels (values of ``classes``).
        proba: ``[N, C]`` class probabilities, columns in ``classes`` order.
        classes: ``[C]`` class labels; for binary tasks ``classes[1]`` is the positive one.

    Returns:
        ``{"accuracy", "macro_f1"[, "roc_auc", "pr_auc"]}``; AUCs are NaN when the test
        split holds one class only.
    """
    y_pred = classes[np.argmax(proba, axis=1)]
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, average="macro", labels=classes, zero_division=0)
        ),
    }
    if len(classes) == 2:
        positive = (np.asarray(y_true) == classes[1]).astype(int)
        if 0 < positive.sum() < len(positive):
            out["roc_auc"] = float(roc_auc_score(positive, proba[:, 1]))
            out["pr_auc"] = float(average_precision_score(positive, proba[:, 1]))
        else:
            out["roc_auc"] = out["pr_auc"] = float("nan")
    return out
