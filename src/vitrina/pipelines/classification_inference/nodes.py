"""Nodes: which images to classify, and the predictions of a trained classifier."""

from __future__ import annotations

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


def classify_images(classifier: Any, images: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """Predictions of ``classifier`` for every selected image (see
    :func:`vitrina.models.classifiers.inference.predict_paths` for the columns); images
    that fail to load are reported in ``status``/``error`` and the rest still scored."""
    ids = images["product_id"].tolist() if images["product_id"].notna().any() else None
    out = predict_paths(
        classifier, images["path"].tolist(), ids,
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
    return out
