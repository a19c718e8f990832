"""The Lightning ``Trainer`` every task trains with, and a ``fit`` that resumes.

A :class:`TrainingRun` owns one folder:

```
<root>/checkpoints/best.ckpt         best by the monitored validation metric (copied at the end)
<root>/checkpoints/last.ckpt         the end of the last finished epoch (resume point)
<root>/checkpoints/top-*.ckpt        the ``save_top_k`` best
<root>/logs/version_<n>/metrics.csv  one CSV log per attempt
<root>/fingerprint.json              what the checkpoints were trained from
<root>/done.json                     written when a fit finishes
```

A rerun with the same fingerprint resumes from ``last.ckpt`` (``ckpt_path="last"``),
restoring weights, optimiser, schedule, early stopping and checkpoint state; every epoch
reseeds from ``(seed, epoch)``, so a run killed with ``kill -9`` ends exactly like an
uninterrupted one. A finished run is not trained again. A different fingerprint
(parameters or data changed) starts afresh, and the old checkpoints are removed, so no
stale model is ever picked up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)

from vitrina.utils import atomic_path, limit_threads

from .config import TrainingConfig
from .loggers import build_loggers, training_history
from .precision import resolve_precision

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A training loss became NaN or infinite; the last good checkpoint is kept."""


def check_finite(loss: torch.Tensor, module: pl.LightningModule, batch_idx: int) -> None:
    """Raise before ``backward`` when ``loss`` is not finite, naming the epoch and step.

    Called from a task's ``training_step``: the weights are never touched by a NaN
    gradient, and the checkpoints already written stay the last good ones.

    Raises:
        NonFiniteLossError: naming the loss value, epoch, global step and batch index.
    """
    if not bool(torch.isfinite(loss.detach()).all()):
        trainer = module.trainer
        raise NonFiniteLossError(
            f"training loss is {float(loss.detach()):g} at epoch {trainer.current_epoch}, "
            f"global step {trainer.global_step} (batch {batch_idx}); training stopped, the "
            "last good checkpoint is kept. Lower training.learning_rate, or check the "
            "inputs of that batch."
        )


def resolve_accelerator(accelerator: str) -> str:
    """``auto`` → ``gpu`` when CUDA is visible, else ``cpu``; other values unchanged."""
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def fingerprint_of(payload: dict[str, Any]) -> str:
    """SHA-256 of ``payload`` as canonical JSON (what a checkpoint was trained from)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_resumable` returns.

    Attributes:
        best_path: ``best.ckpt`` (the best epoch by the monitored metric).
        best_score: its monitored value.
        last_path: ``last.ckpt`` (the end of the last epoch).
        epochs: epochs trained in all attempts.
        resumed: whether this call resumed from ``last.ckpt`` (or found the run done).
    """

    best_path: Path
    best_score: float
    last_path: Path
    epochs: int
    resumed: bool


@dataclass(frozen=True)
class TrainingRun:
    """One training folder (see the module docstring) and what it optimises.

    Attributes:
        root: the run folder.
        name: the task name; MLflow metrics are logged as ``<name>-<metric>``.
        monitor: the validation metric that picks the best checkpoint (``val_macro_f1``).
        mode: ``max`` or ``min``.
    """

    root: Path
    name: str
    monitor: str
    mode: str = "max"

    @property
    def checkpoints(self) -> Path:
        return Path(self.root) / "checkpoints"

    def trainer(
        self,
        config: TrainingConfig,
        extra_callbacks: Sequence[Callback] = (),
        trainer_options: dict[str, Any] | None = None,
    ) -> pl.Trainer:
        """A ``Trainer`` with the project's callbacks, loggers and precision rules.

        Callbacks: ``top-*.ckpt`` (``save_top_k``) with ``last.ckpt``,
        ``EarlyStopping`` on the monitored metric (``patience``; also stops on a NaN
        metric), ``LearningRateMonitor`` and Lightning's progress bar, then
        ``extra_callbacks`` (pruning, tests). ``trainer_options`` are further
        ``Trainer`` arguments of a task (e.g. ``accumulate_grad_batches``).
        """
        accelerator = resolve_accelerator(config.accelerator)
        callbacks: list[Callback] = [
            ModelCheckpoint(
                dirpath=self.checkpoints,
                filename="top-{epoch:02d}",
                monitor=self.monitor,
                mode=self.mode,
                save_top_k=config.save_top_k,
                save_last=True,
                enable_version_counter=False,
            ),
            LearningRateMonitor(logging_interval="epoch"),
        ]
        if config.patience:
            callbacks.append(
                EarlyStopping(
                    monitor=self.monitor,
                    mode=self.mode,
                    patience=config.patience,
                    check_finite=True,
                )
            )
        callbacks.extend(extra_callbacks)
        return pl.Trainer(
            default_root_dir=str(self.root),
            max_epochs=config.max_epochs,
            accelerator=accelerator,
            devices=config.devices,
            strategy=config.strategy,
            precision=resolve_precision(config.precision, accelerator),
            gradient_clip_val=config.gradient_clip_val,
            callbacks=callbacks,
            logger=build_loggers(Path(self.root), self.name),
            log_every_n_steps=config.log_every_n_steps,
            limit_train_batches=config.limit_train_batches,
            num_sanity_val_steps=0,
            deterministic=False,
            enable_model_summary=False,
            enable_progress_bar=_interactive(),
            plugins=[AtomicCheckpointIO()],
            **(trainer_options or {}),
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through :func:`vitrina.utils.atomic_path`.

    Lightning's own save goes through an fsspec transaction that writes a temporary file
    in the system temp folder and then moves it: across file systems that move is a copy,
    and a ``kill -9`` during it leaves a truncated ``last.ckpt``. Here the temporary file
    sits beside the target and is renamed into place.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()


def fit_resumable(
    run: TrainingRun,
    module: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    config: TrainingConfig,
    fingerprint: dict[str, Any],
    extra_callbacks: Sequence[Callback] = (),
    trainer_options: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``module``, resuming an interrupted run with the same ``fingerprint``.

    Args:
        run: the run folder and monitored metric.
        module: the task, freshly built with its initial weights (seeded by the caller).
        datamodule: its data; training order per epoch comes from ``(seed, epoch)``.
        config: training settings.
        fingerprint: everything the result depends on (task parameters, data ids and
            labels, initial weights' identity). A change starts a new run.
        extra_callbacks: added after the project's callbacks.
        trainer_options: further ``Trainer`` arguments (see :meth:`TrainingRun.trainer`).

    Returns:
        :class:`FitResult` of the best checkpoint.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        RuntimeError: training ended without a best checkpoint (no validation metric).
    """
    root = Path(run.root)
    digest = fingerprint_of(fingerprint)
    stamp, done = root / "fingerprint.json", root / "done.json"
    previous = json.loads(stamp.read_text())["sha256"] if stamp.is_file() else None
    if previous is not None and previous != digest:
        logger.warning(
            "%s: parameters or data changed since %s was trained; starting afresh "
            "(old checkpoints removed)",
            run.name,
            root,
        )
        for stale in (run.checkpoints, root / "logs", done):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(
                missing_ok=True
            )
    if previous == digest and done.is_file() and (run.checkpoints / "best.ckpt").is_file():
        record = json.loads(done.read_text())
        logger.info("%s: already trained (%s); reusing best.ckpt", run.name, root)
        return FitResult(
            run.checkpoints / "best.ckpt",
            float(record["best_score"]),
            run.checkpoints / "last.ckpt",
            int(record["epochs"]),
            True,
        )
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(stamp) as tmp:
        tmp.write_text(
            json.dumps({"sha256": digest, "fingerprint": fingerprint}, default=str, indent=2)
        )
    resume = (run.checkpoints / "last.ckpt").is_file()
    if resume:
        logger.info("%s: resuming from %s", run.name, run.checkpoints / "last.ckpt")
    trainer = run.trainer(config, extra_callbacks, trainer_options)
    with limit_threads(config.num_threads):
        trainer.fit(module, datamodule=datamodule, ckpt_path="last" if resume else None)
    best_cb = trainer.checkpoint_callback
    best = Path(best_cb.best_model_path) if best_cb and best_cb.best_model_path else None
    if best is None or not best.is_file():
        raise RuntimeError(
            f"{run.name}: training ended without a best checkpoint; is '{run.monitor}' logged "
            "in validation?"
        )
    score = float(best_cb.best_model_score) if best_cb.best_model_score is not None else math.nan
    with atomic_path(run.checkpoints / "best.ckpt") as tmp:
        shutil.copyfile(best, tmp)
    best = run.checkpoints / "best.ckpt"
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps({"best_score": score, "epochs": trainer.current_epoch}))
    return FitResult(best, score, run.checkpoints / "last.ckpt", int(trainer.current_epoch), resume)


__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "TrainingRun",
    "check_finite",
    "fingerprint_of",
    "fit_resumable",
    "resolve_accelerator",
    "training_history",
]
