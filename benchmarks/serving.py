"""Serving throughput: eager PyTorch against onnxruntime fp32 and int8 for one classifier.

A ResNet-50-sized classifier (the backbone registry's ``resnet50``: transformers
``ResNetModel`` with microsoft/resnet-50's architecture, random weights, plus a linear
head over ``--classes`` classes) at 224 px is exported with :mod:`vitrina.export` (the
dynamo ONNX exporter; onnxruntime static int8, QDQ, per channel, calibrated on
``--calibration`` images) and run on the same normalised inputs by:

* eager PyTorch fp32 (``torch.no_grad``, NCHW);
* eager PyTorch fp32 at its best (``torch.inference_mode`` and channels-last memory);
* onnxruntime fp32 and onnxruntime int8 (CPU execution provider, all graph optimisations).

For each: images/s at batch 1 and at ``--batch-size``; at batch 1 also latency p50/p95.
Every path uses ``--threads`` intra-op threads. Peak RSS is the process's after each path
(cumulative: the paths share one process so that they share the inputs). Int8 top-1
agreement with fp32 on the batch inputs is printed too (random weights: a check that
quantisation kept the ranking, not an accuracy).

Last line: ``speedup=<int8 onnxruntime / eager fp32 images/s at --batch-size>``.

    python benchmarks/serving.py                         # ResNet-50, 224 px, batch 32, 2 threads
    python benchmarks/serving.py --image-size 96 --iters 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import _peak_rss_mib, cpu_flags, device_name, print_table

from vitrina.export.formats import export_onnx
from vitrina.export.graph import INPUT_NAME, InferenceGraph
from vitrina.export.quantise import activation_choice, quantise_static
from vitrina.export.runtime import ort_session
from vitrina.models.classifiers.backbones import build_backbone
from vitrina.models.classifiers.kinds import MulticlassTask


def measure(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int, iters: int,
            latency_iters: int) -> dict[str, float]:  # fmt: skip
    """Images/s at ``batch`` (best of ``iters`` timed calls after one warm-up) and at batch
    1 with latency p50/p95 in ms (``latency_iters`` calls after two warm-ups)."""
    xb, x1 = x[:batch], x[:1]
    run(xb)
    best = min(_timed(run, xb) for _ in range(iters))
    for _ in range(2):
        run(x1)
    lat = np.array([_timed(run, x1) for _ in range(latency_iters)]) * 1000
    return {"batch_ips": batch / best, "b1_ips": 1000 / lat.mean(),
            "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "rss": _peak_rss_mib()}  # fmt: skip


def _timed(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> float:
    start = time.perf_counter()
    run(x)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--iters", type=int, default=3, help="timed calls at --batch-size (best kept)")
    p.add_argument("--latency-iters", type=int, default=20, help="timed calls at batch 1")
    p.add_argument("--calibration", type=int, default=16, help="int8 calibration images (>= 8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--activations", choices=["auto", "int8", "uint8"], default="auto",
                   help="int8 activation type (weights are int8 per channel); auto: the export's choice")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device: {device_name('cpu')}")
    print(f"cpu flags: {' '.join(cpu_flags()) or 'unknown'}")
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, threads {args.threads}; "
          f"resnet50 + linear head ({args.classes} classes) at {args.image_size} px, random weights")  # fmt: skip
    torch.manual_seed(0)
    backbone = build_backbone("resnet50", image_size=args.image_size)
    task = MulticlassTask(backbone, classes=[str(i) for i in range(args.classes)], training={},
                          image_size=args.image_size)  # fmt: skip
    graph = InferenceGraph(task)
    rng = np.random.default_rng(0)
    n = max(args.batch_size, args.calibration)
    x = rng.standard_normal((n, 3, args.image_size, args.image_size)).astype(np.float32)
    results: dict[str, dict[str, float]] = {}

    def eager(xs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return graph(torch.from_numpy(xs)).numpy()

    results["eager fp32"] = measure(eager, x, args.batch_size, args.iters, args.latency_iters)
    best = InferenceGraph(task).to(memory_format=torch.channels_last)

    def eager_best(xs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return best(torch.from_numpy(xs).contiguous(memory_format=torch.channels_last)).numpy()

    results["eager fp32 (channels-last, inference_mode)"] = measure(
        eager_best, x, args.batch_size, args.iters, args.latency_iters
    )
    with tempfile.TemporaryDirectory(prefix="vitrina-serving-") as tmp:
        fp32_path, int8_path = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        started = time.perf_counter()
        export_onnx(graph, torch.from_numpy(x[:2]), fp32_path)
        exported = time.perf_counter() - started
        quantise_static(fp32_path, int8_path, x[: args.calibration], activations=args.activations)
        print(f"export {exported:.1f} s, quantisation {time.perf_counter() - started - exported:.1f} s "
              f"({args.calibration} calibration images; activations, reduce_range: "
              f"{activation_choice(args.activations)})")  # fmt: skip
        outputs = {}
        for name, path in (("onnxruntime fp32", fp32_path), ("onnxruntime int8", int8_path)):
            session = ort_session(path, args.threads)

            def run(xs: np.ndarray, s=session) -> np.ndarray:
                return s.run(None, {INPUT_NAME: xs})[0]

            results[name] = measure(run, x, args.batch_size, args.iters, args.latency_iters)
            outputs[name] = run(x[: args.batch_size])
    ref = eager(x[: args.batch_size])
    print(f"max |onnxruntime fp32 - eager| {np.abs(outputs['onnxruntime fp32'] - ref).max():.2e}; "
          f"int8 top-1 agreement with eager fp32 "
          f"{(outputs['onnxruntime int8'].argmax(1) == ref.argmax(1)).mean():.3f} "
          f"on {args.batch_size} inputs")  # fmt: skip
    base = results["eager fp32"]["batch_ips"]
    rows = [[name, f"{r['b1_ips']:.2f}", f"{r['batch_ips']:.2f}", f"{r['batch_ips'] / base:.2f}",
             f"{r['p50']:.1f}", f"{r['p95']:.1f}", f"{r['rss']:.0f}"] for name, r in results.items()]  # fmt: skip
    print_table(rows, ["path", "img/s b1", f"img/s b{args.batch_size}", "x eager", "p50 ms",
                       "p95 ms", "peak RSS MiB"])  # fmt: skip
    int8, fp32 = results["onnxruntime int8"]["batch_ips"], results["onnxruntime fp32"]["batch_ips"]
    print(f"int8 / onnxruntime fp32 at batch {args.batch_size}: {int8 / fp32:.2f}; "
          f"int8 / eager at its best: {int8 / results['eager fp32 (channels-last, inference_mode)']['batch_ips']:.2f}")  # fmt: skip
    print(f"speedup={int8 / base:.2f}")


if __name__ == "__main__":
    main()
