"""The ensemble of pair classifiers, and one ``fit`` for every classifier kind."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .baselines import fit_baseline
from .estimators import MLPPairEstimator


def fit_classifier(
    estimator: Any, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> Any:
    """Fit any pair classifier with its validation split (MLP early stopping, gradient
    boosting early stopping, an ensemble's members); returns ``estimator``."""
    if isinstance(estimator, MLPPairEstimator | EnsembleEstimator):
        return estimator.fit(x, y, X_val=x_val, y_val=y_val)
    return fit_baseline(estimator, x, y, x_val, y_val)


class EnsembleEstimator(ClassifierMixin, BaseEstimator):
    """Weighted mean of its members' match probabilities.

    Args:
        members: ``{name: estimator}``.
        weights: ``{name: weight}`` (normalised to sum 1); ``None``: equal weights.

    ``fit`` fits every member (:func:`fit_classifier`); :meth:`of_fitted` builds one
    over members fitted already (the pipeline's: each is also a model of its own).
    Fitted: ``members_`` (the fitted members), ``weights_`` (normalised), ``classes_``.
    """

    def __init__(self, members: dict[str, Any], weights: dict[str, float] | None = None) -> None:
        self.members = members
        self.weights = weights

    def _weights(self) -> dict[str, float]:
        if not self.members:
            raise ValueError("An ensemble needs at least one member")
        w = {n: float((self.weights or {}).get(n, 1.0)) for n in self.members}
        total = sum(w.values())
        return {n: v / total for n, v in w.items()}

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
    ) -> EnsembleEstimator:
        """Fit a clone of every member on ``X, y`` (validation split: see
        :func:`fit_classifier`; without one, on ``X, y`` alone)."""
        weights = self._weights()
        members = {}
        for name, member in self.members.items():
            est = clone(member)
            members[name] = (
                est.fit(X, y) if X_val is None else fit_classifier(est, X, y, X_val, y_val)
            )
        self.members_, self.weights_, self.classes_ = members, weights, np.array([0, 1])
        return self

    @classmethod
    def of_fitted(
        cls, members: dict[str, Any], weights: dict[str, float] | None = None
    ) -> EnsembleEstimator:
        """An ensemble over members that are fitted already (nothing is refitted)."""
        ens = cls(dict(members), weights)
        ens.members_, ens.weights_, ens.classes_ = dict(members), ens._weights(), np.array([0, 1])
        return ens

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``X [N, F]`` → ``[N, 2]``: the weighted mean of the members' probabilities."""
        check_is_fitted(self, "members_")
        p = sum(self.weights_[n] * m.predict_proba(X)[:, 1] for n, m in self.members_.items())
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """0/1 at probability 0.5."""
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]
