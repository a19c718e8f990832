"""Fine-tune a CLIP bundle on pairs tables, and measure retrieval: the library entry points.

* :func:`fine_tune` — :class:`~.task.ClipFinetuneTask` on :func:`vitrina.training.
  fit_resumable` (the run folder's ``checkpoints/`` and ``logs/``; a rerun resumes), the
  best epoch's weights put back into a copy of the bundle;
* :func:`evaluate_retrieval` — recall@k, median rank and chance levels of a bundle on a
  pairs table (the base and the fine-tuned model, scored alike);
* :func:`clip_history` — the per-epoch history of a run folder.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vitrina.training import TrainingRun, fit_resumable, resolve_precision
from vitrina.training.loggers import training_history
from vitrina.training.trainer import FitResult, resolve_accelerator
from vitrina.utils import limit_threads

from .bundle import ClipBundle
from .config import RUNTIME_SETTINGS, ClipFinetuneConfig
from .data import ClipDataModule, PairData, pair_data_from_frame, prefetch
from .task import ClipFinetuneTask, pair_features, validation_metrics

logger = logging.getLogger(__name__)


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 of every tensor of the state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def pair_data(
    bundle: ClipBundle, pairs: pd.DataFrame, config: ClipFinetuneConfig, **kw: Any
) -> PairData:
    """:func:`pair_data_from_frame` with the config's duplicate, cache and thread settings."""
    o = config.options
    return pair_data_from_frame(
        bundle,
        pairs,
        match_duplicates=o.match_duplicates,
        cache_mb=kw.pop("cache_mb", o.image_cache_mb),
        decode_threads=o.decode_threads,
        **kw,
    )


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns.

    Attributes:
        bundle: the fine-tuned bundle (the base's processor, the best epoch's weights).
        history: :func:`clip_history` of the run.
        best_epoch: the kept epoch (1-based).
        best_metrics: its validation metrics (``mean_recall``, ``t2i_recall_10`` …).
        fit: the engine's :class:`~vitrina.training.trainer.FitResult`.
    """

    bundle: ClipBundle
    history: pd.DataFrame
    best_epoch: int
    best_metrics: dict[str, float]
    fit: FitResult


def fine_tune(
    base: ClipBundle,
    train_pairs: pd.DataFrame | PairData,
    val_pairs: pd.DataFrame | PairData,
    config: ClipFinetuneConfig,
    root: str | Path,
    *,
    fingerprint_extra: str = "",
    callbacks: Sequence[pl.Callback] = (),
    name: str = "clip_finetune",
) -> FineTuneResult:
    """Fine-tune a copy of ``base.model`` on the pairs; keep the best validation epoch.

    Args:
        base: the base bundle (not modified).
        train_pairs, val_pairs: pairs tables (``title``, ``processed_path``, ``image_key``,
            ``text_key``), or :class:`~.data.PairData` already built from them.
        config: ``clip_finetune.train``.
        root: the run folder (see :mod:`vitrina.training.trainer`).
        fingerprint_extra: a digest of the data (:func:`~.pairs.data_digest`).
        callbacks: further Lightning callbacks (tuning's :class:`~.task.EpochReport`).
        name: the task name (MLflow metrics ``<name>-<metric>``).

    Raises:
        ValueError: fewer validation pairs than ``max(recall_ks)``, fewer than 2 training
            pairs.
        vitrina.training.NonFiniteLossError: the loss became NaN/inf (the last good
            checkpoint is kept; the message names the epoch and step).
    """
    ks = config.options.recall_ks
    if len(val_pairs) < ks[-1]:
        raise ValueError(
            f"the validation split has {len(val_pairs)} pairs, too few for recall@{ks[-1]}: "
            "raise clip_finetune.val_size, add products or lower clip_finetune.train.recall_ks"
        )
    train, val = (
        p if isinstance(p, PairData) else pair_data(base, p, config)
        for p in (train_pairs, val_pairs)
    )
    pl.seed_everything(config.training.seed, verbose=False)
    model = copy.deepcopy(base.model).train()
    task = ClipFinetuneTask(model, config, base.mean, base.std)
    data = ClipDataModule(
        train,
        val,
        batch_size=config.training.batch_size,
        eval_batch_size=config.options.eval_batch_size,
        seed=config.training.seed,
    )
    settings = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_SETTINGS}
    fingerprint = {
        "settings": settings,
        "model": model_fingerprint(base.model),
        "data": fingerprint_extra,
    }
    logger.info(
        "%s: %d train / %d validation pairs, %d trainable / %d frozen parameters",
        name,
        len(train),
        len(val),
        task.counts["trainable"],
        task.counts["frozen"],
    )
    run = TrainingRun(Path(root), name=name, monitor=task.monitor)
    result = fit_resumable(
        run,
        task,
        data,
        config.training,
        fingerprint,
        callbacks,
        trainer_options={"accumulate_grad_batches": config.options.accumulate_grad_batches},
    )
    state = torch.load(result.best_path, map_location="cpu", weights_only=True)
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    best_model = copy.deepcopy(base.model)
    best_model.load_state_dict(weights)
    history = clip_history(run.root)
    best_epoch = int(state["epoch"]) + 1
    row = history[history["epoch"] == best_epoch]
    best_metrics = {k: float(v) for k, v in row.iloc[-1].items()} if len(row) else {}
    return FineTuneResult(
        base.with_model(best_model.eval()), history, best_epoch, best_metrics, result
    )


def clip_history(root: str | Path) -> pd.DataFrame:
    """One row per epoch (1-based ``epoch``): ``step`` (optimiser steps done), ``train_loss``, ``val_loss``,
    ``<dir>_recall_<k>``, ``<dir>_median_rank``, ``mean_recall``, ``lr``, ``pairs_per_s``,
    ``seconds`` (training, validation excluded), ``logit_scale`` and ``is_best`` (1 where the mean recall rose above every earlier
    epoch's: the epochs the best checkpoint moved to)."""
    raw = training_history(Path(root))
    if "val_mean_recall" not in raw.columns:
        return pd.DataFrame(columns=["epoch", "step", "train_loss", "mean_recall", "is_best"])
    epochs = raw.groupby("epoch", as_index=False).last()
    epochs = epochs[epochs["val_mean_recall"].notna()].copy()
    out = pd.DataFrame(
        {"epoch": epochs["epoch"].astype(int) + 1, "step": epochs["step"].astype(int) + 1}
    )
    if "train_loss_epoch" in epochs:
        out["train_loss"] = epochs["train_loss_epoch"].to_numpy()
    for column in epochs.columns:
        if column.startswith("val_"):
            key = "val_loss" if column == "val_loss" else column.removeprefix("val_")
            out[key] = epochs[column].to_numpy()
        elif column.startswith("lr-") and "lr" not in out:
            out["lr"] = epochs[column].to_numpy()
        elif column in ("pairs_per_s", "logit_scale", "train_seconds"):
            out[column.removeprefix("train_")] = epochs[column].to_numpy()
    best = out["mean_recall"].cummax().shift(fill_value=-math.inf)
    out["is_best"] = (out["mean_recall"] > best).astype(float)
    return out.reset_index(drop=True)


def _autocast(precision: str, device: torch.device) -> Any:
    dtype = (
        torch.bfloat16
        if precision.startswith("bf16")
        else (torch.float16 if precision.startswith("16") else None)
    )
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def evaluate_retrieval(
    bundle: ClipBundle, pairs: pd.DataFrame | PairData, config: ClipFinetuneConfig
) -> dict[str, float]:
    """Text→image and image→text retrieval of ``bundle`` on the pairs of a split.

    Images are decoded per batch (no cache); the model runs on the config's accelerator
    and precision (the engine's rules), in eval mode, ``eval_batch_size`` pairs at a time.

    Returns:
        :func:`~.metrics.retrieval_metrics` (``n``, recall@k, ranks, chance levels) plus
        ``val_loss`` (the training loss on fixed chunks of ``batch_size`` pairs).
    """
    data = pairs if isinstance(pairs, PairData) else pair_data(bundle, pairs, config, cache_mb=0)
    t = config.training
    accelerator = resolve_accelerator(t.accelerator)
    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else "cpu")
    precision = resolve_precision(t.precision, accelerator)
    model = bundle.model.to(device)
    was_training = model.training
    model.eval()
    mean = torch.tensor(bundle.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, device=device).view(1, 3, 1, 1)
    images, texts = [], []
    try:
        step = config.options.eval_batch_size
        chunks = [np.arange(s, min(s + step, len(data))) for s in range(0, len(data), step)]
        with limit_threads(t.num_threads):
            for cpu_batch in prefetch(data, chunks, config.options.decode_threads):
                batch = {k: v.to(device) for k, v in cpu_batch.items()}
                batch["pixel_values"] = (batch.pop("pixels").float() / 255.0 - mean) / std
                with _autocast(precision, device):
                    img, txt = pair_features(model, batch)
                images.append(F.normalize(img.float(), dim=-1).cpu())
                texts.append(F.normalize(txt.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    metrics = validation_metrics(
        torch.cat(images),
        torch.cat(texts),
        data.image_keys,
        data.text_keys,
        model.logit_scale.cpu(),
        config.options.recall_ks,
        t.batch_size,
    )
    metrics["val_loss"] = metrics.pop("loss")
    return {k: float(v) for k, v in metrics.items()}


__all__ = [
    "FineTuneResult",
    "clip_history",
    "evaluate_retrieval",
    "fine_tune",
    "model_fingerprint",
    "pair_data",
]
