"""The demo catalogue on disk (vitrina.demo.catalogue): layout, determinism, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.demo.conftest import SIZE, N, decode, planted_defects
from vitrina.demo import (
    DEMO_COLUMNS,
    DEMO_VERSION,
    generate_demo_catalogue,
    read_demo_manifest,
)
from vitrina.demo import catalogue as catalogue_module


def test_shape_columns_and_dtypes(catalogue):
    _, df = catalogue
    assert len(df) == N
    assert list(df.columns) == list(DEMO_COLUMNS)
    assert df["is_adult"].dtype == bool
    assert df["price"].dtype == np.float64
    for col in ("sku", "model_code", "picture", "gender", "colour"):
        assert pd.api.types.is_string_dtype(df[col]), col
    assert df["sku"].str.fullmatch(r"D\d{6}").all()
    assert df["model_code"].str.fullmatch(r"M\d{5}").all()


def test_same_seed_is_byte_identical(catalogue, tmp_path):
    out, _ = catalogue
    again = tmp_path / "again"
    generate_demo_catalogue(again, n_products=N, seed=7)
    assert (out / "products.csv").read_bytes() == (again / "products.csv").read_bytes()
    assert (out / "manifest.json").read_bytes() == (again / "manifest.json").read_bytes()
    files = sorted(p.name for p in (out / "images").iterdir())
    assert files == sorted(p.name for p in (again / "images").iterdir())
    corrupt = {d["picture"] for d in planted_defects(out) if d["kind"] == "corrupt_image"}
    for name in files:
        if name in corrupt:
            assert (out / "images" / name).read_bytes() == (again / "images" / name).read_bytes()
        else:
            assert np.array_equal(decode(out / "images" / name), decode(again / "images" / name))


def test_different_seed_differs(catalogue, tmp_path):
    out, df = catalogue
    other = generate_demo_catalogue(tmp_path / "other", n_products=N, seed=8)
    assert not df.equals(other)
    assert (out / "products.csv").read_bytes() != (tmp_path / "other" / "products.csv").read_bytes()


def test_rerun_skips_generation(catalogue):
    out, df = catalogue
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = generate_demo_catalogue(out, n_products=N, seed=7)
    pd.testing.assert_frame_equal(df, again)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_no_temp_dir_left_behind(catalogue):
    out, _ = catalogue
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.json", "products.csv"]


def test_manifest_records_parameters(catalogue):
    out, _ = catalogue
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["n_products"] == N
    assert manifest["seed"] == 7
    assert manifest["image_size"] == list(SIZE)
    assert manifest["n_defects"] == 8
    assert manifest["version"] == DEMO_VERSION


def test_other_parameters_replace_the_catalogue(tmp_path):
    out = tmp_path / "c"
    generate_demo_catalogue(out, n_products=12, seed=1, image_size=(64, 64), n_defects=0)
    df = generate_demo_catalogue(out, n_products=14, seed=2, image_size=(64, 64), n_defects=0)
    assert len(df) == 14
    assert len(list((out / "images").iterdir())) == 14
    assert read_demo_manifest(out)["seed"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_empty_existing_dir_is_filled(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / ".gitkeep").touch()
    generate_demo_catalogue(out, n_products=12, seed=1, image_size=(64, 64), n_defects=0)
    assert (out / "products.csv").is_file()
    assert (out / ".gitkeep").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_foreign_directory_is_never_replaced(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_demo_catalogue(out, n_products=12, seed=1, n_defects=0)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(catalogue_module, "render", boom)
    with pytest.raises(RuntimeError, match="boom"):
        generate_demo_catalogue(tmp_path / "c", n_products=12, seed=1, n_defects=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_products": 0},
        {"n_products": 10, "n_defects": 8},
        {"n_defects": -1},
        {"seed": -3},
        {"image_size": (16, 16)},
        {"image_size": "big"},
    ],
)
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_demo_catalogue(tmp_path / "c", **kwargs)
    assert list(tmp_path.iterdir()) == []
