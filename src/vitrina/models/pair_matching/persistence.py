"""Writing and reading a pair matcher's parts without pickle.

The MLP is a safetensors-free ``torch.save`` of tensors only (read back with
``weights_only=True``) plus its estimator parameters in ``config.json``; scikit-learn
parts (the feature builder, gradient boosting, logistic regression) are skops files, and
:func:`load_skops` builds only the types of :data:`SKOPS_TRUSTED` (skops trusts
scikit-learn estimators and builtins itself).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as skops_io
import torch

from .estimators import FeatureScaler, MLPPairEstimator
from .mlp import PairwiseBinaryClassifier

#: The version of the directory layout :class:`.matcher.PairMatcher` writes. 2: the
#: estimators moved to ``vitrina.models.pair_matching`` and became scikit-learn estimators.
FORMAT = 2

#: The non-scikit-learn types a pair matcher's skops files may hold; anything else is
#: refused on load.
SKOPS_TRUSTED = [
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "vitrina.models.pair_matching.features.FeatureConfig",
    "vitrina.models.pair_matching.baselines.FillEmptyColumns",
    "vitrina.models.pair_matching.features.PairFeatureBuilder",
]


def save_estimator(est: Any, path: Path, stem: str) -> dict[str, Any]:
    """Write one fitted estimator as ``<stem>.pt`` (+ ``<stem>_history.csv`` for the MLP,
    whose single-model file names are ``model.pt`` / ``history.csv``) or ``<stem>.skops``.

    Returns:
        Its ``config.json`` entries (``type``; for the MLP its parameters, width and best
        epoch).
    """
    if isinstance(est, MLPPairEstimator):
        torch.save(
            {
                "state_dict": est.module_.state_dict(),
                "scaler_mean": torch.from_numpy(est.scaler_.mean_),
                "scaler_std": torch.from_numpy(est.scaler_.std_),
            },
            path / f"{stem}.pt",
        )
        history = "history.csv" if stem == "model" else f"{stem}_history.csv"
        est.history_.to_csv(path / history, index=False)
        return {
            "type": "mlp",
            "params": est.get_params(),
            "n_features": int(est.n_features_in_),
            "classes": est.classes_.tolist(),
            "best_epoch": int(est.best_epoch_),
        }
    skops_io.dump(est, path / f"{stem}.skops")
    return {"type": "sklearn"}


def load_skops(file: Path) -> Any:
    """``skops.io.load`` with :data:`SKOPS_TRUSTED` only (no pickle is ever executed).

    Raises:
        FileNotFoundError: the file is missing, or only a pickled ``.joblib`` of an older
            Vitrina is there.
    """
    if not file.is_file() and file.with_suffix(".joblib").is_file():
        raise FileNotFoundError(
            f"{file.parent} was written by an older Vitrina with pickled .joblib files, which "
            "are not loaded: train it again (`kedro run --pipelines=pair_matching`)"
        )
    return skops_io.load(file, trusted=SKOPS_TRUSTED)


def load_estimator(path: Path, stem: str, meta: dict[str, Any]) -> Any:
    """Inverse of :func:`save_estimator` (``meta``: the entries it returned)."""
    if meta.get("type") != "mlp":
        return load_skops(path / f"{stem}.skops")
    state = torch.load(path / f"{stem}.pt", map_location="cpu", weights_only=True)
    est = MLPPairEstimator(**meta["params"])
    est.classes_ = np.asarray(meta.get("classes", [0, 1]))
    est.n_features_in_ = int(meta["n_features"])
    est.module_ = PairwiseBinaryClassifier(
        est.n_features_in_, est.hidden_size, est.n_layers, est.dropout
    )
    est.module_.load_state_dict(state["state_dict"])
    est.module_.eval()
    est.scaler_ = FeatureScaler()
    est.scaler_.mean_ = state["scaler_mean"].numpy()
    est.scaler_.std_ = state["scaler_std"].numpy()
    est.best_epoch_ = int(meta.get("best_epoch", 0))
    history = path / ("history.csv" if stem == "model" else f"{stem}_history.csv")
    est.history_ = pd.read_csv(history) if history.is_file() else pd.DataFrame()
    return est


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and NaN as ``None`` (for JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return None if math.isnan(float(value)) else float(value)
    return value
