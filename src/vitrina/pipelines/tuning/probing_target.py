"""The probing steps' tuning target (:class:`ProbingTarget`: ``probing_mlp``,
``probing_logreg``), on the probing pipeline's own splits (:mod:`vitrina.splits`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from vitrina.models.probes import (
    build_probe,
    classification_metrics,
    fit_probe,
    probe_dtype,
)
from vitrina.splits import validation_split
from vitrina.tuning import Reporter

from .base import TuningTarget

logger = logging.getLogger(__name__)


class ProbingTarget(TuningTarget):
    """A probe (``mlp`` or ``logreg``) of one task × model × modality.

    The validation part is carved from the probing train split, stratified and grouped
    by ``group_id`` (:func:`vitrina.splits.validation_split`); the test split is the
    probing pipeline's own. The MLP is trained epoch by epoch (``partial_fit``) and
    reports validation macro-F1 after each epoch, so the pruner can stop it early.

    Args:
        probe: ``mlp`` or ``logreg``.
        config: the target's ``tuning.targets.probing_<probe>`` block (``task``, ``model``,
            ``modality``, ``max_epochs``).
        parameters: all project parameters (``probing`` is used for tasks and the step's
            probe settings).
        products, image_manifest: catalogue inputs.
        embeddings: the catalogue's ``<model>.embeddings`` (:class:`~vitrina.datasets.embeddings.Embeddings`).

    Raises:
        ValueError: the task is not a probing task or was skipped (the reason), or the
            embeddings lack products of the split.
    """

    metric = "macro_f1"

    def __init__(
        self,
        probe: str,
        config: dict[str, Any],
        parameters: dict[str, Any],
        products: pd.DataFrame,
        image_manifest: pd.DataFrame,
        embeddings: Any,
    ) -> None:
        from vitrina.splits import make_probing_splits

        self.probe = probe
        probing = parameters["probing"]
        self.step_params = dict(probing["probes"].get(probe) or {})
        self.seed = int(probing.get("seed", 42))
        self.max_epochs = int(config.get("max_epochs", 60))
        task = config["task"]
        if task not in probing["tasks"]:
            raise ValueError(
                f"tuning target probing_{probe}: task {task!r} is not one of {sorted(probing['tasks'])}"
            )
        splits, report = make_probing_splits(
            products, image_manifest, {**probing, "tasks": {task: probing["tasks"][task]}}
        )
        if splits.empty:
            raise ValueError(
                f"tuning target probing_{probe}: task {task!r} was skipped ({report.iloc[0]['detail']})"
            )
        emb = embeddings.align(splits["product_id"].astype(str))
        self.x = emb.modality(config.get("modality", "text+image"))
        self.y = splits["label"].astype(str).to_numpy()
        self.groups = splits["group_id"].astype(str).to_numpy()
        self.train = (splits["split"] == "train").to_numpy()
        self.val = np.zeros(len(self.y), dtype=bool)
        self.val[
            np.flatnonzero(self.train)[
                validation_split(self.y[self.train], self.groups[self.train], 0.2, self.seed)
            ]
        ] = True
        fit = self.train & ~self.val
        scaler = StandardScaler().fit(self.x[fit])  # once: every trial sees the same inputs
        self.xt, self.yt = scaler.transform(self.x[fit]), self.y[fit]
        self.xv, self.yv = scaler.transform(self.x[self.val]), self.y[self.val]
        self.classes = np.unique(self.y[self.train])
        logger.info(
            "tuning probing_%s: task %s, %s/%s, %d train / %d validation / %d test",
            probe,
            task,
            config["model"],
            config.get("modality", "text+image"),
            fit.sum(),
            self.val.sum(),
            (~self.train).sum(),
        )

    @staticmethod
    def tunable(probe: str) -> set[str]:
        """The classifier's scikit-learn parameters, but its seed, warm start and logging."""
        return set(build_probe(probe)[-1].get_params()) - {"random_state", "warm_start", "verbose"}

    def _step_settings(self) -> dict[str, Any]:
        """The probing step's settings (``C: sweep`` is a procedure, not a value)."""
        return {k: v for k, v in self.step_params.items() if v != "sweep"}

    def defaults(self) -> dict[str, Any]:
        """The probing step's classifier settings, as :func:`build_probe` builds it."""
        merged = build_probe(self.probe, self._step_settings(), self.seed)[-1].get_params()
        if self.step_params.get("C") == "sweep":
            merged.pop("C")
        if isinstance(merged.get("hidden_layer_sizes"), tuple):
            merged["hidden_layer_sizes"] = list(merged["hidden_layer_sizes"])
        return {k: v for k, v in merged.items() if k in self.tunable(self.probe)}

    def classifier(self, params: dict[str, Any]) -> Any:
        """The step's classifier with a trial's values over its settings (the scaler is
        fitted once, in ``__init__``). The MLP is trained epoch by epoch with
        ``partial_fit``, which has no early stopping."""
        clf = build_probe(self.probe, {**self._step_settings(), **params}, self.seed)[-1]
        return clf.set_params(early_stopping=False) if self.probe == "mlp" else clf

    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        clf = self.classifier(params)
        if self.probe == "logreg":
            clf.fit(self.xt, self.yt)
            score = float(f1_score(self.yv, clf.predict(self.xv), average="macro", zero_division=0))
            report(score, 0)
            return score
        best = 0.0
        for epoch in range(self.max_epochs):
            clf.partial_fit(self.xt, self.yt, classes=self.classes)
            score = float(f1_score(self.yv, clf.predict(self.xv), average="macro", zero_division=0))
            best = max(best, score)
            report(score, epoch)
        return best

    def default_value(self) -> float | None:
        """Validation macro-F1 of the probing step's own probe (trial 0 could not hold it).

        The step's ``C: sweep`` (the CLIP linear-probe protocol,
        :func:`vitrina.models.probes.sweep_logreg_c`) picks ``C`` on a split of the
        training part only, so the validation part stays unseen, as for a trial.
        """
        if self.probe != "logreg" or str(self.step_params.get("C", "sweep")) != "sweep":
            return super().default_value()
        fit = self.train & ~self.val
        model, info = fit_probe(
            "logreg", self.step_params, self.x[fit], self.y[fit], self.groups[fit], seed=self.seed
        )
        score = float(
            f1_score(
                self.y[self.val], model.predict(self.x[self.val]), average="macro", zero_division=0
            )
        )
        logger.info(
            "tuning probing_logreg: the step's C sweep chose C=%g, validation macro-F1 %.4f",
            info.get("C", float("nan")),
            score,
        )
        return score

    def test_score(self, params: dict[str, Any]) -> float:
        merged = {**self.step_params, **params}
        model, _ = fit_probe(
            self.probe,
            merged,
            self.x[self.train],
            self.y[self.train],
            self.groups[self.train],
            seed=self.seed,
        )
        proba = model.predict_proba(self.x[~self.train].astype(probe_dtype(merged)))
        return classification_metrics(self.y[~self.train], proba, model.classes_)["macro_f1"]
