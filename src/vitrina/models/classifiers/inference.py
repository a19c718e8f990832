"""Inference with a trained classifier over image files: batched, the model loaded once.

Corrupt or missing images get a row with their ``status`` and ``error``; the rest are
still scored. What a row holds depends on the kind:

* multiclass: ``label_1..label_k`` and ``prob_1..prob_k`` (top-k by probability);
* multilabel: ``labels`` (tags over their per-class thresholds, ``|``-joined) and
  ``scores`` (their probabilities), ``n_labels``;
* metric learning: ``label`` (the class most of the ``k`` nearest gallery items share,
  ties to the nearest), ``nearest_ids``, ``nearest_labels``, ``similarities`` (cosine,
  ``;``-joined), found with a FAISS inner-product index over the gallery.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from vitrina.training.data import decode_images

from .artefact import ImageClassifier
from .labels import TAG_SEPARATOR

BASE_COLUMNS = ["path", "product_id", "status", "error"]


def _fmt(values: Sequence[float]) -> str:
    return ";".join(f"{v:.4f}" for v in values)


def _rows(
    model: ImageClassifier, outputs: np.ndarray, top_k: int, index: object | None
) -> list[dict]:
    classes = np.asarray(model.classes)
    rows: list[dict] = []
    if model.kind == "multiclass":
        k = min(top_k, len(classes))
        order = np.argsort(-outputs, axis=1)[:, :k]
        for probs, top in zip(outputs, order, strict=True):
            row = {f"label_{i + 1}": classes[c] for i, c in enumerate(top)}
            row.update({f"prob_{i + 1}": float(probs[c]) for i, c in enumerate(top)})
            rows.append(row)
    elif model.kind == "multilabel":
        thresholds = np.asarray(model.config["thresholds"], dtype=np.float32)
        for probs in outputs:
            on = np.flatnonzero(probs >= thresholds)
            on = on[np.argsort(-probs[on])]
            rows.append(
                {
                    "labels": TAG_SEPARATOR.join(classes[on]),
                    "scores": _fmt(probs[on]),
                    "n_labels": len(on),
                }
            )
    else:
        gallery = model.gallery
        k = min(top_k, len(gallery["ids"]))
        sims, idx = index.search(np.ascontiguousarray(outputs, dtype=np.float32), k)
        for s, i in zip(sims, idx, strict=True):
            labels = gallery["labels"][i]
            values, counts = np.unique(labels, return_counts=True)
            best = [v for v in labels if counts[values == v][0] == counts.max()][0]
            rows.append({"label": best, "nearest_ids": ";".join(gallery["ids"][i]),
                         "nearest_labels": ";".join(labels), "similarities": _fmt(s)})  # fmt: skip
    return rows


def predict_paths(
    model: ImageClassifier,
    paths: Sequence[str],
    product_ids: Sequence[str] | None = None,
    *,
    top_k: int = 5,
    batch_size: int = 64,
    chunk_size: int = 512,
    n_workers: int = 2,
) -> pd.DataFrame:
    """Score image files with ``model``.

    Args:
        model: a loaded classifier.
        paths: image files.
        product_ids: optional ids reported beside the paths.
        top_k: labels (multiclass) or neighbours (metric learning) per image.
        batch_size: images per forward pass.
        chunk_size: images decoded at a time (bounds memory on large folders).
        n_workers: decoding threads.

    Returns:
        One row per path, in order: :data:`BASE_COLUMNS` plus the kind's columns (module
        docstring); ``status`` is ``ok``, ``missing_image`` or ``decode_error``.

    Raises:
        ValueError: a metric-learning model without a gallery, or ``paths`` and
            ``product_ids`` of different lengths.
    """
    if product_ids is not None and len(product_ids) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(product_ids)} product ids")
    index = None
    if model.kind == "metric_learning":
        if not model.gallery:
            raise ValueError("this metric-learning model has no gallery to search")
        import faiss

        vectors = np.ascontiguousarray(model.gallery["embeddings"], dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
    out: list[dict] = []
    for start in range(0, len(paths), chunk_size):
        chunk = list(paths[start : start + chunk_size])
        images, errors = decode_images(chunk, model.image_size, n_workers=n_workers)
        failed = {i: (reason, detail) for i, reason, detail in errors}
        ok = [i for i in range(len(chunk)) if i not in failed]
        scored = (
            iter(_rows(model, model.predict(images[ok], batch_size), top_k, index))
            if ok
            else iter(())
        )
        for i, path in enumerate(chunk):
            base = {"path": str(path),
                    "product_id": None if product_ids is None else str(product_ids[start + i])}  # fmt: skip
            if i in failed:
                out.append({**base, "status": failed[i][0], "error": failed[i][1]})
            else:
                out.append({**base, "status": "ok", "error": "", **next(scored)})
    frame = pd.DataFrame(out)
    for column in BASE_COLUMNS:
        if column not in frame:
            frame[column] = pd.Series(dtype=object)
    return frame[BASE_COLUMNS + [c for c in frame.columns if c not in BASE_COLUMNS]]
