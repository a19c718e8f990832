"""Classification pipelines on the demo catalogue: each kind end to end, and bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from tests.conftest import REPO
from vitrina.demo import generate_demo_catalogue
from vitrina.models.classifiers import pruning
from vitrina.models.classifiers.artefact import CheckpointMismatchError, ImageClassifier
from vitrina.pipelines.classification.items import prepare_items
from vitrina.pipelines.classification.nodes import train_classifier
from vitrina.pipelines.classification.pipeline import task_pipeline
from vitrina.pipelines.classification_inference.nodes import classify_images, select_images
from vitrina.pipelines.image_processing.pipeline import create_pipeline as image_processing
from vitrina.pipelines.ingestion.pipeline import create_pipeline as ingestion


def base_params(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "base" / f"parameters_{name}.yml").read_text())[name]


class Kept(MemoryDataset):
    """A MemoryDataset the runner cannot release, so the test can read every output."""

    def _release(self) -> None:
        pass


def run(pipeline, **data):
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in data.items()})
    produced = {d for n in pipeline.nodes for d in n.outputs}
    for name in produced:
        catalog[name] = Kept(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog[name].load() for name in produced}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("classification")
    table = generate_demo_catalogue(root / "raw", n_products=300, seed=7)
    ingest = {**base_params("ingestion"), "image_root": str(root / "raw" / "images")}
    products = run(ingestion(), raw_products=table, **{"params:ingestion": ingest})["products"]
    images = {**base_params("image_processing"), "size": 48, "output_dir": str(root / "processed")}
    out = run(image_processing(), products=products, **{"params:ingestion.image_root": ingest["image_root"],
                                                        "params:image_processing": images})  # fmt: skip
    return root, products, out["image_manifest"]


@pytest.fixture(scope="module")
def params(catalogue):
    root, _, _ = catalogue
    p = base_params("classification")
    p["output_dir"] = str(root / "runs")
    p["image_size"] = 32
    p["training"].update(max_epochs=8, patience=None, num_threads=1)
    p["export"].update(output_dir=str(root / "export"), formats=["onnx"])
    p["export"]["triton"]["repository"] = str(root / "triton")
    return p


def run_task(catalogue, params, name):
    _, products, manifest = catalogue
    return run(task_pipeline(name), products=products, image_manifest=manifest, review_store=None,
               **{f"params:classification.tasks.{name}": params["tasks"][name],
                  "params:classification": params, "params:classification.review": params["review"], "params:mlflow": {"register_models": False}})  # fmt: skip


@pytest.fixture(scope="module")
def multiclass(catalogue, params):
    return run_task(catalogue, params, "category")


@pytest.mark.slow
def test_multiclass_trains_evaluates_and_reports(multiclass, params):
    model = multiclass["category.classifier"]
    assert model.kind == "multiclass" and model.classes == sorted(model.classes)
    metrics = multiclass["category.classification_task_metrics"]
    test = metrics[metrics["split"] == "test"].set_index("metric")["value"]
    assert {"accuracy", "macro_f1", "top5_accuracy"} <= set(test.index)
    baseline = multiclass["category.classification_baseline"]
    assert set(baseline["model"]) == {"linear_probe_frozen"} and set(baseline["split"]) == {"test"}
    names = {p.name for p in (Path(params["output_dir"]) / "category" / "checkpoints").iterdir()}
    assert {"best.ckpt", "last.ckpt"} <= names and sum(n.startswith("top-") for n in names) == 2
    history = multiclass["category.classification_history"]
    losses = history.dropna(subset=["train_loss_epoch"])["train_loss_epoch"].to_numpy()
    assert losses[-1] < losses[0], "training did not reduce the loss"
    preds = multiclass["category.classification_test_predictions"]
    assert len(preds) > 0
    assert (preds["pred"] == preds["target"]).mean() == pytest.approx(test["accuracy"])
    for key in ("category.classification_train_batches", "category.classification_training_curves",
                "category.classification_test_results"):  # fmt: skip
        assert multiclass[key].axes, key


@pytest.mark.slow
def test_saved_classifier_reloads_with_the_same_outputs(multiclass, tmp_path):
    model = multiclass["category.classifier"]
    model.save(tmp_path / "model")
    again = ImageClassifier.load(
        tmp_path / "model", kind="multiclass", n_classes=len(model.classes)
    )
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(again.predict(images), model.predict(images), atol=1e-6)
    with pytest.raises(
        CheckpointMismatchError, match="'multiclass' model; this task is 'multilabel'"
    ):
        ImageClassifier.load(tmp_path / "model", kind="multilabel")
    with pytest.raises(
        CheckpointMismatchError, match=f"has {len(model.classes)} classes; this task has 99"
    ):
        ImageClassifier.load(tmp_path / "model", n_classes=99)


@pytest.mark.slow
def test_multilabel_thresholds_and_metrics(catalogue, params):
    out = run_task(catalogue, params, "tags")
    model = out["tags.classifier"]
    thresholds = np.asarray(model.config["thresholds"])
    assert thresholds.shape == (len(model.classes),) and ((thresholds > 0) & (thresholds < 1)).all()
    assert all("=" in c for c in model.classes)  # column=value tags
    test = (
        out["tags.classification_task_metrics"]
        .query("split == 'test'")
        .set_index("metric")["value"]
    )
    assert {"micro_f1", "macro_f1", "map"} <= set(test.index) and 0 < test["map"] <= 1


@pytest.mark.slow
def test_metric_learning_holds_out_classes_and_keeps_a_gallery(catalogue, params):
    out = run_task(catalogue, params, "subcategory_retrieval")
    items = out["subcategory_retrieval.classification_items"]
    by_split = {
        s: set(items.loc[items["split"] == s, "target"]) for s in ("train", "validation", "test")
    }
    assert not by_split["train"] & (by_split["validation"] | by_split["test"])
    model = out["subcategory_retrieval.classifier"]
    assert len(model.gallery["ids"]) == len(items)
    norms = np.linalg.norm(model.gallery["embeddings"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    metrics = pd.concat([out["subcategory_retrieval.classification_task_metrics"],
                         out["subcategory_retrieval.classification_baseline"]])  # fmt: skip
    test = metrics[metrics["split"] == "test"]
    assert set(test["model"]) == {"trained", "untrained_backbone"}
    assert {"precision_at_1", "map_at_r", "r_precision"} <= set(test["metric"])


# ------------------------------------------------------------------ bad input (fast)


def small_products(n_per_class=12, classes=("a", "b", "c")):
    rows = []
    for c in classes:
        for i in range(n_per_class):
            rows.append({"product_id": f"{c}{i}", "group_id": f"{c}{i // 2}", "label": c,
                         "colour": "red" if i % 2 else "blue"})  # fmt: skip
    products = pd.DataFrame(rows)
    manifest = pd.DataFrame(
        {"product_id": products["product_id"], "processed_path": products["product_id"] + ".jpg"}
    )
    return products, manifest


def test_missing_label_column_is_named():
    products, manifest = small_products()
    with pytest.raises(ValueError, match=r"label column\(s\) \['nope'\] not in products"):
        prepare_items(products, manifest, {"name": "t", "kind": "multiclass", "label": "nope"}, {})


def test_class_too_small_is_dropped_and_counted():
    products, manifest = small_products()
    products.loc[0, "label"] = "lonely"  # a class with one image
    items, report = prepare_items(products, manifest, {"name": "t", "kind": "multiclass", "label": "label"},
                                  {"min_class_size": 5})  # fmt: skip
    assert "lonely" not in set(items["target"])
    assert report.loc[0, "n_dropped_classes"] == 1 and report.loc[0, "n_dropped_items"] == 1
    assert set(items["split"]) == {"train", "validation", "test"}
    groups = items.groupby("group_id")["split"].nunique()
    assert (groups == 1).all(), "a group straddles two splits"


def test_test_labels_unseen_in_training_are_dropped():
    products, manifest = small_products()
    products["split"] = "train"
    products.loc[products["label"] == "c", "split"] = "test"  # class c exists only in test
    products.loc[products["product_id"].isin(["a0", "a1", "b0", "b1"]), "split"] = "test"
    items, report = prepare_items(products, manifest, {"name": "t", "kind": "multiclass", "label": "label"},
                                  {"min_class_size": 2})  # fmt: skip
    assert "c" not in set(items["target"])
    assert set(items.loc[items["split"] == "test", "product_id"]) == {"a0", "a1", "b0", "b1"}
    assert report.loc[0, "detail"] == "predefined split"


def test_multilabel_rows_without_a_positive_are_dropped():
    products, manifest = small_products()
    products["tags"] = ["x;y" if i % 3 else "" for i in range(len(products))]
    items, report = prepare_items(products, manifest, {"name": "t", "kind": "multilabel", "label_list": "tags"},
                                  {"min_class_size": 2})  # fmt: skip
    assert (items["target"] != "").all() and len(items) == (np.arange(len(products)) % 3 != 0).sum()
    assert set(items["target"]) == {"x|y"}


def test_indicator_columns_become_tags_and_bad_values_are_named():
    products, manifest = small_products()
    products["class_0"] = [1, 0] * (len(products) // 2)
    products["class_1"] = 1
    items, _ = prepare_items(products, manifest, {"name": "t", "kind": "multilabel", "indicator_columns": "class_*"},
                             {"min_class_size": 2})  # fmt: skip
    assert set(items["target"]) == {"class_0|class_1", "class_1"}
    products.loc[3, "class_1"] = 7
    with pytest.raises(ValueError, match=r"indicator columns \['class_1'\]"):
        prepare_items(
            products,
            manifest,
            {"name": "t", "kind": "multilabel", "indicator_columns": "class_*"},
            {},
        )


# ---------------------------------------------------------------------- inference


@pytest.mark.slow
def test_inference_over_a_folder_reports_corrupt_and_missing_images(
    multiclass, catalogue, tmp_path
):
    _, _, manifest = catalogue
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, path in enumerate(manifest["processed_path"].head(3)):
        Image.open(path).save(folder / "sub" / f"ok{i}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    images = select_images(
        None, None, {"source": {"paths": [str(folder), str(tmp_path / "gone.jpg")]}}
    )
    assert len(images) == 5
    out = classify_images(multiclass["category.classifier"], images, {"top_k": 3})
    status = dict(zip(out["path"].str.rsplit("/", n=1).str[-1], out["status"], strict=True))
    assert status == {"broken.jpg": "decode_error", "ok0.jpg": "ok", "ok1.jpg": "ok", "ok2.jpg": "ok",
                      "gone.jpg": "missing_image"}  # fmt: skip
    ok = out[out["status"] == "ok"]
    assert ok[["prob_1", "prob_2", "prob_3"]].notna().all().all()
    assert (ok["prob_1"] >= ok["prob_2"]).all() and set(ok["label_1"]) <= set(
        multiclass["category.classifier"].classes
    )


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"no images in folder .*empty"):
        (tmp_path / "empty").mkdir()
        select_images(None, None, {"source": {"paths": [str(tmp_path / "empty")]}})


def test_group_source_selects_the_catalogue_group():
    products, manifest = small_products()
    images = select_images(products, manifest, {"source": {"group": {"label": "b"}}})
    assert set(images["product_id"]) == set(products.loc[products["label"] == "b", "product_id"])
    with pytest.raises(ValueError, match="no product has label == 'zzz'"):
        select_images(products, manifest, {"source": {"group": {"label": "zzz"}}})


@pytest.mark.slow
def test_init_from_a_classifier_of_another_kind_or_class_count_is_refused(
    multiclass, catalogue, params, tmp_path
):
    model = multiclass["category.classifier"]
    model.save(tmp_path / "category")
    _, products, manifest = catalogue
    task = copy.deepcopy(params["tasks"]["subcategory_retrieval"])
    task.update(
        name="init_check", kind="multiclass", init={"classifier": str(tmp_path / "category")}
    )
    items, _ = prepare_items(products, manifest, task, params)
    n = items.loc[items["split"] == "train", "target"].nunique()
    with pytest.raises(
        CheckpointMismatchError, match=f"has {len(model.classes)} classes; this task has {n}"
    ):
        train_classifier(items, task, params)
    json.dumps(model.config)  # the config stays JSON-serialisable


# ------------------------------------------------------------------------ pruning


def tiny_task():
    from vitrina.models.classifiers.backbones import build_backbone
    from vitrina.models.classifiers.kinds import MulticlassTask

    torch.manual_seed(0)
    return MulticlassTask(build_backbone("tiny_resnet", image_size=32), classes=["a", "b", "c"],
                          training={}, image_size=32)  # fmt: skip


@pytest.mark.parametrize("method", ["l1_unstructured", "random_unstructured"])
def test_unstructured_pruning_reaches_the_amount_and_is_permanent(method):
    task = tiny_task()
    cfg = pruning.validate({"method": method, "amount": 0.4})
    reached = pruning.prune_once(task, cfg)
    assert reached == pytest.approx(0.4, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in task.named_parameters())
    assert not any(name.endswith("_mask") for name, _ in task.named_buffers())


def test_structured_pruning_zeroes_whole_channels():
    task = tiny_task()
    pruning.prune_once(task, pruning.validate({"method": "ln_structured", "amount": 0.5, "dim": 0}))
    conv = next(m for m, _ in pruning.prunable(task) if isinstance(m, torch.nn.Conv2d))
    zero_rows = (conv.weight.detach().flatten(1).abs().sum(1) == 0).float().mean()
    assert zero_rows == pytest.approx(0.5, abs=0.13)


def test_pruning_settings_are_validated():
    with pytest.raises(ValueError, match="pruning.method must be one of"):
        pruning.validate({"method": "magic"})
    with pytest.raises(ValueError, match=r"pruning.amount must be a fraction in \(0, 1\), got 1.5"):
        pruning.validate({"amount": 1.5})


@pytest.mark.slow
def test_pruning_per_epoch_is_reported_with_metric_before_and_after(catalogue, params):
    p = copy.deepcopy(params)
    p["tasks"]["category"]["pruning"] = {"method": "l1_unstructured", "amount": 0.3, "schedule": "epoch",
                                         "start_epoch": 2}  # fmt: skip
    p["training"]["max_epochs"] = 4
    p["output_dir"] = p["output_dir"] + "-pruned"
    out = run_task(catalogue, p, "category")
    report = out["category.classifier"].config["pruning"]
    assert report["sparsity"] > 0.25
    assert {"val_macro_f1_before", "val_macro_f1_after"} <= set(report)
    rows = out["category.classification_task_metrics"]
    assert "pruning_sparsity" in set(rows["metric"])


# --------------------------------------------------------------- parameter checks


def test_shipped_classification_parameters_validate():
    from vitrina.validation import validate_parameters

    validate_parameters({"classification": base_params("classification"),
                         "classification_inference": base_params("classification_inference")},
                        ["classification", "classification_inference"])  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p["tasks"]["category"]["training"].update(lr=0.1),
            r"unknown setting\(s\) \['lr'\]",
        ),
        (
            lambda p: p["tasks"]["category"].update(backbone="resnet9000"),
            "unknown backbone 'resnet9000'",
        ),
        (
            lambda p: p["tasks"]["tags"].update(label="colour"),
            r"a multilabel task takes exactly one of",
        ),
        (lambda p: p["split"].update(validation=0.5, test=0.6), "leaves no train split"),
        (
            lambda p: p["tasks"]["category"].update(pruning={"amount": 2}),
            r"pruning.amount must be a fraction",
        ),
        (lambda p: p["export"].update(formats=["onnx", "tflite"]), r"export.formats"),
        (lambda p: p["export"].update(calibration_images=4), r"calibration_images"),
        (
            lambda p: p["export"].update(check_batch_sizes=[2, 4]),
            r"other than the export batch \(2\)",
        ),
        (
            lambda p: p["export"]["triton"].update(instance_group={"kind": "KIND_TPU"}),
            r"instance_group.kind must be one of",
        ),
    ],
)
def test_bad_classification_parameters_are_named_before_any_work(change, message):
    from vitrina.validation import ParameterError, validate_parameters

    p = base_params("classification")
    p["tasks"]["category"].setdefault("training", {})
    change(p)
    with pytest.raises(ParameterError, match=message):
        validate_parameters({"classification": p}, ["classification"])
