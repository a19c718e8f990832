"""``clip_finetune.train``: the engine's settings plus the contrastive task's options.

One block of parameters, two parts: the keys of :class:`vitrina.training.TrainingConfig`
(``max_epochs``, ``learning_rate``, ``gradient_clip_val``, ``devices``, ``strategy`` …,
with CLIP's defaults below) and :class:`ClipOptions` (what only contrastive fine-tuning
has). A key of the old home-made loop (``epochs``, ``lr``, ``max_grad_norm`` …) fails with
an error naming its new key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vitrina.training import TrainingConfig

#: CLIP's defaults where they differ from the engine's: the seed system (2 epochs, batch 32,
#: lr 6e-5) and the CLIP paper (Radford et al. 2021: weight decay 0.2, warm-up + cosine).
CLIP_TRAINING_DEFAULTS: dict[str, Any] = {
    "max_epochs": 2,
    "batch_size": 32,
    "learning_rate": 6e-5,
    "weight_decay": 0.2,
    "warmup_ratio": 0.05,
    "gradient_clip_val": 1.0,
    "patience": None,
    "log_every_n_steps": 1,
}

#: Keys of the old loop (``models/clip_training.py``) → what replaces them.
RENAMED: dict[str, str] = {
    "epochs": "max_epochs",
    "lr": "learning_rate",
    "max_grad_norm": "gradient_clip_val (null turns clipping off)",
    "grad_accum_steps": "accumulate_grad_batches",
    "torch_threads": "num_threads",
    "log_every_steps": "log_every_n_steps",
    "device": "accelerator (auto | cpu | gpu) and devices",
    "warmup_steps": "warmup_ratio",
    "min_lr_ratio": "nothing: the cosine decays to 0 (transformers' schedule); remove it",
    "min_delta": "nothing: early stopping (patience) counts any gain; remove it",
    "save_every_steps": "nothing: a checkpoint is written at every epoch end; remove it",
    "progress": "nothing: Lightning's progress bar shows on terminals; remove it",
}
#: Step-level keys (``clip_finetune.*``) of the old loop → their replacements.
RENAMED_STEP: dict[str, str] = {
    "state_dir": "output_dir (the Lightning run folder: checkpoints/, logs/)",
    "resume": "nothing: a rerun with the same parameters and data resumes from last.ckpt, "
    "changed ones start afresh; remove it",
    "nproc_per_node": "train.devices with train.strategy (e.g. devices: 2, strategy: ddp_spawn)",
}


def refuse_renamed(params: dict[str, Any], renamed: dict[str, str], where: str) -> None:
    """Raise on keys of the old loop, naming their replacements.

    Raises:
        ValueError: ``"<where>.<old> was renamed: use <new>"`` for every old key.
    """
    old = sorted(set(params) & set(renamed))
    if old:
        raise ValueError(
            "; ".join(f"{where}.{k} is no longer a setting: use {renamed[k]}" for k in old)
        )


@dataclass(frozen=True)
class ClipOptions:
    """What only contrastive fine-tuning has (beside :class:`TrainingConfig`).

    Attributes:
        accumulate_grad_batches: micro-batches whose gradients are summed per optimiser
            step (Lightning's name; the negatives stay within a micro-batch).
        freeze_text, freeze_vision: freeze a whole tower (with its projection).
        train_last_n_blocks: train only the last N transformer blocks of each tower that
            is not frozen (plus final norms, projections, logit scale); ``None`` trains all.
        max_logit_scale: upper clamp of ``exp(logit_scale)`` (CLIP: 100).
        recall_ks: the k of recall@k (the validation split needs at least ``max(k)`` pairs).
        match_duplicates: pairs with the same image content or the same title count as
            matches of each other, in the loss (soft targets) and the recall.
        betas, eps: AdamW (CLIP paper: (0.9, 0.98), 1e-6).
        eval_batch_size: pairs per forward pass during validation.
        image_cache_mb: decode every image once into a ``uint8`` cache when it fits in
            this many MiB; otherwise decode each batch when it is drawn.
        decode_threads: image decoding threads.
    """

    accumulate_grad_batches: int = 1
    freeze_text: bool = False
    freeze_vision: bool = False
    train_last_n_blocks: int | None = None
    max_logit_scale: float = 100.0
    recall_ks: tuple[int, ...] = (1, 5, 10)
    match_duplicates: bool = True
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    eval_batch_size: int = 256
    image_cache_mb: int = 4096
    decode_threads: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "recall_ks", tuple(sorted({int(k) for k in self.recall_ks})))
        problems = []
        if self.accumulate_grad_batches < 1:
            problems.append(f"accumulate_grad_batches={self.accumulate_grad_batches} must be >= 1")
        if self.train_last_n_blocks is not None and self.train_last_n_blocks < 0:
            problems.append(f"train_last_n_blocks={self.train_last_n_blocks} must be >= 0 or null")
        if self.freeze_text and self.freeze_vision:
            problems.append("freeze_text and freeze_vision together leave nothing to train")
        if not self.max_logit_scale > 0:
            problems.append(f"max_logit_scale={self.max_logit_scale} must be > 0")
        if not self.recall_ks or self.recall_ks[0] < 1:
            problems.append(f"recall_ks={list(self.recall_ks)} must be positive integers")
        if self.eval_batch_size < 1 or self.decode_threads < 1:
            problems.append("eval_batch_size and decode_threads must be >= 1")
        if problems:
            raise ValueError("clip_finetune.train: " + "; ".join(problems))


@dataclass(frozen=True)
class ClipFinetuneConfig:
    """``clip_finetune.train`` parsed: ``training`` (engine) and ``options`` (task)."""

    training: TrainingConfig
    options: ClipOptions

    @classmethod
    def from_params(
        cls, params: dict[str, Any] | None, where: str = "clip_finetune.train"
    ) -> ClipFinetuneConfig:
        """Split a parameters block into its two parts, with CLIP's defaults.

        Raises:
            ValueError: an old key (naming its replacement), an unknown key (naming every
                setting), a value out of range, or ``batch_size`` < 2.
        """
        params = dict(params or {})
        refuse_renamed(params, RENAMED, where)
        option_names = {f.name for f in dataclasses.fields(ClipOptions)}
        training_names = {f.name for f in dataclasses.fields(TrainingConfig)} - {"extra"}
        unknown = sorted(set(params) - option_names - training_names)
        if unknown:
            raise ValueError(
                f"{where}: unknown setting(s) {unknown}; the settings are "
                f"{sorted(training_names)} (training) and {sorted(option_names)} (CLIP)"
            )
        training = {**CLIP_TRAINING_DEFAULTS}
        training.update({k: v for k, v in params.items() if k in training_names})
        config = TrainingConfig.from_params(training, where=where)
        if config.batch_size < 2:
            raise ValueError(
                f"{where}.batch_size={config.batch_size} must be >= 2: the contrastive loss "
                "takes its negatives from the other pairs of the batch"
            )
        options = ClipOptions(**{k: v for k, v in params.items() if k in option_names})
        return cls(config, options)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as one JSON-ready dict (for fingerprints and MLflow)."""
        options = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self.options).items()
        }
        return {**self.training.to_dict(), **options}


#: Settings that change how fast or how visibly training runs, not what it learns.
RUNTIME_SETTINGS = frozenset(
    {
        "accelerator",
        "devices",
        "num_workers",
        "num_threads",
        "log_every_n_steps",
        "eval_batch_size",
        "image_cache_mb",
        "decode_threads",
        "save_top_k",
    }
)

__all__ = [
    "CLIP_TRAINING_DEFAULTS",
    "RENAMED",
    "RENAMED_STEP",
    "RUNTIME_SETTINGS",
    "ClipFinetuneConfig",
    "ClipOptions",
    "refuse_renamed",
]
