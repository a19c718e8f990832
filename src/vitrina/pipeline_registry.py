"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: The order in which ``kedro run`` (the ``__default__`` pipeline) chains the pipelines.
MAIN_JOB = ("ingestion", "image_processing", "clip_finetune", "embeddings", "probing")


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Every folder under ``vitrina/pipelines`` is found by ``find_pipelines``; the default
    pipeline is the main job, ingestion → image_processing → clip_finetune → embeddings
    (base and fine-tuned models among the others) → probing.

    ``embeddings`` embeds the fine-tuned model too, so it includes the ``clip_finetune``
    nodes that write it: ``kedro run --pipeline=embeddings`` stays self-contained (a
    finished fine-tuning run is picked up from its checkpoint, not trained again).

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    if "clip_finetune" in pipelines and "embeddings" in pipelines:
        pipelines["embeddings"] = pipelines["clip_finetune"] + pipelines["embeddings"]
    pipelines["__default__"] = sum(
        (pipelines[name] for name in MAIN_JOB if name in pipelines), Pipeline([])
    )
    return pipelines
