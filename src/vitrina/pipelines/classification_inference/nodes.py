"""Nodes: which images to classify, and the predictions of a trained classifier."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from vitrina.models.classifiers.inference import predict_paths

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _folder_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"classification_inference: folder {folder} does not exist")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise ValueError(
            f"classification_inference: no images in folder {folder} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def select_images(
    products: pd.DataFrame, image_manifest: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """The images to classify: ``path`` and ``product_id`` (empty for files).

    ``params.source`` is one of:

    * ``{paths: [file or folder, ...]}`` — files as given (a missing one still gets a row,
      reported as ``missing_image``), folders searched recursively for images;
    * ``{group: {column: value}}`` — the processed images of the catalogue's products whose
      ``column`` equals ``value`` (e.g. ``{group_id: "0108775"}``, ``{category: Dress}``);
    * ``{catalogue: true}`` — every processed product image.

    Raises:
        ValueError: no or several sources, an empty or missing folder, an unknown column,
            or a group with no products (naming the values there are).
    """
    source = dict(params.get("source") or {})
    if len(source) != 1:
        raise ValueError(
            "classification_inference.source must be exactly one of {paths: [...]}, "
            f"{{group: {{column: value}}}} or {{catalogue: true}}; got {source}"
        )
    if "paths" in source:
        rows = []
        for item in source["paths"] or []:
            path = Path(item)
            files = _folder_images(path) if path.is_dir() else [path]
            rows += [{"path": str(f), "product_id": None} for f in files]
        if not rows:
            raise ValueError("classification_inference.source.paths is empty")
        return pd.DataFrame(rows)
    frame = products.merge(image_manifest[["product_id", "processed_path"]], on="product_id")
    if "group" in source:
        (column, value), *rest = dict(source["group"]).items()
        if rest or column not in frame.columns:
            raise ValueError(
                f"classification_inference.source.group must be one {{column: value}} with a "
                f"column of products {sorted(products.columns)}; got {source['group']}"
            )
        frame = frame[frame[column].astype(str) == str(value)]
        if frame.empty:
            examples = sorted(products[column].astype(str).unique())[:10]
            raise ValueError(
                f"no product has {column} == {value!r}; values there are e.g. {examples}"
            )
    return pd.DataFrame(
        {"path": frame["processed_path"].astype(str), "product_id": frame["product_id"].astype(str)}
    )


def serving_model(classifier: Any, params: dict[str, Any], export: dict[str, Any] | None) -> Any:
    """The model inference runs: the trained PyTorch ``classifier`` or its exported ONNX
    twin (:class:`vitrina.export.OnnxClassifier`), as ``params.backend`` says.

    ``backend: torch`` always uses PyTorch; ``onnxruntime`` needs
    ``<export.output_dir>/<task>/model.onnx`` exported from this very classifier (the
    export records a digest of its ``config.json``); ``null`` picks onnxruntime when such a
    file exists, else torch.

    Raises:
        ValueError: ``backend: onnxruntime`` without an export of this classifier (naming
            the file and the command that writes it), or an unknown backend.
        vitrina.export.InputShapeError: the ONNX file's input does not take the
            classifier's image size (naming both).
    """
    backend = params.get("backend")
    if backend not in (None, "torch", "onnxruntime"):
        raise ValueError(f"classification_inference.backend must be onnxruntime, torch or null, got {backend!r}")  # fmt: skip
    task = str(classifier.config["task"])
    if backend == "torch" or not (export or {}).get("output_dir"):
        if backend == "onnxruntime":
            raise ValueError("backend onnxruntime needs classification.export.output_dir")
        return classifier
    from vitrina.export import REPORT_FILE, OnnxClassifier
    from vitrina.export.graph import config_digest

    folder = Path(export["output_dir"]) / task
    onnx_path, report = folder / "model.onnx", folder / REPORT_FILE
    if not onnx_path.is_file():
        if backend == "onnxruntime":
            raise ValueError(
                f"backend onnxruntime: no exported model {onnx_path}; run `vitrina export --task "
                f"{task}` or `kedro run --pipeline=classification --namespaces={task}` first"
            )
        return classifier
    model = OnnxClassifier(onnx_path, classifier.config, classifier.gallery,
                           image_size=classifier.image_size, num_threads=params.get("num_threads", 1))  # fmt: skip
    recorded = json.loads(report.read_text()).get("config_sha256") if report.is_file() else None
    if recorded != config_digest(classifier.config):
        if backend == "onnxruntime":
            raise ValueError(f"{onnx_path} was exported from another training run of {task}; export it again")  # fmt: skip
        logger.warning("%s is from another training run of %s: using torch", onnx_path, task)
        return classifier
    logger.info("classification_inference %s: onnxruntime on %s", task, onnx_path)
    return model


def classify_images(
    classifier: Any,
    images: pd.DataFrame,
    params: dict[str, Any],
    export: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Predictions of ``classifier`` (or its ONNX export, see :func:`serving_model`) for
    every selected image (see :func:`vitrina.models.classifiers.inference.predict_paths`
    for the columns, and ``backend``, the one that ran); images that fail to load are
    reported in ``status``/``error`` and the rest still scored."""
    model = serving_model(classifier, params, export)
    ids = images["product_id"].tolist() if images["product_id"].notna().any() else None
    out = predict_paths(
        model, images["path"].tolist(), ids,
        top_k=int(params.get("top_k", 5)), batch_size=int(params.get("batch_size", 64)),
        n_workers=int(params.get("n_workers", 2)),
    )  # fmt: skip
    failed = out["status"] != "ok"
    if failed.any():
        logger.warning(
            "classification_inference: %d of %d images could not be read: %s",
            int(failed.sum()),
            len(out),
            out.loc[failed, "status"].value_counts().to_dict(),
        )
    out.insert(0, "task", classifier.config["task"])
    out.insert(1, "backend", getattr(model, "backend", "torch"))
    return out
