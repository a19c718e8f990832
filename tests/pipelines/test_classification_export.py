"""The classification pipeline's export node and inference from the exported model."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import pytest

from tests.export.conftest import model_config_pb2
from tests.pipelines.test_classification import base_params, catalogue, run  # noqa: F401
from vitrina.pipelines.classification.pipeline import task_pipeline
from vitrina.pipelines.classification_inference.nodes import classify_images, serving_model

pytestmark = pytest.mark.slow  # trains a task through the pipeline (about a minute)


@pytest.fixture(scope="module")
def trained(catalogue):  # noqa: F811
    root, products, manifest = catalogue
    p = base_params("classification")
    p.update(output_dir=str(root / "runs_export"), image_size=32)
    p["training"].update(max_epochs=3, patience=None, num_threads=1)
    p["export"].update(output_dir=str(root / "export"))
    p["export"]["triton"]["repository"] = str(root / "triton")
    out = run(task_pipeline("category"), products=products, image_manifest=manifest, review_store=None,
              **{"params:classification.tasks.category": p["tasks"]["category"],
                 "params:classification": p, "params:classification.review": p["review"], "params:mlflow": {"register_models": False}})  # fmt: skip
    return p, out


def test_the_pipeline_exports_every_format_into_the_triton_repository(trained):
    from google.protobuf import text_format

    params, out = trained
    report = out["category.classifier_export"]
    assert report["exported"] and set(report["artefacts"]) == {"onnx", "pt2", "torchscript", "int8"}
    for fmt, checks in report["checks"].items():
        assert (
            set(checks) == {"max_abs_diff_b1", "max_abs_diff_b3"} and max(checks.values()) <= 1e-4
        ), fmt
    items = out["category.classification_items"]
    assert report["int8"]["n"] == int((items["split"] == "test").sum())
    assert report["int8"]["accepted"] == (report["int8"]["drop"] <= 1.0)
    model_dir = f"{params['export']['triton']['repository']}/category-classifier"
    config = text_format.Parse(
        open(f"{model_dir}/config.pbtxt").read(), model_config_pb2().ModelConfig()
    )
    classes = out["category.classifier"].classes
    assert list(config.output[0].dims) == [len(classes)] and list(config.input[0].dims) == [
        3,
        32,
        32,
    ]
    assert report["triton"]["version"] == 1 and report["mlflow"]["logged"] is False


def test_onnx_and_torch_backends_agree_on_the_demo_test_split(trained):
    params, out = trained
    classifier = out["category.classifier"]
    items = out["category.classification_items"]
    test = items[items["split"] == "test"]
    images = pd.DataFrame(
        {"path": test["image_path"].astype(str), "product_id": test["product_id"].astype(str)}
    )
    base = {"top_k": 3, "batch_size": 7}
    torch_out = classify_images(classifier, images, {**base, "backend": "torch"}, params["export"])
    onnx_out = classify_images(
        classifier, images, {**base, "backend": "onnxruntime"}, params["export"]
    )
    auto = classify_images(classifier, images, base, params["export"])
    assert set(torch_out["backend"]) == {"torch"} and set(onnx_out["backend"]) == {"onnxruntime"}
    assert set(auto["backend"]) == {"onnxruntime"}  # the default once exported
    assert len(test) > 10 and (onnx_out["status"] == "ok").all()
    assert (onnx_out["label_1"] == torch_out["label_1"]).all()
    np.testing.assert_allclose(onnx_out["prob_1"], torch_out["prob_1"], atol=1e-4)


def test_an_export_of_another_run_or_none_is_not_used(trained, tmp_path, caplog):
    params, out = trained
    stale = copy.copy(out["category.classifier"])
    stale.config = {**stale.config, "training_seconds": -1.0}
    with caplog.at_level(logging.WARNING):
        assert serving_model(stale, {}, params["export"]) is stale
    assert "another training run" in caplog.text
    with pytest.raises(ValueError, match="another training run of category"):
        serving_model(stale, {"backend": "onnxruntime"}, params["export"])
    empty = {**params["export"], "output_dir": str(tmp_path)}
    assert serving_model(stale, {}, empty) is stale
    with pytest.raises(
        ValueError,
        match=r"no exported model .*category/model.onnx; run `vitrina export --task category`",
    ):
        serving_model(stale, {"backend": "onnxruntime"}, empty)
