"""Tuning end to end: `kedro run --pipeline=tuning` twice on the demo continues one study
(its n_trials is the study's total)."""

from __future__ import annotations

import mlflow
import optuna
import pandas as pd
import pytest
import yaml

from tests.conftest import kedro_cli
from tests.test_run import run

pytestmark = pytest.mark.slow

OUT = "data/08_reporting/test/tuning"


def test_tuning_twice_continues_the_study_and_writes_reports(kedro_project):
    run(kedro_project, None, {"clip_finetune": {"train": {"max_epochs": 1}}})  # the main job first
    params = "tuning.target=probing_mlp,tuning.targets.probing_mlp.max_epochs=5,tuning.n_trials="
    for n_trials in (3, 6):  # the README's commands: the second run continues the study to 6
        kedro_cli(
            kedro_project, "run", "--pipeline=tuning", "--env=test", f"--params={params}{n_trials}"
        )

    summary = pd.read_csv(f"{OUT}/probing_mlp_summary.csv").iloc[0]
    assert summary["study"] == "test-probing_mlp" and summary["n_trials"] == 6
    assert summary["n_complete"] + summary["n_pruned"] + summary["n_failed"] == 6
    study = optuna.load_study(
        study_name="test-probing_mlp",
        storage=f"sqlite:///{kedro_project / 'data/06_models/test/optuna.db'}",
    )
    first = study.trials[0]  # trial 0 = the probing step's own settings
    assert first.user_attrs == {"defaults": True}
    assert summary["default_value"] == pytest.approx(first.value)
    assert summary["best_value"] == pytest.approx(study.best_value)
    assert 0 <= summary["test_value"] <= 1

    best = yaml.safe_load(open(f"{OUT}/probing_mlp_best_params.yml").read())
    assert set(best) == {"probing"} and "tasks" in best["probing"]  # drop-in shape
    assert {"alpha", "learning_rate_init", "batch_size", "hidden_layer_sizes"} <= set(
        best["probing"]["probes"]["mlp"]
    )
    for plot in ("history.html", "importances.html", "parallel_coordinate.html", "history.png"):
        assert (kedro_project / OUT / f"probing_mlp_{plot}").stat().st_size > 1000, plot

    mlflow.set_tracking_uri(f"sqlite:///{kedro_project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["vitrina"])
    parents = runs[runs["tags.kedro_pipeline"] == "tuning"]
    assert len(parents) == 2
    for parent_id in parents["run_id"]:
        trials = runs[runs["tags.mlflow.parentRunId"] == parent_id]
        assert len(trials) == 3 and trials["tags.optuna.study"].eq("test-probing_mlp").all()
    assert parents["metrics.tuning.probing_mlp.best_value"].notna().all()


def test_bad_target_fails_before_any_trial(kedro_project):
    # Through the CLI, as a user meets it: the error names the valid targets, and no
    # study storage is created.
    output = kedro_cli(
        kedro_project,
        "run",
        "--pipeline=tuning",
        "--env=test",
        "--params=tuning.target=nope",
        expect_failure=True,
    )
    assert (
        "Unknown tuning target 'nope'; valid targets: captioning, clip_finetune, "
        "pair_classifier, probing_logreg, probing_mlp"
    ) in " ".join(output.split())
    assert not (kedro_project / "data/06_models/test/optuna.db").exists()


def test_a_target_whose_data_were_never_written_names_them_before_any_node(kedro_project):
    """The pipeline is built for the target of ``--params``: on a fresh project the
    pair classifier's catalogue inputs are missing, and the run says which and what writes
    them, through the CLI and through an in-process session alike."""
    from vitrina.run_checks import MissingInputsError

    output = kedro_cli(
        kedro_project,
        "run",
        "--pipeline=tuning",
        "--env=test",
        "--params=tuning.target=pair_classifier",
        expect_failure=True,
    )
    text = " ".join(output.split())
    for name, file in (
        ("pair_items", "items.parquet"),
        ("pair_item_embeddings", "item_embeddings.npz"),
        ("pair_splits", "pairs.parquet"),
    ):
        assert f"- {name} (" in text and f"data/05_model_input/test/pair_matching/{file}" in text
    assert "written by the 'pair_matching' pipeline" in text
    assert "products" not in text.split("do not exist yet:")[1].split("Run `")[0]
    with pytest.raises(MissingInputsError, match=r"tfidf_svd\.embeddings"):
        run(
            kedro_project,
            "tuning",
            {
                "tuning": {
                    "target": "probing_logreg",
                    "targets": {"probing_logreg": {"model": "tfidf_svd"}},
                }
            },
        )
    assert not (kedro_project / "data/06_models/test/optuna.db").exists()
