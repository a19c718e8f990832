"""Tuning pipeline: ``kedro run --pipeline=tuning --params=tuning.target=<target>,tuning.n_trials=<n>``.

The study node loads the target's data from the catalogue, by dataset name
(:func:`~vitrina.pipelines.tuning.wiring.target_inputs`: ``<model>.embeddings``,
``pair_items``/``pair_item_embeddings``/``pair_splits``, ``<base_model>.checkpoint``,
``products``/``image_manifest``), so an environment that moves a dataset moves the tuning
with it, and a run whose inputs were never written fails before the first node, naming
each dataset and the pipeline that writes it (:func:`vitrina.run_checks.check_inputs_exist`).
Which datasets those are depends on ``tuning.target``, so the pipeline is built from the
run's parameters (:func:`vitrina.config.run_parameters`).
"""

from __future__ import annotations

import functools
from typing import Any

from kedro.pipeline import Node, Pipeline

from vitrina.config import run_parameters

from .nodes import plan_tuning, plot_tuning, run_tuning
from .wiring import target_inputs


def tuning_pipeline(parameters: dict[str, Any]) -> Pipeline:
    """The tuning nodes for the ``tuning.target`` of ``parameters`` (all parameters).

    An unknown target gets no data inputs: its plan node fails first, naming the valid
    targets. A clip_finetune base that is not a catalogue checkpoint is loaded by a
    ``load_base_model`` node from ``embeddings.models.<base_model>`` (hub id or path), as
    the clip_finetune pipeline loads it.
    """
    tuning = parameters.get("tuning") or {}
    wired = target_inputs(tuning, parameters)
    nodes = [Node(plan_tuning, "params:tuning", "tuning_plan", name="plan_tuning")]
    if wired.get("base") == "tuning_base_checkpoint":
        from vitrina.models.clip import load_base_model

        base = parameters["clip_finetune"]["base_model"]
        nodes.append(
            Node(
                load_base_model,
                f"params:embeddings.models.{base}",
                "tuning_base_checkpoint",
                name="load_tuning_base_model",
            )
        )
    study = functools.update_wrapper(functools.partial(run_tuning, wired=wired), run_tuning)
    nodes += [
        Node(
            study,
            {
                "plan": "tuning_plan",
                "tuning": "params:tuning",
                "parameters": "parameters",
                "storage_url": "tuning_storage",
                **wired,
            },
            ["tuning_study", "tuning_summary", "tuning_best_params", "tuning_mlflow_metrics"],
            name="run_tuning",
        ),
        Node(
            plot_tuning,
            "tuning_study",
            [
                "tuning_history",
                "tuning_importances",
                "tuning_parallel_coordinate",
                "tuning_history_png",
            ],
            name="plot_tuning",
        ),
    ]
    return Pipeline(nodes)


def create_pipeline(**kwargs) -> Pipeline:
    """Validate the plan, run the study, write the best parameters and Optuna's plots."""
    return tuning_pipeline(run_parameters())
