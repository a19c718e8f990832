"""Ingestion nodes: schema mapping, validation errors, drops counted in the quality report."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from vitrina.pipelines.ingestion.nodes import (
    IngestionError,
    clean_products,
    derive_label,
    map_to_canonical_schema,
    sample_products,
    validate_raw_products,
)


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name in ("a", "b", "c", "d", "e"):
        Image.new("RGB", (8, 8), "red").save(root / f"{name}.jpg")
    return root


@pytest.fixture
def params(image_root):
    return {
        "image_root": str(image_root),
        "image_path_template": "{value}.jpg",
        "columns": {
            "product_id": "sku",
            "title": "name",
            "description": "text",
            "image": "pic",
            "group_id": "model",
        },
        "labels": {"category": "cat"},
        "derived_labels": {},
        "required": ["product_id", "title", "description", "image"],
        "max_products": None,
        "stratify_by": "category",
        "seed": 0,
    }


def raw_table(**overrides):
    data = {
        "sku": ["1", "2", "3", "4", "5"],
        "name": ["Платье", "Брюки", "Кеды", "Сумка", "Шапка"],
        "text": ["d1", "d2", "d3", "d4", "d5"],
        "pic": ["a", "b", "c", "d", "e"],
        "model": ["m1", "m1", "m2", "m3", "m4"],
        "cat": ["Одежда", "Одежда", "Обувь", "Аксессуары", "Аксессуары"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def run(raw, params):
    return clean_products(
        map_to_canonical_schema(validate_raw_products(raw, params), params), params
    )


def reasons(report):
    return dict(zip(report["reason"], report["n_rows"], strict=True))


def test_maps_source_columns_to_canonical_schema(params):
    products, report = run(raw_table(), params)
    assert list(products.columns[:5]) == [
        "product_id",
        "title",
        "description",
        "image_path",
        "group_id",
    ]
    assert products["image_path"].tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    assert products["category"].tolist()[2] == "Обувь"
    assert reasons(report) == {"kept": 5}


def test_missing_column_error_names_the_column(params):
    with pytest.raises(IngestionError, match=r"'cat' \(for labels.category\)"):
        validate_raw_products(raw_table().drop(columns=["cat"]), params)


def test_empty_table_is_a_clear_error(params):
    with pytest.raises(IngestionError, match="empty"):
        validate_raw_products(raw_table().iloc[:0], params)


def test_empty_and_nan_titles_are_dropped_and_counted(params):
    products, report = run(raw_table(name=["Платье", None, "   ", float("nan"), "Шапка"]), params)
    assert products["product_id"].tolist() == ["1", "5"]
    assert reasons(report)["missing_title"] == 3
    assert report.set_index("reason").loc["missing_title", "examples"] == "2;3;4"


def test_duplicate_ids_keep_the_first(params):
    products, report = run(raw_table(sku=["1", "1", "3", "3", "5"]), params)
    assert products["product_id"].tolist() == ["1", "3", "5"]
    assert products["title"].tolist() == ["Платье", "Кеды", "Шапка"]
    assert reasons(report)["duplicate_product_id"] == 2


def test_image_escaping_the_root_is_dropped(params, tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"x")  # exists, but outside the image root
    raw = raw_table(pic=["a.jpg", "../secret.jpg", "../../etc/passwd", "/etc/passwd", "e.jpg"])
    products, report = run(raw, {**params, "image_path_template": "{value}"})
    assert products["product_id"].tolist() == ["1", "5"]
    assert reasons(report)["unsafe_image_path"] == 3


def test_missing_image_files_are_dropped(params, image_root):
    (image_root / "c.jpg").unlink()
    products, report = run(raw_table(), params)
    assert "3" not in products["product_id"].tolist()
    assert reasons(report)["missing_image"] == 1


def test_every_image_missing_is_a_clear_error(params, image_root):
    for f in image_root.iterdir():
        f.unlink()
    with pytest.raises(
        IngestionError, match=r"No product left after cleaning 5 rows \(dropped: missing_image=5\)"
    ):
        run(raw_table(), params)


def test_group_id_defaults_to_product_id(params):
    params["columns"].pop("group_id")
    products, _ = run(raw_table(), params)
    assert products["group_id"].tolist() == products["product_id"].tolist()


def test_derived_labels_first_matching_rule_wins():
    raw = pd.DataFrame(
        {
            "index_group_name": [
                "Ladieswear",
                "Menswear",
                "Divided",
                "Sport",
                "Baby/Children",
                "Divided",
            ],
            "section_name": [
                "Womens Tailoring",
                "Men Underwear",
                "Ladies Denim",
                "Men H&M Sport",
                "Kids Boy",
                "Divided Basics",
            ],
        }
    )
    spec = {
        "default": None,
        "rules": [
            {"column": "index_group_name", "equals": "Ladieswear", "value": "female"},
            {"column": "index_group_name", "equals": "Menswear", "value": "male"},
            {"column": "index_group_name", "in": ["Baby/Children"], "value": "unknown"},
            {"column": "section_name", "matches": r"^(ladies|womens?)\b", "value": "female"},
            {"column": "section_name", "matches": r"^mens?\b", "value": "male"},
        ],
    }
    out = derive_label(raw, spec)
    assert out.tolist()[:5] == ["female", "male", "female", "male", "unknown"]
    assert pd.isna(out.iloc[5])


def test_sample_is_stratified_seeded_and_exact():
    df = pd.DataFrame(
        {
            "product_id": [str(i) for i in range(1000)],
            "category": ["a"] * 700 + ["b"] * 250 + ["c"] * 50,
        }
    )
    s1 = sample_products(df, 100, "category", seed=1)
    s2 = sample_products(df, 100, "category", seed=1)
    s3 = sample_products(df, 100, "category", seed=2)
    assert len(s1) == 100
    assert s1["category"].value_counts().to_dict() == {"a": 70, "b": 25, "c": 5}
    assert s1.equals(s2)
    assert not s1["product_id"].equals(s3["product_id"])


def test_max_products_is_reported(params):
    params["max_products"] = 3
    products, report = run(raw_table(), params)
    assert len(products) == 3
    assert reasons(report)["not_sampled_max_products"] == 2


def test_null_label_mapping_means_the_catalogue_lacks_it(params):
    params["labels"] = {
        "category": "cat",
        "gender": None,
    }  # an environment switching a base label off
    products, _ = run(raw_table(), params)
    assert "gender" not in products.columns and "category" in products.columns


def test_passthrough_columns_reach_products_unchanged(params, tmp_path):
    raw = raw_table(
        split=["train", "train", "test", "test", "train"],
        class_0=[1, 0, 0, 1, 0],
        class_1=[0, 1, 1, 1, 0],
        class_x=["a", "b", "c", "d", "e"],
    )
    params["passthrough"] = ["split", "class_[0-9]*"]
    products, _ = run(raw, params)
    assert list(products.columns[-3:]) == ["split", "class_0", "class_1"]
    assert "class_x" not in products.columns
    assert products["split"].tolist() == ["train", "train", "test", "test", "train"]
    path = tmp_path / "products.parquet"
    products.to_parquet(path)  # what the catalogue's ParquetDataset writes
    back = pd.read_parquet(path)
    assert back["class_1"].dtype == "int64" and back["class_1"].tolist() == [0, 1, 1, 1, 0]


def test_passthrough_errors_name_the_column(params):
    with pytest.raises(IngestionError, match=r"passthrough names 'split', which matches no column"):
        validate_raw_products(raw_table(), {**params, "passthrough": ["split"]})
    with pytest.raises(IngestionError, match=r"'class_\*', which matches no column"):
        validate_raw_products(raw_table(), {**params, "passthrough": ["class_*"]})
    with pytest.raises(IngestionError, match=r"\['cat'\] would overwrite"):
        validate_raw_products(
            raw_table(), {**params, "labels": {"cat": "cat"}, "passthrough": ["cat"]}
        )


def test_group_id_mapped_to_null_and_optional_empty_descriptions(params):
    params["columns"]["group_id"] = None  # an environment switching base's group column off
    params["required"] = ["product_id", "title", "image"]
    products, report = run(raw_table(model=None, text=["", "d2", None, "d4", "d5"]), params)
    assert products["group_id"].tolist() == products["product_id"].tolist()
    assert products["description"].tolist() == ["", "d2", "", "d4", "d5"]
    assert reasons(report) == {"kept": 5}
