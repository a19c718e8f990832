"""Training throughput: Vitrina's Lightning engine against a plain PyTorch loop.

Both paths train the same model (a ResNet-18 backbone from transformers, random weights,
plus a linear head) on the same images (random ``uint8``, decoded ahead of the model, so
neither waits on JPEG decoding), with the same batch, AdamW, per-step cosine schedule,
gradient clipping and precision. The engine path is :class:`vitrina.training.TrainingRun`'s
trainer with :class:`vitrina.models.classifiers.kinds.MulticlassTask` — the code the
classification pipeline runs — including its callbacks and loggers. Images/s are timed
over the training steps after ``--warmup`` steps (validation and checkpoint writing are
outside the timed window on both paths). The paths alternate ``--repeats`` times and the
best of each is kept, so a noisy neighbour does not decide the ratio.

Last line: ``ratio=<engine images/s / plain loop images/s>`` (target >= 0.95).

    python benchmarks/classification.py                    # ResNet-18, 224 px, batch 32
    python benchmarks/classification.py --image-size 96 --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from _common import device_name, print_table

from vitrina.models.classifiers.backbones import build_backbone
from vitrina.models.classifiers.kinds import MulticlassTask
from vitrina.training import TrainingConfig, TrainingRun, cpu_flags, resolve_precision
from vitrina.training.data import ArrayDataModule, ArrayDataset
from vitrina.training.optim import adamw_with_cosine


class StepTimer(pl.Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.images = warmup, None, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.warmup:
            self.images += len(batch[0])
            self.end = time.perf_counter()


def make_task(config: TrainingConfig, image_size: int, n_classes: int) -> MulticlassTask:
    pl.seed_everything(0, verbose=False)
    backbone = build_backbone("resnet18", image_size=image_size)
    return MulticlassTask(backbone, classes=[str(i) for i in range(n_classes)],
                          training=config.to_dict(), image_size=image_size)  # fmt: skip


def engine(config: TrainingConfig, images, targets, image_size: int, warmup: int) -> float:
    task = make_task(config, image_size, int(targets.max()) + 1)
    timer = StepTimer(warmup)
    data = ArrayDataModule(ArrayDataset(images, targets), ArrayDataset(images[:config.batch_size], targets[:config.batch_size]),
                           batch_size=config.batch_size, seed=0)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainingRun(Path(tmp), name="bench", monitor=task.monitor)
        trainer = run.trainer(config, [timer])
        trainer.fit(task, datamodule=data)
    return timer.images / (timer.end - timer.start)


def plain_loop(config: TrainingConfig, images, targets, image_size: int, warmup: int) -> float:
    task = make_task(config, image_size, int(targets.max()) + 1)
    task.train()
    steps = len(images) // config.batch_size
    opt = adamw_with_cosine(task, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                            total_steps=steps, warmup_ratio=config.warmup_ratio)  # fmt: skip
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    bf16 = resolve_precision(config.precision, "cpu") == "bf16-mixed"
    x_all, y_all = torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(targets)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n, start = 0, None
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        idx = order[step * config.batch_size : (step + 1) * config.batch_size]
        x = task.normalise(x_all[idx], augment=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = task.compute_loss(task(x), y_all[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(task.parameters(), config.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        if step >= warmup:
            n += len(idx)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=12, help="training steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--precision", default="auto", help="auto (CPU flags decide) | 32-true | bf16-mixed"
    )
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    print(f"device: {device_name('cpu')}")
    print(f"cpu flags: {' '.join(flags)}")
    config = TrainingConfig(max_epochs=1, batch_size=args.batch_size, learning_rate=1e-3, patience=None,
                            precision=args.precision, accelerator="cpu", log_every_n_steps=1)  # fmt: skip
    print(f"precision: {resolve_precision(config.precision, 'cpu')}; ResNet-18 at {args.image_size} px, "
          f"batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up)")  # fmt: skip
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    images = rng.integers(0, 256, (n, args.image_size, args.image_size, 3), dtype=np.uint8)
    targets = rng.integers(0, 10, n).astype(np.int64)
    best = {"plain loop": 0.0, "Lightning engine": 0.0}
    for _ in range(args.repeats):
        best["plain loop"] = max(
            best["plain loop"], plain_loop(config, images, targets, args.image_size, args.warmup)
        )
        best["Lightning engine"] = max(
            best["Lightning engine"], engine(config, images, targets, args.image_size, args.warmup)
        )
    print_table([[k, "", f"{v:.2f}"] for k, v in best.items()], ["path", "", "images/s"])
    print(f"ratio={best['Lightning engine'] / best['plain loop']:.3f}")


if __name__ == "__main__":
    main()
