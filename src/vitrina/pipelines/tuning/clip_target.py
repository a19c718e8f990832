"""The ``clip_finetune`` tuning target: contrastive fine-tuning scored by validation recall."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitrina.tuning import Reporter

from .base import TuningTarget, cap_epochs

logger = logging.getLogger(__name__)


class ClipFinetuneTarget(TuningTarget):
    """The clip_finetune step's contrastive training (:func:`~vitrina.models.clip.finetune.fine_tune`).

    The step itself has a training and a validation split only (and keeps the best
    checkpoint by validation mean recall), so tuning must not choose on that validation
    split: a tuning-validation part is carved from the step's *training* pairs, grouped
    by ``split_group`` (colour variants and identical images stay on one side), and the
    step's validation split is the test split, scored once for the best parameters.

    Objective: the best validation mean recall over the epochs (the metric and the rule
    the step uses to keep its checkpoint), reported after every epoch for the pruner (a
    Lightning callback, :class:`~vitrina.models.clip.task.EpochReport`, calls the trial's
    reporter, whose ``TrialPruned`` stops the fit).
    Every trial trains a copy of the base model with its checkpoints in a temporary
    directory of its own (``tmp_dir``, removed afterwards): the step's ``output_dir`` and
    saved models are never touched.

    Args:
        config: ``tuning.targets.clip_finetune`` (``val_size``: share of the training
            pairs held out, default the step's ``val_size``; ``max_epochs``: cap on
            ``train.max_epochs`` per trial unless the space searches it; ``tmp_dir``: where the
            trials' temporary directories go, default the system's).
        parameters: all project parameters (``clip_finetune`` is used).
        products, image_manifest: catalogue inputs.
        base: the base CLIP bundle (ruCLIP or Hugging Face); never modified.

    Raises:
        ValueError: the tuning-validation or test part is smaller than ``max(recall_ks)``
            pairs, or the training part has fewer than 2.
    """

    metric = "mean_recall"
    params_path = ("clip_finetune", "train")
    #: Settings that define the metric, the data or the hardware, not the training.
    FIXED = frozenset(
        {
            "seed",
            "recall_ks",
            "match_duplicates",
            "precision",
            "strategy",
            "limit_train_batches",
            "backbone_lr_scale",
        }
    )

    @classmethod
    def tunable(cls) -> set[str]:
        """The ``clip_finetune.train`` settings that change the trained weights, except the
        seed, the metric's settings, the precision and the hardware."""
        from vitrina.models.clip.config import RUNTIME_SETTINGS, ClipFinetuneConfig

        fields = set(ClipFinetuneConfig.from_params({}).to_dict())
        return fields - RUNTIME_SETTINGS - cls.FIXED

    def __init__(
        self,
        config: dict[str, Any],
        parameters: dict[str, Any],
        products: pd.DataFrame,
        image_manifest: pd.DataFrame,
        base: Any,
    ) -> None:
        from sklearn.model_selection import GroupShuffleSplit

        from vitrina.models.clip.config import ClipFinetuneConfig
        from vitrina.models.clip.finetune import pair_data
        from vitrina.models.clip.pairs import make_finetune_pairs, split_finetune_pairs

        step = parameters["clip_finetune"]
        self.step_train = dict(step.get("train") or {})
        self.base = base
        self.max_epochs = config.get("max_epochs")
        self.tmp_dir = config.get("tmp_dir")
        settings = ClipFinetuneConfig.from_params(self.step_train)
        pairs = split_finetune_pairs(make_finetune_pairs(products, image_manifest, step), step)
        learn = pairs[pairs["split"] == "train"].reset_index(drop=True)
        val_size = float(config.get("val_size") or step.get("val_size", 0.2))
        if learn["split_group"].nunique() < 2:
            raise ValueError(
                "tuning target clip_finetune: the training pairs form fewer than 2 groups, "
                "nothing to hold out for validation"
            )
        splitter = GroupShuffleSplit(
            n_splits=1, test_size=val_size, random_state=int(step.get("split_seed", 42))
        )
        fit_idx, val_idx = next(splitter.split(learn, groups=learn["split_group"]))
        frames = {
            "train": learn.iloc[np.sort(fit_idx)].reset_index(drop=True),
            "val": learn.iloc[np.sort(val_idx)].reset_index(drop=True),
            "test": pairs[pairs["split"] == "val"].reset_index(drop=True),
        }
        k = settings.options.recall_ks[-1]
        for name, minimum in (("val", k), ("test", k), ("train", 2)):
            if len(frames[name]) < minimum:
                raise ValueError(
                    f"tuning target clip_finetune: the {name} part has {len(frames[name])} "
                    f"pairs, fewer than {minimum} (recall@{k}): change "
                    "tuning.targets.clip_finetune.val_size or clip_finetune.val_size, or add "
                    "products"
                )
        self.frames = frames
        self.data = {name: pair_data(base, frame, settings) for name, frame in frames.items()}
        logger.info(
            "tuning clip_finetune: %d train / %d validation pairs (from the step's training "
            "split), %d test pairs (the step's validation split)",
            len(frames["train"]),
            len(frames["val"]),
            len(frames["test"]),
        )

    def defaults(self) -> dict[str, Any]:
        """The step's ``clip_finetune.train`` over the task's defaults."""
        from vitrina.models.clip.config import ClipFinetuneConfig

        full = ClipFinetuneConfig.from_params(self.step_train).to_dict()
        return {k: v for k, v in full.items() if k in self.tunable()}

    def _config(self, params: dict[str, Any]) -> Any:
        from vitrina.models.clip.config import CLIP_TRAINING_DEFAULTS, ClipFinetuneConfig

        merged = {**self.step_train, **params}
        merged.setdefault("max_epochs", CLIP_TRAINING_DEFAULTS["max_epochs"])
        capped = cap_epochs(merged, params, ("max_epochs",), self.max_epochs)
        return ClipFinetuneConfig.from_params(capped)

    def _train(self, params: dict[str, Any], callbacks: list[Any]) -> tuple[Any, Any]:
        import tempfile

        from vitrina.models.clip.finetune import fine_tune

        config = self._config(params)
        if self.tmp_dir:
            Path(self.tmp_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="vitrina-tuning-clip-", dir=self.tmp_dir) as tmp:
            result = fine_tune(
                self.base, self.data["train"], self.data["val"], config, tmp, callbacks=callbacks
            )
        return result, config

    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        from vitrina.models.clip.task import EpochReport

        result, _ = self._train(params, [EpochReport(report)])
        return self._keep(params, float(result.best_metrics["mean_recall"]), result.bundle)

    def test_score(self, params: dict[str, Any]) -> float:
        from vitrina.models.clip.finetune import evaluate_retrieval

        bundle, config = self._kept(params), self._config(params)
        if bundle is None:
            bundle = self._train(params, [])[0].bundle
        return float(evaluate_retrieval(bundle, self.data["test"], config)["mean_recall"])
