"""The Triton repository (parsed with tritonclient's ModelConfig) and MLflow logging."""

from __future__ import annotations

import mlflow
import onnx
import pytest
from google.protobuf import text_format

from tests.export.conftest import SIZE, images, model_config_pb2, tiny_classifier
from vitrina.export import export_classifier
from vitrina.export.tracking import log_export
from vitrina.export.triton import TritonRepositoryError, triton_settings

TRITON = {
    "formats": ["onnx"],
    "triton": {
        "max_batch_size": 16,
        "dynamic_batching": {"preferred_batch_size": [4, 16], "max_queue_delay_microseconds": 250},
        "instance_group": {"count": 2, "kind": "KIND_CPU"},
    },
}


def settings(repo, **triton):
    return {**TRITON, "triton": {**TRITON["triton"], "repository": str(repo), **triton}}


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2().ModelConfig())


def onnx_io(path):
    graph = onnx.load(str(path)).graph

    def dims(v):
        return [
            d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim
        ]

    return [(v.name, dims(v)) for v in graph.input], [(v.name, dims(v)) for v in graph.output]


@pytest.mark.parametrize("kind", ["multiclass", "metric_learning"])
def test_config_is_derived_from_the_onnx_graph(kind, tmp_path):
    clf = tiny_classifier(kind)
    report = export_classifier(clf, tmp_path / "exp", settings(tmp_path / "repo"))
    model_dir = tmp_path / "repo" / f"t_{kind}-classifier"
    config = parse(model_dir / "config.pbtxt")
    pb = model_config_pb2()
    inputs, outputs = onnx_io(model_dir / "1" / "model.onnx")
    assert config.name == f"t_{kind}-classifier" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert [(i.name, [-1, *i.dims]) for i in config.input] == inputs  # batch axis left out
    assert [(o.name, [-1, *o.dims]) for o in config.output] == outputs
    assert inputs == [("pixel_values", [-1, 3, SIZE, SIZE])]
    assert all(t.data_type == pb.TYPE_FP32 for t in [*config.input, *config.output])
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    group = config.instance_group[0]
    assert (group.count, group.kind) == (2, pb.ModelInstanceGroup.KIND_CPU)
    if kind == "multiclass":
        assert config.output[0].label_filename == "labels.txt"
        assert (model_dir / "labels.txt").read_text().split() == clf.classes
    else:
        assert config.output[0].label_filename == "" and not (model_dir / "labels.txt").exists()
    assert (model_dir / "1" / "model.onnx").read_bytes() == (
        tmp_path / "exp" / "model.onnx"
    ).read_bytes()
    assert report["triton"]["version"] == 1


def test_an_existing_version_gets_a_new_number_and_nothing_is_overwritten(tmp_path):
    repo = tmp_path / "repo"
    clf = tiny_classifier("multiclass")
    export_classifier(clf, tmp_path / "a", settings(repo))
    first = (repo / "t_multiclass-classifier" / "1" / "model.onnx").read_bytes()
    config = (repo / "t_multiclass-classifier" / "config.pbtxt").read_text()
    other = tiny_classifier("multiclass", seed=1)  # other weights, same interface
    report = export_classifier(other, tmp_path / "b", settings(repo, max_batch_size=32,
                               dynamic_batching={"preferred_batch_size": [32]}))  # fmt: skip
    model_dir = repo / "t_multiclass-classifier"
    assert report["triton"]["version"] == 2
    assert (model_dir / "1" / "model.onnx").read_bytes() == first
    assert (model_dir / "2" / "model.onnx").read_bytes() != first
    assert parse(model_dir / "config.pbtxt").max_batch_size == 32
    assert (model_dir / "config.pbtxt.before-v2").read_text() == config  # previous config kept
    third = export_classifier(other, tmp_path / "c", settings(repo, max_batch_size=32,
                              dynamic_batching={"preferred_batch_size": [32]}))  # fmt: skip
    assert third["triton"]["unchanged"] and third["triton"]["version"] == 2  # a rerun adds nothing
    assert sorted(p.name for p in model_dir.iterdir() if p.is_dir()) == ["1", "2"]
    first_again = export_classifier(clf, tmp_path / "d", settings(repo, max_batch_size=32,
                                    dynamic_batching={"preferred_batch_size": [32]}))  # fmt: skip
    assert (
        first_again["triton"]["version"] == 3
        and not (model_dir / "config.pbtxt.before-v3").exists()
    )
    assert (model_dir / "1" / "model.onnx").read_bytes() == first


def test_a_model_with_another_interface_is_refused(tmp_path):
    repo = tmp_path / "repo"
    export_classifier(tiny_classifier("multiclass"), tmp_path / "a", settings(repo))
    four = tiny_classifier("multiclass", classes=("a", "b", "c", "d"))
    with pytest.raises(TritonRepositoryError, match="other inputs, outputs or labels"):
        export_classifier(four, tmp_path / "b", settings(repo))
    assert sorted(p.name for p in (repo / "t_multiclass-classifier").iterdir()) == [
        "1", "config.pbtxt", "labels.txt"]  # fmt: skip
    export_classifier(four, tmp_path / "b", settings(repo, model_name="four"))
    assert (repo / "four" / "1" / "model.onnx").is_file()


def test_bad_triton_settings_are_named():
    with pytest.raises(
        TritonRepositoryError,
        match=r"preferred_batch_size \[64\] must lie in 1..max_batch_size \(32\)",
    ):
        triton_settings({"dynamic_batching": {"preferred_batch_size": [64]}})
    with pytest.raises(TritonRepositoryError, match="instance_group.kind must be one of"):
        triton_settings({"instance_group": {"kind": "KIND_TPU"}})
    with pytest.raises(TritonRepositoryError, match="gpus needs kind KIND_GPU"):
        triton_settings({"instance_group": {"gpus": [0]}})
    gpu = triton_settings(
        {"instance_group": {"kind": "KIND_GPU", "gpus": [0, 1]}, "dynamic_batching": None}
    )
    assert gpu["instance_group"]["gpus"] == [0, 1] and gpu["dynamic_batching"] is None


@pytest.fixture
def store(tmp_path, monkeypatch):
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # set_experiment also sets $MLFLOW_EXPERIMENT_ID and a module global: both are undone
    # after the test, or later tests (and the kedro runs they start) look for experiment 1
    # in their own stores.
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    mlflow.set_experiment("export")
    yield
    mlflow.set_tracking_uri(before)


def test_artefacts_are_logged_and_the_onnx_model_registered(tmp_path, store):
    clf = tiny_classifier("multiclass")
    test = images(12, seed=2)
    report = export_classifier(clf, tmp_path / "exp", {**settings(tmp_path / "repo"), "formats": ["onnx", "int8"]},
                               calibration=images(8, 1), test_images=test,
                               test_targets=clf.predict(test).argmax(1))  # fmt: skip
    with mlflow.start_run() as run:
        record = log_export(report, {"register_models": True, "model_name_prefix": "vt"})
    assert record["logged"] and record["run_id"] == run.info.run_id
    client = mlflow.MlflowClient()
    names = {a.path for a in client.list_artifacts(run.info.run_id, "export/t_multiclass")}
    assert {"export/t_multiclass/model.onnx", "export/t_multiclass/model.int8.onnx",
            "export/t_multiclass/model_card.md", "export/t_multiclass/triton"} <= names  # fmt: skip
    assert record["registered"] and record["name"] == "vt-t_multiclass-classifier-onnx"
    version = client.get_model_version(record["name"], str(record["version"]))
    assert version.tags["int8"] in ("accepted", "rejected") and version.tags["kind"] == "multiclass"
    loaded = mlflow.onnx.load_model(record["model_uri"])
    assert [i.name for i in loaded.graph.input] == ["pixel_values"]
    assert client.get_run(run.info.run_id).data.metrics["export.t_multiclass.int8_fp32"] == 100.0
    off = log_export(report, {"register_models": False})
    assert not off["registered"] and not off["logged"]  # no active run, no registration
