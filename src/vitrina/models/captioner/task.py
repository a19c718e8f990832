"""The captioner's training as LightningModules on :mod:`vitrina.training`.

Two phases, each one ``fit`` of the engine (:mod:`.train`):

1. :class:`EncoderPretrainingTask`: the randomly initialised ViT learns to predict the
   words of the description from the image alone, with the IDF-weighted bag-of-words
   loss of Zhao et al. (2017) (:func:`bag_of_words_loss`);
2. :class:`CaptioningTask`: the whole encoder-decoder learns to caption (teacher-forced
   token cross-entropy), optionally keeping the bag-of-words loss as an auxiliary one.

Batches come from :mod:`.data` (``pixels`` ``float32 [B, 3, S, S]``, ``index``, the
teacher-forcing tensors). Every training step reseeds torch from ``(seed, phase, epoch,
batch)``, so flips and dropout of a resumed run repeat an uninterrupted one. Precision
(bf16 autocast only where the CPU has avx512_bf16/AMX, or on a GPU), gradient clipping,
checkpoints and early stopping are the engine's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn
from torch.nn import functional

from vitrina.training import TrainingConfig, check_finite
from vitrina.training.optim import adamw_with_cosine

from .configuration import CaptioningOptions
from .inference import Captioner

logger = logging.getLogger(__name__)


def bag_of_words_targets(
    targets: Sequence[Sequence[int]], vocab_size: int, ignore: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which tokens each description contains, and their inverse document frequency.

    Returns:
        ``present`` ``bool [N, V]`` and ``idf`` ``float32 [V]`` (``log((N + 1) / (df + 1))``,
        0 for ``ignore``d ids such as ``[EOS]`` and ``[PAD]``).
    """
    present = torch.zeros((len(targets), vocab_size), dtype=torch.bool)
    for i, ids in enumerate(targets):
        present[i, list(set(ids))] = True
    df = present.sum(0).float()
    idf = torch.log((len(targets) + 1) / (df + 1))
    idf[list(ignore)] = 0.0
    return present, idf


def bag_of_words_loss(
    head: nn.Module, encoded: torch.Tensor, present: torch.Tensor, idf: torch.Tensor
) -> torch.Tensor:
    """IDF-weighted bag-of-words loss (Zhao et al. 2017).

    A softmax over the vocabulary from the mean-pooled encoder output ``[B, N, D]``;
    minus the log-probability of every token the description contains, weighted by its
    IDF (content words such as "jeans" count, "in" and "a" hardly), averaged.
    """
    logp = torch.log_softmax(head(encoded.mean(dim=1)).float(), dim=-1)
    weights = present.to(logp.device, torch.float32) * idf.to(logp.device)
    return -(weights * logp).sum() / weights.sum().clamp(min=1e-6)


def step_seed(seed: int, phase: int, epoch: int, batch_idx: int) -> int:
    """The torch seed of one training step: a function of ``(seed, phase, epoch, batch)``
    only, so a run resumed from ``last.ckpt`` draws the same flips, dropout and word
    dropout as an uninterrupted one (as :class:`vitrina.models.classifiers.task_base.ImageTask`)."""
    return (
        (int(seed) * 1_000_003 + int(phase) * 10_007 + int(epoch)) * 100_003 + int(batch_idx)
    ) % (2**63)


class _CaptionerTask(pl.LightningModule):
    """What both phases share: per-step seeding, flips, AdamW + warm-up/cosine, epoch
    means of token-weighted losses, and one log line per epoch."""

    monitor: ClassVar[str] = ""
    phase: ClassVar[int] = 0
    title: ClassVar[str] = ""

    def __init__(self, config: TrainingConfig, options: CaptioningOptions) -> None:
        super().__init__()
        self.config, self.options = config, options
        self._sums: dict[str, list[float]] = {}
        self._started = time.perf_counter()

    @property
    def peak_learning_rate(self) -> float:
        return self.config.learning_rate

    @property
    def max_epochs(self) -> int:
        return self.config.max_epochs

    def reseed(self, batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.config.seed, self.phase, self.current_epoch, batch_idx))

    def augment(self, pixels: torch.Tensor) -> torch.Tensor:
        """Mirror a random half of ``[B, 3, H, W]`` images (``options.hflip``)."""
        if not self.options.hflip:
            return pixels
        flip = torch.rand(pixels.shape[0], device=pixels.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), pixels.flip(-1), pixels)

    def accumulate(self, name: str, value: torch.Tensor, weight: float) -> None:
        total = self._sums.setdefault(name, [0.0, 0.0])
        total[0] += float(value.detach()) * weight
        total[1] += weight

    def mean(self, name: str) -> float:
        total, weight = self._sums.pop(name, [math.nan, 0.0])
        return total / weight if weight else math.nan

    def on_train_epoch_start(self) -> None:
        self._started = time.perf_counter()

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_with_cosine(
            self,
            learning_rate=self.peak_learning_rate,
            weight_decay=self.config.weight_decay,
            total_steps=max(1, int(self.trainer.estimated_stepping_batches)),
            warmup_ratio=self.config.warmup_ratio,
        )

    def epoch_summary(self, train: dict[str, float], extra: str = "") -> None:
        """Log the epoch means and the learning rate, and write one log line."""
        learning_rate = float(self.lr_schedulers().get_last_lr()[0])
        for name, value in {**train, "learning_rate": learning_rate}.items():
            self.log(name, value, on_epoch=True)
        val = self.trainer.callback_metrics.get(self.monitor)
        logger.info(
            "captioning: %s %d/%d %s %s=%s lr=%.2e (%.0f s)%s",
            self.title,
            self.current_epoch + 1,
            self.max_epochs,
            " ".join(f"{k}={v:.3f}" for k, v in train.items()),
            self.monitor,
            f"{float(val):.3f}" if val is not None else "n/a",
            learning_rate,
            time.perf_counter() - self._started,
            extra,
        )


class EncoderPretrainingTask(_CaptionerTask):
    """Encoder pre-training: the ViT alone predicts the description's words.

    Loss: :func:`bag_of_words_loss` from the mean-pooled encoder output; no decoder runs,
    so an epoch is cheap. Validation: the same loss on the validation split
    (``val_bow_loss``, with the training split's IDF weights).

    Args:
        encoder: the captioner's ``ViTModel`` (trained in place).
        bow_head: ``nn.Linear(encoder width, vocabulary)``.
        train_present, val_present: ``bool [N, V]`` of :func:`bag_of_words_targets`.
        idf: ``float32 [V]`` of the training split.
        config: the engine's settings (``learning_rate`` is replaced by
            ``options.pretrain_learning_rate``, ``max_epochs`` by
            ``options.pretrain_max_epochs``).
        options: the task's options.
    """

    monitor = "val_bow_loss"
    phase = 1
    title = "encoder pre-training"

    def __init__(
        self,
        encoder: nn.Module,
        bow_head: nn.Module,
        *,
        train_present: torch.Tensor,
        val_present: torch.Tensor,
        idf: torch.Tensor,
        config: TrainingConfig,
        options: CaptioningOptions,
    ) -> None:
        super().__init__(config, options)
        self.encoder, self.bow_head = encoder, bow_head
        self.train_present, self.val_present, self.idf = train_present, val_present, idf

    @property
    def peak_learning_rate(self) -> float:
        return self.options.pretrain_learning_rate

    @property
    def max_epochs(self) -> int:
        return self.options.pretrain_max_epochs

    def loss(self, batch: dict[str, torch.Tensor], present: torch.Tensor, augment: bool) -> Any:
        pixels = self.augment(batch["pixels"]) if augment else batch["pixels"]
        encoded = self.encoder(pixel_values=pixels).last_hidden_state
        return bag_of_words_loss(self.bow_head, encoded, present[batch["index"].cpu()], self.idf)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.reseed(batch_idx)
        loss = self.loss(batch, self.train_present, augment=True)
        check_finite(loss, self, batch_idx)
        self.accumulate("train_bow_loss", loss, len(batch["index"]))
        self.log("train_bow_loss_step", loss, prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.accumulate(
            "val_bow_loss", self.loss(batch, self.val_present, False), len(batch["index"])
        )

    def on_validation_epoch_end(self) -> None:
        self.log("val_bow_loss", self.mean("val_bow_loss"), prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.epoch_summary({"bow_loss": self.mean("train_bow_loss")})


class CaptioningTask(_CaptionerTask):
    """Captioning: teacher-forced token cross-entropy of the decoder (label smoothing,
    word dropout), plus ``bow_weight`` × the bag-of-words loss when that is on.

    Validation: plain mean token cross-entropy over the split (``val_loss``, nats), the
    value the best checkpoint is chosen by (lowest); after it, ``options.sample_images``
    validation images are captioned (greedy) into the log.

    Args:
        captioner: the captioner; its ``model`` is trained in place.
        config: the engine's settings.
        options: the task's options.
        bow: ``(bow_head, train_present, idf)`` when ``options.bow_weight > 0``.
        samples: returns ``float [K, 3, S, S]`` validation pixels captioned after each
            epoch (called once, when first needed).
    """

    monitor = "val_loss"
    phase = 2
    title = "epoch"

    def __init__(
        self,
        captioner: Captioner,
        *,
        config: TrainingConfig,
        options: CaptioningOptions,
        bow: tuple[nn.Module, torch.Tensor, torch.Tensor] | None = None,
        samples: Callable[[], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(config, options)
        self.captioner, self.model = captioner, captioner.model
        self.pad_id = int(captioner.tokenizer.pad_token_id)
        self.bow_head = bow[0] if bow is not None else None
        self.bow = bow
        self.samples = samples
        self._sample_pixels: torch.Tensor | None = None

    def teacher_forced(
        self, batch: dict[str, torch.Tensor], *, train: bool
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """``(mean token cross-entropy, target tokens, bag-of-words loss or None)``."""
        inputs, pixels = batch["decoder_input_ids"], batch["pixels"]
        if train:
            pixels = self.augment(pixels)
            if self.options.token_dropout > 0:
                drop = torch.rand(inputs.shape, device=inputs.device) < self.options.token_dropout
                drop[:, 0] = False  # keep [BOS]
                inputs = inputs.masked_fill(drop, self.pad_id)
        out = self.model(
            pixel_values=pixels,
            decoder_input_ids=inputs,
            decoder_attention_mask=batch["decoder_attention_mask"],
        )
        labels, logits = batch["labels"], out.logits.float()
        loss = functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=-100,
            label_smoothing=float(self.options.label_smoothing) if train else 0.0,
        )
        bow_loss = None
        if train and self.bow is not None:
            head, present, idf = self.bow
            bow_loss = bag_of_words_loss(
                head, out.encoder_last_hidden_state, present[batch["index"].cpu()], idf
            )
        return loss, int((labels != -100).sum()), bow_loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.reseed(batch_idx)
        loss, n_tokens, bow_loss = self.teacher_forced(batch, train=True)
        total = loss if bow_loss is None else loss + self.options.bow_weight * bow_loss
        check_finite(total, self, batch_idx)
        self.accumulate("train_loss", loss, n_tokens)
        if bow_loss is not None:
            self.accumulate("bow_loss", bow_loss, n_tokens)
        self.log("train_loss_step", loss, prog_bar=True, batch_size=len(batch["index"]))
        return total

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, n_tokens, _ = self.teacher_forced(batch, train=False)
        self.accumulate("val_loss", loss, n_tokens)

    def on_validation_epoch_end(self) -> None:
        self.log("val_loss", self.mean("val_loss"), prog_bar=True)

    def on_train_epoch_end(self) -> None:
        train = {"train_loss": self.mean("train_loss")}
        if self.bow is not None:
            train["bow_loss"] = self.mean("bow_loss")
        extra = ""
        if self.samples is not None:
            if self._sample_pixels is None:
                self._sample_pixels = self.samples()
            with torch.no_grad():
                caption = self.captioner.generate(self._sample_pixels, "greedy")[0]
            extra = f" e.g. {caption!r}"
            self.model.train()
        self.epoch_summary(train, extra)
