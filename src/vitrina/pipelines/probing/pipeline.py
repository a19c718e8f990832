"""Probing pipeline: shared splits, a namespaced probe instance per model, one report."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from vitrina.config import model_specs
from vitrina.splits import make_probing_splits

from .nodes import (
    combine_probing_metrics,
    plot_probing_metrics,
    probe_embeddings,
    probing_metrics_for_mlflow,
    write_probing_summary,
)


def model_pipeline(name: str) -> Pipeline:
    """The probing template for one model: ``<name>.embeddings`` → ``<name>.probing_metrics``."""
    return Pipeline(
        [
            Node(
                probe_embeddings,
                ["embeddings", "probing_splits", "params:probing", "params:embeddings.device"],
                "probing_metrics",
                name="probe_embeddings",
            )
        ],
        namespace=name,
        inputs={"probing_splits"},
        parameters={"params:probing", "params:embeddings.device"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Splits once, probes every model of ``embeddings.models``, then compares them."""
    names = list(model_specs())
    return Pipeline(
        [
            Node(
                make_probing_splits,
                ["products", "image_manifest", "params:probing"],
                ["probing_splits", "probing_task_report"],
                name="make_probing_splits",
            ),
            *[model_pipeline(name) for name in names],
            Node(
                combine_probing_metrics,
                {name: f"{name}.probing_metrics" for name in names},
                "probing_metrics",
                name="combine_probing_metrics",
            ),
            Node(
                plot_probing_metrics,
                ["probing_metrics", "params:probing"],
                "probing_chart",
                name="plot_probing_metrics",
            ),
            Node(
                write_probing_summary,
                ["probing_metrics", "probing_task_report", "params:probing"],
                "probing_summary",
                name="write_probing_summary",
            ),
            Node(
                probing_metrics_for_mlflow,
                "probing_metrics",
                "probing_mlflow_metrics",
                name="log_probing_metrics",
            ),
        ]
    )
