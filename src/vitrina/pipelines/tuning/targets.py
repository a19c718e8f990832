"""Tuning targets: what each trainable step exposes to Optuna.

A target knows which parameters it accepts, where they live in the step's own parameters
(``params_path``), how to score a parameter set on the *validation* split (reporting
intermediate values for pruning) and how to score the best set once on the *test* split.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from vitrina.datasets.embeddings import EmbeddingsDataset
from vitrina.models.probes import SWEEP_KEYS, classification_metrics, fit_probe, validation_split
from vitrina.tuning import Reporter

logger = logging.getLogger(__name__)


class TuningTarget(ABC):
    """A trainable step Optuna can tune."""

    #: where the tuned parameters live in the step's ``parameters_<pipeline>.yml``
    params_path: tuple[str, ...] = ()
    #: what the objective measures on the validation split
    metric: str = "value"
    direction: str = "maximize"

    @abstractmethod
    def allowed_params(self) -> set[str]:
        """Parameter names the search space may use."""

    @abstractmethod
    def defaults(self) -> dict[str, Any]:
        """The step's configured values (enqueued as the first trial of a new study)."""

    @abstractmethod
    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        """Validation metric of a parameter set (never touches the test split)."""

    @abstractmethod
    def test_score(self, params: dict[str, Any]) -> float:
        """The test-split metric of a parameter set (reported once, for the best trial)."""


class ProbingTarget(TuningTarget):
    """A probe (``mlp`` or ``logreg``) of one task × model × modality.

    The validation part is carved from the probing train split, stratified and grouped
    by ``group_id`` (:func:`vitrina.models.probes.validation_split`); the test split is the
    probing pipeline's own. The MLP is trained epoch by epoch (``partial_fit``) and
    reports validation macro-F1 after each epoch, so the pruner can stop it early.

    Args:
        probe: ``mlp`` or ``logreg``.
        config: the target's ``tuning.targets.probing_<probe>`` block (``task``, ``model``,
            ``modality``, ``max_epochs``).
        parameters: all project parameters (``probing`` is used for tasks and the step's
            probe settings).
        products, image_manifest: catalogue inputs.
        embeddings_dir: directory of the ``<model>.npz`` files.
    """

    metric = "macro_f1"

    def __init__(
        self,
        probe: str,
        config: dict[str, Any],
        parameters: dict[str, Any],
        products: pd.DataFrame,
        image_manifest: pd.DataFrame,
        embeddings_dir: str,
    ) -> None:
        from vitrina.pipelines.probing.nodes import make_probing_splits

        self.probe = probe
        self.params_path = ("probing", "probes", probe)
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
        path = Path(embeddings_dir) / f"{config['model']}.npz"
        emb = EmbeddingsDataset(str(path)).load().align(splits["product_id"].astype(str))
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
        self.scaler = StandardScaler().fit(self.x[fit])
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

    def allowed_params(self) -> set[str]:
        estimator = MLPClassifier() if self.probe == "mlp" else LogisticRegression()
        return set(estimator.get_params()) - {"random_state", "warm_start", "verbose"}

    def defaults(self) -> dict[str, Any]:
        """scikit-learn's defaults overlaid with the probing step's configured values."""
        estimator = MLPClassifier() if self.probe == "mlp" else LogisticRegression()
        merged = {
            **estimator.get_params(),
            **{k: v for k, v in self.step_params.items() if k not in SWEEP_KEYS},
        }
        if isinstance(merged.get("hidden_layer_sizes"), tuple):
            merged["hidden_layer_sizes"] = list(merged["hidden_layer_sizes"])
        return {k: v for k, v in merged.items() if v != "sweep"}

    def _xy(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.scaler.transform(self.x[mask]), self.y[mask]

    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        xt, yt = self._xy(self.train & ~self.val)
        xv, yv = self._xy(self.val)
        if self.probe == "logreg":
            clf = LogisticRegression(random_state=self.seed, **{"max_iter": 1000, **params}).fit(
                xt, yt
            )
            score = float(f1_score(yv, clf.predict(xv), average="macro", zero_division=0))
            report(score, 0)
            return score
        mlp_params = {
            k: v
            for k, v in params.items()
            if k not in ("early_stopping", "max_iter", "n_iter_no_change")
        }
        if "hidden_layer_sizes" in mlp_params:
            mlp_params["hidden_layer_sizes"] = tuple(mlp_params["hidden_layer_sizes"])
        clf = MLPClassifier(
            random_state=self.seed, **{"hidden_layer_sizes": (256,), "batch_size": 64, **mlp_params}
        )
        best = 0.0
        for epoch in range(self.max_epochs):
            clf.partial_fit(xt, yt, classes=self.classes)
            score = float(f1_score(yv, clf.predict(xv), average="macro", zero_division=0))
            best = max(best, score)
            report(score, epoch)
        return best

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
        proba = model.predict_proba(self.x[~self.train])
        return classification_metrics(self.y[~self.train], proba, model.classes_)["macro_f1"]
