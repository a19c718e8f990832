"""Tuning pipeline: ``kedro run --pipeline=tuning --params=tuning.target=<target>,tuning.n_trials=<n>``."""

from kedro.pipeline import Node, Pipeline

from .nodes import plan_tuning, plot_tuning, run_tuning


def create_pipeline(**kwargs) -> Pipeline:
    """Validate the plan, run the study, write the best parameters and Optuna's plots."""
    return Pipeline(
        [
            Node(plan_tuning, "params:tuning", "tuning_plan", name="plan_tuning"),
            Node(
                run_tuning,
                ["tuning_plan", "params:tuning", "parameters", "products", "image_manifest"],
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
    )
