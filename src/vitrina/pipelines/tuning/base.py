"""The interface every tuning target implements (:class:`TuningTarget`): what a trainable
step exposes to Optuna (``docs/tuning.md``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from vitrina.tuning import Reporter


class TuningTarget(ABC):
    """A trainable step Optuna can tune."""

    #: where the tuned parameters live in the step's ``parameters_<pipeline>.yml``
    params_path: tuple[str, ...] = ()
    #: what the objective measures on the validation split
    metric: str = "value"
    #: what :meth:`test_score` measures ("": the same metric, on the test split)
    test_metric: str = ""
    direction: str = "maximize"

    @abstractmethod
    def defaults(self) -> dict[str, Any]:
        """The step's configured values (enqueued as the first trial of a new study)."""

    @abstractmethod
    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        """Validation metric of a parameter set (never touches the test split)."""

    @abstractmethod
    def test_score(self, params: dict[str, Any]) -> float:
        """The test-split metric of a parameter set (reported once, for the best trial)."""

    #: (params, value, trained model) of this session's best completed trial
    _best: tuple[dict[str, Any], float, Any] | None = None

    def _keep(self, params: dict[str, Any], value: float, trained: Any) -> float:
        """Remember ``trained`` when ``value`` is this session's best so far, so that
        :meth:`test_score` of the best trial need not train it again; returns ``value``."""
        if self._best is None or (
            value > self._best[1] if self.direction == "maximize" else value < self._best[1]
        ):
            self._best = (dict(params), float(value), trained)
        return value

    def _kept(self, params: dict[str, Any]) -> Any:
        """The model :meth:`_keep` remembered for ``params``, else ``None`` (e.g. the best
        trial ran in an earlier session of the study)."""
        return self._best[2] if self._best is not None and self._best[0] == params else None

    def default_value(self) -> float | None:
        """Validation metric of the step's own settings when they cannot be a trial.

        A step's configuration is normally enqueued as trial 0 (:meth:`defaults`), and
        the gain of tuning is measured against it. When it lies outside the search space
        (e.g. an environment trains for more epochs than the space allows) it is scored
        here instead, with :meth:`objective` on the same validation split, no pruning.
        Targets whose settings are procedures rather than points of the space (the
        logistic-regression probe's ``C: sweep``) override this.
        """
        return float(self.objective(self.defaults(), lambda value, step: None))


def cap_epochs(
    merged: dict[str, Any], params: dict[str, Any], keys: tuple[str, ...], cap: int | None
) -> dict[str, Any]:
    """``merged`` with each of ``keys`` lowered to ``cap`` unless the trial searched it."""
    if cap is None:
        return merged
    for key in keys:
        if key not in params and key in merged and merged[key] is not None:
            merged[key] = min(int(merged[key]), int(cap))
    return merged
