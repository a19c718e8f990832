"""Seed 004 input adapters: layouts → raw product tables, their errors, and ingestion."""

from __future__ import annotations

import logging
import os

import pandas as pd
import pytest
import yaml
from kedro.io import DatasetError
from PIL import Image

from tests.conftest import kedro_cli, make_project
from vitrina.datasets import SeedClassificationDataset, SeedMetricLearningDataset
from vitrina.pipelines.ingestion.nodes import (
    clean_products,
    map_to_canonical_schema,
    validate_raw_products,
)

COLOURS = {"0": "red", "1": "blue", "2": "green"}


def _image(path, colour="red", size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_classification(root, kind="multiclass", n_train=6, n_test=3, missing=()):
    """A seed 004 classification layout; images named in ``missing`` are not written."""
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            name = f"{split}_{i}.jpg"
            label = str(i % 3)
            if name not in missing:
                _image(root / "images" / split / name, COLOURS[label])
            if kind == "multiclass":
                rows.append({"image_path": name, "label": label})
            else:
                rows.append(
                    {
                        "image_path": name,
                        **{f"class_{c}": float(c == i % 3 or c == 2) for c in range(3)},
                    }
                )
        pd.DataFrame(rows).to_csv(root / f"{split}_metadata.csv", index=False)
    return root


def write_metric(root, nested=True):
    base = root / "metric_learning_dataset" if nested else root
    for split, classes in (("train", ["cat", "dog"]), ("val", ["fox"]), ("base", ["fox", "owl"])):
        for c in classes:
            for i in range(2):
                _image(base / split / c / f"{c}_{i}.png")
    return root


def test_multiclass_layout(tmp_path, caplog):
    root = write_classification(tmp_path / "seed", missing={"train_4.jpg"})
    with caplog.at_level(logging.WARNING):
        df = SeedClassificationDataset(str(root)).load()
    assert list(df.columns) == [
        "product_id", "title", "description", "image_path", "label", "split",
    ]  # fmt: skip
    assert df["split"].tolist() == ["train"] * 5 + ["test"] * 3
    assert df["product_id"].iloc[0] == "train/train_0" and df["title"].iloc[0] == "train_0"
    assert df["image_path"].iloc[-1] == "images/test/test_2.jpg"
    assert (df["description"] == "").all()
    assert df["label"].tolist() == ["0", "1", "2", "0", "2", "0", "1", "2"]
    assert all((root / p).is_file() for p in df["image_path"])
    # the listed image that does not exist is excluded and counted, not fatal
    assert "train_metadata.csv: 1 of 6 rows excluded (image file not found)" in caplog.text
    assert "images/train/train_4.jpg" in caplog.text


def test_multilabel_layout(tmp_path):
    root = write_classification(tmp_path / "seed", kind="multilabel")
    df = SeedClassificationDataset(str(root), kind="multilabel").load()
    assert list(df.columns[4:]) == ["class_0", "class_1", "class_2", "split"]
    assert df["class_2"].dtype.kind == "i" and df["class_2"].tolist() == [1] * 9
    assert df["class_0"].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert "label" not in df.columns


def test_classification_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder '.*nowhere' does not exist"):
        SeedClassificationDataset(str(tmp_path / "nowhere")).load()
    root = write_classification(tmp_path / "seed")
    (root / "test_metadata.csv").unlink()
    with pytest.raises(DatasetError, match=r"'.*test_metadata.csv' does not exist"):
        SeedClassificationDataset(str(root)).load()
    root = write_classification(tmp_path / "seed2")
    pd.DataFrame({"image_path": ["train_0.jpg"], "target": [1]}).to_csv(
        root / "train_metadata.csv", index=False
    )
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['label'\] for a multiclass"):
        SeedClassificationDataset(str(root)).load()
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['class_0..class_N'\]"):
        SeedClassificationDataset(str(root), kind="multilabel").load()
    with pytest.raises(DatasetError, match="kind must be one of"):
        SeedClassificationDataset(str(root), kind="regression")


def test_multilabel_values_must_be_0_or_1(tmp_path):
    root = write_classification(tmp_path / "seed", kind="multilabel")
    table = pd.read_csv(root / "test_metadata.csv")
    table.loc[1, "class_1"] = 0.5
    table.loc[2, "class_1"] = None
    table.to_csv(root / "test_metadata.csv", index=False)
    with pytest.raises(
        DatasetError,
        match=r"column 'class_1' must hold 0/1 values; 2 row\(s\) hold others: 0.5, <empty>",
    ):
        SeedClassificationDataset(str(root), kind="multilabel").load()


def test_layout_is_read_only_and_previews(tmp_path):
    ds = SeedClassificationDataset(str(write_classification(tmp_path / "seed")))
    with pytest.raises(DatasetError, match="read-only"):
        ds.save(pd.DataFrame({"a": [1]}))
    assert ds.exists() and not SeedClassificationDataset(str(tmp_path / "no")).exists()
    preview = ds.preview(nrows=2)
    assert len(preview["data"]) == 2 and "split" in preview["columns"]
    assert SeedMetricLearningDataset(str(tmp_path / "no")).preview()["data"] == []
    assert "kind" in str(ds)


@pytest.mark.parametrize("nested", [True, False])
def test_metric_learning_layout(tmp_path, nested, caplog):
    root = write_metric(tmp_path / "seed", nested=nested)
    base = root / "metric_learning_dataset" if nested else root
    (base / "train" / "cat" / "notes.txt").write_text("not an image")
    _image(base / "train" / "stray.jpg")  # outside any class folder
    with caplog.at_level(logging.WARNING):
        df = SeedMetricLearningDataset(str(root)).load()
    assert df.groupby("split")["label"].unique().map(sorted).to_dict() == {
        "base": ["fox", "owl"],
        "train": ["cat", "dog"],
        "val": ["fox"],
    }
    prefix = "metric_learning_dataset/" if nested else ""
    assert df["image_path"].iloc[0] == f"{prefix}train/cat/cat_0.png"
    assert df["product_id"].iloc[0] == "train/cat/cat_0" and df["title"].iloc[0] == "cat_0"
    assert len(df) == 10 and all((root / p).is_file() for p in df["image_path"])
    assert "train/: 2 of 6 rows excluded" in caplog.text and "stray.jpg" in caplog.text


def test_metric_learning_missing_split_folder(tmp_path):
    root = write_metric(tmp_path / "seed")
    for f in (root / "metric_learning_dataset" / "val").rglob("*.png"):
        f.unlink()
    for d in sorted((root / "metric_learning_dataset" / "val").rglob("*"), reverse=True):
        d.rmdir()
    (root / "metric_learning_dataset" / "val").rmdir()
    with pytest.raises(
        DatasetError, match=r"'val' folder '.*metric_learning_dataset/val' does not"
    ):
        SeedMetricLearningDataset(str(root)).load()


def _env_params(env: str, root) -> dict:
    """The environment's ingestion parameters over base's (soft merge, key by key)."""
    conf = os.path.join(os.path.dirname(__file__), "..", "..", "conf")
    with open(os.path.join(conf, "base", "parameters_ingestion.yml")) as f:
        params = yaml.safe_load(f)["ingestion"]
    with open(os.path.join(conf, env, "parameters_ingestion.yml")) as f:
        env_params = yaml.safe_load(f)["ingestion"]
    for key, value in env_params.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    params["image_root"] = str(root)
    return params


@pytest.mark.parametrize(
    ("env", "kind", "expected"),
    [
        ("seed004_multiclass", "multiclass", ["label", "split"]),
        ("seed004_multilabel", "multilabel", ["class_0", "class_1", "class_2", "split"]),
        ("seed004_metric", None, ["label", "split"]),
    ],
)
def test_environment_mappings_carry_split_and_labels(tmp_path, env, kind, expected):
    if kind is None:
        root = write_metric(tmp_path / "seed")
        raw = SeedMetricLearningDataset(str(root)).load()
    else:
        root = write_classification(tmp_path / "seed", kind=kind)
        raw = SeedClassificationDataset(str(root), kind=kind).load()
    params = _env_params(env, root)
    products, report = clean_products(
        map_to_canonical_schema(validate_raw_products(raw, params), params), params
    )
    assert list(products.columns) == [
        "product_id", "title", "description", "image_path", "group_id", *expected,
    ]  # fmt: skip
    assert report["reason"].tolist() == ["kept"] and len(products) == len(raw)
    assert products["split"].tolist() == raw["split"].tolist()


@pytest.mark.slow
def test_kedro_ingestion_and_image_processing_on_a_seed_layout(tmp_path):
    project = make_project(tmp_path / "project")
    write_classification(project / "data" / "01_raw" / "seed004_multiclass", missing={"test_1.jpg"})
    kedro_cli(project, "run", "--env=seed004_multiclass", "--pipeline=ingestion")
    kedro_cli(
        project,
        "run",
        "--env=seed004_multiclass",
        "--pipeline=image_processing",
        "--params=image_processing.size=32",
    )
    products = pd.read_parquet(project / "data/03_primary/seed004_multiclass/products.parquet")
    assert products["split"].tolist() == ["train"] * 6 + ["test"] * 2
    assert products["label"].tolist() == ["0", "1", "2", "0", "1", "2", "0", "2"]
    assert products["image_path"].iloc[0] == "images/train/train_0.jpg"
    manifest_dir = project / "data/02_intermediate/seed004_multiclass"
    assert len(list(manifest_dir.rglob("*.jpg"))) == 8
