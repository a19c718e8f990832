"""Captioning pipeline: splits → tokenizer + model → training → test captions → SacreBLEU."""

from __future__ import annotations

from pathlib import Path

from kedro.pipeline import Node, Pipeline

from vitrina.config import project_parameters

from .nodes import (
    build_initial_captioner,
    caption_test_split,
    captioning_metrics_for_mlflow,
    make_captioning_splits,
    nearest_neighbour_captions,
    render_captioning_examples,
    score_captions,
    train_captioner,
)

DEFAULT_BASELINE = "tfidf_svd"


def baseline_embeddings_model(conf_source: str | Path | None = None, env: str | None = None) -> str:
    """``captioning.baseline.embeddings``: whose image embeddings the nearest-neighbour
    baseline uses (read before the session, like :func:`vitrina.config.model_specs`;
    default ``tfidf_svd``)."""
    captioning = project_parameters(conf_source, env).get("captioning") or {}
    return str((captioning.get("baseline") or {}).get("embeddings") or DEFAULT_BASELINE)


def baseline_pipeline(model: str) -> Pipeline:
    """The nearest-neighbour baseline on ``<model>.embeddings`` (namespaced by the model)."""
    return Pipeline(
        [
            Node(
                nearest_neighbour_captions,
                ["embeddings", "captioning_splits"],
                "captioning_baseline_captions",
                name="nearest_neighbour_captions",
            )
        ],
        namespace=model,
        inputs={"captioning_splits"},
        outputs={"captioning_baseline_captions"},
    )


def create_pipeline(baseline: str | None = None, **kwargs) -> Pipeline:
    """The captioning pipeline.

    Args:
        baseline: embeddings model of the nearest-neighbour baseline (its
            ``<baseline>.embeddings`` dataset is an input); default
            :func:`baseline_embeddings_model`.
    """
    baseline = baseline or baseline_embeddings_model()
    return Pipeline(
        [
            Node(
                make_captioning_splits,
                ["products", "image_manifest", "params:captioning"],
                ["captioning_splits", "captioning_data_report"],
                name="make_captioning_splits",
            ),
            Node(
                build_initial_captioner,
                ["captioning_splits", "params:captioning"],
                "captioner_untrained",
                name="build_captioner",
            ),
            Node(
                train_captioner,
                ["captioner_untrained", "captioning_splits", "params:captioning"],
                ["captioner", "captioning_training_history", "captioning_training_metrics"],
                name="train_captioner",
            ),
            Node(
                caption_test_split,
                ["captioner", "captioning_splits", "params:captioning"],
                "captioning_test_captions",
                name="caption_test_split",
            ),
            baseline_pipeline(baseline),
            Node(
                score_captions,
                ["captioning_test_captions", "captioning_baseline_captions"],
                "captioning_metrics",
                name="score_captions",
            ),
            Node(
                captioning_metrics_for_mlflow,
                "captioning_metrics",
                "captioning_mlflow_metrics",
                name="log_captioning_metrics",
            ),
            Node(
                render_captioning_examples,
                [
                    "captioning_test_captions",
                    "captioning_baseline_captions",
                    "captioning_metrics",
                    "captioning_splits",
                    "params:captioning",
                ],
                "captioning_examples",
                name="render_captioning_examples",
            ),
        ]
    )
