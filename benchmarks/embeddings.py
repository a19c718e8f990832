"""Speed of Vitrina's embeddings step against the old ruclip ``Predictor`` loop.

Both sides embed the same N products (title + image) with the same ruCLIP ViT-B/32 384 px
architecture (``ai-forever/ruclip-vit-base-patch32-384``) holding RANDOM weights, written by
:func:`vitrina.models.ruclip.write_tiny_ruclip_checkpoint` into a temporary directory and
loaded through :func:`vitrina.models.ruclip.load_ruclip` (the real loader path).

* ``reference``: the loop of ``ruclip.Predictor`` -- batches of 8, every image opened and
  transformed by PIL + numpy in the main thread (RGB, centre square crop, bilinear resize to
  384, /255, config mean/std), every title padded to the 77-token context, fp32,
  ``get_text_features`` / ``get_image_features`` and L2 normalisation.
* ``vitrina``: :meth:`vitrina.models.clip.ClipBundle.embedder` with batch 64 and
  2 preprocessing threads, once per ``--precisions`` entry (fp32, bf16 autocast, dynamic
  int8 towers and ``auto`` by default; ``auto`` is what the CPU flags choose).

Each path runs in a fresh (spawned) process, so its peak RSS is its own; each does a small
warm-up (excluded from timing) and then one timed run.  The reference and the Vitrina fp32
embeddings must agree to cosine > 0.9999 (text and image, every product).

Run from the repository root::

    .venv/bin/python benchmarks/embeddings.py                 # CPU, N=128, fp32 + bf16
    .venv/bin/python benchmarks/embeddings.py --device cuda   # same on a GPU

``--cpu-flags avx2,fma`` makes ``auto`` decide as on that CPU; ``--emulate-avx2`` also runs
only AVX2 kernels (ATen, oneDNN, MKL and FBGEMM), as a plain AVX2 CPU would. Every
non-fp32 path must keep cosine > 0.99 against fp32 for every product (text and image).

The last line of stdout is ``speedup=<best Vitrina products/s / reference products/s>``.
"""

from __future__ import annotations

import argparse
import gc
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
    add_cpu_arguments,
    apply_cpu_arguments,
    describe_cpu,
    device_name,
    load_inputs,
    print_table,
    run_isolated,
)

REF_BATCH_SIZE = 8  # ruclip.Predictor(bs=8)
FP32_MIN_COSINE = 0.9999
LOW_PRECISION_MIN_COSINE = 0.99


# ---------------------------------------------------------------------- reference loop
class ReferencePredictor:
    """The old ``ruclip.Predictor`` way: batch 8, main-thread PIL, 77-token padding, fp32."""

    def __init__(self, bundle: Any, device: str, batch_size: int = REF_BATCH_SIZE) -> None:
        self.bundle = bundle
        self.model = bundle.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        cfg = bundle.config
        self.resolution = cfg.image_resolution
        self.mean = np.asarray(cfg.mean, dtype=np.float32)
        self.std = np.asarray(cfg.std, dtype=np.float32)
        self.preprocess_s = 0.0  # image decoding + transform, main thread

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        from vitrina.models.ruclip import text_features

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                ids = self.bundle.tokenizer(texts[i : i + self.batch_size], padding="max_length")
                out.append(text_features(self.model, ids["input_ids"]))
            feats = torch.cat(out)
            feats = feats / feats.norm(dim=-1, keepdim=True)
        return feats.float().cpu().numpy()

    def embed_images(self, paths: list[str]) -> np.ndarray:
        import torch

        from vitrina.models.ruclip import image_features

        out = []
        with torch.no_grad():
            for i in range(0, len(paths), self.batch_size):
                t0 = time.perf_counter()
                pixels = np.stack(
                    [
                        _ref_transform(p, self.resolution, self.mean, self.std)
                        for p in paths[i : i + self.batch_size]
                    ]
                )
                self.preprocess_s += time.perf_counter() - t0
                out.append(image_features(self.model, torch.from_numpy(pixels)))
            feats = torch.cat(out)
            feats = feats / feats.norm(dim=-1, keepdim=True)
        return feats.float().cpu().numpy()


# ---------------------------------------------------------------------- one measured path


def _cpu_s() -> float:
    """User + system CPU seconds of this process (all threads)."""
    t = os.times()
    return t.user + t.system


def run_path(
    kind: str,
    precision: str,
    checkpoint: str,
    titles: list[str],
    paths: list[str],
    device: str,
    batch_size: int,
    num_workers: int,
    warmup: int,
) -> dict[str, Any]:
    """Load the checkpoint, warm up, then time ``embed_texts`` and ``embed_images`` once."""
    import torch

    from vitrina.models.clip import RuClipCheckpointBundle
    from vitrina.models.ruclip import load_ruclip

    bundle = load_ruclip(checkpoint)
    gc.collect()
    hwm_reset = _reset_hwm()
    if kind == "reference":
        embedder = ReferencePredictor(bundle, device)
    else:
        settings = {
            "batch_size": batch_size,
            "num_workers": num_workers,
            "precision": precision,
            "progress": False,
            "device": device,
        }
        clip = RuClipCheckpointBundle.from_ruclip(bundle)
        embedder = clip.embedder(settings, name=f"vitrina-{precision}")
    k = min(warmup, len(titles))
    if k:
        embedder.embed_texts(titles[:k])
        embedder.embed_images(paths[:k])
    if kind == "reference":
        embedder.preprocess_s = 0.0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    _sync(device)
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    text = embedder.embed_texts(titles)
    _sync(device)
    t1 = time.perf_counter()
    image = embedder.embed_images(paths)
    _sync(device)
    t2 = time.perf_counter()
    cpu_s = _cpu_s() - cpu0

    resolved = getattr(embedder, "precision", precision)
    return {
        "kind": kind,
        "precision": f"auto->{resolved}" if precision == "auto" else precision,
        "text_s": t1 - t0,
        "image_s": t2 - t1,
        "cpu_s": cpu_s,
        "preprocess_s": getattr(embedder, "preprocess_s", None),
        "text": text,
        "image": image,
        "peak_rss_mib": _peak_rss_mib(),
        "run_peak_mib": _hwm_mib() if hwm_reset else None,
        "peak_gpu_mib": (
            torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
        ),
    }


# ---------------------------------------------------------------------- report


def _loadavg(flag: bool = True) -> str:
    """1/5/15-minute load averages; ``flag``: say so when other work competes for the CPU."""
    try:
        load = os.getloadavg()
    except OSError:
        return "unknown"
    text = " ".join(f"{v:.2f}" for v in load)
    cores = os.cpu_count() or 1
    if flag and load[0] > cores + 0.5:
        text += f" (> {cores} cores: other processes compete for the CPU, timings are noisy)"
    return text


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` matrices."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a.astype(np.float64) * b, axis=1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=128, help="products to embed (default 128)")
    p.add_argument(
        "--hm-dir",
        type=Path,
        default=DEFAULT_HM_DIR,
        help="H&M folder (articles.csv + images/); the demo catalogue is used if absent",
    )
    p.add_argument(
        "--precisions",
        default="fp32,bf16,int8,auto",
        help="Vitrina precisions to measure, comma-separated (fp32,bf16,fp16,int8,auto)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda[:i] | auto (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="Vitrina batch size (default 64)")
    p.add_argument(
        "--num-workers", type=int, default=2, help="Vitrina preprocessing threads (default 2)"
    )
    p.add_argument(
        "--warmup", type=int, default=8, help="warm-up products per path, untimed (default 8)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument(
        "--no-isolate",
        action="store_true",
        help="run every path in this process (peak RSS then accumulates)",
    )
    add_cpu_arguments(p)
    args = p.parse_args(argv)
    args.precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    if not args.precisions:
        p.error("--precisions is empty")
    if args.n < 1:
        p.error("--n must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_cpu_arguments(args)  # before torch is imported; spawned paths inherit it
    import torch

    from vitrina.models.embedders import PRECISIONS
    from vitrina.models.ruclip import write_tiny_ruclip_checkpoint
    from vitrina.utils import resolve_device

    bad = [p for p in args.precisions if p not in PRECISIONS]
    if bad:
        raise SystemExit(f"unknown precision(s) {bad}; known: {PRECISIONS}")
    device = resolve_device(args.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available")

    with tempfile.TemporaryDirectory(prefix="vitrina-bench-") as tmp_str:
        tmp = Path(tmp_str)
        titles, paths, source = load_inputs(args.n, args.hm_dir, tmp)
        n = len(titles)
        from vitrina.training.precision import inference_precision

        print(f"device: {device_name(device)}")
        print(describe_cpu())
        print(
            f"precision auto -> path {inference_precision('auto', device)} "
            f"(torch kernels: {torch.backends.cpu.get_cpu_capability()})"
        )
        print(f"load average at start: {_loadavg()}")
        print(f"inputs: {n} products from {source}")
        t0 = time.perf_counter()
        checkpoint = write_tiny_ruclip_checkpoint(
            tmp / "ruclip-vit-base-patch32-384-random", titles, seed=args.seed, **RUCLIP_B32_384
        )
        print(
            "model: ruclip-vit-base-patch32-384 architecture, random weights, written in "
            f"{time.perf_counter() - t0:.1f}s to a temp dir, loaded with load_ruclip"
        )
        from vitrina.models.ruclip import RuClipTokenizer

        lengths = [len(r) for r in RuClipTokenizer.from_file(checkpoint).encode(titles)]
        print(
            f"title tokens (bos/eos incl.): mean {np.mean(lengths):.1f}, max {max(lengths)} "
            f"(reference pads all to {RUCLIP_B32_384['context_length']})"
        )
        print(
            f"reference: batch {REF_BATCH_SIZE}, fp32, main-thread PIL; vitrina: batch "
            f"{args.batch_size}, {args.num_workers} preprocessing threads; warm-up "
            f"{min(args.warmup, n)} products per path; one timed run each"
        )
        sys.stdout.flush()

        common = (str(checkpoint), titles, paths, device, args.batch_size, args.num_workers)
        results = [
            run_isolated(run_path, not args.no_isolate, "reference", "fp32", *common, args.warmup)
        ]
        for precision in args.precisions:
            results.append(
                run_isolated(
                    run_path, not args.no_isolate, "vitrina", precision, *common, args.warmup
                )
            )

    header = [
        "path",
        "precision",
        "products/s",
        "seconds",
        "text s",
        "image s",
        "CPU s",
        "peak RSS MiB",
        "embed peak MiB",
    ]
    if device.startswith("cuda"):
        header.append("peak GPU MiB")
    rows = []
    for r in results:
        total = r["text_s"] + r["image_s"]
        r["products_per_s"] = n / total
        row = [
            r["kind"],
            r["precision"],
            f"{r['products_per_s']:.2f}",
            f"{total:.2f}",
            f"{r['text_s']:.2f}",
            f"{r['image_s']:.2f}",
            f"{r['cpu_s']:.1f}",
            f"{r['peak_rss_mib']:.0f}",
            "n/a" if r["run_peak_mib"] is None else f"{r['run_peak_mib']:.0f}",
        ]
        if device.startswith("cuda"):
            row.append(f"{r['peak_gpu_mib']:.0f}")
        rows.append(row)
    print()
    print_table(rows, header)
    ref = results[0]
    print(
        "peak RSS: getrusage of the path's own process, load_ruclip included (loading holds "
        "the state dict and the model at once); embed peak: VmHWM reset after loading, i.e. "
        "model + warm-up + timed run"
    )
    print(
        f"reference image time: {ref['preprocess_s']:.2f}s PIL preprocessing (main thread) + "
        f"{ref['image_s'] - ref['preprocess_s']:.2f}s model"
    )

    print()
    failed = False
    for r in results[1:]:
        threshold = FP32_MIN_COSINE if r["precision"].endswith("fp32") else LOW_PRECISION_MIN_COSINE
        parts = []
        ok = True
        for modality in ("text", "image"):
            c = cosines(ref[modality], r[modality])
            ok &= bool(c.min() > threshold)
            parts.append(f"{modality} mean {c.mean():.6f} min {c.min():.6f}")
        verdict = "OK" if ok else "FAIL"
        print(
            f"cosine(reference, vitrina {r['precision']}): {'; '.join(parts)} "
            f"[{verdict}: min > {threshold}]"
        )
        if not ok:
            failed = True

    print(f"load average at end (this benchmark included): {_loadavg(flag=False)}")
    best = max(results[1:], key=lambda r: r["products_per_s"])
    speedup = best["products_per_s"] / ref["products_per_s"]
    print(f"best vitrina: {best['precision']} ({best['products_per_s']:.2f} products/s)")
    print(f"speedup={speedup:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
