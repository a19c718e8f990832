"""Embeddings nodes: products + processed images → sharded ``Embeddings`` per model."""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from typing import Any

import pandas as pd

from vitrina.embeddings import EmbeddingShards
from vitrina.models.embedders import Embedder, build_embedder, embedder_from_bundle
from vitrina.models.embedding_backends import BACKENDS, local_shards, ray_shards
from vitrina.shards import digest, shard_bounds

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


def embedding_shards(
    embedder: Embedder, items: pd.DataFrame, params: dict[str, Any]
) -> EmbeddingShards:
    """The sharded, lazily computed embeddings of ``items`` (``product_id, text,
    processed_path``) with ``embedder``.

    The embedder is fitted first (pretrained models skip it; the ``tfidf_svd`` baseline
    fits on every product, transductively), then fingerprinted. Each shard of
    ``params["shard_size"]`` products is keyed by the digest of its ids, texts and
    processed image files (whose names carry the source image's content hash); the
    dataset computes only the shards its manifest lacks.

    Args:
        params: ``embeddings`` parameters: ``shard_size`` (50,000), ``backend``
            (``local`` | ``ray``), ``ray`` (:func:`vitrina.models.embedding_backends.ray_shards`),
            ``export_npz``.

    Raises:
        ValueError: ``shard_size`` is not a positive integer, or an unknown ``backend``.
    """
    bounds = shard_bounds(len(items), params.get("shard_size", 50_000), "embeddings.shard_size")
    backend = params.get("backend", "local")
    if backend not in BACKENDS:
        raise ValueError(f"embeddings.backend must be one of {BACKENDS}, got {backend!r}")
    items = items.reset_index(drop=True)
    items["text"] = items["text"].fillna("").astype(str)
    start = time.perf_counter()
    embedder.fit(items["text"].tolist(), items["processed_path"].tolist())
    inputs = [
        digest(
            items["product_id"].iloc[a:b].astype(str).tolist(),
            items["text"].iloc[a:b].tolist(),
            items["processed_path"].iloc[a:b].astype(str).tolist(),
        )
        for a, b in bounds
    ]
    if backend == "ray":
        ray_settings = {"device": params.get("device", "auto"), **(params.get("ray") or {})}
        compute = functools.partial(ray_shards, embedder, items, bounds, settings=ray_settings)
    else:
        compute = functools.partial(local_shards, embedder, items, bounds)

    def timed(indices):
        t0 = time.perf_counter()
        done = 0
        for i, emb in compute(indices):
            done += len(emb)
            yield i, emb
        elapsed = time.perf_counter() - t0
        logger.info(
            "embeddings[%s]: %d products in %d shards on %s in %.1f s (%.0f products/s)",
            embedder.name,
            done,
            len(indices),
            backend,
            elapsed,
            done / max(elapsed, 1e-9),
        )

    plan = EmbeddingShards(
        model=embedder.name,
        fingerprint=embedder.fingerprint(),
        ids=items["product_id"].astype(str).to_numpy(),
        bounds=bounds,
        inputs=inputs,
        compute=timed,
        export_npz=bool(params.get("export_npz", True)),
    )
    logger.info(
        "embeddings[%s]: %d products, %d shards, fitted and fingerprinted in %.1f s",
        embedder.name,
        len(items),
        len(bounds),
        time.perf_counter() - start,
    )
    return plan


def shard_products(
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    model: dict[str, Any],
    params: dict[str, Any],
) -> EmbeddingShards:
    """Sharded embeddings of every product with a model named by its spec (hub id, local
    path, baseline): the node; the catalogue's ``ShardedEmbeddingsDataset`` computes them
    (``.collect()`` computes them in memory, for small catalogues and notebooks).

    Args:
        products: canonical products.
        image_manifest: processed images.
        model: ``embeddings.models.<name>`` spec (``type``, ``checkpoint``, options).
        params: ``embeddings`` parameters (``text_field``, ``batch_size``, ``device``,
            ``precision``, ``num_workers``, ``shard_size``, ``backend``, ``ray``).
    """
    items = embedding_inputs(products, image_manifest, params.get("text_field", "title"))
    embedder = build_embedder(model, params, name=model.get("name", model["type"]))
    return embedding_shards(embedder, items, params)


def shard_products_with_checkpoint(
    products: pd.DataFrame,
    image_manifest: pd.DataFrame,
    checkpoint: Any,
    model: dict[str, Any],
    params: dict[str, Any],
) -> EmbeddingShards:
    """Like :func:`shard_products`, with the model taken from the catalogue.

    Args:
        checkpoint: the ``<model>.checkpoint`` dataset: a loaded
            :class:`vitrina.models.clip.ClipBundle` (the tiny offline model, a fine-tuned
            ruCLIP or Hugging Face CLIP).
    """
    items = embedding_inputs(products, image_manifest, params.get("text_field", "title"))
    name = model.get("name", model.get("type", "ruclip"))
    return embedding_shards(embedder_from_bundle(checkpoint, params, name), items, params)


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
