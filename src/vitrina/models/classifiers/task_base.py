"""The LightningModule every image-classifier kind derives from.

A task is a backbone (:mod:`.backbones`, built from transformers) plus a head and a loss.
Batches arrive as ``uint8 [B, 3, S, S]`` images decoded ahead of time
(:mod:`vitrina.training.data`); :meth:`ImageTask.on_after_batch_transfer` converts them on
the training device (the backbone's mean/std normalisation), and training steps add
random horizontal flips, seeded per (epoch, batch). Subclasses implement ``head``, ``compute_loss`` and
``epoch_metrics``; the base handles optimisation, logging, per-epoch seeding, the NaN
guard and prediction.
"""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from vitrina.training import TrainingConfig, check_finite
from vitrina.training.optim import adamw_with_cosine

from .backbones import ImageBackbone


class ImageTask(pl.LightningModule):
    """Backbone + head + loss for one kind of image task.

    Args:
        backbone: the feature extractor (``[B, 3, S, S]`` → ``[B, D]``).
        classes: class names; the first ``n_train_classes`` are what the head predicts.
        training: :class:`~vitrina.training.TrainingConfig` settings (a dict).
        options: kind-specific options (loss, head, thresholds …; see subclasses).
        image_size: the side of the input images in pixels.

    Class attributes:
        kind: ``multiclass`` | ``multilabel`` | ``metric_learning``.
        monitor: the validation metric that selects the best checkpoint (higher is better).
    """

    kind: ClassVar[str] = ""
    monitor: ClassVar[str] = ""

    def __init__(
        self,
        backbone: ImageBackbone,
        *,
        classes: list[str],
        training: dict[str, Any],
        options: dict[str, Any] | None = None,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.hparams["backbone_spec"] = backbone.build_spec()
        self.hparams["kind"] = self.kind
        self.backbone = backbone.train()  # built in eval mode; Lightning keeps modes as they are
        self.config = TrainingConfig.from_params(training)
        self.options = dict(options or {})
        self.classes = list(classes)
        self.register_buffer(
            "mean",
            torch.tensor(backbone.image_mean, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "std",
            torch.tensor(backbone.image_std, dtype=torch.float32).view(1, 3, 1, 1),
            persistent=False,
        )
        self._val_outputs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    # ------------------------------------------------------------------ model
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Backbone features ``float [B, D]`` of normalised ``pixel_values [B, 3, S, S]``."""
        return self.backbone(pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Head outputs (logits ``[B, C]`` or embeddings ``[B, E]``) of normalised images."""
        return self.head(self.features(pixel_values))

    def normalise(self, images: torch.Tensor, *, augment: bool = False) -> torch.Tensor:
        """``uint8 [B, 3, S, S]`` → normalised ``float32``; random h-flips when ``augment``."""
        x = (images.float().div_(255.0) - self.mean) / self.std
        return self.augment(x) if augment else x

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random horizontal flips (``options.hflip``, default on) of normalised images."""
        if not self.options.get("hflip", True):
            return x
        flip = torch.rand(x.shape[0], device=x.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        return self.normalise(images), targets

    # --------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        # Augmentation and dropout draw from torch's RNG, reseeded from (seed, epoch,
        # batch): a resumed run repeats the uninterrupted one bit for bit, whatever else
        # (data loaders, loggers) drew from the RNG in between.
        torch.manual_seed((self.config.seed * 1_000_003 + self.current_epoch) * 100_003 + batch_idx)
        images, targets = batch
        loss = self.compute_loss(self(self.augment(images)), targets)
        check_finite(loss, self, batch_idx)
        self.log(
            "train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets)
        )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        outputs = self(images)
        if self.kind != "metric_learning":
            self.log(
                "val_loss",
                self.compute_loss(outputs, targets),
                on_epoch=True,
                batch_size=len(targets),
            )
        self._val_outputs.append(outputs.detach().float().cpu())
        self._val_targets.append(targets.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        outputs = torch.cat(self._val_outputs).numpy()
        targets = torch.cat(self._val_targets).numpy()
        self._val_outputs.clear()
        self._val_targets.clear()
        for name, value in self.epoch_metrics(outputs, targets).items():
            self.log(
                f"val_{name}", float(value), prog_bar=name == self.monitor.removeprefix("val_")
            )

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_cosine(
            self,
            learning_rate=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            warmup_ratio=self.config.warmup_ratio,
            lr_scales={"backbone.": self.config.backbone_lr_scale},
        )

    # ------------------------------------------------------------- prediction
    @torch.inference_mode()
    def predict_images(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Head outputs for ``uint8 [N, S, S, 3]`` images, in eval mode, as ``float32``
        numpy: probabilities ``[N, C]`` (classifiers) or L2-normalised embeddings
        ``[N, E]`` (metric learning)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            x = self.normalise(batch.permute(0, 3, 1, 2).to(device), augment=False)
            chunks.append(self.activate(self(x)).float().cpu().numpy())
        self.train(was_training)
        width = len(self.classes) if self.kind != "metric_learning" else self.embedding_dim
        return np.concatenate(chunks) if chunks else np.zeros((0, width), np.float32)

    # ---------------------------------------------------------- for subclasses
    head: nn.Module

    def compute_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def epoch_metrics(self, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        """Head outputs → what :meth:`predict_images` returns (softmax, sigmoid …)."""
        raise NotImplementedError
