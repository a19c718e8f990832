"""A small training job for the engine's kill -9 / resume tests (run as a subprocess).

Usage: ``python resume_job.py ROOT [--kill-after-epoch N] [--nan-at-epoch N]``; prints one
JSON line with the best score, epochs and a checksum of the best weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal

import lightning.pytorch as pl
import numpy as np
import torch

from vitrina.models.classifiers.artefact import load_lightning_checkpoint
from vitrina.models.classifiers.backbones import build_backbone
from vitrina.models.classifiers.kinds import MulticlassTask
from vitrina.training import TrainingConfig, TrainingRun, fit_resumable
from vitrina.training.data import ArrayDataModule, ArrayDataset


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class sets the mean colour, plus noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])[y]
    x = base[:, None, None, :] + rng.normal(0, 60, (n, 32, 32, 3))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


class Kill(pl.Callback):
    """SIGKILL once epoch ``epoch`` is over and its checkpoints are written (at the start
    of the next epoch: ModelCheckpoint saves at the end of an epoch, after other callbacks)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)


class NanAt(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                pl_module.head[1].weight.fill_(float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--kill-after-epoch", type=int)
    parser.add_argument("--nan-at-epoch", type=int)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    config = TrainingConfig(
        max_epochs=args.epochs,
        batch_size=16,
        learning_rate=0.01,
        patience=None,
        precision="32-true",
        accelerator="cpu",
        num_threads=1,
        log_every_n_steps=1,
    )
    x, y = synthetic(160, 0)
    pl.seed_everything(config.seed, verbose=False)
    module = MulticlassTask(
        build_backbone("tiny_resnet", image_size=32),
        classes=["r", "g", "b"],
        training=config.to_dict(),
        image_size=32,
    )
    data = ArrayDataModule(
        ArrayDataset(x[:120], y[:120]),
        ArrayDataset(x[120:], y[120:]),
        batch_size=16,
        seed=config.seed,
    )
    callbacks = []
    if args.kill_after_epoch is not None:
        callbacks.append(Kill(args.kill_after_epoch))
    if args.nan_at_epoch is not None:
        callbacks.append(NanAt(args.nan_at_epoch))
    run = TrainingRun(root=args.root, name="job", monitor=module.monitor)
    result = fit_resumable(run, module, data, config, {"job": 1, "epochs": args.epochs}, callbacks)
    best = load_lightning_checkpoint(result.best_path)
    checksum = hashlib.sha256(
        b"".join(t.numpy().tobytes() for t in best.state_dict().values())
    ).hexdigest()
    print(  # noqa: T201 - the job reports to the test through stdout
        json.dumps(
            {
                "best_score": result.best_score,
                "epochs": result.epochs,
                "resumed": result.resumed,
                "checksum": checksum,
            }
        )
    )


if __name__ == "__main__":
    main()
