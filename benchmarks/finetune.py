"""Training speed of Vitrina's contrastive fine-tuning against a reference loop.

Both sides train the ruCLIP ViT-B/32 384 px architecture
(``ai-forever/ruclip-vit-base-patch32-384``) holding RANDOM weights, written by
:func:`vitrina.models.ruclip.write_tiny_ruclip_checkpoint` into a temporary directory and
loaded through :func:`vitrina.models.ruclip.load_ruclip`, on the same (image, title) pairs in
the same order, batch 32, AdamW, the symmetric InfoNCE loss.

* ``reference``: the seed system's loop (``train_model.py``) -- fp32 without autocast,
  eager attention, every title padded to the 77-token context, images opened and
  transformed by PIL + numpy in the main thread (RGB, centre square crop, bilinear resize
  to 384, /255, mean/std), ``loss.backward()``, ``optimizer.step()``.
* ``vitrina``: :func:`vitrina.models.clip.finetune.fine_tune` itself -- the Lightning task
  on :mod:`vitrina.training` for one epoch (checkpoints and CSV log in a temporary folder),
  once per ``--precisions`` entry: titles padded to the longest of the batch, SDPA
  attention, images decoded by threads ahead of the model, AdamW with parameter groups,
  gradient clipping, warm-up + cosine schedule, bf16 autocast when asked (``fp32`` and
  ``bf16`` by default). The reference takes the task's batch order, so the first-step
  losses agree.

Each path runs in a fresh (spawned) process, so its peak RSS is its own.  The first step
of each path is a warm-up and is not timed; pairs/s is measured over the following steps
(one run).  The first-step losses of all paths are printed as a sanity check: same
weights, same batch, so they agree up to the precision used.

Run from the repository root::

    .venv/bin/python benchmarks/finetune.py                 # CPU, 3 steps of 32 pairs
    .venv/bin/python benchmarks/finetune.py --arch hm_tiny --steps 30   # the H&M model
    .venv/bin/python benchmarks/finetune.py --device cuda   # same on a GPU

The last line of stdout is ``speedup=<best Vitrina pairs/s / reference pairs/s>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    DEFAULT_HM_DIR,
    RUCLIP_B32_384,
    _hwm_mib,
    _peak_rss_mib,
    _ref_transform,
    _reset_hwm,
    _sync,
    cpu_flags,
    device_name,
    load_inputs,
    print_table,
    run_isolated,
)

BATCH_SIZE = 32  # the seed system's batch
#: Architectures to train: the seed's ruCLIP, and the H&M runs' tiny model
#: (conf/base/parameters_embeddings.yml, tiny_ruclip).
ARCHS = {
    "b32_384": RUCLIP_B32_384,
    "hm_tiny": dict(
        embed_dim=64,
        image_resolution=64,
        vision_layers=2,
        vision_width=64,
        vision_patch_size=16,
        context_length=77,
        vocab_size=2000,
        transformer_width=64,
        transformer_heads=2,
        transformer_layers=2,
    ),
}
LR = 6e-5  # the seed system's learning rate


# ---------------------------------------------------------------------- the two loops


def reference_loop(
    bundle: Any, titles: list[str], paths: list[str], batches: list[np.ndarray], device: str
) -> tuple[list[float], list[float]]:
    """The seed system's loop; returns per-step wall times and losses."""
    import torch

    from vitrina.models.clip.loss import contrastive_loss
    from vitrina.models.ruclip import image_features, text_features

    model = bundle.model.to(device)
    model.set_attn_implementation("eager")
    model.train()
    cfg = bundle.config
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    times, losses = [], []
    for idx in batches:
        t0 = time.perf_counter()
        ids = bundle.tokenizer([titles[i] for i in idx], padding="max_length")
        pixels = torch.from_numpy(
            np.stack([_ref_transform(paths[i], cfg.image_resolution, mean, std) for i in idx])
        )
        img = image_features(model, pixels.to(device))
        txt = text_features(model, ids["input_ids"].to(device))
        loss = contrastive_loss(img, txt, model.logit_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return times, losses


def vitrina_loop(
    bundle: Any,
    titles: list[str],
    paths: list[str],
    precision: str,
    device: str,
    num_workers: int,
    seed: int,
) -> tuple[list[float], list[float]]:
    """:func:`vitrina.models.clip.finetune.fine_tune` (the Lightning task on the engine)
    for one epoch, checkpoints in a temporary folder; per-step wall times and losses (the
    first time includes the epoch's start, a warm-up)."""
    import lightning.pytorch as pl
    import pandas as pd

    from vitrina.models.clip import ClipBundle, ClipFinetuneConfig
    from vitrina.models.clip.bundle import RuClipCheckpointBundle
    from vitrina.models.clip.finetune import fine_tune

    if not isinstance(bundle, ClipBundle):
        bundle = RuClipCheckpointBundle.from_ruclip(bundle)
    pairs = pd.DataFrame({"title": titles, "processed_path": paths})
    config = ClipFinetuneConfig.from_params(
        {
            "max_epochs": 1,
            "batch_size": BATCH_SIZE,
            "learning_rate": LR,
            "precision": {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[precision],
            "accelerator": "gpu" if device.startswith("cuda") else "cpu",
            "decode_threads": num_workers,
            "image_cache_mb": 0,
            "seed": seed,
            "eval_batch_size": 10,
            "num_threads": None,  # the caller set torch's threads
            "save_top_k": 1,
        }
    )
    stamps: list[float] = []
    losses: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            _sync(device)
            stamps.append(time.perf_counter())
            losses.append(float(outputs["loss"]))

    class Start(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            stamps.clear()
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="vitrina-bench-ft-run-") as root:
        fine_tune(bundle, pairs, pairs.iloc[:10], config, root, callbacks=[Start(), Clock()])
    times = np.diff(stamps).tolist()
    return times, losses


def run_path(
    kind: str,
    precision: str,
    checkpoint: str,
    titles: list[str],
    paths: list[str],
    device: str,
    num_workers: int,
    seed: int,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Load the checkpoint and train one epoch over the pairs; the first step is warm-up."""
    import torch

    from vitrina.models.clip.data import epoch_batches
    from vitrina.models.ruclip import load_ruclip

    bundle = load_ruclip(checkpoint)
    load_peak = _peak_rss_mib()
    rss_reset = _reset_hwm()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cpu0 = time.process_time()
    torch.set_num_threads(num_threads)
    if kind == "reference":
        batches = epoch_batches(len(titles), BATCH_SIZE, 0, seed)  # the Lightning task's order
        times, losses = reference_loop(bundle, titles, paths, batches, device)
    else:
        times, losses = vitrina_loop(bundle, titles, paths, precision, device, num_workers, seed)
    timed = times[1:]
    return {
        "kind": kind,
        "precision": precision,
        "steps": len(times),
        "warmup_s": times[0],
        "timed_s": float(sum(timed)),
        "pairs_per_s": BATCH_SIZE * len(timed) / max(sum(timed), 1e-9),
        "first_loss": losses[0],
        "cpu_s": time.process_time() - cpu0,
        "peak_rss_mib": _peak_rss_mib(),
        "load_peak_rss_mib": load_peak,
        "train_peak_mib": _hwm_mib() if rss_reset else None,
        "peak_gpu_mib": (
            torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        ),
    }


# ---------------------------------------------------------------------- report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--steps",
        type=int,
        default=3,
        help="training steps of 32 pairs per path, the first one untimed (default 3)",
    )
    p.add_argument(
        "--hm-dir",
        type=Path,
        default=DEFAULT_HM_DIR,
        help="H&M folder (articles.csv + images/); the demo catalogue is used if absent",
    )
    p.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="Vitrina autocast precisions to measure, comma-separated (fp32,bf16,fp16)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda[:i] | auto (default cpu)")
    p.add_argument(
        "--num-workers", type=int, default=2, help="Vitrina image decoding threads (default 2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data order")
    p.add_argument(
        "--arch",
        choices=sorted(ARCHS),
        default="b32_384",
        help="b32_384: ruCLIP ViT-B/32 384 px (default); hm_tiny: the H&M tiny ruCLIP",
    )
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--no-isolate",
        action="store_true",
        help="run every path in this process (peak RSS then accumulates)",
    )
    args = p.parse_args(argv)
    args.precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    if not args.precisions:
        p.error("--precisions is empty")
    if args.steps < 2:
        p.error("--steps must be >= 2 (one warm-up step + timed steps)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from vitrina.models.embedders import PRECISIONS
    from vitrina.models.ruclip import RuClipTokenizer, write_tiny_ruclip_checkpoint
    from vitrina.utils import resolve_device

    bad = [p for p in args.precisions if p not in PRECISIONS]
    if bad:
        raise SystemExit(f"unknown precision(s) {bad}; known: {PRECISIONS}")
    device = resolve_device(args.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available")
    n = BATCH_SIZE * args.steps

    with tempfile.TemporaryDirectory(prefix="vitrina-bench-ft-") as tmp_str:
        tmp = Path(tmp_str)
        titles, paths, source = load_inputs(n, args.hm_dir, tmp, require_titles=True)
        print(f"device: {device_name(device)}")
        print(f"inputs: {n} (image, title) pairs from {source}")
        t0 = time.perf_counter()
        arch = ARCHS[args.arch]
        checkpoint = write_tiny_ruclip_checkpoint(
            tmp / f"ruclip-{args.arch}-random", titles, seed=args.seed, **arch
        )
        print(f"cpu flags: {' '.join(cpu_flags())}")
        print(
            f"model: {args.arch} ruCLIP architecture, random weights, written in "
            f"{time.perf_counter() - t0:.1f}s to a temp dir, loaded with load_ruclip"
        )
        lengths = [len(r) for r in RuClipTokenizer.from_file(checkpoint).encode(titles)]
        print(
            f"title tokens (bos/eos incl.): mean {np.mean(lengths):.1f}, max {max(lengths)} "
            f"(reference pads all to {arch['context_length']})"
        )
        print(
            f"batch {BATCH_SIZE}, lr {LR}, AdamW; {args.steps} steps per path, the first one "
            "a warm-up (untimed); reference: fp32, eager attention, 77-token padding, "
            f"main-thread PIL; vitrina: fine_tune (Lightning), {args.num_workers} decoding threads"
        )
        sys.stdout.flush()
        common = (
            str(checkpoint),
            titles,
            paths,
            device,
            args.num_workers,
            args.seed,
            args.num_threads,
        )
        results = [run_isolated(run_path, not args.no_isolate, "reference", "fp32", *common)]
        for precision in args.precisions:
            results.append(
                run_isolated(run_path, not args.no_isolate, "vitrina", precision, *common)
            )

    header = [
        "path",
        "precision",
        "pairs/s",
        "timed s",
        "warm-up s",
        "CPU s",
        "first loss",
        "peak RSS MiB",
        "train peak MiB",
    ]
    if device.startswith("cuda"):
        header.append("peak GPU MiB")
    rows = []
    for r in results:
        row = [
            r["kind"],
            r["precision"],
            f"{r['pairs_per_s']:.2f}",
            f"{r['timed_s']:.1f}",
            f"{r['warmup_s']:.1f}",
            f"{r['cpu_s']:.0f}",
            f"{r['first_loss']:.4f}",
            f"{r['peak_rss_mib']:.0f}",
            "n/a" if r["train_peak_mib"] is None else f"{r['train_peak_mib']:.0f}",
        ]
        if device.startswith("cuda"):
            row.append(f"{r['peak_gpu_mib']:.0f}")
        rows.append(row)
    print()
    print_table(rows, header)
    print(
        "peak RSS: getrusage of the path's own process, load_ruclip included; train peak: "
        "VmHWM reset after loading (model, optimiser state, activations of the steps)"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ref = results[0]
    best = max(results[1:], key=lambda r: r["pairs_per_s"])
    print(f"best vitrina: {best['precision']} ({best['pairs_per_s']:.2f} pairs/s)")
    print(f"speedup={best['pairs_per_s'] / ref['pairs_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
