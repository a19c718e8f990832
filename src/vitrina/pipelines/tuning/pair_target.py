"""The ``pair_classifier`` tuning target: the pair_matching step's classifier on its prepared pairs."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from vitrina.tuning import Reporter
from vitrina.utils import limit_threads

from .base import TuningTarget, cap_epochs

logger = logging.getLogger(__name__)


class PairClassifierTarget(TuningTarget):
    """The pair_matching step's MLP (:class:`~vitrina.models.pair_matching.MLPPairEstimator`).

    Data: the pair_matching pipeline's prepared pairs, whatever their source (``pair_items``,
    ``pair_item_embeddings``, ``pair_splits`` with ``train``/``val``/``test``). The feature
    builder of one variant (default: the step's ``primary_variant``) is fitted once on the
    training pairs, exactly as the step fits it; each trial trains only the MLP.

    Objective: validation F1 at the F1-optimal threshold, the number pair_matching uses to
    choose its threshold and its model (``select: best``). The MLP reports that value after
    every epoch (the pruner's intermediate values); the final value is the one of the
    epoch early stopping keeps (validation ``monitor``). Test: F1 on ``test`` at the
    validation threshold, as the step's report computes it.

    Parameters are named relative to the classifier's block, ``model.<key>``
    (:data:`~vitrina.models.pair_matching.MODEL_PARAMS`) and ``train.<key>``
    (:data:`~vitrina.models.pair_matching.TRAIN_PARAMS`), so the best parameters land in
    ``pair_matching.classifiers.<classifier>.model`` / ``.train``.

    Args:
        config: ``tuning.targets.pair_classifier`` (``classifier`` name, default ``mlp``;
            ``variant``; ``max_epochs``: cap on ``train.max_epochs`` per trial unless the
            space searches it).
        parameters: all project parameters (``pair_matching`` is used).
        pair_items: ``item_id`` + item columns.
        embeddings: the items' embeddings.
        pair_splits: ``left_id, right_id, label, split``.

    Raises:
        ValueError: the classifier is not an ``mlp``, the variant is unknown, a split is
            empty, or the training / validation pairs lack a class.
    """

    metric = "f1"

    @staticmethod
    def tunable() -> set[str]:
        """``model.<architecture field>`` and ``train.<training field>`` (not the seed)."""
        from vitrina.models.pair_matching import MODEL_PARAMS, TRAIN_PARAMS

        model, train = set(MODEL_PARAMS), set(TRAIN_PARAMS) - {"seed"}
        return {f"model.{k}" for k in model} | {f"train.{k}" for k in train}

    def __init__(
        self,
        config: dict[str, Any],
        parameters: dict[str, Any],
        pair_items: pd.DataFrame,
        embeddings: Any,
        pair_splits: pd.DataFrame,
    ) -> None:
        from vitrina.models.pair_matching import (
            check_labels,
            fit_feature_builder,
            index_items,
            variant_features,
        )

        pm = parameters["pair_matching"]
        self.classifier = str(config.get("classifier") or "mlp")
        spec = (pm.get("classifiers") or {}).get(self.classifier)
        if not spec or spec.get("type", self.classifier) != "mlp":
            raise ValueError(
                f"tuning target pair_classifier: pair_matching.classifiers.{self.classifier} "
                f"must be a classifier of type mlp, got {spec!r}"
            )
        self.spec = spec
        variants = {k: v for k, v in (pm.get("variants") or {}).items() if v is not None}
        self.variant = config.get("variant") or pm.get("primary_variant") or next(iter(variants))
        if self.variant not in variants:
            raise ValueError(
                f"tuning target pair_classifier: variant {self.variant!r} is not one of "
                f"{sorted(variants)}"
            )
        self.seed = int(pm.get("seed", 42))
        self.threads = pm.get("threads")
        self.max_epochs = config.get("max_epochs")
        items = index_items(pair_items)
        parts = {s: pair_splits[pair_splits["split"] == s] for s in ("train", "val", "test")}
        for name, part in parts.items():
            if part.empty:
                raise ValueError(
                    f"tuning target pair_classifier: the {name} split has no pairs "
                    f"({len(pair_splits)} pairs in all)"
                )
        features = variant_features(pm.get("features"), variants[self.variant], items)
        with limit_threads(self.threads):  # the step's feature builder, fitted as it does
            builder = fit_feature_builder(parts["train"], items, embeddings, features)
            self.x = {
                s: builder.transform(p["left_id"], p["right_id"], items, embeddings)
                for s, p in parts.items()
            }
        self.y = {s: p["label"].to_numpy().astype(np.int64) for s, p in parts.items()}
        check_labels(self.y["train"])
        check_labels(self.y["val"], "validation")
        logger.info(
            "tuning pair_classifier: variant %s, %d features, %d train / %d validation / "
            "%d test pairs",
            self.variant,
            self.x["train"].shape[1],
            len(self.y["train"]),
            len(self.y["val"]),
            len(self.y["test"]),
        )

    def _blocks(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The classifier's ``model`` and ``train`` blocks with the trial's values in."""
        model = dict(self.spec.get("model") or {})
        train = dict(self.spec.get("train") or {})
        for name, value in params.items():
            block, key = name.split(".", 1)
            (model if block == "model" else train)[key] = value
        from vitrina.models.pair_matching import MLPPairEstimator

        train.setdefault("max_epochs", MLPPairEstimator().max_epochs)
        searched = {k.split(".", 1)[1] for k in params if k.startswith("train.")}
        return model, cap_epochs(train, searched, ("max_epochs",), self.max_epochs)

    def defaults(self) -> dict[str, Any]:
        """The estimator's defaults overlaid with the step's ``model`` / ``train`` blocks."""
        from vitrina.models.pair_matching import MODEL_PARAMS, TRAIN_PARAMS, MLPPairEstimator

        params = MLPPairEstimator().get_params()
        model = {k: params[k] for k in MODEL_PARAMS}
        train = {k: params[k] for k in TRAIN_PARAMS if k != "seed"}
        model.update(self.spec.get("model") or {})
        train.update({k: v for k, v in (self.spec.get("train") or {}).items() if k != "seed"})
        return {
            **{f"model.{k}": v for k, v in model.items()},
            **{f"train.{k}": v for k, v in train.items()},
        }

    def _fit(self, params: dict[str, Any], on_epoch: Any = None) -> Any:
        from vitrina.models.pair_matching import MLPPairEstimator

        model, train = self._blocks(params)
        estimator = MLPPairEstimator.from_blocks(model, {"seed": self.seed, **train})  # as the step
        with limit_threads(self.threads):
            return estimator.fit(
                self.x["train"],
                self.y["train"],
                X_val=self.x["val"],
                y_val=self.y["val"],
                on_epoch=on_epoch,
            )

    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        from vitrina.models.pair_matching import select_threshold

        def on_epoch(row: dict[str, float], val_scores: np.ndarray) -> None:
            report(select_threshold(self.y["val"], val_scores)[1], int(row["epoch"]))

        estimator = self._fit(params, on_epoch)
        with limit_threads(self.threads):
            scores = estimator.predict_proba(self.x["val"])[:, 1]
        return select_threshold(self.y["val"], scores)[1]

    def test_score(self, params: dict[str, Any]) -> float:
        from vitrina.models.pair_matching import binary_metrics, select_threshold

        estimator = self._fit(params)
        with limit_threads(self.threads):
            val = estimator.predict_proba(self.x["val"])[:, 1]
            test = estimator.predict_proba(self.x["test"])[:, 1]
        threshold, _ = select_threshold(self.y["val"], val)
        return binary_metrics(self.y["test"], test, threshold)["f1"]
