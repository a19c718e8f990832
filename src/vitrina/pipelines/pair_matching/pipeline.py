"""Pair matching pipeline: a source adapter, training and evaluation, candidate search.

The first node depends on ``pair_matching.source`` (``parameters_pair_matching.yml``),
read when the pipeline is built, like ``embeddings.models`` (see :mod:`vitrina.config`):
from ``conf/base`` merged with the environment of ``KEDRO_ENV`` or ``kedro run --env``. ``catalogue`` (the
default, and H&M's) reads ``products`` + ``pair_matching_embeddings``; ``pairs`` adds
``pair_matching_pairs``; ``competition`` reads ``pair_matching_text_items``,
``pair_matching_image_items`` and ``pair_matching_pairs``; ``er_magellan`` reads
``pair_matching_source``. Everything after the first node is the same.
"""

from __future__ import annotations

from pathlib import Path

from kedro.pipeline import Node, Pipeline

from vitrina.config import project_parameters

from .candidates import candidate_recall_report, score_candidates, search_candidates
from .nodes import (
    SOURCES,
    evaluate_pair_matchers,
    prepare_catalogue_pairs,
    prepare_competition_pairs,
    prepare_er_magellan_pairs,
    prepare_product_pairs,
    train_pair_matchers,
)
from .reporting import (
    pair_matching_metrics_for_mlflow,
    plot_loss_curves,
    plot_metrics_chart,
    plot_pr_curves,
    register_pair_matcher_model,
    write_pair_matching_summary,
)

PREPARED = ["pair_items", "pair_item_embeddings", "pair_splits", "pair_data_report"]

SOURCE_NODES = {
    "catalogue": (prepare_catalogue_pairs, ["products", "pair_matching_embeddings"]),
    "pairs": (
        prepare_product_pairs,
        ["products", "pair_matching_embeddings", "pair_matching_pairs"],
    ),
    "competition": (
        prepare_competition_pairs,
        ["pair_matching_text_items", "pair_matching_image_items", "pair_matching_pairs"],
    ),
    "er_magellan": (prepare_er_magellan_pairs, ["pair_matching_source"]),
}


def configured_source(conf_source: str | Path | None = None, env: str | None = None) -> str:
    """``pair_matching.source`` from ``conf/base`` + the run's environment (default
    ``catalogue``): ``env``, else ``KEDRO_ENV``, else ``kedro run --env``.

    Raises:
        ValueError: an unknown source.
    """
    source = (project_parameters(conf_source, env).get("pair_matching") or {}).get(
        "source", "catalogue"
    )
    if source not in SOURCES:
        raise ValueError(f"pair_matching.source must be one of {list(SOURCES)}, got {source!r}")
    return source


def source_pipeline(source: str) -> Pipeline:
    """The adapter node of one source layout → :data:`PREPARED`."""
    func, inputs = SOURCE_NODES[source]
    return Pipeline(
        [Node(func, [*inputs, "params:pair_matching"], PREPARED, name=f"prepare_{source}_pairs")]
    )


def training_pipeline() -> Pipeline:
    """Training, test metrics, plots and MLflow metrics from :data:`PREPARED`; with
    ``mlflow.register_models`` the kept matcher goes to the MLflow model registry."""
    return Pipeline(
        [
            Node(
                train_pair_matchers,
                ["pair_items", "pair_item_embeddings", "pair_splits", "params:pair_matching"],
                ["pair_matcher", "pair_test_scores", "pair_training_history"],
                name="train_pair_matchers",
            ),
            Node(
                evaluate_pair_matchers,
                "pair_test_scores",
                "pair_matching_metrics",
                name="evaluate_pair_matchers",
            ),
            Node(
                plot_pr_curves, "pair_test_scores", "pair_matching_pr_curve", name="plot_pr_curves"
            ),
            Node(
                plot_loss_curves,
                "pair_training_history",
                "pair_matching_loss_curve",
                name="plot_loss_curves",
            ),
            Node(
                plot_metrics_chart,
                "pair_matching_metrics",
                "pair_matching_metrics_chart",
                name="plot_metrics_chart",
            ),
            Node(
                register_pair_matcher_model,
                ["pair_matcher", "pair_items", "pair_item_embeddings", "params:mlflow"],
                "pair_matcher_registration",
                name="register_pair_matcher",
            ),
        ]
    )


def candidates_pipeline() -> Pipeline:
    """Candidate search over every item, scoring, match groups, recall and the reports."""
    return Pipeline(
        [
            Node(
                search_candidates,
                ["pair_items", "pair_item_embeddings", "params:pair_matching"],
                "pair_candidates",
                name="search_candidates",
            ),
            Node(
                score_candidates,
                [
                    "pair_candidates",
                    "pair_matcher",
                    "pair_items",
                    "pair_item_embeddings",
                    "params:pair_matching",
                ],
                ["matched_pairs", "match_groups"],
                name="score_candidates",
            ),
            Node(
                candidate_recall_report,
                ["pair_candidates", "pair_items", "pair_splits", "params:pair_matching"],
                "pair_candidate_recall",
                name="candidate_recall",
            ),
            Node(
                pair_matching_metrics_for_mlflow,
                ["pair_matching_metrics", "pair_candidate_recall"],
                "pair_matching_mlflow_metrics",
                name="log_pair_matching_metrics",
            ),
            Node(
                write_pair_matching_summary,
                [
                    "pair_matching_metrics",
                    "pair_candidate_recall",
                    "pair_data_report",
                    "pair_matcher",
                ],
                "pair_matching_summary",
                name="write_pair_matching_summary",
            ),
        ]
    )


def create_pipeline(source: str | None = None, **kwargs) -> Pipeline:
    """The whole pair-matching pipeline for ``source`` (default: :func:`configured_source`)."""
    source = source or configured_source()
    return source_pipeline(source) + training_pipeline() + candidates_pipeline()
