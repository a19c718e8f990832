"""The pair MLP and its training on the engine (:mod:`vitrina.training`).

:class:`PairwiseBinaryClassifier` is the seed system's MLP over pair features.
:func:`train_pair_mlp` trains it as a small LightningModule (:class:`PairMLPTask`) with the
engine's rules: AdamW over :func:`~vitrina.training.optim.adamw_with_cosine`'s parameter
groups and warm-up + cosine schedule, the precision of
:func:`~vitrina.training.resolve_precision`, Lightning's gradient clipping and
``EarlyStopping``, each epoch's order from :func:`~vitrina.training.data.epoch_order`.

What differs from the engine's :func:`~vitrina.training.fit_resumable`: nothing is written
to disk. The MLP is fitted inside a scikit-learn estimator's ``fit`` (seconds, thousands
of times in a tuning study), so there is no run folder, no checkpoint file and no logger;
the best epoch's weights are kept in memory (:class:`KeepBestWeights`) and restored at the
end, as Lightning's ``ModelCheckpoint`` would restore ``best.ckpt``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from sklearn.metrics import average_precision_score
from torch import nn
from torch.nn import functional as F

from vitrina.training import TrainingConfig, check_finite, resolve_precision
from vitrina.training.data import epoch_order
from vitrina.training.optim import adamw_with_cosine
from vitrina.training.trainer import resolve_accelerator

logger = logging.getLogger(__name__)

#: ``on_epoch`` callback: ``(history row, validation match probabilities float32 [N_val])``.
EpochHook = Callable[[dict[str, float], np.ndarray], None]


class PairwiseBinaryClassifier(nn.Module):
    """MLP over pair features: ``[B, F]`` → one logit per pair ``[B]``.

    ``n_layers`` blocks ``Linear(F or H, H) → ReLU → Dropout(p)``, then ``Linear(H, 1)``.
    Apply ``torch.sigmoid`` to the logits for match probabilities. The input features are
    symmetric in the two items (see :class:`.features.PairFeatureBuilder`), so the output
    is too.

    Args:
        n_features: input width ``F``.
        hidden_size: width ``H`` of every hidden layer (the seed system used 256).
        n_layers: number of hidden layers.
        dropout: dropout probability after each hidden layer.
    """

    def __init__(
        self, n_features: int, hidden_size: int = 256, n_layers: int = 2, dropout: float = 0.2
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = int(n_features)
        for _ in range(int(n_layers)):
            layers += [nn.Linear(width, int(hidden_size)), nn.ReLU(), nn.Dropout(float(dropout))]
            width = int(hidden_size)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``float32 [B, F]`` → logits ``float32 [B]``."""
        return self.net(x).squeeze(-1)


def batched_logits(module: nn.Module, x: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    """``module(x)`` in slices of ``batch_size`` rows, without gradients: ``float32 [N]``."""
    if len(x) == 0:
        return torch.zeros(0)
    with torch.no_grad():
        return torch.cat(
            [module(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)]
        )


class EpochBatches:
    """Training batches ``(x [B, F], y [B])`` sliced from in-memory tensors, in the order of
    :func:`~vitrina.training.data.epoch_order` for the trainer's current epoch.

    A plain iterable rather than a ``DataLoader``: Lightning accepts one, and a loader
    over a ``TensorDataset`` indexes (and collates) row by row, which cost more than the
    MLP's own step on ~6,000 pairs.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        epoch: Callable[[], int],
        shuffle: bool = True,
    ) -> None:
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, int(batch_size), seed, epoch
        self.shuffle = shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = epoch_order(n, self.seed, self.epoch()) if self.shuffle else torch.arange(n)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


class PairMLPTask(pl.LightningModule):
    """Class-weighted BCE on pair logits; one history row per validation epoch.

    Args:
        net: the classifier.
        config: the engine settings (``learning_rate``, ``weight_decay``,
            ``warmup_ratio`` are read here).
        pos_weight: BCE weight of the positive class (``n_negative / n_positive`` for
            ``class_weight: balanced``).
        monitor: ``pr_auc`` (validation average precision, higher is better) or ``loss``;
            logged as ``val_score`` (higher is better: the loss is negated).
        on_epoch: optional :data:`EpochHook`; an exception it raises stops training.
    """

    def __init__(
        self,
        net: PairwiseBinaryClassifier,
        config: TrainingConfig,
        pos_weight: float,
        monitor: str,
        y_val: np.ndarray,
        on_epoch: EpochHook | None = None,
    ) -> None:
        super().__init__()
        self.net, self.config, self.monitor, self.on_epoch = net, config, monitor, on_epoch
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float(pos_weight)))
        self.y_val = np.asarray(y_val).astype(np.int64)
        self.history: list[dict[str, float]] = []
        self._train_sum = torch.zeros(())
        self._train_n = 0
        self._val_logits: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        loss = self.loss_fn(self.net(x).float(), y)
        check_finite(loss, self, batch_idx)
        self._train_sum = self._train_sum + loss.detach().float() * len(y)
        self._train_n += len(y)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._val_logits.append(self.net(batch[0]).float().detach().cpu())

    def on_validation_epoch_end(self) -> None:
        logits = torch.cat(self._val_logits) if self._val_logits else torch.zeros(0)
        self._val_logits = []
        y = self.y_val
        yt = torch.from_numpy(y.astype(np.float32))
        pos_weight = self.loss_fn.pos_weight.detach().cpu()
        val_loss = (
            float(F.binary_cross_entropy_with_logits(logits, yt, pos_weight=pos_weight))
            if len(y)
            else math.nan
        )
        scores = torch.sigmoid(logits).numpy()
        both = 0 < y.sum() < len(y)
        val_ap = float(average_precision_score(y, scores)) if both else math.nan
        row = {
            "epoch": int(self.current_epoch) + 1,
            "train_loss": float(self._train_sum) / max(1, self._train_n),
            "val_loss": val_loss,
            "val_pr_auc": val_ap,
        }
        self._train_sum, self._train_n = torch.zeros(()), 0
        self.history.append(row)
        score = val_ap if self.monitor == "pr_auc" and both else -val_loss
        self.log("val_score", score, prog_bar=False, logger=False)
        if self.on_epoch is not None:
            self.on_epoch(dict(row), scores)

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.config
        return adamw_with_cosine(
            self.net,
            learning_rate=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            warmup_ratio=cfg.warmup_ratio,
        )


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's start-up notes (accelerators, tips, loader warnings) left out: an
    estimator fitted hundreds of times in a study would print them every time."""
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    lightning_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
            yield
    finally:
        lightning_logger.setLevel(level)


class KeepBestWeights(Callback):
    """Keep a copy of the weights of the epoch with the best ``val_score`` (in memory)."""

    def __init__(self) -> None:
        self.best, self.best_epoch, self.state = -math.inf, 0, None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: PairMLPTask) -> None:
        score = float(trainer.callback_metrics["val_score"])
        if score > self.best:  # strictly better, as EarlyStopping counts it
            self.best, self.best_epoch = score, int(trainer.current_epoch) + 1
            self.state = copy.deepcopy(pl_module.net.state_dict())


def train_pair_mlp(
    net: PairwiseBinaryClassifier,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainingConfig,
    *,
    monitor: str = "pr_auc",
    pos_weight: float = 1.0,
    on_epoch: EpochHook | None = None,
) -> tuple[list[dict[str, float]], int, float]:
    """Train ``net`` in place on standardised features; restore its best epoch.

    Args:
        net: freshly initialised (seeded by the caller).
        x, y: ``float32 [N, F]`` features (no NaN) and ``[N]`` 0/1 labels.
        x_val, y_val: the validation split early stopping watches.
        config: engine settings: ``max_epochs``, ``batch_size``, ``learning_rate``,
            ``weight_decay``, ``warmup_ratio``, ``gradient_clip_val``, ``precision``,
            ``accelerator``, ``patience`` (``None``: no early stopping), ``seed`` (the
            per-epoch order).
        monitor: ``pr_auc`` or ``loss`` (see :class:`PairMLPTask`).
        pos_weight: BCE weight of positives.
        on_epoch: see :class:`PairMLPTask`.

    Returns:
        ``(history rows, best epoch (1-based), best val_score)``; ``net`` holds the best
        epoch's weights, in eval mode, on the CPU.

    Raises:
        NonFiniteLossError: the loss became NaN/inf.
    """
    accelerator = resolve_accelerator(config.accelerator)
    task = PairMLPTask(net, config, pos_weight, monitor, y_val, on_epoch)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    yt = torch.from_numpy(np.asarray(y, np.float32))

    def current_epoch() -> int:
        return task.trainer.current_epoch if task._trainer is not None else 0

    train_batches = EpochBatches(xt, yt, config.batch_size, config.seed, current_epoch)
    val_batches = EpochBatches(
        torch.from_numpy(np.ascontiguousarray(x_val, np.float32)),
        torch.from_numpy(np.asarray(y_val, np.float32)),
        max(1, len(y_val)),
        config.seed,
        current_epoch,
        shuffle=False,
    )
    best = KeepBestWeights()
    callbacks: list[Callback] = [best]
    if config.patience:
        callbacks.append(EarlyStopping(monitor="val_score", mode="max", patience=config.patience))
    with quiet_lightning():
        trainer = pl.Trainer(
            max_epochs=config.max_epochs,
            accelerator=accelerator,
            devices=1,
            precision=resolve_precision(config.precision, accelerator),
            gradient_clip_val=config.gradient_clip_val,
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=config.log_every_n_steps,
            **(
                {}
                if config.limit_train_batches == 1.0
                else {"limit_train_batches": config.limit_train_batches}
            ),
        )
    with quiet_lightning():
        trainer.fit(task, train_dataloaders=train_batches, val_dataloaders=val_batches)
    if best.state is not None:
        net.load_state_dict(best.state)
    net.cpu().eval()
    return task.history, best.best_epoch, best.best
