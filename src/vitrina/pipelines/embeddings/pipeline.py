"""Embeddings pipeline: one namespaced instance of the same template per model."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from vitrina.config import model_specs

from .nodes import shard_products, shard_products_with_checkpoint, write_tiny_checkpoint


def model_pipeline(name: str, spec: dict[str, Any]) -> Pipeline:
    """The embeddings template for one model, namespaced by the model's name.

    Outputs ``<name>.embeddings`` (and ``<name>.checkpoint`` for ``init: tiny``). A model
    with ``source: catalogue`` or ``init: tiny`` reads ``<name>.checkpoint`` from the
    catalogue; any other is built from its spec (hub id, local path, baseline).
    """
    nodes = []
    from_catalogue = spec.get("source") == "catalogue" or spec.get("init") == "tiny"
    if spec.get("init") == "tiny":
        nodes.append(
            Node(
                write_tiny_checkpoint,
                ["products", "params:model"],
                "checkpoint",
                name="write_tiny_checkpoint",
            )
        )
    if from_catalogue:
        nodes.append(
            Node(
                shard_products_with_checkpoint,
                ["products", "image_manifest", "checkpoint", "params:model", "params:embeddings"],
                "embeddings",
                name="embed_products",
            )
        )
    else:
        nodes.append(
            Node(
                shard_products,
                ["products", "image_manifest", "params:model", "params:embeddings"],
                "embeddings",
                name="embed_products",
            )
        )
    return Pipeline(
        nodes,
        namespace=name,
        inputs={"products", "image_manifest"},
        parameters={
            "params:model": f"params:embeddings.models.{name}",
            "params:embeddings": "params:embeddings",
        },
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Embeddings for every model in ``embeddings.models`` (parameters_embeddings.yml)."""
    return Pipeline([model_pipeline(name, spec) for name, spec in model_specs().items()])
