"""The one set of training settings every Lightning task reads (``TrainingConfig``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings, one name each (as Lightning and transformers name them).

    Attributes:
        max_epochs: epochs at most (early stopping may end sooner).
        batch_size: images (or pairs) per optimiser step and per device.
        learning_rate: peak AdamW learning rate (after warm-up).
        weight_decay: AdamW decoupled weight decay (weight matrices only).
        warmup_ratio: share of all optimiser steps spent in the linear warm-up.
        backbone_lr_scale: learning-rate multiplier of a pretrained backbone under a
            fresh head (1.0 trains everything alike).
        gradient_clip_val: clip the gradient norm at this value; ``None`` turns it off.
        precision: ``auto`` (bf16 on GPUs and CPUs with avx512_bf16/AMX, else fp32) or a
            Lightning precision (``32-true``, ``bf16-mixed``, ``16-mixed``).
        accelerator: ``auto`` | ``cpu`` | ``gpu``.
        devices: Lightning ``devices`` (``1``, ``2``, ``"auto"``, ``[0, 1]``).
        strategy: Lightning ``strategy`` (``auto``, ``ddp``, ``ddp_spawn`` for several GPUs;
            gloo on CPU).
        patience: early-stopping patience in validation epochs; ``None`` turns it off.
        save_top_k: how many best checkpoints to keep besides ``best`` and ``last``.
        seed: seeds weights, data order and augmentation (per epoch, so a resumed run
            repeats an uninterrupted one).
        num_workers: DataLoader worker processes (0: load in the training process; the
            images are decoded ahead of time, so batches are only slices).
        num_threads: torch intra-op threads while training; ``None`` leaves torch's default.
        log_every_n_steps: how often step metrics are logged.
        limit_train_batches: Lightning's ``limit_train_batches`` (a fraction or a count),
            for quick checks.
    """

    max_epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    backbone_lr_scale: float = 1.0
    gradient_clip_val: float | None = 1.0
    precision: str = "auto"
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    patience: int | None = 3
    save_top_k: int = 2
    seed: int = 42
    num_workers: int = 0
    num_threads: int | None = None
    log_every_n_steps: int = 10
    limit_train_batches: float | int = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        checks = {
            "max_epochs": self.max_epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "backbone_lr_scale": self.backbone_lr_scale >= 0,
            "gradient_clip_val": self.gradient_clip_val is None or self.gradient_clip_val > 0,
            "patience": self.patience is None or self.patience >= 1,
            "save_top_k": self.save_top_k >= 1,
            "num_workers": self.num_workers >= 0,
        }
        allowed = {
            "max_epochs": ">= 1",
            "batch_size": ">= 1",
            "learning_rate": "> 0",
            "weight_decay": ">= 0",
            "warmup_ratio": "in [0, 1)",
            "backbone_lr_scale": ">= 0",
            "gradient_clip_val": "> 0, or null to turn clipping off",
            "patience": ">= 1, or null to turn early stopping off",
            "save_top_k": ">= 1",
            "num_workers": ">= 0",
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "; ".join(f"training.{k}={getattr(self, k)!r} must be {allowed[k]}" for k in bad)
            )

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, where: str = "training") -> TrainingConfig:
        """Build from a parameters block, refusing unknown keys.

        Raises:
            ValueError: a key that is not a setting (naming it, where it was, and the
                settings there are), or a value out of range.
        """
        params = dict(params or {})
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown setting(s) {unknown}; the settings are {names}")
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for checkpoints and fingerprints)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"
        }
