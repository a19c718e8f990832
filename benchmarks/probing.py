"""Speed and agreement of the probing step's two backends: torch against scikit-learn.

Both backends fit the probing step's whole matrix (every task × modality × probe, for
every model) on the same splits with the same parameters (``conf/base/parameters_probing.yml``):

* ``sklearn``: the reference, :func:`vitrina.models.probes.probe_matrix_sklearn`
  (``LogisticRegression`` with the C sweep, ``MLPClassifier``), CPU;
* ``torch``: :func:`vitrina.models.torch_probes.probe_matrix` on the CPU, and on CUDA too
  when a GPU is visible.

Inputs: the embeddings and splits the H&M main job writes
(``<data>/04_feature/<catalogue>/embeddings/<model>.npz`` and
``<data>/05_model_input/<catalogue>/probing_splits.parquet``). A missing NPZ is replaced
by random unit vectors of the model's H&M shape, missing splits by random labels with
the H&M tasks' sizes and class counts (speed only: nothing to learn there).

Each path runs in a fresh spawned process; only the fitting is timed (loading and
aligning the embeddings are not). The report gives the seconds of each path, per model,
and the agreement of the torch paths with scikit-learn: the largest |Δ macro-F1| per
model and probe, the cells over 0.01, and how far the chosen ``C`` moved.

Run from the repository root::

    .venv/bin/python benchmarks/probing.py                          # data/ of this checkout
    .venv/bin/python benchmarks/probing.py --data-dir ../main/data  # another checkout's run

The last line of stdout is ``speedup=<sklearn seconds / torch CPU seconds>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from _common import REPO, _sync, cpu_flags, device_name, print_table, run_isolated

MODELS = ("tiny_ruclip", "tiny_ruclip_finetuned", "tfidf_svd")
#: H&M shapes (text, image dims) of the main job's models, for the random stand-ins
SHAPES = {"tiny_ruclip": (64, 64), "tiny_ruclip_finetuned": (64, 64), "tfidf_svd": (256, 256)}
#: H&M probing tasks as the main job splits them: products, classes (is_adult: no column)
HM_TASKS = {
    "male_female": (8705, 2),
    "adult_child": (11793, 2),
    "category": (11790, 12),
    "subcategory": (11632, 61),
}
N_PRODUCTS = 11793
F1_TOLERANCE = 0.01


def synthetic_splits(seed: int = 0) -> pd.DataFrame:
    """Random splits with the H&M tasks' sizes: two products per group, 80/20 by group."""
    rng = np.random.default_rng(seed)
    frames = []
    for task, (n, k) in HM_TASKS.items():
        ids = rng.choice(N_PRODUCTS, size=n, replace=False)
        groups = ids // 2
        weights = 1.0 / np.arange(1, k + 1)  # Zipf-like class sizes
        labels = rng.choice(k, size=n, p=weights / weights.sum())
        test = np.isin(groups, rng.choice(np.unique(groups), size=len(groups) // 10))
        frames.append(
            pd.DataFrame(
                {
                    "task": task,
                    "product_id": [f"p{i}" for i in ids],
                    "group_id": [f"g{g}" for g in groups],
                    "label": [f"c{c}" for c in labels],
                    "split": np.where(test, "test", "train"),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def load_inputs(
    data: Path, catalogue: str, models: list[str], seed: int
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, str], str]:
    """``(splits, {model: Embeddings}, {model: where it came from}, where the splits came from)``."""
    from vitrina.datasets.embeddings import Embeddings, EmbeddingsDataset

    splits_path = data / "05_model_input" / catalogue / "probing_splits.parquet"
    if splits_path.is_file():
        splits, split_source = pd.read_parquet(splits_path), str(splits_path)
    else:
        splits, split_source = synthetic_splits(seed), f"random (no {splits_path})"
    ids = pd.unique(splits["product_id"].astype(str))
    rng = np.random.default_rng(seed)
    embeddings, sources = {}, {}
    for model in models:
        path = data / "04_feature" / catalogue / "embeddings" / f"{model}.npz"
        if path.is_file():
            embeddings[model], sources[model] = EmbeddingsDataset(str(path)).load(), str(path)
            continue
        dims = SHAPES.get(model, (64, 64))
        arrays = [rng.normal(size=(len(ids), d)).astype(np.float32) for d in dims]
        arrays = [a / np.linalg.norm(a, axis=1, keepdims=True) for a in arrays]
        embeddings[model] = Embeddings(ids=ids, text=arrays[0], image=arrays[1])
        sources[model] = f"random unit vectors {list(dims)} (no {path})"
    return splits, embeddings, sources, split_source


def run_path(
    backend: str,
    device: str,
    data: str,
    catalogue: str,
    models: list[str],
    params: dict[str, Any],
    threads: int | None,
    workers: int,
    seed: int,
    verbose: bool = False,
) -> dict[str, Any]:
    """Fit the whole matrix with one backend; per-cell records and seconds per model."""
    import torch

    from vitrina.models.probes import probe_matrix_sklearn
    from vitrina.models.torch_probes import probe_matrix
    from vitrina.pipelines.probing.nodes import matrix_inputs
    from vitrina.utils import limit_threads

    splits, embeddings, _, _ = load_inputs(Path(data), catalogue, models, seed)
    n_workers = workers if device == "cpu" else 1
    probes = {k: dict(v or {}) for k, v in params["probes"].items()}
    records, seconds = [], {}
    cpu0 = os.times()
    with limit_threads(threads):
        n_threads = torch.get_num_threads()
        for model in models:
            features, tasks = matrix_inputs(embeddings[model], splits, params["modalities"])

            def keep(cell: Any, model: str = model) -> None:
                records.append(
                    {
                        "model": model,
                        "task": cell.task,
                        "modality": cell.modality,
                        "probe": cell.probe,
                        "macro_f1": cell.metrics["macro_f1"],
                        "C": cell.info.get("C", np.nan),
                        "epochs": cell.info.get("epochs", np.nan),
                        "seconds": cell.seconds,
                    }
                )
                if verbose:
                    print(f"{backend}/{device}", *records[-1].values(), file=sys.stderr, flush=True)

            _sync(device)
            start = time.perf_counter()
            seed_ = int(params.get("seed", 42))
            if backend == "sklearn":
                probe_matrix_sklearn(features, tasks, probes, seed=seed_, on_cell=keep)
            else:
                probe_matrix(
                    features,
                    tasks,
                    probes,
                    seed=seed_,
                    device=device,
                    workers=n_workers,
                    on_cell=keep,
                )
            _sync(device)
            seconds[model] = time.perf_counter() - start
    cpu1 = os.times()
    return {
        "backend": backend,
        "device": device,
        "threads": n_threads if backend == "sklearn" else f"{n_threads}x{n_workers}",
        "seconds": seconds,
        "cpu_s": cpu1.user + cpu1.system - cpu0.user - cpu0.system,
        "cells": records,
    }


def agreement(ref: pd.DataFrame, other: pd.DataFrame, sweep_step: float) -> pd.DataFrame:
    """Per model × probe: max |Δ macro-F1|, cells over the tolerance, C moves."""
    keys = ["model", "task", "modality", "probe"]
    both = ref.merge(other, on=keys, suffixes=("_ref", ""))
    both["dF1"] = (both["macro_f1"] - both["macro_f1_ref"]).abs()
    both["dlogC"] = (np.log10(both["C"]) - np.log10(both["C_ref"])).abs()
    rows = []
    for (model, probe), g in both.groupby(["model", "probe"], sort=False):
        row = {
            "model": model,
            "probe": probe,
            "cells": len(g),
            "max |dF1|": g["dF1"].max(),
            f"> {F1_TOLERANCE}": int((g["dF1"] > F1_TOLERANCE).sum()),
        }
        if probe == "logreg" and g["C"].notna().any():
            row["same C"] = int((g["dlogC"] < 1e-9).sum())
            row["C within 1 step"] = int((g["dlogC"] <= sweep_step + 1e-9).sum())
        rows.append(row)
    return pd.DataFrame(rows), both


def cached_reference(
    path: Path, params: dict[str, Any], models: list[str], data: Path
) -> dict[str, Any]:
    """A sklearn path saved by ``--reference``; ``SystemExit`` when it was run on other
    parameters, data or models (the cells would not be comparable)."""
    saved = json.loads(path.read_text())
    for what, now, then in (
        ("parameters", params, saved.get("params")),
        ("data dir", str(data), saved.get("data")),
        ("models", sorted(models), sorted(saved.get("seconds", {}))),
    ):
        if now != then:
            raise SystemExit(f"--reference {path}: saved for other {what} ({then!r} != {now!r})")
    return saved


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=REPO / "data",
        help="the project's data/ folder holding the main job's outputs (default: ./data)",
    )
    p.add_argument("--catalogue", default="hm", help="catalogue folder name (default hm)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument(
        "--params",
        type=Path,
        default=REPO / "conf" / "base" / "parameters_probing.yml",
        help="probing parameters (default conf/base/parameters_probing.yml)",
    )
    p.add_argument("--backends", default="sklearn,torch", help="paths to run (sklearn,torch)")
    p.add_argument(
        "--gpu", default="auto", help="auto (a CUDA row when available) | cuda[:i] | none"
    )
    p.add_argument("--threads", type=int, default=None, help="torch/BLAS threads (default: all)")
    p.add_argument(
        "--workers",
        default="auto",
        help="torch on CPU: units fitted at once in threads (probing.torch_workers; auto: idle cores)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random stand-ins")
    p.add_argument("--out", type=Path, default=None, help="write the per-cell table as CSV")
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="JSON of the sklearn path: reused when it exists (same data and parameters: "
        "checked), else written after the run (the reference takes hours on 2 cores)",
    )
    p.add_argument("--verbose", action="store_true", help="print each cell to stderr")
    p.add_argument("--no-isolate", action="store_true", help="run every path in this process")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from vitrina.training.threads import auto_threads

    params = yaml.safe_load(args.params.read_text())["probing"]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    splits, _, sources, split_source = load_inputs(args.data_dir, args.catalogue, models, 0)
    n_cells = (
        splits["task"].nunique() * len(params["modalities"]) * len(params["probes"]) * len(models)
    )
    print(f"cpu: {device_name('cpu')}")
    print(f"cpu flags: {' '.join(cpu_flags()) or 'unknown'}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"splits: {split_source}")
    for model in models:
        print(f"{model}: {sources[model]}")
    print(
        f"matrix: {splits['task'].nunique()} tasks x {len(params['modalities'])} modalities x "
        f"{len(params['probes'])} probes x {len(models)} models = {n_cells} cells"
    )
    sys.stdout.flush()

    paths = [(b.strip(), "cpu") for b in args.backends.split(",") if b.strip()]
    gpu = args.gpu
    if gpu == "auto":
        gpu = "cuda" if torch.cuda.is_available() else "none"
    if gpu != "none" and "torch" in [b for b, _ in paths]:
        if not torch.cuda.is_available():
            raise SystemExit(f"--gpu {args.gpu}: CUDA is not available")
        print(f"gpu: {device_name(gpu)}")
        paths.append(("torch", gpu))
    common = (
        str(args.data_dir),
        args.catalogue,
        models,
        params,
        args.threads,
        auto_threads(args.workers) or 1,
        args.seed,
        args.verbose,
    )
    results = []
    for backend, device in paths:
        t0 = time.perf_counter()
        if backend == "sklearn" and args.reference and args.reference.is_file():
            results.append(cached_reference(args.reference, params, models, args.data_dir))
            print(f"sklearn on cpu: cached ({args.reference})", flush=True)
            continue
        results.append(run_isolated(run_path, not args.no_isolate, backend, device, *common))
        print(f"{backend} on {device}: done in {time.perf_counter() - t0:.1f}s", flush=True)
        if backend == "sklearn" and args.reference:
            saved = {**results[-1], "params": params, "data": str(args.data_dir)}
            args.reference.write_text(json.dumps(saved, default=float))

    header = ["backend", "device", "threads", "seconds", "CPU s", *models]
    rows = [
        [
            r["backend"],
            r["device"],
            str(r["threads"]),
            f"{sum(r['seconds'].values()):.1f}",
            f"{r['cpu_s']:.1f}",
            *[f"{r['seconds'][m]:.1f}" for m in models],
        ]
        for r in results
    ]
    print()
    print_table(rows, header)
    tables = [
        pd.DataFrame(r["cells"]).assign(path=f"{r['backend']}/{r['device']}") for r in results
    ]
    if args.out:
        pd.concat(tables).to_csv(args.out, index=False)
        print(f"per-cell table: {args.out}")
    by_path = {(r["backend"], r["device"]): t for r, t in zip(results, tables, strict=True)}
    ref = by_path.get(("sklearn", "cpu"))
    lo, hi = params["probes"].get("logreg", {}).get("sweep_range", [-3, 3])
    steps = int(params["probes"].get("logreg", {}).get("sweep_steps", 4))
    sweep_step = 2 * (hi - lo) / (steps - 1) / (steps + 1)  # the refined grid's spacing
    failed = False
    for (backend, device), table in by_path.items():
        if ref is None or backend == "sklearn":
            continue
        summary, _ = agreement(ref, table, sweep_step)
        print(f"\nagreement of torch on {device} with sklearn (|dF1| tolerance {F1_TOLERANCE}):")
        print_table(
            [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r] for r in summary.values],
            list(summary.columns),
        )
        failed |= bool((summary[f"> {F1_TOLERANCE}"] > 0).any())
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    seconds = {(r["backend"], r["device"]): sum(r["seconds"].values()) for r in results}
    if ("sklearn", "cpu") in seconds and ("torch", "cpu") in seconds:
        print(f"speedup={seconds['sklearn', 'cpu'] / seconds['torch', 'cpu']:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
