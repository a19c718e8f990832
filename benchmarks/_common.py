"""Helpers the benchmark scripts share (``embeddings.py``, ``finetune.py``, ``probing.py``).

The model architecture and the input loader, the ruclip reference image transform, peak
memory readings, CUDA synchronisation, running one measured path in a fresh process, and
the report's device name, CPU flags and table.  Not a benchmark itself.

The scripts import it as ``from _common import ...``: running ``python benchmarks/x.py``
puts ``benchmarks/`` on ``sys.path``, and spawned child processes inherit that path.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_HM_DIR = REPO.parent / "shared" / "data" / "hm"

#: ``ai-forever/ruclip-vit-base-patch32-384`` (its config.json), weights drawn at random.
RUCLIP_B32_384 = dict(
    embed_dim=512,
    image_resolution=384,
    vision_layers=12,
    vision_width=768,
    vision_patch_size=32,
    context_length=77,
    vocab_size=49408,
    transformer_width=512,
    transformer_heads=8,
    transformer_layers=12,
)


# ---------------------------------------------------------------------- inputs
def load_inputs(
    n: int, hm_dir: Path, tmp: Path, require_titles: bool = False
) -> tuple[list[str], list[str], str]:
    """``n`` titles and image paths: H&M articles with an image, else the demo catalogue.

    With ``require_titles``, articles without a non-empty title are skipped and the demo
    catalogue is used unless exactly ``n`` articles qualify (training needs full batches);
    otherwise a missing title becomes ``""`` and fewer than ``n`` H&M articles are kept.
    """
    import pandas as pd

    articles = hm_dir / "articles.csv"
    why = f"{hm_dir} not found"
    if articles.is_file():
        df = pd.read_csv(articles, usecols=["article_id", "prod_name"], dtype={"article_id": str})
        titles, paths = [], []
        for aid, name in zip(df["article_id"], df["prod_name"], strict=True):
            image = hm_dir / "images" / aid[:3] / f"{aid}.jpg"
            if not image.is_file():
                continue
            title = "" if pd.isna(name) else str(name)
            if require_titles and not title.strip():
                continue
            titles.append(title)
            paths.append(str(image))
            if len(titles) == n:
                break
        if len(titles) == n or (titles and not require_titles):
            return titles, paths, f"H&M articles ({hm_dir})"
        why = f"{len(titles)} usable articles in {hm_dir}, {n} needed"

    from vitrina.demo import generate_demo_catalogue

    out = tmp / "demo"
    df = generate_demo_catalogue(out, n_products=n, n_defects=0)
    return (
        df["name"].astype(str).tolist(),
        [str(out / "images" / p) for p in df["picture"]],
        f"demo catalogue (generated, {why})",
    )


# ---------------------------------------------------------------------- reference transform
def _ref_transform(path: str, resolution: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """ruclip.RuCLIPProcessor image transform in PIL + numpy: ``float32 [3, R, R]``.

    ``RandomResizedCrop(R, scale=(1, 1), ratio=(1, 1))`` falls back to a centre square crop
    of the short side, then a bilinear resize to ``R``; ``ToTensor`` + ``Normalize``.
    """
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = int(round((w - side) / 2.0)), int(round((h - side) / 2.0))
    img = img.crop((left, top, left + side, top + side)).resize(
        (resolution, resolution), Image.Resampling.BILINEAR
    )
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - mean) / std).transpose(2, 0, 1)


# ---------------------------------------------------------------------- memory, timing
def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``getrusage``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux ``clear_refs``).

    ``getrusage`` cannot be reset (it also keeps the high-water mark of exited threads),
    so the peak after the reset is read back from ``VmHWM`` by :func:`_hwm_mib`.  False
    when the reset or ``VmHWM`` is unavailable.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _hwm_mib() is not None


def _hwm_mib() -> float | None:
    """``VmHWM`` (peak RSS since start or the last :func:`_reset_hwm`), MiB; None if unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sync(device: str) -> None:
    """Wait for queued CUDA work when ``device`` is a GPU (so timings include it)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_isolated(fn: Callable[..., dict[str, Any]], isolate: bool, *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a fresh spawned process (own peak RSS, clean allocator state).

    ``fn`` must be picklable by reference: a module-level function of the running script
    (the spawned child re-runs that script as ``__mp_main__``) or of an importable module.
    With ``isolate`` False it runs in this process.
    """
    if not isolate:
        return fn(*args)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---------------------------------------------------------------------- report
def device_name(device: str) -> str:
    """``device`` for the report: the GPU's name, or the CPU model, cores and torch threads."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def cpu_flags() -> list[str]:
    """The CPU's vector-instruction flags from ``/proc/cpuinfo`` (``sse4*``, ``fma``,
    ``avx*``, ``amx*``, ``*bf16``, ``*vnni``), which decide fp32 speed and whether bf16
    pays off; empty when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                keep = ("sse4", "fma", "avx", "amx", "bf16", "vnni")
                return [f for f in flags if any(k in f for k in keep)]
    except OSError:
        pass
    return []


#: Environment that makes this process's kernels those of a plain AVX2 CPU (set before
#: torch is imported): ATen's vectorised ops, oneDNN (bf16/fp32 matmuls, convolutions),
#: MKL (fp32 GEMM) and FBGEMM (int8 GEMM; ``AVX2`` = ``VPMADDUBSW`` instead of VNNI).
AVX2_KERNELS_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}
#: The flags of a plain AVX2 CPU (the project's 2-core EPYC machines, no AVX-512).
AVX2_FLAGS = "sse4_1 sse4_2 avx fma avx2"


def add_cpu_arguments(parser: Any) -> None:
    """``--cpu-flags`` (the flags ``precision: auto`` decides from) and ``--emulate-avx2``."""
    parser.add_argument(
        "--cpu-flags",
        help="CPU flags `precision: auto` decides from instead of /proc/cpuinfo "
        "(e.g. 'avx2,fma'; sets $VITRINA_CPU_FLAGS)",
    )
    parser.add_argument(
        "--emulate-avx2",
        action="store_true",
        help="run AVX2 kernels only (ATen, oneDNN, MKL, FBGEMM) and decide as on an AVX2 CPU",
    )


def apply_cpu_arguments(args: Any) -> None:
    """Apply :func:`add_cpu_arguments`' options to this process's environment (inherited by
    child processes); call it before torch is imported."""
    if args.emulate_avx2:
        os.environ.update(AVX2_KERNELS_ENV)
        os.environ.setdefault("VITRINA_CPU_FLAGS", args.cpu_flags or AVX2_FLAGS)
    if args.cpu_flags:
        os.environ["VITRINA_CPU_FLAGS"] = args.cpu_flags


def describe_cpu() -> str:
    """The CPU flags of /proc/cpuinfo, the flags decisions are made from when overridden,
    and the kernel ISAs forced by :data:`AVX2_KERNELS_ENV`."""
    text = f"cpu flags: {' '.join(cpu_flags()) or 'unknown'}"
    override = os.environ.get("VITRINA_CPU_FLAGS")
    if override:
        text += f"\nflags precision auto decides from ($VITRINA_CPU_FLAGS): {override}"
    forced = {k: os.environ[k] for k in AVX2_KERNELS_ENV if k in os.environ}
    if forced:
        text += "\nkernels forced: " + " ".join(f"{k}={v}" for k, v in forced.items())
    return text


def print_table(rows: list[list[str]], header: list[str]) -> None:
    """Print ``rows`` under ``header``: the first two columns left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(fmt(header))
    print(fmt(["-" * w for w in widths]))
    for r in rows:
        print(fmt(r))
