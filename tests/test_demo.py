"""Tests for the built-in demo catalogue generator (vitrina.demo)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitrina import demo
from vitrina.demo import (
    DEFECT_KINDS,
    DEMO_AGE_GROUPS,
    DEMO_CATEGORIES,
    DEMO_CATEGORY_OF,
    DEMO_COLOURS,
    DEMO_COLUMNS,
    DEMO_GENDERS,
    DEMO_SUBCATEGORIES,
    PATH_TRAVERSAL_PICTURE,
    defect_plan,
    generate_demo_catalogue,
    read_demo_manifest,
)

N = 60
SIZE = (240, 320)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "catalogue"
    df = generate_demo_catalogue(out, n_products=N, seed=7)
    return out, df


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "catalogue"
    df = generate_demo_catalogue(out, n_products=N, seed=7, n_defects=0)
    return out, df


def _decode(path):
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def _defects(out):
    return read_demo_manifest(out)["defects"]


# ----------------------------------------------------------------------------- table
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


def test_label_value_sets(clean):
    _, df = clean
    assert set(df["gender"]) <= set(DEMO_GENDERS)
    assert set(df["age_group"]) <= set(DEMO_AGE_GROUPS)
    assert set(df["category"]) <= set(DEMO_CATEGORIES)
    assert set(df["subcategory"]) <= set(DEMO_SUBCATEGORIES)
    assert set(df["colour"]) <= set(DEMO_COLOURS)
    assert (df["category"] == df["subcategory"].map(DEMO_CATEGORY_OF)).all()
    assert (df["price"] > 0).all()
    # adult-only goods are adult, female, underwear
    adult_only = df[df["is_adult"]]
    assert (adult_only["age_group"] == "adult").all()
    assert (adult_only["category"] == "Бельё").all()
    # colour variants of one model share every label but the colour
    for _, group in df.groupby("model_code"):
        assert group["colour"].is_unique
        for col in ("gender", "age_group", "is_adult", "category", "subcategory", "price"):
            assert group[col].nunique() == 1, col


def test_vocabulary_sizes():
    assert 12 <= len(DEMO_SUBCATEGORIES) <= 16
    assert set(DEMO_CATEGORY_OF.values()) == set(DEMO_CATEGORIES)


def test_titles_agree_in_grammatical_gender(clean):
    _, df = clean
    for row in df.itertuples():
        sub = demo._SUBCATS[row.subcategory]
        form = demo._COLOURS[row.colour][0][demo._FORM[sub.gram]]
        assert form in row.name.split(), (row.name, form)
        assert sub.noun.lower() in row.name.lower()


def test_texts_are_short_russian_and_varied(clean):
    _, df = clean
    assert df["text"].str.contains(r"[а-яё]", regex=True).all()
    n_sentences = df["text"].str.count(r"[.!?](?:\s|$)")
    assert n_sentences.between(1, 3).all()
    assert df["text"].nunique() > N // 2


def test_label_shares_on_a_full_size_table():
    rows, _ = demo._make_rows(1000, 42)
    df = pd.DataFrame(rows)
    assert 0.04 <= df["is_adult"].mean() <= 0.13
    per_model = len(df) / df["model_code"].nunique()
    assert 1.5 <= per_model <= 2.0
    assert set(df["gender"]) == set(DEMO_GENDERS)
    assert set(df["age_group"]) == set(DEMO_AGE_GROUPS)
    assert set(df["subcategory"]) == set(DEMO_SUBCATEGORIES)
    # the gender/age word is in most titles, but not all
    gender_word = re.compile(r"женск|мужск|унисекс|детск|для девочки|для мальчика|эротич", re.I)
    share = df["name"].str.contains(gender_word).mean()
    assert 0.75 <= share <= 0.92


# ----------------------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical(catalogue, tmp_path):
    out, _ = catalogue
    again = tmp_path / "again"
    generate_demo_catalogue(again, n_products=N, seed=7)
    assert (out / "products.csv").read_bytes() == (again / "products.csv").read_bytes()
    assert (out / "manifest.json").read_bytes() == (again / "manifest.json").read_bytes()
    files = sorted(p.name for p in (out / "images").iterdir())
    assert files == sorted(p.name for p in (again / "images").iterdir())
    corrupt = {d["picture"] for d in _defects(out) if d["kind"] == "corrupt_image"}
    for name in files:
        if name in corrupt:
            assert (out / "images" / name).read_bytes() == (again / "images" / name).read_bytes()
        else:
            assert np.array_equal(_decode(out / "images" / name), _decode(again / "images" / name))


def test_different_seed_differs(catalogue, tmp_path):
    out, df = catalogue
    other = generate_demo_catalogue(tmp_path / "other", n_products=N, seed=8)
    assert not df.equals(other)
    assert (out / "products.csv").read_bytes() != (tmp_path / "other" / "products.csv").read_bytes()


# ----------------------------------------------------------------------------- images
def test_images_decode_with_configured_size(catalogue):
    out, df = catalogue
    unreadable = ("missing_image", "corrupt_image", "path_traversal")
    broken = {d["picture"] for d in _defects(out) if d["kind"] in unreadable}
    decoded = 0
    for picture in df["picture"]:
        if picture in broken:
            continue
        with Image.open(out / "images" / picture) as im:
            im.load()
            assert im.size == SIZE
            assert im.mode == "RGB"
        decoded += 1
    assert decoded == N - len(broken)


def test_image_size_is_width_height(tmp_path):
    df = generate_demo_catalogue(
        tmp_path / "c", n_products=12, seed=1, image_size=(96, 64), n_defects=0
    )
    for picture in df["picture"]:
        with Image.open(tmp_path / "c" / "images" / picture) as im:
            assert im.size == (96, 64)


def test_images_carry_the_product_colour(clean):
    out, df = clean
    # the garment pixels (far from the light background) lean towards the product colour
    for colour in ("красный", "синий", "зелёный"):
        rows = df[df["colour"] == colour]
        for picture in rows["picture"]:
            arr = _decode(out / "images" / picture).astype(float)
            bg = np.median(arr[:8, :8].reshape(-1, 3), axis=0)
            fg = arr[np.abs(arr - bg).sum(-1) > 60]
            if len(fg) == 0:
                continue
            r, g, b = np.median(fg, axis=0)
            target = {"красный": r, "синий": b, "зелёный": g}[colour]
            assert target >= max(r, g, b) - 25, (picture, colour, (r, g, b))


# ----------------------------------------------------------------------------- defects
def test_defect_plan_cycles():
    assert defect_plan(0) == []
    assert defect_plan(8) == list(DEFECT_KINDS)
    assert defect_plan(10) == list(DEFECT_KINDS) + list(DEFECT_KINDS[:2])


def test_defects_present_exactly(catalogue):
    out, df = catalogue
    defects = _defects(out)
    assert sorted(d["kind"] for d in defects) == sorted(defect_plan(8))
    rows_by_kind: dict[str, list[int]] = {}
    for d in defects:
        rows_by_kind.setdefault(d["kind"], []).append(d["row"])
        assert df.loc[d["row"], "sku"] == d["sku"]
        assert df.loc[d["row"], "picture"] == d["picture"]
    assert len({d["row"] for d in defects}) == 8

    # two empty names, one empty text, nothing else missing
    assert sorted(df.index[df["name"].isna()]) == sorted(rows_by_kind["missing_name"])
    assert list(df.index[df["text"].isna()]) == rows_by_kind["missing_text"]
    assert df.drop(columns=["name", "text"]).notna().all().all()

    # exactly one sku appears twice; the copy sits after the original
    dup_rows = list(df.index[df["sku"].duplicated(keep=False)])
    (dup,) = [d for d in defects if d["kind"] == "duplicate_sku"]
    assert dup_rows == sorted([dup["duplicate_of_row"], dup["row"]])
    assert dup["duplicate_of_row"] < dup["row"]

    # missing image files
    for row in rows_by_kind["missing_image"]:
        assert not (out / "images" / df.loc[row, "picture"]).exists()

    # corrupt (truncated) JPEG: opens, fails to decode
    (row,) = rows_by_kind["corrupt_image"]
    path = out / "images" / df.loc[row, "picture"]
    assert path.read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(OSError), Image.open(path) as im:
        im.load()

    # path traversal
    (row,) = rows_by_kind["path_traversal"]
    assert df.loc[row, "picture"] == PATH_TRAVERSAL_PICTURE
    assert (df["picture"] == PATH_TRAVERSAL_PICTURE).sum() == 1

    # every other picture is an existing file named by its sku
    bad = set(rows_by_kind["missing_image"]) | set(rows_by_kind["path_traversal"])
    for row in set(range(N)) - bad:
        assert (out / "images" / df.loc[row, "picture"]).is_file()


def test_clean_catalogue_has_no_defects(clean):
    out, df = clean
    assert _defects(out) == []
    assert df.notna().all().all()
    assert df["sku"].is_unique
    assert (df["picture"] == df["sku"] + ".jpg").all()
    for picture in df["picture"]:
        _decode(out / "images" / picture)


# ----------------------------------------------------------------------------- caching, atomicity
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
    assert manifest["version"] == demo.DEMO_VERSION


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

    monkeypatch.setattr(demo, "_render", boom)
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
