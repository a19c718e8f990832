"""Export of every kind: artefacts against eager PyTorch, int8, card, bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
import torch
from torch.nn.utils import prune

from tests.export.conftest import SIZE, images, tiny_classifier
from vitrina.export import (
    CalibrationError,
    InferenceGraph,
    InputShapeError,
    OnnxClassifier,
    UnsupportedExportError,
    export_classifier,
    read_config,
)
from vitrina.export.graph import normalise
from vitrina.export.quantise import compare_int8
from vitrina.export.runtime import load_runner

NO_TRITON = {"triton": {"enabled": False}}


def targets_of(classifier, imgs):
    out = classifier.predict(imgs)
    if classifier.kind == "multiclass":
        return out.argmax(1)
    if classifier.kind == "multilabel":
        return (out >= 0.5).astype(np.float32)
    return np.arange(len(imgs)) % 3


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "metric_learning"])
def test_every_format_matches_eager_at_other_batch_sizes(kind, tmp_path):
    clf = tiny_classifier(kind)
    calib, test = images(16, seed=1), images(12, seed=2)
    report = export_classifier(clf, tmp_path / "exp", NO_TRITON, calibration=calib,
                               test_images=test, test_targets=targets_of(clf, test))  # fmt: skip
    assert set(report["artefacts"]) == {"onnx", "pt2", "torchscript", "int8"}
    graph = InferenceGraph(clf.task)
    x = normalise(images(5, seed=3), clf.config["image_mean"], clf.config["image_std"])
    with torch.inference_mode():
        ref = graph(torch.from_numpy(x)).numpy()
    for fmt in ("onnx", "pt2", "torchscript"):
        run = load_runner(fmt, report["artefacts"][fmt])
        for batch in (1, 5):  # the export batch is 2
            np.testing.assert_allclose(run(x[:batch]), ref[:batch], atol=1e-4, err_msg=fmt)
    dim0 = onnx.load(report["artefacts"]["onnx"]).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")  # dynamic batch axis
    assert not list((tmp_path / "exp").glob("*.data"))  # one file, no external data
    # the ONNX twin predicts what the PyTorch classifier predicts
    twin = OnnxClassifier(report["artefacts"]["onnx"], clf.config, clf.gallery)
    np.testing.assert_allclose(twin.predict(test, batch_size=5), clf.predict(test), atol=1e-4)
    assert report["checks"]["onnx"].keys() == {"max_abs_diff_b1", "max_abs_diff_b3"}
    saved = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert saved["int8"]["metric"] == (
        "precision_at_1" if kind == "metric_learning" else "accuracy"
    )


def test_int8_is_close_and_the_card_describes_the_model(tmp_path, caplog):
    clf = tiny_classifier("multiclass")
    test = images(24, seed=2)
    with caplog.at_level(logging.WARNING):
        report = export_classifier(clf, tmp_path / "exp", NO_TRITON, calibration=images(16, 1),
                                   test_images=test, test_targets=targets_of(clf, test),
                                   git_commit="feedbeef")  # fmt: skip
    int8 = report["int8"]
    assert int8["fp32"] == 100.0 and int8["n"] == 24  # targets are the fp32 predictions
    assert int8["accepted"] == (int8["drop"] <= 1.0)
    assert any("TorchScript is deprecated" in r.message for r in caplog.records)
    card = (tmp_path / "exp" / "model_card.md").read_text()
    for text in ("`pixel_values`", f"[batch, 3, {SIZE}, {SIZE}]", "float32", str(clf.config["image_mean"]),
                 str(clf.config["image_std"]), "`logits`", "`a`, `b`, `c`", "runs/best.ckpt",
                 "feedbeef", "int8 accuracy", "model.pt2"):  # fmt: skip
        assert text in card, text
    assert (tmp_path / "exp" / "labels.txt").read_text().split() == ["a", "b", "c"]


def test_int8_outside_the_tolerance_is_written_and_marked_rejected(tmp_path, monkeypatch, caplog):
    """A quantiser that flips the head's sign stands in for a bad int8 model."""
    import vitrina.export.classifier as module

    def broken(fp32_path, int8_path, calibration, **kwargs):
        model = onnx.load(str(fp32_path))
        dim = clf.task.head[1].in_features
        head = [i for i in model.graph.initializer if tuple(i.dims) in ((3, dim), (dim, 3))]
        assert head, [tuple(i.dims) for i in model.graph.initializer]
        w = onnx.numpy_helper.to_array(head[0])
        head[0].CopyFrom(onnx.numpy_helper.from_array(-w, head[0].name))
        onnx.save(model, str(int8_path))

    monkeypatch.setattr(module, "quantise_static", broken)
    clf = tiny_classifier("multiclass")
    test = images(24, seed=2)
    with caplog.at_level(logging.WARNING):
        report = export_classifier(clf, tmp_path / "exp", NO_TRITON, calibration=images(16, 1),
                                   test_images=test, test_targets=targets_of(clf, test))  # fmt: skip
    assert report["int8"]["accepted"] is False and report["int8"]["drop"] > 1.0
    assert (tmp_path / "exp" / "model.int8.onnx").is_file()
    assert "REJECTED" in (tmp_path / "exp" / "model_card.md").read_text()
    assert any("REJECTED" in r.message for r in caplog.records)


def test_compare_int8_tolerance_in_points():
    proba = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]].astype(np.float32)
    worse = proba.copy()
    worse[0] = [0, 1, 0]  # one of ten changes: 10 points
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    r = compare_int8("multiclass", proba, worse, targets, tolerance=1.0)
    assert (r.fp32, r.int8, r.drop, r.accepted, r.top1_agreement) == (100.0, 90.0, 10.0, False, 0.9)
    assert compare_int8("multiclass", proba, worse, targets, tolerance=10.0).accepted


def test_fewer_than_eight_calibration_images_is_refused(tmp_path):
    clf = tiny_classifier("multiclass")
    test = images(10, seed=2)
    with pytest.raises(CalibrationError, match="at least 8 validation images, got 7"):
        export_classifier(clf, tmp_path / "exp", NO_TRITON, calibration=images(7, 1),
                          test_images=test, test_targets=targets_of(clf, test))  # fmt: skip
    assert not (tmp_path / "exp").exists()  # nothing half-written


def test_a_kind_without_export_path_is_refused(tmp_path):
    folder = tmp_path / "captioner"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "captioner", "task": "x"}))
    with pytest.raises(UnsupportedExportError, match="kind 'captioner', which has no export path"):
        read_config(folder)
    clf = tiny_classifier("multiclass")
    clf.config["kind"] = "clip"
    with pytest.raises(UnsupportedExportError, match="exportable kinds"):
        export_classifier(clf, tmp_path / "exp", NO_TRITON)


def test_onnx_input_of_another_image_size_is_refused(tmp_path):
    clf = tiny_classifier("multiclass")
    report = export_classifier(clf, tmp_path / "exp", {**NO_TRITON, "formats": ["onnx"]})
    with pytest.raises(
        InputShapeError, match=rf"shape \['batch', 3, {SIZE}, {SIZE}\].*image size is 48"
    ):
        OnnxClassifier(report["artefacts"]["onnx"], clf.config, image_size=48)


def test_pruning_masks_are_removed_before_export_and_the_model_kept(tmp_path):
    clf = tiny_classifier("multiclass")
    prune.l1_unstructured(clf.task.head[1], "weight", amount=0.5)
    graph = InferenceGraph(clf.task)
    assert graph.pruning_removed == 1
    assert not any(n.endswith("weight_orig") for n, _ in graph.named_parameters())
    assert (graph.head[1].weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert hasattr(clf.task.head[1], "weight_orig")  # the caller's model is untouched
    report = export_classifier(clf, tmp_path / "exp", {**NO_TRITON, "formats": ["torchscript"]})
    traced = torch.jit.load(report["artefacts"]["torchscript"])
    assert not any(n.endswith("weight_orig") for n, _ in traced.named_parameters())


def test_bad_settings_are_named(tmp_path):
    clf = tiny_classifier("multiclass")
    with pytest.raises(ValueError, match=r"unknown \['tflite'\]"):
        export_classifier(clf, tmp_path / "e", {"formats": ["onnx", "tflite"]})
    with pytest.raises(ValueError, match="int8 quantises the ONNX model"):
        export_classifier(clf, tmp_path / "e", {"formats": ["int8"]})
    with pytest.raises(ValueError, match="other than the export batch \\(2\\)"):
        export_classifier(clf, tmp_path / "e", {"check_batch_sizes": [1, 2]})


def test_int8_activation_type_follows_the_cpu(monkeypatch):
    import platform

    import vitrina.training.precision as precision
    from vitrina.export.quantise import activation_choice

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert activation_choice("auto") == ("uint8", False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))  # no VNNI
    assert activation_choice("auto") == ("uint8", True)
    assert activation_choice("int8") == ("int8", False)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert activation_choice("auto") == ("int8", False)
    with pytest.raises(ValueError, match="auto, int8 or uint8, got 'int4'"):
        activation_choice("int4")
