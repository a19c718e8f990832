"""CSVDataset for source tables: literal NA-like titles stay text, encoding errors are located."""

from __future__ import annotations

import pytest
from kedro.io import DatasetError

from vitrina.datasets import CSVDataset
from vitrina.pipelines.ingestion.nodes import clean_products, map_to_canonical_schema

ROWS = [
    ("sku", "name", "text", "picture"),
    ("1", "NA", "Сумка", "a.jpg"),
    ("2", "None", "Платье", "a.jpg"),
    ("3", "nan", "Шорты", "a.jpg"),
    ("4", "", "Кеды", "a.jpg"),
]


def write(path, rows, encoding="utf-8"):
    path.write_bytes("\n".join(",".join(r) for r in rows).encode(encoding) + b"\n")
    return path


def test_titles_that_look_like_missing_values_are_kept(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"x")
    raw = CSVDataset(filepath=str(write(tmp_path / "p.csv", ROWS))).load()
    assert raw["name"].tolist()[:3] == ["NA", "None", "nan"] and raw["name"].isna().tolist()[3]
    params = {
        "image_root": str(tmp_path / "images"),
        "columns": {
            "product_id": "sku",
            "title": "name",
            "description": "text",
            "image": "picture",
        },
        "required": ["product_id", "title", "description", "image"],
    }
    products, report = clean_products(map_to_canonical_schema(raw, params), params)
    assert products["title"].tolist() == ["NA", "None", "nan"]
    assert report.set_index("reason").loc["missing_title", "n_rows"] == 1  # only the empty one


def test_a_file_in_another_encoding_names_the_byte_and_line_and_the_fix(tmp_path):
    path = write(tmp_path / "p.csv", ROWS, encoding="cp1251")
    data = path.read_bytes()
    offset = data.index("Сумка".encode("cp1251"))  # the first non-ASCII byte
    with pytest.raises(DatasetError) as info:
        CSVDataset(filepath=str(path)).load()
    message = str(info.value)
    assert f"byte offset {offset} (line 2, i.e. data row 1" in message
    assert "is not valid utf-8" in message and "load_args: {encoding: cp1251}" in message
    fixed = CSVDataset(filepath=str(path), load_args={"encoding": "cp1251"}).load()
    assert fixed["text"].tolist()[1] == "Платье"
