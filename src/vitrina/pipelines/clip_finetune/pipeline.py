"""clip_finetune pipeline: pairs → split → fine-tuned CLIP → retrieval before/after."""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from vitrina.config import finetune_spec

from .nodes import (
    evaluate_retrieval_split,
    finetune_clip,
    load_base_model,
    make_finetune_pairs,
    register_finetuned_clip,
    report_retrieval,
    split_finetune_pairs,
)


def base_from_catalogue(spec: dict[str, Any]) -> bool:
    """Whether a model spec reads its checkpoint from the catalogue (``<name>.checkpoint``)."""
    return spec.get("source") == "catalogue" or spec.get("init") == "tiny"


def finetune_pipeline(base: str, output: str, base_spec: dict[str, Any]) -> Pipeline:
    """Fine-tune ``base`` (an ``embeddings.models`` name) into ``<output>.checkpoint``.

    Namespace ``clip_finetune``: free inputs ``products``, ``image_manifest``,
    ``params:mlflow`` and the base model (``<base>.checkpoint`` from the catalogue for a
    tiny / catalogue model, else loaded from its hub id or path,
    ``clip_finetune.base_checkpoint``); outputs ``<output>.checkpoint`` plus
    ``clip_finetune.{pairs, history, base_retrieval, finetuned_retrieval,
    retrieval_report, summary, mlflow_metrics, model_registration}`` (the last: the MLflow
    registry version when ``mlflow.register_models`` is true).
    """
    nodes = [
        Node(
            make_finetune_pairs,
            ["products", "image_manifest", "params:clip_finetune"],
            "candidate_pairs",
            name="make_finetune_pairs",
        ),
        Node(
            split_finetune_pairs,
            ["candidate_pairs", "params:clip_finetune"],
            "pairs",
            name="split_finetune_pairs",
        ),
    ]
    from_catalogue = base_from_catalogue(base_spec)
    if not from_catalogue:
        nodes.append(
            Node(
                load_base_model,
                "params:base_model_spec",
                "base_checkpoint",
                name="load_base_model",
            )
        )
    nodes += [
        Node(
            finetune_clip,
            ["base_checkpoint", "pairs", "params:clip_finetune"],
            ["finetuned_checkpoint", "history"],
            name="finetune_clip",
        ),
        Node(
            evaluate_retrieval_split,
            ["base_checkpoint", "pairs", "params:clip_finetune"],
            "base_retrieval",
            name="evaluate_base_retrieval",
        ),
        Node(
            evaluate_retrieval_split,
            ["finetuned_checkpoint", "pairs", "params:clip_finetune"],
            "finetuned_retrieval",
            name="evaluate_finetuned_retrieval",
        ),
        Node(
            register_finetuned_clip,
            ["finetuned_checkpoint", "params:mlflow"],
            "model_registration",
            name="register_finetuned_clip",
        ),
        Node(
            report_retrieval,
            ["base_retrieval", "finetuned_retrieval", "history", "params:clip_finetune"],
            ["retrieval_report", "summary", "mlflow_metrics"],
            name="report_retrieval",
        ),
    ]
    inputs: dict[str, str] = {"products": "products", "image_manifest": "image_manifest"}
    parameters = {"params:clip_finetune": "params:clip_finetune", "params:mlflow": "params:mlflow"}
    if from_catalogue:
        inputs["base_checkpoint"] = f"{base}.checkpoint"
    else:
        parameters["params:base_model_spec"] = f"params:embeddings.models.{base}"
    return Pipeline(
        nodes,
        namespace="clip_finetune",
        inputs=inputs,
        outputs={"finetuned_checkpoint": f"{output}.checkpoint"},
        parameters=parameters,
    )


def create_pipeline(**kwargs) -> Pipeline:
    """The fine-tuning configured in ``parameters_clip_finetune.yml`` (empty if none)."""
    spec = finetune_spec()
    if spec is None:
        return Pipeline([])
    return finetune_pipeline(spec["base_model"], spec["output_model"], spec["base_spec"])
