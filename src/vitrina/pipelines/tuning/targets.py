"""Tuning targets: what each trainable step exposes to Optuna.

A target knows which parameters it accepts, where they live in the step's own parameters
(``params_path``), how to score a parameter set on the *validation* split (reporting
intermediate values for pruning) and how to score the best set once on the *test* split.

Targets: :class:`ProbingTarget` (``probing_mlp``, ``probing_logreg``),
:class:`PairClassifierTarget` (``pair_classifier``), :class:`ClipFinetuneTarget`
(``clip_finetune``) and :class:`CaptioningTarget` (``captioning``).
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from vitrina.datasets.embeddings import EmbeddingsDataset
from vitrina.models.pair_classifier import limit_threads
from vitrina.models.probes import (
    build_probe,
    classification_metrics,
    fit_probe,
    validation_split,
)
from vitrina.tuning import Reporter

logger = logging.getLogger(__name__)


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
        proba = model.predict_proba(self.x[~self.train])
        return classification_metrics(self.y[~self.train], proba, model.classes_)["macro_f1"]


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
    """The pair_matching step's MLP (:class:`~vitrina.models.pair_classifier.PairwiseBinaryClassifier`).

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
    (:class:`~vitrina.models.pair_classifier.PairClassifierConfig`) and ``train.<key>``
    (:class:`~vitrina.models.pair_classifier.TrainConfig`), so the best parameters land in
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
        from vitrina.models.pair_classifier import PairClassifierConfig
        from vitrina.models.pair_classifier import TrainConfig as PairTrainConfig

        model = {f.name for f in dataclasses.fields(PairClassifierConfig)} - {"n_features"}
        train = {f.name for f in dataclasses.fields(PairTrainConfig)} - {"seed"}
        return {f"model.{k}" for k in model} | {f"train.{k}" for k in train}

    def __init__(
        self,
        config: dict[str, Any],
        parameters: dict[str, Any],
        pair_items: pd.DataFrame,
        embeddings: Any,
        pair_splits: pd.DataFrame,
    ) -> None:
        from vitrina.models.pair_classifier import check_labels, fit_feature_builder
        from vitrina.pipelines.pair_matching.nodes import _indexed, _variant_features

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
        items = _indexed(pair_items)
        parts = {s: pair_splits[pair_splits["split"] == s] for s in ("train", "val", "test")}
        for name, part in parts.items():
            if part.empty:
                raise ValueError(
                    f"tuning target pair_classifier: the {name} split has no pairs "
                    f"({len(pair_splits)} pairs in all)"
                )
        features = _variant_features(pm, variants[self.variant], items)
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
        from vitrina.models.pair_classifier import TrainConfig as PairTrainConfig

        train.setdefault("max_epochs", PairTrainConfig.max_epochs)
        searched = {k.split(".", 1)[1] for k in params if k.startswith("train.")}
        return model, _cap_epochs(train, searched, ("max_epochs",), self.max_epochs)

    def defaults(self) -> dict[str, Any]:
        """The dataclass defaults overlaid with the step's ``model`` / ``train`` blocks."""
        from vitrina.models.pair_classifier import PairClassifierConfig
        from vitrina.models.pair_classifier import TrainConfig as PairTrainConfig

        model = {
            f.name: f.default
            for f in dataclasses.fields(PairClassifierConfig)
            if f.name != "n_features"
        }
        train = {f.name: f.default for f in dataclasses.fields(PairTrainConfig) if f.name != "seed"}
        model.update(self.spec.get("model") or {})
        train.update({k: v for k, v in (self.spec.get("train") or {}).items() if k != "seed"})
        return {
            **{f"model.{k}": v for k, v in model.items()},
            **{f"train.{k}": v for k, v in train.items()},
        }

    def _fit(self, params: dict[str, Any], on_epoch: Any = None) -> Any:
        from vitrina.models.pair_classifier import MLPPairEstimator

        model, train = self._blocks(params)
        estimator = MLPPairEstimator(model=model, train={"seed": self.seed, **train})  # as the step
        with limit_threads(self.threads):
            return estimator.fit(
                self.x["train"], self.y["train"], self.x["val"], self.y["val"], on_epoch=on_epoch
            )

    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        from vitrina.models.pair_classifier import select_threshold

        def on_epoch(row: dict[str, float], val_scores: np.ndarray) -> None:
            report(select_threshold(self.y["val"], val_scores)[1], int(row["epoch"]))

        estimator = self._fit(params, on_epoch)
        with limit_threads(self.threads):
            scores = estimator.predict_proba(self.x["val"])[:, 1]
        return select_threshold(self.y["val"], scores)[1]

    def test_score(self, params: dict[str, Any]) -> float:
        from vitrina.models.pair_classifier import binary_metrics, select_threshold

        estimator = self._fit(params)
        with limit_threads(self.threads):
            val = estimator.predict_proba(self.x["val"])[:, 1]
            test = estimator.predict_proba(self.x["test"])[:, 1]
        threshold, _ = select_threshold(self.y["val"], val)
        return binary_metrics(self.y["test"], test, threshold)["f1"]


class _EpochReporter:
    """:class:`~vitrina.models.clip_training.TrainHooks` giving each epoch's validation
    mean recall to Optuna."""

    def __init__(self, report: Reporter) -> None:
        self.report = report

    def on_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.report(float(metrics["mean_recall"]), epoch)


class ClipFinetuneTarget(TuningTarget):
    """The clip_finetune step's contrastive training (:func:`~vitrina.models.clip_training.train_clip`).

    The step itself has a training and a validation split only (and keeps the best
    checkpoint by validation mean recall), so tuning must not choose on that validation
    split: a tuning-validation part is carved from the step's *training* pairs, grouped
    by ``split_group`` (colour variants and identical images stay on one side), and the
    step's validation split is the test split, scored once for the best parameters.

    Objective: the best validation mean recall over the epochs (the metric and the rule
    the step uses to keep its checkpoint), reported after every epoch for the pruner.
    Every trial trains a copy of the base model with its checkpoints in a temporary
    directory of its own (``tmp_dir``, removed afterwards): the step's ``state_dir`` and
    saved models are never touched.

    Args:
        config: ``tuning.targets.clip_finetune`` (``val_size``: share of the training
            pairs held out, default the step's ``val_size``; ``max_epochs``: cap on
            ``epochs`` per trial unless the space searches it; ``tmp_dir``: where the
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
    #: TrainConfig fields that define the metric or the data, not the training.
    FIXED = frozenset({"seed", "recall_ks", "match_duplicates", "precision"})

    @classmethod
    def tunable(cls) -> set[str]:
        """The :class:`~vitrina.models.clip_training.TrainConfig` fields that change the
        trained weights, except the seed, the metric's settings and the precision."""
        from vitrina.models.clip_training import TrainConfig

        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        return fields - TrainConfig.RUNTIME_FIELDS - cls.FIXED

    def __init__(
        self,
        config: dict[str, Any],
        parameters: dict[str, Any],
        products: pd.DataFrame,
        image_manifest: pd.DataFrame,
        base: Any,
    ) -> None:
        from sklearn.model_selection import GroupShuffleSplit

        from vitrina.models.clip_training import ClipAdapter, TrainConfig, pair_data_from_frame
        from vitrina.pipelines.clip_finetune.nodes import make_finetune_pairs, split_finetune_pairs

        step = parameters["clip_finetune"]
        self.step_train = dict(step.get("train") or {})
        self.base = base
        self.max_epochs = config.get("max_epochs")
        self.tmp_dir = config.get("tmp_dir")
        settings = TrainConfig.from_dict(self.step_train)
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
        k = settings.recall_ks[-1]
        for name, minimum in (("val", k), ("test", k), ("train", 2)):
            if len(frames[name]) < minimum:
                raise ValueError(
                    f"tuning target clip_finetune: the {name} part has {len(frames[name])} "
                    f"pairs, fewer than {minimum} (recall@{k}): change "
                    "tuning.targets.clip_finetune.val_size or clip_finetune.val_size, or add "
                    "products"
                )
        self.frames = frames
        adapter = ClipAdapter(base)
        self.data = {
            name: pair_data_from_frame(
                adapter,
                frame,
                match_duplicates=settings.match_duplicates,
                cache_mb=settings.image_cache_mb,
                num_workers=settings.num_workers,
                progress=False,
            )
            for name, frame in frames.items()
        }
        logger.info(
            "tuning clip_finetune: %d train / %d validation pairs (from the step's training "
            "split), %d test pairs (the step's validation split)",
            len(frames["train"]),
            len(frames["val"]),
            len(frames["test"]),
        )

    def defaults(self) -> dict[str, Any]:
        """The step's ``clip_finetune.train`` over :class:`TrainConfig`'s defaults."""
        from vitrina.models.clip_training import TrainConfig

        full = TrainConfig.from_dict(self.step_train).to_dict()
        return {k: v for k, v in full.items() if k in self.tunable()}

    def _config(self, params: dict[str, Any]) -> Any:
        from vitrina.models.clip_training import TrainConfig

        merged = {**self.step_train, **params, "progress": False}
        merged.setdefault("epochs", TrainConfig.epochs)
        return TrainConfig.from_dict(_cap_epochs(merged, params, ("epochs",), self.max_epochs))

    def _train(self, params: dict[str, Any], hooks: list[Any]) -> tuple[Any, Any]:
        import copy
        import tempfile

        from vitrina.models.clip_training import train_clip

        config = self._config(params)
        if self.tmp_dir:
            Path(self.tmp_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="vitrina-tuning-clip-", dir=self.tmp_dir) as tmp:
            result = train_clip(
                copy.deepcopy(self.base.model),
                self.data["train"],
                self.data["val"],
                config,
                state_dir=tmp,
                resume=False,
                hooks=hooks,
            )
        return result, config

    def objective(self, params: dict[str, Any], report: Reporter) -> float:
        result, _ = self._train(params, [_EpochReporter(report)])
        return self._keep(params, float(result.best_metrics["mean_recall"]), result.model)

    def test_score(self, params: dict[str, Any]) -> float:
        import torch

        from vitrina.models.clip_training import evaluate_retrieval, resolve_precision

        model, config = self._kept(params), self._config(params)
        if model is None:
            model = self._train(params, [])[0].model
        device = next(model.parameters()).device
        metrics = evaluate_retrieval(
            model,
            self.data["test"],
            config.recall_ks,
            batch_size=config.eval_batch_size,
            loss_batch_size=config.batch_size,
            precision=resolve_precision(config.precision, torch.device(device)),
            num_workers=config.num_workers,
        )
        return float(metrics["mean_recall"])


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
