"""Node: the baseline a trained classifier must beat — its backbone frozen, with a probe.

The backbone is built exactly as training starts from it (same name, checkpoint and seed,
so the same weights), its features are extracted for train and test, and:

* multiclass: the project's linear probe (logistic regression, C chosen by the CLIP
  paper's sweep on a validation part of train: :func:`vitrina.models.probes.fit_probe`);
* multilabel: one logistic regression per tag (scikit-learn's ``OneVsRestClassifier``),
  thresholds chosen on the train split;
* metric learning: retrieval on the frozen features themselves (the untrained backbone).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from vitrina.models.classifiers.metrics import (
    choose_thresholds,
    multiclass_metrics,
    multilabel_metrics,
    retrieval_metrics,
)
from vitrina.utils import limit_threads

from .nodes import METRIC_COLUMNS, encode, task_inputs


@torch.inference_mode()
def frozen_features(backbone: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``float32 [N, D]`` features of ``uint8 [N, S, S, 3]`` images (eval mode)."""
    backbone.eval()
    mean = torch.tensor(backbone.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.image_std).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        out.append(backbone((x - mean) / std).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, backbone.feature_dim), np.float32)


def linear_probe_baseline(
    items: pd.DataFrame, task: dict[str, Any], params: dict[str, Any]
) -> pd.DataFrame:
    """Test metrics of the frozen backbone with a probe (see the module docstring).

    Returns:
        Rows of ``task, kind, backbone, model, split, metric, value, n`` with ``model`` =
        ``linear_probe_frozen`` (``untrained_backbone`` for metric learning); empty when
        ``task.baseline`` is false.
    """
    if not task.get("baseline", True):
        return pd.DataFrame(columns=METRIC_COLUMNS)
    config, _, items, images, backbone = task_inputs(items, task, params)
    with limit_threads(config.num_threads):
        return _baseline(items, images, backbone, task, config.seed)


def _baseline(
    items: pd.DataFrame, images: np.ndarray, backbone: Any, task: dict[str, Any], seed: int
) -> pd.DataFrame:
    from vitrina.models.probes import fit_probe

    kind = task["kind"]
    feats = frozen_features(backbone, images)
    classes, targets, _ = encode(items, kind)
    train, test = (items["split"] == "train").to_numpy(), (items["split"] == "test").to_numpy()
    if kind == "multiclass":
        y = np.asarray(classes)[targets]
        probe, _ = fit_probe(
            "logreg",
            {"C": "sweep"},
            feats[train],
            y[train],
            items.loc[train, "group_id"].to_numpy(),
            seed=seed,
        )
        proba = probe.predict_proba(feats[test])
        order = [list(probe.classes_).index(c) if c in probe.classes_ else -1 for c in classes]
        full = np.zeros((test.sum(), len(classes)))
        for j, col in enumerate(order):
            if col >= 0:
                full[:, j] = proba[:, col]
        metrics, model = multiclass_metrics(targets[test], full), "linear_probe_frozen"
    elif kind == "multilabel":
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        keep = targets[train].sum(0) > 0
        clf = make_pipeline(
            StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=1000))
        )
        clf.fit(feats[train], targets[train][:, keep])
        proba = np.zeros((test.sum(), len(classes)))
        proba[:, keep] = clf.predict_proba(feats[test])
        train_proba = np.zeros((train.sum(), len(classes)))
        train_proba[:, keep] = clf.predict_proba(feats[train])
        thresholds = choose_thresholds(targets[train], train_proba)
        metrics, model = multilabel_metrics(targets[test], proba, thresholds), "linear_probe_frozen"
    else:
        vectors = feats[test] / np.maximum(
            np.linalg.norm(feats[test], axis=1, keepdims=True), 1e-12
        )
        metrics, model = retrieval_metrics(vectors, targets[test]), "untrained_backbone"
    return pd.DataFrame(
        [{"task": task["name"], "kind": kind, "backbone": task["backbone"], "model": model,
          "split": "test", "metric": m, "value": float(v), "n": int(test.sum())} for m, v in metrics.items()]
    )[METRIC_COLUMNS]  # fmt: skip
