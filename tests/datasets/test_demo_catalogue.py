"""Tests for the read-only DemoCatalogueDataset."""

from __future__ import annotations

import pandas as pd
import pytest
from kedro.io import AbstractDataset, DatasetError

from vitrina.datasets.demo_catalogue import DemoCatalogueDataset
from vitrina.demo import DEMO_COLUMNS


@pytest.fixture
def dataset(tmp_path):
    return DemoCatalogueDataset(
        path=str(tmp_path / "demo"), n_products=20, seed=3, image_size=(64, 80), n_defects=8
    )


def test_load_generates_then_reuses(dataset, tmp_path):
    assert not dataset.exists()
    df = dataset.load()
    assert dataset.exists()
    assert len(df) == 20
    assert list(df.columns) == list(DEMO_COLUMNS)
    assert pd.api.types.is_string_dtype(df["sku"])
    assert pd.api.types.is_string_dtype(df["model_code"])
    assert df["is_adult"].dtype == bool
    assert dataset.image_dir == tmp_path / "demo" / "images"

    table = tmp_path / "demo" / "products.csv"
    mtime = table.stat().st_mtime_ns
    pd.testing.assert_frame_equal(dataset.load(), df)
    assert table.stat().st_mtime_ns == mtime


def test_preview_does_not_generate(dataset, tmp_path):
    preview = dataset.preview()
    assert preview == {"index": [], "columns": list(DEMO_COLUMNS), "data": []}
    assert not (tmp_path / "demo").exists()


def test_preview_after_load(dataset):
    df = dataset.load()
    preview = dataset.preview(nrows=3)
    assert set(preview) == {"index", "columns", "data"}
    assert preview["columns"] == list(DEMO_COLUMNS)
    assert preview["index"] == [0, 1, 2]
    assert preview["data"][0][0] == df.loc[0, "sku"]


def test_preview_return_annotation_is_table_preview():
    # kedro-viz picks the renderer from the name of preview()'s return annotation
    annotation = DemoCatalogueDataset.preview.__annotations__["return"]
    assert getattr(annotation, "__name__", annotation) == "TablePreview"


def test_save_raises(dataset):
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(pd.DataFrame({"a": [1]}))


def test_describe_and_from_config(tmp_path):
    ds = AbstractDataset.from_config(
        "raw_products",
        {
            "type": "vitrina.datasets.demo_catalogue.DemoCatalogueDataset",
            "path": str(tmp_path / "demo"),
            "n_products": 12,
            "seed": 1,
            "image_size": [48, 64],  # YAML gives a list
            "n_defects": 0,
            "metadata": {"kedro-viz": {"layer": "raw"}},
        },
    )
    assert isinstance(ds, DemoCatalogueDataset)
    assert ds._describe() == {
        "path": (tmp_path / "demo").as_posix(),
        "n_products": 12,
        "seed": 1,
        "image_size": (48, 64),
        "n_defects": 0,
    }
    assert "DemoCatalogueDataset" in repr(ds)
    assert ds.metadata == {"kedro-viz": {"layer": "raw"}}
    assert ds.load()["name"].notna().all()
