"""Embeddings nodes: products + processed images → ``Embeddings`` per model."""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any

import pandas as pd

from vitrina.datasets.embeddings import Embeddings
from vitrina.models.embedders import Embedder, build_embedder, embedder_from_bundle

logger = logging.getLogger(__name__)


def embedding_inputs(
    products: pd.DataFrame, image_manifest: pd.DataFrame, text_field: str = "title"
) -> pd.DataFrame:
    """Products that have a processed image, with the text to embed.

    Args:
        products: canonical products.
        image_manifest: output of image_processing (``product_id``, ``processed_path``).
        text_field: product column embedded as text.

    Returns:
        ``product_id, text, processed_path`` in products order.

    Raises:
        KeyError: ``text_field`` is not a products column.
        ValueError: no product has a processed image (the manifest is from another run).
    """
    if text_field not in products.columns:
        raise KeyError(
            f"embeddings.text_field {text_field!r} is not a products column; columns: {list(products.columns)}"
        )
    merged = products[["product_id", text_field]].merge(
        image_manifest[["product_id", "processed_path"]], on="product_id", how="inner"
    )
    if merged.empty:
        raise ValueError(
            f"None of the {len(products)} products has a processed image in the image manifest "
            f"({len(image_manifest)} rows): rerun `kedro run --pipeline=image_processing`"
        )
    if len(merged) < len(products):
        logger.info(
            "embeddings: %d of %d products have no processed image and are skipped",
            len(products) - len(merged),
            len(products),
        )
    return merged.rename(columns={text_field: "text"})[["product_id", "text", "processed_path"]]


def run_embedder(embedder: Embedder, items: pd.DataFrame) -> Embeddings:
    """Fit (when the embedder needs it) and embed ``items`` (``product_id, text, processed_path``)."""
    texts = items["text"].fillna("").astype(str).tolist()
    paths = items["processed_path"].tolist()
    start = time.perf_counter()
    embedder.fit(texts, paths)
    text = embedder.embed_texts(texts)
    image = embedder.embed_images(paths)
    elapsed = time.perf_counter() - start
    logger.info(
        "embeddings[%s]: %d products in %.1f s (%.0f products/s), text %s, image %s",
        embedder.name,
        len(items),
        elapsed,
        len(items) / max(elapsed, 1e-9),
        list(text.shape),
        list(image.shape),
    )
    return Embeddings(ids=items["product_id"].astype(str).to_numpy(), text=text, image=image)


def embed_products(
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    model: dict[str, Any],
    params: dict[str, Any],
) -> Embeddings:
    """Embed every product with a model named by its spec (hub id, local path, baseline).

    Args:
        products: canonical products.
        image_manifest: processed images.
        model: ``embeddings.models.<name>`` spec (``type``, ``checkpoint``, options).
        params: ``embeddings`` parameters (``text_field``, ``batch_size``, ``device``,
            ``precision``, ``num_workers``).

    Returns:
        :class:`Embeddings` with L2-normalised ``text`` and ``image`` of shape ``[N, D]``.
    """
    items = embedding_inputs(products, image_manifest, params.get("text_field", "title"))
    return run_embedder(build_embedder(model, params, name=model.get("name", model["type"])), items)


def embed_products_with_checkpoint(
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    checkpoint: Any,
    model: dict[str, Any],
    params: dict[str, Any],
) -> Embeddings:
    """Like :func:`embed_products`, with the model taken from the catalogue.

    Args:
        checkpoint: the ``<model>.checkpoint`` dataset: a loaded
            :class:`vitrina.models.clip.ClipBundle` (the tiny offline model, a fine-tuned
            ruCLIP or Hugging Face CLIP).
    """
    items = embedding_inputs(products, image_manifest, params.get("text_field", "title"))
    name = model.get("name", model.get("type", "ruclip"))
    return run_embedder(embedder_from_bundle(checkpoint, params, name), items)


def write_tiny_checkpoint(products: pd.DataFrame, model: dict[str, Any]) -> Any:
    """A tiny random-weight ruCLIP checkpoint with a BPE trained on the catalogue's titles.

    The offline default model: the real ruCLIP loading code runs on it end to end, but
    its embeddings carry no pretrained knowledge (random weights, seeded).

    Args:
        products: canonical products (``title`` trains the BPE).
        model: the model spec; ``model["tiny"]`` holds the architecture sizes and seed
            passed to :func:`vitrina.models.ruclip.write_tiny_ruclip_checkpoint`.

    Returns:
        The loaded :class:`vitrina.models.clip.ClipBundle`, saved by the catalogue.
    """
    from vitrina.models.clip import ClipBundle
    from vitrina.models.ruclip import write_tiny_ruclip_checkpoint

    with tempfile.TemporaryDirectory(prefix="vitrina-tiny-") as tmp:
        path = write_tiny_ruclip_checkpoint(
            tmp, products["title"].astype(str).tolist(), **(model.get("tiny") or {})
        )
        return ClipBundle.load(path, kind="ruclip")
