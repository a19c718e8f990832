"""Classification inference: one namespaced instance per task (``classification_inference.tasks``)."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from vitrina.config import classification_tasks, project_parameters

from .nodes import classify_images, select_images


def create_pipeline(**kwargs: Any) -> Pipeline:
    """For each task: select images (``classification_inference.source``), then classify
    them with ``<task>.classifier`` into ``<task>.classification_predictions``."""
    tasks = (project_parameters().get("classification_inference") or {}).get("tasks") or list(
        classification_tasks()
    )
    pipes = []
    for task in tasks:
        pipes.append(
            Pipeline(
                [
                    Node(
                        select_images,
                        ["products", "image_manifest", "params:inference"],
                        "inference_images",
                        name="select_images",
                    ),
                    Node(
                        classify_images,
                        ["classifier", "inference_images", "params:inference"],
                        "classification_predictions",
                        name="classify_images",
                    ),
                ],  # fmt: skip
                namespace=str(task),
                inputs={"products", "image_manifest"},
                parameters={"params:inference": "params:classification_inference"},
            )
        )
    return Pipeline(pipes)
