"""Tuning: search-space validation, storage errors, studies that continue, prune, fail, log."""

from __future__ import annotations

import mlflow
import optuna
import pytest
import yaml

from vitrina.pipelines.tuning.nodes import TARGETS, plan_tuning
from vitrina.tuning import (
    SearchSpaceError,
    TuningStorageError,
    best_params_yaml,
    open_storage,
    parse_space,
    run_study,
)

SPACE = {
    "alpha": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "hidden_layer_sizes": {"type": "categorical", "choices": [[64], [128, 64]]},
    "batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
}


def test_invalid_spaces_fail_before_any_trial_with_every_problem_named():
    with pytest.raises(SearchSpaceError) as err:
        parse_space(
            {
                "alpah": {"type": "float", "low": 0.1, "high": 1},
                "alpha": {"type": "float", "low": 0.1, "high": 0.01},
                "learning_rate_init": {"type": "float", "low": 0, "high": 1, "log": True},
                "activation": {"type": "categorical", "choices": []},
            },
            allowed={"alpha", "learning_rate_init", "activation"},
            target="probing_mlp",
        )
    message = str(err.value)
    assert "unknown parameter 'alpah' (valid: activation, alpha, learning_rate_init)" in message
    assert "'alpha': low 0.1 > high 0.01" in message
    assert "'learning_rate_init': a log scale needs low > 0" in message
    assert "'activation': a categorical needs a non-empty 'choices' list" in message


def test_unknown_target_lists_the_valid_ones():
    tuning = {
        "target": "bert",
        "targets": {"probing_mlp": {"space": SPACE}, "probing_logreg": {"space": {}}},
    }
    with pytest.raises(
        ValueError, match="Unknown tuning target 'bert'; valid targets: probing_logreg, probing_mlp"
    ):
        plan_tuning(tuning)
    plan = plan_tuning({**tuning, "target": "probing_mlp", "catalogue": "demo", "n_trials": 3})
    assert plan["study_name"] == "demo-probing_mlp" and plan["params_path"] == (
        "probing",
        "probes",
        "mlp",
    )
    assert set(TARGETS) >= {"probing_mlp", "probing_logreg"}


def test_unreachable_storage_is_a_clear_error_and_writes_nothing(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(TuningStorageError, match="Cannot open the Optuna storage 'sqlite:///"):
        open_storage(f"sqlite:///{blocker}/optuna.db")
    with pytest.raises(TuningStorageError, match=r"postgresql://user:\*\*\*@127.0.0.1"):
        open_storage("postgresql://user:secret@127.0.0.1:1/optuna")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not_a_dir"]


def objective(params, report):
    if params["batch_size"] == 64:
        raise RuntimeError("out of memory (simulated)")
    score = 1.0 - abs(params["alpha"] - 1e-3) - 0.01 * len(params["hidden_layer_sizes"])
    for step in range(5):
        report(score * (step + 1) / 5, step)
    return score


def test_study_continues_records_failures_and_logs_nested_mlflow_runs(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    specs = parse_space(SPACE)
    storage = open_storage(f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}")
    with mlflow.start_run(run_name="parent") as parent:
        study = run_study(
            objective,
            specs,
            study_name="s",
            storage=storage,
            n_trials=6,
            sampler=optuna.samplers.RandomSampler(seed=0),
            first_trial={"alpha": 1e-3, "hidden_layer_sizes": [64], "batch_size": 16},
        )
        study = run_study(
            objective,
            specs,
            study_name="s",
            storage=open_storage(f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}"),
            n_trials=6,
            sampler=optuna.samplers.RandomSampler(seed=1),
        )
    assert len(study.trials) == 12  # the second run continued the same study
    assert (
        study.trials[0].user_attrs == {"defaults": True} and study.trials[0].params["alpha"] == 1e-3
    )
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.FAIL in states  # batch_size 64 raised; the study went on
    assert optuna.trial.TrialState.COMPLETE in states
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 12
    assert set(children["tags.optuna.state"]) >= {"COMPLETE", "FAIL"}
    assert "metrics.value" in children and "params.alpha" in children


def test_median_pruner_stops_bad_trials(tmp_path):
    specs = parse_space({"x": {"type": "float", "low": 0.0, "high": 1.0}})

    def obj(params, report):
        for step in range(10):
            report(params["x"], step)
        return params["x"]

    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    study = run_study(
        obj,
        specs,
        study_name="p",
        storage=None,
        n_trials=20,
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(seed=0),
        log_to_mlflow=False,
    )
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.last_step < 9 for t in pruned)


def test_best_params_yaml_has_the_steps_shape(tmp_path):
    specs = parse_space(SPACE)
    study = run_study(
        lambda p, r: -p["alpha"] if p["batch_size"] != 64 else 0.0,
        specs,
        study_name="y",
        storage=None,
        n_trials=5,
        log_to_mlflow=False,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    step = {
        "tasks": {"category": {"label": "category"}},
        "probes": {"mlp": {"early_stopping": True, "alpha": 0.5}, "logreg": {"C": "sweep"}},
    }
    doc = yaml.safe_load(
        best_params_yaml(study, ("probing", "probes", "mlp"), step, header="# hi\n")
    )
    mlp = doc["probing"]["probes"]["mlp"]
    assert mlp["early_stopping"] is True and mlp["alpha"] == study.best_trial.params["alpha"]
    assert isinstance(mlp["hidden_layer_sizes"], list)  # decoded back from Optuna's string
    assert doc["probing"]["tasks"] == step["tasks"] and doc["probing"]["probes"]["logreg"] == {
        "C": "sweep"
    }
    assert step["probes"]["mlp"]["alpha"] == 0.5  # the input was not modified
