"""Training a captioner with the engine: encoder pre-training, then captioning.

:func:`fit_captioner` runs the two phases of :mod:`.task` as two resumable fits of
:func:`vitrina.training.fit_resumable` in one folder::

    <output_dir>/pretraining/{checkpoints,logs}   encoder pre-training (its last epoch is kept)
    <output_dir>/captioning/{checkpoints,logs}    captioning (the best epoch by val_loss is kept)

A rerun with the same data and settings resumes from ``last.ckpt`` after a ``kill -9``
and ends like an uninterrupted run; a finished run is only reloaded; other data or
settings start afresh (the fingerprint covers the model configuration, the tokenizer,
the settings that change the result and the item ids; pre-training's only the settings
it depends on, so changing only captioning's reuses it; captioning's also covers the
pre-training's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

from vitrina.training import TrainingConfig, TrainingRun, fit_resumable
from vitrina.training.loggers import training_history
from vitrina.training.threads import auto_threads
from vitrina.training.trainer import fingerprint_of
from vitrina.utils import limit_threads

from .configuration import RUNTIME_SETTINGS, CaptioningOptions, select_config, settings_dict
from .data import CaptionDataModule, PixelSource
from .inference import Captioner
from .modeling import build_captioner
from .splits import split_rows
from .task import (
    CaptioningTask,
    EncoderPretrainingTask,
    bag_of_words_targets,
)
from .tokenization import tokenizer_fingerprint

logger = logging.getLogger(__name__)

#: The settings pre-training depends on (changing only captioning's reuses it).
PRETRAINING_SETTINGS = frozenset(
    {
        "pretrain_max_epochs",
        "pretrain_learning_rate",
        "batch_size",
        "weight_decay",
        "warmup_ratio",
        "gradient_clip_val",
        "hflip",
        "seed",
    }
)

HISTORY_COLUMNS = [
    "phase",
    "epoch",
    "train_loss",
    "bow_loss",
    "val_loss",
    "val_bow_loss",
    "learning_rate",
    "is_best",
]


@dataclass
class TrainingResult:
    """What :func:`fit_captioner` returns.

    Attributes:
        captioner: the best epoch's captioner (fp32, CPU), ``meta["training"]`` filled.
        history: one row per epoch and phase (:data:`HISTORY_COLUMNS`; ``epoch`` 1-based).
        best_epoch: 1-based captioning epoch of the lowest validation loss.
        best_val_loss: that loss (mean token cross-entropy, nats).
        seconds: wall time of this call (a resumed run counts its own part).
        resumed: whether captioning resumed from ``last.ckpt`` or found the run done.
        n_truncated: training + validation descriptions cut to ``max_target_length``.
    """

    captioner: Captioner
    history: pd.DataFrame
    best_epoch: int
    best_val_loss: float
    seconds: float
    resumed: bool
    n_truncated: int


class ReportValidation(pl.Callback):
    """Call ``report(val_loss, epoch)`` (1-based) after each captioning validation; what it
    raises (``optuna.TrialPruned``) stops training and propagates (how tuning prunes)."""

    def __init__(self, report: Callable[[float, int], None]) -> None:
        self.report = report

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(pl_module.monitor)
        if isinstance(pl_module, CaptioningTask) and value is not None:
            self.report(float(value), int(trainer.current_epoch) + 1)


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def _state_dict(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    """``(state_dict, epoch)`` of a Lightning checkpoint (tensors and plain data only)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint["state_dict"], int(checkpoint["epoch"])


def epoch_history(root: Path, phase: str, best_epoch: int | None = None) -> pd.DataFrame:
    """One row per epoch of a run folder's CSV logs (every attempt merged), 1-based."""
    logged = training_history(root)
    if logged.empty or "epoch" not in logged:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    columns = [c for c in HISTORY_COLUMNS[2:-1] if c in logged]
    per_epoch = logged.dropna(subset=["epoch"]).groupby("epoch")[columns].last().reset_index()
    per_epoch["epoch"] = per_epoch["epoch"].astype(int) + 1
    per_epoch["phase"] = phase
    per_epoch["is_best"] = per_epoch["epoch"] == best_epoch
    return per_epoch.reindex(columns=HISTORY_COLUMNS)


def fit_captioner(
    captioner: Captioner,
    train: tuple[Sequence[str], Sequence[str], Sequence[str]],
    validation: tuple[Sequence[str], Sequence[str], Sequence[str]],
    config: TrainingConfig,
    options: CaptioningOptions,
    *,
    output_dir: str | Path,
    callbacks: Sequence[pl.Callback] = (),
) -> TrainingResult:
    """Train ``captioner`` on image files and descriptions; keep the best epoch.

    Args:
        captioner: a freshly built captioner (fp32); its weights are trained in place.
        train, validation: ``(ids, image paths, descriptions)`` of each split (processed,
            square images); the ids are part of the fingerprint.
        config: the engine's settings (``num_threads`` ``auto`` may come in ``extra``).
        options: the captioning task's options.
        output_dir: the two run folders (see the module docstring).
        callbacks: extra Lightning callbacks of the captioning phase (tuning's
            :class:`ReportValidation`).

    Returns:
        :class:`TrainingResult` with the best epoch's captioner on the CPU in fp32.

    Raises:
        ValueError: an empty training or validation split, or ids, paths and texts of
            different lengths.
        vitrina.training.NonFiniteLossError: the loss became NaN (last good checkpoint kept).
    """
    for name, split in (("training", train), ("validation", validation)):
        if not len(split[1]):
            raise ValueError(f"captioning needs {name} items, got none")
        if len({len(part) for part in split}) != 1:
            raise ValueError(f"{name} ids, paths and texts must have the same length")
    threads = auto_threads(config.extra.get("num_threads", config.num_threads))
    config = dataclasses.replace(config, num_threads=threads)
    started = time.perf_counter()
    with limit_threads(threads):
        result = _fit(captioner, train, validation, config, options, Path(output_dir), callbacks)
    result.seconds = time.perf_counter() - started
    return result


def _fit(
    captioner: Captioner,
    train: tuple[Sequence[str], Sequence[str], Sequence[str]],
    validation: tuple[Sequence[str], Sequence[str], Sequence[str]],
    config: TrainingConfig,
    options: CaptioningOptions,
    root: Path,
    callbacks: Sequence[pl.Callback],
) -> TrainingResult:
    captioner.model.to(dtype=torch.float32)
    train_targets, n_trunc_train = captioner.encode_targets(train[2])
    val_targets, n_trunc_val = captioner.encode_targets(validation[2])
    if n_trunc_train or n_trunc_val:
        logger.warning(
            "captioning: %d training and %d validation descriptions exceed %d tokens and "
            "are truncated",
            n_trunc_train,
            n_trunc_val,
            captioner.max_target_length,
        )
    workers = options.n_decode_workers
    train_pixels = PixelSource(captioner, train[1], num_workers=workers, desc="train")
    val_pixels = PixelSource(captioner, validation[1], num_workers=workers, desc="validation")
    settings = settings_dict(config, options)
    fingerprint = {
        "model": captioner.meta.get("config"),
        "max_target_length": captioner.max_target_length,
        "tokenizer": tokenizer_fingerprint(captioner.tokenizer),
        "training": {k: v for k, v in settings.items() if k not in RUNTIME_SETTINGS},
        "train": _digest(train[0]),
        "validation": _digest(validation[0]),
    }
    tok = captioner.tokenizer
    bow_head = present = val_present = idf = None
    if options.bow_weight > 0 or options.pretrain_max_epochs > 0:
        torch.manual_seed(config.seed * 1_000_003 + 17)
        bow_head = torch.nn.Linear(int(captioner.model.config.encoder.hidden_size), len(tok))
        ignore = [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id]
        present, idf = bag_of_words_targets(train_targets, len(tok), ignore)
        val_present, _ = bag_of_words_targets(val_targets, len(tok), ignore)

    def data(seed: int, bucketing: bool) -> CaptionDataModule:
        return CaptionDataModule(
            captioner,
            (train_pixels, train_targets),
            (val_pixels, val_targets),
            batch_size=config.batch_size,
            seed=seed,
            bucketing=bucketing,
        )

    history = []
    pre_digest = None
    if options.pretrain_max_epochs > 0:
        pre_config = dataclasses.replace(
            config, max_epochs=options.pretrain_max_epochs, patience=None
        )
        pretraining = EncoderPretrainingTask(
            captioner.model.encoder,
            bow_head,
            train_present=present,
            val_present=val_present,
            idf=idf,
            config=pre_config,
            options=options,
        )
        run = TrainingRun(root / "pretraining", "captioning_pretraining", "val_bow_loss", "min")
        pre_fingerprint = {
            **fingerprint,
            "training": {k: v for k, v in settings.items() if k in PRETRAINING_SETTINGS},
            "phase": "pretraining",
        }
        fitted = fit_resumable(run, pretraining, data(config.seed + 1, False), pre_config,
                               pre_fingerprint)  # fmt: skip
        pretraining.load_state_dict(_state_dict(fitted.last_path)[0])  # the last epoch's
        pre_digest = fingerprint_of(pre_fingerprint)
        history.append(epoch_history(run.root, "pretraining"))

    n_samples = min(options.sample_images, len(validation[1]))
    task = CaptioningTask(
        captioner,
        config=config,
        options=options,
        bow=(bow_head, present, idf) if options.bow_weight > 0 else None,
        samples=(lambda: val_pixels.get(np.arange(n_samples))) if n_samples else None,
    )
    run = TrainingRun(root / "captioning", "captioning", "val_loss", "min")
    fitted = fit_resumable(
        run,
        task,
        data(config.seed, options.length_bucketing),
        config,
        {**fingerprint, "phase": "captioning", "pretraining": pre_digest},
        callbacks,
    )
    state, epoch = _state_dict(fitted.best_path)
    task.load_state_dict(state)
    best_epoch = epoch + 1
    history.append(epoch_history(run.root, "captioning", best_epoch))
    best = captioner.to("cpu", "fp32")
    best.model.eval()
    best.meta = {
        **best.meta,
        "training": {
            "best_epoch": best_epoch,
            "best_val_loss": float(fitted.best_score),
            "epochs": int(config.max_epochs),
            "epochs_trained": int(fitted.epochs),
            "pretrain_epochs": int(options.pretrain_max_epochs),
            "n_train": len(train_targets),
            "n_validation": len(val_targets),
            "n_truncated": n_trunc_train + n_trunc_val,
            "fingerprint": fingerprint_of(fingerprint)[:16],
        },
    }
    frames = [h for h in history if len(h)]
    return TrainingResult(
        captioner=best,
        history=pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=HISTORY_COLUMNS),
        best_epoch=best_epoch,
        best_val_loss=float(fitted.best_score),
        seconds=math.nan,
        resumed=fitted.resumed,
        n_truncated=n_trunc_train + n_trunc_val,
    )


def build_initial_captioner(splits: pd.DataFrame, params: dict[str, Any]) -> Captioner:
    """The configured captioner (``captioning.model``) before training.

    The tokenizer (when a BPE) is trained on the training split's descriptions only.

    Args:
        splits: output of :func:`~.splits.make_captioning_splits`.
        params: ``captioning`` parameters (``model``, ``models``, ``generation``).
    """
    config = select_config(params)
    return build_captioner(
        config, split_rows(splits, "train")["description"].tolist(), params.get("generation")
    )


def fit_on_splits(
    captioner: Captioner,
    splits: pd.DataFrame,
    config: TrainingConfig,
    options: CaptioningOptions,
    *,
    output_dir: str | Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> TrainingResult:
    """:func:`fit_captioner` on the ``train`` and ``validation`` rows of ``splits``
    (``product_id``, ``processed_path``, ``description``). Shared by the pipeline and the
    tuning target, so both train on exactly the same data. Without ``output_dir`` the
    run folders are temporary (removed once the best weights are loaded)."""

    def part(name: str) -> tuple[list[str], list[str], list[str]]:
        rows = split_rows(splits, name)
        return (
            rows["product_id"].astype(str).tolist(),
            rows["processed_path"].tolist(),
            rows["description"].tolist(),
        )

    if output_dir is not None:
        return fit_captioner(captioner, part("train"), part("validation"), config, options,
                             output_dir=output_dir, callbacks=callbacks)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vitrina-captioning-") as tmp:
        return fit_captioner(captioner, part("train"), part("validation"), config, options,
                             output_dir=tmp, callbacks=callbacks)  # fmt: skip
