"""The ``captioning`` tuning target: the captioner scored by validation loss or SacreBLEU."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from vitrina.tuning import Reporter

from .base import TuningTarget, cap_epochs

logger = logging.getLogger(__name__)


class CaptioningTarget(TuningTarget):
    """The captioning step's training (:func:`~vitrina.models.captioner.fit_on_splits`).

    Splits are the step's own (:func:`~vitrina.models.captioner.make_captioning_splits`,
    whole groups to train/validation/test), optionally capped at ``max_items`` items to
    keep a trial cheap. Every trial builds the configured model afresh (the BPE is trained
    on the training descriptions, seeded) and trains it with the trial's settings in a
    temporary run folder (the step's ``output_dir`` is never touched).

    Objective: the lowest validation loss over the epochs (teacher-forced token
    cross-entropy, the value the step keeps its best epoch by; minimised), reported after
    every epoch for the pruner (the Lightning callback
    :class:`~vitrina.models.captioner.ReportValidation`). Test: corpus SacreBLEU of greedy
    captions of the test split (``max_test_items`` at most) by the best parameters'
    model, scored once.

    Args:
        config: ``tuning.targets.captioning`` (``max_items``; ``max_epochs``: cap on
            ``max_epochs`` and ``pretrain_max_epochs`` per trial unless the space searches
            them;
            ``max_test_items``).
        parameters: all project parameters (``captioning`` is used).
        products, image_manifest: catalogue inputs.
    """

    metric = "loss"
    test_metric = "sacrebleu_greedy"
    direction = "minimize"
    params_path = ("captioning", "training")
    #: settings that say where and how fast training runs, not what it learns.
    RUNTIME = frozenset({"seed", "patience", "limit_train_batches"})

    @classmethod
    def tunable(cls) -> set[str]:
        """The ``captioning.training`` settings that change the trained model."""
        from vitrina.models.captioner import settings_dict, training_settings
        from vitrina.models.captioner.configuration import RUNTIME_SETTINGS

        return set(settings_dict(*training_settings({}))) - RUNTIME_SETTINGS - cls.RUNTIME

    def __init__(
        self,
        config: dict[str, Any],
        parameters: dict[str, Any],
        products: pd.DataFrame,
        image_manifest: pd.DataFrame,
    ) -> None:
        from vitrina.models.captioner import make_captioning_splits

        self.step = parameters["captioning"]
        self.max_epochs = config.get("max_epochs")
        self.max_test_items = config.get("max_test_items")
        data = dict(self.step.get("data") or {})
        if config.get("max_items"):
            data["max_items"] = int(config["max_items"])
        self.splits, _ = make_captioning_splits(
            products, image_manifest, {**self.step, "data": data}
        )
        counts = self.splits["split"].value_counts()
        logger.info(
            "tuning captioning: %d train / %d validation / %d test items",
            counts.get("train", 0),
            counts.get("validation", 0),
            counts.get("test", 0),
        )

    def defaults(self) -> dict[str, Any]:
        """The step's ``captioning.training`` over the settings' defaults."""
        from vitrina.models.captioner import settings_dict, training_settings

        full = settings_dict(*training_settings(dict(self.step.get("training") or {})))
        return {k: v for k, v in full.items() if k in self.tunable()}

    def _train(self, params: dict[str, Any], report: Reporter | None = None) -> Any:
        from vitrina.models.captioner import (
            ReportValidation,
            build_initial_captioner,
            fit_on_splits,
            settings_dict,
            training_settings,
        )

        merged = {**(self.step.get("training") or {}), **params, "sample_images": 0}
        merged = {**settings_dict(*training_settings({})), **merged}
        keys = ("max_epochs", "pretrain_max_epochs")
        config, options = training_settings(cap_epochs(merged, params, keys, self.max_epochs))
        return fit_on_splits(
            build_initial_captioner(self.splits, self.step),
            self.splits,
            config,
            options,
            callbacks=[ReportValidation(report)] if report is not None else [],
        )

    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        result = self._train(params, report)
        return self._keep(params, float(result.best_val_loss), result.captioner)

    def test_score(self, params: dict[str, Any]) -> float:
        from vitrina.models.captioner import caption_test_split, corpus_sacrebleu

        captioner = self._kept(params)
        if captioner is None:
            captioner = self._train(params).captioner
        evaluation = dict(self.step.get("evaluation") or {})
        evaluation["decodings"] = ["greedy"]
        if self.max_test_items:
            evaluation["max_items"] = int(self.max_test_items)
        captions = caption_test_split(
            captioner, self.splits, {**self.step, "evaluation": evaluation}
        )
        return corpus_sacrebleu(
            captions["greedy"].fillna("").tolist(), captions["reference"].tolist()
        )
