"""Tuning: search-space validation, storage errors, studies that continue, prune, fail, log."""

from __future__ import annotations

import mlflow
import optuna
import pytest
import yaml

from tests.conftest import REPO
from vitrina.pipelines.tuning.nodes import plan_tuning
from vitrina.pipelines.tuning.wiring import TARGETS
from vitrina.tuning import (
    SearchSpaceError,
    TuningStorageError,
    best_params_yaml,
    make_sampler,
    merge_dotted,
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
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    with mlflow.start_run(run_name="parent") as parent:
        study = run_study(
            objective,
            specs,
            study_name="s",
            storage=storage,
            n_trials=4,
            sampler=make_sampler({"type": "random", "seed": 0}),
            first_trial={"alpha": 1e-3, "hidden_layer_sizes": [64], "batch_size": 16},
        )
        first = len(study.trials)
        again = run_study(  # the budget is spent: nothing runs
            objective, specs, study_name="s", storage=storage, n_trials=4
        )
        assert len(again.trials) == first
        study = run_study(  # a raised budget continues the same study
            objective,
            specs,
            study_name="s",
            storage=open_storage(f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}"),
            n_trials=8,
            sampler=make_sampler({"type": "random", "seed": 0}),
        )
    # failed trials do not use the budget: 8 finished ones, whatever failed on the way
    assert len(study.get_trials(states=finished)) == 8 and len(study.trials) > first
    assert (
        study.trials[0].user_attrs == {"defaults": True} and study.trials[0].params["alpha"] == 1e-3
    )
    states = {t.state for t in study.trials}
    assert optuna.trial.TrialState.FAIL in states  # batch_size 64 raised; the study went on
    # trial t is sampled with seed + t: the second session drew no point of the first
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(points)) == len(points)
    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(study.trials)
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


def test_every_target_is_configured_in_base_and_its_space_is_valid():
    tuning = yaml.safe_load((REPO / "conf/base/parameters_tuning.yml").read_text())["tuning"]
    assert (
        set(tuning["targets"])
        == set(TARGETS)
        == {
            "probing_mlp",
            "probing_logreg",
            "pair_classifier",
            "clip_finetune",
            "captioning",
        }
    )
    paths = {name: plan_tuning({**tuning, "target": name})["params_path"] for name in TARGETS}
    assert paths["pair_classifier"] == ("pair_matching", "classifiers", "mlp")
    assert paths["clip_finetune"] == ("clip_finetune", "train")
    assert paths["captioning"] == ("captioning", "training")
    with pytest.raises(
        ValueError,
        match="valid targets: captioning, clip_finetune, pair_classifier, probing_logreg, "
        "probing_mlp$",
    ):
        plan_tuning({**tuning, "target": "nope"})
    # the space names parameters of the step: a typo fails before any trial
    bad = {**tuning["targets"]["pair_classifier"], "space": {"train.lrr": SPACE["alpha"]}}
    with pytest.raises(SearchSpaceError, match="unknown parameter 'train.lrr'"):
        plan_tuning({**tuning, "target": "pair_classifier", "targets": {"pair_classifier": bad}})
    other = {**tuning["targets"]["pair_classifier"], "classifier": "mlp2"}
    plan = plan_tuning(
        {**tuning, "target": "pair_classifier", "targets": {"pair_classifier": other}}
    )
    assert plan["params_path"] == ("pair_matching", "classifiers", "mlp2")


def test_defaults_of_the_steps_lie_in_the_base_search_spaces():
    """The first trial of a new study is the step's own settings: only when they fit."""
    from vitrina.models.captioner import settings_dict, training_settings
    from vitrina.models.clip.config import ClipFinetuneConfig

    def load(name):
        return yaml.safe_load((REPO / f"conf/base/parameters_{name}.yml").read_text())[name]

    targets = load("tuning")["targets"]
    steps = {
        "pair_classifier": {
            f"{block}.{k}": v
            for block in ("model", "train")
            for k, v in load("pair_matching")["classifiers"]["mlp"][block].items()
        },
        "clip_finetune": ClipFinetuneConfig.from_params(load("clip_finetune")["train"]).to_dict(),
        "captioning": settings_dict(*training_settings(load("captioning")["training"])),
    }
    for name, values in steps.items():
        for spec in parse_space(targets[name]["space"]):
            assert spec.name in values and spec.contains(values[spec.name]), (name, spec.name)


def test_dotted_names_nest_into_the_steps_blocks():
    assert merge_dotted({"train": {"lr": 1, "patience": 5}}, {"train.lr": 2, "model.n": 3}) == {
        "train": {"lr": 2, "patience": 5},
        "model": {"n": 3},
    }
    specs = parse_space(
        {
            "model.hidden_size": {"type": "categorical", "choices": [16, 32]},
            "train.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
        }
    )
    study = run_study(
        lambda p, r: p["train.lr"] + p["model.hidden_size"],
        specs,
        study_name="d",
        storage=None,
        n_trials=3,
        log_to_mlflow=False,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    step = {"classifiers": {"mlp": {"type": "mlp", "train": {"lr": 9, "patience": 5}}}}
    doc = yaml.safe_load(best_params_yaml(study, ("pair_matching", "classifiers", "mlp"), step))
    mlp = doc["pair_matching"]["classifiers"]["mlp"]
    assert mlp["train"] == {"lr": study.best_params["train.lr"], "patience": 5}
    assert mlp["model"] == {"hidden_size": study.best_params["model.hidden_size"]}
    assert mlp["type"] == "mlp" and step["classifiers"]["mlp"]["train"]["lr"] == 9
    bare = yaml.safe_load(best_params_yaml(study, ("pair_matching", "classifiers", "mlp")))
    assert bare["pair_matching"]["classifiers"]["mlp"]["model"] == mlp["model"]


def test_a_swept_logreg_default_is_scored_on_the_validation_split():
    """The logreg probe's ``C: sweep`` cannot be a trial; its validation score is the
    baseline the gain of tuning is measured against (a different C scores differently)."""
    from sklearn.metrics import f1_score

    from tests.pipelines.test_probing import PARAMS, catalogue, embeddings_for
    from vitrina.pipelines.tuning.probing_target import ProbingTarget

    products = catalogue()
    manifest = products[["product_id"]]
    parameters = {"probing": {**PARAMS, "probes": {"logreg": {"C": "sweep"}, "mlp": {}}}}
    config = {"task": "male_female", "model": "m", "modality": "text+image"}
    logreg = ProbingTarget(
        "logreg", config, parameters, products, manifest, embeddings_for(products)
    )
    assert "C" not in logreg.defaults()  # the sweep is no point of the space: no trial 0
    swept = logreg.default_value()
    assert 0.5 < swept <= 1.0  # gender is planted in the embeddings

    # Scored on the same validation part as the trials: an over-regularised probe, fitted
    # like a trial on the training part, scores lower than the sweep's choice.
    weak = logreg.classifier({"C": 1e-6}).fit(logreg.xt, logreg.yt)
    assert f1_score(logreg.yv, weak.predict(logreg.xv), average="macro") < swept


def test_probing_trials_keep_the_steps_other_settings():
    """A setting of the probing step outside the search space reaches every trial."""
    from tests.pipelines.test_probing import PARAMS, catalogue, embeddings_for
    from vitrina.pipelines.tuning.probing_target import ProbingTarget

    products = catalogue()
    step = {"activation": "tanh", "hidden_layer_sizes": [8], "max_iter": 50}
    parameters = {"probing": {**PARAMS, "probes": {"mlp": step}}}
    config = {"task": "male_female", "model": "m", "modality": "text", "max_epochs": 3}
    mlp = ProbingTarget(
        "mlp", config, parameters, products, products[["product_id"]], embeddings_for(products)
    )
    defaults = mlp.defaults()
    assert defaults["activation"] == "tanh" and defaults["hidden_layer_sizes"] == [8]
    assert defaults["batch_size"] == 64  # build_probe's default, as the step trains it
    trial = mlp.classifier({"alpha": 0.01}).get_params()
    assert (trial["activation"], trial["hidden_layer_sizes"], trial["alpha"]) == (
        "tanh",
        (8,),
        0.01,
    )
    assert trial["early_stopping"] is False  # partial_fit, epoch by epoch
    steps = []
    value = mlp.objective({"alpha": 0.01}, lambda v, step: steps.append(step))
    assert steps == [0, 1, 2] and 0.5 < value <= 1.0  # gender is planted in the text vectors


def base_parameters() -> dict:
    """conf/base's parameters, as the pipeline is built from them."""
    from vitrina.config import project_parameters

    return project_parameters(REPO / "conf", "base")


@pytest.mark.parametrize(
    ("key", "replacement"),
    [
        (("embeddings_dir",), "`<model>.embeddings`"),
        (("targets", "pair_classifier", "data_dir"), "pair_items, pair_item_embeddings"),
        (("targets", "clip_finetune", "models_dir"), "`<base_model>.checkpoint`"),
    ],
)
def test_the_removed_path_keys_fail_naming_the_datasets_that_replaced_them(key, replacement):
    import copy

    from vitrina.validation import ParameterError, validate_parameters

    parameters = base_parameters()
    tuning = copy.deepcopy(parameters["tuning"])
    block = tuning
    for name in key[:-1]:
        block = block[name]
    block[key[-1]] = "data/somewhere"
    with pytest.raises(ValueError, match=f"tuning.{'.'.join(key)} is no longer read") as info:
        plan_tuning(tuning)
    assert replacement in str(info.value)
    with pytest.raises(ParameterError, match="is no longer read"):  # the run's first check
        validate_parameters({**parameters, "tuning": tuning}, ["tuning"])


def wiring(target: str, **tuning: object) -> dict[str, str]:
    """``{input: dataset}`` of the study node of the pipeline built for ``target``."""
    from vitrina.pipelines.tuning.pipeline import tuning_pipeline

    parameters = base_parameters()
    parameters["tuning"] = {**parameters["tuning"], "target": target, **tuning}
    (node,) = [n for n in tuning_pipeline(parameters).nodes if n.name == "run_tuning"]
    wired = node.func.keywords["wired"]  # what run_tuning checks the target against
    assert set(wired.values()) <= set(node.inputs)
    return wired


def test_each_target_reads_its_data_from_the_catalogue_by_name():
    targets = base_parameters()["tuning"]["targets"]
    probing = wiring("probing_mlp")
    assert probing["embeddings"] == "tiny_ruclip.embeddings"
    assert probing["products"] == "products" and probing["image_manifest"] == "image_manifest"
    other = {**targets["probing_logreg"], "model": "tfidf_svd"}
    assert wiring("probing_logreg", targets={"probing_logreg": other})["embeddings"] == (
        "tfidf_svd.embeddings"
    )
    pairs = wiring("pair_classifier")
    assert {pairs[k] for k in ("pair_items", "embeddings", "pair_splits")} == {
        "pair_items",
        "pair_item_embeddings",
        "pair_splits",
    }
    assert wiring("clip_finetune")["base"] == "tiny_ruclip.checkpoint"  # the tiny base
    assert set(wiring("captioning").values()) >= {"products", "image_manifest"}
    # an unknown target loads nothing: its plan node names the valid targets first
    assert wiring("nope") == {}


def test_a_hub_base_model_is_loaded_by_a_node_of_the_tuning_pipeline():
    from vitrina.pipelines.tuning.pipeline import tuning_pipeline

    parameters = base_parameters()
    parameters["tuning"] = {**parameters["tuning"], "target": "clip_finetune"}
    base = parameters["clip_finetune"]["base_model"]
    parameters["embeddings"]["models"][base] = {"type": "hf_clip", "checkpoint": "org/clip"}
    pipe = tuning_pipeline(parameters)
    (load,) = [n for n in pipe.nodes if n.name == "load_tuning_base_model"]
    assert load.inputs == [f"params:embeddings.models.{base}"]
    assert load.outputs == ["tuning_base_checkpoint"]
    assert "tuning_base_checkpoint" not in pipe.inputs()


def test_missing_pair_data_name_the_datasets_and_the_pipeline_that_writes_them(kedro_project):
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    from vitrina import settings
    from vitrina.config import project_parameters
    from vitrina.pipelines.tuning.pipeline import tuning_pipeline
    from vitrina.run_checks import MissingInputsError, check_inputs_exist

    loader = OmegaConfigLoader(
        str(kedro_project / "conf"), env="test", **settings.CONFIG_LOADER_ARGS
    )
    catalog = DataCatalog.from_config(loader["catalog"], credentials=loader["credentials"])
    parameters = project_parameters(kedro_project / "conf", "test")
    parameters["tuning"] = {**parameters["tuning"], "target": "pair_classifier"}
    run_params = {"project_path": str(kedro_project), "env": "test", "pipeline_names": ["tuning"]}
    with pytest.raises(MissingInputsError) as info:
        check_inputs_exist(tuning_pipeline(parameters), catalog, run_params)
    message = str(info.value)
    for name in ("pair_items", "pair_item_embeddings", "pair_splits"):
        assert f"  - {name} (" in message and "written by the 'pair_matching'" in message
