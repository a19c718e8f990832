"""A tiny captioner training for the kill -9 / resume tests (run as a subprocess).

Usage: ``python -m tests.models.captioner.resume_job ROOT [--kill PHASE:EPOCH]``: trains
the tiny captioner in ``ROOT/run`` (images in ``ROOT``), SIGKILLs itself once epoch
``EPOCH`` of ``PHASE`` (``pretraining`` | ``captioning``) is over and checkpointed, and
otherwise prints one JSON line: best epoch and loss, the validation losses, whether it
resumed, and a checksum of the best weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import torch

from tests.models.captioner.fixtures import train_tiny, write_images
from vitrina.models.captioner.task import CaptioningTask, EncoderPretrainingTask

PHASES = {"pretraining": EncoderPretrainingTask, "captioning": CaptioningTask}


class Kill(pl.Callback):
    """SIGKILL at the start of the epoch after ``epoch`` (its checkpoints are written)."""

    def __init__(self, phase: str, epoch: int) -> None:
        self.task, self.epoch = PHASES[phase], epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if isinstance(pl_module, self.task) and trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--kill")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    images = write_images(root)
    kill = []
    if args.kill:
        phase, epoch = args.kill.split(":")
        kill = [Kill(phase, int(epoch))]
    # The kill callback is given to both phases through a patched fit (tests only).
    import vitrina.models.captioner.train as train

    fit = train.fit_resumable

    def fit_with_kill(run, module, data, config, fingerprint, extra_callbacks=()):
        return fit(run, module, data, config, fingerprint, [*extra_callbacks, *kill])

    train.fit_resumable = fit_with_kill
    result = train_tiny(images, root / "run", max_epochs=3, pretrain_max_epochs=2)
    weights = result.captioner.model.state_dict()
    checksum = hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights)))
    history = result.history
    print(  # noqa: T201 - the job reports to the test through stdout
        json.dumps(
            {
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "val_loss": history["val_loss"].dropna().tolist(),
                "val_bow_loss": history["val_bow_loss"].dropna().tolist(),
                "resumed": result.resumed,
                "checksum": checksum.hexdigest(),
            }
        )
    )


if __name__ == "__main__":
    main()
