"""Node: export the trained classifier (ONNX, ``.pt2``, TorchScript, int8, Triton) and
log it to MLflow (:mod:`vitrina.export`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vitrina.hooks import git_commit

from .nodes import decode_items, targets_for

logger = logging.getLogger(__name__)


def split_images(
    classifier: Any, items: pd.DataFrame, part: str, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, S, S, 3], targets)`` of one split's items whose images decode,
    targets as :func:`~vitrina.pipelines.classification.nodes.targets_for` gives them."""
    subset = items[items["split"] == part].reset_index(drop=True)
    images, ok = decode_items(subset, classifier.image_size, params)
    subset = subset[ok].reset_index(drop=True)
    return images[ok], targets_for(classifier.kind, classifier.classes, subset["target"])


def export_classifier(
    classifier: Any,
    items: pd.DataFrame,
    params: dict[str, Any],
    mlflow_params: dict[str, Any] | None,
) -> dict[str, Any]:
    """Export one task's classifier into ``<classification.export.output_dir>/<task>/``.

    Int8 is calibrated on the validation images and checked on the test images; the
    Triton repository gets a new version; the folder is logged to the active MLflow run
    and the ONNX model registered when ``mlflow.register_models``.

    Returns:
        The export report (``export.json``) with an ``mlflow`` record, or
        ``{"exported": false, ...}`` when ``classification.export.enabled`` is false.

    Raises:
        vitrina.export.CalibrationError: int8 with fewer than 8 validation images.
        vitrina.export.ExportMismatchError: an artefact disagrees with eager PyTorch.
    """
    from vitrina.export import export_classifier as export
    from vitrina.export.tracking import log_export

    settings = dict(params.get("export") or {})
    task = str(classifier.config["task"])
    if not settings.get("enabled", False):
        logger.info("classification.export.enabled is false: %s not exported", task)
        return {"exported": False, "task": task}
    val_images, _ = split_images(classifier, items, "validation", params)
    test_images, test_targets = split_images(classifier, items, "test", params)
    needs_data = "int8" in (settings.get("formats") or ["int8"])
    report = export(
        classifier, Path(settings["output_dir"]) / task, settings,
        calibration=val_images if needs_data else None,
        test_images=test_images if needs_data else None,
        test_targets=test_targets if needs_data else None,
        source=f"the {task} task's trained classifier", git_commit=git_commit(Path.cwd()),
    )  # fmt: skip
    report["mlflow"] = log_export(report, mlflow_params)
    return {"exported": True, **report}
