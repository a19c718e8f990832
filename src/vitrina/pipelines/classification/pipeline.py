"""Classification pipeline: one namespaced instance of the same template per task."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from kedro.pipeline import Node, Pipeline

from vitrina.config import classification_tasks

from .baseline import linear_probe_baseline
from .export import export_classifier
from .items import prepare_items
from .nodes import evaluate_classifier, train_classifier
from .register import register_classifier
from .reporting import (
    combine_metrics,
    plot_test_results,
    plot_train_batches,
    plot_training_curves,
    summarise,
)
from .review import apply_review


def for_task(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``func`` with ``name`` added to its ``task`` argument (the task's parameter block,
    which does not hold its own key). The signature is kept, so Kedro binds inputs."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def node_func(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.arguments["task"] = {**bound.arguments["task"], "name": name}
        return func(*bound.args, **bound.kwargs)

    return node_func


def task_pipeline(name: str) -> Pipeline:
    """The template for one task, namespaced by the task's name."""
    nodes = [
        Node(apply_review, ["image_manifest", "review_store", "params:review"],
             ["classification_image_manifest", "classification_review_report"], name="apply_review"),
        Node(for_task(prepare_items, name), ["products", "classification_image_manifest", "params:task", "params:classification"],
             ["classification_items", "classification_task_report"], name="prepare_items"),
        Node(for_task(train_classifier, name), ["classification_items", "params:task", "params:classification"],
             ["classifier", "classification_history"], name="train_classifier"),
        Node(evaluate_classifier, ["classifier", "classification_items", "params:classification"],
             ["classification_task_metrics", "classification_test_predictions"], name="evaluate_classifier"),
        Node(for_task(linear_probe_baseline, name), ["classification_items", "params:task", "params:classification"],
             "classification_baseline", name="linear_probe_baseline"),
        Node(for_task(plot_train_batches, name), ["classification_items", "params:task", "params:classification"],
             "classification_train_batches", name="plot_train_batches"),
        Node(for_task(plot_training_curves, name), ["classification_history", "params:task"],
             "classification_training_curves", name="plot_training_curves"),
        Node(for_task(plot_test_results, name), ["classification_test_predictions", "params:task"],
             "classification_test_results", name="plot_test_results"),
        Node(register_classifier, ["classifier", "classification_task_metrics", "params:mlflow"],
             "classifier_registration", name="register_classifier"),
        Node(export_classifier, ["classifier", "classification_items", "params:classification", "params:mlflow"],
             "classifier_export", name="export_classifier"),
    ]  # fmt: skip
    return Pipeline(
        nodes,
        namespace=name,
        inputs={"products", "image_manifest", "review_store"},
        parameters={
            "params:task": f"params:classification.tasks.{name}",
            "params:review": "params:classification.review",
            "params:classification": "params:classification",
            "params:mlflow": "params:mlflow",
        },
    )


def create_pipeline(**kwargs: Any) -> Pipeline:
    """Every task of ``classification.tasks`` (parameters_classification.yml), each on its
    reviewed image manifest (``classification.review``: approved images only, masks
    applied; inside the task's namespace, so ``--namespaces=<task>`` runs it too), then
    one metrics table and summary over all of them."""
    tasks = list(classification_tasks())
    if not tasks:
        return Pipeline([])
    combine = Node(
        combine_metrics,
        [
            f"{t}.{d}"
            for t in tasks
            for d in ("classification_task_metrics", "classification_baseline")
        ],
        ["classification_metrics", "classification_mlflow_metrics"],
        name="combine_classification_metrics",
    )
    summary = Node(
        summarise,
        ["classification_metrics", *[f"{t}.classification_task_report" for t in tasks]],
        "classification_summary",
        name="summarise_classification",
    )
    return Pipeline([task_pipeline(t) for t in tasks] + [combine, summary])
