"""Classification inference: one namespaced instance per task (``classification_inference.tasks``)."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from vitrina.config import classification_tasks, project_parameters
from vitrina.pipelines.classification.review import apply_review

from .nodes import classify_images, select_images


def create_pipeline(**kwargs: Any) -> Pipeline:
    """For each task: the reviewed manifest (``classification_inference.review``: masks
    applied, approved images only if asked), the images to score
    (``classification_inference.source``), and their classes by ``<task>.classifier`` in
    ``<task>.classification_predictions``."""
    tasks = (project_parameters().get("classification_inference") or {}).get("tasks") or list(
        classification_tasks()
    )
    pipes = []
    for task in tasks:
        pipes.append(
            Pipeline(
                [
                    Node(
                        apply_review,
                        ["image_manifest", "review_store", "params:review"],
                        ["inference_image_manifest", "classification_inference_review_report"],
                        name="apply_inference_review",
                    ),
                    Node(
                        select_images,
                        ["products", "inference_image_manifest", "params:inference"],
                        "inference_images",
                        name="select_images",
                    ),
                    Node(
                        classify_images,
                        ["classifier", "inference_images", "params:inference", "params:export"],
                        "classification_predictions",
                        name="classify_images",
                    ),
                ],  # fmt: skip
                namespace=str(task),
                inputs={"products", "image_manifest", "review_store"},
                parameters={
                    "params:inference": "params:classification_inference",
                    "params:review": "params:classification_inference.review",
                    "params:export": "params:classification.export",
                },  # fmt: skip
            )
        )
    return Pipeline(pipes)
