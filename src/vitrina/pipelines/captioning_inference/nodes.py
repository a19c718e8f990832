"""Captioning inference nodes: find the images, caption them in batches."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from vitrina.models.captioner import Captioner, caption_paths
from vitrina.training.threads import auto_threads
from vitrina.utils import limit_threads

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ["path"]
CAPTION_COLUMNS = ["path", "caption", "status", "error"]
DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def list_images(params: dict[str, Any]) -> pd.DataFrame:
    """The image files named by ``captioning_inference.inputs``.

    ``inputs`` is a path, several separated by ``;`` (``kedro run --params`` splits on
    commas, so it cannot pass a list), or a list; each is an image file or a folder (its files with
    one of ``extensions``, sorted; sub-folders too with ``recursive``). A named file is
    kept even when it does not exist or is not an image: captioning reports it in the
    CSV instead of stopping. A folder without images is logged and skipped.

    Args:
        params: ``captioning_inference`` parameters (``inputs``, ``extensions``,
            ``recursive``).

    Returns:
        ``path`` per image, in input order, duplicates removed.

    Raises:
        ValueError: ``inputs`` is empty, or every folder named is empty and no file is
            named (nothing to caption).
    """
    inputs = params.get("inputs")
    if inputs is None or (isinstance(inputs, str) and not inputs.strip()):
        inputs = []
    if isinstance(inputs, Path):
        inputs = [inputs]
    if isinstance(inputs, str):  # `--params` cannot hold a list (commas split it): use ';'
        inputs = [part.strip() for part in inputs.split(";") if part.strip()]
    if not inputs:
        raise ValueError(
            "captioning_inference.inputs is empty: name image files or folders, e.g. "
            '`kedro run --pipeline=captioning_inference --params="captioning_inference.inputs=path/to/images"`'
        )
    extensions = {e.lower() for e in params.get("extensions", DEFAULT_EXTENSIONS)}
    recursive = bool(params.get("recursive", False))
    paths: list[str] = []
    empty: list[str] = []
    for item in inputs:
        path = Path(str(item)).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(
                p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in extensions
            )
            if not found:
                empty.append(str(path))
                logger.warning(
                    "captioning_inference: folder %s holds no image (%s)%s",
                    path,
                    ", ".join(sorted(extensions)),
                    "" if recursive else "; set captioning_inference.recursive for sub-folders",
                )
            paths.extend(str(p) for p in found)
        else:
            paths.append(str(path))
    if not paths:
        raise ValueError(
            f"No image to caption: the folders {empty} hold no file with an extension in "
            f"{sorted(extensions)}"
        )
    unique = list(dict.fromkeys(paths))
    logger.info("captioning_inference: %d images from %d inputs", len(unique), len(inputs))
    return pd.DataFrame({"path": unique}, columns=IMAGE_COLUMNS)


def caption_images(
    captioner: Captioner, images: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Caption the images in batches with the model loaded once.

    A missing or undecodable image gets ``status = error`` and the reason in ``error``;
    the others are captioned as usual.

    Args:
        captioner: the trained captioner.
        images: output of :func:`list_images`.
        params: ``captioning_inference`` parameters (``decoding``, ``batch_size``,
            ``device``, ``precision``, ``num_threads``, ``pad_to_square``, ``num_workers``,
            ``generation``).

    Returns:
        ``path, caption, status, error`` in input order.
    """
    with limit_threads(auto_threads(params.get("num_threads"))):  # restored afterwards
        captioner.to(params.get("device", "auto"), params.get("precision", "auto"))
        start = time.perf_counter()
        rows = caption_paths(
            captioner,
            images["path"].tolist(),
            batch_size=int(params.get("batch_size", 16)),
            decoding=params.get("decoding", "greedy"),
            pad_square=bool(params.get("pad_to_square", True)),
            num_workers=int(params.get("num_workers", 1)),
            **(params.get("generation") or {}),
        )
    out = pd.DataFrame(rows, columns=CAPTION_COLUMNS)
    seconds = time.perf_counter() - start
    n_bad = int((out["status"] != "ok").sum())
    logger.info(
        "captioning_inference: %d images captioned in %.1f s (%.3f s/image, %s, %s)%s",
        len(out) - n_bad,
        seconds,
        seconds / max(len(out), 1),
        params.get("decoding", "greedy"),
        captioner.precision,
        f"; {n_bad} could not be read (see the error column)" if n_bad else "",
    )
    return out
