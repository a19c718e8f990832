"""Where the embeddings step computes its shards: ``local`` (this process) or ``ray``.

``ray`` runs the embedder on an actor pool of Ray Data (``Dataset.map_batches`` with a
callable class): the embedder is put in Ray's object store once and each actor takes it
once, at start (one model load per actor), then embeds blocks of products in turn. Blocks
come back in input order (``preserve_order``) and are cut into the shards the caller asked
for, so ids, order and values equal the local backend's. Ray is the optional extra
``scale`` (``pip install -e ".[scale]"``); it is imported only when ``backend: ray``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vitrina.embeddings import Embeddings
from vitrina.models.embedders import Embedder

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


def embed_rows(embedder: Embedder, items: pd.DataFrame) -> Embeddings:
    """Embed ``items`` (``product_id, text, processed_path``) with a fitted ``embedder``."""
    return Embeddings(
        ids=items["product_id"].astype(str).to_numpy(),
        text=embedder.embed_texts(items["text"].fillna("").astype(str).tolist()),
        image=embedder.embed_images(items["processed_path"].tolist()),
    )


def local_shards(
    embedder: Embedder,
    items: pd.DataFrame,
    bounds: Sequence[tuple[int, int]],
    indices: Sequence[int],
) -> Iterator[tuple[int, Embeddings]]:
    """``(index, Embeddings)`` of each shard in ``indices``, one after the other, here."""
    for i in indices:
        start, stop = bounds[i]
        yield i, embed_rows(embedder, items.iloc[start:stop])


def import_ray() -> Any:
    """``ray`` with Ray Data, or an ImportError naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "embeddings.backend: ray needs Ray Data, the optional extra `scale`: "
            'pip install -e ".[scale]" (or pip install "ray[data]")'
        ) from exc
    return ray


@contextlib.contextmanager
def ray_session(settings: dict[str, Any]) -> Iterator[Any]:
    """Connect to Ray: an already initialised session as it is, else ``ray.init`` with
    ``settings`` (``embeddings.ray``): ``address`` (an existing cluster, e.g.
    ``ray://head:10001`` or ``auto``; ``null`` starts a local one of ``num_cpus`` CPUs
    bound to 127.0.0.1, shut down on exit), ``runtime_env`` (e.g. ``py_modules`` for a
    cluster without Vitrina installed). Usage statistics stay off."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = settings.get("address")
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if settings.get("runtime_env"):
        kwargs["runtime_env"] = dict(settings["runtime_env"])
    if address:
        ray.init(address=address, **kwargs)
    else:  # a local cluster bound to the loopback address (Ray's own switch for it)
        key = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
        old = os.environ.get(key)
        os.environ[key] = "0"
        try:
            ray.init(num_cpus=settings.get("num_cpus"), include_dashboard=False, **kwargs)
        finally:
            if old is None:
                del os.environ[key]
            else:
                os.environ[key] = old
    try:
        yield ray
    finally:
        ray.shutdown()


class _EmbedActor:
    """Ray Data actor: one embedder per actor, taken from the object store at start."""

    def __init__(self, embedder: Any, device: str, threads: int) -> None:
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        if isinstance(embedder, ray.ObjectRef):  # Ray Data passes the reference as it is
            embedder = ray.get(embedder)
        self.embedder = embedder
        if hasattr(embedder, "to"):
            embedder.to(device)

    def __call__(self, batch: pd.DataFrame) -> dict[str, np.ndarray]:
        emb = embed_rows(self.embedder, batch)
        return {"product_id": emb.ids, "text": emb.text, "image": emb.image}


def ray_shards(
    embedder: Embedder,
    items: pd.DataFrame,
    bounds: Sequence[tuple[int, int]],
    indices: Sequence[int],
    settings: dict[str, Any],
) -> Iterator[tuple[int, Embeddings]]:
    """Like :func:`local_shards`, on a Ray Data actor pool.

    Args:
        settings: ``embeddings.ray``: ``num_actors`` (pool size, 2), ``num_cpus_per_actor``
            (1; also the actor's torch threads), ``num_gpus_per_actor`` (0),
            ``block_rows`` (products per Ray block, 1024), ``batch_size`` (products per
            actor call, 256), ``device`` (the actors' device, ``auto``), and the
            connection keys of :func:`ray_session`.
    """
    indices = list(indices)
    if not indices:
        return
    with ray_session(settings) as ray:
        block = max(1, int(settings.get("block_rows", 1024)))
        frames = [
            items.iloc[a : min(a + block, bounds[i][1])].reset_index(drop=True)
            for i in indices
            for a in range(bounds[i][0], bounds[i][1], block)
        ]
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        num_gpus = float(settings.get("num_gpus_per_actor", 0) or 0)
        cpus = float(settings.get("num_cpus_per_actor", 1))
        ds = ray.data.from_pandas(frames).map_batches(
            _EmbedActor,
            fn_constructor_args=(
                ray.put(embedder),
                settings.get("device", "auto"),
                int(cpus),
            ),
            batch_size=int(settings.get("batch_size", 256)),
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=int(settings.get("num_actors", 2))),
            num_cpus=cpus,
            **({"num_gpus": num_gpus} if num_gpus else {}),
        )
        logger.info(
            "embeddings on Ray: %d shards, %d blocks, %s actors",
            len(indices),
            len(frames),
            settings.get("num_actors", 2),
        )
        yield from _cut(ds.iter_batches(batch_size=None, batch_format="numpy"), bounds, indices)


def _cut(
    batches: Iterator[dict[str, np.ndarray]],
    bounds: Sequence[tuple[int, int]],
    indices: list[int],
) -> Iterator[tuple[int, Embeddings]]:
    """Regroup ordered output batches into the shards ``indices`` (one shard buffered)."""
    buffer: list[dict[str, np.ndarray]] = []
    held = 0
    queue = list(indices)
    for batch in batches:
        buffer.append(batch)
        held += len(batch["product_id"])
        while queue and held >= bounds[queue[0]][1] - bounds[queue[0]][0]:
            need = bounds[queue[0]][1] - bounds[queue[0]][0]
            merged = {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
            yield (
                queue.pop(0),
                Embeddings(
                    ids=merged["product_id"][:need],
                    text=merged["text"][:need],
                    image=merged["image"][:need],
                ),
            )
            rest = {k: v[need:] for k, v in merged.items()}
            buffer, held = ([rest], held - need) if held > need else ([], 0)
    if queue:
        raise RuntimeError(f"Ray returned too few products: shards {queue} incomplete")
