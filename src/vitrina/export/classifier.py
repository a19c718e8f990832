"""Export one trained image classifier: every format, each checked, int8, card, Triton.

:func:`export_classifier` writes an export folder atomically::

    model.onnx            fp32, dynamic batch (dynamo exporter)
    model.int8.onnx       static int8, QDQ, per channel (calibrated on validation images)
    model.pt2             torch.export program
    model.torchscript.pt  traced TorchScript (deprecated; for seed consumers)
    labels.txt            one class per line
    config.json           the classifier's config (classes, thresholds, mean/std)
    gallery.npz           metric learning: the gallery (as in the classifier folder)
    export.json           the report: artefacts, checks, int8 metrics, digests
    model_card.md

and, when ``triton.enabled``, adds the ONNX model to a Triton repository
(:mod:`vitrina.export.triton`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitrina.utils import atomic_path

from . import triton
from .card import write_model_card
from .formats import FILES, WRITERS
from .graph import InferenceGraph, activate, check_exportable, config_digest, normalise
from .quantise import activation_choice, check_calibration_count, compare_int8, quantise_static
from .runtime import load_runner
from .verify import ATOL, check_batch_sizes, compare, inputs_for

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2", "torchscript", "int8")
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "export.json"


def export_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Normalised ``classification.export`` settings (defaults in brackets).

    ``formats`` (all of :data:`FORMATS`), ``int8_tolerance`` (1.0 point),
    ``int8_activations`` (``auto``: :func:`~vitrina.export.quantise.activation_choice`),
    ``export_batch_size`` (2), ``check_batch_sizes`` ([1, 3]), ``atol`` (1e-4),
    ``calibration_images`` (64: the first validation images used), ``num_threads`` (1),
    ``triton`` (see :func:`vitrina.export.triton.triton_settings`, plus ``enabled``
    (true), ``repository``, ``precision``: ``fp32`` | ``int8``).

    Raises:
        ValueError: an unknown format, int8 without onnx, a negative tolerance, bad
            batch sizes, or bad Triton settings.
    """
    s = dict(settings or {})
    formats = list(s.get("formats") or FORMATS)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"export.formats: unknown {unknown}; allowed: {list(FORMATS)}")
    if "int8" in formats and "onnx" not in formats:
        raise ValueError("export.formats: int8 quantises the ONNX model, so it needs onnx too")
    tolerance = float(s.get("int8_tolerance", 1.0))
    if tolerance < 0:
        raise ValueError(f"export.int8_tolerance must be >= 0 points, got {tolerance}")
    activations = str(s.get("int8_activations", "auto"))
    activation_choice(activations)  # raises on an unknown value
    export_batch = int(s.get("export_batch_size", 2))
    if export_batch < 2:
        raise ValueError(f"export.export_batch_size must be >= 2, got {export_batch}")
    tri = dict(s.get("triton") or {})
    enabled = bool(tri.pop("enabled", True)) and "onnx" in formats
    precision = tri.pop("precision", "fp32")
    if precision not in ("fp32", "int8"):
        raise ValueError(f"export.triton.precision must be fp32 or int8, got {precision!r}")
    repository = tri.pop("repository", None)
    return {
        "formats": formats,
        "int8_tolerance": tolerance,
        "int8_activations": activations,
        "export_batch_size": export_batch,
        "check_batch_sizes": check_batch_sizes(s.get("check_batch_sizes", [1, 3]), export_batch),
        "atol": float(s.get("atol", ATOL)),
        "calibration_images": int(s.get("calibration_images", 64)),
        "num_threads": int(s.get("num_threads", 1)),
        "triton": {
            **triton.triton_settings(tri),
            "enabled": enabled,
            "precision": precision,
            "repository": repository,
        },  # fmt: skip
    }


def _inputs_pool(config: dict[str, Any], *arrays: np.ndarray | None) -> np.ndarray:
    """Normalised images to export and check with: the first non-empty array, else
    seeded noise of the configured size."""
    for images in arrays:
        if images is not None and len(images):
            return normalise(images[:16], config["image_mean"], config["image_std"])
    size = int(config["image_size"])
    return np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)


def _int8(
    tmp: Path, graph: InferenceGraph, config: dict[str, Any], s: dict[str, Any],
    calibration: np.ndarray | None, test_images: np.ndarray | None, test_targets: np.ndarray | None,
) -> dict[str, Any]:  # fmt: skip
    calib = normalise(
        calibration[: s["calibration_images"]], config["image_mean"], config["image_std"]
    )
    quantise_static(tmp / FILES["onnx"], tmp / INT8_FILE, calib, activations=s["int8_activations"])
    x = normalise(test_images, config["image_mean"], config["image_std"])
    with torch.inference_mode():
        fp32 = np.concatenate(
            [graph(torch.from_numpy(x[i : i + 64])).numpy() for i in range(0, len(x), 64)]
        )
    int8_run = load_runner("onnx", tmp / INT8_FILE, s["num_threads"])
    int8 = np.concatenate([int8_run(x[i : i + 64]) for i in range(0, len(x), 64)])
    thresholds = config.get("thresholds")
    report = compare_int8(
        config["kind"], activate(config["kind"], fp32), activate(config["kind"], int8),
        np.asarray(test_targets), tolerance=s["int8_tolerance"],
        thresholds=None if thresholds is None else np.asarray(thresholds),
    ).to_dict()  # fmt: skip
    report["activations"], report["reduce_range"] = activation_choice(s["int8_activations"])
    verdict = "accepted" if report["accepted"] else "REJECTED: written but not for serving"
    log = logger.info if report["accepted"] else logger.warning
    log("int8 %s on %d test images: fp32 %.2f -> int8 %.2f points (drop %.2f, tolerance %.2f): %s",
        report["metric"], report["n"], report["fp32"], report["int8"], report["drop"],
        report["tolerance"], verdict)  # fmt: skip
    return report


def export_classifier(
    classifier: Any,
    out_dir: str | Path,
    settings: dict[str, Any] | None = None,
    *,
    calibration: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
    test_targets: np.ndarray | None = None,
    source: str = "",
    git_commit: str | None = None,
) -> dict[str, Any]:
    """Export ``classifier`` into ``out_dir`` (replaced atomically) and check everything.

    Args:
        classifier: an :class:`~vitrina.models.classifiers.artefact.ImageClassifier`.
        out_dir: the export folder (layout in the module docstring).
        settings: ``classification.export`` (:func:`export_settings`).
        calibration: validation images ``uint8 [N, S, S, 3]`` (int8: N >= 8).
        test_images, test_targets: the test split (``uint8 [M, S, S, 3]`` and class
            indices / multi-hot rows / label ids) for the fp32 → int8 check.
        source: the classifier folder, for the card.
        git_commit: the commit exporting (the card's).

    Returns:
        The report written to ``export.json``: ``task, kind, formats, artefacts``
        (format → path), ``checks`` (format → max |diff| per batch size), ``int8``
        (:class:`~vitrina.export.quantise.Int8Report` as a dict, or ``None``),
        ``triton`` (repository record or ``None``), ``config_sha256``, ``out_dir``.

    Raises:
        UnsupportedExportError: the kind has no export path.
        CalibrationError: int8 with fewer than 8 calibration images.
        ExportMismatchError: an artefact disagrees with eager PyTorch over ``atol``.
    """
    config = classifier.config
    check_exportable(config, source or str(config.get("task")))
    s = export_settings(settings)
    out_dir = Path(out_dir)
    if "int8" in s["formats"]:  # before any work
        check_calibration_count(None if calibration is None else len(calibration))
        if test_images is None or test_targets is None or len(test_images) < 2:
            raise ValueError("int8 export needs >= 2 test images and their targets to check accuracy")  # fmt: skip
    graph = InferenceGraph(classifier.task)
    pool = _inputs_pool(config, calibration, test_images)
    example = torch.from_numpy(inputs_for(pool, s["export_batch_size"]))
    with torch.inference_mode():
        output_dim = int(graph(example[:1]).shape[-1])
    report: dict[str, Any] = {
        "task": config.get("task"), "kind": config["kind"], "formats": s["formats"],
        "artefacts": {}, "checks": {}, "int8": None, "triton": None, "output_dim": output_dim,
        "config_sha256": config_digest(config), "source": source, "git_commit": git_commit,
        "pruning_masks_removed": graph.pruning_removed, "settings": s, "out_dir": str(out_dir),
    }  # fmt: skip
    with atomic_path(out_dir, is_dir=True) as tmp:
        for fmt in (f for f in s["formats"] if f != "int8"):
            path = WRITERS[fmt](graph, example, tmp / FILES[fmt])
            runner = load_runner(fmt, path, s["num_threads"])
            report["checks"][fmt] = compare(
                fmt, runner, graph, pool, s["check_batch_sizes"], s["atol"]
            )
            report["artefacts"][fmt] = str(out_dir / FILES[fmt])
        if "int8" in s["formats"]:
            report["int8"] = _int8(tmp, graph, config, s, calibration, test_images, test_targets)
            report["artefacts"]["int8"] = str(out_dir / INT8_FILE)
            report["test_metrics"] = {f"{report['int8']['metric']}_fp32": report["int8"]["fp32"]}
        (tmp / triton.LABELS_FILE).write_text("\n".join(map(str, config["classes"])) + "\n")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        if getattr(classifier, "gallery", None) is not None:
            np.savez(tmp / "gallery.npz", **{k: np.asarray(v, dtype=np.float32 if k == "embeddings" else str)
                                             for k, v in classifier.gallery.items()})  # fmt: skip
        write_model_card(tmp / "model_card.md", config, report)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))
    tri = s["triton"]
    if tri["enabled"] and tri["repository"]:
        report["triton"] = _to_triton(report, out_dir, tri, config)
        (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))
    logger.info("exported %s (%s) to %s: %s", config.get("task"), config["kind"], out_dir,
                ", ".join(report["artefacts"]))  # fmt: skip
    return report


def _to_triton(report: dict[str, Any], out_dir: Path, tri: dict[str, Any], config: dict) -> dict:
    onnx_file = out_dir / FILES["onnx"]
    if tri["precision"] == "int8":
        if report["int8"] and report["int8"]["accepted"]:
            onnx_file = out_dir / INT8_FILE
        else:
            logger.warning("triton.precision int8, but the int8 model is missing or rejected: serving fp32")  # fmt: skip
    name = tri["model_name"] or f"{config.get('task')}-classifier"
    labels = None if config["kind"] == "metric_learning" else [str(c) for c in config["classes"]]
    record = triton.write_repository(tri["repository"], name, onnx_file, tri, labels)
    logger.info("Triton model %s version %d in %s", name, record["version"], tri["repository"])
    return {**record, "name": name, "precision": "int8" if onnx_file.name == INT8_FILE else "fp32"}
