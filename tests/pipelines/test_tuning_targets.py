"""Tuning targets of the trainable steps: pair classifier, CLIP fine-tuning, captioning.

Each target must score a parameter set on validation data only (the value the step itself
uses), report one intermediate value per epoch (and stop when Optuna prunes), leave the
step's own checkpoints alone, and score the test split once.
"""

from __future__ import annotations

import logging

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.conftest import REPO
from tests.models.clip.helpers import FAST as CLIP_FAST
from tests.models.clip.helpers import make_checkpoint, make_pairs
from tests.pipelines.test_captioning import TINY_MODEL
from tests.pipelines.test_pair_matching import catalogue as pair_catalogue
from tests.pipelines.test_pair_matching import params as pair_params
from vitrina.models.clip import ClipBundle
from vitrina.pipelines.clip_finetune.nodes import make_finetune_pairs, split_finetune_pairs
from vitrina.pipelines.pair_matching.nodes import (
    evaluate_pair_matchers,
    prepare_catalogue_pairs,
    train_pair_matchers,
)
from vitrina.pipelines.tuning.nodes import plan_tuning, run_tuning
from vitrina.pipelines.tuning.targets import (
    CaptioningTarget,
    ClipFinetuneTarget,
    PairClassifierTarget,
)
from vitrina.pipelines.tuning.wiring import TARGETS, clip_base_input
from vitrina.utils import limit_threads


class Recorder:
    """A ``report`` callback that records ``(step, value)`` and prunes at ``prune_at``."""

    def __init__(self, prune_at: int | None = None) -> None:
        self.calls: list[tuple[int, float]] = []
        self.prune_at = prune_at

    def __call__(self, value: float, step: int) -> None:
        self.calls.append((step, float(value)))
        if step == self.prune_at:
            raise optuna.TrialPruned(f"pruned at {step}")

    @property
    def steps(self) -> list[int]:
        return [s for s, _ in self.calls]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.calls]


def base_params(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "base" / f"parameters_{name}.yml").read_text())[name]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch/OpenMP thread: spinning thread pools make tests slow on busy shared cores."""
    with limit_threads(1):
        yield


# ---------------------------------------------------------------------- pair classifier
@pytest.fixture(scope="module")
def pair_data():
    """The pair_matching step's prepared catalogue pairs and its parameters (one variant)."""
    products, emb = pair_catalogue(90, seed=1)
    p = pair_params()
    p["variants"] = {"text_image_strings": p["variants"]["text_image_strings"]}
    p["classifiers"] = {**p["classifiers"], "hist_gbdt": None}
    with limit_threads(1):
        items, item_emb, splits, _ = prepare_catalogue_pairs(products, emb, p)
    return {"pair_matching": p}, items, item_emb, splits


def test_pair_classifier_objective_is_the_steps_validation_f1(pair_data):
    parameters, items, emb, splits = pair_data
    target = PairClassifierTarget({}, parameters, items, emb, splits)
    defaults = target.defaults()
    assert (
        defaults["model.hidden_size"] == 32 and defaults["train.learning_rate"] == 0.01
    )  # the step's
    assert defaults["model.dropout"] == 0.2  # the estimator default where the step sets none
    report = Recorder()
    value = target.objective(defaults, report)

    # the step with the same settings: its kept MLP has the same validation F1 and test F1
    matcher, test_scores, history = train_pair_matchers(
        items, emb, splits, {**parameters["pair_matching"], "select": "mlp"}
    )
    assert value == pytest.approx(matcher.info["val_f1"], abs=1e-9)
    assert report.steps == history["epoch"].tolist()  # one value per epoch, for the pruner
    assert all(0 <= v <= 1 for v in report.values) and max(report.values) >= value - 1e-9
    metrics = evaluate_pair_matchers(test_scores).set_index("classifier")
    assert target.test_score(defaults) == pytest.approx(metrics.loc["mlp", "f1"], abs=1e-9)


def test_pair_classifier_prunes_caps_epochs_and_rejects_bad_configs(pair_data):
    parameters, items, emb, splits = pair_data
    target = PairClassifierTarget({"max_epochs": 3}, parameters, items, emb, splits)
    report = Recorder()
    target.objective({"model.hidden_size": 16, "train.learning_rate": 0.005}, report)
    assert report.steps == [1, 2, 3]  # the step's 8 epochs capped at 3
    report = Recorder()
    target.objective({"train.max_epochs": 5}, report)
    assert report.steps == [1, 2, 3, 4, 5]  # a searched max_epochs is not capped
    report = Recorder(prune_at=2)
    with pytest.raises(optuna.TrialPruned):
        target.objective({}, report)
    assert report.steps == [1, 2]  # training stopped where the pruner said so

    with pytest.raises(ValueError, match="must be a classifier of type mlp"):
        PairClassifierTarget({"classifier": "logreg"}, parameters, items, emb, splits)
    with pytest.raises(ValueError, match="variant 'image' is not one of"):
        PairClassifierTarget({"variant": "image"}, parameters, items, emb, splits)


def pair_inputs(pair_data):
    """The step's parameters and the target's inputs, as the pipeline loads them from the
    catalogue's pair_items, pair_item_embeddings and pair_splits."""
    parameters, items, emb, splits = pair_data
    return parameters, {"pair_items": items, "embeddings": emb, "pair_splits": splits}


def test_pair_classifier_study_end_to_end_writes_the_steps_shape(pair_data, tmp_path):
    parameters, data = pair_inputs(pair_data)
    space = {
        "model.hidden_size": {"type": "categorical", "choices": [16, 32]},
        "train.learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
    }
    tuning = {
        "target": "pair_classifier",
        "catalogue": "test",
        "n_trials": 4,
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "targets": {"pair_classifier": {"max_epochs": 4, "space": space}},
    }
    plan = plan_tuning(tuning)
    assert plan["params_path"] == ("pair_matching", "classifiers", "mlp")
    study, summary, text, metrics = run_tuning(plan, tuning, parameters, **data)
    row = summary.iloc[0]
    assert row["n_trials"] == 4 and row["n_complete"] == 4
    assert row["metric"] == "validation_f1" and row["test_metric"] == "test_f1"
    assert row["direction"] == "maximize" and row["best_value"] == max(
        t.value for t in study.trials
    )
    assert row["default_value"] == study.trials[0].value  # trial 0: the step's settings
    assert row["improvement"] == pytest.approx(row["best_value"] - row["default_value"])
    assert study.trials[0].params == {
        "model.hidden_size": 32,
        "train.learning_rate": 0.01,
    }  # defaults
    assert 0 <= row["test_value"] <= 1 and "pair_classifier.test_value" in metrics

    doc = yaml.safe_load(text)
    mlp = doc["pair_matching"]["classifiers"]["mlp"]
    best = study.best_trial.params
    assert mlp["model"]["hidden_size"] == best["model.hidden_size"]
    assert mlp["train"]["learning_rate"] == pytest.approx(best["train.learning_rate"])
    assert mlp["train"]["patience"] == 8 and mlp["type"] == "mlp"  # the rest of the block kept
    assert "model.hidden_size" not in mlp  # dotted names were nested, not written flat
    assert doc["pair_matching"]["candidates"] == parameters["pair_matching"]["candidates"]

    # wired by a pipeline built for another target: refused, naming the datasets
    probing = {"products": "products", "image_manifest": "image_manifest"}
    with pytest.raises(ValueError, match=r"reads the catalogue dataset\(s\) embeddings "):
        run_tuning(plan, tuning, parameters, wired=probing, **data)


# ---------------------------------------------------------------------- CLIP fine-tuning
@pytest.fixture(scope="module")
def clip_data(tmp_path_factory):
    """48 colour × part pairs (24 groups), a tiny ruCLIP, the step's parameters."""
    root = tmp_path_factory.mktemp("clip_tuning")
    pairs = make_pairs(root / "images")
    products = pairs[["product_id", "title", "group_id"]].assign(description="")
    manifest = pairs[["product_id", "processed_path"]]
    bundle = ClipBundle.load(make_checkpoint(root / "models" / "tiny", pairs["title"].tolist()))
    step = base_params("clip_finetune")
    step.update(
        base_model="tiny",
        val_size=0.25,
        output_dir=str(root / "step_state"),
        log_model_to_mlflow=False,
    )
    step["train"].update(
        {
            **CLIP_FAST,
            "max_epochs": 3,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "recall_ks": [1, 5],
        }
    )
    parameters = {
        "clip_finetune": step,
        "embeddings": {"models": {"tiny": {"type": "ruclip", "init": "tiny"}}},
    }
    return root, parameters, products, manifest, bundle


def test_clip_target_validates_on_the_training_split_and_tests_on_the_steps_validation(clip_data):
    root, parameters, products, manifest, bundle = clip_data
    config = {"val_size": 0.25, "tmp_dir": str(root / "trials")}
    target = ClipFinetuneTarget(config, parameters, products, manifest, bundle)
    step = parameters["clip_finetune"]
    pairs = split_finetune_pairs(make_finetune_pairs(products, manifest, step), step)
    frames = target.frames
    assert set(frames["test"]["product_id"]) == set(pairs.loc[pairs.split == "val", "product_id"])
    assert set(frames["train"]["product_id"]) | set(frames["val"]["product_id"]) == set(
        pairs.loc[pairs.split == "train", "product_id"]
    )
    assert not set(frames["train"]["split_group"]) & set(frames["val"]["split_group"])
    assert len(frames["val"]) >= 5 and len(frames["test"]) >= 5

    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    defaults = target.defaults()
    assert defaults["learning_rate"] == 3e-3 and defaults["max_epochs"] == 3
    assert "seed" not in defaults and "accelerator" not in defaults
    report = Recorder()
    value = target.objective(defaults, report)
    assert report.steps == [1, 2, 3]  # validation mean recall after every epoch
    assert value == pytest.approx(max(report.values))  # the step keeps its best epoch
    assert all(0 <= v <= 1 for v in report.values)
    # the best trial's model is kept from its trial, not trained again for the test score
    retrain = target._train
    target._train = lambda *args, **kwargs: pytest.fail("the best trial was trained again")
    assert 0 <= target.test_score(defaults) <= 1
    target._train = retrain
    # the base model, the step's state directory and the trials' directories: untouched / gone
    assert all(torch_equal(before[k], v) for k, v in bundle.model.state_dict().items())
    assert not (root / "step_state").exists()
    assert list((root / "trials").iterdir()) == []


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_clip_target_prunes_caps_epochs_and_loads_its_base(clip_data):
    root, parameters, products, manifest, bundle = clip_data
    config = {"max_epochs": 2, "tmp_dir": str(root / "trials2")}
    target = ClipFinetuneTarget(config, parameters, products, manifest, bundle)
    report = Recorder()
    target.objective({"learning_rate": 1e-3}, report)
    assert report.steps == [1, 2]  # the step's 3 epochs capped at 2
    report = Recorder()
    target.objective({"max_epochs": 1, "batch_size": 4}, report)
    assert report.steps == [1]
    report = Recorder(prune_at=1)
    with pytest.raises(optuna.TrialPruned):
        target.objective({"max_epochs": 3}, report)
    assert report.steps == [1] and list((root / "trials2").iterdir()) == []

    with pytest.raises(ValueError, match="the val part has .* fewer than 5"):
        ClipFinetuneTarget({"val_size": 0.05}, parameters, products, manifest, bundle)

    # the base is a catalogue dataset: <name>.checkpoint for a tiny model, else loaded
    assert clip_base_input(parameters) == "tiny.checkpoint"
    hub = {**parameters, "embeddings": {"models": {"tiny": {"type": "ruclip", "checkpoint": "x"}}}}
    assert clip_base_input(hub) == "tuning_base_checkpoint"
    with pytest.raises(KeyError, match="'other' is not in embeddings.models"):
        clip_base_input({**parameters, "clip_finetune": {"base_model": "other"}})


# ---------------------------------------------------------------------- captioning
@pytest.fixture(scope="module")
def caption_data(tmp_path_factory):
    """36 coloured garments described by colour and garment, in groups of two."""
    root = tmp_path_factory.mktemp("caption_tuning")
    colours = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
    rows, manifest = [], []
    for c, (colour, rgb) in enumerate(colours.items()):
        for g, garment in enumerate(["top", "dress", "skirt", "jacket", "shirt", "coat"]):
            for variant in range(2):
                pid = f"P{c}{g}{variant}"
                path = root / f"{pid}.jpg"
                img = Image.new("RGB", (32, 32), (255, 255, 255))
                img.paste(Image.new("RGB", (12 + 4 * g, 20), rgb), (4, 6))
                img.save(path)
                rows.append(
                    {
                        "product_id": pid,
                        "group_id": f"G{c}{g}",
                        "description": f"A {colour} {garment}, style {variant}.",
                    }
                )
                manifest.append({"product_id": pid, "processed_path": str(path)})
    step = base_params("captioning")
    step["models"]["tiny"] = TINY_MODEL
    step["model"] = "tiny"
    step["generation"] = {**step["generation"], "max_new_tokens": 8, "num_beams": 1}
    step["output_dir"] = str(root / "step_training")
    step["training"].update(
        max_epochs=3,
        pretrain_max_epochs=12,
        batch_size=8,
        learning_rate=0.003,
        accelerator="cpu",
        num_threads=None,
        n_decode_workers=1,
    )
    step["evaluation"].update(batch_size=8, device="cpu", num_threads=None, precision="fp32")
    return root, {"captioning": step}, pd.DataFrame(rows), pd.DataFrame(manifest)


def test_captioning_target_minimises_validation_loss_and_reports_test_bleu(caption_data, caplog):
    root, parameters, products, manifest = caption_data
    target = CaptioningTarget({"max_items": 30, "max_epochs": 2}, parameters, products, manifest)
    assert target.direction == "minimize" and target.test_metric == "sacrebleu_greedy"
    assert len(target.splits) == 30  # capped for cheap trials
    defaults = target.defaults()
    assert defaults["learning_rate"] == 0.003 and "num_threads" not in defaults
    assert defaults["max_epochs"] == 3 and defaults["pretrain_max_epochs"] == 12
    report = Recorder()
    searched = {k: defaults[k] for k in ("learning_rate", "weight_decay", "token_dropout")}
    with caplog.at_level(logging.INFO, logger="vitrina.models.captioner.task"):
        value = target.objective(searched, report)
    assert report.steps == [1, 2]  # max_epochs (3) and pretrain_max_epochs (12) capped at 2
    assert "encoder pre-training 2/2" in caplog.text and "pre-training 3/" not in caplog.text
    assert value == pytest.approx(min(report.values))  # the step keeps its lowest loss
    assert all(np.isfinite(report.values)) and value > 0
    report = Recorder()
    target.objective({"max_epochs": 1}, report)
    assert report.steps == [1]  # a searched value is not capped
    report = Recorder(prune_at=1)
    with pytest.raises(optuna.TrialPruned):
        target.objective({"max_epochs": 3}, report)
    assert report.steps == [1]
    bleu = target.test_score({"max_epochs": 1})
    assert 0 <= bleu <= 100
    assert not (root / "step_training").exists()  # the step's training state is not touched


def test_captioning_study_minimises_and_reports_the_gain(caption_data):
    root, parameters, products, manifest = caption_data
    space = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    tuning = {
        "target": "captioning",
        "catalogue": "test",
        "n_trials": 3,
        "storage": None,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "targets": {"captioning": {"max_items": 30, "max_epochs": 1, "space": space}},
    }
    study, summary, text, _ = run_tuning(
        plan_tuning(tuning), tuning, parameters, products=products, image_manifest=manifest
    )
    row = summary.iloc[0]
    values = [t.value for t in study.trials]
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert row["direction"] == "minimize" and row["best_value"] == min(values)
    assert row["default_value"] == values[0]  # trial 0: the step's learning rate
    assert row["improvement"] == pytest.approx(values[0] - min(values))
    assert row["metric"] == "validation_loss" and row["test_metric"] == "test_sacrebleu_greedy"
    assert 0 <= row["test_value"] <= 100
    training = yaml.safe_load(text)["captioning"]["training"]
    assert training["learning_rate"] == pytest.approx(study.best_params["learning_rate"])
    assert training["max_epochs"] == 3  # the step's own value: the trials' cap is not written
    assert "test sacrebleu_greedy" in text.splitlines()[1]


def test_defaults_outside_the_space_are_scored_once_per_study(pair_data, tmp_path, monkeypatch):
    """When the step's settings cannot be trial 0 (here hidden_size 32 is not a choice),
    the gain of tuning is still measured against them: scored on the validation split
    once, kept in the study, reused when the study continues."""
    parameters, data = pair_inputs(pair_data)
    space = {"model.hidden_size": {"type": "categorical", "choices": [16, 64]}}
    config = {"max_epochs": 4, "space": space}
    tuning = {
        "target": "pair_classifier",
        "catalogue": "test",
        "n_trials": 2,
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "targets": {"pair_classifier": config},
    }
    plan = plan_tuning(tuning)
    study, summary, _, _ = run_tuning(plan, tuning, parameters, **data)
    assert not any(t.user_attrs.get("defaults") for t in study.trials)  # no trial 0
    target = TARGETS["pair_classifier"].build(config, parameters, data)
    expected = target.objective(target.defaults(), lambda value, step: None)
    row = summary.iloc[0]
    assert row["default_value"] == pytest.approx(expected)
    assert row["improvement"] == pytest.approx(row["best_value"] - expected)

    def must_not_rescore(self):
        raise AssertionError("the defaults were scored again")

    monkeypatch.setattr(PairClassifierTarget, "default_value", must_not_rescore)
    tuning["n_trials"] = 4  # the study's total: the second session runs 2 more
    study, summary, _, _ = run_tuning(plan_tuning(tuning), tuning, parameters, **data)
    assert len(study.trials) == 4
    assert summary.iloc[0]["default_value"] == pytest.approx(expected)


def test_a_targets_own_pruner_replaces_the_global_one(pair_data, tmp_path):
    parameters, data = pair_inputs(pair_data)
    space = {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}}

    def study_pruner(target_pruner, name):
        config = {"max_epochs": 2, "space": space}
        if target_pruner:
            config["pruner"] = target_pruner
        tuning = {
            "target": "pair_classifier",
            "catalogue": name,
            "n_trials": 1,
            "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
            "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "percentile", "percentile": 10.0},
            "targets": {"pair_classifier": config},
        }
        study, *_ = run_tuning(plan_tuning(tuning), tuning, parameters, **data)
        return study.pruner

    assert isinstance(study_pruner(None, "global"), optuna.pruners.PercentilePruner)
    own = study_pruner({"type": "median", "n_warmup_steps": 10}, "own")
    assert isinstance(own, optuna.pruners.MedianPruner) and own._n_warmup_steps == 10
