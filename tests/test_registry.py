"""MLflow model registry: the fine-tuned CLIP and the pair classifier, in a tmp SQLite store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io
from mlflow import MlflowClient

from tests.models.clip.helpers import make_checkpoint, make_pairs
from tests.models.pair_matching.toys import SMALL_MLP, toy, toy_pairs
from tests.test_no_pickle import Payload
from vitrina.models.clip import ClipBundle
from vitrina.models.pair_matching import fit_pair_matchers
from vitrina.pipelines.clip_finetune.nodes import register_finetuned_clip
from vitrina.pipelines.pair_matching.reporting import register_pair_matcher_model
from vitrina.registry import pip_requirements, registered_model_name
from vitrina.utils import limit_threads

SETTINGS = {"register_models": True, "model_name_prefix": "vitrina-test"}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite tracking store (and registry) with artefacts under ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment(
        "vitrina-test", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    # runs started without an experiment (the registry's own run) land here
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    yield experiment
    mlflow.set_tracking_uri(before)


def test_names_and_requirements():
    assert registered_model_name({"model_name_prefix": "vitrina-hm"}, "clip") == "vitrina-hm-clip"
    assert registered_model_name({}, "pair_matcher") == "vitrina-pair-classifier"
    with pytest.raises(ValueError, match="kind must be one of"):
        registered_model_name({}, "bert")
    requirements = pip_requirements()
    assert any(r.startswith("torch==") for r in requirements)
    assert not [r for r in requirements if "+" in r]  # no local version labels (+cpu)


def test_fine_tuned_clip_is_registered_and_loads_by_name(tmp_path, store):
    pairs = make_pairs(tmp_path / "images", copies=1)
    bundle = ClipBundle.load(make_checkpoint(tmp_path / "tiny", pairs["title"].tolist()))

    off = register_finetuned_clip(bundle, {**SETTINGS, "register_models": False})
    assert off == {
        "registered": False,
        "name": "vitrina-test-clip",
        "version": None,
        "model_uri": None,
        "run_id": None,
    }
    assert MlflowClient().search_registered_models() == []

    with mlflow.start_run(experiment_id=store) as run:
        first = register_finetuned_clip(bundle, SETTINGS)
        second = register_finetuned_clip(bundle, SETTINGS)
    assert first["registered"] and first["name"] == "vitrina-test-clip"
    assert (first["version"], second["version"]) == (1, 2)  # one version per registration
    assert first["run_id"] == run.info.run_id  # logged in the active (kedro-mlflow) run
    versions = MlflowClient().search_model_versions("name='vitrina-test-clip'")
    assert sorted(int(v.version) for v in versions) == [1, 2]

    model = mlflow.pyfunc.load_model(second["model_uri"])
    sample = pairs.iloc[:5]
    out = model.predict(
        pd.DataFrame({"text": sample["title"], "image_path": sample["processed_path"]})
    )
    assert list(out.columns) == ["text_embedding", "image_embedding"]
    direct = bundle.embedder({"device": "cpu", "progress": False})
    np.testing.assert_allclose(
        np.stack(out["text_embedding"]), direct.embed_texts(sample["title"].tolist()), atol=1e-5
    )
    np.testing.assert_allclose(
        np.stack(out["image_embedding"]),
        direct.embed_images(sample["processed_path"].tolist()),
        atol=1e-5,
    )
    texts_only = model.predict(pd.DataFrame({"text": sample["title"]}))
    assert list(texts_only.columns) == ["text_embedding"]


def test_pair_classifier_is_registered_with_its_items_and_scores_pairs(store):
    items, emb = toy()
    pairs = toy_pairs(items)
    train, val = pairs.iloc[::2], pairs.iloc[1::2]
    with limit_threads(1):
        matchers, _ = fit_pair_matchers(
            train,
            val,
            items.set_index("item_id"),
            emb,
            {"modalities": ["text", "image"], "string_fields": ["title"]},
            {"mlp": SMALL_MLP},
            seed=0,
        )
    matcher = matchers["mlp"]
    matcher.info["variant"] = "text_image_strings"

    assert not register_pair_matcher_model(matcher, items, emb, {})["registered"]  # default off
    record = register_pair_matcher_model(matcher, items, emb, SETTINGS)  # no active run
    assert record["name"] == "vitrina-test-pair-classifier" and record["version"] == 1
    run = mlflow.get_run(record["run_id"])
    assert run.info.run_name == "register-vitrina-test-pair-classifier"
    version = MlflowClient().get_model_version("vitrina-test-pair-classifier", "1")
    assert version.tags["classifier"] == "mlp" and version.tags["variant"] == "text_image_strings"
    assert float(version.tags["threshold"]) == pytest.approx(matcher.threshold)

    model = mlflow.pyfunc.load_model("models:/vitrina-test-pair-classifier/1")
    out = model.predict(val[["left_id", "right_id"]].reset_index(drop=True))
    expected = matcher.predict_proba(
        val["left_id"], val["right_id"], items.set_index("item_id"), emb
    )
    np.testing.assert_allclose(out["score"], expected, atol=1e-6)
    assert (out["match"] == (expected >= matcher.threshold)).all()
    with pytest.raises(Exception, match="right_id"):
        model.predict(pd.DataFrame({"left_id": ["P0000"]}))

    # no pickle in the registered model: a tampered skops file is refused on load
    store_root = Path.cwd() / "artifacts"  # (the logged code has a features.py of its own)
    stored = [p for p in store_root.rglob("features.*") if p.parent.name == "matcher"]
    assert [p.suffix for p in stored] == [".skops"], stored
    assert not [p for p in store_root.rglob("*") if p.suffix in (".pkl", ".joblib", ".pickle")]
    skops.io.dump({"x": Payload(Path.cwd() / "marker")}, stored[0])
    with pytest.raises(Exception, match=r"Untrusted types found.*Payload"):
        mlflow.pyfunc.load_model("models:/vitrina-test-pair-classifier/1")
    assert not (Path.cwd() / "marker").exists()
