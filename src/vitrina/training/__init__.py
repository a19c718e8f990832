"""Vitrina's one training engine: PyTorch Lightning with the project's shared rules.

Every trainable model is a :class:`lightning.pytorch.LightningModule`; this package holds
what they share (see ``../shared/docs/ARCHITECTURE.md``, "Package layout"):

* :mod:`.config` — :class:`TrainingConfig`, the one set of training settings (one name per
  setting: ``learning_rate``, ``gradient_clip_val`` …), validated with the key in errors;
* :mod:`.precision` — precision rules (bf16 only on GPUs and CPUs with avx512_bf16/AMX);
* :mod:`.optim` — AdamW parameter groups and the warm-up + cosine schedule;
* :mod:`.loggers` — CSV logs plus MLflow metrics in kedro-mlflow's active run;
* :mod:`.trainer` — callbacks (best/last/top-k checkpoints, early stopping, learning-rate
  monitor), a resumable ``fit`` (``ckpt_path="last"`` after a ``kill -9``), seeding;
* :mod:`.data` — per-epoch seeded order and image decoding ahead of the model.
"""

from .config import TrainingConfig
from .precision import cpu_flags, cpu_has_bf16, resolve_precision
from .trainer import NonFiniteLossError, TrainingRun, check_finite, fit_resumable

__all__ = [
    "NonFiniteLossError",
    "TrainingConfig",
    "TrainingRun",
    "check_finite",
    "cpu_flags",
    "cpu_has_bf16",
    "fit_resumable",
    "resolve_precision",
]
