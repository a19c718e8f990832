"""Nodes: train one classification task on the Lightning engine, and evaluate it."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd

from vitrina.hooks import git_commit
from vitrina.models.classifiers import pruning
from vitrina.models.classifiers.artefact import ImageClassifier, load_lightning_checkpoint
from vitrina.models.classifiers.backbones import build_backbone
from vitrina.models.classifiers.kinds import task_class
from vitrina.models.classifiers.labels import TAG_SEPARATOR, class_indices, multi_hot
from vitrina.models.classifiers.metrics import (
    choose_thresholds,
    multiclass_metrics,
    multilabel_metrics,
    retrieval_metrics,
)
from vitrina.training import TrainingConfig, TrainingRun, fit_resumable
from vitrina.training.data import ArrayDataModule, ArrayDataset, decode_images
from vitrina.training.loggers import training_history

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ["task", "kind", "backbone", "model", "split", "metric", "value", "n"]


def task_settings(task: dict[str, Any], params: dict[str, Any]) -> tuple[TrainingConfig, int]:
    """The task's training settings (``classification.training`` merged with its own) and
    image size.

    Raises:
        ValueError: an unknown or out-of-range training setting, naming the task.
    """
    training = {**(params.get("training") or {}), **(task.get("training") or {})}
    config = TrainingConfig.from_params(
        training, where=f"classification.tasks.{task['name']}.training"
    )
    return config, int(task.get("image_size", params.get("image_size", 224)))


def encode(items: pd.DataFrame, kind: str) -> tuple[list[str], np.ndarray, int]:
    """``(classes, targets, n_train_classes)`` of the items.

    Multiclass and multilabel classes are those of the train split (sorted); metric
    learning lists the train classes first (the loss's), then validation and test ones.
    """
    train = items["split"] == "train"
    if kind == "multilabel":
        classes = sorted(
            {t for v in items.loc[train, "target"] for t in v.split(TAG_SEPARATOR) if t}
        )
        return classes, multi_hot(items["target"], classes), len(classes)
    if kind == "metric_learning":
        parts = [
            sorted(items.loc[items["split"] == s, "target"].unique())
            for s in ("train", "validation", "test")
        ]
        classes = [c for part in parts for c in part]
        return classes, class_indices(items["target"], classes), len(parts[0])
    classes = sorted(items.loc[train, "target"].unique())
    return classes, class_indices(items["target"], classes), len(classes)


def decode_items(
    items: pd.DataFrame, image_size: int, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the items' images once; ``(images uint8 [N, S, S, 3], ok bool [N])``.

    Unreadable images are logged with their product ids and left out (``ok`` false).
    """
    images, errors = decode_images(
        items["image_path"].tolist(), image_size, n_workers=int(params.get("n_decode_workers", 2))
    )
    ok = np.ones(len(items), dtype=bool)
    for i, reason, detail in errors:
        ok[i] = False
        logger.warning(
            "classification: %s image of %s left out: %s",
            reason,
            items["product_id"].iat[i],
            detail,
        )
    return images, ok


def task_inputs(
    items: pd.DataFrame, task: dict[str, Any], params: dict[str, Any]
) -> tuple[TrainingConfig, int, pd.DataFrame, np.ndarray, Any]:
    """What training and the baseline start from: settings, image size, the items whose
    images decode, those images, and the backbone with its initial weights (seeded, so
    the baseline's frozen backbone is exactly the one training starts from)."""
    config, image_size = task_settings(task, params)
    images, ok = decode_items(items, image_size, params)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    backbone = build_backbone(
        task["backbone"],
        checkpoint=task.get("checkpoint"),
        image_size=image_size,
        overrides=task.get("backbone_overrides"),
    )
    return config, image_size, items[ok].reset_index(drop=True), images[ok], backbone


def _items_digest(items: pd.DataFrame) -> str:
    frame = items[["product_id", "target", "split"]].astype(str)
    return hashlib.sha256(
        pd.util.hash_pandas_object(frame, index=False).values.tobytes()
    ).hexdigest()


def train_classifier(
    items: pd.DataFrame, task: dict[str, Any], params: dict[str, Any]
) -> tuple[ImageClassifier, pd.DataFrame]:
    """Train one task with the Lightning engine and return its best model.

    Checkpoints (best, last, top-k) and CSV logs go to ``<output_dir>/<task>/``; a killed
    run resumes from ``last.ckpt``, a finished one is not trained again, and changed
    parameters or data start afresh (:func:`vitrina.training.fit_resumable`). After
    training: multilabel thresholds are chosen on validation, pruning (``end``
    schedule) is applied, and a metric-learning model embeds every item as its gallery.

    Returns:
        The :class:`ImageClassifier` and the training history (one row per logged step).

    Raises:
        vitrina.training.NonFiniteLossError: the loss became NaN (last good checkpoint kept).
        vitrina.models.classifiers.artefact.CheckpointMismatchError: ``init.classifier``
            is of another kind or class count.
    """
    name, kind = task["name"], task["kind"]
    config, image_size, items, images, backbone = task_inputs(items, task, params)
    classes, targets, n_train_classes = encode(items, kind)
    split = items["split"].to_numpy()
    train_targets = targets[split == "train"]
    options = {**(task.get("options") or {}), "n_train_classes": n_train_classes}
    if kind == "multiclass":
        options["class_counts"] = np.bincount(train_targets, minlength=len(classes)).tolist()
    module = task_class(kind)(
        backbone, classes=classes, training=config.to_dict(), options=options, image_size=image_size
    )
    init = task.get("init") or {}
    if init.get("classifier"):
        _initialise(module, init, kind, len(classes))
    prune_cfg = pruning.validate(task["pruning"]) if task.get("pruning") else None
    callbacks = (
        [pruning.pruning_callback(prune_cfg, module)]
        if prune_cfg and prune_cfg["schedule"] == "epoch"
        else []
    )
    data = ArrayDataModule(
        ArrayDataset(images[split == "train"], train_targets),
        ArrayDataset(images[split == "validation"], targets[split == "validation"]),
        batch_size=config.batch_size, seed=config.seed, num_workers=config.num_workers,
    )  # fmt: skip
    run = TrainingRun(Path(params["output_dir"]) / name, name=name, monitor=module.monitor)
    fingerprint = {"task": task, "training": config.to_dict(), "items": _items_digest(items),
                   "image_size": image_size, "backbone": module.hparams["backbone_spec"]}  # fmt: skip
    started = time.perf_counter()
    result = fit_resumable(run, module, data, config, fingerprint, callbacks)
    per_epoch = bool(prune_cfg and prune_cfg["schedule"] == "epoch")
    best = load_lightning_checkpoint(result.last_path if per_epoch else result.best_path)
    val = split == "validation"
    summary: dict[str, Any] = {"best_" + module.monitor: result.best_score, "epochs": result.epochs}
    if kind == "multilabel":
        thresholds = choose_thresholds(targets[val], best.predict_images(images[val]))
        best.options["thresholds"] = best.hparams["options"]["thresholds"] = thresholds.tolist()
    if prune_cfg:
        summary["pruning"] = _prune_report(best, prune_cfg, images[val], targets[val], run)
    gallery = None
    if kind == "metric_learning":
        gallery = {"ids": items["product_id"].astype(str).to_numpy(),
                   "labels": items["target"].astype(str).to_numpy(),
                   "embeddings": best.predict_images(images)}  # fmt: skip
    cfg = {
        "task": name, "kind": kind, "classes": classes, "image_size": image_size,
        "image_mean": list(backbone.image_mean), "image_std": list(backbone.image_std),
        "backbone": task["backbone"], "backbone_checkpoint": task.get("checkpoint"),
        "thresholds": best.options.get("thresholds"), "hparams": dict(best.hparams),
        "source_checkpoint": str(result.last_path if per_epoch else result.best_path), "git_commit": git_commit(Path.cwd()),
        "training_seconds": round(time.perf_counter() - started, 1), **summary,
    }  # fmt: skip
    logger.info(
        "classification %s: best %s=%.4f after %d epochs",
        name,
        module.monitor,
        result.best_score,
        result.epochs,
    )
    return ImageClassifier(best, cfg, gallery), training_history(run.root)


def _initialise(module: Any, init: dict[str, Any], kind: str, n_classes: int) -> None:
    """Start from a saved Vitrina classifier (seed 004's ``our_models/best.pth``); with
    ``new_head: true`` only its backbone weights (seed 004's ``diff_classes_flag``)."""
    new_head = bool(init.get("new_head", False))
    source = ImageClassifier.load(
        init["classifier"],
        kind=None if new_head else kind,
        n_classes=None if new_head else n_classes,
    )
    if new_head:
        module.backbone.load_state_dict(source.task.backbone.state_dict())
    else:
        module.load_state_dict(source.task.state_dict())


def _monitor_value(task: Any, images: np.ndarray, targets: np.ndarray) -> float:
    outputs = task.predict_images(images)
    if task.kind == "multiclass":
        return multiclass_metrics(targets, outputs)["macro_f1"]
    if task.kind == "multilabel":
        return multilabel_metrics(
            targets, outputs, np.asarray(task.options.get("thresholds", 0.5))
        )["map"]
    return retrieval_metrics(outputs, targets)["map_at_r"]


def _prune_report(
    task: Any, cfg: dict[str, Any], images: np.ndarray, targets: np.ndarray, run: TrainingRun
) -> dict[str, Any]:
    metric = task.monitor
    if cfg["schedule"] == "end":
        before = _monitor_value(task, images, targets)
        reached = pruning.prune_once(task, cfg)
        after = _monitor_value(task, images, targets)
    else:
        history = training_history(run.root)
        early = history[history["epoch"] < cfg["start_epoch"]]
        before = (
            float(early[metric].max())
            if metric in early and early[metric].notna().any()
            else float("nan")
        )
        reached, after = pruning.sparsity(task), _monitor_value(task, images, targets)
    logger.info(
        "pruning %s: sparsity %.3f, %s %.4f -> %.4f", cfg["method"], reached, metric, before, after
    )
    return {**cfg, "sparsity": reached, f"{metric}_before": before, f"{metric}_after": after}


def targets_for(kind: str, classes: list[str], labels: pd.Series) -> np.ndarray:
    """Targets of ``labels`` for a trained model's ``classes``: class indices, multi-hot
    rows, or (metric learning, whose evaluation classes are new) per-label ids."""
    if kind == "multiclass":
        return class_indices(labels, classes)
    if kind == "multilabel":
        return multi_hot(labels, classes)
    return pd.factorize(labels.astype(str))[0].astype(np.int64)


def predictions_metrics(
    model: ImageClassifier, outputs: np.ndarray, targets: np.ndarray
) -> dict[str, float]:
    """The kind's metrics of ``outputs`` (probabilities or embeddings) against targets."""
    if model.kind == "multiclass":
        return multiclass_metrics(targets, outputs)
    if model.kind == "multilabel":
        return multilabel_metrics(targets, outputs, np.asarray(model.config["thresholds"]))
    return retrieval_metrics(outputs, targets)


def evaluate_classifier(
    model: ImageClassifier, items: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics of the trained model on validation and test, and its test predictions.

    Returns:
        ``metrics`` (``task, kind, backbone, model, split, metric, value, n``; the pruning
        sparsity and before/after values too) and ``test outputs`` (``product_id, target``
        and ``pred`` — the top class, the tags over their thresholds, or the nearest other
        test item's class).
    """
    rows, preds = [], None
    for part in ("validation", "test"):
        subset = items[items["split"] == part].reset_index(drop=True)
        images, ok = decode_items(subset, model.image_size, params)
        subset, images = subset[ok].reset_index(drop=True), images[ok]
        classes = model.classes
        targets = targets_for(model.kind, classes, subset["target"])
        outputs = model.predict(images)
        for metric, value in predictions_metrics(model, outputs, targets).items():
            rows.append({"split": part, "metric": metric, "value": value, "n": len(subset)})
        if part == "test":
            preds = subset[["product_id", "target"]].assign(
                pred=_pred_labels(model, outputs, classes, subset)
            )
    for key, value in (model.config.get("pruning") or {}).items():
        if isinstance(value, float):
            rows.append({"split": "validation", "metric": f"pruning_{key}", "value": value, "n": 0})
    metrics = pd.DataFrame(rows).assign(
        task=model.config["task"],
        kind=model.kind,
        backbone=model.config["backbone"],
        model="trained",
    )
    return metrics[METRIC_COLUMNS], preds


def _pred_labels(
    model: ImageClassifier, outputs: np.ndarray, classes: list[str], subset: pd.DataFrame
) -> list[str]:
    if model.kind == "multiclass":
        return [classes[i] for i in outputs.argmax(1)]
    if model.kind == "multilabel":
        over = outputs >= np.asarray(model.config["thresholds"])
        return [
            TAG_SEPARATOR.join(c for c, on in zip(classes, row, strict=True) if on) for row in over
        ]
    sims = outputs @ outputs.T
    np.fill_diagonal(sims, -np.inf)
    return (
        subset["target"].to_numpy()[sims.argmax(1)].tolist()
        if len(subset) > 1
        else [""] * len(subset)
    )
