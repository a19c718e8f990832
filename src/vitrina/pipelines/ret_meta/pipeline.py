"""ret_meta pipeline: review store + products + classifier predictions → ret_meta.json, POST."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from vitrina.config import project_parameters

from .nodes import build_ret_meta, collect_predictions, select_groups, summarise_review


def prediction_tasks() -> list[str]:
    """``ret_meta.predictions_from``: the classification tasks whose inference output
    (``<task>.classification_predictions``) goes into ``ret_meta`` (empty: none)."""
    tasks = (project_parameters().get("ret_meta") or {}).get("predictions_from") or []
    return [str(t) for t in tasks]


def create_pipeline(**kwargs: Any) -> Pipeline:
    """Collect the listed tasks' predictions, build ``ret_meta`` and hand the selected
    groups to the optional POST endpoint (credentials ``ret_meta_server``)."""
    tasks = prediction_tasks()
    collect = Node(
        collect_predictions(tasks),
        [f"{t}.classification_predictions" for t in tasks],
        "ret_meta_predictions",
        name="collect_ret_meta_predictions",
    )
    return Pipeline(
        [
            collect,
            Node(
                func=build_ret_meta,
                inputs=[
                    "products",
                    "review_store",
                    "segmentation_metrics",
                    "params:ret_meta",
                    "ret_meta_predictions",
                ],
                outputs="ret_meta",
                name="build_ret_meta",
            ),
            Node(
                func=summarise_review,
                inputs=["review_status_counts", "params:ret_meta"],
                outputs="review_summary",
                name="summarise_review",
            ),
            Node(
                func=select_groups,
                inputs=["ret_meta", "params:ret_meta.post_groups"],
                outputs="ret_meta_post",
                name="post_ret_meta",
            ),
        ]
    )
