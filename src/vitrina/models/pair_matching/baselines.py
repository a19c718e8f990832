"""The scikit-learn baselines on the pair features: gradient boosting, logistic regression."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from .metrics import check_labels


class FillEmptyColumns(TransformerMixin, BaseEstimator):
    """Fill columns that are entirely NaN in the training data with 0. Gradient boosting
    handles NaN natively but cannot bin a column with no value at all (e.g. model-number
    overlap on a catalogue without model numbers). Fitted: ``empty_`` (``bool [F]``)."""

    def fit(self, x: np.ndarray, y: Any = None) -> FillEmptyColumns:
        self.empty_ = np.isnan(np.asarray(x, dtype=float)).all(axis=0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "empty_")
        if not self.empty_.any():
            return x
        x = np.array(x, dtype=float)
        x[:, self.empty_] = 0.0
        return x


def build_baseline(
    kind: str = "hist_gbdt", params: dict[str, Any] | None = None, seed: int = 42
) -> Pipeline:
    """The scikit-learn baseline on the pair features.

    Args:
        kind: ``hist_gbdt`` (:class:`FillEmptyColumns` → ``HistGradientBoostingClassifier``,
            class-balanced, native NaN handling; params e.g. ``learning_rate``,
            ``max_iter``, ``max_leaf_nodes``) or ``logreg`` (median imputation →
            ``StandardScaler`` → class-balanced ``LogisticRegression``; params ``C``,
            ``max_iter``).
        params: keyword arguments of the estimator.
        seed: ``random_state``.

    Raises:
        ValueError: unknown ``kind``.
    """
    params = dict(params or {})
    if kind == "hist_gbdt":
        defaults = {
            "learning_rate": 0.05,
            "max_iter": 500,
            "max_leaf_nodes": 15,
            "early_stopping": True,
            "n_iter_no_change": 30,
            "class_weight": "balanced",
        }
        return make_pipeline(
            FillEmptyColumns(),
            HistGradientBoostingClassifier(random_state=seed, **{**defaults, **params}),
        )
    if kind == "logreg":
        defaults = {"C": 1.0, "max_iter": 2000, "class_weight": "balanced"}
        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(random_state=seed, **{**defaults, **params}),
        )
    raise ValueError(f"Unknown baseline {kind!r}; expected 'hist_gbdt' or 'logreg'")


def fit_baseline(
    estimator: Any, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> Any:
    """Fit ``estimator`` (a :func:`build_baseline` pipeline); gradient boosting stops early
    on the given validation split, not on a slice of the training pairs.

    scikit-learn's ``Pipeline.fit`` would hand ``X_val`` to the classifier untransformed,
    so the preprocessing steps are fitted first and transform both splits.
    """
    y = check_labels(y)
    clf = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    if (
        isinstance(clf, HistGradientBoostingClassifier)
        and clf.early_stopping
        and len(np.unique(y_val)) > 1
    ):
        for _, step in estimator.steps[:-1] if isinstance(estimator, Pipeline) else []:
            step.fit(x, y)
            x, x_val = step.transform(x), step.transform(x_val)
        clf.fit(x, y, X_val=x_val, y_val=np.asarray(y_val).astype(np.int64))
        return estimator
    return estimator.fit(x, y)
