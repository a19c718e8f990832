"""Contrastive fine-tuning of a CLIP model as a LightningModule on :mod:`vitrina.training`.

:class:`ClipFinetuneTask` trains any CLIP-like ``transformers`` model (a
:class:`~vitrina.models.clip.bundle.ClipBundle`'s ``model``) with the symmetric InfoNCE
loss of :mod:`.loss`, gathered over every rank under data parallelism (Lightning's
``devices`` / ``strategy``; gloo on CPUs, NCCL on GPUs). It validates every epoch with
the recall of :mod:`.metrics` and logs ``val_mean_recall``, which the engine's
checkpoints (best / last / top-k) and early stopping follow. The engine brings the rest:
precision rules, AdamW with warm-up + cosine (:func:`vitrina.training.optim.
adamw_with_cosine`, CLIP's betas and eps), gradient clipping and accumulation
(``accumulate_grad_batches``), resume after ``kill -9``, CSV and MLflow logs.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitrina.training import check_finite
from vitrina.training.optim import adamw_with_cosine

from .bundle import clip_towers
from .config import ClipFinetuneConfig
from .data import epoch_batches
from .loss import contrastive_loss, gather_keys, gather_with_grad
from .metrics import retrieval_metrics


def freeze_parameters(
    model: nn.Module,
    *,
    freeze_text: bool = False,
    freeze_vision: bool = False,
    train_last_n_blocks: int | None = None,
) -> dict[str, int]:
    """Set ``requires_grad`` for partial fine-tuning of a CLIP model, in place.

    A frozen tower freezes its transformer and its projection. ``train_last_n_blocks=N``
    freezes, in each tower that is not frozen, the embeddings (token/patch/position), the
    vision pre-LayerNorm and all encoder blocks but the last N; final norms, projections
    and ``logit_scale`` keep training. Everything else is trainable.

    Returns:
        ``{"trainable": n, "frozen": m}`` parameter counts (elements).

    Raises:
        ValueError: both towers frozen, or a negative N.
        TypeError: the model has no ``text_model`` / ``vision_model``.
    """
    if freeze_text and freeze_vision:
        raise ValueError("freezing both towers leaves nothing to train")
    if train_last_n_blocks is not None and train_last_n_blocks < 0:
        raise ValueError(f"train_last_n_blocks must be >= 0, got {train_last_n_blocks}")
    for p in model.parameters():
        p.requires_grad_(True)
    for name, (body, heads) in clip_towers(model).items():
        if (name == "text" and freeze_text) or (name == "vision" and freeze_vision):
            for m in (body, *heads):
                m.requires_grad_(False)
            continue
        if train_last_n_blocks is None:
            continue
        layers = list(body.encoder.layers)
        for layer in layers[: max(0, len(layers) - train_last_n_blocks)]:
            layer.requires_grad_(False)
        body.embeddings.requires_grad_(False)
        if hasattr(body, "pre_layrnorm"):
            body.pre_layrnorm.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


def pair_features(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image [B, D], text [B, D])`` projected, unnormalised features of a normalised
    batch (``pixel_values``, ``input_ids``, ``attention_mask``)."""
    img = model.get_image_features(pixel_values=batch["pixel_values"])
    txt = model.get_text_features(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    )
    img = img if isinstance(img, torch.Tensor) else img.pooler_output
    txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
    return img, txt


def validation_metrics(
    image: torch.Tensor,
    text: torch.Tensor,
    image_keys: np.ndarray,
    text_keys: np.ndarray,
    logit_scale: torch.Tensor,
    ks: tuple[int, ...],
    loss_batch_size: int,
) -> dict[str, float]:
    """:func:`retrieval_metrics` of L2-normalised ``[N, D]`` features plus ``loss``: the
    mean :func:`contrastive_loss` over fixed (seed 0) chunks of ``loss_batch_size`` pairs,
    comparable with the training loss from epoch to epoch."""
    metrics = retrieval_metrics(text, image, ks, text_keys, image_keys)
    chunks = epoch_batches(len(image), max(2, loss_batch_size), 0, 0) if len(image) >= 2 else []
    scale = logit_scale.detach().float().cpu()
    losses = [float(contrastive_loss(image[idx], text[idx], scale)) for idx in chunks]
    metrics["loss"] = float(np.mean(losses)) if losses else math.nan
    return metrics


class ClipFinetuneTask(pl.LightningModule):
    """The contrastive task (see the module docstring).

    Args:
        model: the CLIP-like model to train (in place; pass a copy to keep the base).
        config: :class:`~vitrina.models.clip.config.ClipFinetuneConfig`.
        mean, std: the image processor's per-channel normalisation.

    Logged: ``train_loss`` (step and epoch), ``logit_scale``, ``pairs_per_s`` and
    ``train_seconds`` per epoch, and ``val_<metric>`` of :func:`validation_metrics`.
    """

    monitor = "val_mean_recall"

    def __init__(
        self,
        model: nn.Module,
        config: ClipFinetuneConfig,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.model = model
        self.config, self.options = config.training, config.options
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.counts = freeze_parameters(
            model,
            freeze_text=self.options.freeze_text,
            freeze_vision=self.options.freeze_vision,
            train_last_n_blocks=self.options.train_last_n_blocks,
        )
        self.max_log_scale = math.log(self.options.max_logit_scale)
        self._val: list[tuple[torch.Tensor, ...]] = []
        self._clock: list[float] = []
        self._pairs = 0

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        pixels = batch.pop("pixels")
        batch["pixel_values"] = (pixels.float() / 255.0 - self.mean) / self.std
        return batch

    # --------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        torch.manual_seed((self.config.seed * 1_000_003 + self.current_epoch) * 100_003 + batch_idx)
        img, txt = pair_features(self.model, batch)
        img, txt = gather_with_grad(img.float()), gather_with_grad(txt.float())
        keys = {}
        if self.options.match_duplicates:
            keys = {
                "image_keys": gather_keys(batch["image_keys"]),
                "text_keys": gather_keys(batch["text_keys"]),
            }
        loss = contrastive_loss(img, txt, self.model.logit_scale, **keys)
        check_finite(loss, self, batch_idx)
        self.log(
            "train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(img)
        )
        self._pairs += len(img)
        return loss

    def on_train_epoch_start(self) -> None:
        self._clock, self._pairs = [time.perf_counter()], 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # CLIP: exp(logit_scale) at most max_logit_scale (100)
            self.model.logit_scale.clamp_(0, self.max_log_scale)
        self._clock[1:] = [time.perf_counter()]

    def on_train_epoch_end(self) -> None:
        seconds = self._clock[-1] - self._clock[0] if len(self._clock) > 1 else math.nan
        self.log("pairs_per_s", self._pairs / seconds if seconds > 0 else math.nan)
        self.log("train_seconds", seconds)
        self.log("logit_scale", float(self.model.logit_scale.detach().exp()))

    # ------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        img, txt = pair_features(self.model, batch)
        self._val.append(
            (
                F.normalize(img.float(), dim=-1).cpu(),
                F.normalize(txt.float(), dim=-1).cpu(),
                batch["image_keys"].cpu(),
                batch["text_keys"].cpu(),
            )
        )

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        img, txt, ik, tk = (torch.cat(parts) for parts in zip(*self._val, strict=True))
        self._val.clear()
        # Every rank validates the whole split (the same numbers everywhere, so early
        # stopping and checkpoints agree across ranks).
        metrics = validation_metrics(
            img,
            txt,
            ik.numpy(),
            tk.numpy(),
            self.model.logit_scale,
            self.options.recall_ks,
            self.config.batch_size,
        )
        for name, value in metrics.items():
            if not name.startswith("chance_"):
                self.log(f"val_{name}", float(value), prog_bar=name == "mean_recall")

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_cosine(
            self.model,
            learning_rate=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            warmup_ratio=self.config.warmup_ratio,
            betas=self.options.betas,
            eps=self.options.eps,
        )


class EpochReport(pl.Callback):
    """Gives each epoch's validation metric to ``report(value, epoch)`` (1-based): the
    tuning's trial reporter, whose ``optuna.TrialPruned`` stops the fit."""

    def __init__(self, report: Any, monitor: str = ClipFinetuneTask.monitor) -> None:
        self.report, self.monitor = report, monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not trainer.sanity_checking:
            self.report(float(value), trainer.current_epoch + 1)


__all__ = [
    "ClipFinetuneTask",
    "EpochReport",
    "freeze_parameters",
    "pair_features",
    "validation_metrics",
]
