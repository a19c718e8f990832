"""Tuning targets: what each trainable step exposes to Optuna.

A target knows which parameters it accepts, where they live in the step's own parameters
(``params_path``), how to score a parameter set on the *validation* split (reporting
intermediate values for pruning) and how to score the best set once on the *test* split.

Targets here: :class:`PairClassifierTarget` (``pair_classifier``), :class:`ClipFinetuneTarget`
(``clip_finetune``) and :class:`CaptioningTarget` (``captioning``); the interface is
:class:`~vitrina.pipelines.tuning.base.TuningTarget`, the probing targets are
:class:`~vitrina.pipelines.tuning.probing_target.ProbingTarget`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitrina.tuning import Reporter
from vitrina.utils import limit_threads

from .base import TuningTarget

logger = logging.getLogger(__name__)


def _cap_epochs(
    merged: dict[str, Any], params: dict[str, Any], keys: tuple[str, ...], cap: int | None
) -> dict[str, Any]:
    """``merged`` with each of ``keys`` lowered to ``cap`` unless the trial searched it."""
    if cap is None:
        return merged
    for key in keys:
        if key not in params and key in merged and merged[key] is not None:
            merged[key] = min(int(merged[key]), int(cap))
    return merged


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
        return model, _cap_epochs(train, searched, ("max_epochs",), self.max_epochs)

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
        capped = _cap_epochs(merged, params, ("max_epochs",), self.max_epochs)
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
        config, options = training_settings(_cap_epochs(merged, params, keys, self.max_epochs))
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
