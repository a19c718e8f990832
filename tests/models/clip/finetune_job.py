"""A small CLIP fine-tuning run for the kill -9 / NaN / DDP tests (also run as a subprocess).

Usage: ``python finetune_job.py DATA_DIR ROOT [--kill-after-epoch N] [--nan-at-call N]
[--devices N]``; prints one JSON line with the best epoch, its metrics and a checksum of
the fine-tuned weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.models.clip.helpers import FAST, split  # noqa: E402
from vitrina.models.clip import ClipBundle, ClipFinetuneConfig  # noqa: E402
from vitrina.models.clip.finetune import fine_tune  # noqa: E402

#: 24 training pairs, batch 8: 3 steps per epoch.
SETTINGS = dict(max_epochs=3, batch_size=8, learning_rate=3e-3, seed=3, save_top_k=1)


class Kill(pl.Callback):
    """SIGKILL once epoch ``epoch`` (0-based) is over and its checkpoints are written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)


def checksum(model) -> str:
    return hashlib.sha256(
        b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())
    ).hexdigest()


def run(
    data_dir: str,
    root: str,
    *,
    kill_after: int | None = None,
    nan_at: int | None = None,
    devices: int = 1,
    **settings,
):
    """Fine-tune the tiny ruCLIP of ``data_dir`` into ``root``; returns the FineTuneResult."""
    pairs = pd.read_parquet(Path(data_dir) / "pairs.parquet")
    bundle = ClipBundle.load(Path(data_dir) / "ckpt")
    if nan_at is not None:
        calls = {"n": 0}

        def poison(module, args, out):
            calls["n"] += 1
            return out * float("nan") if calls["n"] == nan_at else out

        bundle.model.visual_projection.register_forward_hook(poison)
    extra = {"devices": devices, "strategy": "ddp_spawn"} if devices > 1 else {}
    config = ClipFinetuneConfig.from_params({**FAST, **SETTINGS, **extra, **settings})
    train, val = split(pairs)
    callbacks = [Kill(kill_after)] if kill_after is not None else []
    return fine_tune(bundle, train, val, config, root, callbacks=callbacks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir")
    parser.add_argument("root")
    parser.add_argument("--kill-after-epoch", type=int)
    parser.add_argument("--nan-at-call", type=int)
    args = parser.parse_args()
    result = run(
        args.data_dir, args.root, kill_after=args.kill_after_epoch, nan_at=args.nan_at_call
    )
    print(  # noqa: T201 - the job reports to the test through stdout
        json.dumps(
            {
                "best_epoch": result.best_epoch,
                "mean_recall": result.best_metrics["mean_recall"],
                "resumed": result.fit.resumed,
                "checksum": checksum(result.bundle.model),
            }
        )
    )


if __name__ == "__main__":
    main()
